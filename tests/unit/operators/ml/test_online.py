"""Online models with delayed labels: skill on a predictable series, none on a random walk, no look-ahead,
label bookkeeping, bounded pending memory, restore, and prequential metrics against batch computations."""

from __future__ import annotations

import math
import pickle
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr
from sklearn.metrics import accuracy_score, log_loss, mean_absolute_error

from headrace.errors import ConfigError, InvariantError, SnapshotVersionError
from helpers import hourly_log_returns
from operators.ml.online import DelayedLabelModel, Prediction, PrequentialMetrics, rank_ic

KEYS = ("A", "B", "C")


def series(n: int, *, beta: float | list[float] = 0.5, seed: int = 0, keys: tuple[str, ...] = KEYS,
           noise: float = 0.3) -> list[tuple[str, int, dict[str, float], float]]:
    """Bars (key, ts, x, price), keys interleaved: r_{t+1} = 0.01 (beta_t s_t + noise e_t), with s_t in x
    (plus an irrelevant feature z). beta may vary by bar (a list)."""
    rng = np.random.default_rng(seed)
    betas = np.full(n, beta) if np.isscalar(beta) else np.asarray(beta, dtype=float)
    out = []
    logp = {k: math.log(100.0) for k in keys}
    for t in range(n):
        for k in keys:
            s, z = rng.standard_normal(2)
            out.append((k, t * 3600, {"s": float(s), "z": float(z)}, math.exp(logp[k])))
            logp[k] += 0.01 * (betas[t] * s + noise * rng.standard_normal())
    return out


def run(model: DelayedLabelModel, bars: list[tuple[str, int, dict[str, float] | None, float]]
        ) -> tuple[list[Prediction], list[Prediction]]:
    preds: list[Prediction] = []
    resolved: list[Prediction] = []
    for key, ts, x, price in bars:
        step = model.observe(key, ts, x, price)
        if step.prediction is not None:
            preds.append(step.prediction)
        resolved.extend(step.resolved)
    return preds, resolved


def ic_last_half(resolved: list[Prediction]) -> float:
    half = resolved[len(resolved) // 2:]
    return rank_ic([p.value for p in half], [p.label for p in half])


# --- skill and no skill ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["regressor", "classifier"])
@pytest.mark.parametrize("pooled", [True, False])
def test_predictable_component_gives_ic_above_half(kind: str, pooled: bool) -> None:
    model = DelayedLabelModel("m", kind, horizon=1, pooled=pooled)  # type: ignore[arg-type]
    _, resolved = run(model, series(800))
    assert len(resolved) == 3 * 799
    assert ic_last_half(resolved) > 0.5


def test_predictable_component_forest_learns_it_too() -> None:
    model = DelayedLabelModel("arf", "classifier", horizon=1, forest=True)
    _, resolved = run(model, series(250, keys=("A", "B")))
    assert ic_last_half(resolved) > 0.3


@pytest.mark.parametrize("kind", ["regressor", "classifier"])
def test_random_walk_gives_ic_near_zero(kind: str) -> None:
    model = DelayedLabelModel("m", kind, horizon=1)  # type: ignore[arg-type]
    _, resolved = run(model, series(1500, beta=0.0, seed=3, noise=1.0))
    ic = rank_ic([p.value for p in resolved], [p.label for p in resolved])
    assert len(resolved) > 4000 and abs(ic) < 0.1


# --- no look-ahead and label bookkeeping -----------------------------------------------------------


@settings(max_examples=12)
@given(horizon=st.integers(1, 6), learn_every=st.integers(1, 6), pooled=st.booleans(),
       cut=st.integers(0, 59), seed=st.integers(0, 2**16))
def test_no_prediction_depends_on_a_later_price(horizon: int, learn_every: int, pooled: bool, cut: int,
                                                 seed: int) -> None:
    bars = series(60, seed=seed)
    rng = np.random.default_rng(seed + 1)
    t_cut = cut * 3600
    moved = [(k, ts, x, p * math.exp(rng.normal(0, 0.05)) if ts > t_cut else p) for k, ts, x, p in bars]
    assert sum(a[3] != b[3] for a, b in zip(bars, moved)) > 0 or cut == 59
    a = DelayedLabelModel("m", "regressor", horizon=horizon, learn_every=learn_every, pooled=pooled)
    b = DelayedLabelModel("m", "regressor", horizon=horizon, learn_every=learn_every, pooled=pooled)
    pa, _ = run(a, bars)
    pb, _ = run(b, moved)
    upto = [p for p in pa if p.ts_event <= t_cut]
    assert upto == [p for p in pb if p.ts_event <= t_cut]  # bit for bit (floats compared exactly)
    assert len(upto) == 3 * (cut + 1)


@settings(max_examples=15)
@given(horizon=st.integers(1, 8), learn_every=st.integers(1, 8), pooled=st.booleans())
def test_labels_are_learnt_after_their_horizon_only(horizon: int, learn_every: int, pooled: bool) -> None:
    bars = series(40)
    model = DelayedLabelModel("m", "regressor", horizon=horizon, learn_every=learn_every, pooled=pooled)
    price = {(k, ts): p for k, ts, _, p in bars}
    learnt = 0
    learnt_by_key = dict.fromkeys(KEYS, 0)
    for k, ts, x, p in bars:
        step = model.observe(k, ts, x, p)
        bar = ts // 3600
        assert step.prediction is not None
        # the prediction is made before this bar's labels are learnt
        assert step.prediction.version == (learnt if pooled else learnt_by_key[k])
        for r in step.resolved:
            assert r.key == k and r.ts_event == (bar - horizon) * 3600  # exactly horizon bars later
            assert (r.ts_event // 3600) % learn_every == 0
            assert r.label == math.log(p / price[(k, r.ts_event)])
        learnt += len(step.resolved)
        learnt_by_key[k] += len(step.resolved)
        assert model.updates(k) == (learnt if pooled else learnt_by_key[k])
        assert len(model.pending(k)) <= model.max_pending == -(-horizon // learn_every)
    # every learning bar old enough was learnt, no other
    assert learnt_by_key["A"] == len([t for t in range(40 - horizon) if t % learn_every == 0])


def test_default_learns_non_overlapping_labels() -> None:
    model = DelayedLabelModel("m", "classifier", horizon=4)
    _, resolved = run(model, series(21, keys=("A",)))
    assert [r.ts_event // 3600 for r in resolved] == [0, 4, 8, 12, 16]
    assert model.max_pending == 1


def test_invalid_vectors_are_neither_predicted_nor_learnt() -> None:
    bars = series(30, keys=("A",))
    holes = {3, 4, 8, 12}
    mixed = [(k, ts, None if ts // 3600 in holes else ({"s": math.nan, "z": 0.0} if ts // 3600 == 16 else x), p)
             for k, ts, x, p in bars]
    model = DelayedLabelModel("m", "regressor", horizon=2, learn_every=1)
    preds, resolved = run(model, mixed)
    skipped = holes | {16}
    assert [p.ts_event // 3600 for p in preds] == [t for t in range(30) if t not in skipped]
    assert [r.ts_event // 3600 for r in resolved] == [t for t in range(28) if t not in skipped]


# --- snapshot and restore --------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "pooled", "forest", "n"), [
    ("classifier", True, False, 200), ("regressor", False, False, 200), ("classifier", False, True, 60),
    ("regressor", True, True, 60)])
def test_restore_midway_equals_a_straight_run(kind: str, pooled: bool, forest: bool, n: int) -> None:
    bars = series(n, seed=7)
    cfg = {"horizon": 3, "learn_every": 2, "pooled": pooled, "forest": forest}
    straight, straight_res = run(DelayedLabelModel("m", kind, **cfg), bars)  # type: ignore[arg-type]
    first = DelayedLabelModel("m", kind, **cfg)  # type: ignore[arg-type]
    cut = len(bars) // 2 + 1
    p1, r1 = run(first, bars[:cut])
    snap = pickle.loads(pickle.dumps(first.snapshot()))  # as the flow's recovery store would keep it
    resumed = DelayedLabelModel.restore(snap, "m", kind, **cfg)  # type: ignore[arg-type]
    p2, r2 = run(resumed, bars[cut:])
    assert p1 + p2 == straight and r1 + r2 == straight_res


def test_snapshot_of_a_linear_model_is_small() -> None:
    model = DelayedLabelModel("m", "classifier", horizon=24, pooled=False)
    run(model, series(100))
    assert len(pickle.dumps(model.snapshot())) < 20_000


def test_restore_refuses_another_version() -> None:
    snap = DelayedLabelModel("m", "regressor", horizon=1).snapshot()
    with pytest.raises(SnapshotVersionError):
        DelayedLabelModel.restore(replace(snap, version=99), "m", "regressor", horizon=1)


def test_real_hourly_data_restores_and_stays_bounded() -> None:
    names, rets = hourly_log_returns()
    rets = rets[:400, :4]
    model = DelayedLabelModel("m", "classifier", horizon=6, learn_every=3, pooled=True)
    bars = []
    logp = np.nancumsum(rets, axis=0)
    for t in range(24, len(rets)):
        for j in range(rets.shape[1]):
            if np.isnan(rets[t - 24:t + 1, j]).any():
                continue
            x = {"r1": float(rets[t, j]), "r24": float(rets[t - 23:t + 1, j].sum())}
            bars.append((names[j], t * 3600, x, float(math.exp(logp[t, j]))))
    if len(bars) < 200:
        pytest.skip("too few listed assets in the first 400 hours")
    straight, _ = run(model, bars)
    assert all(len(model.pending(k)) <= 2 for k in names[:4])
    first = DelayedLabelModel("m", "classifier", horizon=6, learn_every=3)
    p1, _ = run(first, bars[:len(bars) // 3])
    resumed = DelayedLabelModel.restore(first.snapshot(), "m", "classifier", horizon=6, learn_every=3)
    p2, _ = run(resumed, bars[len(bars) // 3:])
    assert p1 + p2 == straight
    assert all(0.0 < p.value < 1.0 for p in straight)


# --- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"kind": "ranker", "horizon": 1}, "ml.kind"), ({"kind": "regressor", "horizon": 0}, "ml.horizon"),
    ({"kind": "regressor", "horizon": 2, "learn_every": 0}, "ml.learn_every")])
def test_bad_settings_name_their_key(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        DelayedLabelModel("m", **kwargs)  # type: ignore[arg-type]


def test_a_bad_price_is_refused() -> None:
    with pytest.raises(InvariantError, match="price of A"):
        DelayedLabelModel("m", "regressor", horizon=1).observe("A", 0, {"s": 1.0}, 0.0)


# --- metrics ---------------------------------------------------------------------------------------


def pairs(n: int, seed: int, kind: str) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    y = rng.normal(0, 0.01, n)
    v = rng.uniform(0.02, 0.98, n) if kind == "classifier" else y * 0.3 + rng.normal(0, 0.01, n)
    return list(zip(v.tolist(), y.tolist()))


def test_classifier_metrics_match_batch_computations() -> None:
    data = pairs(700, 1, "classifier")
    pm = PrequentialMetrics("classifier", window=250)
    for v, y in data:
        pm.update(v, y)
    v, y = np.array(data).T
    up = y > 0
    c, r = pm.cumulative(), pm.rolling()
    assert c.samples == r.samples == 700 and r.window_samples == 250
    assert c.log_loss == pytest.approx(log_loss(up, v, labels=[False, True]), rel=1e-12)
    assert c.accuracy == accuracy_score(up, v > 0.5)
    assert r.log_loss == pytest.approx(log_loss(up[-250:], v[-250:], labels=[False, True]), rel=1e-12)
    assert r.accuracy == accuracy_score(up[-250:], v[-250:] > 0.5)
    assert c.hit_rate == np.mean((v > 0.5) == up)
    assert r.ic == pytest.approx(spearmanr(v[-250:], y[-250:]).statistic, abs=1e-12)
    assert math.isnan(c.mae)


def test_regressor_metrics_match_batch_computations() -> None:
    data = pairs(600, 2, "regressor")
    pm = PrequentialMetrics("regressor", window=100)
    for v, y in data:
        pm.update(v, y)
    v, y = np.array(data).T
    c, r = pm.cumulative(), pm.rolling()
    assert c.mae == pytest.approx(mean_absolute_error(y, v), rel=1e-12)
    assert r.mae == pytest.approx(mean_absolute_error(y[-100:], v[-100:]), rel=1e-12)
    assert r.hit_rate == np.mean((v[-100:] > 0) == (y[-100:] > 0))
    assert pm.ic == pytest.approx(spearmanr(v[-100:], y[-100:]).statistic, abs=1e-12)
    assert pm.ic > 0.2 and math.isnan(c.log_loss)


@given(st.lists(st.tuples(st.integers(-3, 3), st.integers(-3, 3)), min_size=2, max_size=40))
def test_rank_ic_equals_spearman_with_ties(xs: list[tuple[int, int]]) -> None:
    a, b = np.array(xs, dtype=float).T
    ours = rank_ic(a, b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        assert math.isnan(ours)
    else:
        assert ours == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)


def test_metrics_restore_midway_equals_a_straight_run() -> None:
    data = pairs(400, 4, "regressor")
    straight = PrequentialMetrics("regressor", window=50, delta=0.05)
    flags = [straight.update(v, y) for v, y in data]
    first = PrequentialMetrics("regressor", window=50, delta=0.05)
    f1 = [first.update(v, y) for v, y in data[:170]]
    second = PrequentialMetrics.restore(pickle.loads(pickle.dumps(first.snapshot())), "regressor", window=50,
                                        delta=0.05)
    f2 = [second.update(v, y) for v, y in data[170:]]
    assert f1 + f2 == flags
    assert second.cumulative() == straight.cumulative() and second.rolling() == straight.rolling()


def drift_bars(kind: str, betas: list[float]) -> list[int]:
    model = DelayedLabelModel("m", kind, horizon=1)  # type: ignore[arg-type]
    pm = PrequentialMetrics(kind, window=200)  # type: ignore[arg-type]
    drifts = []
    for key, ts, x, price in series(len(betas), beta=betas, keys=("A",), noise=0.2):
        for r in model.observe(key, ts, x, price).resolved:
            assert r.label is not None
            if pm.update(r.value, r.label):
                drifts.append(r.ts_event // 3600)
    assert pm.drift_events == len(drifts)
    return drifts


@pytest.mark.parametrize("kind", ["regressor", "classifier"])
def test_adwin_flags_a_drift_when_the_relationship_flips(kind: str) -> None:
    n, flip = 1200, 600
    flipped = drift_bars(kind, [1.0] * flip + [-1.0] * (n - flip))
    steady = drift_bars(kind, [1.0] * n)
    assert [t for t in flipped if flip <= t <= flip + 300], f"no drift after the flip at {flip}: {flipped}"
    assert not [t for t in steady if flip <= t <= flip + 300], f"a drift without a flip: {steady}"
