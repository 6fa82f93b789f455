"""The risk engine through the command line on real data: the 82-asset hourly universe over the May 2021 sell-off
binds the Expected Shortfall limit (targets scaled, with reasons, in ClickHouse) and `headrace risk --json` reports
every measure; on the real Bittrex files a tight notional limit denies orders with their codes, an operator halt
and resume given with `headrace risk halt|resume --at` take effect from their times, and stress runs on demand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_cli import BITTREX, headrace, query, replay_json

from helpers import SHARED_DATA, models_off

UNIVERSE = SHARED_DATA / "universe/huobi-pob/cryptos_2017to2021_hourly.parquet"
RISK_KEYS = {"trading_state", "var_historical", "es_historical", "es_cornish_fisher", "lvar", "stress", "margin",
             "limits", "denials"}

pytestmark = pytest.mark.slow
_models_off = pytest.fixture(autouse=True, scope="module")(models_off)  # the risk engine is the subject here

HALT_AT, RESUME_AT = "2018-01-20T00:00:00Z", "2018-01-24T00:00:00Z"


def risk_json(run_id: str, state: Path) -> dict[str, Any]:
    rep = json.loads(headrace("risk", "--run-id", run_id, "--json", state=state).stdout)
    assert isinstance(rep, dict)
    return rep


@pytest.fixture(scope="module")
def may_2021(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    if not UNIVERSE.exists():
        pytest.skip(f"needs {UNIVERSE}")
    state = tmp_path_factory.mktemp("may") / "state"
    summary = replay_json("--data", str(UNIVERSE), "--venue", "huobi", "--quote", "USDT", "--timerange",
                          "2021-04-25:2021-06-01", "--set", "strategy.rebalance_bars=24", "--set", "risk.window_bars=250",
                          "--run-id", "may",
                          state=state)
    return state, summary


def test_the_es_limit_binds_in_the_may_2021_sell_off_and_scales_the_targets(may_2021: tuple[Path, Any]) -> None:
    state, summary = may_2021
    assert summary["risk_state"] == "ACTIVE" and summary["risk_scalings"] > 0
    rows = query("SELECT toUnixTimestamp64Nano(ts_event) AS ts, es_before, es_after, limit, scale, reason "
                 "FROM risk_scalings FINAL WHERE run_id = 'may' ORDER BY ts_event", state)
    assert len(rows) == summary["risk_scalings"]
    may = [r for r in rows if r["ts"] >= 1_620_000_000 * 10**9]  # from 3 May 2021
    assert may, "the limit binds in the sell-off"
    for r in rows:
        assert r["es_before"] > r["limit"] == 0.08 and 0 < r["scale"] < 1
        assert r["es_after"] == pytest.approx(r["limit"], rel=1e-9)  # ES is positively homogeneous
        assert r["scale"] == pytest.approx(r["limit"] / r["es_before"], rel=1e-12)
        assert "above the limit 0.08" in r["reason"] and "every weight x" in r["reason"]
    # the targets written are the scaled ones: at a scaled rebalance the gross of the orders' target weights
    # is at most the scale times the unscaled gross the sizer allows
    [lim] = query("SELECT count() AS n FROM risk_limits FINAL WHERE run_id = 'may' AND name = 'es_targets' "
                  "AND breached", state)
    assert lim["n"] == len(rows)


def test_the_risk_report_holds_every_key_with_es_at_least_var(may_2021: tuple[Path, Any]) -> None:
    state, _ = may_2021
    rep = risk_json("may", state)
    assert set(rep) >= RISK_KEYS
    assert rep["es_historical"] >= rep["var_historical"] > 0
    assert rep["es_cornish_fisher"] > 0 and rep["lvar"] >= rep["var_historical"]
    assert {s["scenario"] for s in rep["stress"]} >= {"may_2021_selloff", "usdc_depeg_2023", "market_down_30",
                                                    "correlations_to_one", "spreads_x10"}
    assert any(s["scenario"].startswith("venue_freeze:") for s in rep["stress"])
    assert all({"scenario", "pnl"} <= set(s) for s in rep["stress"])
    names = {x["name"] for x in rep["limits"]}
    assert {"es", "gross", "net", "stress"} <= names
    assert all({"name", "value", "limit", "utilisation"} <= set(x) for x in rep["limits"])
    assert rep["margin"] == []  # spot only: no derivative, no margin
    assert rep["denials"]["denied"] == 0
    # the report's measures are those of the last full risk_reports row
    [last] = query("SELECT es_historical, var_historical FROM risk_reports FINAL WHERE run_id = 'may' "
                   "ORDER BY ts_event DESC LIMIT 1", state)
    assert (rep["es_historical"], rep["var_historical"]) == (last["es_historical"], last["var_historical"])


def test_stress_on_demand_uses_the_runs_last_positions(may_2021: tuple[Path, Any]) -> None:
    state, _ = may_2021
    now = json.loads(headrace("risk", "stress", "--run-id", "may", "--json", state=state).stdout)
    by = {s["scenario"]: s for s in now["stress"]}
    assert now["positions"] > 0 and by["market_down_30"]["pnl"] < 0
    assert by["spreads_x10"]["pnl"] < 0 and by["usdc_depeg_2023"]["pnl"] is not None
    # the spread scenario by hand: 10 x sum |value| x half spread (the venue's configured 5 bps)
    pos = query("SELECT instrument, argMax(value_account, ts_event) AS v FROM positions FINAL WHERE run_id = 'may' "
                "GROUP BY instrument", state)
    half = 5 / 1e4
    assert by["spreads_x10"]["pnl"] == pytest.approx(-10 * sum(abs(p["v"]) for p in pos) * half, rel=1e-9)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    state = tmp_path_factory.mktemp("limited") / "state"
    headrace("risk", "halt", "--reason", "exchange incident drill", "--at", HALT_AT, state=state)
    headrace("risk", "resume", "--reason", "drill over", "--at", RESUME_AT, state=state)
    summary = replay_json("--data", str(BITTREX), "--run-id", "tight", "--set", "risk.max_order_notional=0.05",
                          state=state)
    return state, summary


def test_a_tight_notional_limit_denies_orders_with_their_codes(limited: tuple[Path, Any]) -> None:
    state, summary = limited
    denials = query("SELECT order_id, codes, actuals, limits, blocking, notional, reason, action FROM risk_denials "
                    "FINAL WHERE run_id = 'tight' AND has(codes, 'max_order_notional')", state)
    assert denials and summary["risk_denials"] >= len(denials)
    for d in denials:
        i = d["codes"].index("max_order_notional")
        assert d["actuals"][i] == pytest.approx(d["notional"]) and d["actuals"][i] > d["limits"][i] == 0.05
        assert d["blocking"][i] and d["action"] == "denied" and "max_order_notional" in d["reason"]
    statuses = query("SELECT order_id, status, reason FROM order_status FINAL WHERE run_id = 'tight' "
                     "AND status = 'denied'", state)
    denied_ids = {d["order_id"] for d in denials}
    assert denied_ids <= {s["order_id"] for s in statuses}
    assert all(s["reason"].startswith("risk: ") for s in statuses)
    fills = query("SELECT count() AS n FROM fills FINAL WHERE run_id = 'tight' AND order_id IN "
                  f"({', '.join(repr(i) for i in sorted(denied_ids))})", state)
    assert fills[0]["n"] == 0  # a denied order never fills
    assert summary["orders_denied"] >= len(denials)


def test_operator_halt_and_resume_take_effect_from_their_times_in_a_replay(limited: tuple[Path, Any]) -> None:
    state, summary = limited
    changes = query("SELECT toString(ts_event) AS ts, previous, state, source, reason FROM trading_states FINAL "
                    "WHERE run_id = 'tight' ORDER BY ts_event", state)
    assert [(c["previous"], c["state"], c["source"]) for c in changes] == [("ACTIVE", "HALTED", "operator"),
                                                                          ("HALTED", "ACTIVE", "operator")]
    assert changes[0]["ts"].startswith("2018-01-20 00:00") and "exchange incident drill" in changes[0]["reason"]
    assert changes[1]["ts"].startswith("2018-01-24 00:00") and "drill over" in changes[1]["reason"]
    # while halted nothing is sent: every order decided in the halt is denied with code "halted"
    sent = query("SELECT count() AS n FROM fills FINAL WHERE run_id = 'tight' AND ts_event >= '2018-01-20 00:05:00' "
                 "AND ts_event < '2018-01-24 00:00:00'", state)
    assert sent[0]["n"] == 0
    halted = query("SELECT count() AS n FROM risk_denials FINAL WHERE run_id = 'tight' AND has(codes, 'halted')",
                   state)
    assert halted[0]["n"] > 0
    after = query("SELECT count() AS n FROM fills FINAL WHERE run_id = 'tight' AND ts_event > '2018-01-24 00:00:00'",
                  state)
    assert after[0]["n"] > 0  # trading resumed
    listed = headrace("risk", "commands", state=state).stdout
    assert "halt: exchange incident drill" in listed and "resume: drill over" in listed
    assert summary["risk_state"] == "ACTIVE" and summary["risk_state_changes"] == 2


def test_risk_commands_need_a_known_action_and_a_reason(tmp_path: Path) -> None:
    res = headrace("risk", "halt", "--reason", "  ", state=tmp_path, check=False)
    assert res.returncode == 2 and "needs a reason" in res.stderr
    res = headrace("risk", "halt", "--reason", "x", "--at", "yesterday", state=tmp_path, check=False)
    assert res.returncode == 2 and "'yesterday' is not an ISO time" in res.stderr
    res = headrace("risk", "--run-id", "nope", state=tmp_path, check=False)
    assert res.returncode == 2 and "run `headrace replay` here first" in res.stderr  # no store here at all
