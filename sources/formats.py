"""Recorded market data files: find them, tell what each holds, and parse them into normalised frames.

Pure polars, no Bytewax. `read_paths` turns files and folders into `ParsedFrame`s, one per instrument
and file, in one of three normalised schemas (all times integer UTC epoch ns; rows in file order):

- bar:   ts_open, ts_event (= ts_open + timeframe, the close), ts_recv, open, high, low, close, volume
- trade: ts_event, ts_recv, price, amount, side (+1 buy, -1 sell, 0 unknown; the taker), trade_id
- quote: ts_event, ts_recv, bid, ask, bid_size, ask_size (order books add bid_levels, ask_levels: the top
  `sources.book_files.BOOK_DEPTH` levels, ``Array(Float64, (depth, 2))`` of price and amount, NaN padded)
- mark:  ts_event (the mark-price candle's close = its open + timeframe), ts_recv, price (the candle's close)
- funding: ts_event (the funding time), ts_recv, rate (freqtrade keeps it in ``open``)

plus ``row`` (0-based data row in the file), ``problem`` (null, or why the row is unusable) and ``raw``
(the row as read, JSON, for rows with a problem). The checks that need no memory of other rows run
here, vectorised: missing or unparseable fields, times outside the plausibility window, non-finite,
non-positive or implausible values, high < low, open or close outside [low, high], crossed quotes.
`iter_file` reads one file in batches. See docs/data.md for the layouts, time units and date formats.
"""

from __future__ import annotations

import collections
import functools
import gzip
import importlib.util
import io
import itertools
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal, cast

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.ipc as pa_ipc
import pyarrow.parquet as pq

from headrace.config import parse_timeframe
from headrace.errors import ConfigError, DataSourceError

if TYPE_CHECKING:
    from headrace.config import Config

Kind = Literal["bar", "trade", "quote", "mark", "funding"]
MAX_FUNDING_RATE = 0.05  # a funding rate at or beyond this (5 % per period) is not plausible

_EXTS = (".csv", ".csv.gz", ".parquet", ".feather", ".arrow", ".ipc", ".data.zip")  # .data.zip: Bybit order books
_QUOTES = ("USDT", "USDC", "BUSD", "TUSD", "FDUSD", "USD", "EUR", "GBP", "JPY", "AUD", "TRY", "BTC", "ETH", "BNB",
           "XBT", "DAI")
_ALIASES = {"XBT": "BTC", "XDG": "DOGE"}
_PAST_VENUES = {"bittrex", "ftx", "binanceus", "huobi", "poloniex"}  # venues ccxt no longer lists
_VENUE_ALIASES = {"binance-futures": "binanceusdm", "binance-delivery": "binancecoinm", "huobi-dm-swap": "huobi",
                  "bitmex": "bitmex", "deribit": "deribit"}


@dataclass(frozen=True, slots=True)
class FileSpec:
    """What one file holds: its format, kind, venue, symbol and (bars) timeframe."""

    path: str
    format: str
    kind: Kind
    venue: str
    symbol: str  # "" when the file carries a symbol column
    timeframe_ns: int  # bars only
    column: str = ""  # wide price tables: the one price column this spec reads ("" before `wide_specs`)


@dataclass(frozen=True, slots=True)
class ParsedFrame:
    """One instrument's rows from one file, normalised (see module docstring)."""

    instrument: str
    kind: Kind
    timeframe_ns: int
    path: str
    frame: pl.DataFrame
    ts_unit: str = ""  # how its times were read: s, ms, us, ns (epochs), iso, date_format or datetime


# --------------------------------------------------------------------------------------------------
# finding and identifying files


def discover(paths: Sequence[str]) -> list[str]:
    """Expand files and folders (recursively) into a sorted list of data files."""
    out: set[str] = set()
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise DataSourceError(str(p), "does not exist")
        cands = [path] if path.is_file() else [x for x in path.rglob("*") if x.is_file()]
        for f in cands:
            name = f.name.lower()
            if name.startswith((".", "metadata")) or not name.endswith(_EXTS):
                continue
            out.add(str(f))
    return sorted(out)


@functools.cache
def known_venues() -> frozenset[str]:
    """Return the ccxt exchange ids (and past venues) a folder name may be.

    ccxt keeps one module per exchange (``ccxt/binance.py``); listing them costs a directory read where
    ``import ccxt`` costs 0.3 s per command. `tests/data` checks the list equals ``ccxt.exchanges``.
    """
    spec = importlib.util.find_spec("ccxt")
    if spec is None or spec.origin is None:  # pragma: no cover - ccxt is a dependency
        return frozenset(_PAST_VENUES)
    modules = {p.stem for p in Path(spec.origin).parent.glob("*.py") if not p.stem.startswith("_")}
    return frozenset(modules | _PAST_VENUES)


def _venue_from_path(path: Path) -> str:
    known = known_venues()
    for part in reversed(path.parent.parts):
        p = part.lower()
        if p in _VENUE_ALIASES:
            return _VENUE_ALIASES[p]
        if p in known:
            return p
    return ""


def _asset(a: str) -> str:
    a = a.upper()
    return _ALIASES.get(a, a)


def split_symbol(s: str) -> str:
    """Return the ccxt symbol of a venue symbol (``BTCUSDT``, ``XBTUSD``, ``BTC-USD``, ``ETH_BTC``), or "".

    Examples
    --------
    >>> split_symbol("XBTUSD"), split_symbol("adabtc"), split_symbol("BTC-USD"), split_symbol("XRP_USDT_USDT")
    ('BTC/USD', 'ADA/BTC', 'BTC/USD', 'XRP/USDT:USDT')
    """
    s = s.upper()
    parts = re.split(r"[-_/]", s)
    if len(parts) == 3 and all(parts):
        return f"{_asset(parts[0])}/{_asset(parts[1])}:{_asset(parts[2])}"
    if len(parts) == 2 and all(parts):
        return f"{_asset(parts[0])}/{_asset(parts[1])}"
    for q in sorted(_QUOTES, key=len, reverse=True):
        if s.endswith(q) and len(s) - len(q) >= 3:  # XBTUSD is XBT/USD, not XB/TUSD
            return f"{_asset(s[: -len(q)])}/{_asset(q)}"
    return ""


def identify(path: str, *, venue: str = "", symbol: str = "", timeframe: str = "") -> FileSpec:
    """Tell what `path` holds from its name, its folders and (for tick files) its columns.

    `venue`, `symbol` and `timeframe` override what the path says. Raises `DataSourceError`, naming the
    file, when the format, venue or symbol cannot be told.
    """
    p = Path(path)
    if book := _book_spec(path, venue, symbol):  # order books replay as the quotes of their top of book
        return book
    name = p.name
    stem = re.sub(r"\.(csv\.gz|csv|parquet|feather|arrow|ipc)$", "", name, flags=re.I)
    ext = name[len(stem):].lower()
    v = venue or _venue_from_path(p)
    fmt: str
    kind: Kind
    sym, tf = "", ""
    if m := re.fullmatch(r"([A-Za-z0-9]+(?:_[A-Za-z0-9]+){1,2})-(\d+[smhdwM])(?:-(futures|mark|funding_rate|spot))?",
                         stem):
        fmt, kind, sym, tf = "ohlcv_frame", "bar", split_symbol(m.group(1)), m.group(2)
        if m.group(3) == "mark":  # mark-price candles of a contract: they ride with its bars
            fmt, kind = "mark_frame", "mark"
        elif m.group(3) == "funding_rate":  # funding events of a perpetual contract
            fmt, kind, tf = "funding_frame", "funding", ""
    elif m := re.fullmatch(r"([A-Za-z0-9]+_[A-Za-z0-9]+)-trades", stem):
        fmt, kind, sym = "trades_frame", "trade", split_symbol(m.group(1))
    elif m := re.fullmatch(r"([A-Za-z0-9]+_[A-Za-z0-9]+)-quotes", stem):
        fmt, kind, sym = "quotes_frame", "quote", split_symbol(m.group(1))
    elif m := re.fullmatch(r"([A-Z0-9]+)_(\d+)", stem):  # Kraken OHLCVT: XBTUSD_5 (minutes)
        fmt, kind, sym, tf = "kraken_ohlcvt", "bar", split_symbol(m.group(1)), f"{m.group(2)}m"
        v = v or "kraken"
    elif m := re.fullmatch(r"([A-Z0-9]+)_(\d+[smhd])_\d{8}_\d{8}", stem):  # BTCUSD_1m_20230301_20230321
        fmt, kind, sym, tf = "ohlcv_csv_iso", "bar", split_symbol(m.group(1)), m.group(2)
    elif m := re.fullmatch(r"([A-Z0-9]+)-(\d+[smhd])-\d{4}-\d{2}-\d{2}", stem):  # Binance dump ADABTC-1m-2021-11-27
        fmt, kind, sym, tf = "binance_klines", "bar", split_symbol(m.group(1)), m.group(2)
    elif m := re.fullmatch(r"([a-z0-9]+)-(trades|quotes)", stem):  # btcusdt-trades.parquet
        fmt = "binance_trades" if m.group(2) == "trades" else "binance_quotes"
        kind = "trade" if m.group(2) == "trades" else "quote"
        sym = split_symbol(m.group(1))
    elif ("_trades_" in stem or "_quotes_" in stem) and ext == ".csv":  # tardis
        if "_trades_" in stem:
            fmt, kind = "tardis_trades", "trade"
        else:
            fmt, kind = "tardis_quotes", "quote"
        exch = stem.split("_")[0]
        v = venue or _VENUE_ALIASES.get(exch, exch)
        sym = split_symbol(stem.split("_")[-1])
    elif "book" in stem.lower() or "depth" in stem.lower():
        raise DataSourceError(path, "unknown order-book file layout (see docs/data.md, Order books)")
    elif re.fullmatch(r"[A-Z0-9]+", stem) and ext in (".csv", ".csv.gz"):  # Kraken trades: BCHEUR.csv
        fmt, kind, sym = "kraken_trades", "trade", split_symbol(stem)
    elif sniffed := _sniff(path, ext):  # any other name: tell the kind from the columns
        fmt, kind = sniffed
    else:
        raise DataSourceError(path, "unknown file layout (see docs/data.md for the layouts headrace reads)")
    sym = symbol or sym
    if not v:
        raise DataSourceError(path, "cannot tell the venue from the path; "
                                    "pass --venue <ccxt id> (config: replay.venue)")
    if not sym and fmt != WIDE:  # a wide table's symbols come with the quote (`wide_specs`)
        raise DataSourceError(path, "cannot tell the symbol from the path; "
                                    "pass --symbol BASE/QUOTE (config: replay.symbol)")
    tf_ns = 0  # bars of a file whose name gives no length: inferred from the data when read
    if kind == "mark":  # the candle length comes from the name (--timeframe chooses bars, not marks)
        tf_ns = parse_timeframe(tf)
    elif kind == "bar" and (timeframe or tf):
        try:
            tf_ns = parse_timeframe(timeframe or tf)
        except ValueError as e:
            raise DataSourceError(path, str(e)) from e
    if fmt == WIDE:
        sym = ""  # one instrument per column
    return FileSpec(path=path, format=fmt, kind=kind, venue=v.lower(), symbol=sym, timeframe_ns=tf_ns)


def _book_spec(path: str, venue: str, symbol: str) -> FileSpec | None:
    from sources import book_files  # it reads through this module

    got = book_files.identify_book(path)
    if got is None:
        return None
    fmt, v, sym = got
    v = venue or v or _venue_from_path(Path(path))
    sym = symbol or sym
    if not v or not sym:
        raise DataSourceError(path, "cannot tell the venue or symbol of this order book from the path; "
                                    "pass --venue <ccxt id> and --symbol BASE/QUOTE")
    return FileSpec(path=path, format=fmt, kind="quote", venue=v.lower(), symbol=sym, timeframe_ns=0)


def _sniff(path: str, ext: str) -> tuple[str, Kind] | None:
    # the format and kind of a file with a header, from its column names; None when they say nothing
    try:
        if ext in (".feather", ".arrow", ".ipc"):
            cols = set(pl.read_ipc_schema(path))
        elif ext == ".parquet":
            cols = set(pl.read_parquet_schema(path))
        else:
            cols = set(pl.read_csv(path, n_rows=0, infer_schema=False).columns)
    except (Exception, pl.exceptions.PanicException) as e:  # noqa: BLE001 - any reader error: not a file we can tell
        raise DataSourceError(path, f"cannot read its columns: {_short(e)}") from None
    if {"open", "high", "low", "close", "volume"} <= cols and cols & {"date", "timestamp"}:
        return "ohlcv_frame", "bar"
    if {"timestamp", "price", "amount"} <= cols:
        return "trades_frame", "trade"
    if {"timestamp", "bid", "ask", "bid_size", "ask_size"} <= cols:
        return "quotes_frame", "quote"
    if ext in (".parquet", ".feather", ".arrow", ".ipc") and _wide_columns(path, ext):
        return WIDE, "bar"
    return None


# --------------------------------------------------------------------------------------------------
# wide price tables: one time column, one close-price column per asset

WIDE = "wide_close"
_WIDE_TIME = ("date", "datetime", "time", "timestamp")


def _wide_columns(path: str, ext: str) -> tuple[str, list[str]] | None:
    # (time column, asset columns) of a typed file laid out as a wide price table; None when it is not one
    schema = pl.read_parquet_schema(path) if ext == ".parquet" else pl.read_ipc_schema(path)
    names = list(schema)
    if len(names) < 2 or names[0].lower() not in _WIDE_TIME:
        return None
    t = schema[names[0]]
    if not (t.is_temporal() or t.is_integer()):
        return None
    assets = names[1:]
    if not all(schema[a].is_float() and re.fullmatch(r"[A-Za-z0-9]+", a) for a in assets):
        return None
    return names[0], assets


def wide_specs(spec: FileSpec, options: ReadOptions | None = None) -> list[FileSpec]:
    """Return one spec per asset column of a wide price table (`spec` itself for any other file).

    Each column is the instrument ``venue:ASSET/QUOTE``; the quote comes from `options` (replay.quote,
    ``--quote``): a table names its assets, not the currency they are priced in.
    """
    if spec.format != WIDE or spec.column:
        return [spec]
    quote = (options or ReadOptions()).quote
    if not quote:
        raise DataSourceError(spec.path, "a wide price table names its assets, not their quote currency; "
                                         "pass --quote <QUOTE> (config: replay.quote)")
    got = _wide_columns(spec.path, Path(spec.path).suffix.lower())
    if got is None:  # pragma: no cover - identify() said it was one
        raise DataSourceError(spec.path, "is not a wide price table")
    return [FileSpec(path=spec.path, format=WIDE, kind="bar", venue=spec.venue, symbol=f"{_asset(a)}/{_asset(quote)}",
                     timeframe_ns=spec.timeframe_ns, column=a) for a in got[1]]


def wide_count(spec: FileSpec) -> int:
    """Return the bars of one column of a wide price table: its non-null prices."""
    scan = pl.scan_parquet(spec.path) if spec.path.lower().endswith(".parquet") else pl.scan_ipc(spec.path)
    return int(scan.select(pl.col(spec.column).count()).collect().item())


def _wide_iter(spec: FileSpec, options: ReadOptions, batch_rows: int | None,
               start_row: int) -> Iterator[ParsedFrame]:
    # every column of the table (whole, read once); `start_row` counts the column's bars, not the file's rows
    specs = wide_specs(spec, options)
    ext = Path(spec.path).suffix.lower()
    got = _wide_columns(spec.path, ext)
    assert got is not None
    ts_col = got[0]
    cols = [ts_col, *dict.fromkeys(s.column for s in specs)]
    df = pl.read_parquet(spec.path, columns=cols) if ext == ".parquet" else pl.read_ipc(spec.path, columns=cols)
    plan = _decide_times(df.head(_HEAD_ROWS), ts_col, options)
    layout = _Layout({"ts_open": (ts_col, "ts"), "open": ("close", "float"), "high": ("close", "float"),
                      "low": ("close", "float"), "close": ("close", "float"), "volume": ("volume", "float")})
    tf = spec.timeframe_ns
    if tf == 0:  # the spacing of the table's times
        times = _normalise(df.select(ts_col, pl.lit(1.0).alias("close"), pl.lit(0.0).alias("volume")), layout,
                           "bar", 0, plan, options, 0)
        try:
            tf = infer_timeframe(times.filter(pl.col("problem").is_null())["ts_open"])
        except ValueError as e:
            raise DataSourceError(spec.path, str(e)) from e
    for s in specs:
        listed = df.select(pl.int_range(pl.len(), dtype=pl.Int64).alias("__file_row"), ts_col,
                           pl.col(s.column).alias("close"), pl.lit(0.0).alias("volume")
                           ).filter(pl.col("close").is_not_null())  # null: not listed yet (or not then)
        norm = _normalise(listed.drop("__file_row"), layout, "bar", tf, plan, options, 0)
        norm = norm.with_columns(listed["__file_row"].alias("row"))  # rows of the file, as quarantine reports them
        inst = f"{s.venue}:{s.symbol}"
        step = batch_rows or max(norm.height, 1)
        for a in range(start_row, max(norm.height, 1 if batch_rows is None else 0), step):
            yield ParsedFrame(instrument=inst, kind="bar", timeframe_ns=tf, path=spec.path,
                              frame=norm.slice(a, step), ts_unit=plan.unit)


def infer_timeframe(ts_open: pl.Series) -> int:
    """Return the bar length of bars opening at `ts_open` (ns): the most common step between them.

    Examples
    --------
    >>> infer_timeframe(pl.Series([0, 60, 120, 300, 360]))
    60
    """
    steps = ts_open.drop_nulls().sort().diff().drop_nulls()
    steps = steps.filter(steps > 0)
    if steps.len() == 0:
        raise ValueError("fewer than two bars: cannot tell the bar length")
    counts = steps.value_counts(sort=True)
    return int(counts[counts.columns[0]][0])


# --------------------------------------------------------------------------------------------------
# reader options


def date_ns(text: str, key: str = "validation.earliest") -> int:
    """Return the UTC epoch ns of an ISO 8601 date or time (naive means UTC); `ConfigError` names `key`.

    Examples
    --------
    >>> date_ns("2009-01-03")
    1230940800000000000
    """
    try:
        d = datetime.fromisoformat(text)
    except (TypeError, ValueError) as e:
        raise ConfigError(key, f"must be an ISO 8601 date such as '2009-01-03', was {text!r}") from e
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return (d - _EPOCH) // timedelta(microseconds=1) * 1000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNITS = ("s", "ms", "us", "ns")
_SCALE = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1, "d": 86_400 * 10**9}


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """How to read times: the unit of integer epochs, the format of non-ISO text, the plausibility window.

    `timestamp_unit` is ``auto`` (told from the magnitude, per file) or one of s, ms, us, ns; `date_format`
    is a strftime format for text times that are not ISO 8601 ("" accepts ISO 8601 only); rows stamped
    outside ``[earliest_ns, latest_ns]`` are quarantined as ``timestamp out of range``.
    """

    timestamp_unit: str = "auto"
    date_format: str = ""
    earliest_ns: int = 1_230_940_800 * 10**9  # 2009-01-03
    latest_ns: int = 4_102_444_800 * 10**9  # 2100-01-01
    quote: str = ""  # quote currency of wide price tables (replay.quote)

    def __post_init__(self) -> None:
        if self.timestamp_unit not in ("auto", *_UNITS):
            raise ConfigError("replay.timestamp_unit",
                              f"must be one of auto, s, ms, us, ns, was {self.timestamp_unit!r}")
        if not self.earliest_ns < self.latest_ns:
            raise ConfigError("validation.earliest", f"must be before validation.latest, was {_iso(self.earliest_ns)} "
                                                     f"and {_iso(self.latest_ns)}")

    @classmethod
    def from_config(cls, config: Config) -> ReadOptions:
        """Return the options of `config` (keys replay.timestamp_unit, replay.date_format, validation.*)."""
        return cls(timestamp_unit=config.replay.timestamp_unit, date_format=config.replay.date_format,
                   earliest_ns=date_ns(config.validation.earliest, "validation.earliest"),
                   latest_ns=date_ns(config.validation.latest, "validation.latest"), quote=config.replay.quote)

    @property
    def window(self) -> str:
        return f"[{_iso(self.earliest_ns)}, {_iso(self.latest_ns)}] (validation.earliest, validation.latest)"


def _iso(ns: int) -> str:
    return (_EPOCH + timedelta(microseconds=ns // 1000)).strftime("%Y-%m-%d %H:%M:%S").removesuffix(" 00:00:00")


# --------------------------------------------------------------------------------------------------
# reading

_HEAD_ROWS = 10_000  # rows at the start of a file that decide its time unit and bar length
_SAMPLE = 1_000  # valid times that tell the unit of integer epochs
_MAX_ECHO = 200  # characters of a value echoed in a reason or an error
_PRICE_RANGE = (1e-15, 1e15)  # plausible prices (any quote currency)
_SIZE_MAX = 1e18  # plausible sizes and volumes (0 is allowed where it means "none")
_ISO_RX = (r"^(?P<date>\d{4}-\d{2}-\d{2})(?:[T ](?P<hm>\d{2}:\d{2})(?:(?P<sec>:\d{2})(?:[.,](?P<frac>\d{1,9}))?)?)?"
           r"\s*(?P<tz>Z|[+-]\d{2}(?::?\d{2})?)?$")
_NUM_RX = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"

_Parse = Literal["float", "ts", "ts_recv", "side", "buyer_maker", "str"]


@dataclass(frozen=True, slots=True)
class _Layout:
    # how one format's raw columns become the normalised ones
    spec: dict[str, tuple[str, _Parse]]  # target column -> (source column, how)
    optional: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _TimePlan:
    # how a file's times are read, decided once from its first rows
    mode: Literal["datetime", "epoch", "text"]
    unit: str  # epoch: s, ms, us or ns; text: "iso" or "date_format"; datetime: "datetime"


def _short(e: BaseException | str) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= _MAX_ECHO else text[:_MAX_ECHO] + "…"


def _csv_shape(fmt: str) -> list[str] | None:
    # column names of a headerless CSV format; None when the file has a header
    return {
        "kraken_ohlcvt": ["timestamp", "open", "high", "low", "close", "volume", "trades"],
        "binance_klines": ["open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume",
                           "trades", "taker_buy_base", "taker_buy_quote", "ignore"],
        "kraken_trades": ["timestamp", "price", "volume"],
    }.get(fmt)


_OHLCV: dict[str, tuple[str, _Parse]] = {
    "open": ("open", "float"), "high": ("high", "float"), "low": ("low", "float"), "close": ("close", "float"),
    "volume": ("volume", "float")}


def _layout(fmt: str, columns: Sequence[str]) -> _Layout:
    if fmt == "ohlcv_frame":
        return _Layout({"ts_open": ("date" if "date" in columns else "timestamp", "ts"), **_OHLCV})
    if fmt == "mark_frame":
        return _Layout({"ts_open": ("date" if "date" in columns else "timestamp", "ts"), "price": ("close", "float")})
    if fmt == "funding_frame":
        return _Layout({"ts_event": ("date" if "date" in columns else "timestamp", "ts"), "rate": ("open", "float")})
    if fmt == "kraken_ohlcvt":
        return _Layout({"ts_open": ("timestamp", "ts"), **_OHLCV})
    if fmt == "ohlcv_csv_iso":
        return _Layout({"ts_open": ("open_time", "ts"), **_OHLCV})
    if fmt == "binance_klines":
        return _Layout({"ts_open": ("open_time", "ts"), **_OHLCV})
    if fmt == "trades_frame":
        spec: dict[str, tuple[str, _Parse]] = {"ts_event": ("timestamp", "ts"), "price": ("price", "float"),
                                               "amount": ("amount", "float")}
        if "side" in columns:
            spec["side"] = ("side", "side")
        if "id" in columns:
            spec["trade_id"] = ("id", "str")
        return _Layout(spec, ("trade_id",))
    if fmt in ("quotes_frame", "binance_quotes"):
        return _Layout({"ts_event": ("timestamp", "ts"), "bid": ("bid", "float"), "ask": ("ask", "float"),
                        "bid_size": ("bid_size", "float"), "ask_size": ("ask_size", "float")})
    if fmt == "binance_trades":
        return _Layout({"ts_event": ("timestamp", "ts"), "price": ("price", "float"), "amount": ("quantity", "float"),
                        "side": ("buyer_maker", "buyer_maker"), "trade_id": ("trade_id", "str")}, ("trade_id",))
    if fmt == "kraken_trades":
        return _Layout({"ts_event": ("timestamp", "ts"), "price": ("price", "float"), "amount": ("volume", "float")})
    if fmt == "tardis_trades":
        return _Layout({"ts_event": ("timestamp", "ts"), "ts_recv": ("local_timestamp", "ts_recv"),
                        "price": ("price", "float"), "amount": ("amount", "float"), "side": ("side", "side"),
                        "trade_id": ("id", "str")}, ("trade_id",))
    if fmt == "tardis_quotes":
        return _Layout({"ts_event": ("timestamp", "ts"), "ts_recv": ("local_timestamp", "ts_recv"),
                        "bid": ("bid_price", "float"), "ask": ("ask_price", "float"),
                        "bid_size": ("bid_amount", "float"), "ask_size": ("ask_amount", "float")})
    raise DataSourceError("<frame>", f"no reader for format {fmt!r}")  # pragma: no cover - identify() returns these


# raw batches: every format as polars frames of at most `batch_rows` rows (None: one frame), from `start_row`


def _is_ipc(path: str) -> bool:
    return path.lower().endswith((".feather", ".arrow", ".ipc"))


def _raw_batches(path: str, fmt: str, batch_rows: int | None, start_row: int) -> Iterator[pl.DataFrame]:
    if _is_ipc(path):
        yield from _ipc_batches(path, batch_rows, start_row)
    elif path.lower().endswith(".parquet"):
        yield from _parquet_batches(path, batch_rows, start_row)
    else:
        yield from _csv_batches(path, fmt, batch_rows, start_row)


def _rebatch(tables: Iterator[pa.Table], batch_rows: int | None, start_row: int) -> Iterator[pl.DataFrame]:
    # arrow tables in file order -> polars frames of batch_rows rows from start_row (the only place they meet)
    pending: list[pa.Table] = []
    have, skip = 0, start_row
    for t in tables:
        if skip:
            if t.num_rows <= skip:
                skip -= t.num_rows
                continue
            t, skip = t.slice(skip), 0
        pending.append(t)
        have += t.num_rows
        while batch_rows is not None and have >= batch_rows:
            whole = pa.concat_tables(pending)
            yield _from_arrow(whole.slice(0, batch_rows))
            rest = whole.slice(batch_rows)
            pending, have = [rest], rest.num_rows
    if have or (batch_rows is None and not start_row):
        yield _from_arrow(pa.concat_tables(pending)) if pending else pl.DataFrame()


def _from_arrow(t: pa.Table) -> pl.DataFrame:
    df = pl.from_arrow(t.combine_chunks())
    assert isinstance(df, pl.DataFrame)
    return df


def _ipc_batches(path: str, batch_rows: int | None, start_row: int) -> Iterator[pl.DataFrame]:
    source = pa.memory_map(path, "r")
    try:
        reader = pa_ipc.open_file(source)
        tables: Iterator[pa.Table] = (_valid(pa.Table.from_batches([reader.get_batch(i)]))
                                      for i in range(reader.num_record_batches))
    except pa.ArrowInvalid:  # not the file format: maybe the stream format
        source.seek(0)
        stream = pa_ipc.open_stream(source)
        tables = (_valid(pa.Table.from_batches([b])) for b in stream)
    yield from _rebatch(tables, batch_rows, start_row)


def _valid(t: pa.Table) -> pa.Table:
    t.validate(full=True)  # a damaged file's offsets would otherwise be trusted (and read out of bounds)
    return t


def _parquet_batches(path: str, batch_rows: int | None, start_row: int) -> Iterator[pl.DataFrame]:
    # no pre-buffering: pyarrow would otherwise load every remaining row group at the first batch
    pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 16)
    groups: list[int] = []
    skip = start_row
    for g in range(pf.metadata.num_row_groups):  # whole row groups before start_row are never read
        n = pf.metadata.row_group(g).num_rows
        if skip >= n and not groups:
            skip -= n
            continue
        groups.append(g)
    if not groups:
        return
    tables = (pa.Table.from_batches([b]) for b in pf.iter_batches(batch_size=batch_rows or 65_536, row_groups=groups))
    yield from _rebatch(tables, batch_rows, skip)


def _csv_batches(path: str, fmt: str, batch_rows: int | None, start_row: int) -> Iterator[pl.DataFrame]:
    # Every field is text and quotes are not special, so one line is one row: the file streams by lines
    # (blank lines are no rows), each batch parsed with the header put back in front of it. A stray quote
    # spoils one field, never the rest of the file.
    names = _csv_shape(fmt)
    with _open_bytes(path) as f:
        lines = (ln for ln in f if ln.strip())
        header = b"" if names is not None else next(lines, b"")
        if names is None and not header:
            return
        if not header.endswith(b"\n"):
            header += b"\n"
        collections.deque(itertools.islice(lines, start_row), maxlen=0)  # skip to start_row
        any_rows = False
        while chunk := list(itertools.islice(lines, batch_rows)) if batch_rows else list(lines):
            any_rows = True
            yield _parse_csv(header, chunk, names)
            if batch_rows is None:
                return
        if not any_rows:
            yield _parse_csv(header, [], names)  # no rows: the columns alone


def _open_bytes(path: str) -> IO[bytes]:
    if path.lower().endswith(".gz"):
        return cast("IO[bytes]", gzip.open(path, "rb"))
    return open(path, "rb")


def _parse_csv(header: bytes, lines: list[bytes], names: list[str] | None) -> pl.DataFrame:
    body = b"".join(lines)
    if body and not body.endswith(b"\n"):
        body += b"\n"
    if names is not None:
        df = pl.read_csv(io.BytesIO(body), has_header=False, schema=dict.fromkeys(names, pl.Utf8),
                         truncate_ragged_lines=True, quote_char=None, encoding="utf8-lossy")
    else:
        df = pl.read_csv(io.BytesIO(header + body), has_header=True, infer_schema=False, truncate_ragged_lines=True,
                         quote_char=None, encoding="utf8-lossy")
        df = df.rename({c: c.strip().strip('"').strip() for c in df.columns})
    return df.with_columns(pl.col(pl.Utf8).str.strip_chars(' \t\r"'))


def _head(path: str, fmt: str) -> pl.DataFrame:
    first = next(iter(_raw_batches(path, fmt, _HEAD_ROWS, 0)), None)
    if first is not None:
        return first
    names = _csv_shape(fmt) or []
    return pl.DataFrame(schema=dict.fromkeys(names, pl.Utf8))


# deciding how a file's times read


def _infer_unit(values: npt.NDArray[np.float64], options: ReadOptions, col: str) -> str:
    v = values[np.isfinite(values) & (values > 0)][:_SAMPLE]
    if len(v) == 0:
        return "ms"  # nothing to tell it by: every row is quarantined as missing or unparseable anyway
    cls = np.searchsorted(np.array([1e11, 1e14, 1e17]), v, side="right")
    counts = np.bincount(cls, minlength=4)
    top = int(np.argmax(counts))
    if len(v) - counts[top] > 0.01 * len(v):
        seen = ", ".join(f"{_UNITS[u]} (e.g. {v[cls == u][0]:.0f})" for u in range(4) if counts[u])
        raise DataSourceError("<frame>", f"cannot tell the unit of the epoch times in column {col!r}: their "
                                         f"magnitudes mix {seen}; set replay.timestamp_unit")
    unit = _UNITS[top]
    ns = v[cls == top] * _SCALE[unit]
    if not ((ns >= options.earliest_ns) & (ns <= options.latest_ns)).any():
        raise DataSourceError("<frame>", f"epoch times in column {col!r} read as {unit} (from their magnitude, e.g. "
                                         f"{v[0]:.0f}) give no time within {options.window}; "
                                         "set replay.timestamp_unit or widen the window")
    return unit


def _decide_times(head: pl.DataFrame, col: str, options: ReadOptions) -> _TimePlan:
    if col not in head.columns:
        return _TimePlan("epoch", "ms")  # the missing column is reported by _normalise
    s = head[col]
    if s.dtype.is_temporal():
        return _TimePlan("datetime", "datetime")
    if s.dtype.is_numeric():
        if options.timestamp_unit != "auto":
            return _TimePlan("epoch", options.timestamp_unit)
        return _TimePlan("epoch", _infer_unit(s.cast(pl.Float64, strict=False).drop_nulls().to_numpy(), options, col))
    t = s.cast(pl.Utf8, strict=False).str.strip_chars()
    t = t.filter(t.is_not_null() & (t != "")).head(_SAMPLE)
    if t.len() == 0:
        return _TimePlan("epoch", "ms" if options.timestamp_unit == "auto" else options.timestamp_unit)
    numeric = t.filter(t.str.contains(_NUM_RX))
    if 2 * numeric.len() > t.len():
        if options.timestamp_unit != "auto":
            return _TimePlan("epoch", options.timestamp_unit)
        return _TimePlan("epoch", _infer_unit(numeric.cast(pl.Float64, strict=False).drop_nulls().to_numpy(),
                                              options, col))
    n_iso = int(t.str.contains(_ISO_RX).sum())
    if n_iso:
        return _TimePlan("text", "iso")
    example = _short(t[0])
    if not options.date_format:
        raise DataSourceError("<frame>", f"times like {example!r} in column {col!r} are not ISO 8601 "
                                         "(YYYY-MM-DD[THH:MM[:SS[.fff]]][Z|+HH:MM]) and are not guessed; "
                                         "set replay.date_format to their strftime format, e.g. '%d/%m/%Y %H:%M'")
    parsed = t.str.to_datetime(options.date_format, time_unit="us", strict=False)
    if parsed.null_count() == parsed.len():
        raise DataSourceError("<frame>", f"times like {example!r} in column {col!r} match neither ISO 8601 nor "
                                         f"replay.date_format {options.date_format!r}")
    return _TimePlan("text", "date_format")


# times -> UTC epoch ns, with the reasons of rows that cannot be read


def _clip(e: pl.Expr) -> pl.Expr:
    return pl.when(e.str.len_chars() > _MAX_ECHO).then(e.str.slice(0, _MAX_ECHO) + "…").otherwise(e)


def _times(col: str, dtype: pl.DataType, plan: _TimePlan, options: ReadOptions,
           field_name: str) -> tuple[list[list[pl.Expr]], pl.Expr, list[tuple[pl.Expr, pl.Expr]]]:
    # ([steps of helper columns], Int64 ns or null, [(condition, reason)]) for one time column; the helper
    # columns (named __<col>_*) are computed once each, in order, before the rest reads them
    c = pl.col(col)
    h = f"__{col}_"
    lo, hi = float(options.earliest_ns), float(options.latest_ns)
    out_of_range = pl.format("timestamp out of range: {} '{}' is outside " + options.window.replace("{", "{{"),
                             pl.lit(field_name), _clip(c.cast(pl.Utf8)))
    checks: list[tuple[pl.Expr, pl.Expr]] = []
    if dtype.is_temporal() or plan.mode == "epoch" or dtype.is_numeric():
        exact: pl.Expr
        unit: str
        if isinstance(dtype, pl.Datetime):
            unit = dtype.time_unit or "us"
            exact = c.dt.epoch(unit)
        elif isinstance(dtype, pl.Date):
            unit, exact = "d", c.cast(pl.Int32).cast(pl.Int64)
        else:
            unit = plan.unit if plan.mode == "epoch" else "ms"
            text = c.cast(pl.Utf8, strict=False).str.strip_chars()
            exact = c.cast(pl.Int64, strict=False) if dtype.is_integer() else text.cast(pl.Int64, strict=False)
        scale = _SCALE[unit]
        approx = exact.cast(pl.Float64) if dtype.is_temporal() else \
            c.cast(pl.Float64, strict=False) if dtype.is_numeric() else \
            c.cast(pl.Utf8, strict=False).str.strip_chars().cast(pl.Float64, strict=False)
        steps = [[exact.alias(h + "exact"), approx.alias(h + "approx")],
                 [(pl.col(h + "approx") * float(scale)).is_between(lo, hi).alias(h + "ok")]]
        ex, ap, ok = pl.col(h + "exact"), pl.col(h + "approx"), pl.col(h + "ok")
        safe_exact = pl.when(ok).then(ex).otherwise(0) * scale
        safe_approx = (pl.when(ok).then(ap * float(scale)).otherwise(0.0)).round(0).cast(pl.Int64)
        ns: pl.Expr = pl.when(ok).then(pl.when(ex.is_not_null()).then(safe_exact).otherwise(safe_approx))
        checks.append((ap.is_not_null() & ~ap.is_nan() & ~ok, out_of_range))
        return steps, ns, checks
    # text times: ISO 8601, or replay.date_format
    t = c.cast(pl.Utf8).str.strip_chars()
    steps = [[t.alias(h + "t"), t.str.extract_groups(_ISO_RX).alias(h + "g")]]
    g = pl.col(h + "g")
    date = g.struct.field("date")
    base = pl.concat_str([date, pl.lit("T"), g.struct.field("hm").fill_null("00:00"),
                          g.struct.field("sec").fill_null(":00")])
    frac = g.struct.field("frac").str.pad_end(9, "0").cast(pl.Int64, strict=False).fill_null(0)
    tz = g.struct.field("tz")
    digits = tz.str.replace(":", "")
    offset = (pl.when(tz.is_null() | (tz == "Z")).then(0)
              .otherwise(pl.when(tz.str.starts_with("-")).then(-1).otherwise(1)
                         * (digits.str.slice(1, 2).cast(pl.Int64, strict=False).fill_null(0) * 3600
                            + digits.str.slice(3, 2).cast(pl.Int64, strict=False).fill_null(0) * 60)))
    step2 = [base.str.to_datetime("%Y-%m-%dT%H:%M:%S", time_unit="us", strict=False).dt.epoch("s").alias(h + "secs"),
             frac.alias(h + "frac"), offset.alias(h + "offset"), date.alias(h + "date")]
    if options.date_format:
        step2.append(pl.col(h + "t").str.to_datetime(options.date_format, time_unit="us", strict=False)
                     .dt.epoch("us").alias(h + "us"))
    steps.append(step2)
    secs, date, tt = pl.col(h + "secs"), pl.col(h + "date"), pl.col(h + "t")
    iso_s = secs - pl.col(h + "offset")
    iso_f = iso_s.cast(pl.Float64) * 1e9 + pl.col(h + "frac").cast(pl.Float64)
    steps.append([iso_f.is_between(lo, hi).alias(h + "iso_ok")])
    iso_ok = pl.col(h + "iso_ok")
    iso_ns = pl.when(iso_ok).then(pl.when(iso_ok).then(iso_s).otherwise(0) * 1_000_000_000 + pl.col(h + "frac"))
    not_iso = date.is_null() & tt.is_not_null() & (tt != "")
    shown = _clip(tt)
    if options.date_format:
        us = pl.col(h + "us")
        fmt_ok = (us.cast(pl.Float64) * 1e3).is_between(lo, hi)
        fmt_ns = pl.when(fmt_ok).then(pl.when(fmt_ok).then(us).otherwise(0) * 1000)
        ns = pl.when(date.is_not_null()).then(iso_ns).otherwise(fmt_ns)
        checks.append((not_iso & us.is_null(), pl.format(
            "unparseable field {}: '{}' matches neither ISO 8601 nor replay.date_format " +
            repr(options.date_format).replace("{", "{{").replace("}", "}}"), pl.lit(field_name), shown)))
        checks.append((not_iso & us.is_not_null() & ~fmt_ok, out_of_range))
    else:
        ns = iso_ns
        checks.append((not_iso, pl.format("unparseable field {}: '{}' is not ISO 8601 and is not guessed; "
                                          "set replay.date_format to read it", pl.lit(field_name), shown)))
    checks.append((secs.is_not_null() & ~iso_ok, out_of_range))
    return steps, ns, checks


def _parse(col: str, how: _Parse) -> pl.Expr:
    c = pl.col(col)
    if how == "float":
        return c.cast(pl.Float64, strict=False)
    if how == "str":
        return c.cast(pl.Utf8, strict=False)
    if how == "side":
        s = c.cast(pl.Utf8).str.to_lowercase()
        return pl.when(s.is_in(["buy", "b"])).then(1).when(s.is_in(["sell", "s"])).then(-1).otherwise(0).cast(pl.Int8)
    assert how == "buyer_maker"  # buyer is maker => the taker sold
    s = c.cast(pl.Utf8).str.to_lowercase()
    return pl.when(s == "true").then(-1).when(s == "false").then(1).otherwise(0).cast(pl.Int8)


def _normalise(df: pl.DataFrame, layout: _Layout, kind: Kind, tf_ns: int, plan: _TimePlan, options: ReadOptions,
               row0: int) -> pl.DataFrame:
    # Checks run in this order; the first problem wins.
    spec, optional = layout.spec, layout.optional
    src_cols = list(dict.fromkeys(s for s, _ in spec.values()))
    missing_cols = [s for s in src_cols if s not in df.columns]
    if missing_cols:
        raise DataSourceError("<frame>", _short(f"columns {missing_cols!r} are missing (columns: {df.columns!r})"))
    parsed: dict[str, pl.Expr] = {}
    time_checks: dict[str, list[tuple[pl.Expr, pl.Expr]]] = {}
    for t, (s, how) in spec.items():
        field_name = repr(t) if t == s else f"{t!r} (column {s!r})"
        if how in ("ts", "ts_recv"):
            steps, parsed[t], time_checks[t] = _times(s, df.schema[s], plan, options, field_name)
            for step in steps:
                df = df.with_columns(step)
        else:
            parsed[t] = _parse(s, how)
    problem: pl.Expr = pl.lit(None, dtype=pl.Utf8)
    checks: list[tuple[pl.Expr, pl.Expr]] = []
    for t, (s, how) in spec.items():
        if t in optional or how in ("side", "buyer_maker"):
            continue
        raw = pl.col(s)
        typed = df.schema[s].is_numeric() or df.schema[s].is_temporal()  # only text can be blank
        is_missing = raw.is_null() if typed else raw.is_null() | (raw.cast(pl.Utf8).str.strip_chars() == "")
        field_name = repr(t) if t == s else f"{t!r} (column {s!r})"
        checks.append((is_missing, pl.lit(f"missing field {field_name}")))
        checks += time_checks.get(t, [])
        checks.append((pl.col(f"__{t}").is_null(),
                       pl.format("unparseable field {}: '{}'", pl.lit(field_name), _clip(raw.cast(pl.Utf8)))))
    values = {"bar": ["open", "high", "low", "close", "volume"], "trade": ["price", "amount"],
              "quote": ["bid", "ask", "bid_size", "ask_size"], "mark": ["price"], "funding": ["rate"]}[kind]
    for t in values:
        v = pl.col(f"__{t}")
        checks.append((~v.is_finite(), pl.format("non-finite {}: {}", pl.lit(t), v)))
    positive = {"bar": ["open", "high", "low", "close"], "trade": ["price", "amount"], "quote": ["bid", "ask"],
                "mark": ["price"], "funding": []}[kind]
    for t in positive:
        v = pl.col(f"__{t}")
        checks.append((v <= 0, pl.format("non-positive {}: {}", pl.lit(t), v)))
    for t in {"bar": ["volume"], "trade": [], "quote": ["bid_size", "ask_size"], "mark": [], "funding": []}[kind]:
        v = pl.col(f"__{t}")
        checks.append((v < 0, pl.format("negative {}: {}", pl.lit(t), v)))
    p_lo, p_hi = _PRICE_RANGE
    prices = {"bar": ["open", "high", "low", "close"], "trade": ["price"], "quote": ["bid", "ask"], "mark": ["price"],
              "funding": []}[kind]
    for t in prices:
        v = pl.col(f"__{t}")
        checks.append(((v < p_lo) | (v > p_hi),
                       pl.format(f"implausible {t}: {{}} (prices lie within [{p_lo:g}, {p_hi:g}])", v)))
    sizes = {"bar": ["volume"], "trade": ["amount"], "quote": ["bid_size", "ask_size"], "mark": [], "funding": []}
    for t in sizes[kind]:
        v = pl.col(f"__{t}")
        checks.append((((v > 0) & (v < p_lo)) | (v > _SIZE_MAX),
                       pl.format(f"implausible {t}: {{}} (sizes are 0 or within [{p_lo:g}, {_SIZE_MAX:g}])", v)))
    if kind == "bar":
        h, lo = pl.col("__high"), pl.col("__low")
        checks.append((h < lo, pl.format("high < low: high={} low={}", h, lo)))
        for t in ("open", "close"):
            v = pl.col(f"__{t}")
            checks.append(((v > h * (1 + 1e-9)) | (v < lo * (1 - 1e-9)),
                           pl.format(f"{t} outside [low, high]: {t}={{}} low={{}} high={{}}", v, lo, h)))
    if kind == "quote":
        b, a = pl.col("__bid"), pl.col("__ask")
        checks.append((b > a, pl.format("bid > ask: bid={} ask={}", b, a)))
    if kind == "funding":
        r = pl.col("__rate")
        checks.append((r.abs() >= MAX_FUNDING_RATE,
                       pl.format(f"implausible funding rate: {{}} (|rate| < {MAX_FUNDING_RATE:g} per period)", r)))
    for cond, reason in reversed(checks):
        problem = pl.when(cond.fill_null(False)).then(reason).otherwise(problem)
    raw_json = pl.struct([_clip(pl.col(s).cast(pl.Utf8)) for s in src_cols]).struct.json_encode()
    out = df.with_columns(*(e.alias(f"__{t}") for t, e in parsed.items()),
                          pl.int_range(row0, row0 + pl.len(), dtype=pl.Int64).alias("row"))
    any_bad = pl.any_horizontal([c.fill_null(False) for c, _ in checks])
    # reasons are text work: build them only for the (few) bad rows, then put them back by row
    bad = out.filter(any_bad).select("row", problem.alias("problem"), raw_json.alias("raw"))
    out = out.with_columns(pl.lit(None, dtype=pl.Utf8).alias("problem"), pl.lit(None, dtype=pl.Utf8).alias("raw"))
    if bad.height:
        out = out.update(bad, on="row")
    out = out.select(*(pl.col(f"__{t}").alias(t) for t in spec), "row", "problem", "raw")
    if kind == "bar":
        out = out.with_columns((pl.col("ts_open") + tf_ns).alias("ts_event"))
        out = out.with_columns(pl.col("ts_event").alias("ts_recv"))
        order = ["ts_open", "ts_event", "ts_recv", "open", "high", "low", "close", "volume"]
    elif kind == "mark":  # known when the candle closes
        out = out.with_columns((pl.col("ts_open") + tf_ns).alias("ts_event"))
        out = out.with_columns(pl.col("ts_event").alias("ts_recv"))
        order = ["ts_event", "ts_recv", "price"]
    elif kind == "funding":
        out = out.with_columns(pl.col("ts_event").alias("ts_recv"))
        order = ["ts_event", "ts_recv", "rate"]
    elif kind == "trade":
        if "ts_recv" not in out.columns:
            out = out.with_columns(pl.col("ts_event").alias("ts_recv"))
        if "side" not in out.columns:
            out = out.with_columns(pl.lit(0, dtype=pl.Int8).alias("side"))
        if "trade_id" not in out.columns:
            out = out.with_columns(pl.lit(None, dtype=pl.Utf8).alias("trade_id"))
        order = ["ts_event", "ts_recv", "price", "amount", "side", "trade_id"]
    else:
        if "ts_recv" not in out.columns:
            out = out.with_columns(pl.col("ts_event").alias("ts_recv"))
        order = ["ts_event", "ts_recv", "bid", "ask", "bid_size", "ask_size"]
    out = out.with_columns(pl.col("ts_recv").fill_null(pl.col("ts_event")))
    return out.select(*order, "row", "problem", "raw")


# the public readers


def iter_file(spec: FileSpec, options: ReadOptions | None = None, *, batch_rows: int = 200_000,
              start_row: int = 0) -> Iterator[ParsedFrame]:
    """Read one identified file in batches of at most `batch_rows` rows, from data row `start_row` on.

    Every batch's ``row`` column holds absolute 0-based data rows of the file; the time unit and (bars
    whose name gives no length) the bar length are decided once from the start of the file, so the
    batches concatenated equal `read_file`. Parquet and Feather/IPC files are read a record batch at a
    time; CSV files a batch of lines at a time. Raises `DataSourceError` (one line, naming the file).
    """
    if batch_rows < 1 or start_row < 0:
        raise ValueError(f"batch_rows must be >= 1 and start_row >= 0, were {batch_rows!r} and {start_row!r}")
    return _guarded(spec, _iter(spec, options or ReadOptions(), batch_rows, start_row))


def read_file(spec: FileSpec, options: ReadOptions | None = None) -> list[ParsedFrame]:
    """Read one identified file into one `ParsedFrame` per instrument (see `iter_file`)."""
    parts = list(_guarded(spec, _iter(spec, options or ReadOptions(), None, 0)))
    by_inst: dict[str, list[ParsedFrame]] = {}
    for p in parts:  # a wide price table gives one instrument per column
        by_inst.setdefault(p.instrument, []).append(p)
    return [g[0] if len(g) == 1 else
            ParsedFrame(instrument=g[0].instrument, kind=g[0].kind, timeframe_ns=g[0].timeframe_ns, path=g[0].path,
                        frame=pl.concat([p.frame for p in g]), ts_unit=g[0].ts_unit) for g in by_inst.values()]


def _guarded(spec: FileSpec, frames: Iterator[ParsedFrame]) -> Iterator[ParsedFrame]:
    # every failure of a reader becomes one DataSourceError line naming the file
    try:
        yield from frames
    except DataSourceError as e:
        if e.path == "<frame>":
            raise DataSourceError(spec.path, e.reason) from None
        raise
    except (pl.exceptions.PolarsError, pa.ArrowException, OSError, EOFError, zlib.error, ValueError, UnicodeError,
            OverflowError) as e:
        raise DataSourceError(spec.path, f"cannot read as {spec.format}: {_short(e)}") from None
    except pl.exceptions.PanicException as e:  # a panic inside polars' Rust code on broken input
        raise DataSourceError(spec.path, f"cannot read as {spec.format}: {_short(e)}") from None


def _iter(spec: FileSpec, options: ReadOptions, batch_rows: int | None, start_row: int) -> Iterator[ParsedFrame]:
    if spec.format.startswith("book_"):
        from sources import book_files

        yield from book_files.quote_frames(spec, options, batch_rows, start_row)
        return
    if spec.format == WIDE:
        yield from _wide_iter(spec, options, batch_rows, start_row)
        return
    path, tf = spec.path, spec.timeframe_ns
    head = _head(path, spec.format)
    layout = _layout(spec.format, head.columns)
    ts_col = next(s for s, how in layout.spec.values() if how == "ts")
    plan = _decide_times(head, ts_col, options)
    if spec.kind == "bar" and tf == 0:  # the name gave no bar length: the start of the data does
        start = _normalise(head, layout, "bar", 0, plan, options, 0)
        try:
            tf = infer_timeframe(start.filter(pl.col("problem").is_null())["ts_open"])
        except ValueError as e:
            raise DataSourceError(path, f"{e}; name the file <BASE>_<QUOTE>-<timeframe>.<ext>") from e
    inst = f"{spec.venue}:{spec.symbol}"
    row, whole = start_row, batch_rows is None
    for raw in _raw_batches(path, spec.format, batch_rows, start_row):
        if raw.height == 0 and not (whole and row == start_row):
            continue  # batches hold rows; only a whole read of an empty file gives an empty frame
        norm = _normalise(raw if raw.width else head.clear(), layout, spec.kind, tf, plan, options, row)
        row, whole = row + raw.height, False
        yield ParsedFrame(instrument=inst, kind=spec.kind, timeframe_ns=tf, path=path, frame=norm, ts_unit=plan.unit)
    if whole:  # a whole read of a file without batches (no header either): its columns are missing
        norm = _normalise(head.clear(), layout, spec.kind, tf, plan, options, row)
        yield ParsedFrame(instrument=inst, kind=spec.kind, timeframe_ns=tf, path=path, frame=norm, ts_unit=plan.unit)


def read_paths(paths: Sequence[str], *, venue: str = "", symbol: str = "", timeframe: str = "",
               options: ReadOptions | None = None) -> list[ParsedFrame]:
    """Discover, identify and read every data file under `paths`."""
    files = discover(paths)
    if not files:
        raise DataSourceError(", ".join(map(str, paths)), "holds no data files (.csv, .csv.gz, .parquet, .feather)")
    out: list[ParsedFrame] = []
    for f in files:
        out += read_file(identify(f, venue=venue, symbol=symbol, timeframe=timeframe), options)
    return out
