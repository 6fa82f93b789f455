"""Recorded market data files: find them, tell what each holds, and parse them into normalised frames.

Pure polars, no Bytewax. `read_paths` turns files and folders into `ParsedFrame`s, one per instrument
and file, in one of three normalised schemas (all times integer UTC epoch ns; rows in file order):

- bar:   ts_open, ts_event (= ts_open + timeframe, the close), ts_recv, open, high, low, close, volume
- trade: ts_event, ts_recv, price, amount, side (+1 buy, -1 sell, 0 unknown; the taker), trade_id
- quote: ts_event, ts_recv, bid, ask, bid_size, ask_size

plus ``row`` (0-based data row in the file), ``problem`` (null, or why the row is unusable) and ``raw``
(the row as read, JSON, for rows with a problem). The checks that need no memory of other rows run
here, vectorised: missing or unparseable fields, non-finite or non-positive values, high < low,
crossed quotes. See docs/data.md for the path layouts recognised.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl

from headrace.config import parse_timeframe
from headrace.errors import DataSourceError

Kind = Literal["bar", "trade", "quote"]

_EXTS = (".csv", ".csv.gz", ".parquet", ".feather", ".arrow", ".ipc")
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


@dataclass(frozen=True, slots=True)
class ParsedFrame:
    """One instrument's rows from one file, normalised (see module docstring)."""

    instrument: str
    kind: Kind
    timeframe_ns: int
    path: str
    frame: pl.DataFrame


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
    name = p.name
    stem = re.sub(r"\.(csv\.gz|csv|parquet|feather|arrow|ipc)$", "", name, flags=re.I)
    ext = name[len(stem):].lower()
    v = venue or _venue_from_path(p)
    fmt: str
    kind: Kind
    sym, tf = "", ""
    if m := re.fullmatch(r"([A-Za-z0-9]+(?:_[A-Za-z0-9]+){1,2})-(\d+[smhdwM])(?:-(futures|mark|funding_rate|spot))?",
                         stem):
        if m.group(3) in ("mark", "funding_rate"):
            raise DataSourceError(path, f"{m.group(3)} candles are not market bars (not supported yet)")
        fmt, kind, sym, tf = "ohlcv_frame", "bar", split_symbol(m.group(1)), m.group(2)
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
        raise DataSourceError(path, "order-book files are not supported yet")
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
    if not sym:
        raise DataSourceError(path, "cannot tell the symbol from the path; "
                                    "pass --symbol BASE/QUOTE (config: replay.symbol)")
    tf_ns = 0  # bars of a file whose name gives no length: inferred from the data when read
    if kind == "bar" and (timeframe or tf):
        try:
            tf_ns = parse_timeframe(timeframe or tf)
        except ValueError as e:
            raise DataSourceError(path, str(e)) from e
    return FileSpec(path=path, format=fmt, kind=kind, venue=v.lower(), symbol=sym, timeframe_ns=tf_ns)


def _sniff(path: str, ext: str) -> tuple[str, Kind] | None:
    # the format and kind of a file with a header, from its column names; None when they say nothing
    try:
        if ext in (".feather", ".arrow", ".ipc"):
            cols = set(pl.read_ipc_schema(path))
        elif ext == ".parquet":
            cols = set(pl.read_parquet_schema(path))
        else:
            cols = set(pl.read_csv(path, n_rows=0, infer_schema=False).columns)
    except Exception as e:  # any reader error means: not a file we can tell
        raise DataSourceError(path, f"cannot read its columns: {e}") from e
    if {"open", "high", "low", "close", "volume"} <= cols and cols & {"date", "timestamp"}:
        return "ohlcv_frame", "bar"
    if {"timestamp", "price", "amount"} <= cols:
        return "trades_frame", "trade"
    if {"timestamp", "bid", "ask", "bid_size", "ask_size"} <= cols:
        return "quotes_frame", "quote"
    return None


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
# reading


def _read(path: str, *, header: bool = True, names: list[str] | None = None) -> pl.DataFrame:
    lower = path.lower()
    if lower.endswith((".feather", ".arrow", ".ipc")):
        return pl.read_ipc(path)
    if lower.endswith(".parquet"):
        return pl.read_parquet(path)
    try:
        return pl.read_csv(path, has_header=header, new_columns=names, infer_schema=False, truncate_ragged_lines=True)
    except Exception as e:  # polars raises several kinds for broken text
        raise DataSourceError(path, f"cannot read as CSV: {e}") from e


_Parse = Literal["float", "ts_ms", "ts_s", "ts_us", "ts_ns", "ts_any", "side", "buyer_maker", "str"]


def _parse(col: str, how: _Parse, dtype: pl.DataType) -> pl.Expr:
    c = pl.col(col)
    if how == "float":
        return c.cast(pl.Float64, strict=False)
    if how == "str":
        return c.cast(pl.Utf8, strict=False)
    if how == "side":
        s = c.cast(pl.Utf8).str.to_lowercase()
        return pl.when(s.is_in(["buy", "b"])).then(1).when(s.is_in(["sell", "s"])).then(-1).otherwise(0).cast(pl.Int8)
    if how == "buyer_maker":  # buyer is maker => the taker sold
        s = c.cast(pl.Utf8).str.to_lowercase()
        return pl.when(s == "true").then(-1).when(s == "false").then(1).otherwise(0).cast(pl.Int8)
    if isinstance(dtype, pl.Datetime):
        return c.dt.convert_time_zone("UTC").dt.cast_time_unit("ns").cast(pl.Int64) if dtype.time_zone else \
            c.dt.cast_time_unit("ns").cast(pl.Int64)
    if how == "ts_any":  # ISO text
        return (c.cast(pl.Utf8).str.to_datetime(time_zone="UTC", strict=False, time_unit="ns").cast(pl.Int64))
    scale = {"ts_ms": 10**6, "ts_s": 10**9, "ts_us": 10**3, "ts_ns": 1}[how]
    if how == "ts_s":
        return (c.cast(pl.Float64, strict=False) * scale).round(0).cast(pl.Int64, strict=False)
    return c.cast(pl.Int64, strict=False) * scale


def _normalise(df: pl.DataFrame, spec: dict[str, tuple[str, _Parse]], kind: Kind, tf_ns: int,
               optional: Sequence[str] = ()) -> pl.DataFrame:
    # spec: target column -> (source column, how). Checks run in this order; the first problem wins.
    src_cols = list(dict.fromkeys(s for s, _ in spec.values()))
    missing_cols = [s for s in src_cols if s not in df.columns]
    if missing_cols:
        raise DataSourceError("<frame>", f"columns {missing_cols!r} are missing (columns: {df.columns!r})")
    parsed = {t: _parse(s, how, df.schema[s]).alias(t) for t, (s, how) in spec.items()}
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
        checks.append((pl.col(f"__{t}").is_null(),
                       pl.format("unparseable field {}: '{}'", pl.lit(field_name), raw.cast(pl.Utf8))))
    values = {"bar": ["open", "high", "low", "close", "volume"], "trade": ["price", "amount"],
              "quote": ["bid", "ask", "bid_size", "ask_size"]}[kind]
    for t in values:
        v = pl.col(f"__{t}")
        checks.append((~v.is_finite(), pl.format("non-finite {}: {}", pl.lit(t), v)))
    positive = {"bar": ["open", "high", "low", "close"], "trade": ["price", "amount"], "quote": ["bid", "ask"]}[kind]
    for t in positive:
        v = pl.col(f"__{t}")
        checks.append((v <= 0, pl.format("non-positive {}: {}", pl.lit(t), v)))
    for t in {"bar": ["volume"], "trade": [], "quote": ["bid_size", "ask_size"]}[kind]:
        v = pl.col(f"__{t}")
        checks.append((v < 0, pl.format("negative {}: {}", pl.lit(t), v)))
    if kind == "bar":
        h, lo = pl.col("__high"), pl.col("__low")
        checks.append((h < lo, pl.format("high < low: high={} low={}", h, lo)))
    if kind == "quote":
        b, a = pl.col("__bid"), pl.col("__ask")
        checks.append((b > a, pl.format("bid > ask: bid={} ask={}", b, a)))
    for cond, reason in reversed(checks):
        problem = pl.when(cond.fill_null(False)).then(reason).otherwise(problem)
    raw_json = pl.struct([pl.col(s).cast(pl.Utf8) for s in src_cols]).struct.json_encode()
    out = df.with_columns(*(e.alias(f"__{t}") for t, e in parsed.items()),
                          pl.int_range(0, pl.len(), dtype=pl.Int64).alias("row"))
    any_bad = pl.any_horizontal([c.fill_null(False) for c, _ in checks])
    # reasons are text work: build them only for the (few) bad rows, then put them back by row
    bad = out.filter(any_bad).select("row", problem.alias("problem"), raw_json.alias("raw"))
    out = out.with_columns(pl.lit(None, dtype=pl.Utf8).alias("problem"), pl.lit(None, dtype=pl.Utf8).alias("raw"))
    if bad.height:
        out = out.update(bad, on="row")
    cols = [pl.col(f"__{t}").alias(t) for t in spec]
    out = out.select(*cols, "row", "problem", "raw")
    if kind == "bar":
        out = out.with_columns((pl.col("ts_open") + tf_ns).alias("ts_event"))
        out = out.with_columns(pl.col("ts_event").alias("ts_recv"))
        order = ["ts_open", "ts_event", "ts_recv", "open", "high", "low", "close", "volume"]
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


_OHLCV = {"open": ("open", "float"), "high": ("high", "float"), "low": ("low", "float"), "close": ("close", "float"),
          "volume": ("volume", "float")}


def read_file(spec: FileSpec) -> list[ParsedFrame]:
    """Read one identified file into one `ParsedFrame` per instrument."""
    path, f = spec.path, spec.format
    try:
        frames = _read_file(spec)
    except DataSourceError as e:
        if e.path == "<frame>":
            raise DataSourceError(path, e.reason) from e
        raise
    except pl.exceptions.PolarsError as e:
        raise DataSourceError(path, f"cannot parse as {f}: {e}") from e
    return frames


def _read_file(spec: FileSpec) -> list[ParsedFrame]:
    path, f, tf = spec.path, spec.format, spec.timeframe_ns
    inst = f"{spec.venue}:{spec.symbol}"
    if f == "ohlcv_frame":
        df = _read(path)
        ts_col = "date" if "date" in df.columns else "timestamp"
        # a Datetime column converts whatever `how` says; integers are ccxt milliseconds; text is ISO
        how: _Parse = "ts_any" if df.schema.get(ts_col) == pl.Utf8 else "ts_ms"
        norm = _normalise(df, {"ts_open": (ts_col, how), **_OHLCV}, "bar", tf)  # type: ignore[dict-item]
        if tf == 0:  # the name gave no bar length: the data does
            try:
                tf = infer_timeframe(norm.filter(pl.col("problem").is_null())["ts_open"])
            except ValueError as e:
                raise DataSourceError(path, f"{e}; name the file <BASE>_<QUOTE>-<timeframe>.<ext>") from e
            norm = norm.with_columns((pl.col("ts_open") + tf).alias("ts_event"), (pl.col("ts_open") + tf)
                                     .alias("ts_recv"))
    elif f == "kraken_ohlcvt":
        df = _read(path, header=False, names=["timestamp", "open", "high", "low", "close", "volume", "trades"])
        norm = _normalise(df, {"ts_open": ("timestamp", "ts_s"), **_OHLCV}, "bar", tf)  # type: ignore[dict-item]
    elif f == "ohlcv_csv_iso":
        df = _read(path)
        norm = _normalise(df, {"ts_open": ("open_time", "ts_any"), **_OHLCV}, "bar", tf)  # type: ignore[dict-item]
    elif f == "binance_klines":
        names = ["open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "trades",
                 "taker_buy_base", "taker_buy_quote", "ignore"]
        df = _read(path, header=False, names=names)
        norm = _normalise(df, {"ts_open": ("open_time", "ts_ms"), **_OHLCV}, "bar", tf)  # type: ignore[dict-item]
    elif f == "trades_frame":
        df = _read(path)
        spec_ = {"ts_event": ("timestamp", "ts_ms"), "price": ("price", "float"), "amount": ("amount", "float"),
                 "side": ("side", "side"), "trade_id": ("id", "str")}
        if "side" not in df.columns:
            del spec_["side"]
        if "id" not in df.columns:
            del spec_["trade_id"]
        norm = _normalise(df, spec_, "trade", 0, optional=("trade_id",))  # type: ignore[arg-type]
    elif f == "quotes_frame":
        df = _read(path)
        norm = _normalise(df, {"ts_event": ("timestamp", "ts_ms"), "bid": ("bid", "float"), "ask": ("ask", "float"),
                               "bid_size": ("bid_size", "float"), "ask_size": ("ask_size", "float")}, "quote", 0)
    elif f == "binance_trades":
        df = _read(path)
        norm = _normalise(df, {"ts_event": ("timestamp", "ts_ms"), "price": ("price", "float"),
                               "amount": ("quantity", "float"), "side": ("buyer_maker", "buyer_maker"),
                               "trade_id": ("trade_id", "str")}, "trade", 0, optional=("trade_id",))
    elif f == "binance_quotes":
        df = _read(path)
        norm = _normalise(df, {"ts_event": ("timestamp", "ts_ms"), "bid": ("bid", "float"), "ask": ("ask", "float"),
                               "bid_size": ("bid_size", "float"), "ask_size": ("ask_size", "float")}, "quote", 0)
    elif f == "kraken_trades":
        df = _read(path, header=False, names=["timestamp", "price", "volume"])
        norm = _normalise(df, {"ts_event": ("timestamp", "ts_s"), "price": ("price", "float"),
                               "amount": ("volume", "float")}, "trade", 0)
    elif f == "tardis_trades":
        df = _read(path)
        norm = _normalise(df, {"ts_event": ("timestamp", "ts_us"), "ts_recv": ("local_timestamp", "ts_us"),
                               "price": ("price", "float"), "amount": ("amount", "float"), "side": ("side", "side"),
                               "trade_id": ("id", "str")}, "trade", 0, optional=("trade_id",))
    elif f == "tardis_quotes":
        df = _read(path)
        norm = _normalise(df, {"ts_event": ("timestamp", "ts_us"), "ts_recv": ("local_timestamp", "ts_us"),
                               "bid": ("bid_price", "float"), "ask": ("ask_price", "float"),
                               "bid_size": ("bid_amount", "float"), "ask_size": ("ask_amount", "float")}, "quote", 0)
    else:  # pragma: no cover - identify() only returns the formats above
        raise DataSourceError(path, f"no reader for format {f!r}")
    return [ParsedFrame(instrument=inst, kind=spec.kind, timeframe_ns=tf, path=path, frame=norm)]


def read_paths(paths: Sequence[str], *, venue: str = "", symbol: str = "", timeframe: str = "") -> list[ParsedFrame]:
    """Discover, identify and read every data file under `paths`."""
    files = discover(paths)
    if not files:
        raise DataSourceError(", ".join(map(str, paths)), "holds no data files (.csv, .csv.gz, .parquet, .feather)")
    out: list[ParsedFrame] = []
    for f in files:
        out += read_file(identify(f, venue=venue, symbol=symbol, timeframe=timeframe))
    return out
