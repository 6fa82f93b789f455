"""L2 order book of one instrument, built from recorded or live snapshots and deltas.

A pure core: no Bytewax, no clock (every time comes in with the update). `BookBuilder.apply_snapshot`
replaces the book; `apply_delta` sets the amount of each level it names (an amount of 0 deletes the
level). Both return the events they cause: nothing when all is well, a `BookGap` when the update ids
show a missed update, a `BookCrossed` when the best bid reaches the best ask. After either, the book is
marked ``needs_resync``: it ignores deltas, `top` and `levels` return nothing, until the next snapshot.
Deltas before the first snapshot are skipped too; the first of them returns a `BookUnsynced`.

Sequence rules (ids are the venue's update ids; an update without ids is never checked):

- the first delta after a snapshot with id ``S`` is dropped as stale when its ``last_seq < S`` and must
  straddle it otherwise: ``first_seq <= S + 1`` (Binance: drop ``u < lastUpdateId``, then the first event
  has ``U <= lastUpdateId + 1 <= u``, futures ``U <= lastUpdateId <= u``; Bybit: ``u = S + 1``);
- each later delta chains on the one before: ``prev_seq == last_seq`` of the last applied delta when the
  venue sends it (Binance futures ``pu``), else ``first_seq == last_seq + 1`` (Binance spot ``U``, Bybit ``u``);
  a delta whose ``last_seq`` is not above the last applied one is a duplicate and dropped.

Cost. Each side is a dict price -> amount plus a sorted list of its prices (`bisect`): a new or deleted
level costs O(log n) to find plus an O(n) memmove (fast in C for the few thousand levels of a venue's
book), a changed amount O(1); `top` is O(1) and `levels(side, n)` O(n).

Examples
--------
>>> b = BookBuilder("bybit:XRP/USDT:USDT")
>>> b.apply_snapshot(1, bids=[(1.0, 5.0), (0.9, 2.0)], asks=[(1.1, 3.0)], seq=10)
[]
>>> b.apply_delta(2, bids=[(1.0, 0.0)], asks=[(1.05, 1.0)], first_seq=11, last_seq=11)
[]
>>> b.top()
(0.9, 2.0, 1.05, 1.0)
>>> b.apply_delta(3, bids=[], asks=[], first_seq=13, last_seq=13)
[BookGap(instrument='bybit:XRP/USDT:USDT', ts=3, expected=12, received=13, field='first_seq', at_most=False)]
>>> b.needs_resync, b.top()
(True, None)
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from operators.base import check_version

Side = Literal["bid", "ask"]
Level = tuple[float, float]  # (price, amount)


@dataclass(frozen=True, slots=True)
class BookUpdate:
    """One normalised book message: a full snapshot or a delta of absolute level amounts (0 deletes).

    Times are UTC epoch ns. `first_seq`/`last_seq` are the venue's update ids the message covers (a
    snapshot's id in both; None when the venue numbers nothing), `prev_seq` the id of the message before
    it where the venue sends it (Binance futures ``pu``). `row` is the message's first data row (or line)
    in its file.
    """

    instrument: str
    ts_event: int
    ts_recv: int
    kind: Literal["snapshot", "delta"]
    first_seq: int | None
    last_seq: int | None
    prev_seq: int | None
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    row: int = 0


@dataclass(frozen=True, slots=True)
class BookGap:
    """A delta whose ids do not follow the book's: its `field` was `received`, not `expected` (or at most it)."""

    instrument: str
    ts: int
    expected: int
    received: int
    field: str
    at_most: bool = False

    @property
    def reason(self) -> str:
        rel = "<= " if self.at_most else ""
        return (f"sequence gap: expected {self.field} {rel}{self.expected}, received {self.received}; "
                "book needs a snapshot")


@dataclass(frozen=True, slots=True)
class BookCrossed:
    """The book after an update had its best bid at or above its best ask."""

    instrument: str
    ts: int
    bid: float
    ask: float

    @property
    def reason(self) -> str:
        return f"crossed book: best bid {self.bid!r} >= best ask {self.ask!r}; book needs a snapshot"


@dataclass(frozen=True, slots=True)
class BookUnsynced:
    """The first delta came before any snapshot: deltas are skipped until one comes (reported once)."""

    instrument: str
    ts: int

    @property
    def reason(self) -> str:
        return "delta before any snapshot: the book is built from the first snapshot on (deltas skipped until then)"


BookEvent = BookGap | BookCrossed | BookUnsynced


@dataclass(frozen=True, slots=True)
class BookSnapshot:
    """The resume state of a `BookBuilder`."""

    version: int
    instrument: str
    bids: tuple[Level, ...]  # best first
    asks: tuple[Level, ...]
    seq: int | None
    ts: int
    needs_resync: bool
    after_snapshot: bool
    synced_once: bool
    stale: int
    skipped: int


class _Side:
    """One side: amounts by price and the prices in ascending order."""

    __slots__ = ("amounts", "prices")

    def __init__(self) -> None:
        self.amounts: dict[float, float] = {}
        self.prices: list[float] = []

    def clear(self) -> None:
        self.amounts.clear()
        self.prices.clear()

    def set(self, price: float, amount: float) -> None:
        have = price in self.amounts
        if amount == 0.0:
            if have:
                del self.amounts[price]
                del self.prices[bisect_left(self.prices, price)]
            return
        if not have:
            insort(self.prices, price)
        self.amounts[price] = amount


class BookBuilder:
    """L2 book of one instrument (see module docstring)."""

    VERSION = 1

    def __init__(self, instrument: str = "") -> None:
        self.instrument = instrument
        self._bids = _Side()
        self._asks = _Side()
        self.seq: int | None = None  # id of the last snapshot or applied delta
        self.ts = 0  # event time of the last update applied
        self.needs_resync = True  # no snapshot yet
        self._after_snapshot = False  # no delta applied since the last snapshot
        self._synced_once = False  # a snapshot has come
        self.stale = 0  # deltas dropped as older than the book
        self.skipped = 0  # deltas ignored while the book waited for a snapshot

    # ---------------------------------------------------------------------------------------- updates

    def update(self, u: BookUpdate) -> list[BookEvent]:
        """Apply one normalised message (`apply_snapshot` or `apply_delta`)."""
        if u.kind == "snapshot":
            return self.apply_snapshot(u.ts_event, u.bids, u.asks, u.last_seq)
        return self.apply_delta(u.ts_event, u.bids, u.asks, u.first_seq, u.last_seq, u.prev_seq)

    def apply_snapshot(self, ts: int, bids: Iterable[Level], asks: Iterable[Level],
                       seq: int | None = None) -> list[BookEvent]:
        """Replace the book by a snapshot taken at update id `seq` (levels of amount 0 are left out)."""
        self._bids.clear()
        self._asks.clear()
        for p, a in bids:
            self._bids.set(p, a)
        for p, a in asks:
            self._asks.set(p, a)
        self.seq, self.ts = seq, ts
        self.needs_resync, self._after_snapshot, self._synced_once = False, True, True
        return self._check_crossed(ts)

    def apply_delta(self, ts: int, bids: Iterable[Level], asks: Iterable[Level], first_seq: int | None = None,
                    last_seq: int | None = None, prev_seq: int | None = None) -> list[BookEvent]:
        """Set the amount of every level named (0 deletes it), after checking the ids (module docstring)."""
        if self.needs_resync:
            self.skipped += 1
            if not self._synced_once and self.skipped == 1:
                return [BookUnsynced(self.instrument, ts)]
            return []
        if last_seq is not None and self.seq is not None:
            first = last_seq if first_seq is None else first_seq
            if self._after_snapshot:
                if last_seq < self.seq:
                    self.stale += 1
                    return []
                if first > self.seq + 1:
                    return self._gap(ts, self.seq + 1, first, "first_seq", at_most=True)
            elif last_seq <= self.seq:
                self.stale += 1
                return []
            elif prev_seq is not None:
                if prev_seq != self.seq:
                    return self._gap(ts, self.seq, prev_seq, "prev_seq")
            elif first != self.seq + 1:
                return self._gap(ts, self.seq + 1, first, "first_seq")
        for p, a in bids:
            self._bids.set(p, a)
        for p, a in asks:
            self._asks.set(p, a)
        if last_seq is not None:
            self.seq = last_seq
        self.ts = ts
        self._after_snapshot = False
        return self._check_crossed(ts)

    def _gap(self, ts: int, expected: int, received: int, field: str, *, at_most: bool = False) -> list[BookEvent]:
        self.needs_resync = True
        return [BookGap(self.instrument, ts, expected, received, field, at_most)]

    def _check_crossed(self, ts: int) -> list[BookEvent]:
        b, a = self._bids.prices, self._asks.prices
        if b and a and b[-1] >= a[0]:
            self.needs_resync = True
            return [BookCrossed(self.instrument, ts, b[-1], a[0])]
        return []

    # ------------------------------------------------------------------------------------------ reads

    def top(self) -> tuple[float, float, float, float] | None:
        """Return (bid, bid_size, ask, ask_size), or None while a side is empty or the book needs a snapshot."""
        b, a = self._bids.prices, self._asks.prices
        if self.needs_resync or not b or not a:
            return None
        return b[-1], self._bids.amounts[b[-1]], a[0], self._asks.amounts[a[0]]

    def levels(self, side: Side, n: int | None = None) -> tuple[Level, ...]:
        """Return up to `n` (all when None) levels of `side`, best first; none while the book needs a snapshot."""
        if self.needs_resync:
            return ()
        s = self._bids if side == "bid" else self._asks
        prices = s.prices[::-1] if side == "bid" else s.prices
        if n is not None:
            prices = prices[:n]
        return tuple((p, s.amounts[p]) for p in prices)

    def __len__(self) -> int:
        return len(self._bids.prices) + len(self._asks.prices)

    # ------------------------------------------------------------------------------------ snapshots

    def snapshot(self) -> BookSnapshot:
        """Return the resume state (levels included, so a book of n levels makes a record of n pairs)."""
        bids = tuple((p, self._bids.amounts[p]) for p in reversed(self._bids.prices))
        asks = tuple((p, self._asks.amounts[p]) for p in self._asks.prices)
        return BookSnapshot(version=self.VERSION, instrument=self.instrument, bids=bids, asks=asks, seq=self.seq,
                            ts=self.ts, needs_resync=self.needs_resync, after_snapshot=self._after_snapshot,
                            synced_once=self._synced_once, stale=self.stale, skipped=self.skipped)

    @classmethod
    def restore(cls, snap: BookSnapshot) -> BookBuilder:
        """Rebuild a builder from `snapshot()`; raises `SnapshotVersionError` for another version."""
        check_version(snap, cls.VERSION)
        b = cls(snap.instrument)
        for p, a in snap.bids:
            b._bids.set(p, a)
        for p, a in snap.asks:
            b._asks.set(p, a)
        b.seq, b.ts, b.needs_resync, b._after_snapshot = snap.seq, snap.ts, snap.needs_resync, snap.after_snapshot
        b.stale, b.skipped, b._synced_once = snap.stale, snap.skipped, snap.synced_once
        return b
