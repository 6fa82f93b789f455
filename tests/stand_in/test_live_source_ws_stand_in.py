"""ccxt.pro's real binance websocket client against a local stand-in replaying recorded Binance messages.

One run of the live feed (trades, top of book and order book of binance:BTC/USDT) against the stand-in
(tests/stand_in/ws_stand_in.py), then checks on what it emitted: the exact subscribe payloads ccxt sent,
the recorded values, reconnection after the dropped connection without duplicate trade ids, the resync
after the sequence gap (the book equals the stand-in's) and the quarantined malformed trade.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Any

import ccxt.pro
import numpy as np
import pytest

from headrace.events import MarketSlice
from helpers import SHARED_DATA
from sources.live import Backoff, FeedFailed, FeedStats, LiveBook, LiveFeed, LiveItem
from stand_in.ws_stand_in import StandIn, load_recorded, point_at, set_recorded_markets, start

pytestmark = pytest.mark.skipif(not (SHARED_DATA / "ticks/binance").exists(), reason="shared data missing")

FAKE_KEY = "hr-test-key-0123456789-not-real"
FAKE_SECRET = "hr-test-secret-9876543210-not-real"
RECV0 = 1_700_000_000_000_000_000


@dataclass
class Run:
    stand_in: StandIn
    items: list[LiveItem]
    stats: FeedStats
    sleeps: list[float]
    log: str  # every log record emitted during the run, any logger


async def _run(timeout: float = 15.0) -> Run:
    stand_in = StandIn(load_recorded(SHARED_DATA))
    runner, port = await start(stand_in)
    ex = ccxt.pro.binance({"apiKey": FAKE_KEY, "secret": FAKE_SECRET})
    set_recorded_markets(ex, SHARED_DATA)
    point_at(ex, port)
    ticks = iter(range(RECV0, RECV0 + 10**9, 1000))
    sleeps: list[float] = []

    async def sleep(s: float) -> None:  # backoff waits are recorded, and kept short
        sleeps.append(s)
        await asyncio.sleep(0.01)

    feed = LiveFeed(ex, "BTC/USDT", clock=lambda: next(ticks), sleep=sleep, rng=random.Random(7),
                    backoff=Backoff(initial=0.2, max_attempts=3), book_depth=50)
    n_trades = len(stand_in.recorded.trades)
    items: list[LiveItem] = []

    async def consume() -> None:
        async for item in feed.stream():
            items.append(item)
            got_trades = sum(len(i.trades) for i in items if isinstance(i, MarketSlice) and i.trades is not None)
            books = [i for i in items if isinstance(i, LiveBook)]
            if (got_trades >= n_trades and stand_in.next_change == len(stand_in.recorded.changes) and books
                    and books[-1].nonce == stand_in.update_id and feed.stats.quotes >= len(stand_in.recorded.quotes)):
                return

    records: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda r: records.append(r.getMessage())  # type: ignore[method-assign]
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        await asyncio.wait_for(consume(), timeout)
    except TimeoutError:
        books = [i for i in items if isinstance(i, LiveBook)]
        raise AssertionError(f"feed did not finish: {feed.stats}, last book nonce "
                             f"{books[-1].nonce if books else None}, stand-in update id {stand_in.update_id}, "
                             f"changes sent {stand_in.next_change}") from None
    finally:
        await feed.close()
        await runner.cleanup()
        root.removeHandler(handler)
        root.setLevel(old_level)
    return Run(stand_in, items, feed.stats, sleeps, "\n".join(records))


@pytest.fixture(scope="module")
def run() -> Run:
    return asyncio.run(_run())


def _slices(run: Run) -> list[MarketSlice]:
    return [i for i in run.items if isinstance(i, MarketSlice)]


def test_exact_subscribe_payloads_stand_in(run: Run) -> None:
    params = sorted(p for s in run.stand_in.subscribes for p in s["params"])
    # trades twice (first connection, reconnect), depth twice (first subscribe, resync after the gap)
    assert params == ["btcusdt@bookTicker", "btcusdt@depth@100ms", "btcusdt@depth@100ms",
                      "btcusdt@trade", "btcusdt@trade"]
    for s in run.stand_in.subscribes:
        assert set(s) == {"method", "params", "id"} and s["method"] == "SUBSCRIBE" and isinstance(s["id"], int)
    # the first subscribe on each stream's connection is request 1 of that connection, one stream each
    firsts = {s["params"][0]: s for s in reversed(run.stand_in.subscribes)}
    assert firsts == {p: {"method": "SUBSCRIBE", "params": [p], "id": 1}
                      for p in ("btcusdt@trade", "btcusdt@bookTicker", "btcusdt@depth@100ms")}
    assert run.stand_in.depth_requests == [{"symbol": "BTCUSDT", "limit": "1000"}] * 2


def test_trades_arrive_with_recorded_values_and_no_duplicates_after_reconnect_stand_in(run: Run) -> None:
    chunks = [s.trades for s in _slices(run) if s.trades is not None]
    ids = np.concatenate([c.trade_id for c in chunks if c.trade_id is not None])
    assert len(ids) == len(set(ids.tolist()))  # the overlap resent after the reconnect is dropped
    rec = run.stand_in.recorded.trades
    assert ids.tolist() == [str(t["t"]) for t in rec]
    price = np.concatenate([c.price for c in chunks])
    amount = np.concatenate([c.amount for c in chunks])
    side = np.concatenate([c.side for c in chunks])
    ts = np.concatenate([c.ts_event for c in chunks])
    assert price.tolist() == [float(t["p"]) for t in rec]
    assert amount.tolist() == [float(t["q"]) for t in rec]
    assert side.tolist() == [-1 if t["m"] else 1 for t in rec]
    assert ts.tolist() == [t["T"] * 1_000_000 for t in rec]
    assert all(c.instrument == "binance:BTC/USDT" for c in chunks)
    assert run.stats.duplicates == run.stand_in.overlap


def test_reconnect_with_backoff_stand_in(run: Run) -> None:
    assert run.stand_in.connections >= 4  # trades twice, quotes, depth
    assert run.stats.reconnects == 1 and len(run.sleeps) == 1
    assert 0.15 <= run.sleeps[0] <= 0.25  # initial 0.2 s, jitter 25 %


def test_quotes_arrive_as_quote_chunks_with_recorded_values_stand_in(run: Run) -> None:
    chunks = [s.quotes for s in _slices(run) if s.quotes is not None]
    rec = run.stand_in.recorded.quotes
    assert [float(b) for c in chunks for b in c.bid] == [float(q["b"]) for q in rec]
    assert [float(a) for c in chunks for a in c.ask] == [float(q["a"]) for q in rec]
    assert [float(b) for c in chunks for b in c.bid_size] == [float(q["B"]) for q in rec]
    assert [float(a) for c in chunks for a in c.ask_size] == [float(q["A"]) for q in rec]
    # spot bookTicker has no event time: the injected receive clock stamps it
    assert all(int(c.ts_event[0]) == int(c.ts_recv[0]) >= RECV0 for c in chunks)


def test_sequence_gap_resyncs_and_book_equals_stand_in(run: Run) -> None:
    gaps = [q for s in _slices(run) for q in s.rejected if q.reason.startswith("sequence gap")]
    assert run.stats.gaps == 1 and run.stats.resyncs == 1 and len(gaps) == 1
    assert gaps[0].reason.endswith("resynced from snapshot at update id " + str(gaps[0].reason.split()[-1]))
    assert "ChecksumError" in gaps[0].reason
    assert gaps[0].instrument == "binance:BTC/USDT" and gaps[0].ts_event > 0
    last = [i for i in run.items if isinstance(i, LiveBook)][-1]
    book = run.stand_in.book
    assert last.nonce == run.stand_in.update_id
    assert dict(last.bids) == book["b"] and dict(last.asks) == book["a"]
    assert [p for p, _ in last.bids] == sorted(book["b"], reverse=True)


def test_malformed_message_is_quarantined_and_stream_goes_on_stand_in(run: Run) -> None:
    bad = [q for s in _slices(run) for q in s.rejected if not q.reason.startswith("sequence gap")]
    assert run.stand_in.malformed_sent == 1 and run.stand_in.truncated_sent == 1 and len(bad) == 2
    by_reason = {q.reason: q for q in bad}
    trade = by_reason.pop("binance: field 'p' in binance trade is not a number: 'abc'")
    assert trade.instrument == "binance:BTC/USDT" and '"abc"' in trade.raw
    ((reason, cut),) = by_reason.items()
    assert reason.startswith("binance: invalid JSON (") and len(cut.raw) == 30 and cut.source == "live:binance:BTC/USDT"
    # every recorded quote still arrived (checked in full above)
    assert run.stats.quotes == len(run.stand_in.recorded.quotes)
    # trades recorded after the malformed one still arrived (checked in full above)
    assert run.stats.trades == len(run.stand_in.recorded.trades)


def test_watermark_is_latest_event_time_stand_in(run: Run) -> None:
    marks = [s.watermark for s in _slices(run)]
    assert marks == sorted(marks)
    last_trade = run.stand_in.recorded.trades[-1]["T"] * 1_000_000
    assert marks[-1] >= last_trade


def test_no_secret_in_items_or_logs_stand_in(run: Run) -> None:
    assert "reconnect 1 in" in run.log and "resyncing from a snapshot" in run.log  # the log was captured
    text = repr(run.items) + repr(run.stats) + run.log
    assert FAKE_KEY not in text and FAKE_SECRET not in text


# ---------------------------------------------------------------------------------------------------
# the Bytewax input, and a feed that gives up


def test_live_source_in_a_bytewax_flow_stand_in() -> None:
    import threading

    from bytewax import operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, run_main

    from sources.live import LiveSource

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def serve() -> tuple[Any, int, StandIn]:
        stand_in = StandIn(load_recorded(SHARED_DATA))
        runner, port = await start(stand_in)
        return runner, port, stand_in

    runner, port, stand_in = asyncio.run_coroutine_threadsafe(serve(), loop).result(10)

    def factory(venue: str) -> Any:
        assert venue == "binance"
        ex = ccxt.pro.binance()
        set_recorded_markets(ex, SHARED_DATA)
        point_at(ex, port)
        return ex

    got: list[Any] = []
    flow = Dataflow("live_stand_in")
    source = LiveSource(["binance:BTC/USDT"], clock=lambda: RECV0, exchange_factory=factory, channels=("quotes",),
                        limit=len(stand_in.recorded.quotes) + 1)  # + the cut frame
    items = op.input("live", flow, source)
    op.output("out", items, TestingSink(got))
    try:
        run_main(flow)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
    assert all(isinstance(i, MarketSlice) and i.instrument == "binance:BTC/USDT" for i in got)
    bids = [float(b) for i in got if i.quotes is not None for b in i.quotes.bid]
    assert bids == [float(q["b"]) for q in stand_in.recorded.quotes]
    assert [q.reason[:27] for i in got for q in i.rejected] == ["binance: invalid JSON (unex"]
    assert [s["params"] for s in stand_in.subscribes] == [["btcusdt@bookTicker"]]


def test_feed_gives_up_after_bounded_reconnects() -> None:
    async def main() -> tuple[FeedStats, list[float], str]:
        import socket

        with socket.socket() as s:  # a port nothing listens on: every connection is refused
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ex = ccxt.pro.binance()
        set_recorded_markets(ex, SHARED_DATA)
        point_at(ex, port)
        sleeps: list[float] = []

        async def sleep(t: float) -> None:
            sleeps.append(t)

        feed = LiveFeed(ex, "BTC/USDT", clock=lambda: RECV0, channels=("trades",), sleep=sleep, rng=random.Random(3),
                        backoff=Backoff(initial=1.0, factor=2.0, cap=3.0, jitter=0.0, max_attempts=3))
        try:
            async for _ in feed.stream():
                pass
        except FeedFailed as e:
            return feed.stats, sleeps, str(e)
        finally:
            await feed.close()
        raise AssertionError("the feed did not give up")

    stats, sleeps, error = asyncio.run(asyncio.wait_for(main(), 20))
    assert sleeps == [1.0, 2.0, 3.0] and stats.reconnects == 3
    assert error == "binance:BTC/USDT trades: 3 reconnects failed, last NetworkError"
