"""The ML tables on a real embedded ClickHouse (chDB): hand-made events of two models and a rule factor go through
the ClickHouse sink, come back equal, and `ml_report` / `ml_explain` / the export file and the ML dashboard read
them as a hand computation (numpy, scipy) says they should."""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import spearmanr

from headrace import report
from headrace.dashboards import DASHBOARD_DIR, expand_macros, iter_panels, load_dashboards
from headrace.errors import ConfigError
from headrace.events import (
    FeatureVector,
    MlDrift,
    MlMetric,
    MlModelState,
    MlOutcome,
    MlPrediction,
    MlSkill,
    MlWeight,
    WrittenEvent,
)
from headrace.ml_export import export_models, import_models, load_models, resolve_warm_start
from sinks.clickhouse import ClickHouseSink, Store
from sinks.rows import SCHEMAS, TS, table_of

RUN = "ml-run"
T0 = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z
HOUR = 3_600_000_000_000
INSTRUMENTS = ("bittrex:BTC/USDT", "bittrex:ETH/USDT", "bittrex:LTC/USDT")
REBALANCES = 6
HORIZON = 4


@dataclass(frozen=True)
class MlRun:
    dsn: str
    events: list[WrittenEvent]

    def store(self) -> Store:
        return Store.connect(self.dsn)

    def of(self, cls: type) -> list[Any]:
        return [e for e in self.events if type(e) is cls]


def _skill(rng: np.random.Generator) -> list[MlSkill]:
    out = []
    for name, mode, signal in (("momentum", "rules", 0.3), ("logit", "blended", 0.8), ("ridge", "shadow", -0.2)):
        for k in range(REBALANCES):
            for instrument in INSTRUMENTS:
                label = float(rng.normal(0, 0.02))
                score = float(np.clip(signal * label / 0.02 + rng.normal(0, 0.5), -1, 1))
                ts = T0 + k * 24 * HOUR
                out.append(MlSkill(name=name, mode=mode, instrument=instrument, ts_event=ts,
                                   ts_resolved=ts + HORIZON * HOUR, score=score, label=label))
    return out


def _metrics() -> list[MlMetric]:
    out = []
    for model, kind in (("logit", "classifier"), ("ridge", "regressor")):
        for k in range(4):
            ts = T0 + k * HOUR * 10
            for instrument, regime in (("", ""), (INSTRUMENTS[0], ""), ("", "calm")):
                scale = 1.0 if (instrument, regime) == ("", "") else 9.0  # per-slice rows must not be read
                out.append(MlMetric(
                    model=model, ts_event=ts, instrument=instrument, regime=regime, samples=int(100 * (k + 1) * scale),
                    window_samples=50, log_loss=0.69 - 0.01 * k if kind == "classifier" else math.nan,
                    accuracy=0.5 + 0.01 * k if kind == "classifier" else math.nan,
                    mae=math.nan if kind == "classifier" else 0.01 + 0.001 * k,
                    hit_rate=0.5 + 0.02 * k * scale / 9, ic=0.05 * k * scale / 9 if scale == 1 else -1.0,
                    drift_events=k // 2 if model == "ridge" else 0))
    return out


def _state(model: str, ts: int, kind: str, updates: tuple[tuple[str, int], ...]) -> MlModelState:
    return MlModelState(model=model, ts_event=ts, kind=kind, algorithm="logistic" if kind == "classifier" else "linear",
                        pooled=updates[0][0] == "", horizon_bars=HORIZON, updates=updates,
                        features=("ret_1", "ret_4", "vol"), state="cGlja2xlZCBieXRlcw==")


def _predictions() -> list[MlPrediction]:
    btc = INSTRUMENTS[0]

    def p(model: str, hours: int, purpose: str, value: float) -> MlPrediction:
        ts = T0 + hours * HOUR
        return MlPrediction(model=model, version=10 + hours, instrument=btc, ts_event=ts, purpose=purpose,  # type: ignore[arg-type]
                            value=value, score=2 * value - 1 if purpose == "decide" else math.nan,
                            feature_ts=ts, names=("ret_1", "vol"), inputs=(0.01 * hours, 0.5),
                            contributions=(0.1 * hours, -0.2) if model == "logit" else (), intercept=0.05
                            if model == "logit" else math.nan)

    return [p("logit", 0, "learn", 0.55), p("logit", 4, "learn", 0.6), p("logit", 4, "decide", 0.61),
            p("logit", 8, "learn", 0.4), p("ridge", 0, "decide", 0.52),
            # another instrument, and a prediction after the asked time: neither is shown
            MlPrediction(model="logit", version=1, instrument=INSTRUMENTS[1], ts_event=T0 + 4 * HOUR, purpose="learn",
                         value=0.9, score=math.nan, feature_ts=T0, names=(), inputs=())]


def _events() -> list[WrittenEvent]:
    rng = np.random.default_rng(9)
    btc = INSTRUMENTS[0]
    vectors = [FeatureVector(instrument=i, ts_event=T0 + k * HOUR, values=(("ret_1", 0.001 * k), ("vol", 0.02)),
                             flags=("warmup",) if k < 2 else (), close=100.0 + k)
               for i in INSTRUMENTS for k in range(5)]
    vectors.append(FeatureVector(instrument=btc, ts_event=T0 + 99 * HOUR, values=()))  # nothing known, NaN close
    outcomes = [MlOutcome(model="logit", version=14, instrument=btc, ts_event=T0 + 4 * HOUR,
                          ts_resolved=T0 + 8 * HOUR, value=0.6, label=0.0125, regime="calm"),
                MlOutcome(model="logit", version=10, instrument=btc, ts_event=T0, ts_resolved=T0 + 4 * HOUR,
                          value=0.55, label=-0.004, regime="warmup")]
    weights = [MlWeight(model="logit", ts_event=T0 + k * 24 * HOUR, previous=0.1 * k, weight=w, reason=reason,
                        model_ic=0.2, rules_ic=0.05, samples=30 + k)
               for k, (w, reason) in enumerate(((0.1, "skill"), (0.2, "skill"), (0.3, "skill")))]
    drift = [MlDrift(model="ridge", ts_event=T0 + 30 * HOUR, policy="reset", version=120, relearned=0,
                     detail="ADWIN width 64")]
    states = [_state("logit", T0 + 10 * HOUR, "classifier", (("", 5),)),
              _state("logit", T0 + 200 * HOUR, "classifier", (("", 50),)),
              _state("ridge", T0 + 200 * HOUR, "regressor", ((btc, 20), (INSTRUMENTS[1], 18)))]
    # the ridge's decision at T0 on BTC resolves through its skill pair; the logit's at T0+8h is not known yet
    return [*vectors, *_predictions(), *outcomes, *_metrics(), *_skill(rng), *weights, *drift, *states]


@pytest.fixture(scope="module")
def ml_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlRun]:
    dsn = f"chdb://{tmp_path_factory.mktemp('ml-store')}"
    events = _events()
    part = ClickHouseSink(dsn, RUN, batch_rows=7).build_part("sink", "clickhouse", None)
    part.write_batch([events[: len(events) // 2], *events[len(events) // 2:]])  # sequences and single events
    part.close()
    yield MlRun(dsn=dsn, events=events)


# ---------------------------------------------------------------------------------------------------
# Round trip


ML_TABLES = ("ml_features", "ml_predictions", "ml_outcomes", "ml_metrics", "ml_skill", "ml_weights", "ml_drift",
             "ml_models")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, list | tuple):
        return isinstance(b, list | tuple) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


@pytest.mark.parametrize("table", ML_TABLES)
def test_every_ml_event_round_trips_through_the_sink(table: str, ml_run: MlRun) -> None:
    cls, cols = SCHEMAS[table]
    expected = {e.event_id: e for e in ml_run.events if table_of(e) == table}
    assert expected and all(type(e) is cls for e in expected.values())
    select = ", ".join(f"toUnixTimestamp64Nano({n}) AS {n}" if t == TS else n for n, t, _ in cols)
    rows = ml_run.store().query(f"SELECT event_id, {select} FROM {table} FINAL WHERE run_id = {{r:String}}",
                                {"r": RUN})
    assert sorted(r["event_id"] for r in rows) == sorted(expected)
    for r in rows:
        e = expected[r["event_id"]]
        for name, _, get in cols:
            assert _same(get(e), r[name]), (table, name, get(e), r[name])


def test_arrays_keep_their_pairs_in_order(ml_run: MlRun) -> None:
    [row] = ml_run.store().query(
        "SELECT arrayZip(names, values) AS pairs, flags FROM ml_features FINAL WHERE run_id = {r:String} "
        "AND instrument = 'bittrex:ETH/USDT' AND ts_event = fromUnixTimestamp64Nano({t:Int64})",
        {"r": RUN, "t": T0 + HOUR})
    assert [tuple(p) for p in row["pairs"]] == [("ret_1", 0.001), ("vol", 0.02)] and row["flags"] == ["warmup"]
    [state] = ml_run.store().query("SELECT arrayZip(update_keys, update_counts) AS u FROM ml_models FINAL "
                                   "WHERE run_id = {r:String} AND model = 'ridge'", {"r": RUN})
    assert [tuple(p) for p in state["u"]] == [(INSTRUMENTS[0], 20), (INSTRUMENTS[1], 18)]


# ---------------------------------------------------------------------------------------------------
# ml report


def _by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in rows}


def test_ml_report_compares_models_and_rules_on_the_same_decision_samples(ml_run: MlRun) -> None:
    rows = report.ml_report(ml_run.store(), RUN)
    assert [(r["name"], r["mode"]) for r in rows] == [("momentum", "rules"), ("logit", "blended"), ("ridge", "shadow")]
    for r in rows:
        pairs = [(s.score, s.label) for s in ml_run.of(MlSkill) if s.name == r["name"]]
        score, label = np.array(pairs).T
        assert r["decision_samples"] == len(pairs) == REBALANCES * len(INSTRUMENTS)
        assert r["ic"] == pytest.approx(spearmanr(score, label).statistic, abs=1e-12)
        assert r["decision_hit_rate"] == pytest.approx(np.mean((score > 0) == (label > 0)), abs=1e-12)
        assert set(r) >= {"name", "mode", "kind", "samples", "ic", "hit_rate", "log_loss", "drift_events",
                          "final_weight"}
    by = _by_name(rows)
    assert by["logit"]["ic"] > by["momentum"]["ic"]  # the hand-made logit signal is the stronger one


def test_ml_report_takes_the_latest_run_wide_prequential_scores(ml_run: MlRun) -> None:
    by = _by_name(report.ml_report(ml_run.store(), RUN))
    last = {m.model: m for m in ml_run.of(MlMetric) if m.instrument == "" and m.regime == "" and m.ts_event
            == max(x.ts_event for x in ml_run.of(MlMetric))}
    for name, kind in (("logit", "classifier"), ("ridge", "regressor")):
        r, m = by[name], last[name]
        assert r["kind"] == kind
        assert (r["samples"], r["hit_rate"], r["prequential_ic"], r["drift_events"]) == (
            m.samples, m.hit_rate, m.ic, m.drift_events)
    assert by["logit"]["log_loss"] == last["logit"].log_loss and by["logit"]["mae"] is None  # NaN becomes None
    assert by["ridge"]["log_loss"] is None and by["ridge"]["mae"] == last["ridge"].mae
    rules = by["momentum"]
    assert rules["samples"] == rules["decision_samples"] and rules["hit_rate"] == rules["decision_hit_rate"]
    assert (rules["kind"], rules["log_loss"], rules["drift_events"]) == (None, None, 0)
    json.dumps(list(by.values()), allow_nan=False)  # no NaN left for JSON


def test_ml_report_final_weights_split_the_blend(ml_run: MlRun) -> None:
    by = _by_name(report.ml_report(ml_run.store(), RUN))
    weights = sorted(ml_run.of(MlWeight), key=lambda w: w.ts_event)
    assert by["logit"]["final_weight"] == weights[-1].weight == 0.3
    assert by["logit"]["weight_changes"] == len(weights)
    assert (by["ridge"]["final_weight"], by["ridge"]["weight_changes"]) == (0.0, 0)  # shadow: never traded
    assert by["momentum"]["final_weight"] == pytest.approx(1 - 0.3, abs=1e-15)


def test_ml_report_of_a_run_without_ml_rows_is_empty(ml_run: MlRun) -> None:
    assert report.ml_report(ml_run.store(), "no-such-run") == []
    assert report.ml_models(ml_run.store(), "no-such-run") == []


# ---------------------------------------------------------------------------------------------------
# ml explain


def test_ml_explain_prefers_the_decision_and_finds_its_label(ml_run: MlRun) -> None:
    rows = report.ml_explain(ml_run.store(), RUN, INSTRUMENTS[0], T0 + 6 * HOUR)
    by = {r["model"]: r for r in rows}
    assert list(by) == ["logit", "ridge"]
    logit = by["logit"]
    assert (logit["ts_event"], logit["purpose"], logit["version"]) == (T0 + 4 * HOUR, "decide", 14)
    assert logit["value"] == 0.61
    assert logit["features"] == [{"name": "ret_1", "value": 0.04, "contribution": pytest.approx(0.4)},
                                 {"name": "vol", "value": 0.5, "contribution": -0.2}]
    assert logit["intercept"] == 0.05 and logit["score"] == pytest.approx(0.22)
    assert (logit["label"], logit["label_ts"], logit["label_source"]) == (0.0125, T0 + 8 * HOUR, "outcome")
    ridge = by["ridge"]  # a forest-like row: no contributions, NaN intercept; its label from the decision pair
    assert ridge["ts_event"] == T0 and ridge["intercept"] is None
    assert [f["contribution"] for f in ridge["features"]] == [None, None]
    skill = next(s for s in ml_run.of(MlSkill) if s.name == "ridge" and s.instrument == INSTRUMENTS[0]
                 and s.ts_event == T0)
    assert (ridge["label"], ridge["label_source"]) == (skill.label, "skill")


def test_ml_explain_says_when_the_label_is_not_known_and_sees_nothing_before_the_first_prediction(
        ml_run: MlRun) -> None:
    [logit] = [r for r in report.ml_explain(ml_run.store(), RUN, INSTRUMENTS[0], T0 + 8 * HOUR)
               if r["model"] == "logit"]
    assert (logit["ts_event"], logit["purpose"]) == (T0 + 8 * HOUR, "learn")
    assert (logit["label"], logit["label_ts"], logit["label_source"]) == (None, None, None)
    assert report.ml_explain(ml_run.store(), RUN, INSTRUMENTS[0], T0 - 1) == []
    assert report.ml_explain(ml_run.store(), RUN, "bittrex:XRP/USDT", T0 + 8 * HOUR) == []


# ---------------------------------------------------------------------------------------------------
# Export, import, warm start


def test_export_then_load_round_trips_the_latest_state_of_each_model(ml_run: MlRun, tmp_path: Path) -> None:
    rows = report.ml_models(ml_run.store(), RUN)
    assert [(r["model"], r["ts_event"]) for r in rows] == [("logit", T0 + 200 * HOUR), ("ridge", T0 + 200 * HOUR)]
    path = tmp_path / "trained.json.gz"
    path.write_bytes(export_models(rows, RUN))
    doc = json.loads(gzip.decompress(path.read_bytes()))
    assert (doc["format"], doc["version"], doc["run_id"]) == ("headrace-ml-models", 1, RUN)
    loaded = load_models(path)
    assert loaded.run_id == RUN and [m.model for m in loaded.models] == ["logit", "ridge"]
    ridge = loaded.model("ridge")
    assert ridge is not None and ridge.updates == ((INSTRUMENTS[0], 20), (INSTRUMENTS[1], 18)) and not ridge.pooled
    assert ridge.features == ("ret_1", "ret_4", "vol") and ridge.state_bytes() == b"pickled bytes"
    assert export_models(rows, RUN) == path.read_bytes()  # the same rows give the same bytes


def _write(path: Path, doc: Any) -> Path:
    path.write_bytes(gzip.compress(json.dumps(doc).encode()))
    return path


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p, "no model file"),
    (lambda p: (p.write_text('{"format": "headrace-ml-models"}'), p)[1], "not gzip-compressed"),
    (lambda p: _write(p, {"format": "something-else", "version": 1, "models": []}), "format 'something-else'"),
    (lambda p: _write(p, {"format": "headrace-ml-models", "version": 2, "models": []}), "version 2"),
    (lambda p: _write(p, {"format": "headrace-ml-models", "version": 1, "models": []}), "holds no models"),
    (lambda p: _write(p, {"format": "headrace-ml-models", "version": 1, "models": [{"model": "m"}]}),
     "model 0 lacks kind"),
])
def test_load_models_says_what_is_wrong(make: Any, message: str, tmp_path: Path) -> None:
    path = make(tmp_path / "bad.json.gz")
    with pytest.raises(ConfigError, match=message) as info:
        load_models(path)
    assert info.value.key == "ml.warm_start" and str(path) in str(info.value)


def test_import_then_resolve_warm_start_by_name_or_path(ml_run: MlRun, tmp_path: Path) -> None:
    src = tmp_path / "out" / "best.json.gz"
    src.parent.mkdir()
    src.write_bytes(export_models(report.ml_models(ml_run.store(), RUN), RUN))
    state = tmp_path / "state"
    copy = import_models(src, state)
    assert copy == state / "models" / "best.json.gz" and copy.read_bytes() == src.read_bytes()
    assert resolve_warm_start("best", state) == copy
    assert resolve_warm_start(str(src), state) == src
    assert resolve_warm_start("", state) is None
    with pytest.raises(ConfigError, match=r"'other' is neither.*imported: best") as info:
        resolve_warm_start("other", state)
    assert info.value.key == "ml.warm_start"
    with pytest.raises(ConfigError, match="none imported"):
        resolve_warm_start("best", tmp_path / "empty-state")
    plain = tmp_path / "plain.json.gz"
    plain.write_text("{}")
    with pytest.raises(ConfigError, match="not gzip"):
        import_models(plain, state)
    assert not (state / "models" / "plain.json.gz").exists()


# ---------------------------------------------------------------------------------------------------
# The ML dashboard on these rows (the replayed fixture run of tests/dashboards has ML rows only when ML is on)


ML_DASHBOARD = next(d for d in load_dashboards(DASHBOARD_DIR) if d["uid"] == "headrace-ml")
ML_PANELS = [p for p in iter_panels(ML_DASHBOARD) if p.get("type") != "row"]


@pytest.mark.parametrize("panel", ML_PANELS, ids=[p["title"] for p in ML_PANELS])
def test_every_ml_dashboard_panel_returns_rows_on_chdb(panel: dict[str, Any], ml_run: MlRun) -> None:
    for t in panel["targets"]:
        sql = expand_macros(t["rawSql"], time_from_ns=T0, time_to_ns=T0 + 300 * HOUR, interval_ms=3_600_000,
                            variables={"run_id": RUN})
        rows = ml_run.store().query(sql)
        assert rows, panel["title"]
        named = {o["matcher"]["options"] for o in panel["fieldConfig"]["overrides"]}
        assert named <= set(rows[0]), (panel["title"], named)
        if t["format"] == 0:
            times = [r["time"] for r in rows]
            assert next(iter(rows[0])) == "time" and times == sorted(times), panel["title"]


def test_ml_dashboard_run_variable_lists_the_run(ml_run: MlRun) -> None:
    [var] = [v for v in ML_DASHBOARD["templating"]["list"] if v["name"] == "run_id"]
    assert RUN in [next(iter(r.values())) for r in ml_run.store().query(var["query"])]


def test_ml_dashboard_decision_ic_panel_agrees_with_ml_report(ml_run: MlRun) -> None:
    panel = next(p for p in ML_PANELS if p["title"] == "Decision-time IC: models vs rules")
    sql = expand_macros(panel["targets"][0]["rawSql"], time_from_ns=T0, time_to_ns=T0 + 300 * HOUR,
                        interval_ms=3_600_000, variables={"run_id": RUN})
    got = {r["name"]: r["ic"] for r in ml_run.store().query(sql)}
    want = {r["name"]: r["ic"] for r in report.ml_report(ml_run.store(), RUN)}
    assert got.keys() == want.keys() and all(got[k] == pytest.approx(want[k], abs=1e-12) for k in want)
