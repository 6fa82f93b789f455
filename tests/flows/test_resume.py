"""A resumed replay really resumes: it starts above slice 0 and processes fewer events than a full run.

Comparing only the final rows cannot tell a resume from a silent restart (a restart from scratch writes
the same rows), so these tests watch the source itself: where each run starts and how much it emits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bytewax.testing import TestingSink

from flows.runner import init_recovery
from flows.runner import run as run_flow
from flows.trading import build_flow
from headrace.config import Config
from headrace.events import MarketSlice
from helpers import DEMO, small_config
from sources.replay import ReplaySource, _ReplayPartition
from sources.replay_plan import ReplayPlan


class _Crash(Exception):
    pass


class WatchedSource(ReplaySource):
    """A replay source that records where each partition starts and how many slices and rows it emits;
    with `crash_after`, it raises once that many slices have been emitted in total."""

    def __init__(self, plan: ReplayPlan, crash_after: int | None = None) -> None:
        self.rows_reported: list[int] = []
        super().__init__(plan, progress=self.rows_reported.append)
        self.crash_after = crash_after
        self.starts: list[int] = []
        self.emitted: list[int] = []  # slice indexes, in emission order
        self.rows: list[int] = []  # source rows of each emitted slice, as the progress callback was told

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _ReplayPartition:
        part = super().build_part(step_id, for_part, resume_state)
        self.starts.append(part.next)
        inner = part.next_batch

        def next_batch() -> list[MarketSlice]:
            if self.crash_after is not None and part.next >= self.crash_after:
                raise _Crash(f"crash at slice {part.next}")
            j, told = part.next, len(self.rows_reported)
            out = inner()
            self.emitted.append(j)
            self.rows.append(sum(self.rows_reported[told:]))
            return out

        part.next_batch = next_batch  # type: ignore[method-assign]
        return part

    def rows_emitted(self) -> int:
        return sum(self.rows)


def run(plan: ReplayPlan, config: Config, source: ReplaySource, recovery: Path | None = None,
        rows: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the flow as the CLI does; return its rows by event id (also in `rows`, filled even when it fails)."""
    rows = {} if rows is None else rows
    got: list[tuple[str, Any]] = []
    flow = build_flow(plan, config, "test", source=source, sink=TestingSink(got))
    try:
        run_flow(flow, epoch_s=0.0, recovery_dir=recovery)
    finally:
        for _, v in got:
            for e in v if isinstance(v, list) else [v]:
                rows[e.event_id] = e
    return rows


DEMO_PAIR = [str(DEMO / "ETH_BTC-5m.feather"), str(DEMO / "LTC_BTC-5m.feather")]


@pytest.mark.parametrize("plan_kind, crash_at", [("in_memory", 4), ("in_memory", 9), ("lazy", 7)])
def test_a_resumed_replay_starts_above_slice_zero_and_emits_only_the_rest(demo_plan: ReplayPlan, tmp_path: Path,
                                                                          plan_kind: str, crash_at: int) -> None:
    config = small_config()
    if plan_kind == "lazy":  # the plan the CLI replays: files read in batches as the replay goes
        demo_plan = ReplayPlan.open(DEMO_PAIR, config.replay.chunk_rows)
    full_source = WatchedSource(demo_plan)
    expected = run(demo_plan, config, full_source)
    assert full_source.starts == [0] and full_source.emitted == list(range(demo_plan.n_slices))
    assert full_source.rows_emitted() == demo_plan.total_rows

    init_recovery(tmp_path)
    crashing = WatchedSource(demo_plan, crash_after=crash_at)
    before: dict[str, Any] = {}
    with pytest.raises(Exception) as info:
        run(demo_plan, config, crashing, recovery=tmp_path, rows=before)
    assert "crash at slice" in str(info.value.__cause__ or info.value)
    assert crashing.emitted == list(range(crash_at))

    resumed = WatchedSource(demo_plan)
    after = run(demo_plan, config, resumed, recovery=tmp_path)
    [start] = resumed.starts
    assert 0 < start <= crash_at, f"the resumed source started at slice {start}"
    assert resumed.emitted == list(range(start, demo_plan.n_slices))
    assert resumed.rows_emitted() < full_source.rows_emitted()  # fewer events processed than a full run
    before_start = sum(full_source.rows[:start])
    assert resumed.rows_emitted() == demo_plan.total_rows - before_start
    # the progress callback is told of the rows replayed before the crash, then of each slice emitted
    assert resumed.rows_reported[0] == before_start and sum(resumed.rows_reported) == demo_plan.total_rows
    # and the two runs together wrote exactly what the uninterrupted run did
    assert {**before, **after} == expected
    assert len(after) < len(expected)  # the resumed run did not write everything again


def test_two_replays_of_the_same_plan_write_identical_rows(demo_plan: ReplayPlan) -> None:
    config = small_config()
    first = run(demo_plan, config, ReplaySource(demo_plan))
    second = run(demo_plan, config, ReplaySource(demo_plan))
    assert len(first) > 0 and any(type(e).__name__ == "Fill" for e in first.values())
    assert list(first) == list(second)  # the same event ids, written in the same order
    assert first == second  # and the same values, field by field
