"""The `headrace` command line (Typer + Rich).

Results go to stdout (with ``--json``: exactly one JSON document); progress bars, logs and errors go to
stderr. Errors that are the user's to fix (config, data, storage) print one line naming what is wrong
and exit with status 2.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
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
dashboards_app = typer.Typer(no_args_is_help=True, help="Grafana dashboards: push them to a Grafana server.")
app.add_typer(dashboards_app, name="dashboards")

out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 240)  # piped: no truncated tables
err = Console(stderr=True)
logger = logging.getLogger("headrace")

RUN_FILE = "headrace-run.json"

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file (default: built-in)")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override one config key: KEY=VALUE (TOML)")]
DbOpt = Annotated[str | None, typer.Option("--db", help="ClickHouse DSN (overrides storage.dsn)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document on stdout")]


def _fail(e: Exception) -> typer.Exit:
    err.print(f"[bold red]error:[/] {e}", markup=True, highlight=False)
    return typer.Exit(2)


def _setup(config_path: Path | None, overrides: list[str] | None, verbose: bool = False) -> Config:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = load_config(config_path, overrides or [])
    sys.stderr.writelines(f"warning: {m}\n" for m in config.deprecations)  # one line per deprecated key used
    return config


def _store(config: Config, dsn: str | None) -> Any:
    from sinks.clickhouse import Store

    store = Store.connect(dsn or config.dsn())
    store.init_schema()
    return store


def _new_run_id() -> str:
    return f"r{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


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
    as_json: JsonOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log lifecycle events")] = False,
) -> None:
    """Replay recorded market data through the trading flow (a backtest) and print a summary."""
    set_ = [*(set_ or []), *([f"replay.venue={json.dumps(venue)}"] if venue else []),
            *([f"replay.symbol={json.dumps(symbol)}"] if symbol else [])]
    try:
        summary = _replay(data, config, set_, db, run_id, workers, recovery_dir, snapshot_s, quiet, verbose)
    except HeadraceError as e:
        raise _fail(e) from None
    if as_json:
        print(json.dumps(summary.to_dict(), default=_json_default))
    else:
        _print_summary(summary)


def _replay(data: list[str], config_path: Path | None, overrides: list[str] | None, dsn: str | None,
            run_id: str | None, workers: int, recovery_dir: Path | None, snapshot_s: float, quiet: bool,
            verbose: bool) -> report.Summary:
    from flows.runner import run
    from flows.trading import build_flow, wiring
    from headrace.errors import ConfigError
    from sources.formats import read_paths
    from sources.replay_plan import ReplayPlan

    t0 = time.perf_counter()
    config = _setup(config_path, overrides, verbose)
    frames = read_paths(data, venue=config.replay.venue, symbol=config.replay.symbol)
    plan = ReplayPlan.build(frames, config.replay.chunk_rows)
    wiring(config, plan.universe)  # fails early on currencies without rates
    resuming = False
    if recovery_dir is not None:  # only once data and config are known good: a failed start leaves no run
        run_id, resuming = _prepare_recovery(recovery_dir, run_id, _identity(config, plan.files, dsn))
    run_id = run_id or _new_run_id()
    store = _store(config, dsn)
    if not resuming:
        _forget_run(store, run_id)
    now = datetime.now(UTC)
    run_row = [run_id, "replay", "running", now, now, json.dumps(config.to_dict(redacted=True)),
               json.dumps([str(Path(p)) for p in data]), "{}"]
    columns = ["run_id", "mode", "status", "started_at", "updated_at", "config", "data", "summary"]
    store.insert_rows("runs", [run_row], columns)
    logger.info("replay starting run_id=%s instruments=%d rows=%d slices=%d resuming=%s", run_id,
                len(plan.universe), plan.total_rows, plan.n_slices, resuming)

    progress = Progress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
                        TimeElapsedColumn(), console=err, disable=quiet, transient=False)
    task = progress.add_task("replay", total=plan.total_rows)
    flow = build_flow(plan, config, run_id, dsn=store.dsn, progress=lambda n: progress.advance(task, n))
    if recovery_dir is None:
        snapshot_s = max(snapshot_s, 10.0)  # epochs only pace sink flushes then: keep them long
    with progress:
        try:
            run(flow, workers=workers, epoch_s=snapshot_s, recovery_dir=recovery_dir)
        except Exception as e:
            cause = e.__cause__ or e
            run_row[2], run_row[4] = "failed", datetime.now(UTC)
            run_row[7] = json.dumps({"error": f"{type(cause).__name__}: {cause}"[:2000]})
            store.insert_rows("runs", [run_row], columns)
            logger.error("replay failed run_id=%s error=%s", run_id, type(cause).__name__)
            if isinstance(cause, HeadraceError):
                raise cause from e
            raise
    store.wait_for_mutations()  # deletes of an earlier run under this id (started before the flow)
    if resuming:  # only a resumed run can have written rows twice; readers use FINAL in any case
        store.optimize(run_id=run_id)
    wall = time.perf_counter() - t0
    if config.account.initial_cash <= 0:  # pragma: no cover - validated
        raise ConfigError("account.initial_cash", "must be > 0")
    summary = report.summarize(store, run_id, events_in=plan.total_rows,
                               initial_equity=config.account.initial_cash, wall_s=wall)
    done = datetime.now(UTC)
    run_row[2], run_row[4], run_row[7] = "finished", done, json.dumps(summary.to_dict())
    store.insert_rows("runs", [run_row], columns)
    logger.info("replay finished run_id=%s wall_s=%.2f", run_id, wall)
    return summary


def _identity(config: Config, files: tuple[str, ...], dsn: str | None) -> dict[str, Any]:
    # what a resumed run must share with the run it resumes: the same config, the same files unchanged, the
    # same database (a snapshot's offsets mean nothing over other data, and rows must land where the rest are)
    from sinks.clickhouse import redact

    return {"config": config.to_dict(redacted=True), "db": redact(dsn or config.dsn()),
            "files": {f: [Path(f).stat().st_size, Path(f).stat().st_mtime_ns] for f in files}}


def _first_difference(saved: Any, now: Any, key: str = "") -> str | None:
    if isinstance(saved, dict) and isinstance(now, dict):
        for k in sorted(set(saved) | set(now)):
            if (d := _first_difference(saved.get(k), now.get(k), f"{key}.{k}" if key else str(k))) is not None:
                return d
        return None
    return None if saved == now else f"{key}: was {saved!r}, now {now!r}"


def _prepare_recovery(recovery_dir: Path, run_id: str | None, identity: dict[str, Any]) -> tuple[str, bool]:
    from flows.runner import init_recovery
    from headrace.errors import ConfigError

    run_file = recovery_dir / RUN_FILE
    if run_file.exists():
        saved = json.loads(run_file.read_text())
        if run_id and run_id != saved["run_id"]:
            raise ConfigError("--run-id", f"the recovery dir {str(recovery_dir)!r} holds run {saved['run_id']!r}, "
                                          f"not {run_id!r}; use another --recovery-dir for a new run")
        if (diff := _first_difference(saved.get("identity"), identity)) is not None:
            raise ConfigError("--recovery-dir", f"{str(recovery_dir)!r} holds run {saved['run_id']!r}, started with "
                                                f"other settings or data ({diff}); resume it with the same command, "
                                                "or start a new run with another --recovery-dir")
        return str(saved["run_id"]), True
    recovery_dir.mkdir(parents=True, exist_ok=True)
    if any(recovery_dir.iterdir()):
        raise ConfigError("--recovery-dir", f"{str(recovery_dir)!r} is not empty and holds no headrace run")
    init_recovery(recovery_dir)
    run_id = run_id or _new_run_id()
    run_file.write_text(json.dumps({"run_id": run_id, "identity": identity}, indent=1))
    return run_id, False


def _forget_run(store: Any, run_id: str) -> None:
    # a fresh run reusing an id replaces the old run's rows instead of mixing with them; the deletes run in
    # the background while the new run writes (they never touch rows inserted after them)
    deleted = store.delete_run(run_id)
    if deleted:
        logger.info("replacing earlier rows of run_id=%s tables=%s", run_id, ",".join(deleted))


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
        rows = fetch(_store(_setup(config, overrides), dsn))
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
              "net pnl", "value (account)"):
        t.add_column(c, justify="left" if c in ("venue", "asset", "quote") else "right")
    for r in rows:
        t.add_row(r["venue"], r["asset"], r["quote"], f"{r['amount']:.8g}", f"{r['avg_price']:.8g}",
                  f"{r['mark']:.8g}", f"{r['unrealized_pnl']:.6g}", f"{r['realized_pnl']:.6g}", f"{r['fees']:.6g}",
                  f"{r['net_pnl']:.6g}", f"{r['value_account']:.6g}")
    out.print(t)


@app.command("runs")
def runs_(
    limit: Annotated[int, typer.Option("--limit", min=1, help="how many runs, newest first")] = 20,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the latest runs with their status and headline figures, to compare backtests."""
    rows = _report_rows(lambda store: report.runs(store, limit), config, set_, db, as_json)
    if rows is None:
        return
    t = Table(title="runs, newest first")
    for c in ("run id", "mode", "status", "started", "return", "sharpe", "max dd", "fills", "fees", "data"):
        t.add_column(c, justify="right" if c in ("return", "sharpe", "max dd", "fills", "fees") else "left")

    def pct(v: float | None) -> str:
        return "" if v is None else f"{v:+.2%}"

    for r in rows:
        t.add_row(r["run_id"], r["mode"], r["status"], r["started_at"][:19], pct(r["total_return"]),
                  "" if r["sharpe"] is None else f"{r['sharpe']:.2f}",
                  "" if r["max_drawdown"] is None else f"{r['max_drawdown']:.2%}",
                  "" if r["fills"] is None else f"{r['fills']:,}", "" if r["fees"] is None else f"{r['fees']:.6g}",
                  ", ".join(r["data"]))
    out.print(t)


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
) -> None:
    """Run one SQL query against the store; --json prints an array of row objects."""
    try:
        store = _store(_setup(config, set_), db)
        rows = store.query(sql)
    except HeadraceError as e:
        raise _fail(e) from None
    except Exception as e:  # noqa: BLE001 - a ClickHouse error in the user's SQL: show its first line
        raise _fail(Exception(str(e).splitlines()[0])) from None
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
) -> None:
    """Write a seeded synthetic tick set (correlated assets, two venues with a basis) as Parquet."""
    from sources import synthetic

    paths = synthetic.write(synthetic.generate(events, seed=seed), str(out_dir))
    for p in paths:
        print(p)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
