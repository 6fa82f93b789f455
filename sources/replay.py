"""The replay source: a Bytewax partitioned source over a `ReplayPlan`, resumable at an exact position.

The resume state is the plan's cursor state: for a lazy plan (`ReplayPlan.open`) a `ReplayPosition`
(next slice, rows emitted, per file the row offset and last merge key), for an in-memory plan the next
slice index. Both are small and picklable, and a resumed source emits exactly the slices an
uninterrupted one would have emitted from there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from headrace.events import MarketSlice
from sources.replay_plan import ReplayPlan

Progress = Callable[[int], None]  # called with the number of source rows each slice carried


class _ReplayPartition(StatefulSourcePartition[MarketSlice, Any]):
    def __init__(self, plan: ReplayPlan, resume_state: Any, progress: Progress | None) -> None:
        self.plan = plan
        self.cursor = plan.cursor(resume_state)
        self.progress = progress
        if progress is not None and self.cursor.rows_done:
            progress(self.cursor.rows_done)  # resumed: those rows were replayed before

    @property
    def next(self) -> int:
        """Index of the next slice to emit."""
        return self.cursor.next

    def next_batch(self) -> list[MarketSlice]:
        got = self.cursor.next_slice()
        if got is None:
            raise StopIteration
        out, rows = got
        if self.progress is not None:
            self.progress(rows)
        return out

    def snapshot(self) -> Any:
        return self.cursor.state()


class ReplaySource(FixedPartitionedSource[MarketSlice, Any]):
    """Emit a plan's slices in order from one partition; the resume state is the plan's cursor state."""

    def __init__(self, plan: ReplayPlan, progress: Progress | None = None) -> None:
        self.plan = plan
        self.progress = progress

    def list_parts(self) -> list[str]:
        return ["replay"]

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _ReplayPartition:
        return _ReplayPartition(self.plan, resume_state, self.progress)
