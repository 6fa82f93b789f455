"""The replay source: a Bytewax partitioned source over a `ReplayPlan`, resumable by slice offset."""

from __future__ import annotations

from collections.abc import Callable

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from headrace.events import MarketSlice
from sources.replay_plan import ReplayPlan

Progress = Callable[[int], None]  # called with the number of source rows each slice carried


class _ReplayPartition(StatefulSourcePartition[MarketSlice, int]):
    def __init__(self, plan: ReplayPlan, start: int, progress: Progress | None) -> None:
        self.plan = plan
        self.next = start
        self.progress = progress
        if progress is not None and start:
            progress(int(plan.rows_per_slice[:start].sum()))  # resumed: those rows were replayed before

    def next_batch(self) -> list[MarketSlice]:
        if self.next >= self.plan.n_slices:
            raise StopIteration
        j = self.next
        out = self.plan.slice(j)
        self.next = j + 1
        if self.progress is not None:
            self.progress(int(self.plan.rows_per_slice[j]))
        return out

    def snapshot(self) -> int:
        return self.next


class ReplaySource(FixedPartitionedSource[MarketSlice, int]):
    """Emit a plan's slices in order from one partition; the resume state is the next slice index."""

    def __init__(self, plan: ReplayPlan, progress: Progress | None = None) -> None:
        self.plan = plan
        self.progress = progress

    def list_parts(self) -> list[str]:
        return ["replay"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _ReplayPartition:
        return _ReplayPartition(self.plan, resume_state or 0, self.progress)
