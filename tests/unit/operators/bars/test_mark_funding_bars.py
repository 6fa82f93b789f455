"""Bars of a perpetual contract carry the last mark price known at their close and the funding events since the
previous bar's close."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.errors import SnapshotVersionError
from headrace.events import Bar, BarChunk, FundingChunk, MarkChunk, MarketSlice
from helpers import origin, trades
from operators.bars.bar_builder import BarBuilder

INST = "x:A/B:B"
TF = 10


def marks(ts: list[int], price: list[float]) -> MarkChunk:
    a = np.array(ts, np.int64)
    return MarkChunk(instrument=INST, ts_event=a, ts_recv=a, price=np.array(price, float), origin=origin(len(ts)))


def funding(ts: list[int], rate: list[float]) -> FundingChunk:
    a = np.array(ts, np.int64)
    return FundingChunk(instrument=INST, ts_event=a, ts_recv=a, rate=np.array(rate, float), origin=origin(len(ts)))


def run(core: BarBuilder, slices: list[MarketSlice]) -> list[Bar]:
    out = [b for s in slices for batch in core.update(s) for b in batch.bars]
    return out + [b for batch in core.flush() for b in batch.bars]


def test_tick_bars_take_the_marks_and_funding_stamped_before_their_close() -> None:
    # trades make bars [0,10), [10,20), [30,40) (no bar [20,30)); marks close at 5, 10, 25; funding at 0, 3, 10, 21, 35.
    # A bar built from ticks closes once everything before its close has arrived (watermark 9 closes [0, 10)), so
    # what is stamped on its close (10) goes to the next bar.
    slices = [
        MarketSlice(instrument=INST, watermark=9, trades=trades(INST, [1, 5], [1.0, 1.1]), marks=marks([5], [2.0]),
                    funding=funding([0, 3], [1e-4, 2e-4])),
        MarketSlice(instrument=INST, watermark=19, trades=trades(INST, [12], [1.2]), marks=marks([10], [2.1]),
                    funding=funding([10], [3e-4])),
        MarketSlice(instrument=INST, watermark=39, trades=trades(INST, [31], [1.3]), marks=marks([25], [2.2]),
                    funding=funding([21, 35], [-1e-4, 4e-4])),
        MarketSlice(instrument=INST, watermark=60, funding=funding([45], [5e-4])),  # after the last bar: none take it
    ]
    bars = run(BarBuilder(INST, TF), slices)
    assert [(b.ts_event, b.mark_price, b.mark_ts, b.funding) for b in bars] == [
        (10, 2.0, 5, ((0, 1e-4), (3, 2e-4))),
        (20, 2.1, 10, ((10, 3e-4),)),
        (40, 2.2, 25, ((21, -1e-4), (35, 4e-4))),  # the gap [20, 30) without a bar: its funding goes to the next
    ]


def test_a_recorded_bar_takes_the_mark_and_funding_stamped_on_its_close() -> None:
    def recorded(ts_open: list[int]) -> BarChunk:
        o = np.array(ts_open, np.int64)
        one = np.ones(len(o))
        return BarChunk(instrument=INST, ts_open=o, ts_event=o + TF, ts_recv=o + TF, open=one, high=one, low=one,
                        close=one, volume=one, origin=origin(len(o)))

    slices = [MarketSlice(instrument=INST, watermark=10, bars=recorded([0]), marks=marks([10], [2.0]),
                          funding=funding([0, 10], [1e-4, 2e-4])),
              MarketSlice(instrument=INST, watermark=20, bars=recorded([10]), funding=funding([15], [3e-4]))]
    bars = run(BarBuilder(INST, TF), slices)
    assert [(b.ts_event, b.mark_price, b.mark_ts, b.funding) for b in bars] == [
        (10, 2.0, 10, ((10, 2e-4),)),  # funding at the first bar's open concerns no position of the replay
        (20, 2.0, 10, ((15, 3e-4),)),
    ]


def test_bars_before_the_first_mark_have_none_and_bars_without_contract_data_are_unchanged() -> None:
    bars = run(BarBuilder(INST, TF), [MarketSlice(instrument=INST, watermark=29, trades=trades(INST, [1, 12, 25],
                                                                                                [1.0, 1.1, 1.2]),
                                                  marks=marks([20], [3.0]))])
    assert [(b.mark_price, b.mark_ts) for b in bars] == [(None, None), (None, None), (3.0, 20)]
    plain = run(BarBuilder(INST, TF), [MarketSlice(instrument=INST, watermark=29,
                                                   trades=trades(INST, [1, 12], [1.0, 1.1]))])
    assert all(b.mark_price is None and b.mark_ts is None and b.funding == () for b in plain)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 200), min_size=1, max_size=30, unique=True),
       st.lists(st.integers(0, 200), max_size=20, unique=True),
       st.lists(st.integers(0, 200), max_size=20, unique=True), st.integers(1, 8))
def test_every_funding_event_within_the_bars_lands_on_one_bar_and_a_restore_changes_nothing(
        trade_ts: list[int], mark_ts: list[int], fund_ts: list[int], cut: int) -> None:
    trade_ts, mark_ts, fund_ts = sorted(trade_ts), sorted(mark_ts), sorted(fund_ts)
    edges = np.linspace(0, 201, cut + 1).astype(int)

    def part(xs: list[int], a: int, b: int) -> list[int]:
        return [x for x in xs if a <= x < b]

    slices = []
    for a, b in zip(edges[:-1].tolist(), edges[1:].tolist()):
        tr, mk, fu = part(trade_ts, a, b), part(mark_ts, a, b), part(fund_ts, a, b)
        slices.append(MarketSlice(instrument=INST, watermark=b - 1,
                                  trades=trades(INST, tr, [1.0] * len(tr)) if tr else None,
                                  marks=marks(mk, [float(x) + 1 for x in mk]) if mk else None,
                                  funding=funding(fu, [x * 1e-5 for x in fu]) if fu else None))
    whole = run(BarBuilder(INST, TF), slices)
    closes = [b.ts_event for b in whole]
    for b in whole:
        known = [m for m in mark_ts if m < b.ts_event]
        assert (b.mark_ts, b.mark_price) == ((known[-1], known[-1] + 1.0) if known else (None, None))
    carried = [t for b in whole for t, _ in b.funding]
    assert carried == [t for t in fund_ts if whole[0].ts_open <= t < closes[-1]]
    # a snapshot after the first slice, pickled and restored, gives the same bars
    first = BarBuilder(INST, TF)
    head = [b for batch in first.update(slices[0]) for b in batch.bars]
    restored = BarBuilder.restore(TF, pickle.loads(pickle.dumps(first.snapshot())))
    assert head + run(restored, slices[1:]) == whole


def test_restore_takes_a_version_3_snapshot_and_refuses_older_ones() -> None:
    core = BarBuilder(INST, TF)
    core.update(MarketSlice(instrument=INST, watermark=5, trades=trades(INST, [1], [1.0])))
    snap = core.snapshot()
    assert snap.version == 4
    old = dataclasses.replace(snap, version=3)
    restored = BarBuilder.restore(TF, old)
    bars = run(restored, [MarketSlice(instrument=INST, watermark=19, marks=marks([8], [2.0]))])
    assert [(b.ts_event, b.mark_price) for b in bars] == [(10, 2.0)]
    with pytest.raises(SnapshotVersionError):
        BarBuilder.restore(TF, dataclasses.replace(snap, version=2))
