"""`headrace ml report | explain | export | import` on a store filled with hand-made ML events (no replay): the JSON
keys, the tables, the exit codes and the import into the state dir."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from headrace.cli import app
from headrace.events import MlMetric, MlModelState, MlOutcome, MlPrediction, MlSkill, MlWeight, WrittenEvent
from sinks.clickhouse import Store
from sinks.rows import table_of, to_arrow

RUN = "ml-cli"
T0 = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z
HOUR = 3_600_000_000_000
BTC = "bittrex:BTC/USDT"
REPORT_KEYS = {"name", "mode", "kind", "samples", "ic", "hit_rate", "log_loss", "drift_events", "final_weight"}


def _events() -> list[WrittenEvent]:
    skill = [MlSkill(name=name, mode=mode, instrument=BTC, ts_event=T0 + k * HOUR, ts_resolved=T0 + (k + 4) * HOUR,
                     score=s * ((k % 5) - 2) / 2, label=0.01 * ((k * 7) % 5 - 2))
             for name, mode, s in (("momentum", "rules", 0.5), ("logit", "blended", 1.0)) for k in range(10)]
    metric = MlMetric(model="logit", ts_event=T0 + 9 * HOUR, instrument="", regime="", samples=40, window_samples=40,
                      log_loss=0.68, accuracy=0.55, mae=math.nan, hit_rate=0.55, ic=0.12, drift_events=1)
    weight = MlWeight(model="logit", ts_event=T0 + 8 * HOUR, previous=0.0, weight=0.25, reason="skill", model_ic=0.3,
                      rules_ic=0.1, samples=30)
    prediction = MlPrediction(model="logit", version=33, instrument=BTC, ts_event=T0 + 2 * HOUR, purpose="learn",
                              value=0.62, score=math.nan, feature_ts=T0 + 2 * HOUR, names=("ret_1", "vol_z"),
                              inputs=(0.004, -1.5), contributions=(0.21, 0.3), intercept=-0.02)
    outcome = MlOutcome(model="logit", version=33, instrument=BTC, ts_event=T0 + 2 * HOUR, ts_resolved=T0 + 6 * HOUR,
                        value=0.62, label=0.0071, regime="calm")
    late = MlPrediction(model="logit", version=40, instrument=BTC, ts_event=T0 + 19 * HOUR // 2, purpose="learn",
                        value=0.4, score=math.nan, feature_ts=T0 + 9 * HOUR, names=("ret_1",), inputs=(0.001,),
                        contributions=(-0.4,), intercept=-0.02)
    state = MlModelState(model="logit", ts_event=T0 + 10 * HOUR, kind="classifier", algorithm="logistic", pooled=True,
                         horizon_bars=4, updates=(("", 40),), features=("ret_1", "vol_z"), state="c3RhdGU=")
    return [*skill, metric, weight, prediction, outcome, late, state]


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dir whose embedded store holds one run's ML rows, written as the sink writes them."""
    state = tmp_path_factory.mktemp("ml-cli") / "state"
    store = Store.connect(f"chdb://{(state / 'clickhouse').resolve()}")
    store.init_schema()
    by_table: dict[str, list[WrittenEvent]] = {}
    for e in _events():
        by_table.setdefault(table_of(e), []).append(e)
    for table, events in by_table.items():
        store.insert(table, to_arrow(table, RUN, events))
    store.close()
    return state


def ml(state: Path, *args: str) -> Result:
    return CliRunner().invoke(app, ["ml", *args, "--set", f"storage.state_dir={state}"])


def test_ml_report_json_has_one_object_per_model_and_rule_factor(state: Path) -> None:
    res = ml(state, "report", "--run-id", RUN, "--json")
    assert res.exit_code == 0, res.output
    rows: list[dict[str, Any]] = json.loads(res.stdout)
    assert [(r["name"], r["mode"]) for r in rows] == [("momentum", "rules"), ("logit", "blended")]
    assert all(set(r) >= REPORT_KEYS for r in rows)
    rules, logit = rows
    assert (logit["kind"], logit["samples"], logit["log_loss"], logit["drift_events"]) == ("classifier", 40, 0.68, 1)
    assert logit["final_weight"] == 0.25 and rules["final_weight"] == 0.75
    assert rules["samples"] == 10 and rules["log_loss"] is None and logit["mae"] is None  # NaN is null in JSON


def test_ml_report_table_and_an_unknown_run(state: Path) -> None:
    res = ml(state, "report", "--run-id", RUN)
    assert res.exit_code == 0, res.output
    assert "momentum" in res.stdout and "logit" in res.stdout and "final weight" in res.stdout
    for extra in ([], ["--json"]):
        missing = ml(state, "report", "--run-id", "no-such-run", *extra)
        assert missing.exit_code == 1 and "no ML rows for run 'no-such-run'" in missing.stderr
        assert missing.stdout == ""


def test_ml_explain_shows_features_contributions_and_the_label(state: Path) -> None:
    res = ml(state, "explain", "--run-id", RUN, "--instrument", BTC, "--at", "2023-11-15T01:00:00", "--json")
    assert res.exit_code == 0, res.output
    [row] = json.loads(res.stdout)
    assert (row["model"], row["version"], row["ts_event"], row["label"]) == ("logit", 33, T0 + 2 * HOUR, 0.0071)
    assert [(f["name"], f["value"], f["contribution"]) for f in row["features"]] == [
        ("ret_1", 0.004, 0.21), ("vol_z", -1.5, 0.3)]
    table = ml(state, "explain", "--run-id", RUN, "--instrument", BTC, "--at", "2023-11-15T01:00:00")
    assert table.exit_code == 0, table.output
    assert "vol_z" in table.stdout and "+0.3" in table.stdout and "intercept" in table.stdout
    assert "+0.0071" in table.stdout and "from outcome" in table.stdout
    later = ml(state, "explain", "--run-id", RUN, "--instrument", BTC, "--at", "2023-11-15T08:00:00")
    assert later.exit_code == 0 and "not known yet" in later.stdout and "version 40" in later.stdout
    assert "score: n/a" in later.stdout


def test_ml_explain_refuses_nothing_found_and_a_bad_time(state: Path) -> None:
    before = ml(state, "explain", "--run-id", RUN, "--instrument", BTC, "--at", "2023-11-14")
    assert before.exit_code == 1 and "no prediction of run 'ml-cli'" in before.stderr
    bad = ml(state, "explain", "--run-id", RUN, "--instrument", BTC, "--at", "yesterday")
    assert bad.exit_code == 2 and "'--at'" in bad.stderr and "ISO 8601" in bad.stderr


def test_ml_export_then_import_gives_the_warm_start_line(state: Path, tmp_path: Path) -> None:
    out = tmp_path / "trained.json.gz"
    res = ml(state, "export", "--run-id", RUN, "--out", str(out))
    assert res.exit_code == 0, res.output
    doc = json.loads(gzip.decompress(out.read_bytes()))
    assert doc["format"] == "headrace-ml-models" and [m["model"] for m in doc["models"]] == ["logit"]
    assert doc["models"][0]["updates"] == {"": 40}
    imported = ml(state, "import", str(out))
    assert imported.exit_code == 0, imported.output
    assert (state / "models" / "trained.json.gz").read_bytes() == out.read_bytes()
    assert '--set ml.warm_start="trained"' in imported.stdout
    none = ml(state, "export", "--run-id", "no-such-run", "--out", str(tmp_path / "none.json.gz"))
    assert none.exit_code == 1 and not (tmp_path / "none.json.gz").exists()


def test_ml_import_refuses_a_file_that_is_not_an_export(state: Path, tmp_path: Path) -> None:
    bad = tmp_path / "notes.json.gz"
    bad.write_text("hello")
    res = ml(state, "import", str(bad))
    assert res.exit_code == 2 and "ml.warm_start" in res.stderr and "not gzip" in res.stderr
    assert not (state / "models" / "notes.json.gz").exists()
    missing = ml(state, "import", str(tmp_path / "absent.json.gz"))
    assert missing.exit_code == 2 and "no model file" in missing.stderr
