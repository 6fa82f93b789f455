from __future__ import annotations

import pickle

import numpy as np
import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from helpers import market_slice, quotes, trades
from operators.bars.bar_builder import BarBuilder

TF = 10
INST = "x:A/B"


@st.composite
def tick_stream(draw: st.DrawFn) -> tuple[list[int], list[float], list[float], list[int]]:
    n = draw(st.integers(1, 120))
    gaps = draw(st.lists(st.integers(0, 7), min_size=n, max_size=n))
    ts = np.cumsum(gaps).tolist()
    price = draw(st.lists(st.floats(1.0, 100.0), min_size=n, max_size=n))
    size = draw(st.lists(st.floats(0.001, 10.0), min_size=n, max_size=n))
    cuts = sorted(set(draw(st.lists(st.integers(1, n), max_size=6))) | {n})
    return ts, price, size, cuts


def batch_bars(ts: list[int], price: list[float], size: list[float]) -> pl.DataFrame:
    df = pl.DataFrame({"ts": ts, "p": price, "v": size})
    return (df.with_columns((pl.col("ts") - pl.col("ts") % TF).alias("start"))
            .group_by("start", maintain_order=True)
            .agg(pl.col("p").first().alias("open"), pl.col("p").max().alias("high"), pl.col("p").min().alias("low"),
                 pl.col("p").last().alias("close"), pl.col("v").sum().alias("volume"), pl.len().alias("n")))


def run_chunks(core: BarBuilder, ts, price, size, cuts):
    out, a = [], 0
    for b in cuts:
        chunk = trades(INST, ts[a:b], price[a:b], size[a:b])
        # the watermark promises every record up to it has arrived: short of ts[b-1] if more share it
        wm = ts[b - 1] if b == len(ts) or ts[b] > ts[b - 1] else ts[b - 1] - 1
        out += [x for batch in core.update(market_slice(INST, wm, trades=chunk)) for x in batch.bars]
        a = b
    return out


@given(stream=tick_stream())
def test_bars_from_trades_equal_a_polars_group_by(stream) -> None:
    ts, price, size, cuts = stream
    core = BarBuilder(INST, TF)
    got = run_chunks(core, ts, price, size, cuts) + [b for batch in core.flush() for b in batch.bars]
    expected = batch_bars(ts, price, size)
    assert [b.ts_open for b in got] == expected["start"].to_list()
    assert [b.ts_event - b.ts_open for b in got] == [TF] * len(got)
    for b, row in zip(got, expected.iter_rows(named=True)):
        expected_row = (row["open"], row["high"], row["low"], row["close"], row["n"])
        assert (b.open, b.high, b.low, b.close, b.trades) == expected_row
        assert np.isclose(b.volume, row["volume"], rtol=1e-12)


@given(stream=tick_stream(), cut=st.integers(0, 6))
def test_bar_builder_restore_midway_is_invisible(stream, cut: int) -> None:
    ts, price, size, cuts = stream
    straight = BarBuilder(INST, TF)
    expected = run_chunks(straight, ts, price, size, cuts) + [b for x in straight.flush() for b in x.bars]
    k = min(cut, len(cuts))
    first = BarBuilder(INST, TF)
    got = run_chunks(first, ts, price, size, cuts[:k])
    second = BarBuilder.restore(TF, pickle.loads(pickle.dumps(first.snapshot())))
    start = cuts[k - 1] if k else 0
    got += run_chunks(second, ts[start:], price[start:], size[start:], [c - start for c in cuts[k:]])
    got += [b for x in second.flush() for b in x.bars]
    assert got == expected


def test_bar_closes_only_when_the_watermark_passes_its_end() -> None:
    core = BarBuilder(INST, TF)
    [batch] = core.update(market_slice(INST, 8, trades=trades(INST, [1, 8], [5.0, 6.0])))
    assert batch.bars == ()
    [batch] = core.update(market_slice(INST, 9))  # every record before 10 has arrived
    assert [(b.ts_open, b.close) for b in batch.bars] == [(0, 6.0)]


def test_quote_only_bucket_uses_mids_and_bars_carry_the_last_quote() -> None:
    core = BarBuilder(INST, TF)
    q = quotes(INST, [1, 2, 12], bid=[9.0, 10.0, 11.0], ask=[11.0, 12.0, 13.0])
    t = trades(INST, [15], [12.5])
    [batch] = core.update(market_slice(INST, 30, quotes=q, trades=t))
    first, second = batch.bars
    assert (first.open, first.close, first.volume, first.trades) == (10.0, 11.0, 0.0, 0)
    assert (first.bid, first.ask) == (10.0, 12.0)
    assert (second.open, second.close, second.trades, second.bid, second.ask) == (12.5, 12.5, 1, 11.0, 13.0)
