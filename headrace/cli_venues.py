"""`headrace venues`, `headrace venues snapshot`, `headrace live` and `headrace paper`.

`venues` lists the configured venues and the market metadata given with ``--markets`` (ccxt dumps or
snapshots): per venue the markets, the precision mode and where the metadata came from. `venues snapshot`
stores a venue's markets as a snapshot, from the venue (ccxt ``load_markets``) or from a recorded dump.

`paper` runs the trading flow on live market data (`flows.live`) with simulated execution; `live` runs it with
the router's children sent to the venues (`sinks.ccxt_executor.CcxtExecutor` over `sinks.ccxt_venue.CcxtVenue`),
only with the explicit ``--live``, the API keys from the environment and ``[router] enabled = true``. Both
record a run (mode ``paper`` / ``live``) and end on Ctrl-C/SIGTERM, ``--duration`` or ``--max-items`` with the
replay's summary. API keys and secrets are never printed, logged or written.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from headrace.errors import DataSourceError, HeadraceError

logger = logging.getLogger("headrace")

venues_app = typer.Typer(
    invoke_without_command=True,
    help="Venues and their market metadata: list them (the default), store a snapshot of one venue's markets.")

MarketsOpt = Annotated[list[Path] | None, typer.Option(
    "--markets", help="market metadata: a ccxt dump or snapshot (.json, .json.gz) or a folder of them (repeatable)")]
KEY_VAR, SECRET_VAR = "HEADRACE_API_KEY_{}", "HEADRACE_API_SECRET_{}"
PASSWORD_VAR = "HEADRACE_API_PASSWORD_{}"
SNAPSHOT_KEYS = {"venue", "source", "precision_mode", "markets"}


class VenueError(HeadraceError):
    """A venue cannot be used as asked: unknown to ccxt, unreachable, without a testnet, or without keys."""


# ---------------------------------------------------------------------------------------------------
# market metadata files


def _market_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith((".json", ".json.gz")))
        if not files:
            raise DataSourceError(str(path), "holds no market files (.json or .json.gz ccxt dumps or snapshots)")
        return files
    if not path.exists():
        raise DataSourceError(str(path), "no such file or folder")
    return [path]


def load_markets_file(path: Path) -> Any:
    """Load one ccxt dump or snapshot as `VenueMarkets`; a missing, unreadable or malformed file is one error."""
    from sources.market_metadata import load_snapshot, read_dump, venue_markets

    try:
        doc = read_dump(path)
    except FileNotFoundError:
        raise DataSourceError(str(path), "no such file") from None
    except json.JSONDecodeError as e:
        raise DataSourceError(str(path), f"not JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataSourceError(str(path), f"not a JSON or gzipped JSON file ({e})") from None
    except OSError as e:
        raise DataSourceError(str(path), f"cannot read it ({e.strerror or e})") from None
    if not isinstance(doc, dict) or not doc:
        raise DataSourceError(str(path), "not a ccxt markets dump (an object of symbol -> market) or snapshot")
    try:
        if set(doc) >= SNAPSHOT_KEYS:
            return load_snapshot(path)
        from sources.market_metadata import guess_mode

        if not all(isinstance(m, dict) for m in doc.values()):
            raise TypeError("a market is not an object")
        venue = path.name.split(".")[0].split("_")[0]
        return venue_markets(venue, doc, source=str(path), mode=guess_mode(doc))
    except (KeyError, TypeError, ValueError, ArithmeticError, AttributeError) as e:
        what = f"missing {e}" if isinstance(e, KeyError) else str(e)
        raise DataSourceError(str(path), f"not a ccxt markets dump or snapshot ({what})") from None


def load_markets_paths(paths: list[Path]) -> dict[str, Any]:
    """Load every market file of `paths` (files or folders); venue -> `VenueMarkets`. A venue given twice is an
    error naming both files."""
    out: dict[str, Any] = {}
    for p in paths:
        for f in _market_files(p):
            vm = load_markets_file(f)
            if vm.venue in out:
                raise DataSourceError(str(f), f"holds the markets of {vm.venue!r} again (already read from "
                                              f"{out[vm.venue].source})")
            out[vm.venue] = vm
    return out


# ---------------------------------------------------------------------------------------------------
# ccxt exchanges


def _ccxt_class(venue: str) -> Any:
    import ccxt

    if venue not in ccxt.exchanges:
        raise VenueError(f"unknown venue {venue!r}: not a ccxt exchange id (for example binance, kraken, okx)")
    return getattr(ccxt, venue)


def _short(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _root_cause(e: BaseException) -> BaseException:
    """The innermost exception behind `e` (ccxt wraps the socket's or the HTTP library's error)."""
    seen = {id(e)}
    while (nxt := e.__cause__ or e.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        e = nxt
    return e


def fetch_markets_online(venue: str, timeout_s: float) -> tuple[dict[str, dict[str, Any]], str]:
    """Load a venue's markets through ccxt (the network); return them and the venue's precision mode name."""
    import ccxt

    from sources.market_metadata import MODES

    ex = _ccxt_class(venue)({"timeout": int(timeout_s * 1000), "enableRateLimit": True})
    try:
        markets: dict[str, dict[str, Any]] = ex.load_markets()
    except ccxt.BaseError as e:
        root = _root_cause(e)
        why = "" if root is e else f"; cause: {type(root).__name__}: {_short(root, 200)}"
        raise VenueError(f"venue {venue!r}: cannot load its markets ({type(e).__name__}: {_short(e)}{why})") from None
    return markets, MODES[ex.precisionMode]


# ---------------------------------------------------------------------------------------------------
# headrace venues


@dataclass(frozen=True, slots=True)
class VenueRow:
    venue: str
    configured: bool
    markets: int | None  # None: no metadata
    spot: int
    swap: int
    other: int
    incomplete: int
    precision_mode: str | None
    source: str | None  # a snapshot or dump path, "venue" when loaded online; None: no metadata


def _row(venue: str, configured: bool, vm: Any) -> VenueRow:
    if vm is None:
        return VenueRow(venue, configured, None, 0, 0, 0, 0, None, None)
    types = [m.type for m in vm.markets.values()]
    spot, swap = types.count("spot"), types.count("swap")
    return VenueRow(venue, configured, len(types), spot, swap, len(types) - spot - swap, len(vm.incomplete),
                    vm.precision_mode, vm.source)


def _market_detail(vm: Any, symbol: str) -> dict[str, Any]:
    m = vm.markets[symbol]

    def s(x: Any) -> str | None:
        return None if x is None else str(x)

    return {"venue": vm.venue, "symbol": symbol, "type": m.type, "base": m.base, "quote": m.quote,
            "precision_mode": m.precision_mode, "amount_precision": s(m.amount_precision),
            "price_precision": s(m.price_precision), "contract_size": s(m.contract_size), "inverse": m.inverse,
            "min_amount": s(m.min_amount), "max_amount": s(m.max_amount), "min_price": s(m.min_price),
            "max_price": s(m.max_price), "min_cost": s(m.min_cost), "max_cost": s(m.max_cost),
            "taker_fee": s(m.taker_fee), "maker_fee": s(m.maker_fee), "source": vm.source}


def venue_rows(configured: list[str], loaded: dict[str, Any]) -> list[VenueRow]:
    """One row per venue, configured or given metadata, in name order."""
    return [_row(v, v in configured, loaded.get(v)) for v in sorted(set(configured) | set(loaded))]


@venues_app.callback()
def venues(
    ctx: typer.Context,
    markets: MarketsOpt = None,
    symbol: Annotated[str | None, typer.Option("--symbol", help="show this market's precision, limits and fees")]
    = None,
    online: Annotated[bool, typer.Option(
        "--online", help="load the metadata of configured venues without --markets from the venues (network)")]
    = False,
    timeout_s: Annotated[float, typer.Option("--timeout-s", min=0.1, help="network timeout, seconds")] = 10.0,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file (default: built-in)")]
    = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override one config key: KEY=VALUE (TOML)")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON document on stdout")] = False,
) -> None:
    """List the configured venues and the given market metadata: markets, spot/swap, precision mode, source."""
    if ctx.invoked_subcommand is not None:
        return
    from headrace.cli import _fail, _setup, out

    try:
        cfg = _setup(config, set_)
        configured = sorted(v for v in cfg.venues if v != "default")
        loaded = load_markets_paths(list(markets or []))
        if online:
            import ccxt

            from sources.market_metadata import venue_markets

            for v in configured:
                if v not in loaded and v in ccxt.exchanges:  # a venue ccxt does not know stays without metadata
                    raw, mode = fetch_markets_online(v, timeout_s)
                    loaded[v] = venue_markets(v, raw, source="venue", mode=mode)  # type: ignore[arg-type]
        if symbol is not None:
            details = [_market_detail(vm, symbol) for _, vm in sorted(loaded.items()) if symbol in vm.markets]
            if not details:
                raise VenueError(f"no venue with metadata lists the market {symbol!r} (searched: "
                                 f"{', '.join(sorted(loaded)) or 'none; give --markets'})")
    except HeadraceError as e:
        raise _fail(e) from None
    if symbol is not None:
        if as_json:
            print(json.dumps(details))
            return
        for d in details:
            t = Table(title=f"{d['venue']}:{symbol}", show_header=False)
            t.add_column("what")
            t.add_column("value")
            for k, v in d.items():
                if k not in ("venue", "symbol"):
                    t.add_row(k.replace("_", " "), "none" if v is None else str(v))
            out.print(t)
        return
    rows = venue_rows(configured, loaded)
    if as_json:
        from dataclasses import asdict

        print(json.dumps([asdict(r) for r in rows]))
        return
    t = Table(title="venues")
    for c in ("venue", "configured", "markets", "spot", "swap", "other", "no precision", "precision mode",
              "source"):
        t.add_column(c, justify="right" if c in ("markets", "spot", "swap", "other", "no precision") else "left")
    for r in rows:
        t.add_row(r.venue, "yes" if r.configured else "no", "none" if r.markets is None else f"{r.markets:,}",
                  str(r.spot), str(r.swap), str(r.other), str(r.incomplete), r.precision_mode or "",
                  r.source or "none: no metadata, its instruments are not traded (give --markets, or --online)")
    out.print(t)


@venues_app.command("snapshot")
def venues_snapshot(
    venue: Annotated[str, typer.Argument(help="ccxt exchange id (binance, okx, bybit, kraken, coinbase, ...)")],
    out_path: Annotated[Path, typer.Option("--out", help="the snapshot file to write (JSON)")],
    from_dump: Annotated[Path | None, typer.Option(
        "--from-dump", help="write it from this recorded ccxt dump instead of the venue (no network)")] = None,
    timeout_s: Annotated[float, typer.Option("--timeout-s", min=0.1, help="network timeout, seconds")] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON document on stdout")] = False,
) -> None:
    """Store one venue's markets as a snapshot: from the venue (ccxt load_markets) or from a recorded dump."""
    from headrace.cli import _fail
    from sources.market_metadata import load_snapshot, write_snapshot

    try:
        if out_path.is_dir():
            raise DataSourceError(str(out_path), "is a folder: --out names the snapshot file")
        if from_dump is not None:
            vm = load_markets_file(from_dump)  # a dump (or a snapshot); markets without precision are left out
            raw, source, mode = vm.raw, str(from_dump), vm.precision_mode
        else:
            raw, mode = fetch_markets_online(venue, timeout_s)
            source = "venue"
        try:
            write_snapshot(out_path, venue, raw, source=source, precision_mode=mode)
        except OSError as e:
            raise DataSourceError(str(out_path), f"cannot write the snapshot ({e.strerror or e})") from None
        written = load_snapshot(out_path)
    except HeadraceError as e:
        raise _fail(e) from None
    doc = {"venue": venue, "out": str(out_path), "markets": len(written.markets),
           "precision_mode": written.precision_mode, "source": source}
    if as_json:
        print(json.dumps(doc))
    else:
        print(f"wrote {doc['markets']:,} markets of {venue} ({doc['precision_mode']}, from {source}) to {out_path}")


# ---------------------------------------------------------------------------------------------------
# headrace live / headrace paper


def credentials(venue: str, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """Return the venue's API key and secret from ``HEADRACE_API_KEY_<VENUE>`` / ``HEADRACE_API_SECRET_<VENUE>``.

    A missing or empty variable is an error naming the variable (never a value).

    >>> credentials("binance", {"HEADRACE_API_KEY_BINANCE": "k"})
    Traceback (most recent call last):
    ...
    headrace.cli_venues.VenueError: missing environment variable HEADRACE_API_SECRET_BINANCE (the API secret of binance)
    """
    env = os.environ if environ is None else environ
    found = []
    for pattern, what in ((KEY_VAR, "API key"), (SECRET_VAR, "API secret")):
        name = pattern.format(venue.upper())
        value = env.get(name, "")
        if not value.strip():
            raise VenueError(f"missing environment variable {name} (the {what} of {venue})")
        found.append(value)
    return found[0], found[1]


def password(venue: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Return the venue's API password (passphrase) from ``HEADRACE_API_PASSWORD_<VENUE>`` when ccxt says the venue
    needs one (OKX, Coinbase Exchange), else None; a needed but missing one is an error naming the variable.

    >>> password("binance", {}) is None
    True
    >>> password("okx", {})
    Traceback (most recent call last):
    ...
    headrace.cli_venues.VenueError: missing environment variable HEADRACE_API_PASSWORD_OKX (the API password of okx)
    """
    env = os.environ if environ is None else environ
    if not _ccxt_class(venue)().requiredCredentials.get("password"):
        return None
    name = PASSWORD_VAR.format(venue.upper())
    value = env.get(name, "")
    if not value.strip():
        raise VenueError(f"missing environment variable {name} (the API password of {venue})")
    return value


def _live_exchange(venue: str, testnet: bool) -> Any:
    """A ccxt exchange for `venue` holding its keys, in sandbox mode for the testnet (no request is made)."""
    key, secret = credentials(venue)
    keys = {"apiKey": key, "secret": secret, "enableRateLimit": True}
    if (phrase := password(venue)) is not None:
        keys["password"] = phrase
    ex = _ccxt_class(venue)(keys)
    del key, secret, keys, phrase
    if testnet:
        try:
            ex.set_sandbox_mode(True)
        except Exception:  # noqa: BLE001 - ccxt raises NotSupported, or fails inside, when it has no test URLs
            raise VenueError(f"venue {venue!r} has no testnet in ccxt (no sandbox URLs): drop --testnet only "
                             "if you mean real money") from None
    return ex


VenuesOpt = Annotated[list[str] | None, typer.Option("--venue", help="ccxt exchange id (repeatable); each --symbol "
                                                                   "is taken on each --venue")]
SymbolsOpt = Annotated[list[str] | None, typer.Option("--symbol", help="BASE/QUOTE to trade on the --venue(s) "
                                                                      "(repeatable)")]
InstrumentsOpt = Annotated[list[str] | None, typer.Option("--instrument", help="venue:BASE/QUOTE (repeatable)")]
DurationOpt = Annotated[str | None, typer.Option("--duration", help="stop after this long (30s, 10m, 2h); "
                                                                     "default: until Ctrl-C or SIGTERM")]
MaxItemsOpt = Annotated[int | None, typer.Option("--max-items", min=1, help="stop after this many market data "
                                                                            "messages (all instruments)")]
ConfigPathOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file (default: built-in)")]
SetsOpt = Annotated[list[str] | None, typer.Option("--set", help="override one config key: KEY=VALUE (TOML)")]
DbOption = Annotated[str | None, typer.Option("--db", help="ClickHouse DSN (overrides storage.dsn)")]
RunIdOpt = Annotated[str | None, typer.Option("--run-id", help="id of this run (default: new)")]
JsonOption = Annotated[bool, typer.Option("--json", help="print one JSON document on stdout")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="log lifecycle events")]


def wall_clock() -> int:
    """Epoch ns: the one wall clock of paper and live mode, handed to the source and the venues."""
    import time

    return time.time_ns()


def _venue_names(venue: list[str] | None, instrument: list[str] | None) -> list[str]:
    names = {v.lower() for v in venue or []} | {i.partition(":")[0].lower() for i in instrument or [] if ":" in i}
    for v in sorted(names):
        _ccxt_class(v)
    if not names:
        raise VenueError("no venue given: use --venue V --symbol BASE/QUOTE, or --instrument venue:BASE/QUOTE")
    return sorted(names)


def live(
    venue: VenuesOpt = None,
    symbol: SymbolsOpt = None,
    instrument: InstrumentsOpt = None,
    testnet: Annotated[bool, typer.Option("--testnet", help="trade on the venue's testnet (ccxt sandbox mode)")]
    = False,
    live_: Annotated[bool, typer.Option("--live", help="really send orders (without it nothing is sent)")] = False,
    duration: DurationOpt = None,
    max_items: MaxItemsOpt = None,
    config: ConfigPathOpt = None,
    set_: SetsOpt = None,
    db: DbOption = None,
    run_id: RunIdOpt = None,
    as_json: JsonOption = False,
    verbose: VerboseOpt = False,
) -> None:
    """Trade on live venues with real orders: only with --live; keys from HEADRACE_API_KEY_<VENUE> and
    HEADRACE_API_SECRET_<VENUE>; --testnet for the venues' test servers. Needs [router] enabled = true."""
    from headrace.cli import _error_line, _fail, _setup

    try:
        cfg = _setup(config, set_, verbose)
        names = _venue_names(venue, instrument)
        if not live_:
            _error_line("refusing to trade: add --live to send real orders")
            raise typer.Exit(2)
        for v in names:
            del_ex = _live_exchange(v, testnet)  # keys present, sandbox available: checked before anything else
            del del_ex
        where = "testnet (ccxt sandbox mode)" if testnet else "real-money venue"
        logger.info("live: %s %s, API key and secret found in the environment", ", ".join(names), where)
        if not cfg.router.enabled:
            from headrace.errors import ConfigError

            raise ConfigError("router.enabled", "live trading sends routed children, which need market metadata: "
                                                "set [router] enabled = true (with router.markets, or the venues' "
                                                "own markets loaded online)")
    except HeadraceError as e:
        raise _fail(e) from None
    _run_mode("live", venue, symbol, instrument, duration, max_items, config, set_, db, run_id, as_json, verbose,
              testnet=testnet)


def paper(
    venue: VenuesOpt = None,
    symbol: SymbolsOpt = None,
    instrument: InstrumentsOpt = None,
    markets: MarketsOpt = None,
    duration: DurationOpt = None,
    max_items: MaxItemsOpt = None,
    config: ConfigPathOpt = None,
    set_: SetsOpt = None,
    db: DbOption = None,
    run_id: RunIdOpt = None,
    as_json: JsonOption = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run the flow on live market data with simulated execution (paper trading): no key, no order sent."""
    extra = [f"router.markets={json.dumps([str(m) for m in markets])}"] if markets else []
    _run_mode("paper", venue, symbol, instrument, duration, max_items, config, [*(set_ or []), *extra], db, run_id,
              as_json, verbose)


def _live_venues(cfg: Any, names: list[str], testnet: bool) -> dict[str, Any]:
    """One `CcxtVenue` per venue, with the keys of the environment (never shown), sandbox for the testnet and
    ``live.rest_urls`` overrides. Its rate limiter and backoff run on the wall clock (``time.time_ns``)."""
    from flows.live import rest_url_overrides
    from operators.execution.venue import Credentials
    from sinks.ccxt_venue import CcxtVenue

    out = {}
    for v in names:
        base = _ccxt_class(v)()
        if testnet:
            base.set_sandbox_mode(True)
        rest = cfg.live.rest_urls.get(v)
        urls = rest_url_overrides(base.urls["api"], rest) if rest else None
        key, secret = credentials(v)
        # the venue's own markets (load_markets through its rate limiter): what orders are sent with
        out[v] = CcxtVenue(v, Credentials(key, secret, password(v)), sandbox=testnet, urls=urls,
                           throttle_alert_s=cfg.live.throttle_alert_s)
        del key, secret
    return out


def _live_overrides(cfg: Any, venues: Mapping[str, Any], instruments: tuple[str, ...], offline: Mapping[str, Any],
                    run_id: str) -> list[str]:
    """Config overrides for live mode: markets of venues without offline metadata (loaded from the venue and
    stored as a snapshot under the state dir) and, unless ``account.balances`` is set, the venues' balances of
    the quote currencies traded, so that the first reconciliation starts from the venues' truth."""
    from sources.market_metadata import MODES, write_snapshot

    extra: list[str] = []
    added = []
    for v, venue in sorted(venues.items()):
        if v in offline:
            continue
        venue.markets()  # online load_markets through the venue's rate limiter
        path = Path(cfg.storage.state_dir) / "markets" / f"{v}-{run_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_snapshot(path, v, dict(venue.exchange.markets), source="venue",
                       precision_mode=MODES[venue.exchange.precisionMode])
        added.append(str(path))
    if added:
        extra.append(f"router.markets={json.dumps([*cfg.router.markets, *added])}")
    if not cfg.account.balances:
        quotes = {(i.partition(":")[0], i.rpartition("/")[2]) for i in instruments}
        held: dict[str, float] = {f"{v}:{c}": 0.0 for v, c in sorted(quotes)}
        for v, venue in sorted(venues.items()):
            for b in venue.fetch_balances():
                if (v, b.currency) in quotes:
                    held[f"{v}:{b.currency}"] = float(b.total)
        extra.append("account.balances={" + ", ".join(f"{json.dumps(k)} = {x!r}" for k, x in held.items()) + "}")
    return extra


def _run_mode(mode: str, venue: list[str] | None, symbol: list[str] | None, instrument: list[str] | None,
              duration: str | None, max_items: int | None, config_path: Path | None, overrides: list[str] | None,
              db: str | None, run_id: str | None, as_json: bool, verbose: bool, *, testnet: bool = False) -> None:
    """Run paper or live mode to its end (Ctrl-C/SIGTERM, --duration, --max-items) and print the summary."""
    import time

    from flows.live import LiveBounds, build_live_flow, live_exchange_factory, parse_instruments, venue_market_files
    from flows.runner import (
        Interrupted,
        interruption,
        native_stderr_hidden,
        new_run_id,
        run,
        start_run,
        stop_on_signals,
    )
    from flows.trading import wiring
    from headrace import report
    from headrace.cli import (
        _checked_dsn,
        _error_line,
        _fail,
        _json_default,
        _print_summary,
        _setup,
        _store,
    )
    from headrace.config import parse_duration
    from headrace.errors import ConfigError
    from operators.execution.reconcile import Tolerance
    from sinks.clickhouse import redact
    from sources.live import LiveSource

    t0 = time.perf_counter()
    try:
        with stop_on_signals() as stop:
            cfg = _setup(config_path, overrides, verbose)
            names = _venue_names(venue, instrument)
            instruments = parse_instruments(list(venue or []), list(symbol or []), list(instrument or []))
            try:
                duration_ns = None if duration is None else parse_duration(duration)
            except ValueError as e:
                raise ConfigError("--duration", str(e)) from None
            if duration_ns is not None and duration_ns <= 0:
                raise ConfigError("--duration", f"must be more than 0, was {duration!r}")
            run_id = run_id or new_run_id()
            executor = None
            if mode == "live":
                from decimal import Decimal

                from sinks.ccxt_executor import CcxtExecutor

                offline = venue_market_files(cfg) if cfg.router.markets else {}
                venues = _live_venues(cfg, names, testnet)
                more = _live_overrides(cfg, venues, instruments, offline, run_id)
                if more:
                    overrides = [*(overrides or []), *more]
                    cfg = _setup(config_path, overrides, verbose)
                lv = cfg.live
                executor = CcxtExecutor(cfg.account.id, venues, tolerance=Tolerance(
                    absolute=Decimal(str(lv.balance_tolerance)), relative=Decimal(str(lv.balance_tolerance_rel))),
                    fills_window_ns=parse_duration(lv.fills_window), throttle_alert_s=lv.throttle_alert_s)
            wiring(cfg, instruments)  # fails early: currencies without rates, no instrument the router may use
            dsn = _checked_dsn(db or cfg.dsn())
            store = _store(cfg, dsn)
            record = start_run(store, run_id, mode=mode, config=cfg, data=list(instruments), resuming=False)
            feed = LiveSource(instruments, clock=wall_clock, exchange_factory=live_exchange_factory(cfg),
                              channels=("trades", "quotes"))
            deadline = None if duration_ns is None else wall_clock() + duration_ns
            source = LiveBounds(feed, clock=wall_clock, stop=stop, deadline_ns=deadline, max_items=max_items)
            flow = build_live_flow(cfg, instruments, run_id, clock=wall_clock, source=source, executor=executor,
                                   dsn=store.dsn)
            logger.info("%s starting run_id=%s instruments=%s", mode, run_id, ",".join(instruments))
            if not as_json:
                _error_line(f"{mode}: run {run_id} on {', '.join(instruments)}; Ctrl-C stops it", prefix="")
            try:
                with native_stderr_hidden() as native:
                    run(flow, workers=1, epoch_s=2.0)
            except Exception as e:
                if (why := interruption(e)) is not None:
                    record.interrupt(why)
                    raise why from None
                record.fail(e)
                logger.error("%s failed run_id=%s error=%s\n%s", mode, run_id, type(e.__cause__ or e).__name__,
                             native.getvalue().decode(errors="replace") if verbose else "")
                cause = e.__cause__ or e
                if isinstance(cause, HeadraceError):
                    raise cause from e
                if isinstance(cause, Exception):
                    raise HeadraceError(f"{mode} run {run_id} failed: {type(cause).__name__}: "
                                        f"{_short(cause)}") from e
                raise
            except Interrupted as e:
                record.interrupt(e)
                raise
            store.wait_for_mutations()
            summary = report.summarize(store, run_id, events_in=source.counters.rows,
                                       initial_equity=report.initial_equity(cfg), wall_s=time.perf_counter() - t0,
                                       store=redact(store.dsn), config=cfg)
            ended = source.counters.ended or "end of data"
            record.finish(summary.to_dict() | {"ended": ended})
    except Interrupted as e:
        _error_line(f"{e}; the run is marked interrupted", prefix="")
        raise typer.Exit(e.exit_code) from None
    except HeadraceError as e:
        raise _fail(e) from None
    if as_json:
        print(json.dumps(summary.to_dict() | {"mode": mode, "ended": ended}, default=_json_default))
    else:
        _print_summary(summary)
        _error_line(f"{mode} run {run_id} ended: {ended}", prefix="")


def register(app: typer.Typer) -> None:
    """Add `venues` (with `venues snapshot`), `live` and `paper` to the `headrace` command line."""
    app.add_typer(venues_app, name="venues")
    app.command("live")(live)
    app.command("paper")(paper)
