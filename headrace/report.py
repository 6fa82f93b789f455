"""Run summaries and position reports, computed from what the run wrote to ClickHouse.

ClickHouse is the source of truth: a resumed run's summary covers the rows written before the crash
too. Every query reads with FINAL, so a row written twice counts once.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from headrace.events import NS_PER_YEAR


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
    sharpe: float | None  # annualised from per-bar equity returns; None when undefined
    max_drawdown: float  # largest fall from a running peak, as a fraction (0.1 = 10 %)
    turnover: float  # notional traded / mean equity
    currency: str
    wall_s: float
    events_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def performance(equity: np.ndarray, ts: np.ndarray) -> tuple[float | None, float]:
    """Return (annualised Sharpe of per-step returns, max drawdown) of an equity curve.

    The Sharpe ratio uses a zero risk-free rate and the median step between timestamps (ns) to
    annualise over a 365-day year; it is None with fewer than 3 points or no variation.

    Examples
    --------
    >>> day = 86_400 * 10**9
    >>> sharpe, mdd = performance(np.array([1.0, 1.1, 0.99, 1.2]), np.arange(4) * day)
    >>> round(mdd, 4)
    0.1
    """
    if len(equity) < 2:
        return None, 0.0
    peak = np.maximum.accumulate(equity)
    mdd = float(np.max(1.0 - equity / peak))
    if len(equity) < 3:
        return None, mdd
    rets = equity[1:] / equity[:-1] - 1.0
    sd = float(np.std(rets, ddof=1))
    step = float(np.median(np.diff(ts)))
    if not sd > 0 or not step > 0:
        return None, mdd
    return float(np.mean(rets)) / sd * math.sqrt(NS_PER_YEAR / step), mdd


def _count(db: Queryable, table: str, run_id: str) -> int:
    return int(db.query(f"SELECT count() AS n FROM {table} FINAL WHERE run_id = {{run:String}}",
                        {"run": run_id})[0]["n"])


def summarize(db: Queryable, run_id: str, *, events_in: int, initial_equity: float, wall_s: float) -> Summary:
    """Compute the summary of `run_id` from its rows."""
    eq = db.query(
        "SELECT toUnixTimestamp64Nano(ts_event) AS ts, equity, fees, traded, currency FROM equity FINAL "
        "WHERE run_id = {run:String} ORDER BY ts_event", {"run": run_id})
    equity = np.array([r["equity"] for r in eq], dtype=float)
    ts = np.array([r["ts"] for r in eq], dtype=np.int64)
    sharpe, mdd = performance(equity, ts)  # the first row is the funded account, before any trade
    final = float(equity[-1]) if len(equity) else initial_equity
    fees = float(eq[-1]["fees"]) if eq else 0.0
    traded = float(eq[-1]["traded"]) if eq else 0.0
    return Summary(
        run_id=run_id,
        events_in=events_in,
        events_quarantined=_count(db, "quarantine", run_id),
        bars=_count(db, "bars", run_id),
        orders=_count(db, "orders", run_id),
        fills=_count(db, "fills", run_id),
        fees=fees,
        initial_equity=initial_equity,
        final_equity=final,
        total_return=final / initial_equity - 1.0,
        sharpe=sharpe,
        max_drawdown=mdd,
        turnover=traded / float(np.mean(equity)) if len(equity) and np.mean(equity) > 0 else 0.0,
        currency=str(eq[-1]["currency"]) if eq else "",
        wall_s=wall_s,
        events_per_s=events_in / wall_s if wall_s > 0 else 0.0,
    )


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
        r["as_of"] = r["as_of"].isoformat() if hasattr(r["as_of"], "isoformat") else str(r["as_of"])
    return rows


RUNS_SQL = """
SELECT run_id, mode, status, started_at, updated_at, data, summary
FROM runs FINAL
ORDER BY started_at DESC, run_id
LIMIT {limit:UInt32}
"""

RUN_COLUMNS = ("total_return", "sharpe", "max_drawdown", "fills", "fees", "events_in", "events_quarantined")


def runs(db: Queryable, limit: int = 50) -> list[dict[str, Any]]:
    """Return the latest runs, newest first, with their status and the headline figures of their summary.

    A run that has not finished (running, failed, or killed and not resumed) has no figures: they are None.
    """
    out = []
    for r in db.query(RUNS_SQL, {"limit": limit}):
        summary = json.loads(r["summary"] or "{}")
        row = {"run_id": r["run_id"], "mode": r["mode"], "status": r["status"],
               "started_at": r["started_at"].isoformat(), "updated_at": r["updated_at"].isoformat(),
               "data": json.loads(r["data"] or "[]")}
        row.update({k: summary.get(k) for k in RUN_COLUMNS})
        if "error" in summary:
            row["error"] = summary["error"]
        out.append(row)
    return out
