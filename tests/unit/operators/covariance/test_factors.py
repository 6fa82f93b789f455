"""Factor model: incremental betas against a batch EWMA-weighted regression, restore, and the factor-form risk model."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.errors import ConfigError, InvariantError, SnapshotVersionError
from helpers import hourly_log_returns
from operators.covariance.factors import FactorModel

ASSETS = ("A", "B", "C", "D", "E")
TIERS = {"big": ["A", "B"], "small": ["C", "D", "E"]}
ret = st.floats(-0.2, 0.2, allow_nan=False, allow_infinity=False, width=64)
bar_st = st.dictionaries(st.sampled_from(ASSETS), st.one_of(ret, ret, ret, st.none()), max_size=len(ASSETS))
bars_st = st.lists(bar_st, min_size=1, max_size=30)


# --- batch reference -----------------------------------------------------------------------------


def ew_weights(k: int, alpha: float) -> np.ndarray:
    """adjust=False weights of k common bars: (1-a)^(k-1) for the first, a (1-a)^(k-1-t) for bar t >= 1."""
    return np.array([(1 - alpha) ** (k - 1)] + [alpha * (1 - alpha) ** (k - 1 - t) for t in range(1, k)])


def batch_beta(r: np.ndarray, f: np.ndarray, alpha: float) -> tuple[float, float]:
    """Weighted least-squares slope of r on f (with intercept), and the weighted variance of f."""
    w = ew_weights(len(r), alpha)
    x = np.column_stack([np.ones_like(f), f]) * np.sqrt(w)[:, None]
    var_f = float(w @ (f - w @ f) ** 2)
    if var_f <= 0:
        return 0.0, var_f
    coef = np.linalg.lstsq(x, r * np.sqrt(w), rcond=None)[0]
    return float(coef[1]), var_f


def factor_series(bars: list[dict[str, float | None]], members: tuple[str, ...] | None,
                  benchmark: str | None = None) -> list[float | None]:
    out: list[float | None] = []
    for bar in bars:
        got = {a: v for a, v in bar.items() if v is not None}
        if benchmark is not None:
            out.append(got.get(benchmark))
            continue
        vals = [v for a, v in got.items() if members is None or a in members]
        out.append(sum(vals) / len(vals) if vals else None)
    return out


def expected_betas(bars: list[dict[str, float | None]], assets: tuple[str, ...], alpha: float,
                   benchmark: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    series = [factor_series(bars, None, benchmark)] + [factor_series(bars, tuple(m)) for m in TIERS.values()]
    beta = np.zeros((len(assets), len(series)))
    var = np.zeros_like(beta)
    for i, a in enumerate(assets):
        for k, f in enumerate(series):
            pairs = [(bar[a], fv) for bar, fv in zip(bars, f, strict=True) if bar.get(a) is not None and fv is not None]
            if pairs:
                xy = np.array(pairs, dtype=float)
                beta[i, k], var[i, k] = batch_beta(xy[:, 0], xy[:, 1], alpha)
    return beta, var


@settings(max_examples=40, deadline=None)
@given(bars=bars_st, halflife=st.floats(0.5, 50.0), bench=st.sampled_from([None, "A"]))
def test_betas_equal_batch_weighted_regression_after_every_bar(bars: list[dict[str, float | None]], halflife: float,
                                                                bench: str | None) -> None:
    fm = FactorModel(halflife, benchmark=bench, tiers=TIERS)
    for k, bar in enumerate(bars):
        m = fm.update(bar)
        want_m = factor_series([bar], None, bench)[0]
        assert (m is None and want_m is None) or m == pytest.approx(want_m, rel=1e-12, abs=1e-15)
        names, got = fm.exposures(fm.assets)
        assert names == ("market", "tier:big", "tier:small")
        assert fm.assets == tuple(dict.fromkeys(a for b in bars[: k + 1] for a, v in b.items() if v is not None))
        want, var = expected_betas(bars[: k + 1], fm.assets, fm.alpha, bench)
        sure = var > 1e-8  # below this the slope is ill-conditioned in both computations
        np.testing.assert_allclose(got[sure], want[sure], rtol=1e-6, atol=1e-8)
        assert np.isfinite(got).all()


@settings(max_examples=30, deadline=None)
@given(bars=bars_st, cut=st.integers(0, 30), halflife=st.floats(0.5, 20.0), bench=st.sampled_from([None, "B"]))
def test_restore_midway_equals_straight_run(bars: list[dict[str, float | None]], cut: int, halflife: float,
                                            bench: str | None) -> None:
    cut = min(cut, len(bars))
    straight = FactorModel(halflife, benchmark=bench, tiers=TIERS, n_statistical=1)
    first = FactorModel(halflife, benchmark=bench, tiers=TIERS, n_statistical=1)
    got_m = [straight.update(bar) for bar in bars]
    resumed_m = [first.update(bar) for bar in bars[:cut]]
    resumed = FactorModel.restore(halflife, first.snapshot(), benchmark=bench, tiers=TIERS, n_statistical=1)
    resumed_m += [resumed.update(bar) for bar in bars[cut:]]
    assert got_m == resumed_m
    assert straight.assets == resumed.assets and straight.market_variance == resumed.market_variance
    a, b = straight.exposures(ASSETS)[1], resumed.exposures(ASSETS)[1]
    assert np.array_equal(a, b)


def test_benchmark_mode_beta_of_benchmark_is_one_and_missing_benchmark_gives_no_market_return() -> None:
    fm = FactorModel(24.0, benchmark="BTC")
    rng = np.random.default_rng(7)
    btc, eth = [], []
    for t in range(200):
        b = float(rng.normal(0, 0.01))
        e = 1.7 * b + float(rng.normal(0, 0.002))
        if t % 10 == 3:  # BTC has no bar: no market return, ETH's beta untouched by this bar
            assert fm.update({"ETH": e}) is None
            continue
        assert fm.update({"BTC": b, "ETH": e}) == b
        btc.append(b)
        eth.append(e)
    _, beta = fm.exposures(["BTC", "ETH"])
    assert beta[0, 0] == pytest.approx(1.0, rel=1e-9)
    assert beta[1, 0] == pytest.approx(batch_beta(np.array(eth), np.array(btc), fm.alpha)[0], rel=1e-9)
    assert 1.6 < beta[1, 0] < 1.8


def test_remove_then_rejoin_starts_afresh_and_bad_inputs_are_refused() -> None:
    fm = FactorModel(5.0)
    fm.update({"A": 0.01, "B": 0.02})
    fm.update({"A": -0.01, "B": 0.03})
    fm.remove("A")
    assert fm.assets == ("B",)
    fm.update({"A": 0.5, "B": 0.1})
    assert fm.assets == ("B", "A")
    assert fm.exposures(["A"])[1].tolist() == [[0.0]]  # one common bar since rejoining: unknown
    with pytest.raises(InvariantError, match="cannot remove Z"):
        fm.remove("Z")
    with pytest.raises(InvariantError, match="return of A is inf"):
        fm.update({"A": math.inf})
    for kwargs, key in (({"halflife_bars": 0.0}, "halflife_bars"), ({"halflife_bars": 1.0, "n_statistical": -1},
                                                                      "n_statistical")):
        with pytest.raises(ConfigError, match=key):
            FactorModel(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"tiers\.empty"):
        FactorModel(1.0, tiers={"empty": []})
    snap = FactorModel(5.0, tiers=TIERS).snapshot()
    with pytest.raises(InvariantError, match="factors"):
        FactorModel.restore(5.0, snap)
    with pytest.raises(SnapshotVersionError):
        FactorModel.restore(5.0, replace(snap, version=99), tiers=TIERS)


# --- the factor form of a covariance --------------------------------------------------------------


def trained(n: int, seed: int, n_statistical: int) -> tuple[FactorModel, tuple[str, ...], np.ndarray]:
    rng = np.random.default_rng(seed)
    names = tuple(f"X{i}" for i in range(n))
    true_beta = rng.uniform(0.2, 2.0, n)
    fm = FactorModel(50.0, n_statistical=n_statistical)
    rows = []
    for _ in range(300):
        row = true_beta * rng.normal(0, 0.01) + rng.normal(0, 0.005, n)
        rows.append(row)
        fm.update(dict(zip(names, row.tolist(), strict=True)))
    return fm, names, np.atleast_2d(np.cov(np.array(rows), rowvar=False))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 8), seed=st.integers(0, 10_000), k=st.integers(0, 9))
def test_risk_model_is_psd_keeps_market_part_and_diagonal(n: int, seed: int, k: int) -> None:
    fm, names, cov = trained(n, seed, k)
    model = fm.risk_model(names, cov)
    sigma = model.cov()
    scale = float(np.abs(cov).max())
    assert np.linalg.eigvalsh(sigma).min() >= -1e-12 * scale
    beta = fm.exposures(names)[1][:, 0]
    np.testing.assert_allclose(model.loadings[:, 0], math.sqrt(fm.market_variance) * beta, rtol=1e-12)
    assert model.loadings.shape[1] <= 1 + min(k, n)
    market = fm.market_variance * beta**2
    pcs = (model.loadings[:, 1:] ** 2).sum(axis=1)
    np.testing.assert_allclose(np.diag(sigma), np.maximum(np.diag(cov), market + pcs), rtol=1e-9, atol=1e-15 * scale)


def test_risk_model_with_every_component_of_a_psd_residual_is_exact() -> None:
    fm, names, _ = trained(6, 3, 6)
    beta = fm.exposures(names)[1][:, 0]
    rng = np.random.default_rng(1)
    a = rng.normal(0, 0.01, (6, 3))
    cov = fm.market_variance * np.outer(beta, beta) + a @ a.T + np.diag(rng.uniform(0, 1e-5, 6))
    np.testing.assert_allclose(fm.risk_model(names, cov).cov(), cov, rtol=1e-9, atol=1e-16)
    only_market = FactorModel.restore(50.0, fm.snapshot()).risk_model(names, cov)
    assert only_market.loadings.shape == (6, 1)
    np.testing.assert_allclose(np.diag(only_market.cov()), np.diag(cov), rtol=1e-12)  # residual kept in d
    with pytest.raises(InvariantError, match="shape"):
        fm.risk_model(names, cov[:5, :5])


# --- the 82-asset hourly universe ----------------------------------------------------------------


@pytest.fixture(scope="module")
def hourly() -> tuple[tuple[str, ...], np.ndarray]:
    return hourly_log_returns()


def test_hourly_universe_betas_equal_batch_regression(hourly: tuple[tuple[str, ...], np.ndarray]) -> None:
    names, rets = hourly
    assert len(names) == 82
    tiers = {"majors": ["BTC", "ETH"], "rest": list(names[2:])}
    fm = FactorModel(168.0, tiers=tiers, n_statistical=3)
    checks = {200, 1500, len(rets) - 1}
    for t, row in enumerate(rets):
        bar = {a: float(v) for a, v in zip(names, row, strict=True) if np.isfinite(v)}
        m = fm.update(bar)
        if t not in checks:
            continue
        block = rets[: t + 1]
        assert np.isfinite(block).all()  # every asset trades over the whole hourly file
        w = ew_weights(t + 1, fm.alpha)
        factors = [block.mean(axis=1), block[:, :2].mean(axis=1), block[:, 2:].mean(axis=1)]
        assert m == pytest.approx(factors[0][-1], rel=1e-12)
        _, got = fm.exposures(names)
        for k, f in enumerate(factors):
            fc = f - w @ f
            want = (w * fc) @ (block - w @ block) / (w @ fc**2)
            np.testing.assert_allclose(got[:, k], want, rtol=1e-8)
        assert fm.market_variance == pytest.approx(w @ (factors[0] - w @ factors[0]) ** 2, rel=1e-8)
    _, beta = fm.exposures(names)
    assert 0.4 < beta[names.index("BTC"), 0] < 1.2 and np.median(beta[:, 0]) == pytest.approx(1.0, abs=0.2)
    last = rets[-500:]
    model = fm.risk_model(names, np.cov(last, rowvar=False))
    assert model.loadings.shape == (82, 4)
    assert np.linalg.eigvalsh(model.cov()).min() > -1e-15
