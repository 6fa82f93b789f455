"""Choosing what a replay reads: bar files of one length (``--timeframe``), rows in a time range (``--timerange``).

Also what ``headrace data list`` shows: how each file under a path will be read (venue, symbol, kind,
bar length, rows, first and last time), from `sources.formats` itself, so the listing and the replay
can never disagree.

A time range is ``START:END``; each side is an ISO 8601 date or date-time (UTC unless it names an
offset) or empty (open). START is included, END excluded: ``2023-03-05:2023-03-06`` is one day. Bars
are selected by the time they open, trades and quotes by their event time. Rows whose time could not be
read are kept, so the validator still quarantines them with their reason.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from headrace.config import Config, parse_timeframe
from headrace.errors import DataSourceError
from sources import formats
from sources.formats import FileSpec, ParsedFrame, ReadOptions
from sources.replay_plan import ReplayPlan

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _instant(text: str, side: str) -> int:
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as e:
        raise DataSourceError("--timerange", f"{side} {text!r} is not an ISO 8601 date or date-time") from e
    t = t if t.tzinfo else t.replace(tzinfo=UTC)
    delta = t - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000


@dataclass(frozen=True, slots=True)
class TimeRange:
    """Rows with start_ns <= time < end_ns (None: open on that side)."""

    start_ns: int | None
    end_ns: int | None

    @classmethod
    def parse(cls, text: str) -> TimeRange:
        """Parse ``START:END`` (see module docstring); raises `DataSourceError` naming ``--timerange``.

        Examples
        --------
        >>> TimeRange.parse("2023-03-05:2023-03-06")
        TimeRange(start_ns=1677974400000000000, end_ns=1678060800000000000)
        >>> TimeRange.parse("2023-03-05T12:30:")
        TimeRange(start_ns=1678019400000000000, end_ns=None)
        """
        # date-times hold colons too: the separator is the one colon with a valid instant (or nothing) each side
        splits = []
        for m in re.finditer(":", text):
            a, b = text[: m.start()], text[m.end():]
            try:
                splits.append((_instant(a, "start") if a.strip() else None, _instant(b, "end") if b.strip() else None))
            except DataSourceError:
                continue
        if len(splits) != 1:
            raise DataSourceError("--timerange", f"must be START:END with ISO 8601 dates or date-times, either side "
                                                 f"may be empty (2023-03-05:2023-03-10, 2023-03-05T12:00:), was "
                                                 f"{text!r}")
        start, end = splits[0]
        if start is not None and end is not None and not start < end:
            raise DataSourceError("--timerange", f"the start must be before the end, was {text!r}")
        return cls(start, end)

    def keep(self, frame: ParsedFrame) -> ParsedFrame:
        """Return `frame` with only the rows in the range (rows without a readable time kept)."""
        col = pl.col("ts_open" if frame.kind == "bar" else "ts_event")
        cond = pl.lit(True)
        if self.start_ns is not None:
            cond = cond & (col >= self.start_ns)
        if self.end_ns is not None:
            cond = cond & (col < self.end_ns)
        kept = frame.frame.filter(col.is_null() | cond)
        return ParsedFrame(instrument=frame.instrument, kind=frame.kind, timeframe_ns=frame.timeframe_ns,
                           path=frame.path, frame=kept, ts_unit=frame.ts_unit)


def timeframe_text(ns: int) -> str:
    """Return a bar length in ns as ``1m``, ``5m``, ``1h``, ``1d`` (``""`` for 0).

    Examples
    --------
    >>> timeframe_text(300 * 10**9), timeframe_text(86_400 * 10**9), timeframe_text(0)
    ('5m', '1d', '')
    """
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)):
        if ns and ns % (size * 10**9) == 0:
            return f"{ns // (size * 10**9)}{unit}"
    return f"{ns}ns" if ns else ""


def _bar_length(spec: FileSpec, options: ReadOptions) -> int:
    # the file's bar length: from its name, else from its first rows (as the replay will tell it)
    if spec.kind != "bar" or spec.timeframe_ns:
        return spec.timeframe_ns
    first = next(formats.iter_file(spec, options, batch_rows=10_000), None)
    return first.timeframe_ns if first is not None else 0


def identify_all(paths: Sequence[str], *, venue: str = "", symbol: str = "") -> list[FileSpec]:
    """Discover and identify every data file under `paths` (raises `DataSourceError` for the first bad one)."""
    files = formats.discover(paths)
    if not files:
        raise DataSourceError(", ".join(map(str, paths)), "holds no data files (.csv, .csv.gz, .parquet, .feather)")
    return [formats.identify(f, venue=venue, symbol=symbol) for f in files]


def of_timeframe(specs: Sequence[FileSpec], timeframe: str, options: ReadOptions) -> list[FileSpec]:
    """Keep trade and quote files, and for each instrument its bar files whose bars are `timeframe` long.

    An instrument recorded at one bar length only keeps it (a replay may mix clocks: 1-minute bars of one
    venue beside 5-minute bars of another); one recorded at several lengths keeps the `timeframe` files,
    and is refused when it has none of that length.
    """
    try:
        want = parse_timeframe(timeframe)
    except ValueError as e:
        raise DataSourceError("--timeframe", str(e)) from e
    lengths: dict[str, dict[int, list[FileSpec]]] = {}
    kept: list[FileSpec] = []
    for s in specs:
        if s.kind != "bar":
            kept.append(s)
            continue
        lengths.setdefault(f"{s.venue}:{s.symbol}", {}).setdefault(_bar_length(s, options), []).append(s)
    for inst, by_length in sorted(lengths.items()):
        if len(by_length) == 1:
            kept += next(iter(by_length.values()))
        elif want in by_length:
            kept += by_length[want]
        else:
            found = ", ".join(timeframe_text(t) for t in sorted(by_length))
            raise DataSourceError("--timeframe", f"instrument {inst!r} is recorded at {found}, not {timeframe}")
    if not kept:
        raise DataSourceError("--timeframe", f"no {timeframe} bars and no trades or quotes in the data")
    return sorted(kept, key=lambda s: s.path)


def open_plan(paths: Sequence[str], config: Config, *, timerange: str = "", timeframe: str = "") -> ReplayPlan:
    """Return the replay plan for `paths` under `config`, narrowed by ``--timeframe`` and ``--timerange``.

    Without either, this is `ReplayPlan.open` (files read in batches while the run goes). A time range
    reads the files whole and keeps the rows inside it (an in-memory plan: memory grows with the files).
    """
    options = ReadOptions.from_config(config)
    venue, symbol = config.replay.venue, config.replay.symbol
    if not timerange and not timeframe:
        return ReplayPlan.open(paths, config.replay.chunk_rows, venue=venue, symbol=symbol, options=options)
    specs = identify_all(paths, venue=venue, symbol=symbol)
    if timeframe:
        specs = of_timeframe(specs, timeframe, options)
    if not timerange:
        return ReplayPlan.open([s.path for s in specs], config.replay.chunk_rows, venue=venue, symbol=symbol,
                               options=options)
    tr = TimeRange.parse(timerange)
    frames = [tr.keep(f) for s in specs for f in formats.read_file(s, options)]
    frames = [f for f in frames if f.frame.height]
    if not frames:
        raise DataSourceError(", ".join(map(str, paths)), f"holds no rows in the time range {timerange!r}")
    return ReplayPlan.build(frames, config.replay.chunk_rows)


def describe(paths: Sequence[str], *, venue: str = "", symbol: str = "",
             options: ReadOptions | None = None) -> list[dict[str, object]]:
    """Return what each data file under `paths` will be read as, one dict per file, in path order.

    Keys: path, format, venue, symbol, instrument, kind, timeframe ("" for ticks), rows, quarantined
    (rows the reader already finds unusable), first and last (ISO 8601 UTC, of the readable rows), and
    error (None, or why the file cannot be replayed).
    """
    options = options or ReadOptions()
    out: list[dict[str, object]] = []
    for path in formats.discover(paths):
        row: dict[str, object] = {"path": path, "format": None, "venue": None, "symbol": None, "instrument": None,
                                  "kind": None, "timeframe": None, "rows": None, "quarantined": None,
                                  "first": None, "last": None, "error": None}
        try:
            spec = formats.identify(path, venue=venue, symbol=symbol)
            row.update(format=spec.format, venue=spec.venue, symbol=spec.symbol, kind=spec.kind,
                       instrument=f"{spec.venue}:{spec.symbol}")
            frames = formats.read_file(spec, options)  # a wide price table: one per asset column
        except DataSourceError as e:
            row["error"] = e.reason
            out.append(row)
            continue
        for frame in frames:
            df = frame.frame
            good = df.filter(pl.col("problem").is_null())
            ts = good["ts_open" if frame.kind == "bar" else "ts_event"]
            out.append({**row, "symbol": frame.instrument.split(":", 1)[1], "instrument": frame.instrument,
                        "timeframe": timeframe_text(frame.timeframe_ns) if frame.kind == "bar" else "",
                        "rows": df.height, "quarantined": df.height - good.height, "first": _iso(ts.min()),
                        "last": _iso(ts.max())})
    return out


def _iso(ns: object) -> str | None:
    if not isinstance(ns, int):
        return None
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat().replace("+00:00", "Z")
