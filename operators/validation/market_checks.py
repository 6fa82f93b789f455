"""Stateful checks of one instrument's market data: time going backwards, and duplicates.

The stateless checks (unparseable or missing fields, non-finite or non-positive values, high < low)
happen where records are parsed (`sources/formats.py`); what needs memory of earlier records of the
same instrument happens here, on whole chunks with numpy, and works the same in replay and live.

Rules, per instrument and per kind (trades, quotes and bars are separate streams):

- a record whose event time is earlier than one already accepted is quarantined
  ("timestamp went backwards");
- a record equal to one already accepted at the same event time is quarantined ("duplicate ..."):
  bars by open and close time, trades by trade id (trades without ids cannot be told apart from a
  repeat and are kept), quotes by all four values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from headrace.events import BarChunk, MarketChunk, MarketSlice, Provenance, Quarantined, QuoteChunk, TradeChunk
from operators.base import check_version

_NONE = np.iinfo(np.int64).min


@dataclass(frozen=True, slots=True)
class StreamState:
    last_ts: int  # latest accepted event time; int64 min before any
    last_keys: tuple[str, ...]  # identities accepted at last_ts, sorted


@dataclass(frozen=True, slots=True)
class MarketValidatorSnap:
    version: int
    trades: StreamState
    quotes: StreamState
    bars: StreamState


_EMPTY = StreamState(_NONE, ())


def take(chunk: MarketChunk, mask: npt.NDArray[np.bool_]) -> MarketChunk:
    """Return the rows of `chunk` where `mask` is true (all columns, provenance included)."""
    changes: dict[str, object] = {}
    for f in dataclasses.fields(chunk):
        v = getattr(chunk, f.name)
        if isinstance(v, np.ndarray):
            changes[f.name] = v[mask]
        elif isinstance(v, Provenance):
            changes[f.name] = Provenance(files=v.files, file_index=v.file_index[mask], row=v.row[mask])
    return dataclasses.replace(chunk, **changes)  # type: ignore[arg-type]


def row_values(chunk: MarketChunk, i: int) -> dict[str, object]:
    """Return row `i` of a chunk as a plain dict (for the quarantine's `raw`)."""
    out: dict[str, object] = {}
    for f in dataclasses.fields(chunk):
        v = getattr(chunk, f.name)
        if isinstance(v, np.ndarray):
            out[f.name] = v[i].item()
    return out


class MarketValidator:
    """Quarantine records of one instrument that go back in time or repeat an accepted one."""

    def __init__(self) -> None:
        self._state = {"trades": _EMPTY, "quotes": _EMPTY, "bars": _EMPTY}

    def update(self, item: MarketSlice) -> list[MarketSlice | Quarantined]:
        bad: list[MarketSlice | Quarantined] = list(item.rejected)
        clean: dict[str, MarketChunk | None] = {}
        for kind in ("trades", "quotes", "bars"):
            chunk: MarketChunk | None = getattr(item, kind)
            if chunk is None or len(chunk) == 0:
                clean[kind] = chunk
                continue
            keep, rejected, self._state[kind] = _check(chunk, self._state[kind])
            bad.extend(rejected)
            clean[kind] = chunk if keep.all() else take(chunk, keep)
        out = dataclasses.replace(item, rejected=(), **clean)  # type: ignore[arg-type]
        return [out, *bad]

    def flush(self) -> list[MarketSlice | Quarantined]:
        return []

    def snapshot(self) -> MarketValidatorSnap:
        s = self._state
        return MarketValidatorSnap(version=1, trades=s["trades"], quotes=s["quotes"], bars=s["bars"])

    @classmethod
    def restore(cls, snap: MarketValidatorSnap) -> MarketValidator:
        check_version(snap, expected=1)
        core = cls()
        core._state = {"trades": snap.trades, "quotes": snap.quotes, "bars": snap.bars}
        return core


def _identity(chunk: MarketChunk, idx: npt.NDArray[np.intp]) -> list[str] | None:
    # the identity of rows `idx`, or None when rows of this chunk cannot be told apart
    if isinstance(chunk, BarChunk):
        return [str(x) for x in chunk.ts_open[idx]]
    if isinstance(chunk, TradeChunk):
        if chunk.trade_id is None:
            return None
        return [str(x) for x in chunk.trade_id[idx]]
    q: QuoteChunk = chunk
    return [f"{b!r}|{a!r}|{bs!r}|{az!r}" for b, a, bs, az in zip(
        q.bid[idx].tolist(), q.ask[idx].tolist(), q.bid_size[idx].tolist(), q.ask_size[idx].tolist())]


def _check(chunk: MarketChunk, state: StreamState) -> tuple[npt.NDArray[np.bool_], list[Quarantined], StreamState]:
    ts = chunk.ts_event
    n = len(ts)
    running = np.maximum.accumulate(np.concatenate(([state.last_ts], ts)))[:-1]
    backwards = ts < running
    keep = ~backwards
    reasons: dict[int, str] = {
        int(i): f"timestamp went backwards: {int(ts[i])} < {int(running[i])} already seen for this instrument"
        for i in np.flatnonzero(backwards)
    }
    # duplicates: only rows sharing an event time with another accepted row can repeat one
    kept_idx = np.flatnonzero(keep)
    kept_ts = ts[kept_idx]
    same_as_prev = np.zeros(len(kept_idx), dtype=bool)
    same_as_prev[1:] = kept_ts[1:] == kept_ts[:-1]
    at_last = kept_ts == state.last_ts
    candidates = kept_idx[same_as_prev | at_last | np.roll(same_as_prev, -1)]
    last_ts, last_keys = state.last_ts, set(state.last_keys)
    if len(candidates):
        ids = _identity(chunk, candidates)
        if ids is not None:
            seen: dict[int, set[str]] = {state.last_ts: set(state.last_keys)}
            what = {"BarChunk": "bar", "TradeChunk": "trade id", "QuoteChunk": "quote"}[type(chunk).__name__]
            for i, key in zip(candidates.tolist(), ids):
                group = seen.setdefault(int(ts[i]), set())
                if key in group:
                    keep[i] = False
                    reasons[i] = f"duplicate {what} {key!r} at event time {int(ts[i])}"
                else:
                    group.add(key)
    accepted = ts[keep]
    if len(accepted):
        new_last = int(accepted[-1])
        if new_last != last_ts:
            last_ts, last_keys = new_last, set()
        at_new = np.flatnonzero(keep & (ts == new_last))
        ids = _identity(chunk, at_new)
        if ids is not None:
            last_keys |= set(ids)
    quarantined = [
        Quarantined(
            instrument=chunk.instrument,
            ts_event=int(ts[i]),
            ts_recv=int(chunk.ts_recv[i]),
            source=chunk.origin.files[int(chunk.origin.file_index[i])],
            row=int(chunk.origin.row[i]),
            reason=reasons[i],
            raw=Quarantined.raw_json(row_values(chunk, i)),
        )
        for i in sorted(reasons)
    ]
    assert n == len(keep)
    return keep, quarantined, StreamState(last_ts, tuple(sorted(last_keys)))
