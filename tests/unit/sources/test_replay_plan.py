"""The replay plan: many files merged into one event-time stream, cut into slices with watermarks."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.errors import DataSourceError
from headrace.events import MarketSlice
from sources import synthetic
from sources.formats import ParsedFrame, read_paths
from sources.replay_plan import InMemoryPlan, LazyPlan, ReplayPlan, ReplayPosition

DEMO = Path(__file__).resolve().parents[3] / "data" / "demo" / "bittrex"


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


# ---------------------------------------------------------------------------------------------------
# the lazy plan: the same slices as the in-memory one, read in batches, resumable at any slice


def assert_same_slice(a: MarketSlice, b: MarketSlice) -> None:
    assert (a.instrument, a.watermark, a.rejected) == (b.instrument, b.watermark, b.rejected)
    for kind in ("trades", "quotes", "bars"):
        x, y = getattr(a, kind), getattr(b, kind)
        assert (x is None) == (y is None), (a.instrument, a.watermark, kind)
        if x is None:
            continue
        for f in dataclasses.fields(x):
            u, v = getattr(x, f.name), getattr(y, f.name)
            if f.name == "origin":
                assert u.files == v.files
                assert np.array_equal(u.file_index, v.file_index) and np.array_equal(u.row, v.row)
            elif isinstance(u, np.ndarray):
                assert u.dtype.kind == v.dtype.kind and np.array_equal(u, v), (kind, f.name)
            else:
                assert u == v, (kind, f.name)


def assert_same_plan(eager: ReplayPlan, lazy: ReplayPlan, start: object = None) -> int:
    """Every slice of `lazy` from `start` on equals `eager`'s, row counts included; return the first slice."""
    assert isinstance(eager, InMemoryPlan)
    cur = lazy.cursor(start)
    first = j = cur.next
    assert cur.rows_done == int(eager.rows_per_slice[:first].sum())
    while (got := cur.next_slice()) is not None:
        out, rows = got
        assert rows == int(eager.rows_per_slice[j])
        assert len(out) == len(eager.universe)
        for a, b in zip(eager.slice(j), out, strict=True):
            assert_same_slice(a, b)
        j += 1
    assert j == eager.n_slices and lazy.n_slices == eager.n_slices
    assert lazy.total_rows == eager.total_rows and lazy.universe == eager.universe and lazy.files == eager.files
    assert lazy.timeframes == eager.timeframes
    return first


def messy_frame(instrument: str, path: str, rows: list[tuple[int | None, bool]]) -> ParsedFrame:
    """Trades with times that may be missing (rejected) or go backwards, and rows rejected at parse time."""
    ts = [t for t, _ in rows]
    problem = [("missing field 'ts_event'" if t is None else "non-positive price: -1.0" if bad else None)
               for t, bad in rows]
    return trade_frame(instrument, path, ts, problem)  # type: ignore[arg-type]


# (event time or None, rejected at parse time); times drawn at random go backwards often
rows_st = st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 60)), st.booleans()), min_size=0, max_size=30)


@settings(max_examples=150, deadline=None)
@given(files=st.lists(rows_st, min_size=1, max_size=5), chunk=st.integers(1, 12), batch=st.integers(1, 9),
       insts=st.integers(1, 3), data=st.data())
def test_lazy_plan_emits_the_same_slices_as_the_in_memory_plan_and_resumes_at_any_slice(
        files: list[list[tuple[int | None, bool]]], chunk: int, batch: int, insts: int, data: st.DataObject) -> None:
    frames = [messy_frame(f"v:I{k % insts}/Q", f"f{k}.csv", rows) for k, rows in enumerate(files)]
    if not any(rows for rows in files):
        with pytest.raises(DataSourceError, match="hold no rows"):
            LazyPlan.of_frames(frames, chunk, batch)
        return
    eager = ReplayPlan.build(frames, chunk)
    assert assert_same_plan(eager, LazyPlan.of_frames(frames, chunk, batch)) == 0
    # resume: walk a fresh plan to slice k, keep its position (pickled, as Bytewax does), resume a third plan there
    k = data.draw(st.integers(0, eager.n_slices))
    cur = LazyPlan.of_frames(frames, chunk, batch).cursor()
    for _ in range(k):
        assert cur.next_slice() is not None
    state = pickle.loads(pickle.dumps(cur.state()))
    assert isinstance(state, ReplayPosition) and state.next_slice == k
    assert assert_same_plan(eager, LazyPlan.of_frames(frames, chunk, batch), state) == k


def test_lazy_plan_of_the_demo_bars_equals_the_in_memory_plan() -> None:
    eager = ReplayPlan.build(read_paths([str(DEMO)]), 500)
    lazy = ReplayPlan.open([str(DEMO)], 500, batch_rows=777)  # batches that end anywhere within a slice
    assert isinstance(lazy, LazyPlan)
    assert eager.n_slices > 50 and len(eager.universe) == 10
    assert_same_plan(eager, lazy)


@pytest.fixture(scope="module")
def tick_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("ticks")
    synthetic.write(synthetic.generate(60_000, seed=7), str(out))
    return str(out)


def test_lazy_plan_of_synthetic_ticks_in_parquet_equals_the_in_memory_plan(tick_dir: str) -> None:
    eager = ReplayPlan.build(read_paths([tick_dir]), 2_000)
    assert eager.n_slices >= 30 and eager.total_rows == 60_000
    assert_same_plan(eager, ReplayPlan.open([tick_dir], 2_000, batch_rows=1_234))


def test_lazy_plan_resumed_from_the_middle_of_parquet_files_continues_exactly(tick_dir: str) -> None:
    eager = ReplayPlan.build(read_paths([tick_dir]), 2_000)
    cur = ReplayPlan.open([tick_dir], 2_000, batch_rows=1_234).cursor()
    for _ in range(13):
        assert cur.next_slice() is not None
    state = pickle.loads(pickle.dumps(cur.state()))
    # the position is small: per file a row offset inside the file and the merge key there
    assert state.next_slice == 13 and state.rows_done == int(eager.rows_per_slice[:13].sum())
    assert len(state.offsets) == 20 and all(0 < o < 3_000 for o in state.offsets)
    assert_same_plan(eager, ReplayPlan.open([tick_dir], 2_000, batch_rows=1_234), state)


def test_lazy_plan_reads_as_it_goes_not_everything_up_front(tick_dir: str) -> None:
    plan = ReplayPlan.open([tick_dir], 200, batch_rows=500)
    cur = plan.cursor()
    assert cur.next_slice() is not None
    # 60,000 rows in 20 files: the first slice of 200 rows needs about one batch of each file, no more
    assert sum(f.rows_read for f in cur._files) <= 20 * 2 * 500
    while cur.next_slice() is not None:
        assert all(len(f.keys) <= 2 * 500 for f in cur._files)  # what one file holds at a time stays bounded
    assert sum(f.rows_read for f in cur._files) == 60_000 == plan.total_rows


def test_plan_slice_j_of_a_lazy_plan_gives_slices_in_any_order(tick_dir: str) -> None:
    eager = ReplayPlan.build(read_paths([tick_dir]), 2_000)
    lazy = ReplayPlan.open([tick_dir], 2_000)
    for j in (3, 4, 1, 29, 0, 4):
        for a, b in zip(eager.slice(j), lazy.slice(j), strict=True):
            assert_same_slice(a, b)
    with pytest.raises(IndexError):
        lazy.slice(eager.n_slices)


def test_a_slice_index_from_an_older_snapshot_is_refused_by_a_lazy_plan(tick_dir: str) -> None:
    with pytest.raises(DataSourceError, match="start a new run"):
        ReplayPlan.open([tick_dir], 2_000).cursor(7)


def test_a_lazy_plan_opens_a_file_only_when_the_replay_reaches_its_first_event_time() -> None:
    # a month of daily files: only the day being replayed is open, whatever the number of days
    days = [trade_frame("v:A/Q", f"day{d:02}.csv", [d * 100 + t for t in range(50)]) for d in range(30)]
    plan = LazyPlan.of_frames(days, 10, batch_rows=20)
    cur = plan.cursor()
    opened = set()
    while cur.next_slice() is not None:
        now = [i for i, f in enumerate(cur._files) if f.started and not f.exhausted]
        assert len(now) <= 2, now  # the day in progress, and the next one once the day's last row is near
        opened |= set(now)
    assert opened == set(range(30))
    assert_same_plan(ReplayPlan.build(days, 10), LazyPlan.of_frames(days, 10, batch_rows=20))


def test_lazy_plan_of_csv_files_with_bad_rows_equals_the_in_memory_plan(tmp_path: Path) -> None:
    folder = tmp_path / "binance"
    folder.mkdir()
    t0 = 1_700_000_000_000
    lines = ["timestamp,price,amount,side,id"]
    for i in range(400):
        ts = t0 + 1000 * i - (5000 if i % 97 == 5 else 0)  # now and then a row going back in time
        price = "-1" if i % 61 == 7 else "" if i % 89 == 3 else f"{100 + i % 7}"  # rejected at parse time
        lines.append(f"{ts},{price},0.5,{'buy' if i % 2 else 'sell'},{i}")
    (folder / "BTC_USDT-trades.csv").write_text("\n".join(lines) + "\n")
    (folder / "ETH_USDT-trades.csv").write_text("\n".join(
        ["timestamp,price,amount,side,id"] + [f"{t0 + 2500 * i},{50 + i % 3},1,buy,{i}" for i in range(150)]) + "\n")
    eager = ReplayPlan.build(read_paths([str(tmp_path)]), 37)
    assert sum(len(s.rejected) for j in range(eager.n_slices) for s in eager.slice(j)) >= 10
    lazy = ReplayPlan.open([str(tmp_path)], 37, batch_rows=29)
    assert lazy.total_rows == 550  # counted before reading: the files' lines
    assert_same_plan(eager, lazy)
