"""A local stand-in of Binance spot's market-data websocket (and the REST depth snapshot) for ccxt.pro.

It speaks as much of Binance's stream protocol as ccxt.pro's binance client uses: it answers each
``{"method": "SUBSCRIBE", "params": [...], "id": n}`` with ``{"result": null, "id": n}`` (recording every
subscribe payload) and then streams, per subscribed stream:

- ``btcusdt@trade``: trade messages built from the recorded Binance spot trades
  (``ticks/binance/btcusdt-trades.parquet``). The first connection is dropped by the server after
  `drop_after` trades; the next connection resends the last `overlap` trades before the drop (as a venue
  may after a reconnect), one malformed trade (price ``"abc"``), then the rest.
- ``btcusdt@bookTicker``: bookTicker messages built from the recorded top of book
  (``ticks/binance/btcusdt-quotes.parquet``), with one frame cut short (not JSON) before the
  fourth.
- ``btcusdt@depth@100ms``: diff-depth updates (``U``/``u`` chained from the snapshot's ``lastUpdateId``)
  whose levels come from the recorded Binance futures depth files (``book/binance-futures/*.csv``: the
  snapshot's bids, the updates' asks and bid changes). One update is "lost": the stand-in applies it to its
  own book but never sends it, so the next update's ``U`` shows a gap. Updates start only after ccxt has
  fetched the snapshot, and start again from the current book after each snapshot, so the exchange is
  deterministic.

``GET /api/v3/depth`` serves the stand-in's current book as a Binance REST depth snapshot.
`StandIn.book` is the stand-in's own book (price -> size per side), what ccxt's book must equal.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from aiohttp import WSMsgType, web

SYMBOL = "BTCUSDT"


@dataclass
class Recorded:
    trades: list[dict[str, Any]]  # binance trade messages
    quotes: list[dict[str, Any]]  # binance bookTicker messages
    bids: dict[float, float]  # snapshot levels
    asks: dict[float, float]
    last_update_id: int
    changes: list[tuple[str, float, float]]  # (side 'b'/'a', price, qty) for the diff updates


def load_recorded(data: Path, n_trades: int = 24, n_quotes: int = 8, n_levels: int = 20) -> Recorded:
    """Build Binance spot messages from the recorded files under `data` (shared/data)."""
    tr = pl.read_parquet(data / "ticks/binance/btcusdt-trades.parquet").head(n_trades)
    trades = [{"e": "trade", "E": int(r["timestamp"].timestamp() * 1000) + 1, "s": SYMBOL, "t": int(r["trade_id"]),
               "p": f"{r['price']:.2f}", "q": f"{r['quantity']:.6f}", "T": int(r["timestamp"].timestamp() * 1000),
               "m": r["buyer_maker"] == "True", "M": True} for r in tr.iter_rows(named=True)]
    qu = pl.read_parquet(data / "ticks/binance/btcusdt-quotes.parquet").head(n_quotes)
    quotes = [{"u": 400900000 + i, "s": SYMBOL, "b": f"{r['bid']:.2f}", "B": f"{r['bid_size']:.6f}",
               "a": f"{r['ask']:.2f}", "A": f"{r['ask_size']:.6f}"} for i, r in enumerate(qu.iter_rows(named=True))]
    snap = pl.read_csv(data / "book/binance-futures/btcusdt-depth-snap.csv").head(n_levels)
    upd = pl.read_csv(data / "book/binance-futures/btcusdt-depth-update.csv")
    asks_rows = upd.filter((pl.col("side") == "a") & (pl.col("qty") > 0)).head(n_levels)
    changes_rows = upd.filter(pl.col("side") == "b").head(12)
    bids = {float(p): float(q) for p, q in zip(snap["price"], snap["qty"], strict=True)}
    asks = {float(p): float(q) for p, q in zip(asks_rows["price"], asks_rows["qty"], strict=True)}
    # bid changes from the recorded update file, moved onto the snapshot's price range so they touch its levels
    shift = max(bids) - float(changes_rows["price"].max())
    changes = [("b", round(float(p) + shift, 2), float(q))
               for p, q in zip(changes_rows["price"], changes_rows["qty"], strict=True)]
    return Recorded(trades, quotes, bids, asks, int(snap["last_update_id"][0]), changes)


@dataclass
class StandIn:
    recorded: Recorded
    drop_after: int = 10
    overlap: int = 2
    lost_update: int = 3  # index of the update that is never sent (the gap)
    subscribes: list[dict[str, Any]] = field(default_factory=list)
    depth_requests: list[dict[str, str]] = field(default_factory=list)
    connections: int = 0
    sent_trade_ids: list[int] = field(default_factory=list)
    malformed_sent: int = 0
    truncated_at: int | None = 3  # index of the bookTicker message preceded by a truncated frame
    truncated_sent: int = 0
    update_id: int = 0
    next_change: int = 0
    book: dict[str, dict[float, float]] = field(default_factory=dict)
    depth_done: asyncio.Event = field(default_factory=asyncio.Event)  # every change sent or lost
    _trade_conn: int = 0
    _snapshot_served: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.book = {"b": dict(self.recorded.bids), "a": dict(self.recorded.asks)}
        self.update_id = self.recorded.last_update_id

    # -- REST -------------------------------------------------------------------------------------

    async def depth(self, request: web.Request) -> web.Response:
        self.depth_requests.append(dict(request.query))
        limit = int(request.query.get("limit", "1000"))

        def side(s: str, rev: bool) -> list[list[str]]:
            return [[f"{p:.2f}", f"{q:.3f}"] for p, q in sorted(self.book[s].items(), reverse=rev)[:limit]]

        body = {"lastUpdateId": self.update_id, "bids": side("b", True), "asks": side("a", False)}
        self._snapshot_served.set()
        return web.json_response(body)

    # -- websocket ---------------------------------------------------------------------------------

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        tasks: list[asyncio.Task[None]] = []
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            sub = json.loads(msg.data)
            self.subscribes.append(sub)
            await ws.send_json({"result": None, "id": sub["id"]})
            for stream in sub.get("params", []):
                if stream.endswith("@trade"):
                    tasks.append(asyncio.ensure_future(self._trades(ws)))
                elif stream.endswith("@bookTicker"):
                    tasks.append(asyncio.ensure_future(self._quotes(ws)))
                elif "@depth" in stream:
                    self._snapshot_served.clear()
                    tasks.append(asyncio.ensure_future(self._depth(ws)))
        for t in tasks:
            t.cancel()
        return ws

    async def _trades(self, ws: web.WebSocketResponse) -> None:
        trades = self.recorded.trades
        self._trade_conn += 1
        if self._trade_conn == 1:
            for t in trades[: self.drop_after]:
                await self._send_trade(ws, t)
            await asyncio.sleep(0.02)
            await ws.close(code=1006)  # the venue drops the connection mid-stream
            return
        for t in trades[self.drop_after - self.overlap: self.drop_after]:
            await self._send_trade(ws, t)
        bad = dict(trades[self.drop_after], t=999_999_999, p="abc")
        await ws.send_str(json.dumps(bad))
        self.malformed_sent += 1
        for t in trades[self.drop_after:]:
            await self._send_trade(ws, t)

    async def _send_trade(self, ws: web.WebSocketResponse, t: dict[str, Any]) -> None:
        await ws.send_str(json.dumps(t))
        self.sent_trade_ids.append(int(t["t"]))
        await asyncio.sleep(0.002)

    async def _quotes(self, ws: web.WebSocketResponse) -> None:
        for i, q in enumerate(self.recorded.quotes):
            if i == self.truncated_at:
                await ws.send_str(json.dumps(q)[:30])  # a frame cut short: not JSON
                self.truncated_sent += 1
            await ws.send_str(json.dumps(q))
            await asyncio.sleep(0.002)

    async def _depth(self, ws: web.WebSocketResponse) -> None:
        await self._snapshot_served.wait()
        await asyncio.sleep(0.05)
        changes = self.recorded.changes
        while self.next_change < len(changes):
            i = self.next_change
            self.next_change += 1
            side, price, qty = changes[i]
            first = self.update_id + 1
            self.update_id += 2  # each update covers two ids, as Binance's do
            if qty == 0:
                self.book[side].pop(price, None)
            else:
                self.book[side][price] = qty
            if i == self.lost_update:
                continue  # lost on the way: the next update's U shows the gap
            msg = {"e": "depthUpdate", "E": 1667347199939 + i, "s": SYMBOL, "U": first, "u": self.update_id,
                   "b": [[f"{price:.2f}", f"{qty:.3f}"]] if side == "b" else [],
                   "a": [[f"{price:.2f}", f"{qty:.3f}"]] if side == "a" else []}
            await ws.send_str(json.dumps(msg))
            await asyncio.sleep(0.01)
            if i == self.lost_update + 1:
                return  # ccxt resubscribes after the gap; updates go on after the new snapshot
        self.depth_done.set()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v3/depth", self.depth)
        app.router.add_get("/stream/ws/{index}", self.ws)
        return app


async def start(stand_in: StandIn) -> tuple[web.AppRunner, int]:
    """Serve `stand_in` on a free local port; return the runner (cleanup it) and the port."""
    runner = web.AppRunner(stand_in.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, int(port)


def set_recorded_markets(exchange: Any, data: Path) -> None:
    """Give the exchange binance's recorded market definitions (markets/ccxt/binance.json), no network.

    The dump lacks a few keys ccxt's websocket handlers read (``linear``, ``inverse``, ...): they are
    completed with ccxt's own empty market structure.
    """
    raw = json.loads((data / "markets/ccxt/binance.json").read_text())
    raw = raw.get("markets", raw)
    exchange.set_markets({s: {**exchange.safe_market_structure(), **m} for s, m in raw.items()})


def point_at(exchange: Any, port: int) -> None:
    """Point a ccxt.pro binance exchange's spot websocket and public REST urls at the stand-in."""
    exchange.urls["api"]["ws"]["spot"] = f"ws://127.0.0.1:{port}/stream/ws"
    exchange.urls["api"]["public"] = f"http://127.0.0.1:{port}/api/v3"
