"""Streaming covariance cores against batch computations (numpy, the published formulas, scikit-learn)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.errors import ConfigError, InvariantError, SnapshotVersionError
from helpers import hourly_log_returns
from operators.covariance.streaming import (
    EwmaCovariance,
    EwmaCovarianceSnap,
    ReturnWindow,
    RollingCovariance,
    condition_number,
    constant_correlation,
    constant_correlation_intensity,
    ledoit_wolf,
    ledoit_wolf_intensity,
    nearest_psd,
    shrink,
)

# --- batch references ----------------------------------------------------------------------------


def ewma_batch(x: np.ndarray, y: np.ndarray, alpha: float) -> float:
    """Weighted covariance over the common bars x_0..x_k: weights (1-a)^k, then a (1-a)^(k-t), about weighted means."""
    k = len(x) - 1
    w = np.array([(1 - alpha) ** k] + [alpha * (1 - alpha) ** (k - t) for t in range(1, k + 1)])
    assert math.isclose(w.sum(), 1.0, rel_tol=1e-12)
    mx, my = float(w @ x), float(w @ y)
    return float(w @ ((x - mx) * (y - my)))


def pairwise_batch(rows: list[dict[str, float]], assets: tuple[str, ...], fn: object) -> np.ndarray:
    n = len(assets)
    out = np.full((n, n), np.nan)
    for i, a in enumerate(assets):
        for j, b in enumerate(assets):
            common = [(r[a], r[b]) for r in rows if a in r and b in r]
            if common:
                xy = np.array(common)
                out[i, j] = fn(xy[:, 0], xy[:, 1])  # type: ignore[operator]
    return out


def sample_cov(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.cov(x, y)[0, 1]) if len(x) >= 2 else math.nan


def lw_reference(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf 2004 (Well-conditioned estimator), Frobenius-norm form, scaled by 1/p as scikit-learn does."""
    t, p = x.shape
    y = x - x.mean(axis=0)
    s = y.T @ y / t
    mu = np.trace(s) / p
    d2 = np.sum((s - mu * np.eye(p)) ** 2) / p
    b2bar = sum(np.sum((np.outer(y[k], y[k]) - s) ** 2) for k in range(t)) / (t * t) / p
    b2 = min(b2bar, d2)
    delta = b2 / d2
    return (1 - delta) * s + delta * mu * np.eye(p), delta


def cc_reference(x: np.ndarray) -> float:
    """Constant-correlation intensity, term by term from "Honey, I shrunk the sample covariance matrix"."""
    t, p = x.shape
    y = x - x.mean(axis=0)
    s = y.T @ y / t
    sd = np.sqrt(np.diag(s))
    r = s / np.outer(sd, sd)
    rbar = (r.sum() - p) / (p * (p - 1))
    f = rbar * np.outer(sd, sd)
    np.fill_diagonal(f, np.diag(s))
    pi = np.zeros((p, p))
    theta = np.zeros((p, p))
    for i in range(p):
        for j in range(p):
            pi[i, j] = np.mean((y[:, i] * y[:, j] - s[i, j]) ** 2)
            theta[i, j] = np.mean((y[:, i] ** 2 - s[i, i]) * (y[:, i] * y[:, j] - s[i, j]))
    rho = np.trace(pi)
    for i in range(p):
        for j in range(p):
            if i != j:
                rho += rbar / 2 * (np.sqrt(s[j, j] / s[i, i]) * theta[i, j] + np.sqrt(s[i, i] / s[j, j]) * theta[j, i])
    gamma = np.sum((f - s) ** 2)
    return float(min(1.0, max(0.0, (pi.sum() - rho) / gamma / t)))


# --- generated bars: assets joining, missing returns, removal --------------------------------------

ASSETS = ("A", "B", "C", "D")
ret = st.floats(-0.2, 0.2, allow_nan=False, allow_infinity=False, width=64)
bar_st = st.dictionaries(st.sampled_from(ASSETS), ret, max_size=len(ASSETS))
bars_st = st.lists(bar_st, min_size=1, max_size=40)


def assert_matches(got: np.ndarray, want: np.ndarray, scale: float = 1.0) -> None:
    assert got.shape == want.shape
    assert np.array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(np.nan_to_num(got), np.nan_to_num(want), rtol=1e-9, atol=1e-12 * scale)


@settings(max_examples=30, deadline=None)
@given(bars=bars_st, halflife=st.floats(0.5, 50.0))
def test_ewma_equals_weighted_batch_after_every_bar(bars: list[dict[str, float]], halflife: float) -> None:
    core = EwmaCovariance(halflife)
    for k, bar in enumerate(bars):
        core.update(bar)
        est = core.estimate()
        want = pairwise_batch(bars[: k + 1], est.assets, lambda x, y: ewma_batch(x, y, core.alpha))
        assert_matches(est.cov, want)
        assert est.assets == tuple(dict.fromkeys(a for b in bars[: k + 1] for a in b))


@settings(max_examples=30, deadline=None)
@given(bars=bars_st, window=st.integers(2, 7))
def test_rolling_equals_numpy_cov_of_window_after_every_bar(bars: list[dict[str, float]], window: int) -> None:
    core = RollingCovariance(window)
    for k, bar in enumerate(bars):
        core.update(bar)
        est = core.estimate()
        want = pairwise_batch(bars[max(0, k + 1 - window): k + 1], est.assets, sample_cov)
        assert_matches(est.cov, want)


@settings(max_examples=25, deadline=None)
@given(bars=bars_st, cut=st.integers(0, 40), window=st.integers(2, 7), halflife=st.floats(0.5, 20.0))
def test_restore_midway_equals_straight_run(bars: list[dict[str, float]], cut: int, window: int,
                                            halflife: float) -> None:
    cut = min(cut, len(bars))
    for make, restore in ((lambda: EwmaCovariance(halflife), lambda s: EwmaCovariance.restore(halflife, s)),
                          (lambda: RollingCovariance(window), lambda s: RollingCovariance.restore(window, s))):
        straight, first = make(), make()
        for bar in bars:
            straight.update(bar)
        for bar in bars[:cut]:
            first.update(bar)
        resumed = restore(first.snapshot())
        for bar in bars[cut:]:
            resumed.update(bar)
        a, b = straight.estimate(), resumed.estimate()
        assert a.assets == b.assets
        assert np.array_equal(a.cov, b.cov, equal_nan=True) and np.array_equal(a.counts, b.counts)


def test_removed_asset_leaves_and_rejoins_afresh() -> None:
    bars = [{"A": 0.01, "B": 0.02}, {"A": -0.01, "B": 0.03}, {"A": 0.02, "B": -0.01}]
    for core in (EwmaCovariance(5.0), RollingCovariance(10)):
        for bar in bars:
            core.update(bar)
        core.remove("A")
        assert core.assets == ("B",)
        core.update({"A": 0.05, "B": 0.0})
        est = core.estimate()
        assert est.assets == ("B", "A")
        assert est.counts.tolist() == [[4, 1], [1, 1]]
    rolling = RollingCovariance(10)
    for bar in bars:
        rolling.update(bar)
    rolling.remove("A")
    rolling.update({"A": 0.05, "B": 0.0})
    rolling.update({"A": 0.01, "B": 0.02})
    est = rolling.estimate()
    assert est.cov[1, 1] == pytest.approx(np.var([0.05, 0.01], ddof=1))
    assert est.cov[0, 0] == pytest.approx(np.var([0.02, 0.03, -0.01, 0.0, 0.02], ddof=1))


def test_bad_parameters_and_inputs_are_refused() -> None:
    with pytest.raises(ConfigError, match="halflife"):
        EwmaCovariance(0.0)
    with pytest.raises(ConfigError, match="window_bars"):
        RollingCovariance(1)
    with pytest.raises(InvariantError, match="inf"):
        EwmaCovariance(2.0).update({"A": math.inf})
    with pytest.raises(InvariantError, match="not in the covariance"):
        RollingCovariance(3).remove("A")
    with pytest.raises(SnapshotVersionError):
        snap = EwmaCovariance(2.0).snapshot()
        EwmaCovariance.restore(2.0, EwmaCovarianceSnap(2, snap.assets, snap.m, snap.c, snap.n))


def test_missing_return_is_skipped_not_zero() -> None:
    core = EwmaCovariance(1.0)
    core.update({"A": 0.0, "B": 0.0})
    core.update({"A": 0.2})
    core.update({"A": 0.2, "B": None, "C": math.nan})
    est = core.estimate()
    assert est.assets == ("A", "B")
    assert est.counts.tolist() == [[3, 1], [1, 1]]
    assert est.cov[1, 1] == 0.0 and est.cov[0, 1] == 0.0


# --- shrinkage ----------------------------------------------------------------------------------


def returns_matrix(seed: int, t: int, p: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(p, p)) / math.sqrt(p)
    return rng.normal(size=(t, p)) @ mix * 0.01


@pytest.mark.parametrize(("t", "p"), [(30, 5), (10, 12), (200, 3)])
def test_ledoit_wolf_matches_published_formula(t: int, p: int) -> None:
    x = returns_matrix(t * p, t, p)
    want, delta = lw_reference(x)
    got = ledoit_wolf(x)
    assert got.intensity == pytest.approx(delta, rel=1e-10)
    np.testing.assert_allclose(got.cov, want, rtol=1e-10, atol=1e-18)
    assert got.condition_number == pytest.approx(np.linalg.cond(want), rel=1e-6)


@pytest.mark.parametrize(("t", "p"), [(30, 5), (10, 12), (200, 3)])
def test_ledoit_wolf_matches_scikit_learn(t: int, p: int) -> None:
    sk = pytest.importorskip("sklearn.covariance")
    x = returns_matrix(t + p, t, p)
    ref = sk.LedoitWolf().fit(x)
    got = ledoit_wolf(x)
    assert got.intensity == pytest.approx(ref.shrinkage_, rel=1e-10)
    np.testing.assert_allclose(got.cov, ref.covariance_, rtol=1e-10, atol=1e-18)


@pytest.mark.parametrize(("t", "p"), [(30, 5), (10, 12), (200, 3)])
def test_constant_correlation_matches_published_formula(t: int, p: int) -> None:
    x = returns_matrix(7 * t + p, t, p)
    got = constant_correlation(x)
    assert got.intensity == pytest.approx(cc_reference(x), rel=1e-9, abs=1e-15)
    assert constant_correlation_intensity(x) == got.intensity
    y = x - x.mean(axis=0)
    s = y.T @ y / t
    sd = np.sqrt(np.diag(s))
    np.testing.assert_allclose(np.diag(got.cov), np.diag(s), rtol=1e-10)  # the target keeps the variances
    corr = got.cov / np.outer(sd, sd)
    off = ~np.eye(p, dtype=bool)
    np.testing.assert_allclose(corr[off], ((1 - got.intensity) * (s / np.outer(sd, sd)) + got.intensity *
                                           (s / np.outer(sd, sd))[off].mean())[off], rtol=1e-8, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), t=st.integers(2, 30), p=st.integers(1, 12), scale=st.sampled_from([1e-6, 1.0]))
def test_shrunk_estimates_are_positive_semidefinite(seed: int, t: int, p: int, scale: float) -> None:
    x = returns_matrix(seed, t, p) * scale
    for est in (ledoit_wolf(x), constant_correlation(x), shrink(np.cov(x, rowvar=False, ddof=1).reshape(p, p),
                                                               0.0, "constant_correlation")):
        assert 0.0 <= est.intensity <= 1.0
        size = max(float(np.abs(est.cov).max()), 1e-300)
        assert np.linalg.eigvalsh(est.cov).min() >= -1e-12 * size
        assert np.array_equal(est.cov, est.cov.T)


def test_nearest_psd_clips_negative_eigenvalues_of_a_pairwise_matrix() -> None:
    bad = np.array([[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]])
    assert np.linalg.eigvalsh(bad).min() < 0
    fixed = nearest_psd(bad)
    assert np.linalg.eigvalsh(fixed).min() >= -1e-12
    assert condition_number(bad) == math.inf
    assert condition_number(np.eye(3) * 2) == 1.0
    with pytest.raises(InvariantError, match="NaN"):
        nearest_psd(np.array([[1.0, np.nan], [np.nan, 1.0]]))


def test_ledoit_wolf_intensity_of_one_asset_is_zero() -> None:
    assert ledoit_wolf_intensity(np.array([[0.1], [0.2], [0.0]])) == 0.0


# --- the 82-asset hourly universe ----------------------------------------------------------------


@pytest.fixture(scope="module")
def hourly() -> tuple[tuple[str, ...], np.ndarray]:
    return hourly_log_returns()


def as_bars(names: tuple[str, ...], rets: np.ndarray) -> list[dict[str, float]]:
    return [{a: float(v) for a, v in zip(names, row, strict=True) if np.isfinite(v)} for row in rets]


def test_hourly_universe_rolling_equals_numpy_on_last_window(hourly: tuple[tuple[str, ...], np.ndarray]) -> None:
    names, rets = hourly
    assert len(names) == 82
    rets = rets[-1500:]  # the last 1500 hours: six window refreshes, assets joining on the way
    window = 240
    core = RollingCovariance(window)
    bars = as_bars(names, rets)
    for k, bar in enumerate(bars):
        core.update(bar)
        if k in (window // 2, len(bars) - 1):
            est = core.estimate()
            order = [names.index(a) for a in est.assets]
            block = rets[max(0, k + 1 - window): k + 1][:, order]
            full = np.isfinite(block).all(axis=0)
            want = np.cov(block[:, full], rowvar=False)
            got = est.cov[np.ix_(full, full)]
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-15)
    assert len(core.assets) == 82
    _, x = core.window_returns()
    lw = ledoit_wolf(x)
    sk = pytest.importorskip("sklearn.covariance")
    np.testing.assert_allclose(lw.cov, sk.LedoitWolf().fit(x).covariance_, rtol=1e-9, atol=1e-15)
    assert lw.condition_number < condition_number(np.cov(x, rowvar=False, ddof=0))


def test_hourly_universe_ewma_equals_batch_and_restores(hourly: tuple[tuple[str, ...], np.ndarray]) -> None:
    names, rets = hourly
    rets = rets[:1500]
    bars = as_bars(names, rets)
    straight, first = EwmaCovariance(48.0), EwmaCovariance(48.0)
    for bar in bars:
        straight.update(bar)
    for bar in bars[:700]:
        first.update(bar)
    resumed = EwmaCovariance.restore(48.0, first.snapshot())
    for bar in bars[700:]:
        resumed.update(bar)
    a, b = straight.estimate(), resumed.estimate()
    assert a.assets == b.assets and np.array_equal(a.cov, b.cov, equal_nan=True)
    picks = [a.assets.index(n) for n in ("BTC", "ETH", a.assets[-1])]
    for i in picks:
        for j in picks:
            xi, xj = rets[:, names.index(a.assets[i])], rets[:, names.index(a.assets[j])]
            both = np.isfinite(xi) & np.isfinite(xj)
            want = ewma_batch(xi[both], xj[both], straight.alpha)
            assert a.cov[i, j] == pytest.approx(want, rel=1e-9, abs=1e-16)
    psd = shrink(a.complete().cov, ledoit_wolf_intensity(rets[-500:][:, np.isfinite(rets[-500:]).all(axis=0)]))
    assert np.linalg.eigvalsh(psd.cov).min() >= -1e-12 * float(np.abs(psd.cov).max())
    assert math.isfinite(psd.condition_number)


def test_return_window_block_keeps_complete_rows_oldest_first() -> None:
    w = ReturnWindow(3)
    for bar in ({"a": 1.0}, {"a": 2.0, "b": 5.0}, {"b": 6.0}, {"a": 4.0, "b": 7.0}):
        w.add(bar)
    assert w.block(["a", "b"]).tolist() == [[2.0, 5.0], [4.0, 7.0]]
    assert w.block(["a", "zzz"]).shape == (0, 2)
    w.forget("b")
    assert w.block(["a", "b"]).shape == (0, 2) and w.block(["a"]).tolist() == [[2.0], [4.0]]
