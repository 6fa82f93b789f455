"""The replay plan: many files and venues merged into one event-time stream, cut into slices.

Pure (no Bytewax). Two plans give the same slices for the same rows:

- `ReplayPlan.open(paths, chunk_rows)` (`LazyPlan`) reads the files in batches while it replays, so
  its memory stays flat as the input grows. What the CLI and the flow use.
- `ReplayPlan.build(frames, chunk_rows)` (`InMemoryPlan`) merges frames already in memory, all at once
  (tests, synthetic sets, the reference the lazy plan is checked against).

`plan.cursor(state)` walks the slices from the start or from a resume state, and `plan.slice(j)`
returns what the source emits for slice j. The source's resume state (`ReplayPosition` for a lazy
plan) is small and exact, so a resumed replay starts exactly where the snapshot was taken.

Merging. Each file is kept in its own row order; files are interleaved by a merge key, the running
maximum of the file's event times (rows without a time take the key of the row before them, or of the
first timed row when they lead the file; a file without any time has key 0). A row that goes back in
time inside its file therefore stays right after its predecessor, where the validator downstream sees
it and quarantines it, instead of being silently sorted into place. Ties keep file order (by file,
then row).

Slices. Think of the merged stream's keys as one sorted array: it is cut after every `chunk_rows`-th
row (and after the last), at a change of key: the cut is the key there, and slice j holds every row
with key in (cut[j-1], cut[j]], so all rows of one key stay in one slice and a slice may hold more or
fewer than `chunk_rows` rows. Slice j carries the watermark cut[j]: every row with event time <=
watermark has been emitted once slice j has. Each slice holds one `MarketSlice` per instrument of the
universe, empty ones included, so every instrument's watermark advances and cross-sectional steps
never wait on a quiet instrument. Rows rejected at parse time travel in the slice of their merge key.

Lazy reading. Because the merge key never decreases inside a file, slice j is one run of rows of each
file, and the position after slice j is, per file, a row offset and the key of the last row taken;
with the number of rows emitted before it (which tells where the next cut falls) that is the whole
resume state. The cursor reads each file in batches of `batch_rows`; all rows with a key below
B = the smallest last buffered key of the files not yet exhausted are known, so every cut below B can
be computed exactly as the in-memory plan computes it, without reading further. Memory: about one
batch per file, plus the rows of one key when a key runs longer than a batch.
"""

from __future__ import annotations

import functools
import gzip
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import polars as pl

from headrace.errors import DataSourceError
from headrace.events import (
    BarChunk,
    FundingChunk,
    MarkChunk,
    MarketSlice,
    Provenance,
    Quarantined,
    QuoteChunk,
    TradeChunk,
    split_instrument,
)
from sources import formats
from sources.formats import FileSpec, ParsedFrame, ReadOptions

_KIND_FIELD = {"trade": "trades", "quote": "quotes", "bar": "bars", "mark": "marks", "funding": "funding"}
_COLUMNS = {
    "trade": ("ts_event", "ts_recv", "price", "amount", "side", "trade_id"),
    "quote": ("ts_event", "ts_recv", "bid", "ask", "bid_size", "ask_size"),
    "bar": ("ts_open", "ts_event", "ts_recv", "open", "high", "low", "close", "volume"),
    "mark": ("ts_event", "ts_recv", "price"),
    "funding": ("ts_event", "ts_recv", "rate"),
}
_RIDERS = ("mark", "funding")  # kinds that ride with a contract's market data and make no instrument of their own
_LEVELS = ("bid_levels", "ask_levels")  # optional quote columns: the top levels of an order book
DEFAULT_BATCH_ROWS = 32_768  # rows read from one file at a time by a lazy plan
_NO_HEADER = {"kraken_ohlcvt", "binance_klines", "kraken_trades"}  # CSV layouts without a header line


class ReplayCursor(Protocol):
    """Walks a plan's slices in order; `state()` is what a resumed cursor starts from."""

    @property
    def next(self) -> int: ...  # index of the next slice

    @property
    def rows_done(self) -> int: ...  # source rows in the slices before `next`

    def next_slice(self) -> tuple[list[MarketSlice], int] | None:
        """Return the next slice and the number of source rows it carried, or None after the last."""

    def state(self) -> Any:
        """Return the resume state (small, picklable)."""


@dataclass(frozen=True, slots=True)
class ReplayPosition:
    """Where a lazy replay stands, after slice `next_slice - 1`: the resume state of its source.

    `offsets[i]` rows of `plan.files[i]` have been emitted, the last with merge key `last_keys[i]`
    (None while none has); `rows_done` rows in all.
    """

    version: int
    next_slice: int
    rows_done: int
    offsets: tuple[int, ...]
    last_keys: tuple[int | None, ...]


class ReplayPlan:
    """Files or frames merged into event-time order and cut into slices (see module docstring)."""

    files: tuple[str, ...]
    universe: tuple[str, ...]
    timeframes: dict[str, int]  # recorded bar length per instrument (0 for tick instruments)
    chunk_rows: int

    @property
    def venues(self) -> tuple[str, ...]:
        return tuple(sorted({split_instrument(i)[0] for i in self.universe}))

    @property
    def total_rows(self) -> int:
        """Source rows in all, rejected ones included (the replay's events in)."""
        raise NotImplementedError

    @property
    def n_slices(self) -> int:
        raise NotImplementedError

    @property
    def max_slices(self) -> int:
        """An upper bound of `n_slices`, known without reading the data."""
        return max(1, -(-self.total_rows // self.chunk_rows))

    def cursor(self, state: Any = None) -> ReplayCursor:
        """Return a cursor at the start, or at `state` (from `ReplayCursor.state()`)."""
        raise NotImplementedError

    def slice(self, j: int) -> list[MarketSlice]:
        """Return slice `j`: one `MarketSlice` per instrument of the universe, in instrument order."""
        raise NotImplementedError

    @classmethod
    def build(cls, frames: Sequence[ParsedFrame], chunk_rows: int) -> InMemoryPlan:
        """Merge `frames` (all in memory) and cut the stream every `chunk_rows` rows."""
        return InMemoryPlan.build(frames, chunk_rows)

    @classmethod
    def open(cls, paths: Sequence[str], chunk_rows: int, *, venue: str = "", symbol: str = "", timeframe: str = "",
             options: ReadOptions | None = None, batch_rows: int = DEFAULT_BATCH_ROWS) -> LazyPlan:
        """Plan a lazy replay of the data files under `paths` (see `LazyPlan.open`)."""
        return LazyPlan.open(paths, chunk_rows, venue=venue, symbol=symbol, timeframe=timeframe, options=options,
                             batch_rows=batch_rows)


# --------------------------------------------------------------------------------------------------
# the in-memory plan


@dataclass(frozen=True, slots=True)
class _Stream:
    # one instrument and kind: columns sorted by merge key, and where each slice ends
    instrument: str
    kind: str
    columns: dict[str, np.ndarray | None]  # trade_id is None when the venue gives no ids
    file_index: np.ndarray
    row: np.ndarray
    bounds: np.ndarray  # bounds[j] = end (exclusive) of slice j


class InMemoryPlan(ReplayPlan):
    """A plan over frames in memory, merged and cut all at once; its resume state is the next slice index."""

    def __init__(self, files: tuple[str, ...], universe: tuple[str, ...], streams: list[_Stream],
                 rejected: list[list[Quarantined]], watermarks: np.ndarray, rows_per_slice: np.ndarray,
                 timeframes: dict[str, int], chunk_rows: int) -> None:
        self.files = files
        self.universe = universe
        self._streams = streams
        self._rejected = rejected
        self.watermarks = watermarks
        self.rows_per_slice = rows_per_slice
        self.timeframes = timeframes
        self.chunk_rows = chunk_rows

    @property
    def n_slices(self) -> int:
        return len(self.watermarks)

    @property
    def total_rows(self) -> int:
        return int(self.rows_per_slice.sum())

    @classmethod
    def build(cls, frames: Sequence[ParsedFrame], chunk_rows: int) -> InMemoryPlan:
        """Merge `frames` and cut the stream every `chunk_rows` rows."""
        if not frames:
            raise DataSourceError("<data>", "no data files to replay")
        _check_mixing([(f.instrument, f.kind, f.timeframe_ns, f.path) for f in frames])
        files = tuple(sorted({f.path for f in frames}))
        file_no = {p: i for i, p in enumerate(files)}
        by_stream: dict[tuple[str, str], list[pl.DataFrame]] = defaultdict(list)
        bad_parts: list[pl.DataFrame] = []
        for f in frames:
            df = f.frame.with_columns(
                pl.lit(file_no[f.path], dtype=pl.Int32).alias("file_index"),
                pl.col("ts_event").cum_max().forward_fill().backward_fill().fill_null(0).alias("merge_key"),
            )
            bad = df.filter(pl.col("problem").is_not_null())
            if bad.height:
                bad_parts.append(bad.select(
                    pl.lit(f.instrument).alias("instrument"), "ts_event", "ts_recv", "file_index", "row",
                    "problem", "raw", "merge_key"))
            by_stream[(f.instrument, f.kind)].append(df.filter(pl.col("problem").is_null()))
        keys = [(inst, kind, pl.concat(_with_levels(parts), how="vertical_relaxed").sort(["merge_key", "file_index",
                                                                                         "row"]))
                for (inst, kind), parts in sorted(by_stream.items())]
        bad_all = (pl.concat(bad_parts, how="vertical_relaxed").sort(["merge_key", "file_index", "row"])
                   if bad_parts else None)
        all_keys = np.sort(kind="stable", a=np.concatenate(
            [d["merge_key"].to_numpy() for _, _, d in keys]
            + ([bad_all["merge_key"].to_numpy()] if bad_all is not None else [])))
        if len(all_keys) == 0:
            raise DataSourceError("<data>", "the data files hold no rows")
        cuts = _cuts(all_keys, 0, chunk_rows, last=True)
        rows_per_slice = np.diff(np.r_[0, np.searchsorted(all_keys, cuts, side="right")])
        streams = []
        for inst, kind, d in keys:
            mk = d["merge_key"].to_numpy()
            cols = _numpy_columns(d, kind, has_ids=d["trade_id"].null_count() < d.height if kind == "trade" else False)
            streams.append(_Stream(inst, kind, cols, d["file_index"].cast(pl.Int32).to_numpy(),
                                   d["row"].cast(pl.Int64).to_numpy(), np.searchsorted(mk, cuts, side="right")))
        rejected: list[list[Quarantined]] = [[] for _ in cuts]
        if bad_all is not None:
            slice_of = np.searchsorted(cuts, bad_all["merge_key"].to_numpy(), side="left")
            for j, q in zip(slice_of.tolist(), _quarantined(bad_all, files)):
                rejected[j].append(q)
        universe = tuple(sorted({f.instrument for f in frames}))
        timeframes = {f.instrument: f.timeframe_ns for f in frames if f.kind not in _RIDERS}
        return cls(files, universe, streams, rejected, cuts, rows_per_slice, timeframes, chunk_rows)

    def cursor(self, state: Any = None) -> _IndexCursor:
        return _IndexCursor(self, int(state or 0))

    def slice(self, j: int) -> list[MarketSlice]:
        chunks: dict[str, dict[str, object]] = {i: {} for i in self.universe}
        for s in self._streams:
            a = 0 if j == 0 else int(s.bounds[j - 1])
            b = int(s.bounds[j])
            if b > a:
                c = {k: (v[a:b] if v is not None else None) for k, v in s.columns.items()}
                chunks[s.instrument][_KIND_FIELD[s.kind]] = _chunk(s.instrument, s.kind, c, s.file_index[a:b],
                                                                   s.row[a:b], self.files)
        rejected: dict[str, list[Quarantined]] = defaultdict(list)
        for q in self._rejected[j]:
            rejected[q.instrument].append(q)
        wm = int(self.watermarks[j])
        return [MarketSlice(instrument=i, watermark=wm, rejected=tuple(rejected[i]), **chunks[i])  # type: ignore[arg-type]
                for i in self.universe]


class _IndexCursor:
    def __init__(self, plan: InMemoryPlan, start: int) -> None:
        self.plan = plan
        self.next = start
        self.rows_done = int(plan.rows_per_slice[:start].sum())

    def next_slice(self) -> tuple[list[MarketSlice], int] | None:
        j = self.next
        if j >= self.plan.n_slices:
            return None
        out = self.plan.slice(j)
        rows = int(self.plan.rows_per_slice[j])
        self.next, self.rows_done = j + 1, self.rows_done + rows
        return out, rows

    def state(self) -> int:
        return self.next


# --------------------------------------------------------------------------------------------------
# the lazy plan


Reader = Callable[[int, int], Iterator[ParsedFrame]]  # (batch rows, start row) -> the rows from there on, in batches
_PEEK_ROWS = 1_024  # rows of each file read when a plan opens (columns, kind, bar length, first key, trade ids)


@dataclass(frozen=True, slots=True)
class _Input:
    # one file (or frame) of a lazy plan
    path: str
    instrument: str
    kind: str
    read: Reader


class LazyPlan(ReplayPlan):
    """A plan that reads its files in batches while it replays (see module docstring, "Lazy reading").

    Known up front: files, universe, venues, timeframes, and `total_rows` (from the files' metadata:
    exact for Parquet and Feather, a line count for CSV; corrected to the rows actually read when a
    file has been read to its end). `n_slices` is known once a cursor has reached the end; asking for it
    before reads the data once (bounded memory). `max_slices` is a bound known without reading.
    An instrument's trades carry ids when the first rows of one of its files (read at open) have one (the
    in-memory plan looks at all its rows; ids are a column of a file, so both agree on real files).
    """

    def __init__(self, inputs: Sequence[_Input], counts: Sequence[int], chunk_rows: int, batch_rows: int,
                 timeframes: dict[str, int], has_ids: dict[str, bool], first_keys: Sequence[int | None]) -> None:
        if chunk_rows < 1:
            raise DataSourceError("<data>", f"replay.chunk_rows must be >= 1, was {chunk_rows!r}")
        self._inputs = tuple(inputs)
        self._counts = list(counts)
        self.files = tuple(i.path for i in self._inputs)
        self.universe = tuple(sorted({i.instrument for i in self._inputs}))
        self.timeframes = timeframes
        self.chunk_rows = chunk_rows
        self.batch_rows = batch_rows
        self._has_ids = has_ids  # per trade instrument: whether its trades carry ids
        self._first_keys = tuple(first_keys)  # per input: its first row's merge key (None: unknown when opened)
        self._n_slices: int | None = None
        self._streams = sorted({(i.instrument, i.kind) for i in self._inputs})
        self._slice_cursor: _LazyCursor | None = None
        self._positions: dict[int, ReplayPosition] = {}

    @classmethod
    def open(cls, paths: Sequence[str], chunk_rows: int, *, venue: str = "", symbol: str = "", timeframe: str = "",
             options: ReadOptions | None = None, batch_rows: int = DEFAULT_BATCH_ROWS) -> LazyPlan:
        """Discover and identify the data files under `paths` and read the first rows of each (to check
        its columns, kind and bar length early); the rest is read during the replay."""
        paths_found = formats.discover(paths)
        if not paths_found:
            raise DataSourceError(", ".join(map(str, paths)), "holds no data files (.csv, .csv.gz, .parquet, .feather)")
        specs = [c for p in paths_found  # a wide price table: one input per asset column
                 for c in formats.wide_specs(formats.identify(p, venue=venue, symbol=symbol, timeframe=timeframe),
                                             options)]
        inputs = [_Input(s.path, f"{s.venue}:{s.symbol}", s.kind,
                         functools.partial(_read_file_batches, s, options)) for s in specs]
        return cls._make(inputs, [_count_rows(s) for s in specs], [s.timeframe_ns for s in specs], chunk_rows,
                         batch_rows)

    @classmethod
    def of_frames(cls, frames: Sequence[ParsedFrame], chunk_rows: int,
                  batch_rows: int = DEFAULT_BATCH_ROWS) -> LazyPlan:
        """A lazy plan over frames in memory, read `batch_rows` at a time (one frame per path)."""
        if not frames:
            raise DataSourceError("<data>", "no data files to replay")
        if len({f.path for f in frames}) != len(frames):
            raise DataSourceError("<data>", "a lazy plan takes one frame per path")
        frames = sorted(frames, key=lambda f: f.path)
        inputs = [_Input(f.path, f.instrument, f.kind, functools.partial(_frame_batches, f))
                  for f in frames]
        return cls._make(inputs, [f.frame.height for f in frames], [f.timeframe_ns for f in frames], chunk_rows,
                         batch_rows)

    @classmethod
    def _make(cls, inputs: list[_Input], counts: list[int], spec_tfs: list[int], chunk_rows: int,
              batch_rows: int) -> LazyPlan:
        described: list[tuple[str, str, int, str]] = []
        has_ids: dict[str, bool] = {}
        first_keys: list[int | None] = []
        any_rows = False
        for inp, tf in zip(inputs, spec_tfs):
            first = next(inp.read(min(batch_rows, _PEEK_ROWS), 0), None)  # columns, kind, bar length, first key
            times = first.frame["ts_event"].drop_nulls() if first is not None else pl.Series([], dtype=pl.Int64)
            first_keys.append(int(times[0]) if len(times) else None)
            if first is not None:
                any_rows = any_rows or first.frame.height > 0
                tf = first.timeframe_ns
                if inp.kind == "trade":  # ids are a property of the file's columns: its first rows tell
                    ids = first.frame["trade_id"]
                    has_ids[inp.instrument] = has_ids.get(inp.instrument, False) or ids.null_count() < len(ids)
            described.append((inp.instrument, inp.kind, tf, inp.path))
        _check_mixing(described)
        if not any_rows:
            raise DataSourceError("<data>", "the data files hold no rows")
        timeframes = {inst: tf for inst, kind, tf, _ in described if kind not in _RIDERS}
        return cls(inputs, counts, chunk_rows, batch_rows, timeframes, has_ids, first_keys)

    @property
    def total_rows(self) -> int:
        return sum(self._counts)

    @property
    def n_slices(self) -> int:
        if self._n_slices is None:
            cur = self.cursor()
            while cur.next_slice() is not None:
                pass
        assert self._n_slices is not None
        return self._n_slices

    def cursor(self, state: Any = None) -> _LazyCursor:
        if state is None or state == 0:
            n = len(self.files)
            state = ReplayPosition(version=1, next_slice=0, rows_done=0, offsets=(0,) * n, last_keys=(None,) * n)
        if not isinstance(state, ReplayPosition):
            raise DataSourceError("<recovery>", f"the snapshot's replay position is {state!r}, not a position of "
                                                "this replay source (an older version wrote it); start a new run")
        if state.version != 1 or len(state.offsets) != len(self.files):
            raise DataSourceError("<recovery>", f"the snapshot's replay position does not fit these {len(self.files)} "
                                                f"files (version {state.version}, {len(state.offsets)} files)")
        return _LazyCursor(self, state)

    def slice(self, j: int) -> list[MarketSlice]:
        """Return slice `j`: reading on from the last slice asked for, else from the nearest slice seen before."""
        cur = self._slice_cursor
        if cur is None or cur.next > j:
            seen = [k for k in self._positions if k <= j]
            cur = self.cursor(self._positions[max(seen)] if seen else None)
        while True:
            self._positions[cur.next] = cur.state()
            got = cur.next_slice()
            if got is None:
                raise IndexError(f"slice {j} of a plan with {cur.next} slices")
            if cur.next - 1 == j:
                self._slice_cursor = cur
                return got[0]

    def _file_done(self, i: int, rows: int) -> None:
        self._counts[i] = rows  # the rows actually read, where the metadata only estimated them

    def _slices_done(self, n: int) -> None:
        self._n_slices = n


class _FileReader:
    """The rows of one input not yet emitted: a window of numpy columns, refilled batch by batch."""

    def __init__(self, plan: LazyPlan, index: int, offset: int, last_key: int | None) -> None:
        self.plan, self.index, self.inp = plan, index, plan._inputs[index]
        self.offset = offset  # rows emitted
        self.last_key = last_key  # merge key of the last emitted row
        self._read_max = last_key  # running max of event times over the rows read so far
        self.rows_read = offset  # rows read so far (from the start of the file)
        self._it: Iterator[ParsedFrame] | None = None
        self.exhausted = False
        self.keys = np.empty(0, np.int64)
        self.cols: dict[str, np.ndarray | None] = {}
        self.rows = np.empty(0, np.int64)
        self.ok: np.ndarray | None = None  # per buffered row: accepted at parse time (None: all are)
        self.bad: pl.DataFrame | None = None  # the buffered rows rejected at parse time

    def bound(self) -> int | None:
        """A key no row of this input still to come lies below, nor any buffered row above: the last buffered
        key, else the last emitted one, else the file's first (None: unknown until it is read)."""
        if len(self.keys):
            return int(self.keys[-1])
        return self.last_key if self.last_key is not None else self.plan._first_keys[self.index]

    @property
    def started(self) -> bool:
        return self._it is not None

    def pull(self) -> None:
        """Read one more batch (more when the merge key of the first rows is still unknown)."""
        if self._it is None:
            self._it = self.inp.read(self.plan.batch_rows, self.offset)
        parts: list[pl.DataFrame] = []
        while True:
            got = next(self._it, None)
            if got is None:
                self.exhausted = True
                self.plan._file_done(self.index, self.rows_read + sum(p.height for p in parts))
                break
            if got.instrument != self.inp.instrument or got.kind != self.inp.kind:
                raise DataSourceError(self.inp.path, f"a batch holds {got.kind}s of {got.instrument!r}, the file "
                                                     f"{self.inp.kind}s of {self.inp.instrument!r}")
            parts.append(got.frame)
            # a file's leading rows without a time take the key of its first timed row: read on until one comes
            if self._read_max is not None or got.frame["ts_event"].null_count() < got.frame.height:
                break
        if not parts:
            return
        df = parts[0] if len(parts) == 1 else pl.concat(parts, how="vertical_relaxed")
        if df.height == 0:
            return
        self.rows_read += df.height
        ck = df["ts_event"].cast(pl.Int64).cum_max().forward_fill()
        if self._read_max is not None:
            keys = np.maximum(ck.fill_null(self._read_max).to_numpy(), self._read_max)
        else:
            keys = ck.backward_fill().fill_null(0).to_numpy()
        keys = keys.astype(np.int64, copy=False)
        self._read_max = int(keys[-1])
        bad_mask = df["problem"].is_not_null()
        n_bad = int(bad_mask.sum())
        cols = _numpy_columns(df, self.inp.kind, self.plan._has_ids.get(self.inp.instrument, False), fill=True)
        rows = df["row"].cast(pl.Int64).to_numpy()
        ok = None if n_bad == 0 else (~bad_mask).to_numpy()
        bad = None
        if n_bad:
            bad = df.filter(bad_mask).select(
                pl.lit(self.inp.instrument).alias("instrument"), "ts_event", "ts_recv",
                pl.lit(self.index, dtype=pl.Int32).alias("file_index"), "row", "problem", "raw",
                pl.Series("merge_key", keys[~ok] if ok is not None else keys))
        if len(self.keys) == 0:
            self.keys, self.cols, self.rows, self.ok, self.bad = keys, cols, rows, ok, bad
            return
        old_n = len(self.keys)
        self.keys = np.concatenate([self.keys, keys])
        self.cols = {k: (None if v is None else np.concatenate([v, cols[k]]))
                     for k, v in self.cols.items()}
        self.rows = np.concatenate([self.rows, rows])
        if self.ok is not None or ok is not None:
            self.ok = np.concatenate([np.ones(old_n, bool) if self.ok is None else self.ok,
                                      np.ones(len(keys), bool) if ok is None else ok])
        if bad is not None:
            self.bad = bad if self.bad is None else pl.concat([self.bad, bad], how="vertical_relaxed")

    def take(self, n: int) -> tuple[dict[str, np.ndarray | None], np.ndarray, np.ndarray, pl.DataFrame | None]:
        """Remove the first `n` buffered rows; return their accepted rows' columns, keys and rows, and the
        rejected ones."""
        cols = {k: (None if v is None else v[:n]) for k, v in self.cols.items()}
        keys, rows = self.keys[:n], self.rows[:n]
        bad = None
        if self.ok is not None:
            ok = self.ok[:n]
            if not ok.all():
                cols = {k: (None if v is None else v[ok]) for k, v in cols.items()}
                keys, rows = keys[ok], rows[ok]
                end_row = int(self.rows[n - 1]) if n else -1
                bad = self.bad.filter(pl.col("row") <= end_row) if self.bad is not None else None
                self.bad = self.bad.filter(pl.col("row") > end_row) if self.bad is not None else None
            self.ok = self.ok[n:]
            if self.ok.all():
                self.ok, self.bad = None, None
        if n:
            self.last_key = int(self.keys[n - 1])
            self.offset += n
        self.keys, self.rows = self.keys[n:], self.rows[n:]
        self.cols = {k: (None if v is None else v[n:]) for k, v in self.cols.items()}
        return cols, keys, rows, bad


class _LazyCursor:
    def __init__(self, plan: LazyPlan, pos: ReplayPosition) -> None:
        self.plan = plan
        self.next = pos.next_slice
        self.rows_done = pos.rows_done
        self._files = [_FileReader(plan, i, off, key) for i, (off, key) in enumerate(zip(pos.offsets, pos.last_keys))]
        self._cuts: list[int] = []  # cuts known to be complete, ascending
        self._by_stream: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i, inp in enumerate(plan._inputs):
            self._by_stream[(inp.instrument, inp.kind)].append(i)

    def state(self) -> ReplayPosition:
        return ReplayPosition(version=1, next_slice=self.next, rows_done=self.rows_done,
                              offsets=tuple(f.offset for f in self._files),
                              last_keys=tuple(f.last_key for f in self._files))

    def _plan_cuts(self) -> None:
        # the next cuts below B, the smallest bound of the inputs not yet exhausted (every cut, once all are)
        c, low = self.plan.chunk_rows, self.plan.batch_rows // 2
        while not self._cuts:
            live = [f for f in self._files if not f.exhausted]
            unknown = [f for f in live if f.bound() is None]
            for f in unknown:
                f.pull()
            if unknown:
                continue
            bound = min(f.bound() or 0 for f in live) if live else None
            known = [f.keys if bound is None else f.keys[:np.searchsorted(f.keys, bound, side="right")]
                     for f in self._files]
            keys = np.sort(np.concatenate(known), kind="stable")
            if bound is None:
                if len(keys):
                    self._cuts = _cuts(keys, self.rows_done, c, last=True).tolist()
                return
            self._cuts = [k for k in _cuts(keys, self.rows_done, c, last=False).tolist() if k < bound]
            if not self._cuts:  # no whole slice below B yet: read on in the inputs that hold it down, and top up
                for f in live:  # the others already open (fewer rounds); inputs further on stay unopened
                    if f.bound() == bound or (f.started and len(f.keys) < low):
                        f.pull()

    def next_slice(self) -> tuple[list[MarketSlice], int] | None:
        if not self._cuts:
            self._plan_cuts()
            if not self._cuts:
                self.plan._slices_done(self.next)
                return None
        cut = self._cuts.pop(0)
        files = self.plan.files
        taken = []
        n_rows = 0
        for f in self._files:
            n = int(np.searchsorted(f.keys, cut, side="right"))
            n_rows += n
            taken.append(f.take(n))
        chunks: dict[str, dict[str, object]] = {i: {} for i in self.plan.universe}
        for (inst, kind), idx in sorted(self._by_stream.items()):
            parts = [(i, taken[i]) for i in idx if len(taken[i][1])]
            if not parts:
                continue
            if len(parts) == 1:
                i, (cols, _, rows, _) = parts[0]
                fidx = np.full(len(rows), i, np.int32)
            else:
                keys = np.concatenate([p[1] for _, p in parts])
                rows = np.concatenate([p[2] for _, p in parts])
                fidx = np.concatenate([np.full(len(p[2]), i, np.int32) for i, p in parts])
                order = np.lexsort((rows, fidx, keys))
                rows, fidx = rows[order], fidx[order]
                cols = {k: _concat([p[0][k] for _, p in parts], [len(p[2]) for _, p in parts], order)
                        for k in parts[0][1][0]}
            chunks[inst][_KIND_FIELD[kind]] = _chunk(inst, kind, cols, fidx, rows, files)
        rejected: dict[str, list[Quarantined]] = defaultdict(list)
        bad_parts = [b for _, _, _, b in taken if b is not None and b.height]
        if bad_parts:
            bad = pl.concat(bad_parts, how="vertical_relaxed").sort(["merge_key", "file_index", "row"])
            for q in _quarantined(bad, files):
                rejected[q.instrument].append(q)
        out = [MarketSlice(instrument=i, watermark=cut, rejected=tuple(rejected[i]), **chunks[i])  # type: ignore[arg-type]
               for i in self.plan.universe]
        self.next += 1
        self.rows_done += n_rows
        return out, n_rows


# --------------------------------------------------------------------------------------------------
# shared pieces


def _cuts(keys: np.ndarray, rows_before: int, chunk_rows: int, *, last: bool) -> np.ndarray:
    """The cuts among sorted `keys`, the stream's rows from row `rows_before` on: the key after every
    `chunk_rows`-th row of the whole stream (and after the last row when `last`), each once."""
    first = (rows_before // chunk_rows + 1) * chunk_rows - 1 - rows_before
    picks = keys[np.arange(first, len(keys), chunk_rows)]
    if last and len(keys):
        picks = np.r_[picks, keys[-1]]
    return np.unique(picks)


def _numpy_columns(d: pl.DataFrame, kind: str, has_ids: bool, fill: bool = False) -> dict[str, np.ndarray | None]:
    # `fill`: the frame holds rejected rows too, whose nulls must not turn integer columns into floats
    cols: dict[str, np.ndarray | None] = {}
    if kind == "quote":  # order books: the top levels (QuoteChunk.bid_levels / ask_levels); None for other quotes
        from sources import book_files

        for c in _LEVELS:
            cols[c] = book_files.levels_from_grid(d[c].to_numpy()) if c in d.columns else None
    for c in _COLUMNS[kind]:
        s = d[c]
        if c == "trade_id":
            cols[c] = s.fill_null("").to_numpy().astype(str) if has_ids else None
        elif c == "side":
            cols[c] = s.fill_null(0).cast(pl.Int8).to_numpy()
        elif c.startswith("ts_"):
            s = s.cast(pl.Int64)
            cols[c] = (s.fill_null(0) if fill else s).to_numpy()
        else:
            cols[c] = s.cast(pl.Float64).to_numpy()
    return cols


def _with_levels(parts: list[pl.DataFrame]) -> list[pl.DataFrame]:
    # quote frames of one instrument from a book file and from a quote file: NaN levels for the quote file's rows
    have = [p for p in parts if _LEVELS[0] in p.columns]
    if not have or len(have) == len(parts):
        return parts
    dtype = have[0].schema[_LEVELS[0]]
    shape = (dtype.shape if isinstance(dtype, pl.Array) else ())
    return [p if _LEVELS[0] in p.columns else p.with_columns(
        *(pl.Series(c, np.full((p.height, *shape), np.nan), dtype=dtype) for c in _LEVELS)).select(have[0].columns)
        for p in parts]


def _concat(values: list[np.ndarray | None], lengths: list[int], order: np.ndarray) -> np.ndarray | None:
    # one column of several files' rows (None when no file has it; NaN levels for the files without levels)
    if all(v is None for v in values):
        return None
    like = next(v for v in values if v is not None)
    filled = []
    for v, n in zip(values, lengths):
        if v is None:
            v = np.empty(n, like.dtype)
            for name in like.dtype.names or ():
                v[name] = np.nan
        filled.append(v)
    out: np.ndarray = np.concatenate(filled)[order]
    return out


def _quarantined(bad: pl.DataFrame, files: tuple[str, ...]) -> Iterator[Quarantined]:
    for r in bad.iter_rows(named=True):
        yield Quarantined(instrument=r["instrument"], ts_event=r["ts_event"] or 0, ts_recv=r["ts_recv"] or 0,
                          source=files[r["file_index"]], row=r["row"], reason=r["problem"], raw=r["raw"] or "{}")


def _chunk(instrument: str, kind: str, c: dict[str, np.ndarray | None], file_index: np.ndarray, row: np.ndarray,
           files: tuple[str, ...]) -> TradeChunk | QuoteChunk | BarChunk | MarkChunk | FundingChunk:
    origin = Provenance(files=files, file_index=file_index, row=row)
    if kind == "mark":
        return MarkChunk(instrument=instrument, origin=origin, **c)  # type: ignore[arg-type]
    if kind == "funding":
        return FundingChunk(instrument=instrument, origin=origin, **c)  # type: ignore[arg-type]
    if kind == "trade":
        return TradeChunk(instrument=instrument, origin=origin, **c)  # type: ignore[arg-type]
    if kind == "quote":
        return QuoteChunk(instrument=instrument, origin=origin, **c)  # type: ignore[arg-type]
    return BarChunk(instrument=instrument, origin=origin, **c)  # type: ignore[arg-type]


def _check_mixing(described: Sequence[tuple[str, str, int, str]]) -> None:
    # described: (instrument, kind, bar length, path) per file
    kinds: dict[str, set[str]] = defaultdict(set)
    tfs: dict[str, set[int]] = defaultdict(set)
    kinds_seen_market: set[str] = set()
    path: dict[str, str] = {}  # a file of the instrument's market data (else of its marks or funding): errors name it
    for inst, kind, tf, p in described:
        kinds[inst].add(kind)
        if kind not in _RIDERS and inst not in kinds_seen_market:
            path[inst] = p
            kinds_seen_market.add(inst)
        path.setdefault(inst, p)
        if kind == "bar":
            tfs[inst].add(tf)
    for inst, ks in sorted(kinds.items()):
        riders = ks & set(_RIDERS)
        ks = ks - riders
        if not ks:  # mark prices and funding rates describe a contract: its bars must be replayed with them
            what = " and ".join({"mark": "mark prices", "funding": "funding rates"}[k] for k in sorted(riders,
                                                                                                       reverse=True))
            raise DataSourceError(path[inst], f"{what} of {inst!r} need the contract's bars (or trades) in the same "
                                              "replay: add its OHLCV file (e.g. <BASE>_<QUOTE>_<SETTLE>-5m-futures"
                                              ".feather)")
        if "bar" in ks and len(ks) > 1:
            raise DataSourceError(path[inst], f"instrument {inst!r} has both recorded bars and ticks; replay one "
                                              "or the other (bars are built from the ticks)")
        if len(tfs[inst]) > 1:
            lengths = sorted(t // 10**9 for t in tfs[inst])
            raise DataSourceError(path[inst], f"instrument {inst!r} has recorded bars of several lengths {lengths!r} s;"
                                              " choose one with --timeframe (or name the files to replay)")


# --------------------------------------------------------------------------------------------------
# reading files in batches


def _read_file_batches(spec: FileSpec, options: ReadOptions | None, batch_rows: int,
                       start_row: int) -> Iterator[ParsedFrame]:
    return formats.iter_file(spec, options, batch_rows=batch_rows, start_row=start_row)


def _frame_batches(f: ParsedFrame, batch_rows: int, start_row: int) -> Iterator[ParsedFrame]:
    for a in range(start_row, f.frame.height, batch_rows):
        yield ParsedFrame(instrument=f.instrument, kind=f.kind, timeframe_ns=f.timeframe_ns, path=f.path,
                          frame=f.frame.slice(a, batch_rows))


def _count_rows(spec: FileSpec) -> int:
    """Data rows in a file without reading it: Parquet and Feather metadata; for CSV, its lines."""
    path, lower = spec.path, spec.path.lower()
    if spec.format.startswith("book_"):  # an estimate (the quotes the book gives are known once it is read)
        from sources import book_files

        return book_files.count_lines(path)
    if spec.column:  # one column of a wide price table: its bars
        return formats.wide_count(spec)
    try:
        if lower.endswith(".parquet"):
            return int(pl.scan_parquet(path).select(pl.len()).collect().item())
        if lower.endswith((".feather", ".arrow", ".ipc")):
            return int(pl.scan_ipc(path).select(pl.len()).collect().item())
        header = spec.format not in _NO_HEADER
        # as sources.formats reads CSV: quotes are not special, bad UTF-8 is replaced
        if lower.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                lines, last = 0, b"\n"
                while block := fh.read(1 << 20):
                    lines += block.count(b"\n")
                    last = block[-1:]
                lines += last != b"\n"
            return max(0, lines - header)
        return int(pl.scan_csv(path, has_header=header, infer_schema=False, truncate_ragged_lines=True,
                               quote_char=None, encoding="utf8-lossy").select(pl.len()).collect().item())
    except Exception as e:  # any reader error: the replay's own reading will name it
        raise DataSourceError(path, f"cannot count its rows: {e}") from e

