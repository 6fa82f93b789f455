"""A replay of the real XRP/USDT:USDT perpetual (5 m bars, 1 h mark candles, 8 h funding) that trades the contract:
margin snapshots in ClickHouse match a hand computation from the recorded cash, position and the mark file,
funding moves the cash by -amount x mark x rate, and a threshold alert is recorded.

The account is unlevered (one instrument, |weight| <= 1), so its margin ratio is at most the maintenance rate:
a maintenance rate of 20 % with a warn threshold of 10 % stands in for a levered book and makes the ratio
cross the threshold on the first position."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from test_cli import headrace, query

from helpers import SHARED_DATA

FUT = SHARED_DATA / "futures" / "binance"
FILES = [FUT / f"XRP_USDT_USDT-{k}.feather" for k in ("5m-futures", "1h-mark", "8h-funding_rate")]
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not all(f.exists() for f in FILES), reason=f"needs {FUT}")]

RATE, LEVERAGE = 0.2, 20.0
ARGS = [a for f in FILES for a in ("--data", str(f))] + [
    "--set", "strategy.min_instruments=1", "--set", "strategy.name=ts_momentum", "--set", "strategy.long_only=false",
    "--set", "strategy.rebalance_bars=72", "--set", "features.momentum_lookback_bars=48",
    "--set", "features.vol_halflife_bars=48.0", "--set", "sizing.max_weight=1.0",
    "--set", "sizing.target_volatility=50",
    "--set", "ml.enabled=false", "--set", "account.initial_cash=10000", "--set", f"risk.leverage={LEVERAGE}",
    "--set", f"risk.maintenance_rate={RATE}", "--set", "risk.margin_warn=0.1", "--set", "risk.margin_critical=0.9",
    "--set", "risk.margin_reduce_to=0.15"]


def _ts(s: str) -> datetime:
    return datetime.fromisoformat(s[:19])


def mark_at(marks: list[tuple[datetime, float]], t: datetime) -> float | None:
    """The close of the last 1 h mark candle closed at or before `t` (a candle is known at its open + 1 h)."""
    known = [c for o, c in marks if o + timedelta(hours=1) <= t]
    return known[-1] if known else None


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    state = tmp_path_factory.mktemp("margin") / "state"
    out = headrace("replay", "--quiet", "--json", "--run-id", "margin", *ARGS, state=state).stdout
    return json.loads(out), state


def test_margin_snapshots_match_the_hand_computation_and_the_warn_alert_is_recorded(run) -> None:
    import polars as pl

    summary, state = run
    assert summary["fills"] > 0 and summary["events_quarantined"] == 0
    snaps = query("SELECT toString(ts_event) AS ts, wallet_balance, margin_balance, initial_margin, "
                  "maintenance_margin, margin_ratio, available, positions, min_distance, liquidation_prices, "
                  "(SELECT groupArray(kind) FROM alerts FINAL WHERE run_id = 'margin' AND kind LIKE 'margin%') "
                  "AS alerts FROM margin_snapshots FINAL WHERE run_id = 'margin' ORDER BY ts_event", state)
    # cash and the position held at every bar (the position row at or before it)
    rows = query("SELECT toString(e.ts_event) AS ts, e.cash AS cash, p.amount AS amount, p.avg_price AS avg_price "
                 "FROM (SELECT * FROM equity FINAL WHERE run_id = 'margin') AS e ASOF LEFT JOIN (SELECT * FROM "
                 "positions FINAL WHERE run_id = 'margin') AS p ON e.run_id = p.run_id AND e.ts_event >= p.ts_event "
                 "ORDER BY e.ts_event", state)
    book = {_ts(r["ts"]): r for r in rows}
    mk = pl.read_ipc(FILES[1]).sort("date")
    marks = [(d.replace(tzinfo=None), c) for d, c in zip(mk["date"].to_list(), mk["close"].to_list(), strict=True)]

    # one warn alert: the first position's ratio is about the maintenance rate, 0.2 >= 0.1, and never 0.9
    assert snaps[0]["alerts"] == ["margin_warn"]
    checked = 0
    for s in snaps:
        t = _ts(s["ts"])
        m = mark_at(marks, t)
        b = book[t]
        if m is None or not b["amount"]:
            continue  # before the first mark candle closes the bar's close stands in for the mark
        q, cash, entry = b["amount"], b["cash"], b["avg_price"]
        # a linear contract booked like spot: wallet = cash + q x entry, margin balance = cash + q x mark
        wallet, balance = cash + q * entry, cash + q * m
        notional = abs(q) * m
        mm, im = RATE * notional, notional / LEVERAGE
        # one position: WB + q (P - entry) = |q| P r  =>  P = (WB - q entry) / (|q| r - q) = cash / (|q| r - q)
        lp = cash / (abs(q) * RATE - q)
        dist = max(0.0, (m - lp) / m * (1 if q > 0 else -1))
        assert s["positions"] == 1
        assert s["wallet_balance"] == pytest.approx(wallet, rel=1e-9)
        assert s["margin_balance"] == pytest.approx(balance, rel=1e-9)
        assert s["maintenance_margin"] == pytest.approx(mm, rel=1e-9)
        assert s["initial_margin"] == pytest.approx(im, rel=1e-9)
        assert s["available"] == pytest.approx(balance - im, rel=1e-9)
        assert s["margin_ratio"] == pytest.approx(mm / balance, rel=1e-9)
        assert s["liquidation_prices"][0] == pytest.approx(lp, rel=1e-9)
        assert s["min_distance"] == pytest.approx(dist, rel=1e-9)
        checked += 1
    assert checked >= 5

    # funding at 2021-11-18 08:00:00.007 (rate from the file) lands in the bar closing at 08:05, which has no fill:
    # cash moves by -q x mark x rate with the mark of the candle closed at 08:00
    fr = pl.read_ipc(FILES[2]).sort("date")
    [rate] = [r for d, r in zip(fr["date"].to_list(), fr["open"].to_list(), strict=True)
              if d.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M") == "2021-11-18 08:00"]
    before, after = book[datetime(2021, 11, 18, 8, 0)], book[datetime(2021, 11, 18, 8, 5)]
    assert before["amount"] == after["amount"] != 0
    m = mark_at(marks, datetime(2021, 11, 18, 8, 5))
    assert m is not None and rate != 0
    assert after["cash"] - before["cash"] == pytest.approx(-after["amount"] * m * rate, rel=1e-9)
    assert not math.isclose(after["cash"], before["cash"])


def test_the_risk_report_lists_the_venues_margin(run) -> None:
    _, state = run
    rep = json.loads(headrace("risk", "--run-id", "margin", "--json", state=state).stdout)
    [last] = query("SELECT venue, margin_ratio, min_distance FROM margin_snapshots FINAL WHERE run_id = 'margin' "
                   "ORDER BY ts_event DESC LIMIT 1", state)
    [venue] = rep["margin"]
    assert (venue["venue"], venue["margin_ratio"], venue["min_distance"]) == (last["venue"], last["margin_ratio"],
                                                                             last["min_distance"])
    assert venue["max_margin_ratio"] >= venue["margin_ratio"] > 0.1  # above the warn level of this run
