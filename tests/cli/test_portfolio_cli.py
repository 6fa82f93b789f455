"""The portfolio engine through the command line, on the real 82-asset hourly universe: every method replays end to
end and records its risk per tier, a SIGKILLed run of every method resumes to the same fills and rebalances
without duplicate rows, and `headrace portfolio report` compares runs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from test_cli import FILL_COLUMNS, headrace, kill_then_resume, query, replay_json

from helpers import SHARED_DATA

UNIVERSE = SHARED_DATA / "universe/huobi-pob/cryptos_2017to2021_hourly.parquet"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not UNIVERSE.exists(), reason=f"needs {UNIVERSE}")]

METHODS = ("vol_target", "mean_variance", "tier_risk_parity", "regime_tiers")
# eight days of the May 2021 sell-off, a warm-up short enough that the strategy rebalances daily from 9 May;
# chunk_rows splits the 15,744 bars into 16 slices, so a run can be killed midway
ARGS = ["--data", str(UNIVERSE), "--venue", "huobi", "--quote", "USDT", "--timerange", "2021-05-06:2021-05-14",
        "--set", "strategy.rebalance_bars=24", "--set", "features.momentum_lookback_bars=72",
        "--set", "features.vol_halflife_bars=48.0", "--set", "sizing.min_trade_weight=0.002",
        "--set", "portfolio.min_bars=48", "--set", "replay.chunk_rows=1000",
        "--set", "portfolio.record_risk=true", "--set", "ml.enabled=false"]  # models: tests/cli/test_ml_replay.py
REPORT_KEYS = {"run_id", "method", "rebalances", "periods", "forecast_vol", "realised_vol", "bias_statistic",
               "solve_ms_p99"}
TABLES = ("fills", "rebalances", "risk_contributions")


def method_args(method: str) -> list[str]:
    return [*ARGS, "--set", f"portfolio.method={method}"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    """One uninterrupted run per method (run id = the method), all in one state dir; their summaries by method."""
    state = tmp_path_factory.mktemp("portfolio") / "state"
    return state, {m: replay_json(*method_args(m), "--run-id", m, state=state) for m in METHODS}


def _plain(v: Any) -> Any:
    # NaN (e.g. no condition number before the risk model exists) compares equal to itself here
    return "nan" if isinstance(v, float) and math.isnan(v) else v


def rebalance_rows(run_id: str, state: Path) -> list[dict[str, Any]]:
    rows = query("SELECT * EXCEPT (run_id, solve_ms), toUnixTimestamp64Nano(ts_event) AS ts_ns FROM rebalances FINAL "
                 f"WHERE run_id = '{run_id}' ORDER BY ts_event, event_id", state)
    return [{k: _plain(v) for k, v in r.items()} for r in rows]


def fills_of(run_id: str, state: Path) -> list[dict[str, Any]]:
    return query(f"SELECT {FILL_COLUMNS} FROM fills FINAL WHERE run_id = '{run_id}' "
                 "ORDER BY ts_event, instrument, event_id", state)


def test_every_method_replays_the_universe_and_records_risk_per_tier(straight) -> None:
    state, summaries = straight
    for method, s in summaries.items():
        assert s["portfolio_method"] == method and s["rebalances"] > 0 and s["fills"] > 0, (method, s)
        assert s["events_quarantined"] == 0
    rows = query("SELECT r.run_id AS run_id, r.n AS rebalances, r.with_model AS with_model, t.tier_rows AS tier_rows, "
                 "t.tier_rebalances AS tier_rebalances, t.tiers AS tiers, t.worst_sum AS worst_sum "
                 "FROM (SELECT run_id, count() AS n, countIf(assets > 0) AS with_model FROM rebalances FINAL "
                 "      GROUP BY run_id) AS r "
                 "LEFT JOIN (SELECT run_id, count() AS tier_rows, uniqExact(ts_event) AS tier_rebalances, "
                 "           groupUniqArray(name) AS tiers, max(abs(s - 1)) AS worst_sum "
                 "           FROM (SELECT run_id, ts_event, name, sum(share) OVER (PARTITION BY run_id, ts_event) AS s "
                 "                 FROM risk_contributions FINAL WHERE kind = 'tier') GROUP BY run_id) AS t "
                 "ON t.run_id = r.run_id ORDER BY run_id", state)
    by_run = {r["run_id"]: r for r in rows}
    assert set(by_run) == set(METHODS)
    for method, r in by_run.items():
        assert r["rebalances"] == summaries[method]["rebalances"], (method, r)
        # the risk model exists (assets held) and each such rebalance has tier shares summing to 1
        assert 0 < r["with_model"] <= r["rebalances"], (method, r)
        assert r["tier_rebalances"] == r["with_model"] and r["tier_rows"] > 0, (method, r)
        assert {"major", "large", "other"} <= set(r["tiers"]) and r["worst_sum"] < 1e-9, (method, r)


def test_ex_ante_volatility_is_per_bar_of_the_hourly_data(straight) -> None:
    state, _ = straight
    rows = query("SELECT run_id, ex_ante_vol, ex_ante_vol_annual FROM rebalances FINAL WHERE assets > 0", state)
    assert {r["run_id"] for r in rows} == set(METHODS)
    for r in rows:  # 8,760 hourly bars a year
        assert r["ex_ante_vol"] * math.sqrt(365 * 24) == pytest.approx(r["ex_ante_vol_annual"], rel=1e-9), r


# a SIGKILL of the two methods with the most state beyond the covariance: the optimiser's warm start
# (mean_variance) and the regime detector with the risk-budget solver (regime_tiers, whose solver tier_risk_parity
# shares); every method, vol_target included, is also crashed and resumed in tests/flows/test_portfolio_flow.py
@pytest.mark.parametrize("method", ["mean_variance", "regime_tiers"])
def test_a_sigkilled_run_resumes_to_the_uninterrupted_run(method: str, straight, tmp_path: Path) -> None:
    state, summaries = straight
    recovery = tmp_path / "recovery"
    args = ["replay", *method_args(method), "--recovery-dir", str(recovery), "--snapshot-s", "0.05", "--quiet",
            "--json", "--set", f"storage.state_dir={state}"]
    run_id, resumed = kill_then_resume(args, recovery, after_slices=6)
    assert resumed["run_id"] == run_id and resumed["portfolio_method"] == method
    assert resumed["rebalances"] == summaries[method]["rebalances"]
    assert resumed["final_equity"] == summaries[method]["final_equity"]
    assert fills_of(run_id, state) == fills_of(method, state) != []
    counts = " UNION ALL ".join(f"SELECT '{t}' AS t, count() AS rows, uniqExact(event_id) AS ids FROM {t} "
                                f"WHERE run_id = '{run_id}'" for t in TABLES)
    for row in query(counts, state):
        assert row["rows"] == row["ids"] > 0, row  # no duplicate rows, even without FINAL
    assert rebalance_rows(run_id, state) == rebalance_rows(method, state) != []


def test_portfolio_report_json_compares_two_runs(straight) -> None:
    state, summaries = straight
    rows = json.loads(headrace("portfolio", "report", "--run-id", "vol_target", "--run-id", "mean_variance", "--json",
                               state=state).stdout)
    assert [r["run_id"] for r in rows] == ["mean_variance", "vol_target"]
    for r in rows:
        assert set(r) >= REPORT_KEYS, r
        assert r["method"] == r["run_id"] and r["rebalances"] == summaries[r["run_id"]]["rebalances"]
        assert 0 < r["periods"] <= r["rebalances"]
        assert r["forecast_vol"] > 0 and r["realised_vol"] > 0 and r["bias_statistic"] > 0
        assert r["solve_ms_p99"] >= 0


def test_portfolio_report_table_names_the_runs_and_refuses_an_unknown_run(straight) -> None:
    state, _ = straight
    table = headrace("portfolio", "report", "--run-id", "tier_risk_parity", "--run-id", "regime_tiers",
                     state=state).stdout
    assert "tier_risk_parity" in table and "regime_tiers" in table and "bias" in table
    missing = headrace("portfolio", "report", "--run-id", "no-such-run", state=state, check=False)
    assert missing.returncode == 1 and "no-such-run" in missing.stderr and missing.stdout == ""
    # --json too, and a known run beside an unknown one is no excuse
    mixed = headrace("portfolio", "report", "--run-id", "regime_tiers", "--run-id", "no-such-run", "--json",
                     state=state, check=False)
    assert mixed.returncode == 1 and "no-such-run" in mixed.stderr and "regime_tiers" not in mixed.stderr
    assert mixed.stdout == ""
