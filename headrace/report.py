"""Run summaries and position reports, computed from what the run wrote to ClickHouse.

ClickHouse is the source of truth: a resumed run's summary covers the rows written before the crash
too. Every query reads with FINAL, so a row written twice counts once.
"""

from __future__ import annotations

import json
import math
import os
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from headrace.config import parse_duration
from headrace.events import NS_PER_S, NS_PER_YEAR

if TYPE_CHECKING:
    from headrace.config import Config

QUARANTINE_WARN_FRACTION = 0.01  # a summary warns when more of its input than this was quarantined
QUARANTINE_LOUD_FRACTION = 0.5  # and warns loudly above this
WARMUP_LISTED = 12  # instruments whose bar counts a never-warmed-up warning lists


class Queryable(Protocol):
    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class Summary:
    """The replay summary: what `headrace replay --json` prints (one JSON object)."""

    run_id: str
    events_in: int
    events_quarantined: int
    bars: int
    orders: int
    fills: int
    fees: float  # account currency
    initial_equity: float
    final_equity: float
    total_return: float
    sharpe: float | None  # annualised, from returns on the stats grid; None when undefined (docs/metrics.md)
    max_drawdown: float  # largest fall from a running peak after the first decision, a fraction (0.1 = 10 %)
    turnover: float  # notional traded / mean equity on the stats grid
    currency: str
    wall_s: float
    events_per_s: float
    sortino: float | None = None  # annualised mean over downside deviation of grid returns
    volatility: float | None = None  # annualised standard deviation of grid returns
    turnover_per_year: float | None = None  # turnover scaled to a 365-day year of the decision span
    cagr: float | None = None  # compound annual growth from the first decision; None for spans under a day
    stats_interval: str | None = None  # the grid step, as a duration ("5m"); None when the run has no bars
    stats_interval_ns: int | None = None
    first_decision_ts: int | None = None  # epoch ns of the first target or order; None if there was none
    orders_expired: int = 0  # orders left unfilled when the data ended
    orders_skipped: int = 0  # orders never sent to the simulated venue, with a recorded reason
    quarantined_fraction: float = 0.0  # events_quarantined / events_in
    store: str = ""  # the store the run wrote to, its DSN with any password redacted
    warnings: tuple[str, ...] = ()  # what a reader of the figures must know (printed under the summary)
    orders_cancelled: int = 0  # routed IOC children whose rest was cancelled (partly or not filled)
    orders_denied: int = 0  # orders not sent: the risk engine denied them, or no venue could carry them
    venues: tuple[str, ...] = ()  # venues that received fills
    arbitrage_signals: int = 0  # cross-venue arbitrage signals opened (router on)
    portfolio_method: str = ""  # portfolio.method of the run
    rebalances: int = 0  # bar times at which targets were decided
    solver_fallbacks: int = 0  # rebalances whose solve failed and fell back (rebalances.fallback != 'none')
    ml_models: int = 0  # online models that ran (ml.enabled)
    ml_predictions: int = 0
    ml_drift_events: int = 0
    ml_blend_weight: float = 0.0  # the blended models' summed weight at the end of the run
    risk_state: str = ""  # the trading state at the end of the run ("" when risk.enabled was off)
    risk_es: float | None = None  # the last historical ES measured (one bar, fraction of equity)
    risk_denials: int = 0  # orders the pre-trade checks denied (every reason in risk_denials)
    risk_scalings: int = 0  # rebalances whose targets the ES limit scaled down
    risk_state_changes: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["warnings"] = list(self.warnings)
        d["venues"] = list(self.venues)
        return d


NS_PER_DAY = 86_400 * NS_PER_S
MAX_GRID_POINTS = 10_000_000  # a finer grid over the run's span is refused (metrics.interval too short)
_DURATION_UNITS = (("d", NS_PER_DAY), ("h", 3600 * NS_PER_S), ("m", 60 * NS_PER_S), ("s", NS_PER_S),
                   ("ms", 10**6), ("us", 10**3), ("ns", 1))


def format_duration(ns: int) -> str:
    """Return `ns` as a duration in the largest unit that holds it exactly (the form `parse_duration` reads).

    Examples
    --------
    >>> format_duration(300 * 10**9), format_duration(90 * 10**9), format_duration(0)
    ('5m', '90s', '0s')
    """
    for unit, size in _DURATION_UNITS:
        if ns % size == 0 and ns != 0:
            return f"{ns // size}{unit}"
    return "0s"


@dataclass(frozen=True, slots=True)
class Performance:
    """Return statistics of an equity curve from the first decision on; docs/metrics.md gives every formula."""

    sharpe: float | None  # annualised; None with fewer than 2 grid returns or no variation
    sortino: float | None  # annualised; None with fewer than 2 grid returns or no losing step
    volatility: float | None  # annualised standard deviation of grid returns; None with fewer than 2
    max_drawdown: float  # over the raw equity rows, a fraction
    turnover: float  # traded / mean grid equity
    turnover_per_year: float | None  # None when the span is 0
    cagr: float | None  # None when the span is under a day (or the figure overflows)
    periods: int  # grid returns behind the ratios
    span_ns: int  # first decision to the last equity row


NO_PERFORMANCE = Performance(sharpe=None, sortino=None, volatility=None, max_drawdown=0.0, turnover=0.0,
                             turnover_per_year=None, cagr=None, periods=0, span_ns=0)


def max_drawdown(equity: np.ndarray) -> float:
    """Return the largest fall from a running peak of `equity`, as a fraction of that peak.

    Examples
    --------
    >>> round(max_drawdown(np.array([1.0, 1.1, 0.99, 1.2])), 12)
    0.1
    """
    if len(equity) == 0:
        return 0.0
    peak = np.maximum.accumulate(equity)
    return float(np.max(1.0 - equity / peak))


def resample(equity: np.ndarray, ts: np.ndarray, start: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the grid ``start, start + step, ...`` up to the last row's time, and the equity at each point.

    The equity at a grid point is the last row at or before it (the first row's, for a point before every
    row). `ts` is ascending epoch ns; an empty grid comes back when `ts` is empty or ends before `start`.

    Examples
    --------
    >>> grid, eq = resample(np.array([1.0, 2.0, 3.0]), np.array([0, 60, 300]), 0, 120)
    >>> grid.tolist(), eq.tolist()
    ([0, 120, 240], [1.0, 2.0, 2.0])
    """
    if step <= 0:
        raise ValueError(f"the grid step must be > 0 ns, was {step}")
    if len(ts) == 0 or int(ts[-1]) < start:
        return np.array([], dtype=np.int64), np.array([], dtype=float)
    n = (int(ts[-1]) - start) // step + 1
    if n > MAX_GRID_POINTS:
        raise ValueError(f"a {format_duration(step)} grid over {format_duration(int(ts[-1]) - start)} has {n:,} "
                         f"points, more than {MAX_GRID_POINTS:,}")
    grid = start + np.arange(n, dtype=np.int64) * step
    idx = np.searchsorted(ts, grid, side="right") - 1
    return grid, equity[np.maximum(idx, 0)]


def performance(equity: np.ndarray, ts: np.ndarray, *, start: int, interval_ns: int,
                traded: float = 0.0) -> Performance:
    """Return the statistics of the equity rows (`equity` at ascending epoch ns `ts`) from `start` on.

    `start` is the first decision: the flat warm-up before it does not count. Return statistics (Sharpe,
    Sortino, volatility) use the equity resampled to a regular grid of step `interval_ns` (see `resample`),
    annualised over a 365-day year with ``sqrt(periods per year)``, zero risk-free rate; max drawdown uses the
    raw rows from the one at or before `start`; turnover is `traded` (notional, account currency) over the
    mean grid equity.

    Examples
    --------
    >>> minute = 60 * 10**9
    >>> p = performance(np.array([1.0, 1.0, 1.1, 0.99, 1.2]), np.arange(5) * minute, start=minute,
    ...                 interval_ns=minute, traded=2.0)
    >>> round(p.max_drawdown, 4), p.periods, round(p.turnover, 4)
    (0.1, 3, 1.8648)
    """
    _, grid_eq = resample(equity, ts, start, interval_ns)
    if len(grid_eq) == 0:
        return NO_PERFORMANCE
    first = max(int(np.searchsorted(ts, start, side="right")) - 1, 0)  # the row at or before the decision
    raw = equity[first:]
    span = int(ts[-1]) - start
    rets = grid_eq[1:] / grid_eq[:-1] - 1.0
    per_year = NS_PER_YEAR / interval_ns
    sharpe = sortino = volatility = None
    if len(rets) >= 2:
        mean, sd = float(np.mean(rets)), float(np.std(rets, ddof=1))
        volatility = sd * math.sqrt(per_year)
        if sd > 0:
            sharpe = mean / sd * math.sqrt(per_year)
        downside = math.sqrt(float(np.mean(np.minimum(rets, 0.0) ** 2)))
        if downside > 0:
            sortino = mean / downside * math.sqrt(per_year)
    mean_equity = float(np.mean(grid_eq))
    turnover = traded / mean_equity if mean_equity > 0 else 0.0
    cagr = None
    if span >= NS_PER_DAY and raw[0] > 0 and raw[-1] > 0:
        growth = math.log(float(raw[-1]) / float(raw[0])) * NS_PER_YEAR / span
        cagr = math.expm1(growth) if growth < 700 else None  # beyond that exp overflows a float
    return Performance(sharpe=sharpe, sortino=sortino, volatility=volatility, max_drawdown=max_drawdown(raw),
                       turnover=turnover, turnover_per_year=turnover * NS_PER_YEAR / span if span > 0 else None,
                       cagr=cagr, periods=len(rets), span_ns=span)


def _count(db: Queryable, table: str, run_id: str) -> int:
    return int(db.query(f"SELECT count() AS n FROM {table} FINAL WHERE run_id = {{run:String}}",
                        {"run": run_id})[0]["n"])


def _table_exists(db: Queryable, table: str) -> bool:
    rows = db.query("SELECT count() AS n FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
                    {"t": table})
    return int(rows[0]["n"]) > 0


def _first_decision(db: Queryable, run_id: str) -> int | None:
    # the first target or order of the run: every row before it is the flat warm-up
    firsts = [db.query(f"SELECT minOrNull(toUnixTimestamp64Nano(ts_event)) AS t FROM {table} FINAL "
                       "WHERE run_id = {run:String}", {"run": run_id})[0]["t"] for table in ("targets", "orders")]
    known = [int(t) for t in firsts if t is not None]
    return min(known) if known else None


def _bars_by_instrument(db: Queryable, run_id: str) -> list[dict[str, Any]]:
    # bars and the median bar length (close - open, ns) of every instrument of the run
    return db.query(
        "SELECT instrument, count() AS n, "
        "quantileExact(0.5)(toUnixTimestamp64Nano(ts_event) - toUnixTimestamp64Nano(ts_open)) AS length_ns "
        "FROM bars FINAL WHERE run_id = {run:String} GROUP BY instrument ORDER BY instrument", {"run": run_id})


def _order_statuses(db: Queryable, run_id: str) -> dict[str, int]:
    # orders that could not fill, by status ("expired", "skipped"); none before the table exists
    if not _table_exists(db, "order_status"):
        return {}
    rows = db.query("SELECT status, count() AS n FROM order_status FINAL WHERE run_id = {run:String} "
                    "GROUP BY status", {"run": run_id})
    return {str(r["status"]): int(r["n"]) for r in rows}


def _stats_interval(setting: str, bars: list[dict[str, Any]], warnings: list[str]) -> int | None:
    # the grid step in ns: the longest bar length of the run ("auto") or the configured duration
    auto = max((int(b["length_ns"]) for b in bars), default=0) or None
    if setting == "auto":
        return auto
    step = parse_duration(setting)
    if step > 0:
        return step
    warnings.append(f"metrics.interval = {setting!r} cannot be a grid step; statistics use the longest bar "
                    f"length instead ({format_duration(auto) if auto else 'none: no bars'})")
    return auto


def _quarantine_warning(db: Queryable, run_id: str, quarantined: int, events_in: int) -> str | None:
    fraction = quarantined / events_in if events_in > 0 else 0.0
    if fraction <= QUARANTINE_WARN_FRACTION:
        return None
    top = db.query("SELECT reason, count() AS n FROM quarantine FINAL WHERE run_id = {run:String} "
                   "GROUP BY reason ORDER BY n DESC, reason LIMIT 3", {"run": run_id})
    reasons = "; ".join(f"{int(r['n']):,} x {str(r['reason'])[:80]}" for r in top)
    head = "most of the input was quarantined" if fraction > QUARANTINE_LOUD_FRACTION else "input quarantined"
    return (f"{head}: {quarantined:,} of {events_in:,} rows ({fraction:.1%}); the figures describe the rest. "
            f"Most common reasons: {reasons}")


def _warmup_warning(bars: list[dict[str, Any]], config: Config | None) -> str:
    lookback = "features.momentum_lookback_bars"
    needs = "strategy.min_instruments"
    if config is not None:
        lookback = f"{lookback} = {config.features.momentum_lookback_bars}, so " \
                   f"{config.features.momentum_lookback_bars + 1} bars,"
        needs = f"{needs} = {config.strategy.min_instruments}"
    counts = ", ".join(f"{b['instrument']} {int(b['n']):,}" for b in bars[:WARMUP_LISTED])
    if len(bars) > WARMUP_LISTED:
        counts += f" and {len(bars) - WARMUP_LISTED} more"
    return (f"the strategy never warmed up: no targets were decided. Momentum needs {lookback} per instrument "
            f"on at least {needs} instruments; bars per instrument: {counts or 'none'}")


def initial_equity(config: Config) -> float:
    """The summary's starting equity for `config`: the configured cash, or with the router (balances in several
    currencies) -1, meaning the first recorded equity, valued at market rates."""
    return -1.0 if config.router.enabled else config.account.initial_cash


def summarize(db: Queryable, run_id: str, *, events_in: int, initial_equity: float, wall_s: float,
              store: str = "", config: Config | None = None) -> Summary:
    """Compute the summary of `run_id` from its rows.

    `store` is the DSN the run wrote to (shown with any password redacted); `config` is the run's config,
    for ``metrics.interval`` (default "auto") and the warm-up keys a warning names.
    """
    warnings: list[str] = []
    eq = db.query(
        "SELECT toUnixTimestamp64Nano(ts_event) AS ts, equity, fees, traded, currency FROM equity FINAL "
        "WHERE run_id = {run:String} ORDER BY ts_event", {"run": run_id})
    equity = np.array([r["equity"] for r in eq], dtype=float)
    ts = np.array([r["ts"] for r in eq], dtype=np.int64)
    if not initial_equity > 0:  # balances in several currencies: the first recorded equity, at market rates
        initial_equity = float(equity[0]) if len(equity) else 1.0
    final = float(equity[-1]) if len(equity) else initial_equity
    fees = float(eq[-1]["fees"]) if eq else 0.0
    traded = float(eq[-1]["traded"]) if eq else 0.0
    bars = _bars_by_instrument(db, run_id)
    first = _first_decision(db, run_id)
    interval = _stats_interval(config.metrics.interval if config is not None else "auto", bars, warnings)
    perf = NO_PERFORMANCE
    if first is not None and len(equity):
        for step in (interval, _stats_interval("auto", bars, warnings)):  # the setting, then the bar length
            if step is None:
                continue
            try:
                perf, interval = performance(equity, ts, start=first, interval_ns=step, traded=traded), step
                break
            except ValueError as e:  # a grid too fine for the span
                warnings.append(f"statistics grid of {format_duration(step)} not used: {e}")
        else:
            interval = None
            warnings.append("no return statistics: no usable grid step (bars without a length, or a grid too "
                            "fine); set metrics.interval to a duration such as '5m'")
    if first is None and bars:
        warnings.append(_warmup_warning(bars, config))
    quarantined = _count(db, "quarantine", run_id)
    if (qw := _quarantine_warning(db, run_id, quarantined, events_in)) is not None:
        warnings.append(qw)
    statuses = _order_statuses(db, run_id)
    venues = tuple(str(r["venue"]) for r in db.query(
        "SELECT DISTINCT venue FROM fills FINAL WHERE run_id = {run:String} ORDER BY venue", {"run": run_id}))
    arbitrage = 0
    if _table_exists(db, "arbitrage"):
        arbitrage = int(db.query("SELECT count() AS n FROM arbitrage FINAL WHERE run_id = {run:String} AND "
                                 "status = 'open'", {"run": run_id})[0]["n"])
    rebalances, fallbacks = _rebalances(db, run_id)
    from sinks.clickhouse import redact  # sinks import bytewax: keep it out of headrace's import time

    return Summary(
        run_id=run_id,
        events_in=events_in,
        events_quarantined=quarantined,
        bars=sum(int(b["n"]) for b in bars),
        orders=_count(db, "orders", run_id),
        fills=_count(db, "fills", run_id),
        fees=fees,
        initial_equity=initial_equity,
        final_equity=final,
        total_return=final / initial_equity - 1.0,
        sharpe=perf.sharpe,
        max_drawdown=perf.max_drawdown,
        turnover=perf.turnover,
        currency=str(eq[-1]["currency"]) if eq else "",
        wall_s=wall_s,
        events_per_s=events_in / wall_s if wall_s > 0 else 0.0,
        sortino=perf.sortino,
        volatility=perf.volatility,
        turnover_per_year=perf.turnover_per_year,
        cagr=perf.cagr,
        stats_interval=format_duration(interval) if interval is not None else None,
        stats_interval_ns=interval,
        first_decision_ts=first,
        orders_expired=statuses.get("expired", 0),
        orders_skipped=statuses.get("skipped", 0),
        quarantined_fraction=quarantined / events_in if events_in > 0 else 0.0,
        store=redact(store),
        warnings=tuple(warnings),
        orders_cancelled=statuses.get("cancelled", 0),
        orders_denied=statuses.get("denied", 0),
        venues=venues,
        arbitrage_signals=arbitrage,
        portfolio_method=config.portfolio.method if config is not None else "",
        rebalances=rebalances,
        solver_fallbacks=fallbacks,
        **_ml_counts(db, run_id),
        **_risk_counts(db, run_id),
    )


def _risk_counts(db: Queryable, run_id: str) -> dict[str, Any]:
    """The risk engine's headline figures for the summary (empty when it was off)."""
    if not _table_exists(db, "risk_reports"):
        return {}
    row = db.query(
        "SELECT (SELECT argMax(trading_state, ts_event) FROM risk_reports WHERE run_id = {run:String}) AS state, "
        "(SELECT argMax(es_historical, ts_event) FROM risk_reports WHERE run_id = {run:String} "
        " AND NOT isNaN(es_historical)) AS es, "
        "(SELECT count() FROM risk_denials FINAL WHERE run_id = {run:String} AND action = 'denied') AS denials, "
        "(SELECT count() FROM risk_scalings FINAL WHERE run_id = {run:String}) AS scalings, "
        "(SELECT count() FROM trading_states FINAL WHERE run_id = {run:String}) AS changes, "
        "(SELECT count() FROM risk_reports WHERE run_id = {run:String}) AS reports", {"run": run_id})[0]
    es, reported = row["es"], int(row["reports"]) > 0
    return {"risk_state": str(row["state"] or "") if reported else "",
            "risk_es": float(es) if es is not None and reported and math.isfinite(float(es)) else None,
            "risk_denials": int(row["denials"]), "risk_scalings": int(row["scalings"]),
            "risk_state_changes": int(row["changes"])}


def _ml_counts(db: Queryable, run_id: str) -> dict[str, Any]:
    """The online models' headline figures for the summary (zeros when ML was off)."""
    if not _table_exists(db, "ml_predictions"):
        return {}
    row = db.query(
        "SELECT (SELECT uniqExact(model) FROM ml_predictions WHERE run_id = {run:String}) AS models, "
        "(SELECT count() FROM ml_predictions FINAL WHERE run_id = {run:String}) AS predictions, "
        "(SELECT count() FROM ml_drift FINAL WHERE run_id = {run:String}) AS drifts, "
        "(SELECT sum(w) FROM (SELECT argMax(weight, ts_event) AS w FROM ml_weights FINAL "
        " WHERE run_id = {run:String} GROUP BY model)) AS weight", {"run": run_id})[0]
    return {"ml_models": int(row["models"]), "ml_predictions": int(row["predictions"]),
            "ml_drift_events": int(row["drifts"]), "ml_blend_weight": float(row["weight"] or 0.0)}


def _rebalances(db: Queryable, run_id: str) -> tuple[int, int]:
    """Rebalances (the portfolio engine's rows, else the distinct target times) and those that fell back."""
    if _table_exists(db, "rebalances"):
        row = db.query("SELECT count() AS n, countIf(fallback != 'none') AS f FROM rebalances FINAL "
                       "WHERE run_id = {run:String}", {"run": run_id})[0]
        if int(row["n"]):
            return int(row["n"]), int(row["f"])
    row = db.query("SELECT uniqExact(ts_event) AS n FROM targets FINAL WHERE run_id = {run:String}", {"run": run_id})[0]
    return int(row["n"]), 0


POSITIONS_SQL = """
SELECT
    venue,
    asset,
    quote,
    instrument,
    argMax(amount, ts_event)          AS amount,
    argMax(avg_price, ts_event)       AS avg_price,
    argMax(mark, ts_event)            AS mark,
    argMax(unrealized_pnl, ts_event)  AS unrealized_pnl,
    argMax(realized_pnl, ts_event)    AS realized_pnl,
    argMax(fees, ts_event)            AS fees,
    argMax(value_account, ts_event)   AS value_account,
    argMax(stale, ts_event)           AS stale,
    argMax(mark_ts, ts_event)         AS mark_ts,
    max(ts_event)                     AS as_of
FROM positions FINAL
WHERE run_id = {run:String}
GROUP BY venue, asset, quote, instrument
ORDER BY venue, asset, quote
"""


def positions(db: Queryable, run_id: str) -> list[dict[str, Any]]:
    """Return the last position of every instrument the run traded, per venue and asset, with PnL.

    PnL columns are in the instrument's quote currency; ``net_pnl`` = realised + unrealised - fees.
    """
    rows = db.query(POSITIONS_SQL, {"run": run_id})
    for r in rows:
        r["net_pnl"] = r["realized_pnl"] + r["unrealized_pnl"] - r["fees"]
        for k in ("as_of", "mark_ts"):
            r[k] = r[k].isoformat() if hasattr(r[k], "isoformat") else str(r[k])
        r["stale"] = bool(r["stale"])
    return rows + _net_per_asset(rows)


def _net_per_asset(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """With the router, positions are per venue and asset (``kraken:BTC``, PnL in the account currency): add one
    ``net`` row per asset summing them across venues."""
    out = []
    for asset in sorted({r["asset"] for r in rows if r["quote"] == ""}):
        legs = [r for r in rows if r["quote"] == "" and r["asset"] == asset]
        total = {k: sum(r[k] for r in legs) for k in ("amount", "value_account", "unrealized_pnl", "realized_pnl",
                                                       "fees", "net_pnl")}
        out.append({"venue": "net", "asset": asset, "quote": "", "instrument": f"net:{asset}", **total,
                    "avg_price": sum(r["amount"] * r["avg_price"] for r in legs) / total["amount"]
                    if total["amount"] else 0.0,
                    "mark": total["value_account"] / total["amount"] if total["amount"] else 0.0,
                    "stale": all(r["stale"] for r in legs), "mark_ts": max(r["mark_ts"] for r in legs),
                    "as_of": max(r["as_of"] for r in legs)})
    return out


RUNS_SQL = """
SELECT run_id, mode, status, started_at, updated_at, config, data, summary, pid, host
FROM runs FINAL
ORDER BY started_at DESC, run_id
LIMIT {limit:UInt32}
"""

RUN_COLUMNS = ("total_return", "sharpe", "max_drawdown", "fills", "fees", "events_in", "events_quarantined")


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def changed_keys(config: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Return the dotted config keys whose value differs from `defaults`, with the run's value, sorted.

    Examples
    --------
    >>> changed_keys({"a": {"x": 1, "y": 2}}, {"a": {"x": 1, "y": 3}})
    {'a.y': 2}
    """
    run, base = _flat(config), _flat(defaults)
    return {k: run[k] for k in sorted(run) if k not in base or base[k] != run[k]}


def process_alive(pid: int, host: str) -> bool | None:
    """Return whether process `pid` on `host` is alive; None when it cannot be told from here."""
    if pid <= 0 or host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def runs_by_id(db: Queryable, run_id: str) -> list[dict[str, Any]]:
    """Return `run_id`'s row as `runs` shows it (an empty list when there is none)."""
    return [r for r in runs(db, 1_000_000) if r["run_id"] == run_id]


def runs(db: Queryable, limit: int = 50) -> list[dict[str, Any]]:
    """Return the latest runs, newest first, with their status and the headline figures of their summary.

    A run that has not finished (running, failed, interrupted, or killed and not resumed) has no figures:
    they are None. A ``running`` row whose process is gone from this host reads ``stale`` (killed, or
    its machine stopped). ``quarantined`` is the count of quarantined rows, ``quarantined_fraction`` that
    over the rows read; ``changed`` maps each config key the run set away from today's defaults to its value.
    """
    from headrace.config import load_config

    defaults = load_config(None).to_dict(redacted=True)
    out = []
    for r in db.query(RUNS_SQL, {"limit": limit}):
        summary = json.loads(r["summary"] or "{}")
        status = r["status"]
        if status == "running" and process_alive(int(r.get("pid") or 0), str(r.get("host") or "")) is False:
            status = "stale"
        row = {"run_id": r["run_id"], "mode": r["mode"], "status": status,
               "started_at": r["started_at"].isoformat(), "updated_at": r["updated_at"].isoformat(),
               "data": json.loads(r["data"] or "[]"), "pid": int(r.get("pid") or 0), "host": r.get("host") or ""}
        row.update({k: summary.get(k) for k in RUN_COLUMNS})
        n_in, n_q = summary.get("events_in"), summary.get("events_quarantined")
        row["quarantined"] = n_q
        row["quarantined_fraction"] = n_q / n_in if n_q is not None and n_in else None
        row["changed"] = changed_keys(json.loads(r["config"] or "{}"), defaults)
        if summary.get("error"):
            row["error"] = summary["error"]
        out.append(row)
    return out


PORTFOLIO_SQL = """
SELECT
    r.run_id                                   AS run_id,
    r.method                                   AS method,
    r.rebalances                               AS rebalances,
    r.fallbacks                                AS fallbacks,
    r.mean_ex_ante_vol_annual                  AS mean_ex_ante_vol_annual,
    r.solve_ms_p50                             AS solve_ms_p50,
    r.solve_ms_p99                             AS solve_ms_p99,
    r.mean_condition_number                    AS mean_condition_number,
    f.periods                                  AS periods,
    f.forecast_vol                             AS forecast_vol,
    f.realised_vol                             AS realised_vol,
    f.realised_vol / nullIf(f.forecast_vol, 0) AS realised_over_forecast,
    f.bias                                     AS bias_statistic,
    f.outside_95                               AS outside_95
FROM (
    SELECT run_id, any(method) AS method, count() AS rebalances, countIf(fallback != 'none') AS fallbacks,
           avg(ex_ante_vol_annual) AS mean_ex_ante_vol_annual, quantileExact(0.5)(solve_ms) AS solve_ms_p50,
           quantileExact(0.99)(solve_ms) AS solve_ms_p99,
           avgIf(condition_number, isFinite(condition_number)) AS mean_condition_number
    FROM rebalances FINAL
    WHERE run_id IN {runs:Array(String)}
    GROUP BY run_id
) AS r
LEFT JOIN (
    SELECT run_id, count() AS periods, avg(forecast_vol) AS forecast_vol, avg(realised_vol) AS realised_vol,
           stddevSamp(z) AS bias, countIf(abs(z) > 1.96) / count() AS outside_95
    FROM portfolio_forecast
    WHERE run_id IN {runs:Array(String)} AND z IS NOT NULL AND bars >= horizon_bars
    GROUP BY run_id
) AS f ON f.run_id = r.run_id
ORDER BY r.run_id
"""


def portfolio_report(db: Queryable, run_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Per run: its method, rebalances, solve times, and the forecast against the outcome (docs/portfolio.md).

    `bias_statistic` is the standard deviation of z = period return / forecast volatility over the complete
    periods (those that ran their `horizon_bars`): near 1 the covariance can be trusted, above 1 it underestimated
    the risk, below 1 it overestimated it. `outside_95` is the share of periods with |z| > 1.96 (5 % expected).
    """
    rows = db.query(PORTFOLIO_SQL, {"runs": list(run_ids)})
    regimes = {str(r["run_id"]): int(r["n"]) for r in db.query(
        "SELECT run_id, count() AS n FROM regime_changes FINAL WHERE run_id IN {runs:Array(String)} GROUP BY run_id",
        {"runs": list(run_ids)})}
    out = []
    for r in rows:
        d = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()}
        d["periods"] = int(d["periods"] or 0)
        d["regime_changes"] = regimes.get(str(r["run_id"]), 0)
        out.append(d)
    return out


# ---------------------------------------------------------------------------------------------------
# Online models (docs/ml.md)

ML_SKILL_SQL = """
SELECT name, argMax(mode, ts_event) AS mode, count() AS n, corr(rank_score, rank_label) AS ic,
       avg((score > 0) = (label > 0)) AS hit_rate
FROM (
    -- Spearman as the Pearson correlation of average ranks: exact with ties (ClickHouse's rankCorr is not)
    SELECT name, mode, ts_event, score, label,
           rank() OVER (PARTITION BY name ORDER BY score) + (count() OVER (PARTITION BY name, score) - 1) / 2
               AS rank_score,
           rank() OVER (PARTITION BY name ORDER BY label) + (count() OVER (PARTITION BY name, label) - 1) / 2
               AS rank_label
    FROM ml_skill FINAL
    WHERE run_id = {run:String} AND isFinite(score) AND isFinite(label)
)
GROUP BY name
"""

ML_METRICS_SQL = """
SELECT model, argMax(samples, ts_event) AS samples, argMax(log_loss, ts_event) AS log_loss,
       argMax(accuracy, ts_event) AS accuracy, argMax(mae, ts_event) AS mae, argMax(hit_rate, ts_event) AS hit_rate,
       argMax(ic, ts_event) AS ic, argMax(drift_events, ts_event) AS drift_events
FROM ml_metrics FINAL
WHERE run_id = {run:String} AND instrument = '' AND regime = ''
GROUP BY model
"""

ML_WEIGHTS_SQL = """
SELECT model, argMax(weight, ts_event) AS weight, count() AS changes
FROM ml_weights FINAL
WHERE run_id = {run:String}
GROUP BY model
"""

ML_MODELS_SQL = """
SELECT model, toUnixTimestamp64Nano(ts_event) AS ts_ns, kind, algorithm, pooled, horizon_bars, update_keys,
       update_counts, features, state
FROM ml_models FINAL
WHERE run_id = {run:String}
ORDER BY model, ts_event DESC, event_id DESC
LIMIT 1 BY model
"""


def _finite(v: Any) -> Any:
    """`v`, or None for a NaN or infinite float (JSON has neither)."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


def ml_report(db: Queryable, run_id: str) -> list[dict[str, Any]]:
    """One object per model and per rule factor of a run: the comparison `headrace ml report` prints.

    `ic`, `decision_samples` and `decision_hit_rate` are over the decision-time pairs of ``ml_skill`` (score
    offered at a rebalance against the forward return that followed), the same samples for models and rules:
    Spearman rank correlation (average ranks for ties, as scipy's `spearmanr`), count, and the share whose
    score had the sign of the return. For a model,
    `samples`, `log_loss`, `accuracy`, `mae`, `hit_rate`, `drift_events` and `prequential_ic` come from its
    latest prequential scores over every instrument and regime (``ml_metrics``). A rule factor has
    `samples` = its decision pairs, `hit_rate` = their hit rate, no log loss and no drift.

    `final_weight`: a blended model's last blend weight (0 before the first change), 0 for a shadow model,
    and for each rule factor the rules' share, 1 minus the blended models' weights; `weight_changes` counts
    the rows of ``ml_weights`` (for the rules: all models' changes). A model with no decision pairs is
    ``shadow`` unless it has weight rows. NaN and infinities are None. Rules first, then models by name;
    an empty list when the run has no ML rows.
    """
    p = {"run": run_id}
    skill = {str(r["name"]): r for r in db.query(ML_SKILL_SQL, p)}
    metrics = {str(r["model"]): r for r in db.query(ML_METRICS_SQL, p)}
    weights = {str(r["model"]): r for r in db.query(ML_WEIGHTS_SQL, p)}
    states = {str(r["model"]): r for r in db.query(ML_MODELS_SQL, p)}
    drifts = {str(r["model"]): int(r["n"]) for r in db.query(
        "SELECT model, count() AS n FROM ml_drift FINAL WHERE run_id = {run:String} GROUP BY model", p)}
    rules = sorted(n for n, r in skill.items() if r["mode"] == "rules")
    models = sorted(({n for n, r in skill.items() if r["mode"] != "rules"} | set(metrics) | set(weights)
                     | set(states)) - set(rules))
    out: list[dict[str, Any]] = []
    blended_weight = 0.0
    for name in models:
        s, m, w = skill.get(name), metrics.get(name), weights.get(name)
        mode = str(s["mode"]) if s is not None else ("blended" if w is not None else "shadow")
        final = float(w["weight"]) if mode == "blended" and w is not None else 0.0
        blended_weight += final if mode == "blended" else 0.0
        n = int(s["n"]) if s is not None else 0
        out.append({
            "name": name, "mode": mode, "kind": states[name]["kind"] if name in states else None,
            "samples": int(m["samples"]) if m is not None else 0,
            "ic": _finite(float(s["ic"])) if s is not None and n > 1 else None,
            "hit_rate": _finite(float(m["hit_rate"])) if m is not None else None,
            "log_loss": _finite(float(m["log_loss"])) if m is not None else None,
            "accuracy": _finite(float(m["accuracy"])) if m is not None else None,
            "mae": _finite(float(m["mae"])) if m is not None else None,
            "prequential_ic": _finite(float(m["ic"])) if m is not None else None,
            "drift_events": int(m["drift_events"]) if m is not None else drifts.get(name, 0),
            "decision_samples": n,
            "decision_hit_rate": _finite(float(s["hit_rate"])) if s is not None else None,
            "final_weight": final,
            "weight_changes": int(w["changes"]) if w is not None else 0,
        })
    changes = sum(int(w["changes"]) for w in weights.values())
    rule_rows = []
    for name in rules:
        s = skill[name]
        n = int(s["n"])
        hit = _finite(float(s["hit_rate"]))
        rule_rows.append({
            "name": name, "mode": "rules", "kind": None, "samples": n,
            "ic": _finite(float(s["ic"])) if n > 1 else None, "hit_rate": hit, "log_loss": None,
            "accuracy": None, "mae": None, "prequential_ic": None, "drift_events": 0,
            "decision_samples": n, "decision_hit_rate": hit, "final_weight": 1.0 - blended_weight,
            "weight_changes": changes,
        })
    return rule_rows + out


ML_EXPLAIN_SQL = """
SELECT model, version, purpose, toUnixTimestamp64Nano(ts_event) AS ts_ns,
       toUnixTimestamp64Nano(feature_ts) AS feature_ns, value, score, names, inputs, contributions, intercept
FROM ml_predictions FINAL
WHERE run_id = {run:String} AND instrument = {instrument:String} AND ts_event <= fromUnixTimestamp64Nano({at:Int64})
ORDER BY model, ts_event DESC, purpose = 'decide' DESC
LIMIT 1 BY model
"""


def ml_explain(db: Queryable, run_id: str, instrument: str, at_ns: int) -> list[dict[str, Any]]:
    """Per model, its last prediction for `instrument` made at or before `at_ns` (epoch ns), explained.

    Of a ``learn`` and a ``decide`` prediction made at the same time the ``decide`` one is shown. Each has its
    `features` (``{name, value, contribution}``; contribution None for a forest), `intercept`, `value`,
    `score` and, once known, the `label` (the forward log return: from ``ml_outcomes`` for a learning-bar
    prediction, else from the decision-time pair in ``ml_skill``) with `label_ts` (when it became known) and
    `label_source` (``outcome`` | ``skill``); all three None while the label is not known. Times are epoch ns.
    """
    p: dict[str, Any] = {"run": run_id, "instrument": instrument, "at": int(at_ns)}
    out = []
    for r in db.query(ML_EXPLAIN_SQL, p):
        q = {**p, "model": r["model"], "ts": int(r["ts_ns"])}
        known = db.query("SELECT label, toUnixTimestamp64Nano(ts_resolved) AS resolved_ns FROM ml_outcomes FINAL "
                         "WHERE run_id = {run:String} AND model = {model:String} AND instrument = {instrument:String} "
                         "AND ts_event = fromUnixTimestamp64Nano({ts:Int64}) LIMIT 1", q)
        source = "outcome" if known else None
        if not known:
            known = db.query("SELECT label, toUnixTimestamp64Nano(ts_resolved) AS resolved_ns FROM ml_skill FINAL "
                             "WHERE run_id = {run:String} AND name = {model:String} "
                             "AND instrument = {instrument:String} AND ts_event = fromUnixTimestamp64Nano({ts:Int64}) "
                             "LIMIT 1", q)
            source = "skill" if known else None
        contributions = list(r["contributions"])
        features = [{"name": n, "value": _finite(float(v)),
                     "contribution": _finite(float(contributions[i])) if i < len(contributions) else None}
                    for i, (n, v) in enumerate(zip(r["names"], r["inputs"], strict=True))]
        out.append({
            "model": str(r["model"]), "version": int(r["version"]), "instrument": instrument,
            "purpose": str(r["purpose"]), "ts_event": int(r["ts_ns"]), "feature_ts": int(r["feature_ns"]),
            "value": _finite(float(r["value"])), "score": _finite(float(r["score"])), "features": features,
            "intercept": _finite(float(r["intercept"])),
            "label": _finite(float(known[0]["label"])) if known else None,
            "label_ts": int(known[0]["resolved_ns"]) if known else None, "label_source": source,
        })
    return out


def ml_models(db: Queryable, run_id: str) -> list[dict[str, Any]]:
    """The latest learnt state of each model of a run (``ml_models``), by model name: what `ml export` writes.

    Each has `model`, `ts_event` (epoch ns), `kind`, `algorithm`, `pooled`, `horizon_bars`, `updates`
    (``{key: updates}``, key ``""`` for a pooled model), `features` and `state` (base64 of pickles).
    """
    return [{"model": str(r["model"]), "ts_event": int(r["ts_ns"]), "kind": str(r["kind"]),
             "algorithm": str(r["algorithm"]), "pooled": bool(r["pooled"]), "horizon_bars": int(r["horizon_bars"]),
             "updates": {str(k): int(n) for k, n in zip(r["update_keys"], r["update_counts"], strict=True)},
             "features": [str(f) for f in r["features"]], "state": str(r["state"])}
            for r in db.query(ML_MODELS_SQL, {"run": run_id})]
