"""The one adapter where cores meet Bytewax: run one core per key in a stateful step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import bytewax.operators as op
from bytewax.dataflow import operator
from bytewax.operators import KeyedStream, StatefulLogic

E = TypeVar("E")
O = TypeVar("O")
S = TypeVar("S")


class _CoreLogic(StatefulLogic[E, O, S], Generic[E, O, S]):
    def __init__(self, fresh: Callable[[E], Any], core: Any | None) -> None:
        self.fresh = fresh
        self.core = core

    def on_item(self, value: E) -> tuple[list[O], bool]:
        if self.core is None:
            self.core = self.fresh(value)
        return self.core.update(value), StatefulLogic.RETAIN

    def on_eof(self) -> tuple[list[O], bool]:
        if self.core is None:
            return [], StatefulLogic.RETAIN
        return self.core.flush(), StatefulLogic.RETAIN

    def snapshot(self) -> S:
        assert self.core is not None
        snap: S = self.core.snapshot()  # small and frozen: no deepcopy of the core
        return snap


@operator
def core_step(step_id: str, up: KeyedStream[E], fresh: Callable[[E], Any],
              restore: Callable[[Any], Any]) -> KeyedStream[O]:
    """Run one core per key: `fresh(first_item)` makes a new core, `restore(snapshot)` resumes one."""
    return op.stateful("core", up, lambda snap: _CoreLogic(fresh, None if snap is None else restore(snap)))
