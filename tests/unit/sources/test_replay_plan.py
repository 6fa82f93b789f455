"""The replay plan: many files merged into one event-time stream, cut into slices with watermarks."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from headrace.errors import DataSourceError
from sources.formats import ParsedFrame
from sources.replay_plan import ReplayPlan


def trade_frame(instrument: str, path: str, ts: list[int], problem: list[str | None] | None = None) -> ParsedFrame:
    n = len(ts)
    df = pl.DataFrame({
        "ts_event": pl.Series(ts, dtype=pl.Int64), "ts_recv": pl.Series(ts, dtype=pl.Int64),
        "price": [1.0 + i for i in range(n)], "amount": [1.0] * n, "side": pl.Series([1] * n, dtype=pl.Int8),
        "trade_id": [f"{path}#{i}" for i in range(n)], "row": pl.Series(range(n), dtype=pl.Int64),
        "problem": pl.Series(problem or [None] * n, dtype=pl.Utf8),
        "raw": pl.Series([None if p is None else "{}" for p in (problem or [None] * n)], dtype=pl.Utf8),
    })
    return ParsedFrame(instrument=instrument, kind="trade", timeframe_ns=0, path=path, frame=df)


def emitted(plan: ReplayPlan) -> list[tuple[int, str, str, int, int]]:
    """(slice, instrument, file, row, ts_event) of every accepted row, in emission order."""
    out = []
    for j in range(plan.n_slices):
        for s in plan.slice(j):
            if s.trades is not None:
                o = s.trades.origin
                out += [(j, s.instrument, o.files[f], int(r), int(t))
                        for f, r, t in zip(o.file_index.tolist(), o.row.tolist(), s.trades.ts_event.tolist())]
    return out


sorted_times = st.lists(st.integers(0, 50), min_size=1, max_size=40).map(sorted)


@given(files=st.lists(sorted_times, min_size=1, max_size=5), chunk=st.integers(1, 30), insts=st.integers(1, 3))
def test_merge_emits_every_row_once_in_file_order_and_watermarks_hold(files: list[list[int]], chunk: int,
                                                                      insts: int) -> None:
    frames = [trade_frame(f"v:I{k % insts}/Q", f"f{k}.csv", ts) for k, ts in enumerate(files)]
    plan = ReplayPlan.build(frames, chunk)
    rows = emitted(plan)
    # every row exactly once
    assert sorted((f, r) for _, _, f, r, _ in rows) == sorted((f"f{k}.csv", r) for k, ts in enumerate(files)
                                                           for r in range(len(ts)))
    assert plan.total_rows == len(rows)
    assert np.all(np.diff(plan.watermarks) > 0)
    # each file keeps its order, and each instrument's stream is in event-time order
    for k in range(len(files)):
        assert [r for _, _, f, r, _ in rows if f == f"f{k}.csv"] == list(range(len(files[k])))
    for i in {inst for _, inst, _, _, _ in rows}:
        ts = [t for _, inst, _, _, t in rows if inst == i]
        assert ts == sorted(ts)
    # the watermark promise: once slice j is out, no row with event time <= watermark[j] is still to come
    for j, wm in enumerate(plan.watermarks.tolist()):
        assert all(t > wm for s, _, _, _, t in rows if s > j)
        assert all(t <= wm for s, _, _, _, t in rows if s == j)
    # slices are cut every `chunk` rows, never inside one event time
    assert all(n >= 1 for n in plan.rows_per_slice.tolist())


def test_every_slice_holds_every_instrument_so_quiet_ones_advance_their_watermark() -> None:
    plan = ReplayPlan.build([trade_frame("v:A/Q", "a.csv", [1, 2, 3, 4]), trade_frame("v:B/Q", "b.csv", [100])], 2)
    assert plan.n_slices == 3
    for j in range(plan.n_slices):
        items = plan.slice(j)
        assert [s.instrument for s in items] == ["v:A/Q", "v:B/Q"]
        assert len({s.watermark for s in items}) == 1
    assert plan.slice(0)[1].trades is None  # B has nothing yet, but its watermark moved to 2


def test_a_row_going_back_in_time_stays_behind_its_predecessor_for_the_validator_to_see() -> None:
    plan = ReplayPlan.build([trade_frame("v:A/Q", "a.csv", [10, 20, 5, 30]),
                             trade_frame("v:A/Q", "b.csv", [15, 25])], 100)
    order = [(f, r) for _, _, f, r, _ in emitted(plan)]
    # a.csv row 2 (ts 5) keeps its place after row 1 (ts 20); b.csv interleaves by event time
    assert order == [("a.csv", 0), ("b.csv", 0), ("a.csv", 1), ("a.csv", 2), ("b.csv", 1), ("a.csv", 3)]


def test_rows_rejected_at_parse_time_are_carried_with_their_slice_and_reason() -> None:
    f = trade_frame("v:A/Q", "a.csv", [1, 2, 3, 4], problem=[None, "non-positive price: -1.0", None, None])
    plan = ReplayPlan.build([f], 2)
    rejected = [q for j in range(plan.n_slices) for s in plan.slice(j) for q in s.rejected]
    assert [(q.source, q.row, q.reason) for q in rejected] == [("a.csv", 1, "non-positive price: -1.0")]
    assert plan.total_rows == 4  # a rejected row is still an event in


def test_bars_and_ticks_of_one_instrument_cannot_be_mixed() -> None:
    bars = pl.DataFrame({"ts_open": [0], "ts_event": [60], "ts_recv": [60], "open": [1.0], "high": [1.0],
                         "low": [1.0], "close": [1.0], "volume": [1.0], "row": [0], "problem": [None], "raw": [None]},
                        schema_overrides={"problem": pl.Utf8, "raw": pl.Utf8})
    frames = [ParsedFrame(instrument="v:A/Q", kind="bar", timeframe_ns=60, path="bars.csv", frame=bars),
              trade_frame("v:A/Q", "t.csv", [1])]
    with pytest.raises(DataSourceError, match="both recorded bars and ticks"):
        ReplayPlan.build(frames, 10)


def test_no_frames_is_an_error_naming_the_data() -> None:
    with pytest.raises(DataSourceError, match="no data files"):
        ReplayPlan.build([], 10)
