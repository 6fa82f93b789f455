"""What every step core shares: the `Core` protocol and snapshot versioning.

A core is a plain class with explicit state: `update(item) -> list[out]`, `flush() -> list[out]` at
end of input, `snapshot()` returning a small frozen record, and a `restore` classmethod. It knows
nothing of Bytewax; `flows/_core_step.py` is the one adapter that runs cores in a dataflow.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from headrace.errors import SnapshotVersionError

E_contra = TypeVar("E_contra", contravariant=True)
O = TypeVar("O")  # invariant: update returns a list
S_co = TypeVar("S_co", covariant=True)


class Core(Protocol[E_contra, O, S_co]):
    """A stateful step: consumes items of one key, returns what they cause."""

    def update(self, item: E_contra) -> list[O]: ...

    def flush(self) -> list[O]: ...

    def snapshot(self) -> S_co: ...


class Versioned(Protocol):
    @property
    def version(self) -> int: ...


def check_version(snap: Versioned, expected: int) -> None:
    """Raise `SnapshotVersionError` unless `snap.version == expected`."""
    if snap.version != expected:
        raise SnapshotVersionError(type(snap).__name__, snap.version, expected)
