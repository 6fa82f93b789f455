"""Recorded order books: read snapshot and delta files into `BookUpdate`s and replay them into quotes.

Layouts (see docs/data.md, "Order books"):

- ``book_binance_depth``: ``<symbol>-depth-snap.csv`` / ``-depth-update.csv``, one row per level:
  ``symbol,timestamp`` (ms) ``,first_update_id,last_update_id,side`` (b/a) ``,update_type`` (snap/set)
  ``,price,qty`` (0 deletes) ``,pu`` (futures: previous final id, -1 in a snapshot). Consecutive rows with
  the same ids and type are one message.
- ``book_tardis_snapshot``: tardis.dev ``book_snapshot_<n>``: one row per snapshot, ``timestamp,
  local_timestamp`` (µs) and ``asks[i].price, asks[i].amount, bids[i].price, bids[i].amount``.
- ``book_tardis_incremental``: tardis.dev ``incremental_book_L2``: one row per level, ``is_snapshot,side,
  price,amount`` (0 deletes); a run of ``is_snapshot`` rows is one snapshot, the delta rows of one
  ``timestamp`` one delta. No update ids.
- ``book_bybit``: Bybit v5 ``orderbook.<depth>`` messages as JSON lines (``.data``, optionally zipped):
  ``{type: snapshot|delta, ts, cts, data: {s, b, a, u, seq}}``; ``u`` numbers the messages.

A malformed row or line never stops a read: it becomes a `BadRecord` with a one-line reason (a level
row of a message is left out of it; a bad JSON line is a lost message, which the update ids then show
as a gap). `replay_book` runs the updates through `operators.book.book_builder.BookBuilder` and yields a
`BookQuote` whenever the top of the book (or its top `depth` levels) changes, plus the gaps and crossed
books the builder reports. `quote_frames` turns that into the quote frames of `sources.formats`, with the
top `BOOK_DEPTH` levels of each side.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import math
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import polars as pl

from headrace.errors import DataSourceError
from operators.book.book_builder import BookBuilder, BookCrossed, BookGap, BookUnsynced, BookUpdate, Level
from sources import formats

if TYPE_CHECKING:
    from sources.formats import FileSpec, ParsedFrame, ReadOptions

BOOK_FORMATS = ("book_binance_depth", "book_tardis_snapshot", "book_tardis_incremental", "book_bybit")
BOOK_EXTS = (".data", ".data.zip", ".jsonl", ".jsonl.gz")  # besides the CSV ones sources.formats knows
BOOK_DEPTH = 20  # levels per side a replayed book gives its quotes (QuoteChunk.bid_levels / ask_levels)
_MAX_REASON = 200
_MS, _US = 1_000_000, 1_000


@dataclass(frozen=True, slots=True)
class BadRecord:
    """A row or line that could not be read: where, why (one line, <= 200 characters) and what it held."""

    source: str
    row: int
    reason: str
    raw: str
    ts_event: int | None = None


@dataclass(frozen=True, slots=True)
class BookIssue:
    """A gap, crossed book or early delta the builder reported, and the data row that completed its message."""

    event: BookGap | BookCrossed | BookUnsynced
    row: int


@dataclass(frozen=True, slots=True)
class BookQuote:
    """The top of the book after an update (times UTC epoch ns), and its top levels when asked for."""

    instrument: str
    ts_event: int
    ts_recv: int
    bid: float
    ask: float
    bid_size: float
    ask_size: float
    row: int
    bids: tuple[Level, ...] = ()
    asks: tuple[Level, ...] = ()


# --------------------------------------------------------------------------------------------------
# telling the layout from the name


def identify_book(path: str) -> tuple[str, str, str] | None:
    """Return (format, venue or "", ccxt symbol) of an order-book file name, or None when it is not one.

    Examples
    --------
    >>> identify_book("x/binance-futures_book_snapshot_5_BTCUSDT.csv")
    ('book_tardis_snapshot', 'binanceusdm', 'BTC/USDT')
    >>> identify_book("deribit_incremental_book_L2_BTC-PERPETUAL.csv")
    ('book_tardis_incremental', 'deribit', 'BTC/USD:BTC')
    >>> identify_book("bybit/xrpusdt-ob500.data.zip")
    ('book_bybit', '', 'XRP/USDT:USDT')
    >>> identify_book("btcusdt-depth-update.csv")
    ('book_binance_depth', '', 'BTC/USDT')
    """
    name = Path(path).name
    stem = re.sub(r"\.(csv\.gz|csv|data\.zip|data|jsonl\.gz|jsonl)$", "", name, flags=re.I)
    if stem == name:
        return None
    if m := re.fullmatch(r"([A-Za-z0-9]+)-depth-(?:snap|snapshot|update)", stem):
        return "book_binance_depth", "", formats.split_symbol(m.group(1))
    if m := re.fullmatch(r"([a-z0-9-]+)_(book_snapshot_\d+|incremental_book_L2)_(.+)", stem):
        exch = m.group(1)
        venue = formats._VENUE_ALIASES.get(exch, exch)
        fmt = "book_tardis_snapshot" if m.group(2).startswith("book_snapshot") else "book_tardis_incremental"
        return fmt, venue, _tardis_symbol(m.group(3))
    if m := re.fullmatch(r"(?:\d{4}-\d{2}-\d{2}_)?([A-Za-z0-9]+)[-_]ob\d+", stem):
        sym = formats.split_symbol(m.group(1))
        # Bybit keeps 500-level books for derivatives only (spot: 1, 50, 200): USDT/USDC pairs are linear perpetuals
        quote = sym.split("/")[-1] if sym else ""
        return "book_bybit", "", f"{sym}:{quote}" if quote in ("USDT", "USDC") else sym
    return None


def _tardis_symbol(s: str) -> str:
    if m := re.fullmatch(r"([A-Z0-9]+)-PERPETUAL", s.upper()):  # Deribit inverse perpetuals
        return f"{m.group(1)}/USD:{m.group(1)}"
    return formats.split_symbol(s)


# --------------------------------------------------------------------------------------------------
# lines of a file


def _open_text(path: str) -> IO[str]:
    lower = path.lower()
    if lower.endswith(".zip"):
        zf = zipfile.ZipFile(path)
        members = [n for n in zf.namelist() if not n.endswith("/")]
        if len(members) != 1:
            raise DataSourceError(path, f"a zipped book file holds one file, this one {len(members)}")
        return io.TextIOWrapper(zf.open(members[0]), encoding="utf-8", errors="replace")
    if lower.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _lines(path: str) -> Iterator[tuple[int, str]]:
    """(0-based line, text) of the non-blank lines."""
    with _open_text(path) as f:
        for i, line in enumerate(f):
            if line.strip():
                yield i, line.rstrip("\r\n")


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"


def _num(text: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"unparseable {what}: {text.strip()[:40]!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"non-finite {what}: {text.strip()[:40]!r}")
    return v


def _level(price: str, amount: str) -> Level:
    p, a = _num(price, "price"), _num(amount, "amount")
    if p <= 0:
        raise ValueError(f"non-positive price: {p!r}")
    if a < 0:
        raise ValueError(f"negative amount: {a!r}")
    return p, a


def _int(text: str, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"unparseable {what}: {text.strip()[:40]!r}") from None


# --------------------------------------------------------------------------------------------------
# readers: each yields BookUpdate and BadRecord in file order


def read_book(path: str, fmt: str = "", instrument: str = "") -> Iterator[BookUpdate | BadRecord]:
    """Read an order-book file (`fmt` and `instrument` told from the name when empty)."""
    if not fmt or not instrument:
        got = identify_book(path)
        if got is None:
            raise DataSourceError(path, "not an order-book file layout headrace knows (see docs/data.md)")
        fmt = fmt or got[0]
        instrument = instrument or f"{got[1] or formats._venue_from_path(Path(path))}:{got[2]}"
    readers = {"book_binance_depth": _binance_depth, "book_tardis_snapshot": _tardis_snapshot,
               "book_tardis_incremental": _tardis_incremental, "book_bybit": _bybit}
    if fmt not in readers:
        raise DataSourceError(path, f"no order-book reader for format {fmt!r}")
    return readers[fmt](path, instrument)


def _csv_rows(path: str) -> tuple[list[str], Iterator[tuple[int, str]]]:
    lines = _lines(path)
    first = next(lines, None)
    if first is None:
        return [], iter(())
    header = [c.strip().strip('"') for c in first[1].split(",")]
    # data rows numbered from 0 after the header, as sources.formats numbers them
    return header, ((i - first[0] - 1, text) for i, text in lines)


def _need(path: str, header: list[str], cols: Iterable[str]) -> dict[str, int]:
    missing = [c for c in cols if c not in header]
    if missing:
        raise DataSourceError(path, _short(f"columns {missing!r} are missing (columns: {header!r})"))
    return {c: header.index(c) for c in header}


class _Group:
    """The level rows of one message being gathered."""

    def __init__(self, key: tuple[Any, ...], ts: int, ts_recv: int) -> None:
        self.key, self.ts, self.ts_recv = key, ts, ts_recv
        self.bids: list[Level] = []
        self.asks: list[Level] = []


def _binance_depth(path: str, instrument: str) -> Iterator[BookUpdate | BadRecord]:
    header, rows = _csv_rows(path)
    if not header:
        return
    ix = _need(path, header, ("timestamp", "first_update_id", "last_update_id", "side", "update_type", "price", "qty"))
    has_pu = "pu" in ix
    g: _Group | None = None
    last_row = -1

    def flush(grp: _Group) -> BookUpdate:
        kind, first, last, pu = grp.key[1], grp.key[2], grp.key[3], grp.key[4]
        if kind == "snap":
            return BookUpdate(instrument, grp.ts, grp.ts_recv, "snapshot", last, last, None,
                              tuple(grp.bids), tuple(grp.asks), last_row)
        return BookUpdate(instrument, grp.ts, grp.ts_recv, "delta", first, last, pu if pu is not None and pu >= 0
                          else None, tuple(grp.bids), tuple(grp.asks), last_row)

    for row, text in rows:
        f = text.split(",")
        try:
            if len(f) < len(header):
                raise ValueError(f"{len(f)} fields, the header names {len(header)}")
            ts = _int(f[ix["timestamp"]], "timestamp") * _MS
            first, last = _int(f[ix["first_update_id"]], "first_update_id"), _int(f[ix["last_update_id"]],
                                                                                 "last_update_id")
            pu = _int(f[ix["pu"]], "pu") if has_pu and f[ix["pu"]].strip() else None
            kind = f[ix["update_type"]].strip().lower()
            if kind not in ("snap", "set"):
                raise ValueError(f"unknown update_type {kind[:20]!r} (snap or set)")
            side = f[ix["side"]].strip().lower()
            if side not in ("a", "b", "ask", "bid"):
                raise ValueError(f"unknown side {side[:20]!r} (a or b)")
            lvl = _level(f[ix["price"]], f[ix["qty"]])
        except ValueError as e:
            yield BadRecord(path, row, _short(str(e)), _short(text), None)
            last_row = row
            continue
        key = (ts, kind, first, last, pu)
        if g is not None and g.key != key:
            yield flush(g)
            g = None
        if g is None:
            g = _Group(key, ts, ts)
        (g.bids if side.startswith("b") else g.asks).append(lvl)
        last_row = row
    if g is not None:
        yield flush(g)


def _tardis_row(text: str, header: Sequence[str], ix: Mapping[str, int]) -> tuple[list[str], int, int]:
    """Split a tardis CSV row; return its fields and its exchange and local times in ns (ValueError if bad)."""
    f = text.split(",")
    if len(f) < len(header):
        raise ValueError(f"{len(f)} fields, the header names {len(header)}")
    return f, _int(f[ix["timestamp"]], "timestamp") * _US, _int(f[ix["local_timestamp"]], "local_timestamp") * _US


def _tardis_snapshot(path: str, instrument: str) -> Iterator[BookUpdate | BadRecord]:
    header, rows = _csv_rows(path)
    if not header:
        return
    ix = _need(path, header, ("timestamp", "local_timestamp", "asks[0].price", "bids[0].price"))
    n = sum(1 for c in header if re.fullmatch(r"asks\[\d+\]\.price", c))
    cols = [(ix[f"bids[{i}].price"], ix[f"bids[{i}].amount"], ix[f"asks[{i}].price"], ix[f"asks[{i}].amount"])
            for i in range(n) if f"bids[{i}].amount" in ix and f"asks[{i}].amount" in ix]
    for row, text in rows:
        try:
            f, ts, recv = _tardis_row(text, header, ix)
            bids, asks = [], []
            for bp, ba, ap, aa in cols:  # tardis leaves the fields of missing levels empty
                if f[bp].strip():
                    bids.append(_level(f[bp], f[ba]))
                if f[ap].strip():
                    asks.append(_level(f[ap], f[aa]))
        except ValueError as e:
            yield BadRecord(path, row, _short(str(e)), _short(text), None)
            continue
        yield BookUpdate(instrument, ts, recv, "snapshot", None, None, None, tuple(bids), tuple(asks), row)


def _tardis_incremental(path: str, instrument: str) -> Iterator[BookUpdate | BadRecord]:
    header, rows = _csv_rows(path)
    if not header:
        return
    ix = _need(path, header, ("timestamp", "local_timestamp", "is_snapshot", "side", "price", "amount"))
    g: _Group | None = None
    last_row = -1

    def flush(grp: _Group) -> BookUpdate:
        return BookUpdate(instrument, grp.ts, grp.ts_recv, "snapshot" if grp.key[0] else "delta", None, None, None,
                          tuple(grp.bids), tuple(grp.asks), last_row)

    for row, text in rows:
        try:
            f, ts, recv = _tardis_row(text, header, ix)
            snap_text = f[ix["is_snapshot"]].strip().lower()
            if snap_text not in ("true", "false"):
                raise ValueError(f"is_snapshot is {snap_text[:20]!r}, not true or false")
            side = f[ix["side"]].strip().lower()
            if side not in ("bid", "ask"):
                raise ValueError(f"unknown side {side[:20]!r} (bid or ask)")
            lvl = _level(f[ix["price"]], f[ix["amount"]])
        except ValueError as e:
            yield BadRecord(path, row, _short(str(e)), _short(text), None)
            last_row = row
            continue
        snap = snap_text == "true"
        key: tuple[Any, ...] = (True,) if snap else (False, ts, recv)  # a run of snapshot rows is one snapshot
        if g is not None and g.key != key:
            yield flush(g)
            g = None
        if g is None:
            g = _Group(key, ts, recv)
        (g.bids if side == "bid" else g.asks).append(lvl)
        last_row = row
    if g is not None:
        yield flush(g)


def _bybit(path: str, instrument: str) -> Iterator[BookUpdate | BadRecord]:
    for row, text in _lines(path):
        try:
            msg = json.loads(text)
            if not isinstance(msg, dict) or not isinstance(msg.get("data"), dict):
                raise ValueError("not a Bybit orderbook message (no 'data' object)")
            kind = msg.get("type")
            if kind not in ("snapshot", "delta"):
                raise ValueError(f"type is {str(kind)[:20]!r}, not snapshot or delta")
            data = msg["data"]
            ts = _int(str(msg.get("ts")), "ts") * _MS
            cts = msg.get("cts")
            event = _int(str(cts), "cts") * _MS if cts is not None else ts
            u = _int(str(data.get("u")), "u")
            sides = []
            for k in ("b", "a"):
                raw = data.get(k, [])
                if not isinstance(raw, list) or not all(isinstance(x, list) and len(x) >= 2 for x in raw):
                    raise ValueError(f"'{k}' is not a list of [price, size]")
                sides.append(tuple(_level(str(x[0]), str(x[1])) for x in raw))
        except (ValueError, RecursionError) as e:  # json.JSONDecodeError is a ValueError
            yield BadRecord(path, row, _short(f"{type(e).__name__}: {e}" if isinstance(e, json.JSONDecodeError)
                                              else str(e)), _short(text), None)
            continue
        yield BookUpdate(instrument, event, ts, "snapshot" if kind == "snapshot" else "delta", u, u, None, sides[0],
                         sides[1], row)


# --------------------------------------------------------------------------------------------------
# replay


def replay_book(items: Iterable[BookUpdate | BadRecord], *, depth: int = 0, builder: BookBuilder | None = None,
                ) -> Iterator[BookQuote | BookIssue | BadRecord]:
    """Apply `items` in order; yield a `BookQuote` whenever the top (with `depth` > 0: the top `depth` levels
    of each side) changes, each gap or crossed book the builder reports (`BookIssue`), and the bad records.

    A delta before the first snapshot, or after a gap until the next one, yields nothing (the builder counts
    it in `skipped`).
    """
    b = builder
    last: tuple[Any, ...] | None = None
    for it in items:
        if isinstance(it, BadRecord):
            yield it
            continue
        if b is None:
            b = BookBuilder(it.instrument)
        events = b.update(it)
        if events:
            last = None  # the first quote after a resync is always emitted
            yield from (BookIssue(e, it.row) for e in events)
            continue
        top = b.top()
        if top is None:
            continue
        bids = b.levels("bid", depth) if depth else ()
        asks = b.levels("ask", depth) if depth else ()
        now = (top, bids, asks)
        if now != last:
            last = now
            yield BookQuote(it.instrument, it.ts_event, it.ts_recv, top[0], top[2], top[1], top[3], it.row, bids, asks)


def replay_file(path: str, *, depth: int = 0, fmt: str = "", instrument: str = "",
                ) -> Iterator[BookQuote | BookIssue | BadRecord]:
    """`replay_book` of `read_book(path)`."""
    return replay_book(read_book(path, fmt, instrument), depth=depth)


# --------------------------------------------------------------------------------------------------
# levels as columns


def levels_dtype(depth: int = BOOK_DEPTH) -> np.dtype[np.void]:
    """The element type of `QuoteChunk.bid_levels` / `ask_levels`: ``price`` and ``amount``, `depth` each."""
    return np.dtype([("price", np.float64, (depth,)), ("amount", np.float64, (depth,))])


def levels_array(sides: Iterable[tuple[Level, ...]], depth: int = BOOK_DEPTH) -> npt.NDArray[np.void]:
    """One element per side (levels best first), padded with NaN beyond its levels.

    Examples
    --------
    >>> a = levels_array([((2.0, 1.5), (1.0, 3.0)), ()], depth=3)
    >>> a["price"].tolist(), a["amount"][0].tolist()
    ([[2.0, 1.0, nan], [nan, nan, nan]], [1.5, 3.0, nan])
    """
    rows = list(sides)
    grid = np.full((len(rows), depth, 2), np.nan)
    for i, lv in enumerate(rows):
        if lv:
            grid[i, : min(len(lv), depth)] = lv[:depth]
    return levels_from_grid(grid)


def levels_from_grid(grid: npt.NDArray[np.float64]) -> npt.NDArray[np.void]:
    """The structured levels of a (rows, depth, 2) array of (price, amount)."""
    out = np.empty(grid.shape[0], levels_dtype(grid.shape[1]))
    out["price"], out["amount"] = grid[:, :, 0], grid[:, :, 1]
    return out


def level_tuples(element: np.void) -> tuple[Level, ...]:
    """The levels ``(price, amount)`` of one element of `levels_array`, without the padding.

    Examples
    --------
    >>> level_tuples(levels_array([((2.0, 1.5),)], depth=2)[0])
    ((2.0, 1.5),)
    """
    prices, amounts = element["price"], element["amount"]
    n = int(np.count_nonzero(~np.isnan(prices)))
    return tuple(zip(prices[:n].tolist(), amounts[:n].tolist()))


# --------------------------------------------------------------------------------------------------
# the bridge to sources.formats: quote frames


def quote_frames(spec: FileSpec, options: ReadOptions, batch_rows: int | None,
                 start_row: int) -> Iterator[ParsedFrame]:
    """The quotes of a book file as `ParsedFrame`s of kind quote, `batch_rows` output rows at a time from output
    row `start_row` (the book is always rebuilt from the start of the file).

    One output row per emitted quote, gap, crossed book and bad record, in file order; ``row`` is the
    data row (line) that completed the message. Gaps, crossed books and bad records are rows with a
    ``problem`` (quarantined downstream); quotes stamped outside the plausibility window too. A quote is
    emitted whenever one of the top `BOOK_DEPTH` levels changes; columns ``bid_levels`` and ``ask_levels``
    (``Array(Float64, (BOOK_DEPTH, 2))``: price, amount; NaN padding, and all NaN in problem rows) hold
    them. A quote that changes only deeper levels at the same event time as the quote before it replaces
    that quote (the two would otherwise have the same top at the same time: a duplicate to the validator).
    """
    inst = f"{spec.venue}:{spec.symbol}"
    items = replay_file(spec.path, fmt=spec.format, instrument=inst, depth=BOOK_DEPTH)
    lo, hi = options.earliest_ns, options.latest_ns
    buf: list[tuple[Any, ...]] = []
    n = 0
    any_out = False
    for rec in _coalesced(items, lo, hi, options.window):
        n += 1
        if n <= start_row:
            continue
        buf.append(rec)
        if batch_rows is not None and len(buf) >= batch_rows:
            yield _frame(spec, inst, buf)
            any_out = True
            buf = []
    if buf or (not any_out and batch_rows is None):
        yield _frame(spec, inst, buf)


def _coalesced(items: Iterable[BookQuote | BookIssue | BadRecord], lo: int, hi: int,
               window: str) -> Iterator[tuple[Any, ...]]:
    # output records; a quote is held back until the next item shows it is not replaced by a deeper-only change
    pending: BookQuote | None = None

    def quote_rec(q: BookQuote) -> tuple[Any, ...]:
        problem = None
        if not lo <= q.ts_event <= hi:
            problem = f"timestamp out of range: {q.ts_event} ns is outside {window}"
        return (q.ts_event, q.ts_recv, q.bid, q.ask, q.bid_size, q.ask_size, q.row, problem,
                None if problem is None else json.dumps({"ts_event": q.ts_event}), q.bids, q.asks)

    for it in items:
        if isinstance(it, BookQuote):
            if pending is not None and (pending.ts_event, pending.bid, pending.ask, pending.bid_size,
                                        pending.ask_size) == (it.ts_event, it.bid, it.ask, it.bid_size, it.ask_size):
                pending = it
                continue
            if pending is not None:
                yield quote_rec(pending)
            pending = it
            continue
        if pending is not None:
            yield quote_rec(pending)
            pending = None
        if isinstance(it, BadRecord):
            yield (it.ts_event, it.ts_event, None, None, None, None, it.row, it.reason, json.dumps({"line": it.raw}),
                   (), ())
        else:
            ev = it.event
            raw = json.dumps({"event": type(ev).__name__, **dataclasses.asdict(ev)})
            yield (ev.ts, ev.ts, None, None, None, None, it.row, ev.reason, raw, (), ())
    if pending is not None:
        yield quote_rec(pending)


_SCHEMA = {"ts_event": pl.Int64, "ts_recv": pl.Int64, "bid": pl.Float64, "ask": pl.Float64, "bid_size": pl.Float64,
           "ask_size": pl.Float64, "row": pl.Int64, "problem": pl.Utf8, "raw": pl.Utf8}


def _frame(spec: FileSpec, inst: str, recs: list[tuple[Any, ...]]) -> ParsedFrame:
    df = pl.DataFrame([r[:-2] for r in recs], schema=_SCHEMA, orient="row")
    for i, name in ((-2, "bid_levels"), (-1, "ask_levels")):
        grid = np.full((len(recs), BOOK_DEPTH, 2), np.nan)
        for j, r in enumerate(recs):
            if r[i]:
                grid[j, : len(r[i])] = r[i][:BOOK_DEPTH]
        df = df.with_columns(pl.Series(name, grid, dtype=pl.Array(pl.Float64, (BOOK_DEPTH, 2))))
    return formats.ParsedFrame(instrument=inst, kind="quote", timeframe_ns=0, path=spec.path, frame=df,
                               ts_unit=_TS_UNIT.get(spec.format, ""))


_TS_UNIT = {"book_binance_depth": "ms", "book_tardis_snapshot": "us", "book_tardis_incremental": "us",
            "book_bybit": "ms"}


def count_lines(path: str) -> int:
    """The non-blank lines of a book file: a cheap upper bound of the rows its replay gives (plus one)."""
    try:
        return sum(1 for _ in _lines(path))
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataSourceError(path, f"cannot count its rows: {_short(str(e))}") from None
