"""Stateful checks of one instrument's market data: time going backwards, duplicates, price jumps.

The stateless checks (unparseable or missing fields, times outside the plausibility window,
non-finite, non-positive or implausible values, high < low, open or close outside [low, high]) happen
where records are parsed (`sources/formats.py`); what needs memory of earlier records of the same
instrument happens here, on whole chunks, and works the same in replay and live.

Rules, per instrument and per kind (trades, quotes and bars are separate streams):

- a record whose event time is earlier than one already accepted is quarantined
  ("timestamp went backwards");
- a record equal to one already accepted at the same event time is quarantined ("duplicate ..."):
  bars by open and close time, trades by trade id (trades without ids cannot be told apart from a
  repeat and are kept), quotes by all four values;
- a record whose price moved, in log terms, from the last accepted one by more than
  ``max(max_jump_sigmas x recent volatility, max_jump_floor)`` is quarantined ("price jump ...").
  The price is a bar's close (its open, high and low are checked too), a trade's price, a quote's mid
  (its bid and ask checked too); recent volatility is the EWMA (half-life 50 accepted records) of the
  squared log moves between accepted records. A move that persists is a new level, not an error: once
  3 records in a row agree with each other (within the same bound) but not with the last accepted
  price, the third is accepted and the level moves; the first two stay quarantined.

Every accepted price is therefore finite, positive and within the bound of its predecessor, so the
features computed downstream (log returns, volatility) are finite.

Mark prices and funding rates (perpetual contracts) are two more streams: a record earlier than one
already accepted, or repeating one at the same time, is quarantined as above; a mark price must be finite
and positive, a funding rate finite with ``|rate| < 0.05`` per period. They have no jump rule.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from headrace.errors import ConfigError
from headrace.events import (
    F64,
    BarChunk,
    FundingChunk,
    MarkChunk,
    MarketChunk,
    MarketSlice,
    Provenance,
    Quarantined,
    QuoteChunk,
    TradeChunk,
)
from operators.base import check_version

_NONE = np.iinfo(np.int64).min


class ValidationLimits(Protocol):
    # the config section `validation` (headrace.config.ValidationConfig), as far as this core reads it
    @property
    def max_jump_sigmas(self) -> float: ...

    @property
    def max_jump_floor(self) -> float: ...


_VERSION = 2
_MAX_FUNDING = 0.05  # a funding rate at or beyond this (5 % per period) is not plausible
_VOL_HALFLIFE = 50.0  # accepted records after which a squared move's weight in the volatility has halved
_ALPHA = 1.0 - 0.5 ** (1.0 / _VOL_HALFLIFE)
_BETA = 1.0 - _ALPHA
_CONFIRM = 3  # records in a row at a new level that make it the level


@dataclass(frozen=True, slots=True)
class StreamState:
    last_ts: int  # latest accepted event time; int64 min before any
    last_keys: tuple[str, ...]  # identities accepted at last_ts, sorted
    last_log: float | None = None  # log price of the last accepted record
    var: float = 0.0  # EWMA of squared log moves between accepted records
    pending: tuple[float, ...] = ()  # log prices of the rejected records in a row that agree with each other


@dataclass(frozen=True, slots=True)
class MarketValidatorSnap:
    version: int
    trades: StreamState
    quotes: StreamState
    bars: StreamState
    marks: StreamState | None = None  # absent from snapshots taken before mark prices and funding rates
    funding: StreamState | None = None


_EMPTY = StreamState(_NONE, ())


@dataclass(frozen=True, slots=True)
class _Jumps:
    # the jump rule's parameters
    sigmas: float
    floor: float


_Chunk = TypeVar("_Chunk", bound=MarketChunk | MarkChunk | FundingChunk)


def take(chunk: _Chunk, mask: npt.NDArray[np.bool_]) -> _Chunk:
    """Return the rows of `chunk` where `mask` is true (all columns, provenance included)."""
    changes: dict[str, object] = {}
    for f in dataclasses.fields(chunk):
        v = getattr(chunk, f.name)
        if isinstance(v, np.ndarray):
            changes[f.name] = v[mask]
        elif isinstance(v, Provenance):
            changes[f.name] = Provenance(files=v.files, file_index=v.file_index[mask], row=v.row[mask])
    return dataclasses.replace(chunk, **changes)  # type: ignore[arg-type]


def row_values(chunk: MarketChunk | MarkChunk | FundingChunk, i: int) -> dict[str, object]:
    """Return row `i` of a chunk as a plain dict (for the quarantine's `raw`)."""
    out: dict[str, object] = {}
    for f in dataclasses.fields(chunk):
        v = getattr(chunk, f.name)
        if isinstance(v, np.ndarray):
            out[f.name] = v[i].item()
    return out


class MarketValidator:
    """Quarantine records of one instrument that go back in time, repeat an accepted one or jump in price.

    Parameters
    ----------
    max_jump_sigmas
        A log price move beyond this many recent standard deviations is a jump (config
        ``validation.max_jump_sigmas``); must be > 0.
    max_jump_floor
        A log price move at or below this is never a jump (``validation.max_jump_floor``); must be > 0.
    """

    def __init__(self, max_jump_sigmas: float = 50.0, max_jump_floor: float = 0.5) -> None:
        if not (max_jump_sigmas > 0 and math.isfinite(max_jump_sigmas)):
            raise ConfigError("validation.max_jump_sigmas", f"must be > 0, was {max_jump_sigmas!r}")
        if not (max_jump_floor > 0 and math.isfinite(max_jump_floor)):
            raise ConfigError("validation.max_jump_floor", f"must be > 0, was {max_jump_floor!r}")
        self._jumps = _Jumps(float(max_jump_sigmas), float(max_jump_floor))
        self._state = {"trades": _EMPTY, "quotes": _EMPTY, "bars": _EMPTY, "marks": _EMPTY, "funding": _EMPTY}

    @classmethod
    def from_config(cls, validation: ValidationLimits, snap: MarketValidatorSnap | None = None) -> MarketValidator:
        """Return a fresh validator with the limits of `validation` (config section), or one restored from `snap`."""
        if snap is not None:
            return cls.restore(snap, validation.max_jump_sigmas, validation.max_jump_floor)
        return cls(validation.max_jump_sigmas, validation.max_jump_floor)

    def update(self, item: MarketSlice) -> list[MarketSlice | Quarantined]:
        bad: list[MarketSlice | Quarantined] = list(item.rejected)
        clean: dict[str, MarketChunk | None] = {}
        for kind in ("trades", "quotes", "bars"):
            chunk: MarketChunk | None = getattr(item, kind)
            if chunk is None or len(chunk) == 0:
                clean[kind] = chunk
                continue
            keep, rejected, self._state[kind] = _check(chunk, self._state[kind], self._jumps)
            bad.extend(rejected)
            clean[kind] = chunk if keep.all() else take(chunk, keep)
        riders: dict[str, MarkChunk | FundingChunk | None] = {}
        for kind in ("marks", "funding"):
            rider: MarkChunk | FundingChunk | None = getattr(item, kind)
            if rider is None or len(rider) == 0:
                continue
            keep, rejected, self._state[kind] = _check_rider(rider, self._state[kind])
            bad.extend(rejected)
            riders[kind] = rider if keep.all() else take(rider, keep)
        out = dataclasses.replace(item, rejected=(), **clean, **riders)  # type: ignore[arg-type]
        return [out, *bad]

    def flush(self) -> list[MarketSlice | Quarantined]:
        return []

    def snapshot(self) -> MarketValidatorSnap:
        s = self._state
        return MarketValidatorSnap(version=_VERSION, trades=s["trades"], quotes=s["quotes"], bars=s["bars"],
                                   marks=s["marks"], funding=s["funding"])

    @classmethod
    def restore(cls, snap: MarketValidatorSnap, max_jump_sigmas: float = 50.0,
                max_jump_floor: float = 0.5) -> MarketValidator:
        check_version(snap, expected=_VERSION)
        core = cls(max_jump_sigmas, max_jump_floor)
        core._state = {"trades": snap.trades, "quotes": snap.quotes, "bars": snap.bars,
                       "marks": getattr(snap, "marks", None) or _EMPTY,  # older snapshots: absent
                       "funding": getattr(snap, "funding", None) or _EMPTY}
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


def _log_prices(chunk: MarketChunk, idx: npt.NDArray[np.intp]) -> tuple[F64, F64, F64, str]:
    # (log price, lowest and highest log of the prices checked, what the price is) of rows `idx`;
    # log is monotone, so the lowest log is the log of the lowest price (NaN propagates through both)
    def col(a: F64) -> F64:
        return a if len(idx) == len(a) else a[idx]  # every row (the common case): no copy

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if isinstance(chunk, BarChunk):
            o, h, lo, c = col(chunk.open), col(chunk.high), col(chunk.low), col(chunk.close)
            ref = np.log(c)
            low = np.log(np.minimum(np.minimum(o, h), np.minimum(lo, c)))
            high = np.log(np.maximum(np.maximum(o, h), np.maximum(lo, c)))
            return ref, low, high, "close"
        if isinstance(chunk, TradeChunk):
            ref = np.log(col(chunk.price))
            return ref, ref, ref, "price"
        bid, ask = col(chunk.bid), col(chunk.ask)
        return np.log(bid / 2 + ask / 2), np.log(np.minimum(bid, ask)), np.log(np.maximum(bid, ask)), "mid"


_DECAY = _BETA ** np.arange(1 << 16, dtype=np.float64)  # _DECAY[k] = _BETA ** k, for the EWMA as a weighted sum


def _no_jump(ref: F64, lows: F64, highs: F64, state: StreamState, floor: float) -> StreamState | None:
    # the common case without a Python loop: every price finite, no confirmation pending and every move within
    # the floor (the bound is never below it), so every row is accepted and the EWMA variance is a weighted sum
    if state.pending or not len(ref) or not (np.isfinite(lows).all() and np.isfinite(highs).all()):
        return None
    last, start = (float(ref[0]), 1) if state.last_log is None else (state.last_log, 0)
    prev = np.concatenate(([last], ref[start:-1])) if len(ref) > start else np.empty(0)
    cur, lo, hi = ref[start:], lows[start:], highs[start:]
    if not (np.maximum(hi - prev, prev - lo) <= floor).all():
        return None
    r = cur - prev
    m = len(r)
    if m == 0:
        return dataclasses.replace(state, last_log=float(ref[-1]), pending=())
    decay = _DECAY[m - 1::-1] if m <= len(_DECAY) else _BETA ** np.arange(m - 1, -1, -1, dtype=np.float64)
    var = state.var * _BETA ** m + _ALPHA * float(np.dot(decay, r * r))
    return dataclasses.replace(state, last_log=float(ref[-1]), var=var, pending=())


def _jumps(chunk: MarketChunk, idx: npt.NDArray[np.intp], state: StreamState, rule: _Jumps,
           reasons: dict[int, str]) -> StreamState:
    # the jump rule over rows `idx` (in order, all else accepted); adds rejected rows to `reasons`
    ref_a, lows_a, highs_a, name = _log_prices(chunk, idx)
    fast = _no_jump(ref_a, lows_a, highs_a, state, rule.floor)
    if fast is not None:
        return fast
    ref, lows, highs = ref_a.tolist(), lows_a.tolist(), highs_a.tolist()
    last, var, pending = state.last_log, state.var, list(state.pending)
    sigmas, floor = rule.sigmas, rule.floor
    for i, x, lo, hi in zip(idx.tolist(), ref, lows, highs):
        if not (math.isfinite(lo) and math.isfinite(hi)):
            reasons[i] = f"price not finite and positive (log {name} {x!r})"
            continue
        if last is None:
            last = x
            continue
        bound = max(sigmas * math.sqrt(var), floor)
        move = max(hi - last, last - lo)
        if move <= bound:
            r = x - last
            var = _ALPHA * (r * r) + _BETA * var
            last, pending = x, []
            continue
        if pending and max(hi - pending[0], pending[0] - lo) <= bound:
            pending.append(x)
            if len(pending) >= _CONFIRM:  # the move persisted: a new level
                last, pending = x, []
                continue
        else:
            pending = [x]
        reasons[i] = (f"price jump: log move {move:.4g} from the last accepted {name} {math.exp(last):.8g} exceeds "
                      f"max({sigmas:g} x recent volatility {math.sqrt(var):.4g}, {floor:g}) = {bound:.4g}")
    return dataclasses.replace(state, last_log=last, var=var, pending=tuple(pending))


def _check(chunk: MarketChunk, state: StreamState,
           rule: _Jumps) -> tuple[npt.NDArray[np.bool_], list[Quarantined], StreamState]:
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
    jump_state = _jumps(chunk, np.flatnonzero(keep), state, rule, reasons)
    keep[list(reasons)] = False
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
    return keep, quarantined, dataclasses.replace(jump_state, last_ts=last_ts, last_keys=tuple(sorted(last_keys)))


def _check_rider(chunk: MarkChunk | FundingChunk,
                 state: StreamState) -> tuple[npt.NDArray[np.bool_], list[Quarantined], StreamState]:
    # mark prices or funding rates: time going backwards, repeats at one time, values out of bounds (no jump rule)
    ts = chunk.ts_event
    is_mark = isinstance(chunk, MarkChunk)
    values = chunk.price if isinstance(chunk, MarkChunk) else chunk.rate
    what = "mark price" if is_mark else "funding rate"
    reasons: dict[int, str] = {}
    last_ts, keys = state.last_ts, set(state.last_keys)
    for i, (t, v) in enumerate(zip(ts.tolist(), values.tolist())):
        if t < last_ts:
            reasons[i] = f"timestamp went backwards: {t} < {last_ts} already seen for this instrument's {what}s"
        elif not math.isfinite(v) or (v <= 0 if is_mark else abs(v) >= _MAX_FUNDING):
            reasons[i] = (f"{what} not finite and positive: {v!r}" if is_mark else
                          f"implausible funding rate: {v!r} (|rate| < {_MAX_FUNDING:g} per period)")
        elif t == last_ts and repr(v) in keys:
            reasons[i] = f"duplicate {what} {v!r} at event time {t}"
        else:
            if t != last_ts:
                last_ts, keys = t, set()
            keys.add(repr(v))
    keep = np.ones(len(ts), dtype=bool)
    keep[list(reasons)] = False
    quarantined = [
        Quarantined(instrument=chunk.instrument, ts_event=int(ts[i]), ts_recv=int(chunk.ts_recv[i]),
                    source=chunk.origin.files[int(chunk.origin.file_index[i])], row=int(chunk.origin.row[i]),
                    reason=reasons[i], raw=Quarantined.raw_json(row_values(chunk, i)))
        for i in sorted(reasons)
    ]
    return keep, quarantined, dataclasses.replace(state, last_ts=last_ts, last_keys=tuple(sorted(keys)))
