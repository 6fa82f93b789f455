"""The ML step inside the cross-section: skill earns a blend weight step by step, noise does not, decay and drift
take it back; labels against a batch computation, no look-ahead, invalid vectors skipped, bounded memory,
restore midway and the snapshot's size."""

from __future__ import annotations

import base64
import math
import pickle
from collections.abc import Sequence

import numpy as np
import pytest

from headrace.events import (
    Alert,
    Bar,
    CrossSection,
    FeatureBatch,
    FeatureVector,
    MlDrift,
    MlModelState,
    MlOutcome,
    MlPrediction,
    MlSkill,
    MlWeight,
)
from operators.features.bar_features import BarFeatures
from operators.ml.core import MlCore, MlSettings, ModelSpec
from operators.ml.online import rank_ic
from operators.portfolio.cross_section import CrossSectionCore
from operators.portfolio.sizing import VolTargetSizer
from operators.signals.momentum import CrossSectionalMomentum, TimeSeriesMomentum

H = 3600 * 10**9
KEYS = tuple(f"v:A{i}/Q" for i in range(6))
SIZER = VolTargetSizer(target_volatility=0.5, max_weight=0.5, max_gross_leverage=1.0, long_only=False)
MODELS = (ModelSpec("shadow_lin", "regressor", "linear", True, "shadow"),
          ModelSpec("blend_logit", "classifier", "linear", True, "blended"))


def settings(**kw: object) -> MlSettings:
    base: dict[str, object] = dict(
        models=MODELS, horizon=4, metrics_window=300, blend_min_samples=150, skill_window=300, blend_step=0.1,
        blend_max_weight=0.5, blend_margin=0.02, blend_min_t=3.0, drift_policy="relearn", relearn_samples=50,
        regime=(("fast_halflife_bars", 12.0), ("slow_halflife_bars", 120.0), ("warmup_bars", 48),
                ("min_dwell_bars", 12)),
        features=(("horizons", (1, 4)), ("vol_halflife", 12.0), ("z_halflife", 12.0), ("volume_halflife", 12.0),
                  ("min_vol_bars", 5)),
        store_every=0)
    base.update(kw)
    return MlSettings(**base)  # type: ignore[arg-type]


def ar_prices(n: int, phi: float | Sequence[float], *, seed: int = 0, keys: Sequence[str] = KEYS
              ) -> dict[str, np.ndarray]:
    """Per key, closes whose one-bar log returns follow r_t = phi_t r_(t-1) + 0.01 e_t (phi may vary by bar)."""
    rng = np.random.default_rng(seed)
    phis = np.full(n, phi) if np.isscalar(phi) else np.asarray(phi, dtype=float)
    out = {}
    for k in keys:
        r = np.zeros(n)
        e = rng.standard_normal(n) * 0.01
        for t in range(1, n):
            r[t] = phis[t] * r[t - 1] + e[t]
        out[k] = 100.0 * np.exp(np.cumsum(r))
    return out


def bars_of(prices: dict[str, np.ndarray], skip: dict[str, set[int]] | None = None) -> dict[str, list[Bar]]:
    out: dict[str, list[Bar]] = {}
    for k, closes in prices.items():
        out[k] = [Bar(instrument=k, ts_open=t * H, ts_event=(t + 1) * H, open=float(c), high=float(c), low=float(c),
                      close=float(c), volume=1.0 + (t % 7), trades=1)
                  for t, c in enumerate(closes) if t not in (skip or {}).get(k, set())]
    return out


def batches(bars: dict[str, list[Bar]], marks: dict[str, dict[int, tuple[int, ...]]] | None = None,
            per: int = 5) -> list[FeatureBatch]:
    """Feature batches of `per` bars, instruments interleaved; `marks[k][i]` rides on k's batch starting at bar i."""
    out: list[list[FeatureBatch]] = []
    for k, bs in sorted(bars.items()):
        feats = BarFeatures(12.0, 12)
        mine = []
        for a in range(0, len(bs), per):
            chunk = tuple(bs[a:a + per])
            mine.append(FeatureBatch(instrument=k, watermark=chunk[-1].ts_event, bars=chunk,
                                     features=tuple(feats.update_bar(b) for b in chunk),
                                     quarantined=(marks or {}).get(k, {}).get(a, ())))
        mine.append(FeatureBatch(instrument=k, watermark=2**62, bars=(), features=()))
        out.append(mine)
    return [b for group in zip(*out, strict=True) for b in group]


def cross(ml: MlCore, keys: Sequence[str] = KEYS, rebalance: int = 4) -> CrossSectionCore:
    return CrossSectionCore(keys, CrossSectionalMomentum(), SIZER, rebalance_bars=rebalance, min_instruments=2,
                            ml=ml)


def rules() -> tuple[CrossSectionalMomentum, TimeSeriesMomentum]:
    return CrossSectionalMomentum(), TimeSeriesMomentum(12)


def run(core: CrossSectionCore, items: list[FeatureBatch]) -> list[CrossSection]:
    return [x for b in items for x in core.update(b)] + core.flush()


def records(out: list[CrossSection], cls: type) -> list:  # type: ignore[type-arg]
    return [r for cs in out for r in cs.ml if isinstance(r, cls)]


# --- the blend: skill raises w step by step, noise does not ------------------------------------------------


def test_predictable_returns_raise_the_blend_weight_step_by_step_to_its_cap() -> None:
    out = run(cross(MlCore(settings(), rules())), batches(bars_of(ar_prices(900, 0.6))))
    weights = records(out, MlWeight)
    assert weights, "the model never earned a weight"
    assert [w.weight for w in weights[:5]] == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert all(w.previous + 0.1 == pytest.approx(w.weight) for w in weights[:5])
    first = weights[0]
    assert first.samples >= 150 and first.model_ic - first.rules_ic >= 0.02 and first.reason.startswith("skill: ")
    # over a 4-bar horizon an AR(1) with phi 0.6 allows a rank IC of about 0.4: the model gets most of it,
    # the momentum rule far less
    half = [s for s in records(out, MlSkill)][len(records(out, MlSkill)) // 2:]
    ic = {n: rank_ic([s.score for s in half if s.name == n], [s.label for s in half if s.name == n])
          for n in ("blend_logit", "shadow_lin", "xs_momentum")}
    assert ic["blend_logit"] > 0.3 and ic["shadow_lin"] > 0.3 and ic["xs_momentum"] < ic["blend_logit"] - 0.1
    # the traded alpha is the blend: (1 - w) rules + w model, on the keys of that rebalance
    last = next(cs for cs in reversed(out) if cs.targets)
    blend = {s.instrument: s.score for s in last.signals if s.strategy == "blend"}
    rule = {s.instrument: s.score for s in last.signals if s.strategy == "xs_momentum"}
    model = {p.instrument: p.score for p in last.ml if isinstance(p, MlPrediction) and p.model == "blend_logit"}
    w = weights[-1].weight
    assert blend and all(blend[k] == pytest.approx((1 - w) * rule[k] + w * model[k]) for k in blend)


def test_a_random_walk_never_raises_the_blend_weight() -> None:
    out = run(cross(MlCore(settings(), rules())), batches(bars_of(ar_prices(900, 0.0, seed=5))))
    assert records(out, MlWeight) == []
    assert not any(s.strategy == "blend" for cs in out for s in cs.signals)
    skill = [s for s in records(out, MlSkill) if s.name == "blend_logit"]
    assert len(skill) > 1000 and abs(rank_ic([s.score for s in skill], [s.label for s in skill])) < 0.1


def test_skill_that_decays_takes_the_weight_back_down() -> None:
    phi = [0.6] * 700 + [-0.6] * 900  # the relation turns over: the model's IC falls below the rules'
    out = run(cross(MlCore(settings(drift_policy="none"), rules())), batches(bars_of(ar_prices(1600, phi))))
    weights = records(out, MlWeight)
    ups = [w for w in weights if w.weight > w.previous]
    downs = [w for w in weights if w.weight < w.previous]
    assert ups and ups[0].ts_event < 700 * H  # earned on the first regime
    after = [w for w in downs if w.ts_event > 700 * H]
    assert after and all(w.reason.startswith("decay: ") for w in after)  # taken back once the relation turned
    assert min(w.weight for w in after) < max(w.weight for w in ups)


def test_drift_resets_the_model_writes_an_alert_and_drops_the_weight_to_zero() -> None:
    phi = [0.7] * 700 + [-0.7] * 900
    out = run(cross(MlCore(settings(), rules())), batches(bars_of(ar_prices(1600, phi, seed=2))))
    drifts = records(out, MlDrift)
    assert drifts and all(d.policy == "relearn" and 0 < d.relearned <= 50 for d in drifts)
    alerts = [r for cs in out for r in cs.ml if isinstance(r, Alert)]
    assert {a.kind for a in alerts} == {"model_drift"} and len(alerts) == len(drifts)
    zeroed = [w for w in records(out, MlWeight) if w.reason.startswith("drift: ")]
    for w in zeroed:
        assert w.weight == 0.0 and w.previous > 0


# --- labels, look-ahead, validity, memory ----------------------------------------------------------------------


def test_outcome_labels_equal_a_batch_forward_return_and_learning_bars_are_every_horizon() -> None:
    prices = ar_prices(300, 0.3, seed=1)
    out = run(cross(MlCore(settings(), rules())), batches(bars_of(prices)))
    outcomes = records(out, MlOutcome)
    assert outcomes
    for o in outcomes:
        t = o.ts_event // H - 1  # the bar index of the prediction
        closes = prices[o.instrument]
        assert o.label == pytest.approx(math.log(closes[t + 4] / closes[t]), abs=1e-12)
        assert t % 4 == 0 and o.ts_resolved == o.ts_event + 4 * H
    learn = [p for p in records(out, MlPrediction) if p.purpose == "learn"]
    assert {(p.model, p.instrument, p.ts_event) for p in learn} >= {(o.model, o.instrument, o.ts_event)
                                                                     for o in outcomes}
    for s in records(out, MlSkill):
        t = s.ts_event // H - 1
        assert s.label == pytest.approx(math.log(prices[s.instrument][t + 4] / prices[s.instrument][t]), abs=1e-12)


def test_no_prediction_depends_on_anything_after_its_own_time() -> None:
    a = ar_prices(400, 0.5, seed=3)
    b = {k: v.copy() for k, v in a.items()}
    for v in b.values():
        v[250:] *= np.exp(np.linspace(0, 0.5, 150))  # a different future from bar 250 on
    cut = 250 * H  # bar 249 closes at 250 H: everything at or before it is shared
    run_a = run(cross(MlCore(settings(), rules())), batches(bars_of(a)))
    run_b = run(cross(MlCore(settings(), rules())), batches(bars_of(b)))

    def before(out: list[CrossSection]) -> list:  # type: ignore[type-arg]
        return [r for cs in out for r in cs.ml if isinstance(r, MlPrediction | MlWeight) and r.ts_event <= cut]

    assert before(run_a) == before(run_b) and len(before(run_a)) > 100
    assert [r for r in records(run_a, MlPrediction) if r.ts_event > cut] != \
        [r for r in records(run_b, MlPrediction) if r.ts_event > cut]


def test_invalid_vectors_are_neither_learnt_from_nor_traded_on() -> None:
    prices = ar_prices(300, 0.3, seed=4)
    skip = {KEYS[0]: {100}}  # a missing bar: vectors spanning it are flagged "gap"
    marks = {KEYS[1]: {150: (150 * H,)}}  # a quarantined record before bar 150
    ml = MlCore(settings(store_every=1), rules())
    out = run(cross(ml), batches(bars_of(prices, skip), marks))
    vectors = {(v.instrument, v.ts_event): v for v in records(out, FeatureVector)}
    assert len(vectors) == len(KEYS) * 300 - 1
    gap = [v for v in vectors.values() if "gap" in v.flags]
    quarantine = [v for v in vectors.values() if "quarantine" in v.flags]
    assert gap and {v.instrument for v in gap} == {KEYS[0]}
    assert quarantine and {v.instrument for v in quarantine} == {KEYS[1]}
    preds = records(out, MlPrediction)
    used = {(p.instrument, p.feature_ts) for p in preds}
    invalid = {(v.instrument, v.ts_event) for v in vectors.values() if not v.valid}
    assert used and not used & invalid
    flagged_learning = [v for v in gap + quarantine if (v.ts_event // H - 1) % 4 == 0]
    assert flagged_learning, "the test must put an invalid vector on a learning bar"


def test_pending_memory_is_bounded_by_the_horizon_over_the_learning_step() -> None:
    ml = MlCore(settings(learn_every=1), rules())
    core = cross(ml)
    for b in batches(bars_of(ar_prices(200, 0.3))):
        core.update(b)
        for model in ml._models.values():
            for k in KEYS:
                assert len(model.pending(k)) <= 4
        assert all(len(q) <= 4 + 1 for q in ml._skill.values())


# --- state ---------------------------------------------------------------------------------------------------


def test_restore_midway_gives_the_same_records_and_the_snapshot_is_small() -> None:
    items = batches(bars_of(ar_prices(700, 0.6, seed=6)))
    whole = run(cross(MlCore(settings(), rules())), items)
    first = cross(MlCore(settings(), rules()))
    cut = len(items) // 2
    head = [x for b in items[:cut] for x in first.update(b)]
    snap = pickle.loads(pickle.dumps(first.snapshot()))
    size = len(pickle.dumps(snap.ml))
    assert size < 300_000, f"the ML snapshot is {size} bytes"
    second = CrossSectionCore.restore(KEYS, CrossSectionalMomentum(), SIZER, 4, 2, snap,
                                      ml=lambda s: MlCore.restore(settings(), rules(), s) if s else None)
    tail = [x for b in items[cut:] for x in second.update(b)] + second.flush()
    assert head + tail == whole  # the models' pickled state aside (`MlModelState.state` is not compared) ...
    x = {"ret_1": 0.01, "ret_4": 0.02, "vol": 0.01, "zscore": 1.0, "volume_surprise": 0.0}
    for a, b in zip(records(whole, MlModelState), records(tail, MlModelState), strict=True):
        pa, pb = (pickle.loads(base64.b64decode(s.state))[""] for s in (a, b))
        assert pa.predict_one(x) == pb.predict_one(x)  # ... which holds the same model
    assert records(whole, MlWeight), "the restored stretch should include blend changes"


def test_flush_writes_every_models_state_and_a_warm_start_predicts_like_the_exported_model() -> None:
    items = batches(bars_of(ar_prices(400, 0.6, seed=7)))
    ml = MlCore(settings(), rules())
    out = run(cross(ml), items)
    states = records(out, MlModelState)
    assert [s.model for s in states] == ["shadow_lin", "blend_logit"]
    assert all(s.updates and s.updates[0][1] > 0 and "ret_1" in s.features for s in states)
    warm = {s.model: {k: (p, dict(s.updates)[k]) for k, p in pickle.loads(base64.b64decode(s.state)).items()}
            for s in states}
    fresh, started = MlCore(settings(), rules()), MlCore(settings(), rules(), warm=warm)
    x = {"ret_1": 0.01, "ret_4": 0.02, "vol": 0.01, "zscore": 1.0, "volume_surprise": 0.0}
    value, version = started._models["blend_logit"].predict(KEYS[0], x)
    assert version == dict(states[1].updates)[""] and value == ml._models["blend_logit"].predict(KEYS[0], x)[0]
    assert fresh._models["blend_logit"].predict(KEYS[0], x) == (0.5, 0)
