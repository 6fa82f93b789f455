"""The replay plan: many files and venues merged into one event-time stream, cut into slices.

Pure (no Bytewax): `ReplayPlan.build` takes parsed frames (`sources.formats`), and `plan.slice(j)`
returns what the source emits for slice j. The source's resume state is just the next slice index,
so a resumed replay starts exactly where the snapshot was taken.

Merging. Each file is kept in its own row order; files are interleaved by a merge key, the running
maximum of the file's event times. A row that goes back in time inside its file therefore stays right
after its predecessor, where the validator downstream sees it and quarantines it, instead of being
silently sorted into place. Ties keep file order (by file, then row).

Slices. The merged stream is cut every `chunk_rows` rows, at a change of merge key, and slice j
carries a watermark: every row with event time <= watermark has been emitted once slice j has.
Each slice holds one `MarketSlice` per instrument of the universe, empty ones included, so every
instrument's watermark advances and cross-sectional steps never wait on a quiet instrument.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from headrace.errors import DataSourceError
from headrace.events import (
    BarChunk,
    MarketSlice,
    Provenance,
    Quarantined,
    QuoteChunk,
    TradeChunk,
    split_instrument,
)
from sources.formats import ParsedFrame

_KIND_FIELD = {"trade": "trades", "quote": "quotes", "bar": "bars"}
_COLUMNS = {
    "trade": ("ts_event", "ts_recv", "price", "amount", "side", "trade_id"),
    "quote": ("ts_event", "ts_recv", "bid", "ask", "bid_size", "ask_size"),
    "bar": ("ts_open", "ts_event", "ts_recv", "open", "high", "low", "close", "volume"),
}


@dataclass(frozen=True, slots=True)
class _Stream:
    # one instrument and kind: columns sorted by merge key, and where each slice ends
    instrument: str
    kind: str
    columns: dict[str, np.ndarray | None]  # trade_id is None when the venue gives no ids
    file_index: np.ndarray
    row: np.ndarray
    bounds: np.ndarray  # bounds[j] = end (exclusive) of slice j


class ReplayPlan:
    """Parsed frames merged into event-time order and cut into slices (see module docstring)."""

    def __init__(self, files: tuple[str, ...], universe: tuple[str, ...], streams: list[_Stream],
                 rejected: list[list[Quarantined]], watermarks: np.ndarray, rows_per_slice: np.ndarray,
                 timeframes: dict[str, int]) -> None:
        self.files = files
        self.universe = universe
        self._streams = streams
        self._rejected = rejected
        self.watermarks = watermarks
        self.rows_per_slice = rows_per_slice
        self.timeframes = timeframes  # recorded bar length per instrument (0 for tick instruments)

    @property
    def n_slices(self) -> int:
        return len(self.watermarks)

    @property
    def total_rows(self) -> int:
        return int(self.rows_per_slice.sum())

    @property
    def venues(self) -> tuple[str, ...]:
        return tuple(sorted({split_instrument(i)[0] for i in self.universe}))

    @classmethod
    def build(cls, frames: Sequence[ParsedFrame], chunk_rows: int) -> ReplayPlan:
        """Merge `frames` and cut the stream every `chunk_rows` rows."""
        if not frames:
            raise DataSourceError("<data>", "no data files to replay")
        _check_mixing(frames)
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
        keys = [(inst, kind, pl.concat(parts, how="vertical_relaxed").sort(["merge_key", "file_index", "row"]))
                for (inst, kind), parts in sorted(by_stream.items())]
        bad_all = (pl.concat(bad_parts, how="vertical_relaxed").sort(["merge_key", "file_index", "row"])
                   if bad_parts else None)
        all_keys = np.sort(kind="stable", a=np.concatenate(
            [d["merge_key"].to_numpy() for _, _, d in keys]
            + ([bad_all["merge_key"].to_numpy()] if bad_all is not None else [])))
        if len(all_keys) == 0:
            raise DataSourceError("<data>", "the data files hold no rows")
        # cut after every chunk_rows-th row, at a change of key (all rows of one key stay in one slice)
        cut_idx = np.r_[np.arange(chunk_rows - 1, len(all_keys), chunk_rows), len(all_keys) - 1]
        cuts = np.unique(all_keys[cut_idx])
        rows_per_slice = np.diff(np.r_[0, np.searchsorted(all_keys, cuts, side="right")])
        streams = []
        for inst, kind, d in keys:
            mk = d["merge_key"].to_numpy()
            cols: dict[str, np.ndarray | None] = {}
            for c in _COLUMNS[kind]:
                s = d[c]
                if c == "trade_id":
                    cols[c] = None if s.null_count() == len(s) else s.fill_null("").to_numpy().astype(str)
                elif c == "side":
                    cols[c] = s.fill_null(0).cast(pl.Int8).to_numpy()
                elif c.startswith("ts_"):
                    cols[c] = s.cast(pl.Int64).to_numpy()
                else:
                    cols[c] = s.cast(pl.Float64).to_numpy()
            streams.append(_Stream(inst, kind, cols, d["file_index"].cast(pl.Int32).to_numpy(),
                                   d["row"].cast(pl.Int64).to_numpy(), np.searchsorted(mk, cuts, side="right")))
        rejected: list[list[Quarantined]] = [[] for _ in cuts]
        if bad_all is not None:
            slice_of = np.searchsorted(cuts, bad_all["merge_key"].to_numpy(), side="left")
            for j, r in zip(slice_of.tolist(), bad_all.iter_rows(named=True)):
                rejected[j].append(Quarantined(
                    instrument=r["instrument"], ts_event=r["ts_event"] or 0, ts_recv=r["ts_recv"] or 0,
                    source=files[r["file_index"]], row=r["row"], reason=r["problem"], raw=r["raw"] or "{}"))
        universe = tuple(sorted({f.instrument for f in frames}))
        timeframes = {f.instrument: f.timeframe_ns for f in frames}
        return cls(files, universe, streams, rejected, cuts, rows_per_slice, timeframes)

    def slice(self, j: int) -> list[MarketSlice]:
        """Return slice `j`: one `MarketSlice` per instrument of the universe, in instrument order."""
        chunks: dict[str, dict[str, object]] = {i: {} for i in self.universe}
        for s in self._streams:
            a = 0 if j == 0 else int(s.bounds[j - 1])
            b = int(s.bounds[j])
            if b > a:
                chunks[s.instrument][_KIND_FIELD[s.kind]] = _chunk(s, a, b, self.files)
        rejected: dict[str, list[Quarantined]] = defaultdict(list)
        for q in self._rejected[j]:
            rejected[q.instrument].append(q)
        wm = int(self.watermarks[j])
        return [MarketSlice(instrument=i, watermark=wm, rejected=tuple(rejected[i]), **chunks[i])  # type: ignore[arg-type]
                for i in self.universe]


def _chunk(s: _Stream, a: int, b: int, files: tuple[str, ...]) -> TradeChunk | QuoteChunk | BarChunk:
    c = {k: (v[a:b] if v is not None else None) for k, v in s.columns.items()}
    origin = Provenance(files=files, file_index=s.file_index[a:b], row=s.row[a:b])
    if s.kind == "trade":
        return TradeChunk(instrument=s.instrument, origin=origin, **c)  # type: ignore[arg-type]
    if s.kind == "quote":
        return QuoteChunk(instrument=s.instrument, origin=origin, **c)  # type: ignore[arg-type]
    return BarChunk(instrument=s.instrument, origin=origin, **c)  # type: ignore[arg-type]


def _check_mixing(frames: Sequence[ParsedFrame]) -> None:
    kinds: dict[str, set[str]] = defaultdict(set)
    tfs: dict[str, set[int]] = defaultdict(set)
    path: dict[str, str] = {}
    for f in frames:
        kinds[f.instrument].add(f.kind)
        path.setdefault(f.instrument, f.path)
        if f.kind == "bar":
            tfs[f.instrument].add(f.timeframe_ns)
    for inst, ks in sorted(kinds.items()):
        if "bar" in ks and len(ks) > 1:
            raise DataSourceError(path[inst], f"instrument {inst!r} has both recorded bars and ticks; replay one "
                                              "or the other (bars are built from the ticks)")
        if len(tfs[inst]) > 1:
            raise DataSourceError(path[inst], f"instrument {inst!r} has recorded bars of several lengths "
                                              f"{sorted(tfs[inst])!r} ns; replay one timeframe per instrument")
