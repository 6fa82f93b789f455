"""Risk measures: historical VaR and ES equal skfolio's on the real daily and hourly universes, Cornish-Fisher
matches its closed form computed here with scipy (and is Gaussian for S = K = 0), the liquidity-adjusted VaR
matches a hand computation, and the rolling window equals the batch measures after every update and resumes
exactly from a snapshot."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import integrate, stats
from skfolio.measures import cvar, value_at_risk

from headrace.errors import SnapshotVersionError
from helpers import HOURLY, SHARED_DATA, hourly_log_returns, universe_log_returns
from operators.risk.measures import (
    Impact,
    LVaR,
    Moments,
    RollingReturns,
    RollingSnapshot,
    cf_es_from,
    cf_quantile,
    cf_var_from,
    cornish_fisher_es,
    cornish_fisher_var,
    historical_es,
    historical_var,
    liquidity_adjusted_var,
    moments,
)

DAILY = SHARED_DATA / "universe" / "huobi-pob" / "cryptos_2017to2021_daily.parquet"
ALPHAS = (0.95, 0.975, 0.99)


def daily_log_returns() -> tuple[tuple[str, ...], np.ndarray]:
    return universe_log_returns(DAILY)


def real_series() -> list[tuple[str, np.ndarray]]:
    """An equal-weighted portfolio's simple returns and three single assets, from each universe that is present."""
    out: list[tuple[str, np.ndarray]] = []
    for label, load, path in (("daily", daily_log_returns, DAILY), ("hourly", hourly_log_returns, HOURLY)):
        if not path.exists():
            continue
        names, logret = load()
        simple = np.expm1(logret)
        rows = ~np.isnan(simple).all(axis=1)
        out.append((f"{label}:equal-weight", np.nanmean(simple[rows], axis=1)))
        for j in range(3):
            col = simple[:, j]
            out.append((f"{label}:{names[j]}", col[~np.isnan(col)]))
    if not out:
        pytest.skip(f"needs the shared data: {DAILY} and {HOURLY} are missing")
    return out


@pytest.mark.parametrize("alpha", ALPHAS)
def test_historical_var_and_es_equal_skfolio_on_real_returns(alpha: float) -> None:
    for label, r in real_series():
        assert r.size > 1000, label
        var, es = historical_var(r, alpha), historical_es(r, alpha)
        assert var == pytest.approx(float(value_at_risk(r, beta=alpha)), abs=1e-9), label
        assert es == pytest.approx(float(cvar(r, beta=alpha)), abs=1e-9), label
        assert es >= var > 0, label
        # and on a short window of the same series, where k = (1 - alpha) n is small
        w = r[-250:]
        assert historical_var(w, alpha) == pytest.approx(float(value_at_risk(w, beta=alpha)), abs=1e-9), label
        assert historical_es(w, alpha) == pytest.approx(float(cvar(w, beta=alpha)), abs=1e-9), label


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-0.5, 0.5), min_size=1, max_size=60),
       st.sampled_from([0.0, 0.5, 0.9, 0.95, 0.975, 0.99, 1.0]))
def test_historical_measures_equal_skfolio_on_any_sample(xs: list[float], alpha: float) -> None:
    r = np.array(xs)
    assert historical_var(r, alpha) == pytest.approx(float(value_at_risk(r, beta=alpha)), abs=1e-12)
    assert historical_es(r, alpha) == pytest.approx(float(cvar(r, beta=alpha)), abs=1e-12)


def test_historical_quantile_convention_on_an_integer_tail() -> None:
    r = -np.arange(1, 101) / 1000.0  # losses 0.001 .. 0.100; at 0.95 the tail holds exactly 5 returns
    assert historical_var(r, 0.95) == pytest.approx(0.095)  # the sixth largest loss
    assert historical_es(r, 0.95) == pytest.approx((0.100 + 0.099 + 0.098 + 0.097 + 0.096) / 5)
    r = -np.arange(1, 41) / 1000.0  # k = 0.025 * 40 = 1 at 0.975; 0.05 * 40 = 2 at 0.95
    assert historical_var(r, 0.975) == pytest.approx(0.039)
    assert historical_es(r, 0.975) == pytest.approx(0.040)
    r = -np.arange(1, 31) / 1000.0  # k = 0.75: VaR is the worst return, ES weights it fully
    assert historical_var(r, 0.975) == pytest.approx(0.030)
    assert historical_es(r, 0.975) == pytest.approx(0.030)


def test_historical_measures_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        historical_var([], 0.95)
    with pytest.raises(ValueError, match="finite"):
        historical_es([0.1, float("nan")], 0.95)
    with pytest.raises(ValueError, match="alpha"):
        historical_var([0.1], 1.5)
    with pytest.raises(ValueError, match="1-D"):
        historical_var([[0.1]], 0.9)


def cf_var_closed_form(r: np.ndarray, alpha: float) -> float:
    """The modified VaR with scipy's population moments and normal quantile."""
    mu, sigma = float(np.mean(r)), float(np.std(r))
    s, k = float(stats.skew(r)), float(stats.kurtosis(r))  # biased (population) skewness and excess kurtosis
    z = float(stats.norm.ppf(1 - alpha))
    zcf = z + (z**2 - 1) * s / 6 + (z**3 - 3 * z) * k / 24 - (2 * z**3 - 5 * z) * s**2 / 36
    return -(mu + sigma * zcf)


def cf_es_by_quadrature(r: np.ndarray, alpha: float) -> float:
    """The tail average of the CF quantile over p in (0, 1 - alpha), integrated numerically in z."""
    mu, sigma = float(np.mean(r)), float(np.std(r))
    s, k = float(stats.skew(r)), float(stats.kurtosis(r))
    z = float(stats.norm.ppf(1 - alpha))

    def integrand(x: float) -> float:
        zcf = x + (x**2 - 1) * s / 6 + (x**3 - 3 * x) * k / 24 - (2 * x**3 - 5 * x) * s**2 / 36
        return zcf * float(stats.norm.pdf(x))

    tail, _ = integrate.quad(integrand, -np.inf, z, epsabs=1e-13, epsrel=1e-12)
    return -(mu + sigma * tail / (1 - alpha))


@pytest.mark.parametrize("alpha", ALPHAS)
def test_cornish_fisher_matches_its_closed_form_on_real_returns(alpha: float) -> None:
    for label, r in real_series():
        m = moments(r)
        assert m.skew == pytest.approx(float(stats.skew(r)), rel=1e-9), label
        assert m.kurt == pytest.approx(float(stats.kurtosis(r)), rel=1e-9), label
        var, es = cornish_fisher_var(r, alpha), cornish_fisher_es(r, alpha)
        assert var == pytest.approx(cf_var_closed_form(r, alpha), rel=1e-9, abs=1e-12), label
        assert es == pytest.approx(cf_es_by_quadrature(r, alpha), rel=1e-7), label
        w = r[-500:]  # a window with moderate moments, where the expansion is monotone over the tail
        assert cornish_fisher_var(w, alpha) == pytest.approx(cf_var_closed_form(w, alpha), rel=1e-9), label
        assert cornish_fisher_es(w, alpha) >= cornish_fisher_var(w, alpha) > 0, label


@settings(max_examples=100, deadline=None)
@given(st.floats(-0.01, 0.01), st.floats(1e-4, 0.2), st.sampled_from(ALPHAS))
def test_cornish_fisher_is_gaussian_without_skew_or_kurtosis(mu: float, sigma: float, alpha: float) -> None:
    m = Moments(mu, sigma, 0.0, 0.0)
    z = float(stats.norm.ppf(1 - alpha))
    assert cf_var_from(m, alpha) == pytest.approx(-mu - sigma * z, abs=1e-12)
    assert cf_es_from(m, alpha) == pytest.approx(-mu + sigma * float(stats.norm.pdf(z)) / (1 - alpha), abs=1e-12)
    assert cf_es_from(m, alpha) >= cf_var_from(m, alpha)


def _tail_grid(alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre weights (summing to 1) and normal quantiles on p in (0, 1 - alpha): a fixed fine grid."""
    nodes, weights = np.polynomial.legendre.leggauss(400)
    return 0.5 * weights, stats.norm.ppf(0.5 * (1 - alpha) * (nodes + 1))


TAIL_GRID = {alpha: _tail_grid(alpha) for alpha in ALPHAS}


@settings(max_examples=100, deadline=None)
@given(st.floats(-0.01, 0.01), st.floats(1e-3, 0.1), st.floats(-1.0, 1.0), st.floats(-0.5, 4.0),
       st.sampled_from(ALPHAS))
def test_cornish_fisher_es_is_the_tail_average_of_the_cf_quantile(mu: float, sigma: float, s: float, k: float,
                                                                   alpha: float) -> None:
    weights, zs = TAIL_GRID[alpha]
    avg = float(np.sum(weights * cf_quantile(zs, s, k)))  # type: ignore[arg-type]  # numpy arithmetic
    assert cf_es_from(Moments(mu, sigma, s, k), alpha) == pytest.approx(-(mu + sigma * avg), rel=1e-4)


def test_lvar_matches_a_hand_computation() -> None:
    # Two positions as fractions of equity: 0.4 long, 0.25 short; relative spreads 20 bp +- 5 bp and 60 bp +- 30 bp.
    # exogenous = 0.4 * (0.0020 + 3 * 0.0005) / 2 + 0.25 * (0.0060 + 3 * 0.0030) / 2 = 0.0007 + 0.001875 = 0.002575
    # endogenous, coefficient 0.5, bar vol 1 % and 4 %, bar volume 100 and 6.25 (equity units):
    #   0.5 * 0.01 * sqrt(0.4 / 100) * 0.4 + 0.5 * 0.04 * sqrt(0.25 / 6.25) * 0.25 = 0.000126491106 + 0.001
    lv = liquidity_adjusted_var(0.03, [0.4, -0.25], [0.0020, 0.0060], [0.0005, 0.0030], k=3.0,
                                impact=Impact(0.5, [0.01, 0.04], [100.0, 6.25]))
    assert isinstance(lv, LVaR)
    assert lv.var == 0.03
    assert lv.exogenous == pytest.approx(0.002575, abs=1e-15)
    assert lv.endogenous == pytest.approx(0.5 * 0.01 * math.sqrt(0.004) * 0.4 + 0.001, abs=1e-15)
    assert lv.endogenous == pytest.approx(0.001126491106, abs=1e-12)
    assert lv.total == pytest.approx(0.03 + 0.002575 + 0.001126491106, abs=1e-12)
    no_impact = liquidity_adjusted_var(0.03, [0.4, -0.25], [0.0020, 0.0060], [0.0005, 0.0030])
    assert no_impact.endogenous == 0.0 and no_impact.total == pytest.approx(0.032575, abs=1e-15)


def test_lvar_refuses_mismatched_or_bad_inputs() -> None:
    with pytest.raises(ValueError, match="must match"):
        liquidity_adjusted_var(0.01, [1.0, 2.0], [0.001], [0.001])
    with pytest.raises(ValueError, match="non-negative"):
        liquidity_adjusted_var(0.01, [1.0], [-0.001], [0.001])
    with pytest.raises(ValueError, match="volume must be positive"):
        liquidity_adjusted_var(0.01, [1.0, 0.0], [0.001, 0.001], [0.0, 0.0],
                               impact=Impact(1.0, [0.01, 0.01], [0.0, 0.0]))
    flat = liquidity_adjusted_var(0.01, [1.0, 0.0], [0.001, 0.001], [0.0, 0.0],
                                  impact=Impact(1.0, [0.01, 0.01], [4.0, 0.0]))
    assert flat.endogenous == pytest.approx(0.01 * 0.5 * 1.0)  # a flat position needs no volume


returns_st = st.lists(st.floats(-0.2, 0.2, allow_subnormal=False), min_size=1, max_size=80)


@settings(max_examples=60, deadline=None)
@given(returns_st, st.integers(2, 30), st.sampled_from(ALPHAS))
def test_rolling_equals_batch_after_every_update(xs: list[float], window: int, alpha: float) -> None:
    roll = RollingReturns(window)
    for i, x in enumerate(xs):
        roll.update(x)
        w = np.array(xs[max(0, i + 1 - window): i + 1])
        assert roll.returns() == tuple(w)
        assert roll.var(alpha) == historical_var(w, alpha)
        assert roll.es(alpha) == historical_es(w, alpha)
        if len(w) >= 2 and np.std(w) > 1e-3:  # the raw power sums lose the moments of a near-constant window
            assert roll.cf_var(alpha) == pytest.approx(cornish_fisher_var(w, alpha), rel=1e-7, abs=1e-9)
            assert roll.cf_es(alpha) == pytest.approx(cornish_fisher_es(w, alpha), rel=1e-7, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(returns_st, st.integers(2, 30), st.data())
def test_rolling_restored_midway_equals_uninterrupted(xs: list[float], window: int, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(xs)))
    whole = RollingReturns(window)
    for x in xs:
        whole.update(x)
    first = RollingReturns(window)
    for x in xs[:cut]:
        first.update(x)
    resumed = RollingReturns.restore(first.snapshot())
    for x in xs[cut:]:
        resumed.update(x)
    assert resumed.snapshot() == whole.snapshot()
    assume(len(xs) >= 2)
    for alpha in ALPHAS:
        assert (resumed.var(alpha), resumed.es(alpha)) == (whole.var(alpha), whole.es(alpha))
        assert (resumed.cf_var(alpha), resumed.cf_es(alpha)) == (whole.cf_var(alpha), whole.cf_es(alpha))


def test_rolling_on_real_hourly_returns_tracks_the_batch_measures() -> None:
    _names, logret = hourly_log_returns()
    r = np.expm1(logret[:, 0])
    r = r[~np.isnan(r)][:2000]
    roll = RollingReturns(720)
    for i, x in enumerate(r):
        roll.update(float(x))
        if i % 97 == 0 or i == len(r) - 1:
            w = r[max(0, i + 1 - 720): i + 1]
            if len(w) < 40:
                continue
            assert roll.es() == pytest.approx(float(cvar(w, beta=0.975)), abs=1e-9)
            assert roll.var() == pytest.approx(float(value_at_risk(w, beta=0.975)), abs=1e-9)
            assert roll.cf_var() == pytest.approx(cornish_fisher_var(w), rel=1e-9)
            assert roll.cf_es() == pytest.approx(cornish_fisher_es(w), rel=1e-9)


def test_rolling_refuses_bad_input_and_old_snapshots() -> None:
    with pytest.raises(ValueError, match="window"):
        RollingReturns(1)
    roll = RollingReturns(5)
    with pytest.raises(ValueError, match="no returns"):
        roll.var()
    with pytest.raises(ValueError, match="finite"):
        roll.update(float("inf"))
    with pytest.raises(SnapshotVersionError):
        RollingReturns.restore(RollingSnapshot(5, (), (0.0, 0.0, 0.0, 0.0), 0, version=0))
