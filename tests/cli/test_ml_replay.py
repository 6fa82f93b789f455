"""Online models through the command line on real data: the 82-asset hourly universe with the default models
(one shadow, one blended) writes predictions, metrics, blend weights and drift events, and `headrace ml report`
compares the models with the rule factors; on the real Bittrex files a SIGKILLed replay resumes to the same
predictions, weights and fills as an uninterrupted one, and two runs predict alike."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from test_cli import BITTREX, FILL_COLUMNS, headrace, kill_then_resume, query, replay_json

from helpers import SHARED_DATA

UNIVERSE = SHARED_DATA / "universe/huobi-pob/cryptos_2017to2021_hourly.parquet"
REPORT_KEYS = {"name", "mode", "samples", "ic", "hit_rate", "log_loss", "drift_events", "final_weight"}

pytestmark = pytest.mark.slow

# the January to mid-February 2021 stretch of the hourly universe: a momentum reversal the logistic model
# learns, and several drifts
HOURLY = ["--data", str(UNIVERSE), "--venue", "huobi", "--quote", "USDT", "--timerange", "2021-01-01:2021-02-20",
          "--set", "strategy.rebalance_bars=24", "--set", "ml.store_features_every=24"]


@pytest.mark.skipif(not UNIVERSE.exists(), reason=f"needs {UNIVERSE}")
def test_the_hourly_universe_with_one_shadow_and_one_blended_model(tmp_path: Path) -> None:
    state = tmp_path / "state"
    summary = replay_json(*HOURLY, "--run-id", "hourly", state=state)
    assert summary["fills"] > 0 and summary["ml_models"] == 2 and summary["ml_predictions"] > 1000
    [counts] = query("SELECT " + ", ".join(
        f"(SELECT count() FROM {t} WHERE run_id = 'hourly') AS {t}"
        for t in ("ml_predictions", "ml_outcomes", "ml_metrics", "ml_skill", "ml_drift", "ml_features", "ml_models",
                  "ml_weights")), state)
    assert all(counts[t] > 0 for t in ("ml_predictions", "ml_outcomes", "ml_metrics", "ml_skill", "ml_drift",
                                       "ml_features")), counts
    assert counts["ml_models"] == 2
    drift_alerts = query("SELECT count() AS n FROM alerts WHERE run_id = 'hourly' AND kind = 'model_drift'", state)
    assert drift_alerts[0]["n"] == counts["ml_drift"]
    # metrics per model, per regime and per instrument
    scopes = query("SELECT model, countIf(instrument = '' AND regime = '') AS pooled, "
                   "countIf(regime != '') AS regimes, countIf(instrument != '') AS instruments "
                   "FROM ml_metrics WHERE run_id = 'hourly' GROUP BY model ORDER BY model", state)
    assert [s["model"] for s in scopes] == ["linear_shadow", "logistic_blended"]
    assert all(s["pooled"] > 10 and s["regimes"] > 0 and s["instruments"] > 50 for s in scopes)
    # every weight change has its reason; w never exceeds the cap
    weights = query("SELECT model, previous, weight, reason FROM ml_weights WHERE run_id = 'hourly' "
                    "ORDER BY ts_event", state)
    assert all(w["model"] == "logistic_blended" and 0 <= w["weight"] <= 0.5 and w["reason"] for w in weights)

    report = headrace("ml", "report", "--run-id", "hourly", "--json", state=state)
    import json

    rows: list[dict[str, Any]] = json.loads(report.stdout)
    assert all(r.keys() >= REPORT_KEYS for r in rows)
    by_name = {r["name"]: r for r in rows}
    assert {n: r["mode"] for n, r in by_name.items()} == {
        "xs_momentum": "rules", "ts_momentum": "rules", "linear_shadow": "shadow", "logistic_blended": "blended"}
    assert by_name["linear_shadow"]["final_weight"] == 0
    assert by_name["xs_momentum"]["final_weight"] == pytest.approx(1 - by_name["logistic_blended"]["final_weight"])
    assert all(r["samples"] > 1000 and math.isfinite(r["ic"]) for r in rows)
    assert by_name["logistic_blended"]["drift_events"] + by_name["linear_shadow"]["drift_events"] == \
        counts["ml_drift"]
    table = headrace("ml", "report", "--run-id", "hourly", state=state).stdout
    assert "logistic_blended" in table and "xs_momentum" in table


# a gate loose enough that the weight moves on the short Bittrex run, so the resume must restore it exactly
LOOSE = ["--set", "ml.blend_min_t=0.0", "--set", "ml.blend_margin=0.0", "--set", "ml.blend_min_samples=20",
         "--set", "ml.skill_window=60", "--set", "strategy.rebalance_bars=24", "--set", "ml.horizon_bars=12",
         "--set", "replay.chunk_rows=500"]
PREDICTIONS = ("SELECT model, instrument, purpose, version, value, score, toUnixTimestamp64Nano(ts_event) AS ts "
               "FROM ml_predictions FINAL WHERE run_id = '{run}'")
WEIGHTS = ("SELECT model, previous, weight, reason, toUnixTimestamp64Nano(ts_event) AS ts FROM ml_weights FINAL "
           "WHERE run_id = '{run}'")


def test_a_sigkilled_replay_resumes_to_the_same_predictions_weights_and_fills_and_its_models_warm_start_another(
        tmp_path: Path) -> None:
    # (two uninterrupted runs predict alike: tests/flows/test_replay_flow.py compares whole runs, ML rows included,
    # with one and two workers; here the resume)
    state, recovery = tmp_path / "state", tmp_path / "recovery"
    data = [a for f in ("ETH_BTC-5m.feather", "LTC_BTC-5m.feather") for a in ("--data", str(BITTREX / f))]
    straight = replay_json(*data, "--run-id", "straight", *LOOSE, state=state)
    args = ["replay", *data, "--recovery-dir", str(recovery), "--snapshot-s", "0.25", "--quiet", "--json", *LOOSE,
            "--set", f"storage.state_dir={state}"]
    run_id, resumed = kill_then_resume(args, recovery, after_slices=10)  # of 23
    assert resumed["final_equity"] == straight["final_equity"]
    runs = ("straight", run_id)

    def per_run(sql: str) -> dict[str, list[dict[str, Any]]]:
        """`sql`'s rows for each run, in one query (each CLI call starts a process)."""
        out: dict[str, list[dict[str, Any]]] = {r: [] for r in runs}
        for row in query(" UNION ALL ".join(f"SELECT '{r}' AS run, * FROM ({sql.format(run=r)})" for r in runs),
                         state):
            out[row.pop("run")].append(row)
        return {r: sorted(v, key=lambda x: tuple(map(str, x.values()))) for r, v in out.items()}

    predictions, weights = per_run(PREDICTIONS), per_run(WEIGHTS)
    fills = per_run(f"SELECT {FILL_COLUMNS} FROM fills FINAL WHERE run_id = '{{run}}'")
    assert len(predictions["straight"]) > 500 and len(weights["straight"]) > 3 and fills["straight"], \
        (len(predictions["straight"]), len(weights["straight"]), len(fills["straight"]))
    assert predictions[run_id] == predictions["straight"]
    assert weights[run_id] == weights["straight"]
    assert fills[run_id] == fills["straight"]
    # no duplicate rows, even without FINAL: every event id once
    counts = query(" UNION ALL ".join(f"SELECT '{t}' AS t, count() AS rows, uniqExact(event_id) AS ids FROM {t} "
                                      f"WHERE run_id = '{run_id}'" for t in ("ml_predictions", "ml_outcomes",
                                                                             "ml_skill", "ml_weights", "ml_metrics")),
                   state)
    assert all(n["rows"] == n["ids"] > 0 for n in counts), counts

    # the models learnt by the uninterrupted run, exported and imported, warm-start a run on other data
    out = tmp_path / "models.json.gz"
    headrace("ml", "export", "--run-id", "straight", "--out", str(out), state=state)
    assert 'ml.warm_start="models"' in headrace("ml", "import", str(out), state=state).stdout
    other = ["--data", str(BITTREX / "ADA_BTC-5m.feather")]
    replay_json(*other, *LOOSE, "--set", 'ml.warm_start="models"', "--run-id", "warm", state=state)
    [versions] = query(
        "SELECT (SELECT groupArray((model, arraySum(update_counts))) FROM ml_models FINAL WHERE run_id = 'straight') "
        "AS exported, (SELECT groupArray((model, v)) FROM (SELECT model, min(version) AS v FROM ml_predictions FINAL "
        "WHERE run_id = 'warm' GROUP BY model)) AS first", state)
    # the warm run's first predictions come from the exported models: their versions start where those ended
    assert sorted(map(tuple, versions["first"])) == sorted(map(tuple, versions["exported"]))
    assert all(v > 0 for _, v in versions["first"])
    # a file learnt on another horizon is refused at start, naming the key
    bad = headrace("replay", "--quiet", *other, *LOOSE, "--set", 'ml.warm_start="models"',
                   "--set", "ml.horizon_bars=6", "--run-id", "bad", state=state, check=False)
    assert bad.returncode == 2 and "ml.warm_start" in bad.stderr
