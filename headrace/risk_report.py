"""The risk report of a run (`headrace risk --run-id ID`) and stress on demand (`headrace risk stress`).

Everything is read from the risk tables (sql/008_risk.sql); NaN and infinities come out as None.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from headrace.config import Config
from headrace.events import split_instrument
from headrace.report import Queryable

MEASURES = ("var_historical", "es_historical", "var_cornish_fisher", "es_cornish_fisher", "lvar", "lvar_exogenous",
            "lvar_endogenous")


def _num(x: Any) -> float | None:
    if x is None:
        return None
    f = float(x)
    return f if math.isfinite(f) else None


def _ts(x: Any) -> str:
    return x.isoformat() if hasattr(x, "isoformat") else str(x)


def risk_report(db: Queryable, run_id: str) -> dict[str, Any] | None:
    """The latest risk report of `run_id` with its stress results, margin, limits, denials and state changes;
    None when the run wrote no risk rows (no such run, or risk.enabled was off).

    The measures are those of the last report whose historical window was full enough (``samples >=
    risk.min_bars``): at the end of a run, the latest measured state, not a NaN of a too-short tail.
    """
    p = {"run": run_id}
    rows = db.query("SELECT * FROM risk_reports FINAL WHERE run_id = {run:String} AND NOT isNaN(es_historical) "
                    "ORDER BY ts_event DESC LIMIT 1", p)
    if not rows:
        rows = db.query("SELECT * FROM risk_reports FINAL WHERE run_id = {run:String} ORDER BY ts_event DESC "
                        "LIMIT 1", p)
    if not rows:
        return None
    r = rows[0]
    last_state = db.query("SELECT argMax(trading_state, ts_event) AS s, max(ts_event) AS t, count() AS n "
                          "FROM risk_reports FINAL WHERE run_id = {run:String}", p)[0]
    out: dict[str, Any] = {
        "run_id": run_id, "account": r["account"], "ts": _ts(r["ts_event"]), "trading_state": last_state["s"],
        "last_ts": _ts(last_state["t"]), "reports": int(last_state["n"]), "alpha": float(r["alpha"]),
        "samples": int(r["samples"]), "equity": _num(r["equity"]), "gross": _num(r["gross"]), "net": _num(r["net"]),
        **{m: _num(r[m]) for m in MEASURES}}
    stress = db.query(
        "SELECT scenario, kind, pnl, pnl_fraction, worst_key, detail, ts_event FROM stress_results FINAL "
        "WHERE run_id = {run:String} AND ts_event = (SELECT max(ts_event) FROM stress_results "
        "WHERE run_id = {run:String}) ORDER BY pnl, scenario", p)
    out["stress"] = [{"scenario": s["scenario"], "kind": s["kind"], "pnl": _num(s["pnl"]),
                      "pnl_fraction": _num(s["pnl_fraction"]), "worst_key": s["worst_key"], "detail": s["detail"]}
                     for s in stress]
    out["stress_ts"] = _ts(stress[0]["ts_event"]) if stress else None
    margin = db.query(
        "SELECT venue, argMax(margin_ratio, ts_event) AS r, argMax(margin_balance, ts_event) AS b, "
        "argMax(maintenance_margin, ts_event) AS mm, argMax(initial_margin, ts_event) AS im, "
        "argMax(min_distance, ts_event) AS d, max(ts_event) AS ts, max(margin_ratio) AS rmax "
        "FROM margin_snapshots FINAL WHERE run_id = {run:String} GROUP BY venue ORDER BY venue", p)
    out["margin"] = [{"venue": m["venue"], "margin_ratio": _num(m["r"]), "max_margin_ratio": _num(m["rmax"]),
                      "margin_balance": _num(m["b"]), "maintenance_margin": _num(m["mm"]),
                      "initial_margin": _num(m["im"]), "min_distance": _num(m["d"]), "ts": _ts(m["ts"])}
                     for m in margin]
    limits = db.query(
        "SELECT name, argMax(value, ts_event) AS v, argMax(limit, ts_event) AS lim, "
        "argMax(utilisation, ts_event) AS u, argMax(breached, ts_event) AS b, "
        "max(utilisation) AS umax, countIf(breached) AS breaches FROM risk_limits FINAL "
        "WHERE run_id = {run:String} GROUP BY name ORDER BY name", p)
    out["limits"] = [{"name": x["name"], "value": _num(x["v"]), "limit": _num(x["lim"]),
                      "utilisation": _num(x["u"]), "breached": bool(x["b"]),
                      "max_utilisation": _num(x["umax"]), "breaches": int(x["breaches"])} for x in limits]
    codes = db.query("SELECT code, count() AS n FROM risk_denials FINAL ARRAY JOIN codes AS code "
                     "WHERE run_id = {run:String} GROUP BY code ORDER BY n DESC, code", p)
    counts = db.query("SELECT countIf(action = 'denied') AS denied, countIf(action = 'reduced') AS reduced "
                      "FROM risk_denials FINAL WHERE run_id = {run:String}", p)[0]
    latest = db.query("SELECT ts_event, order_id, instrument, side, amount, amount_sent, notional, action, codes, "
                      "reason FROM risk_denials FINAL WHERE run_id = {run:String} ORDER BY ts_event DESC, order_id "
                      "LIMIT 10", p)
    out["denials"] = {"denied": int(counts["denied"]), "reduced": int(counts["reduced"]),
                      "by_code": {c["code"]: int(c["n"]) for c in codes},
                      "latest": [{**d, "ts_event": _ts(d["ts_event"]), "codes": list(d["codes"])} for d in latest]}
    states = db.query("SELECT ts_event, previous, state, source, reason FROM trading_states FINAL "
                      "WHERE run_id = {run:String} ORDER BY ts_event, event_id", p)
    out["state_changes"] = [{**s, "ts_event": _ts(s["ts_event"])} for s in states]
    sc = db.query("SELECT count() AS n, min(scale) AS lowest, argMax(reason, ts_event) AS last_reason "
                  "FROM risk_scalings FINAL WHERE run_id = {run:String}", p)[0]
    out["scalings"] = {"count": int(sc["n"]), "lowest_scale": _num(sc["lowest"]) if int(sc["n"]) else None,
                       "last_reason": sc["last_reason"] if int(sc["n"]) else ""}
    return out


# -- stress on demand -------------------------------------------------------------------------------


def stress_now(db: Queryable, run_id: str, config: Config) -> dict[str, Any] | None:
    """Every scenario of `config` on the run's last positions, with betas and volatilities from the run's bars
    (the last ``risk.window_bars`` bar times) and spreads from the venues' configured half spreads; None when
    the run has no positions."""
    from headrace.stress_data import configured_scenarios
    from operators.risk.stress import CashBalance, StressPosition, stress_pnl

    p = {"run": run_id}
    pos = db.query("SELECT instrument, argMax(value_account, ts_event) AS value, max(ts_event) AS ts "
                   "FROM positions FINAL WHERE run_id = {run:String} GROUP BY instrument", p)
    eq = db.query("SELECT argMax(equity, ts_event) AS equity, argMax(cash, ts_event) AS cash, "
                  "argMax(currency, ts_event) AS currency, max(ts_event) AS ts FROM equity FINAL "
                  "WHERE run_id = {run:String}", p)
    if not pos or not eq or eq[0]["equity"] is None:
        return None
    equity, currency = float(eq[0]["equity"]), str(eq[0]["currency"])
    held = [(str(x["instrument"]), float(x["value"])) for x in pos if float(x["value"]) != 0]
    bal = db.query("SELECT venue, currency, argMax(value_account, ts_event) AS v FROM balances FINAL "
                   "WHERE run_id = {run:String} GROUP BY venue, currency", p)
    cash = ([CashBalance(venue=str(b["venue"]), currency=str(b["currency"]), value=float(b["v"])) for b in bal
             if float(b["v"]) != 0] if bal else [CashBalance(venue="", currency=currency,
                                                                value=float(eq[0]["cash"]))])
    window = config.risk.window_bars
    closes = db.query(
        "SELECT instrument, groupArray(close) AS c FROM (SELECT instrument, close, ts_event FROM bars FINAL "
        "WHERE run_id = {run:String} AND ts_event > (SELECT max(ts_event) FROM bars WHERE run_id = {run:String}) "
        f"- toIntervalSecond({int(config.timeframe_ns // 10**9) * window}) ORDER BY ts_event) GROUP BY instrument",
        p)
    rets = {str(c["instrument"]): np.diff(np.asarray(c["c"], dtype=np.float64)) / np.asarray(c["c"][:-1])
            for c in closes if len(c["c"]) > 2}
    betas, vols = _betas(rets)
    positions = []
    for inst, value in sorted(held):
        parts = inst.split(":")
        if inst in rets or len(parts) < 2 or "/" in parts[1]:  # an instrument: venue:BASE/QUOTE
            venue, _, base, quote = split_instrument(inst)
            key = inst
        else:  # the router's position rows: venue:ASSET
            venue, base, quote, key = parts[0], parts[1], currency, parts[1]
            key = next((i for i in rets if i.startswith(f"{venue}:{base}/")), key)
        positions.append(StressPosition(key=key, venue=venue, asset=base, quote=quote, value=value,
                                        beta=betas.get(key, 1.0), vol=vols.get(key, 0.0),
                                        half_spread=config.venue(venue).half_spread_bps / 1e4))
    results = stress_pnl(positions, cash, equity, configured_scenarios(config), currency)
    return {"run_id": run_id, "ts": _ts(eq[0]["ts"]), "equity": equity, "currency": currency,
            "positions": len(positions),
            "stress": [{"scenario": x.scenario, "kind": x.kind, "pnl": _num(x.pnl),
                        "pnl_fraction": _num(x.pnl_fraction), "worst_key": x.worst_key, "detail": x.detail}
                       for x in sorted(results, key=lambda x: x.pnl)]}


def _betas(rets: dict[str, np.ndarray]) -> tuple[dict[str, float], dict[str, float]]:
    """Beta to the equal-weighted market of the instruments' common tail, and each one's volatility."""
    if not rets:
        return {}, {}
    n = min(len(r) for r in rets.values())
    keys: Sequence[str] = sorted(rets)
    m = np.vstack([rets[k][-n:] for k in keys])
    mkt = m.mean(axis=0)
    var = float(mkt.var())
    betas = {k: (float(np.mean((m[i] - m[i].mean()) * (mkt - mkt.mean())) / var) if var > 0 else 1.0)
             for i, k in enumerate(keys)}
    return betas, {k: float(rets[k].std()) for k in keys}
