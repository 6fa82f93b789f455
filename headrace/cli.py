"""The `headrace` command line (Typer + Rich).

Results go to stdout (with ``--json``: exactly one JSON document); progress bars, logs and errors go to
stderr. Errors that are the user's to fix (config, data, storage) print one line naming what is wrong
and exit with status 2.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from headrace import report
from headrace.config import Config, load_config
from headrace.errors import HeadraceError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="headrace: a streaming trading engine.")
db_app = typer.Typer(no_args_is_help=True, help="The ClickHouse store: create tables, run SQL.")
app.add_typer(db_app, name="db")
runs_app = typer.Typer(help="The runs in the store: list them (the default), delete one.")
app.add_typer(runs_app, name="runs")
data_app = typer.Typer(no_args_is_help=True, help="Data files: see what a replay will read.")
portfolio_app = typer.Typer(no_args_is_help=True, help="The portfolio engine: forecast against outcome.")
app.add_typer(portfolio_app, name="portfolio")
ml_app = typer.Typer(no_args_is_help=True, help="Online models: compare, explain, export and import them.")
app.add_typer(ml_app, name="ml")
app.add_typer(data_app, name="data")
dashboards_app = typer.Typer(no_args_is_help=True, help="Grafana dashboards: push them to a Grafana server.")
app.add_typer(dashboards_app, name="dashboards")
from headrace.cli_risk import register as register_risk  # noqa: E402  # risk, risk stress, halt, reduce, resume
from headrace.cli_venues import register  # noqa: E402  # venues, venues snapshot, live, paper

register(app)
register_risk(app)

out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 240)  # piped: no truncated tables
err = Console(stderr=True, soft_wrap=True)  # one line per message, whatever the terminal's width
logger = logging.getLogger("headrace")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file (default: built-in)")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override one config key: KEY=VALUE (TOML)")]
DbOpt = Annotated[str | None, typer.Option("--db", help="ClickHouse DSN (overrides storage.dsn)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document on stdout")]


def _error_line(text: str, prefix: str = "error: ") -> None:
    # plain text on stderr, one line: never wrapped at the terminal's width, never styled into pieces
    line = " ".join(str(text).split())
    sys.stderr.write(f"{prefix}{line}\n")
    sys.stderr.flush()


def _fail(e: Exception) -> typer.Exit:
    _error_line(str(e))
    return typer.Exit(2)


def _check_config_file(path: Path) -> None:
    # what load_config would otherwise report as a traceback: a folder, an unreadable or non-UTF-8 file
    from headrace.errors import ConfigError

    shown = str(path)
    if path.is_dir():
        raise ConfigError("--config", f"{shown!r} is a directory, not a TOML file")
    try:
        path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return  # load_config names it
    except UnicodeDecodeError as e:
        raise ConfigError("--config", f"file {shown!r} is not UTF-8 text (byte {e.start}): is it a TOML file?") from e
    except OSError as e:
        raise ConfigError("--config", f"cannot read {shown!r}: {e.strerror or e}") from e


def _setup(config_path: Path | None, overrides: list[str] | None, verbose: bool = False) -> Config:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if not verbose:  # the driver logs a warning before the error we turn into one line
        logging.getLogger("clickhouse_connect").setLevel(logging.ERROR)
    if config_path is not None:
        _check_config_file(config_path)
    config = load_config(config_path, overrides or [])
    sys.stderr.writelines(f"warning: {m}\n" for m in config.deprecations)  # one line per deprecated key used
    return config


def _store(config: Config, dsn: str | None, *, read: bool = False) -> Any:
    """The store of `dsn` (default: the config's). `read`: a read command, which never creates a store and
    waits up to storage.lock_wait_s for a replay holding an embedded one."""
    from sinks.clickhouse import Store

    st = config.storage
    store = Store.connect(dsn or config.dsn(), create=not read, connect_timeout_s=st.connect_timeout_s,
                          read_timeout_s=st.read_timeout_s, lock_wait_s=st.lock_wait_s if read else 0.0,
                          on_wait=lambda m: _error_line(m, prefix=""))
    store.init_schema()
    return store


def _json_default(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    return str(v)


@app.command()
def replay(
    data: Annotated[list[str], typer.Option("--data", "-d", help="data file or folder (repeatable)")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    db: DbOpt = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="id of this run (default: new)")] = None,
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="Bytewax worker threads")] = 1,
    recovery_dir: Annotated[Path | None, typer.Option(
        "--recovery-dir", help="snapshot state here; the same command resumes a killed run")] = None,
    snapshot_s: Annotated[float, typer.Option("--snapshot-s", min=0.01, help="seconds between snapshots")] = 2.0,
    venue: Annotated[str | None, typer.Option(
        "--venue", help="ccxt venue id for files whose path names none (= --set replay.venue=...)")] = None,
    symbol: Annotated[str | None, typer.Option(
        "--symbol", help="BASE/QUOTE for files whose path names none (= --set replay.symbol=...)")] = None,
    quote: Annotated[str | None, typer.Option(
        "--quote", help="quote currency of wide price tables (= --set replay.quote=...)")] = None,
    timerange: Annotated[str | None, typer.Option(
        "--timerange", help="START:END, ISO dates or date-times (END excluded; either side may be empty)")] = None,
    timeframe: Annotated[str | None, typer.Option(
        "--timeframe", help="replay only bar files of this length (1m, 5m, ...); ticks make bars of it")] = None,
    max_quarantined: Annotated[float | None, typer.Option(
        "--max-quarantined", min=0.0, max=1.0,
        help="fail when more than this fraction of rows is quarantined (= --set validation.max_quarantined=...)")]
    = None,
    as_json: JsonOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log lifecycle events")] = False,
    scenario: Annotated[str | None, typer.Option(
        "--scenario", help="a named scenario shipped with headrace (its config, files under --data, markets)")]
    = None,
) -> None:
    """Replay recorded market data through the trading flow (a backtest) and print a summary."""
    if scenario is not None:
        from headrace import scenarios

        if config is not None:
            _error_line("--scenario brings its own config: use --set to change a key, not --config")
            raise typer.Exit(2)
        try:
            sc = scenarios.load(scenario, data)
        except HeadraceError as e:
            raise _fail(e) from None
        data, config, set_ = list(sc.files), sc.config, [*sc.overrides, *(set_ or [])]
    set_ = [*(set_ or []), *([f"replay.venue={json.dumps(venue)}"] if venue else []),
            *([f"replay.symbol={json.dumps(symbol)}"] if symbol else []),
            *([f"replay.quote={json.dumps(quote)}"] if quote else []),
            *([f"replay.timeframe={json.dumps(timeframe)}"] if timeframe else []),
            *([f"validation.max_quarantined={max_quarantined!r}"] if max_quarantined is not None else [])]
    from flows.runner import Interrupted

    try:
        summary, too_many = _replay(data, config, set_, db, run_id, workers, recovery_dir, snapshot_s, quiet,
                                    verbose, timerange or "", timeframe or "")
    except Interrupted as e:
        _error_line(f"{e}; the same command resumes" if recovery_dir is not None else
                    f"{e}; the run is marked interrupted (resume needs --recovery-dir)", prefix="")
        raise typer.Exit(e.exit_code) from None
    except HeadraceError as e:
        raise _fail(e) from None
    if as_json:
        print(json.dumps(summary.to_dict(), default=_json_default))
    else:
        _print_summary(summary)
    if too_many:
        _error_line(too_many)
        raise typer.Exit(2)


def _replay(data: list[str], config_path: Path | None, overrides: list[str] | None, dsn: str | None,
            run_id: str | None, workers: int, recovery_dir: Path | None, snapshot_s: float, quiet: bool,
            verbose: bool, timerange: str = "", timeframe: str = "") -> tuple[report.Summary, str | None]:
    """Run one replay; return its summary and, when it quarantined too much, the one line saying so."""
    from flows.runner import (
        Interrupted,
        StoppableSource,
        identity,
        interruption,
        native_stderr_hidden,
        new_run_id,
        prepare_recovery,
        run,
        start_run,
        stop_on_signals,
    )
    from flows.trading import build_flow, wiring
    from headrace.errors import ConfigError
    from sinks.clickhouse import redact
    from sources.replay import ReplaySource
    from sources.select import open_plan

    t0 = time.perf_counter()
    with stop_on_signals() as stop:  # from here, SIGINT and SIGTERM end the run at a slice boundary
        config = _setup(config_path, overrides, verbose)
        # files are read in batches as the flow runs (a --timerange reads them whole)
        plan = open_plan(data, config, timerange=timerange, timeframe=timeframe)
        wiring(config, plan.universe)  # fails early on currencies without rates
        dsn = _checked_dsn(dsn or config.dsn())
        resuming = False
        if recovery_dir is not None:  # only once data and config are known good: a failed start leaves no run
            run_id, resuming = prepare_recovery(recovery_dir, run_id, identity(config, plan.files, dsn))
        run_id = run_id or new_run_id()
        store = _store(config, dsn)
        record = start_run(store, run_id, mode="replay", config=config, data=data, resuming=resuming)
        logger.info("replay starting run_id=%s instruments=%d rows=%d slices<=%d resuming=%s", run_id,
                    len(plan.universe), plan.total_rows, plan.max_slices, resuming)

        progress = Progress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
                            TimeElapsedColumn(), console=err, disable=quiet, transient=False)
        task = progress.add_task("replay", total=plan.total_rows)
        source = StoppableSource(ReplaySource(plan, lambda n: progress.advance(task, n)), stop)
        flow = build_flow(plan, config, run_id, dsn=store.dsn, source=source)  # type: ignore[arg-type]  # wraps one
        if recovery_dir is None:
            snapshot_s = max(snapshot_s, 10.0)  # epochs only pace sink flushes then: keep them long
        with progress:
            try:
                with native_stderr_hidden() as native:  # Bytewax's panic text: shown with --verbose only
                    run(flow, workers=workers, epoch_s=snapshot_s, recovery_dir=recovery_dir)
            except Exception as e:
                if (why := interruption(e)) is not None:
                    record.interrupt(why)
                    logger.info("replay interrupted run_id=%s", run_id)
                    raise why from None
                record.fail(e)
                logger.error("replay failed run_id=%s error=%s\n%s", run_id, type(e.__cause__ or e).__name__,
                             native.getvalue().decode(errors="replace") if verbose else "")
                cause = e.__cause__ or e
                if isinstance(cause, HeadraceError):
                    raise cause from e
                raise
            except Interrupted as e:  # a second signal, while the flow was between batches
                record.interrupt(e)
                raise
        store.wait_for_mutations()  # deletes of an earlier run under this id (started before the flow)
        if resuming:  # only a resumed run can have written rows twice; readers use FINAL in any case
            store.optimize(run_id=run_id)
        wall = time.perf_counter() - t0
        if config.account.initial_cash <= 0:  # pragma: no cover - validated
            raise ConfigError("account.initial_cash", "must be > 0")
        summary = report.summarize(store, run_id, events_in=plan.total_rows,
                                   initial_equity=report.initial_equity(config), wall_s=wall, store=redact(store.dsn),
                                   config=config)
        limit, too_many = config.validation.max_quarantined, None
        if summary.events_in and summary.events_quarantined > limit * summary.events_in:
            too_many = (f"{summary.events_quarantined:,} of {summary.events_in:,} rows "
                        f"({summary.events_quarantined / summary.events_in:.1%}) were quarantined, more than "
                        f"validation.max_quarantined = {limit:g}: run {run_id!r} failed (its rows and the "
                        "reasons are in the quarantine table)")
            record.finish(summary.to_dict(), status="failed", error=too_many)
        else:
            record.finish(summary.to_dict())
    logger.info("replay finished run_id=%s wall_s=%.2f", run_id, wall)
    return summary, too_many


def _checked_dsn(dsn: str) -> str:
    from sinks.clickhouse import check_dsn

    return check_dsn(dsn)


def _print_summary(s: report.Summary) -> None:
    from rich.markup import escape

    t = Table(title=f"replay {s.run_id}", show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    ccy = s.currency

    def num(x: float | None, fmt: str) -> str:
        return "n/a" if x is None else format(x, fmt)

    first = "none" if s.first_decision_ts is None else \
        datetime.fromtimestamp(s.first_decision_ts / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    rows = [
        ("events in", f"{s.events_in:,}"),
        ("events quarantined", f"{s.events_quarantined:,} ({s.quarantined_fraction:.2%})"),
        ("bars", f"{s.bars:,}"), ("orders", f"{s.orders:,}"), ("fills", f"{s.fills:,}"),
        ("orders expired unfilled", f"{s.orders_expired:,}"), ("orders skipped", f"{s.orders_skipped:,}"),
        ("fees", f"{s.fees:.8g} {ccy}"), ("initial equity", f"{s.initial_equity:.8g} {ccy}"),
        ("final equity", f"{s.final_equity:.8g} {ccy}"), ("total return", f"{s.total_return:+.2%}"),
        ("CAGR", num(s.cagr, "+.2%")), ("first decision", first),
        ("statistics grid", s.stats_interval or "n/a"),
        ("portfolio", f"{s.portfolio_method or 'n/a'}, {s.rebalances:,} rebalances"
                      + (f", {s.solver_fallbacks:,} solver fallbacks" if s.solver_fallbacks else "")),
        ("online models", "off" if not s.ml_models else
                          f"{s.ml_models} models, {s.ml_predictions:,} predictions, "
                          f"{s.ml_drift_events:,} drift events, blend weight {s.ml_blend_weight:.2f} "
                          f"(headrace ml report --run-id {escape(s.run_id)})"),
        ("risk", "off" if not s.risk_state else
                 f"{s.risk_state}, ES {num(s.risk_es, '.3%')} per bar, {s.risk_denials:,} orders denied, "
                 f"{s.risk_scalings:,} ES scalings, {s.risk_state_changes:,} state changes "
                 f"(headrace risk --run-id {escape(s.run_id)})"),
        ("sharpe (annualised)", num(s.sharpe, ".2f")), ("sortino (annualised)", num(s.sortino, ".2f")),
        ("volatility (annualised)", num(s.volatility, ".2%")),
        ("max drawdown", f"{s.max_drawdown:.2%}"), ("turnover", f"{s.turnover:.2f}x"),
        ("turnover per year", "n/a" if s.turnover_per_year is None else f"{s.turnover_per_year:.2f}x"),
        ("store", escape(s.store) or "n/a"),
        ("wall time", f"{s.wall_s:.2f} s"), ("throughput", f"{s.events_per_s:,.0f} events/s"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    out.print(t)
    if s.quarantined_fraction > report.QUARANTINE_LOUD_FRACTION:  # the figures describe a minority of the input
        err.print(f"[bold red]WARNING: {s.quarantined_fraction:.1%} of the input was quarantined; "
                  "these figures describe only the rest[/]", markup=True, highlight=False, soft_wrap=True)
    for w in s.warnings:
        err.print(f"[yellow]warning:[/] {escape(w)}", markup=True, highlight=False, soft_wrap=True)  # one line


def _report_rows(fetch: Callable[[Any], list[dict[str, Any]]], config: Path | None, overrides: list[str] | None,
                 dsn: str | None, as_json: bool) -> list[dict[str, Any]] | None:
    # rows of a report from the store; with --json they are printed here and None is returned
    try:
        rows = fetch(_store(_setup(config, overrides), dsn, read=True))
    except HeadraceError as e:
        raise _fail(e) from None
    if as_json:
        print(json.dumps(rows, default=_json_default))
        return None
    return rows


@app.command()
def positions(
    run_id: Annotated[str, typer.Option("--run-id", help="the run to show")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a run's last positions per venue and asset, with marks and PnL (quote currency)."""
    rows = _report_rows(lambda store: report.positions(store, run_id), config, set_, db, as_json)
    if rows is None:
        return
    if not rows:
        err.print(f"no positions for run {run_id!r}")
        raise typer.Exit(1)
    t = Table(title=f"positions of run {run_id}")
    for c in ("venue", "asset", "quote", "amount", "avg price", "mark", "unrealised", "realised", "fees",
              "net pnl", "value (account)", "marked at"):
        t.add_column(c, justify="left" if c in ("venue", "asset", "quote", "marked at") else "right")
    for r in rows:
        marked = r["mark_ts"][:16].replace("T", " ") + (" (stale)" if r["stale"] else "")
        t.add_row(r["venue"], r["asset"], r["quote"], f"{r['amount']:.8g}", f"{r['avg_price']:.8g}",
                  f"{r['mark']:.8g}", f"{r['unrealized_pnl']:.6g}", f"{r['realized_pnl']:.6g}", f"{r['fees']:.6g}",
                  f"{r['net_pnl']:.6g}", f"{r['value_account']:.6g}", marked)
    out.print(t)


@portfolio_app.command("report")
def portfolio_report(
    run_id: Annotated[list[str], typer.Option("--run-id", help="the run (repeat to compare runs)")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set each rebalance's ex-ante volatility against the realised volatility of the next period, per run."""
    rows = _report_rows(lambda store: report.portfolio_report(store, run_id), config, set_, db, as_json=False)
    assert rows is not None
    missing = [r for r in dict.fromkeys(run_id) if r not in {str(x["run_id"]) for x in rows}]
    if missing:
        err.print(f"no rebalances recorded for run {', '.join(missing)} (no such run, or portfolio.record_risk "
                  "was off)", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    if as_json:
        print(json.dumps(rows, default=_json_default))
        return
    t = Table(title="forecast against outcome (per-period volatility, fraction of equity)")
    cols = ("run", "method", "rebalances", "periods", "forecast vol", "realised vol", "realised/forecast",
            "bias statistic", "|z|>1.96", "fallbacks", "regime changes", "solve p50 ms", "solve p99 ms")
    for c in cols:
        t.add_column(c, justify="left" if c in ("run", "method") else "right")

    def num(v: Any, fmt: str) -> str:
        return "" if v is None else format(v, fmt)

    for r in rows:
        t.add_row(str(r["run_id"]), str(r["method"]), str(r["rebalances"]), str(r["periods"]),
                  num(r["forecast_vol"], ".4%"), num(r["realised_vol"], ".4%"), num(r["realised_over_forecast"], ".3f"),
                  num(r["bias_statistic"], ".3f"), num(r["outside_95"], ".1%"), str(r["fallbacks"]),
                  str(r["regime_changes"]), num(r["solve_ms_p50"], ".2f"), num(r["solve_ms_p99"], ".2f"))
    out.print(t)
    err.print("bias statistic: standard deviation of period return / forecast volatility; 1 means the covariance "
              "forecast the risk, above 1 it underestimated it (docs/portfolio.md)", highlight=False, soft_wrap=True)


def _ml_num(v: Any, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def _ml_time(ns: int | None) -> str:
    if ns is None:
        return ""
    return datetime.fromtimestamp(ns // 10**9, UTC).strftime("%Y-%m-%d %H:%M:%S") + (
        f".{ns % 10**9:09d}".rstrip("0") if ns % 10**9 else "")


@ml_app.command("report")
def ml_report(
    run_id: Annotated[str, typer.Option("--run-id", help="the run to show")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare a run's models with the rule factors: decision-time IC, prequential scores, drift, blend weight."""
    rows = _report_rows(lambda store: report.ml_report(store, run_id), config, set_, db, as_json=False)
    assert rows is not None
    if not rows:
        err.print(f"no ML rows for run {run_id!r} (no such run, or ml.enabled was off)", highlight=False,
                  soft_wrap=True)
        raise typer.Exit(1)
    if as_json:
        print(json.dumps(rows, default=_json_default))
        return
    t = Table(title=f"models and rule factors of run {run_id}")
    cols = ("name", "mode", "kind", "samples", "ic", "hit rate", "log loss", "mae", "prequential ic",
            "decisions", "drift events", "weight changes", "final weight")
    for c in cols:
        t.add_column(c, justify="left" if c in ("name", "mode", "kind") else "right")
    for r in rows:
        t.add_row(str(r["name"]), str(r["mode"]), str(r["kind"] or ""), str(r["samples"]), _ml_num(r["ic"], ".3f"),
                  _ml_num(r["hit_rate"], ".1%"), _ml_num(r["log_loss"], ".4f"), _ml_num(r["mae"], ".4g"),
                  _ml_num(r["prequential_ic"], ".3f"), str(r["decision_samples"]), str(r["drift_events"]),
                  str(r["weight_changes"]), _ml_num(r["final_weight"], ".3f"))
    out.print(t)
    err.print("ic: Spearman rank correlation of the score offered at each rebalance with the forward return that "
              "followed, the same samples for models and rules (docs/ml.md)", highlight=False, soft_wrap=True)


@ml_app.command("explain")
def ml_explain(
    run_id: Annotated[str, typer.Option("--run-id", help="the run")],
    instrument: Annotated[str, typer.Option("--instrument", help="the instrument, venue:BASE/QUOTE")],
    at: Annotated[str, typer.Option("--at", help="ISO date or time (UTC unless it has an offset): the last "
                                                 "prediction at or before it is shown")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show each model's prediction for an instrument at a time: its features, their contributions, the label."""
    from headrace.config import parse_date_ns
    from headrace.errors import ConfigError

    try:
        at_ns = parse_date_ns(at)
    except ValueError as e:
        raise _fail(ConfigError("--at", str(e))) from None
    rows = _report_rows(lambda store: report.ml_explain(store, run_id, instrument, at_ns), config, set_, db,
                        as_json=False)
    assert rows is not None
    if not rows:
        err.print(f"no prediction of run {run_id!r} for {instrument!r} at or before {at}", highlight=False,
                  soft_wrap=True)
        raise typer.Exit(1)
    if as_json:
        print(json.dumps(rows, default=_json_default))
        return
    for r in rows:
        t = Table(title=f"{r['model']} (version {r['version']}, {r['purpose']}) on {instrument} at "
                        f"{_ml_time(r['ts_event'])}; features of {_ml_time(r['feature_ts'])}")
        for c in ("feature", "value", "contribution"):
            t.add_column(c, justify="left" if c == "feature" else "right")
        for f in r["features"]:
            t.add_row(str(f["name"]), _ml_num(f["value"], ".6g"), _ml_num(f["contribution"], "+.6g"))
        t.add_row("intercept", "", _ml_num(r["intercept"], "+.6g"))
        out.print(t)
        label = ("not known yet" if r["label"] is None
                 else f"{r['label']:+.6g} (known at {_ml_time(r['label_ts'])}, from {r['label_source']})")
        out.print(f"prediction: {_ml_num(r['value'], '.6g') or 'n/a'}  score: {_ml_num(r['score'], '+.4f') or 'n/a'}  "
                  f"label (forward log return): {label}", highlight=False, markup=False)


@ml_app.command("export")
def ml_export(
    run_id: Annotated[str, typer.Option("--run-id", help="the run whose end-of-run model state to export")],
    out_file: Annotated[Path, typer.Option("--out", help="the file to write (gzip of JSON; holds pickles)")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    db: DbOpt = None,
) -> None:
    """Write a run's learnt models to a file another run can start from (`ml import`, or ml.warm_start)."""
    from headrace.ml_export import export_models

    rows = _report_rows(lambda store: report.ml_models(store, run_id), config, set_, db, as_json=False)
    assert rows is not None
    if not rows:
        err.print(f"no model state recorded for run {run_id!r} (no such run, ML was off, or the run did not end)",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    try:
        out_file.write_bytes(export_models(rows, run_id))
    except OSError as e:
        _error_line(f"cannot write {str(out_file)!r}: {e.strerror or e}")
        raise typer.Exit(2) from None
    out.print(f"{out_file}: {len(rows)} model(s) of run {run_id}: {', '.join(r['model'] for r in rows)}",
              highlight=False, markup=False)


@ml_app.command("import")
def ml_import(
    file: Annotated[Path, typer.Argument(help="a file written by `headrace ml export` (load only files you trust)")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Check a model file and copy it into storage.state_dir/models, where ml.warm_start finds it by name."""
    from headrace.ml_export import import_models, load_models

    try:
        cfg = _setup(config, set_)
        path = import_models(file, cfg.storage.state_dir)
        models = load_models(path).models
    except HeadraceError as e:
        raise _fail(e) from None
    name = path.name.removesuffix(".json.gz")
    out.print(f"{path}: {len(models)} model(s): {', '.join(m.model for m in models)}", highlight=False, markup=False)
    out.print(f'use it with: --set ml.warm_start="{name}"', highlight=False, markup=False)


@ml_app.command("train")
def ml_train(
    data: Annotated[list[str], typer.Option("--data", "-d", help="data file or folder (repeatable)")],
    models: Annotated[Path, typer.Option("--models", help="TOML file of [[models]] tables: the candidates")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    db: DbOpt = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="id of the run (default: train-<time>-<hex>)")]
    = None,
    venue: Annotated[str | None, typer.Option(
        "--venue", help="ccxt venue id for files whose path names none (= --set replay.venue=...)")] = None,
    quote: Annotated[str | None, typer.Option(
        "--quote", help="quote currency of wide price tables (= --set replay.quote=...)")] = None,
    as_json: JsonOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Replay the data once with every candidate model in shadow, then rank them by decision-time IC."""
    from flows.runner import Interrupted, new_run_id
    from headrace import ml_train as train

    try:
        candidates = train.load_candidates(models)
    except HeadraceError as e:
        _error_line(str(e))
        raise typer.Exit(1) from None
    set_ = [*(set_ or []), *([f"replay.venue={json.dumps(venue)}"] if venue else []),
            *([f"replay.quote={json.dumps(quote)}"] if quote else []), *train.overrides(candidates)]
    run_id = run_id or f"train-{new_run_id().removeprefix('r')}"
    try:
        summary, too_many = _replay(data, config, set_, db, run_id, 1, None, 2.0, quiet, False)
    except Interrupted as e:
        _error_line(f"{e}; the run is marked interrupted", prefix="")
        raise typer.Exit(e.exit_code) from None
    except HeadraceError as e:
        raise _fail(e) from None
    if too_many:
        _error_line(too_many)
        raise typer.Exit(2)
    rows = _report_rows(lambda store: report.ml_report(store, run_id), config, set_, db, as_json=False)
    assert rows is not None
    if not any(r["mode"] != "rules" for r in rows):
        _error_line(f"run {run_id!r} wrote no ML rows (too little data for a label over ml.horizon_bars?)")
        raise typer.Exit(1)
    ranked = train.rank(rows, candidates)
    if as_json:
        print(json.dumps(ranked, default=_json_default))
        return
    t = Table(title=f"candidates of run {run_id} ({summary.bars:,} bars, {summary.fills:,} fills), best first")
    cols = ("rank", "name", "kind", "algorithm", "pooled", "samples", "ic", "prequential ic", "hit rate",
            "log loss", "drift events")
    for c in cols:
        t.add_column(c, justify="left" if c in ("name", "kind", "algorithm", "pooled") else "right")
    for r in ranked:
        t.add_row("" if r["rank"] is None else str(r["rank"]), str(r["name"]),
                  str(r["kind"] or ("rule factor" if r["mode"] == "rules" else "")), str(r["algorithm"] or ""),
                  "" if r["pooled"] is None else ("pooled" if r["pooled"] else "per instrument"),
                  str(r["samples"]), _ml_num(r["ic"], ".3f"), _ml_num(r["prequential_ic"], ".3f"),
                  _ml_num(r["hit_rate"], ".1%"), _ml_num(r["log_loss"], ".4f"), str(r["drift_events"]))
    out.print(t)
    err.print("ic: Spearman rank correlation of the score offered at each rebalance with the forward return that "
              f"followed; rule factors (unranked) for comparison; details: headrace ml report --run-id {run_id}",
              highlight=False, soft_wrap=True)


@runs_app.callback(invoke_without_command=True)
def runs_(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", min=1, help="how many runs, newest first")] = 20,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the latest runs with their status, headline figures, quarantine and changed config keys."""
    if ctx.invoked_subcommand is not None:
        return
    rows = _report_rows(lambda store: report.runs(store, limit), config, set_, db, as_json)
    if rows is None:
        return
    t = Table(title="runs, newest first")
    right = ("return", "sharpe", "max dd", "fills", "fees", "quarantined")
    for c in ("run id", "mode", "status", "started", "return", "sharpe", "max dd", "fills", "fees", "quarantined",
              "changed from defaults", "data"):
        t.add_column(c, justify="right" if c in right else "left")

    def pct(v: float | None) -> str:
        return "" if v is None else f"{v:+.2%}"

    def quarantined(r: dict[str, Any]) -> str:
        if r["quarantined"] is None:
            return ""
        return f"{r['quarantined']:,} ({r['quarantined_fraction'] or 0:.1%})"

    for r in rows:
        t.add_row(r["run_id"], r["mode"], r["status"], r["started_at"][:19], pct(r["total_return"]),
                  "" if r["sharpe"] is None else f"{r['sharpe']:.2f}",
                  "" if r["max_drawdown"] is None else f"{r['max_drawdown']:.2%}",
                  "" if r["fills"] is None else f"{r['fills']:,}", "" if r["fees"] is None else f"{r['fees']:.6g}",
                  quarantined(r), ", ".join(f"{k}={json.dumps(v)}" for k, v in r["changed"].items()),
                  ", ".join(r["data"]))
    out.print(t)


@runs_app.command("delete")
def runs_delete(
    run_id: Annotated[str, typer.Argument(help="the run to delete")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    db: DbOpt = None,
) -> None:
    """Delete one run: its rows in every table and its line in `runs`."""
    from headrace.errors import StorageError

    try:
        store = _store(_setup(config, set_), db, read=True)  # never creates a store to delete from
        if not store.query("SELECT run_id FROM runs FINAL WHERE run_id = {run:String}", {"run": run_id}):
            raise StorageError(f"no run {run_id!r} in the store (see `headrace runs`)")
        [row] = report.runs_by_id(store, run_id)
        if row["status"] == "running":
            raise StorageError(f"run {run_id!r} is running (process {row['pid']} on {row['host']}); stop it first")
        tables = store.delete_run_now(run_id)
    except HeadraceError as e:
        raise _fail(e) from None
    err.print(f"deleted run {run_id!r} from {len(tables)} tables ({', '.join(tables)})", highlight=False)


@db_app.command("init")
def db_init(config: ConfigOpt = None, set_: SetOpt = None, db: DbOpt = None) -> None:
    """Create every table that does not exist yet (idempotent)."""
    try:
        store = _store(_setup(config, set_), db)
    except HeadraceError as e:
        raise _fail(e) from None
    from sinks.clickhouse import redact

    err.print(f"tables ready in {redact(store.dsn)}")


@db_app.command("query")
def db_query(
    sql: Annotated[str, typer.Argument(help="the SQL to run")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
    write: Annotated[bool, typer.Option("--write", help="allow writes, DDL and deletes (default: read-only)")]
    = False,
) -> None:
    """Run one SQL query against the store, read-only unless --write; --json prints an array of row objects."""
    try:
        store = _store(_setup(config, set_), db, read=not write)
        rows = store.query(sql, readonly=not write)
    except HeadraceError as e:
        raise _fail(e) from None
    except Exception as e:  # noqa: BLE001 - a ClickHouse error in the user's SQL: show its first line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if "READONLY" in first or "readonly mode" in first:
            first = ("the query writes, and `headrace db query` is read-only (ClickHouse readonly = 2): pass "
                     f"--write to change the store ({first})")
        raise _fail(Exception(first)) from None
    if as_json:
        print(json.dumps(rows, default=_json_default))
        return
    t = Table()
    for c in rows[0] if rows else []:
        t.add_column(c)
    for r in rows:
        t.add_row(*(str(v) for v in r.values()))
    out.print(t)


@dashboards_app.command("push")
def dashboards_push(
    url: Annotated[str, typer.Option("--url", envvar="HEADRACE_GRAFANA_URL", help="Grafana base URL")],
    directory: Annotated[Path | None, typer.Option("--dir", help="folder of dashboard JSON (default: dashboards/)")]
    = None,
    folder_uid: Annotated[str | None, typer.Option("--folder-uid", help="Grafana folder to put them in")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload every dashboard, replacing ones with the same uid; the token comes from HEADRACE_GRAFANA_TOKEN."""
    from dataclasses import asdict

    from headrace.dashboards import DASHBOARD_DIR, push

    try:
        pushed = push(directory or DASHBOARD_DIR, url, folder_uid=folder_uid)
    except HeadraceError as e:
        raise _fail(e) from None
    if as_json:
        print(json.dumps([asdict(p) for p in pushed]))
        return
    for p in pushed:
        out.print(f"{p.status}: {p.title} ({p.uid}) version {p.version} at {p.url}")


@app.command()
def diagram(
    write: Annotated[Path | None, typer.Option("--write", help="write the Mermaid text to this file")] = None,
) -> None:
    """Print the trading flow as a Mermaid diagram, generated by bytewax.visualize."""
    from flows.diagram import mermaid

    text = mermaid()
    if write is not None:
        write.write_text(text)
    else:
        print(text, end="")


@app.command()
def synth(
    out_dir: Annotated[Path, typer.Option("--out", help="folder to write Parquet files into")],
    events: Annotated[int, typer.Option("--events", min=1, help="trade and quote events in all")] = 2_000_000,
    seed: Annotated[int, typer.Option("--seed")] = 7,
    duration: Annotated[str, typer.Option("--duration", help="time the events span: 1h, 1d, 7d, ...")] = "1d",
) -> None:
    """Write a seeded synthetic tick set (correlated assets, two venues with a basis) as Parquet."""
    from headrace.config import parse_duration
    from sources import synthetic

    try:
        span_ns = parse_duration(duration)
    except ValueError as e:
        raise _fail(Exception(f"--duration: {e}")) from None
    if span_ns < 60 * 10**9:
        raise _fail(Exception(f"--duration: must be at least 1m, was {duration!r}"))
    paths = synthetic.write(synthetic.generate(events, seed=seed, span_s=span_ns // 10**9), str(out_dir))
    for p in paths:
        print(p)


@data_app.command("list")
def data_list(
    paths: Annotated[list[str], typer.Argument(help="data files or folders")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    venue: Annotated[str | None, typer.Option("--venue", help="venue for files whose path names none")] = None,
    symbol: Annotated[str | None, typer.Option("--symbol", help="BASE/QUOTE for files whose path names none")]
    = None,
    quote: Annotated[str | None, typer.Option("--quote", help="quote currency of wide price tables")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show what each data file will be read as (venue, symbol, kind, timeframe, rows, first and last time)."""
    from sources.formats import ReadOptions, discover
    from sources.select import describe

    try:
        cfg = _setup(config, [*(set_ or []), *([f"replay.quote={json.dumps(quote)}"] if quote else [])])
        if not discover(paths):
            from headrace.errors import DataSourceError

            raise DataSourceError(", ".join(paths), "holds no data files (.csv, .csv.gz, .parquet, .feather)")
        rows = describe(paths, venue=venue or cfg.replay.venue, symbol=symbol or cfg.replay.symbol,
                        options=ReadOptions.from_config(cfg))
    except HeadraceError as e:
        raise _fail(e) from None
    if as_json:
        print(json.dumps(rows))
    else:
        t = Table(title="data files, as a replay reads them")
        for c in ("path", "venue", "symbol", "kind", "timeframe", "rows", "quarantined", "first", "last", "error"):
            t.add_column(c, justify="right" if c in ("rows", "quarantined") else "left")
        for r in rows:
            t.add_row(*("" if r[c] is None else f"{r[c]:,}" if isinstance(r[c], int) else str(r[c])
                        for c in ("path", "venue", "symbol", "kind", "timeframe", "rows", "quarantined", "first",
                                  "last", "error")))
        out.print(t)
    if any(r["error"] for r in rows):
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
