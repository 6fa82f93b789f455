"""`headrace risk`: the latest risk report of a run, stress on demand, and the operator's trading-state commands.

    headrace risk --run-id ID [--json]                      the latest report (docs/risk.md)
    headrace risk stress --run-id ID [--json]               every configured scenario on the run's last positions
    headrace risk halt|reduce|resume --reason TEXT [--at T] a trading-state command (docs/runbook.md)
    headrace risk commands [--clear]                        the commands given so far
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

risk_app = typer.Typer(invoke_without_command=True, no_args_is_help=False,
                       help="The risk engine: the latest report, stress on demand, halt / reduce / resume trading.")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file (default: built-in)")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override one config key: KEY=VALUE (TOML)")]
DbOpt = Annotated[str | None, typer.Option("--db", help="ClickHouse DSN (overrides storage.dsn)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document on stdout")]
RunOpt = Annotated[str | None, typer.Option("--run-id", help="the run to show")]


def _pct(x: Any, fmt: str = ".3%") -> str:
    return "" if x is None else format(float(x), fmt)


def _fetch(fetch: Any, config: Path | None, set_: list[str] | None, db: str | None) -> Any:
    from headrace.cli import _fail, _setup, _store
    from headrace.errors import HeadraceError

    try:
        cfg = _setup(config, set_)
        return fetch(_store(cfg, db, read=True), cfg)
    except HeadraceError as e:
        raise _fail(e) from None


@risk_app.callback()
def risk(ctx: typer.Context, run_id: RunOpt = None, config: ConfigOpt = None, set_: SetOpt = None,
         db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Print the latest risk report of a run: trading state, VaR, ES, LVaR, stress, margin, limits, denials."""
    if ctx.invoked_subcommand is not None:
        return
    from headrace.cli import _json_default, err, out
    from headrace.risk_report import risk_report

    if run_id is None:
        err.print("give --run-id ID (or a subcommand: stress, halt, reduce, resume, commands)")
        raise typer.Exit(2)
    rep = _fetch(lambda store, _: risk_report(store, run_id), config, set_, db)
    if rep is None:
        err.print(f"no risk rows for run {run_id!r} (no such run, or risk.enabled was off)", highlight=False)
        raise typer.Exit(1)
    if as_json:
        print(json.dumps(rep, default=_json_default))
        return
    t = Table(title=f"risk of run {run_id} at {rep['ts']} (one bar, {rep['alpha']:.1%}, {rep['samples']} bars)")
    for c in ("trading state", "equity", "gross", "net", "VaR hist", "ES hist", "VaR CF", "ES CF", "LVaR"):
        t.add_column(c, justify="right")
    t.add_row(rep["trading_state"], f"{rep['equity']:.6g}", _pct(rep["gross"], ".2f"), _pct(rep["net"], ".2f"),
              _pct(rep["var_historical"]), _pct(rep["es_historical"]), _pct(rep["var_cornish_fisher"]),
              _pct(rep["es_cornish_fisher"]), _pct(rep["lvar"]))
    out.print(t)
    if rep["limits"]:
        lt = Table(title="limits (latest value; breaches over the run)")
        for c in ("limit", "value", "bound", "utilisation", "max utilisation", "breaches"):
            lt.add_column(c, justify="left" if c == "limit" else "right")
        for x in rep["limits"]:
            lt.add_row(x["name"], f"{x['value']:.4g}", f"{x['limit']:.4g}", _pct(x["utilisation"], ".1%"),
                       _pct(x["max_utilisation"], ".1%"), str(x["breaches"]))
        out.print(lt)
    if rep["stress"]:
        st = Table(title=f"stress at {rep['stress_ts']}")
        for c in ("scenario", "kind", "pnl", "of equity", "worst"):
            st.add_column(c, justify="right" if c in ("pnl", "of equity") else "left")
        for s in rep["stress"]:
            st.add_row(s["scenario"], s["kind"], f"{s['pnl']:.6g}", _pct(s["pnl_fraction"], ".2%"), s["worst_key"])
        out.print(st)
    for m in rep["margin"]:
        out.print(f"margin {m['venue']}: ratio {_pct(m['margin_ratio'], '.2%')} (max "
                  f"{_pct(m['max_margin_ratio'], '.2%')}), nearest liquidation {_pct(m['min_distance'], '.2%')} away",
                  highlight=False)
    d = rep["denials"]
    out.print(f"denials: {d['denied']} denied, {d['reduced']} reduced"
              + (f" ({', '.join(f'{k} {v}' for k, v in d['by_code'].items())})" if d["by_code"] else ""),
              highlight=False)
    for s in rep["state_changes"]:
        out.print(f"{s['ts_event']} {s['previous']} -> {s['state']} ({s['source']}): {s['reason']}", highlight=False)
    if rep["scalings"]["count"]:
        out.print(f"ES limit scaled targets {rep['scalings']['count']} times (lowest x "
                  f"{rep['scalings']['lowest_scale']:.3f})", highlight=False)


@risk_app.command("stress")
def stress(run_id: Annotated[str, typer.Option("--run-id", help="the run whose last positions to stress")],
           config: ConfigOpt = None, set_: SetOpt = None, db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Every configured scenario (risk.scenarios) on a run's last positions, now."""
    from headrace.cli import _json_default, err, out
    from headrace.risk_report import stress_now

    rep = _fetch(lambda store, cfg: stress_now(store, run_id, cfg), config, set_, db)
    if rep is None:
        err.print(f"no positions for run {run_id!r}", highlight=False)
        raise typer.Exit(1)
    if as_json:
        print(json.dumps(rep, default=_json_default))
        return
    t = Table(title=f"stress of run {run_id}'s positions at {rep['ts']} (equity {rep['equity']:.6g} "
                    f"{rep['currency']})")
    for c in ("scenario", "kind", "pnl", "of equity", "worst", "how"):
        t.add_column(c, justify="right" if c in ("pnl", "of equity") else "left")
    for s in rep["stress"]:
        t.add_row(s["scenario"], s["kind"], f"{s['pnl']:.6g}", _pct(s["pnl_fraction"], ".2%"), s["worst_key"],
                  s["detail"])
    out.print(t)


def _command(action: str, reason: str, at: str | None, config: Path | None, set_: list[str] | None) -> None:
    from headrace.cli import _fail, _setup, out
    from headrace.errors import HeadraceError
    from headrace.risk_commands import append, commands_path

    try:
        cfg = _setup(config, set_)
        path = commands_path(cfg)
        line = append(path, action, reason, account=cfg.account.id, at=at)
    except HeadraceError as e:
        raise _fail(e) from None
    when = f"from {line['at']} in replays" if at else "at once in paper and live trading"
    out.print(f"{action} ({line['reason']}) for account {cfg.account.id}, {when}: written to {path}",
              highlight=False)


ReasonOpt = Annotated[str, typer.Option("--reason", help="why (recorded with the state change)")]
AtOpt = Annotated[str | None, typer.Option("--at", help="replay: the event time it takes effect (ISO, UTC); "
                                                        "omit for paper and live (at once)")]


@risk_app.command("halt")
def halt(reason: ReasonOpt, at: AtOpt = None, config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """HALTED: nothing is sent, working orders are cancelled."""
    _command("halt", reason, at, config, set_)


@risk_app.command("reduce")
def reduce(reason: ReasonOpt, at: AtOpt = None, config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """REDUCING: only orders that reduce a position are sent."""
    _command("reduce", reason, at, config, set_)


@risk_app.command("resume")
def resume(reason: ReasonOpt, at: AtOpt = None, config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Withdraw the operator's halt or reduce (a limit's own state stays until the limit comes back)."""
    _command("resume", reason, at, config, set_)


@risk_app.command("commands")
def commands(config: ConfigOpt = None, set_: SetOpt = None, clear: Annotated[bool, typer.Option(
        "--clear", help="delete the commands file (replays stop applying them)")] = False) -> None:
    """List the operator commands in the commands file (risk.commands_file)."""
    from headrace.cli import _fail, _setup, out
    from headrace.errors import HeadraceError
    from headrace.risk_commands import commands_path, describe, read

    try:
        cfg = _setup(config, set_)
        path = commands_path(cfg)
        if clear:
            path.unlink(missing_ok=True)
            out.print(f"removed {path}", highlight=False)
            return
        lines = describe([c for c, _ in read(path, cfg.account.id)])
    except HeadraceError as e:
        raise _fail(e) from None
    out.print("\n".join(lines) if lines else f"no commands in {path}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(risk_app, name="risk")
