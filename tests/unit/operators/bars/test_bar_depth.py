"""Depth on bars: bars of a recorded order book carry its top levels at each close (checked against a book
rebuilt by brute force from the raw messages), bars of quote files the sizes of the last quote at or before
each close, bars of bar files neither; a snapshot taken mid-stream restores to the same bars; the bars table
keeps its columns."""

from __future__ import annotations

import functools
import json
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from headrace.errors import SnapshotVersionError
from headrace.events import Bar, MarketSlice, Quarantined
from helpers import SHARED_DATA, bar, market_slice, quotes
from operators.bars.bar_builder import BarBuilder
from operators.validation.market_checks import MarketValidator
from sinks.rows import to_arrow
from sources.book_files import BOOK_DEPTH
from sources.replay_plan import ReplayPlan

BYBIT = SHARED_DATA / "book" / "bybit" / "xrpusdt-ob500.data.zip"
QUOTES = SHARED_DATA / "ticks" / "binance" / "btcusdt-quotes.parquet"
BARS = SHARED_DATA / "ohlcv" / "binance" / "XRP_ETH-5m.feather"
MS = 1_000_000


def _need(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path} is missing (../shared/data is not beside the clone)")


@functools.cache
def _validated(path: Path) -> tuple[MarketSlice | Quarantined, ...]:
    chunk_rows, batch_rows = (7, 5) if path == BYBIT else (40, 100)  # small slices, fewer for the longer files
    plan = ReplayPlan.open([str(path)], chunk_rows, batch_rows=batch_rows)
    validator = MarketValidator()
    cur = plan.cursor()
    out: list[MarketSlice | Quarantined] = []
    while (got := cur.next_slice()) is not None:
        for s in got[0]:
            out += validator.update(s)
    return tuple(out)


def _slices(paths: list[Path]) -> Iterator[MarketSlice | Quarantined]:
    """The plan's slices of one file through the validator, as the flow sees them."""
    [path] = paths
    yield from _validated(path)


def _bars(paths: list[Path], tf: int, snapshot_at: int | None = None) -> list[Bar]:
    """Bars of the one instrument in `paths`; with `snapshot_at`, the builder is snapshotted, pickled and
    restored after that many slices."""
    core: BarBuilder | None = None
    out: list[Bar] = []
    n = 0
    for item in _slices(paths):
        if not isinstance(item, MarketSlice):
            continue
        core = core or BarBuilder(item.instrument, tf)
        out += [b for batch in core.update(item) for b in batch.bars]
        n += 1
        if n == snapshot_at:
            core = BarBuilder.restore(tf, pickle.loads(pickle.dumps(core.snapshot())))
    assert core is not None
    out += [b for batch in core.flush() for b in batch.bars]
    return out


def _brute_books(path: Path) -> list[tuple[int, dict[float, float], dict[float, float]]]:
    """(event time ns, bids, asks) after each Bybit message, applied naively: a snapshot replaces the book,
    a delta sets each level it names (0 deletes)."""
    with zipfile.ZipFile(path) as z:
        lines = z.read(z.namelist()[0]).decode().splitlines()
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    states = []
    for line in lines:
        msg = json.loads(line)
        if msg["type"] == "snapshot":
            bids, asks = {}, {}
        for side, book in (("b", bids), ("a", asks)):
            for p, a in msg["data"][side]:
                if float(a) == 0:
                    book.pop(float(p), None)
                else:
                    book[float(p)] = float(a)
        states.append((int(msg.get("cts", msg["ts"])) * MS, dict(bids), dict(asks)))
    return states


@pytest.mark.parametrize("tf", [250 * MS, 1000 * MS])
def test_book_bars_carry_the_top_levels_of_the_book_at_each_close(tf: int) -> None:
    _need(BYBIT)
    bars = _bars([BYBIT], tf)
    states = _brute_books(BYBIT)
    assert len(bars) >= 5
    for b in bars:
        before = [s for s in states if s[0] < b.ts_event]  # the bucket [open, close) holds times below the close
        _, bids, asks = before[-1]
        want_bids = tuple(sorted(bids.items(), reverse=True)[:BOOK_DEPTH])
        want_asks = tuple(sorted(asks.items())[:BOOK_DEPTH])
        assert b.bids == want_bids and b.asks == want_asks, b.ts_event
        assert len(b.bids) == BOOK_DEPTH and len(b.asks) == BOOK_DEPTH
        assert (b.bid, b.bid_size, b.ask, b.ask_size) == (*want_bids[0], *want_asks[0])


def test_quote_bars_carry_the_sizes_of_the_last_quote_at_or_before_each_close() -> None:
    _need(QUOTES)
    raw = pl.read_parquet(QUOTES).with_columns(pl.col("timestamp").dt.epoch("ns").alias("ts"))
    quarantined = {q.row for q in _slices([QUOTES]) if isinstance(q, Quarantined)}
    kept = raw.with_row_index("row").filter(~pl.col("row").is_in(list(quarantined)))
    ts = kept["ts"].to_numpy()
    tf = 2_000 * MS
    bars = _bars([QUOTES], tf)
    assert len(bars) > 10
    for b in bars:
        i = int(np.searchsorted(ts, b.ts_event, side="left")) - 1  # last quote strictly before the close
        assert (b.bid, b.ask, b.bid_size, b.ask_size) == (kept["bid"][i], kept["ask"][i], kept["bid_size"][i],
                                                          kept["ask_size"][i])
        assert b.bids == () and b.asks == ()


def test_bars_of_bar_files_carry_no_depth() -> None:
    _need(BARS)
    bars = _bars([BARS], 60 * 10**9)
    assert bars and all(b.bid_size is None and b.ask_size is None and b.bids == () == b.asks for b in bars)


@pytest.mark.parametrize("path", [BYBIT, QUOTES])
def test_a_snapshot_mid_stream_restores_to_identical_bars(path: Path) -> None:
    _need(path)
    tf = 500 * MS
    whole = _bars([path], tf)
    for at in (1, 3, 6):
        assert _bars([path], tf, snapshot_at=at) == whole
    assert any(b.bid_size is not None for b in whole)


def test_restore_refuses_a_snapshot_of_the_previous_version() -> None:
    core = BarBuilder("x:A/B", 10)
    core.update(market_slice("x:A/B", 3, quotes=quotes("x:A/B", [1, 2], [1.0, 1.1], [1.2, 1.3], [5.0, 6.0])))
    import dataclasses

    old = dataclasses.replace(core.snapshot(), version=1)
    with pytest.raises(SnapshotVersionError):
        BarBuilder.restore(10, old)
    [batch] = BarBuilder.restore(10, core.snapshot()).flush()
    assert [(b.bid, b.bid_size, b.ask_size) for b in batch.bars] == [(1.1, 6.0, 1.0)]


def test_a_bar_with_only_trades_keeps_the_depth_of_the_last_quote_before_it() -> None:
    from helpers import trades

    core = BarBuilder("x:A/B", 10)
    out = core.update(market_slice("x:A/B", 9, quotes=quotes("x:A/B", [1], [1.0], [1.2], [5.0], [7.0])))
    out += core.update(market_slice("x:A/B", 19, trades=trades("x:A/B", [12], [1.1])))
    got = [(b.ts_event, b.bid_size, b.ask_size) for batch in out for b in batch.bars]
    assert got == [(10, 5.0, 7.0), (20, 5.0, 7.0)]


def test_the_bars_table_keeps_its_columns_with_depth_on_the_bar() -> None:
    plain = bar("x:A/B", 0, 1.0, bid=0.9, ask=1.1)
    deep = Bar(**{**{f: getattr(plain, f) for f in plain.__slots__},  # type: ignore[attr-defined]
                  "bid_size": 2.0, "ask_size": 3.0, "bids": ((0.9, 2.0),), "asks": ((1.1, 3.0),)})
    a, b = to_arrow("bars", "r", [plain]), to_arrow("bars", "r", [deep])
    assert a.equals(b)
    assert "bid_size" not in a.column_names and "bids" not in a.column_names
