"""`headrace paper` and `headrace live` end to end, against local stand-ins of Binance (no exchange is reachable).

Market data: ccxt.pro's real binance client against tests/stand_in/ws_stand_in.py (recorded Binance trades and
top of book, with its dropped connection and malformed messages), pointed at it with ``live.ws_urls``. Orders
(live): ccxt's real REST client against tests/stand_in/binance_rest.py, pointed at it with ``live.rest_urls``,
which checks every signature and records every request. Both run on localhost in this process; the commands run
in process (typer's CliRunner) and write to an embedded ClickHouse under the test's tmp dir.

The receive clock of the run follows the stand-in (the recorded time of the last trade it sent): the stand-in
replays 2021 trades, which a wall clock in 2026 would make late.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from helpers import SHARED_DATA
from stand_in.binance_rest import EXCHANGE_INFO, BinanceStandIn
from stand_in.ws_stand_in import StandIn, load_recorded, start

MARKETS = SHARED_DATA / "markets/ccxt/binance.json"
pytestmark = pytest.mark.skipif(not (SHARED_DATA / "ticks/binance").exists() or not MARKETS.exists()
                                or not (SHARED_DATA / EXCHANGE_INFO).exists(), reason="shared data missing")

KEY = "PLANTED-live-key-3c9e1a7f5b2d4e6a8c0e"
SECRET = "PLANTED-live-secret-8d7c6b5a4f3e2d1c0b9a"
N_TRADES, N_QUOTES, MAX_ITEMS = 800, 40, 600


@dataclass
class WsServer:
    stand_in: StandIn
    port: int
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/stream/ws"

    def clock(self) -> int:
        """Receive time: the recorded time of the last trade the stand-in sent, plus 1 ms; an hour later once it
        has sent them all (so that ``--duration`` ends a run whose messages ccxt delivered in fewer batches)."""
        sent = self.stand_in.sent_trade_ids
        t = self._times[sent[-1]] if sent else self._times[self.stand_in.recorded.trades[0]["t"]]
        done = len(sent) >= len(self.stand_in.recorded.trades) + self.stand_in.overlap
        return (t + 1 + (3_600_000 if done else 0)) * 1_000_000

    def __post_init__(self) -> None:
        self._times = {int(t["t"]): int(t["T"]) for t in self.stand_in.recorded.trades}


@pytest.fixture
def ws() -> Iterator[WsServer]:
    stand_in = StandIn(load_recorded(SHARED_DATA, n_trades=N_TRADES, n_quotes=N_QUOTES))
    loop = asyncio.new_event_loop()
    ready: dict[str, Any] = {}
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        ready["runner"], ready["port"] = loop.run_until_complete(start(stand_in))
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10)
    yield WsServer(stand_in, ready["port"], loop, thread)
    asyncio.run_coroutine_threadsafe(ready["runner"].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def _sets(tmp_path: Path, ws: WsServer, *extra: str) -> list[str]:
    sets = ["replay.timeframe='1s'", "features.momentum_lookback_bars=5", "features.vol_halflife_bars=5.0",
            "strategy.rebalance_bars=5", "strategy.min_instruments=1", "strategy.name='ts_momentum'",
            "strategy.long_only=false", 'account.balances={"binance:USDT" = 100000.0}', "router.enabled=true",
            f"router.markets=[{json.dumps(str(MARKETS))}]",
            f"live.ws_urls={{binance = {json.dumps(ws.url)}}}", f"storage.state_dir={json.dumps(str(tmp_path))}",
            *extra]
    return [a for s in sets for a in ("--set", s)]


def _invoke(monkeypatch: pytest.MonkeyPatch, ws: WsServer, *args: str) -> Result:
    import headrace.cli_venues as cv
    from headrace.cli import app

    monkeypatch.setattr(cv, "wall_clock", ws.clock)
    return CliRunner().invoke(app, list(args))


def _store(tmp_path: Path) -> Any:
    from sinks.clickhouse import Store

    return Store.connect(f"chdb://{(tmp_path / 'clickhouse').resolve()}", create=False)


def _count(store: Any, table: str, run_id: str) -> int:
    return int(store.query(f"SELECT count() AS n FROM {table} FINAL WHERE run_id = {{r:String}}",
                           {"r": run_id})[0]["n"])


def test_paper_on_the_websocket_stand_in_records_a_paper_run_with_bars_and_simulated_fills_stand_in(
        tmp_path: Path, ws: WsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    res = _invoke(monkeypatch, ws, "paper", "--venue", "binance", "--symbol", "BTC/USDT", "--max-items",
                  str(MAX_ITEMS), "--duration", "10m", "--run-id", "paper-1", "--json", *_sets(tmp_path, ws))
    assert res.exit_code == 0, (res.stdout, res.stderr, res.exception)
    summary = json.loads(res.stdout)
    assert summary["mode"] == "paper" and summary["run_id"] == "paper-1"
    assert summary["ended"] in ("max-items", "duration")  # duration: ccxt delivered the trades in fewer batches
    store = _store(tmp_path)
    run = store.query("SELECT mode, status, data FROM runs FINAL WHERE run_id = 'paper-1'")
    assert [(r["mode"], r["status"], json.loads(r["data"])) for r in run] == [
        ("paper", "finished", ["binance:BTC/USDT"])]
    bars = store.query("SELECT ts_open, close FROM bars FINAL WHERE run_id = 'paper-1' ORDER BY ts_open")
    assert len(bars) >= 10 and summary["bars"] == len(bars)
    assert len({b["ts_open"] for b in bars}) == len(bars)  # one bar per second, none twice
    recorded = {float(t["p"]) for t in ws.stand_in.recorded.trades}
    assert all(b["close"] in recorded for b in bars)  # bars are made of the stand-in's trades
    assert _count(store, "features", "paper-1") > 0
    # the strategy traded: simulated children filled, no request went to any venue (paper needs no key)
    assert summary["orders"] > 0 and summary["fills"] > 0
    assert _count(store, "fills", "paper-1") == summary["fills"]
    assert summary["events_in"] >= min(MAX_ITEMS, N_TRADES)  # rows: trades, quotes and quarantined messages
    reasons = [r["reason"] for r in store.query("SELECT reason FROM quarantine FINAL WHERE run_id = 'paper-1'")]
    assert any("field 'p' in binance trade is not a number" in r for r in reasons)  # the malformed trade


def test_paper_stops_cleanly_on_sigint_with_its_summary_stand_in(tmp_path: Path, ws: WsServer,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt() -> None:  # once the stand-in has sent every trade: the run is streaming
        for _ in range(3000):
            if len(ws.stand_in.sent_trade_ids) >= N_TRADES + ws.stand_in.overlap:
                break
            time.sleep(0.01)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGINT)

    killer = threading.Thread(target=interrupt, daemon=True)
    killer.start()
    res = _invoke(monkeypatch, ws, "paper", "--instrument", "binance:BTC/USDT", "--run-id", "paper-int",
                  *_sets(tmp_path, ws))
    killer.join()
    assert res.exit_code == 0, (res.stdout, res.stderr, res.exception)
    assert "paper run paper-int ended: stopped by SIGINT" in res.stderr
    assert "final equity" in res.stdout  # the replay's summary table
    store = _store(tmp_path)
    run = store.query("SELECT status, summary FROM runs FINAL WHERE run_id = 'paper-int'")
    assert [r["status"] for r in run] == ["finished"]
    summary = json.loads(run[0]["summary"])
    assert summary["ended"] == "stopped by SIGINT" and summary["bars"] == _count(store, "bars", "paper-int") > 10


@pytest.fixture
def rest() -> Iterator[BinanceStandIn]:
    with BinanceStandIn(SHARED_DATA, KEY, SECRET, balances={"BTC": ("0.50000000", "0.00000000"),
                                                            "USDT": ("100000.00000000", "0.00000000")}) as s:
        yield s


def _all_rows(store: Any) -> str:
    tables = [r["name"] for r in store.query("SELECT name FROM system.tables WHERE database = currentDatabase()")]
    return "\n".join(repr(store.query(f"SELECT * FROM {t}")) for t in tables)


def test_live_sends_signed_ioc_children_to_the_rest_stand_in_and_records_their_fills_stand_in(
        tmp_path: Path, ws: WsServer, rest: BinanceStandIn, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("HEADRACE_API_KEY_BINANCE", KEY)
    monkeypatch.setenv("HEADRACE_API_SECRET_BINANCE", SECRET)
    sets = _sets(tmp_path, ws, f"live.rest_urls={{binance = {json.dumps(rest.url)}}}", "live.balance_tolerance=1.0")
    sets = [s.replace("100000.0", "99999.5") for s in sets]  # the account starts 0.5 USDT off the venue's
    caplog.set_level(logging.DEBUG)  # every log record of the run, ccxt's and urllib3's included
    res = _invoke(monkeypatch, ws, "live", "--instrument", "binance:BTC/USDT", "--live", "--max-items",
                  str(MAX_ITEMS), "--duration", "10m", "--run-id", "live-1", "--json", "--verbose", *sets)
    assert res.exit_code == 0, (res.stdout, res.stderr, res.exception)
    summary = json.loads(res.stdout)
    assert summary["mode"] == "live" and summary["ended"] in ("max-items", "duration")
    store = _store(tmp_path)
    assert [r["mode"] for r in store.query("SELECT mode FROM runs FINAL WHERE run_id = 'live-1'")] == ["live"]
    # reconciliation at start: the 0.5 USDT difference, within tolerance; the venue's balance adopted
    recon = store.query("SELECT kind, key, local, venue_value, within_tolerance, action FROM reconciliation FINAL "
                        "WHERE run_id = 'live-1'")
    assert recon == [{"kind": "balance", "key": "USDT", "local": "99999.5", "venue_value": "100000.0",
                      "within_tolerance": True, "action": "continue"}], recon
    # the children: signed IOC limits, exactly as the orders table has them
    posts = [r for r in rest.requests if (r.method, r.path) == ("POST", "/api/v3/order")]
    orders = store.query("SELECT event_id, side, amount, limit_price FROM orders FINAL WHERE run_id = 'live-1' "
                         "ORDER BY ts_event, event_id")
    assert posts and len(posts) == len(orders)
    # markets, the reconciliation at start (balances, open orders), then per child: a lookup by its client id
    # (nothing to resubmit), the order, its trades
    per_child = [("GET", "/api/v3/order"), ("POST", "/api/v3/order"), ("GET", "/api/v3/myTrades")]
    assert [(r.method, r.path) for r in rest.requests] == [
        ("GET", "/api/v3/exchangeInfo"), ("GET", "/api/v3/account"), ("GET", "/api/v3/openOrders"),
        *per_child * len(posts)]
    assert all(r.signed for r in rest.requests[1:])
    assert [r.answered for r in rest.requests if (r.method, r.path) == ("GET", "/api/v3/order")] == [400] * len(
        posts)  # -2013 Order does not exist
    assert all(r.answered == 200 for r in rest.requests if (r.method, r.path) != ("GET", "/api/v3/order"))
    for p, o in zip(posts, orders, strict=True):
        assert set(p.params) == {"symbol", "side", "type", "timeInForce", "quantity", "price", "newClientOrderId",
                                 "newOrderRespType", "recvWindow", "timestamp"}
        assert (p.params["symbol"], p.params["type"], p.params["timeInForce"]) == ("BTCUSDT", "LIMIT", "IOC")
        assert p.params["side"] == o["side"].upper()
        assert float(p.params["quantity"]) == pytest.approx(o["amount"], rel=1e-12)
        assert float(p.params["price"]) == pytest.approx(o["limit_price"], rel=1e-12)
    assert len({p.params["newClientOrderId"] for p in posts}) == len(posts)  # one id per child, none resent
    # their fills: the venue's own executions (price, amount, commission), recorded in ClickHouse per child
    fills = store.query("SELECT order_id, price, amount, fee, fee_currency FROM fills FINAL WHERE run_id = 'live-1' "
                        "ORDER BY ts_event, order_id")
    cid_of = {o["event_id"]: p.params["newClientOrderId"] for p, o in zip(posts, orders, strict=True)}
    venue_fills = {o.client_id: o.fills for o in rest.orders.values()}
    assert len(fills) == len(rest.trades) == len(posts)
    for f in fills:
        (vf,) = venue_fills[cid_of[f["order_id"]]]
        assert (f["price"], f["amount"], f["fee"], f["fee_currency"]) == (
            float(vf["price"]), float(vf["qty"]), pytest.approx(float(vf["commission"])), vf["commissionAsset"])
    assert summary["fills"] == len(fills)
    # the planted key and secret appear nowhere: output, log records, ClickHouse rows, files
    native = capfd.readouterr()
    logged = caplog.text
    assert "live starting run_id=live-1" in logged and "/api/v3/order" in logged  # the run's log, ccxt's too
    rows = _all_rows(store)
    written = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    for secret in (KEY, SECRET, KEY[-10:], SECRET[-10:]):
        assert secret not in res.stdout + res.stderr + native.out + native.err + logged
        assert secret not in rows
        assert all(secret.encode() not in w for w in written)


# ---------------------------------------------------------------------------------------------------
# LiveBounds on its own (no stand-in): the merged watermark and late rows, on arbitrary arrival orders


class _Feed:
    """Stands for a `LiveSource`: per instrument, the batches its partition returns, in order."""

    def __init__(self, batches: dict[str, list[list[Any]]]) -> None:
        self.instruments = sorted(batches)
        self.batches = batches

    def list_parts(self) -> list[str]:
        return list(self.instruments)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> Any:
        feed = self

        class Part:
            def next_batch(self) -> list[Any]:
                return feed.batches[for_part].pop(0) if feed.batches[for_part] else []

            def close(self) -> None:
                pass

        return Part()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["binance:BTC/USDT", "kraken:BTC/USD"]), st.integers(1, 50)),
                min_size=1, max_size=40))
def test_live_bounds_merged_watermark_never_passes_a_row_it_lets_through(arrivals: list[tuple[str, int]]) -> None:
    from flows.live import LiveBounds
    from helpers import market_slice, trades

    s = 10**9
    batches: dict[str, list[list[Any]]] = {"binance:BTC/USDT": [], "kraken:BTC/USD": []}
    own: dict[str, int] = {}
    for inst, sec in arrivals:  # a feed's own watermark is its latest event time
        own[inst] = max(own.get(inst, 0), sec * s)
        batches[inst].append([market_slice(inst, own[inst], trades=trades(inst, [sec * s], [100.0]))])
    bounds = LiveBounds(_Feed(batches), clock=lambda: 0, lateness_ns=2 * s, max_items=len(arrivals))  # type: ignore[arg-type]
    parts = {i: bounds.build_part("market", i, None) for i in bounds.list_parts()}
    out = []
    for inst, _ in arrivals:
        out += parts[inst].next_batch()
    emitted = 0
    for o in out:
        kept = [] if o.trades is None else o.trades.ts_event.tolist()
        assert all(t > emitted for t in kept)  # nothing at or before a watermark already handed on
        assert all(q.reason.startswith("late: event time") and q.ts_event <= emitted for q in o.rejected)
        assert o.watermark >= emitted
        emitted = o.watermark
    assert bounds.counters.items == len(arrivals) and bounds.counters.rows == len(arrivals)
    assert bounds.counters.late == sum(len(o.rejected) for o in out)
    if len(own) == 2:
        assert emitted == max(0, min(own.values()) - 2 * s)
    else:
        assert emitted == 0  # an instrument that has said nothing holds the watermark back
