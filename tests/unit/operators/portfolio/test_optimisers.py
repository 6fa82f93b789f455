"""Mean-variance and risk-budget optimisers: fast path against cvxpy, determinism, fallbacks, skfolio agreement."""

from __future__ import annotations

from functools import cache

import cvxpy as cp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import SHARED_DATA
from operators.portfolio.optimisers import CLARABEL_SETTINGS, OSQP_SETTINGS, MeanVariance, RiskBudget, tier_risk_parity
from operators.portfolio.risk_model import RiskModel

HOURLY = SHARED_DATA / "universe/huobi-pob/cryptos_2017to2021_hourly.parquet"
NO_FACTORS = (np.zeros((0,)), np.zeros((0,)))


def synthetic(n: int, k: int, seed: int) -> tuple[RiskModel, np.ndarray]:
    rng = np.random.default_rng(seed)
    loadings = rng.normal(0, 0.01, (n, k))
    specific = rng.uniform(1e-5, 4e-4, n)
    return RiskModel(tuple(f"a{i}" for i in range(n)), loadings, specific), rng.normal(0, 1e-3, n)


@cache
def hourly_returns(n_assets: int = 12, bars: int = 600) -> np.ndarray:
    """Log returns of the first `n_assets` assets with complete closes over the last `bars` + 1 hours."""
    if not HOURLY.exists():
        pytest.skip(f"missing data file {HOURLY}")
    import polars as pl

    df = pl.read_parquet(HOURLY).tail(bars + 1)
    cols = [c for c in df.columns[1:] if df[c].null_count() == 0 and (df[c] > 0).all()][:n_assets]
    closes = df.select(cols).to_numpy().astype(np.float64)
    return np.asarray(np.diff(np.log(closes), axis=0))


def solve_mv(mv: MeanVariance, model: RiskModel, mu: np.ndarray, previous: np.ndarray | None = None,
             gamma: float = 5.0, costs: float = 0.0) -> object:
    n = model.n
    return mv.solve(mu=mu, model=model, exposures=np.zeros((n, 0)), factor_bounds=NO_FACTORS,
                    previous=np.zeros(n) if previous is None else previous, costs=np.full(n, costs),
                    risk_aversion=gamma)


def test_problems_are_dpp_and_factor_form() -> None:
    mv = MeanVariance(8, 3, 2, gross=2.0, net=(0.0, 1.0), bounds=(-0.5, 0.5))
    rb = RiskBudget(8, 3)
    assert mv.problem.is_dpp() and rb.problem.is_dpp()
    assert all(p.shape != (8, 8) for p in mv.problem.parameters() + rb.problem.parameters())


@pytest.mark.parametrize("solver", ["OSQP", "CLARABEL"])
def test_fast_path_equals_cvxpy_solve(solver: str) -> None:
    model, mu = synthetic(15, 4, 1)
    mv = MeanVariance(15, 6, 1, gross=1.5, net=(-0.2, 1.0), bounds=(-0.3, 0.3), solvers=(solver,))
    exposures = np.random.default_rng(2).normal(size=(15, 1))
    prev = np.full(15, 1 / 15)
    sol = mv.solve(mu=mu, model=model, exposures=exposures, factor_bounds=(np.array([-0.2]), np.array([0.2])),
                   previous=prev, costs=np.full(15, 5e-4), risk_aversion=3.0)
    assert sol.status == "optimal" and sol.solver == solver and sol.fallback == "none"
    mv.load_parameters()
    opts = {k: v for k, v in OSQP_SETTINGS.items() if k != "verbose"} if solver == "OSQP" else CLARABEL_SETTINGS
    mv.problem.solve(solver=solver, **opts)
    assert mv.w.value is not None
    np.testing.assert_allclose(sol.weights, mv.w.value, atol=1e-6)
    assert sol.objective == pytest.approx(mu @ sol.weights - 3.0 * model.variance(sol.weights)
                                          - 5e-4 * np.abs(sol.weights - prev).sum())


def test_weights_satisfy_constraints_with_zero_padded_loadings() -> None:
    model, mu = synthetic(10, 2, 3)
    mv = MeanVariance(10, 5, 1, gross=1.2, net=(0.5, 0.8), bounds=(-0.1, 0.25))
    exposures = np.linspace(-1, 1, 10)[:, None]
    sol = mv.solve(mu=mu * 50, model=model, exposures=exposures, factor_bounds=(np.array([-0.05]), np.array([0.05])),
                   previous=np.zeros(10), costs=np.full(10, 1e-4), risk_aversion=1.0)
    w = sol.weights
    assert sol.status == "optimal"
    assert np.abs(w).sum() <= 1.2 + 1e-5 and 0.5 - 1e-5 <= w.sum() <= 0.8 + 1e-5
    assert (w >= -0.1 - 1e-5).all() and (w <= 0.25 + 1e-5).all() and abs(exposures[:, 0] @ w) <= 0.05 + 1e-5


def test_restored_warm_state_continues_bit_identically() -> None:
    model, _ = synthetic(20, 5, 4)
    rng = np.random.default_rng(5)
    mus = rng.normal(0, 1e-3, (8, 20))

    def make() -> MeanVariance:
        return MeanVariance(20, 5, 0, gross=1.0, net=(1.0, 1.0), bounds=(0.0, 0.3), solvers=("OSQP", "CLARABEL"))

    first, prev, weights, snap = make(), np.zeros(20), [], None
    for i, mu in enumerate(mus):
        if i == 4:
            snap, prev_at = first.warm_state(), prev
        sol = solve_mv(first, model, mu, prev, costs=2e-4)
        weights.append(sol.weights)
        prev = sol.weights
    assert snap is not None and len(snap) > 40
    second, prev = make(), prev_at
    second.set_warm_state(snap)
    for i, mu in enumerate(mus[4:], start=4):
        sol = solve_mv(second, model, mu, prev, costs=2e-4)
        assert sol.weights.tobytes() == weights[i].tobytes()
        prev = sol.weights
    assert first.warm_state() == second.warm_state()


def test_infeasible_keeps_previous_with_status() -> None:
    model, mu = synthetic(6, 2, 6)
    mv = MeanVariance(6, 2, 0, gross=1.0, net=(1.0, 1.0), bounds=(0.0, 0.1))  # 6 x 0.1 < 1: infeasible
    prev = np.array([0.5, 0.5, 0, 0, 0, np.nan])
    sol = solve_mv(mv, model, mu, prev)
    assert (sol.fallback, sol.solver, sol.status) == ("previous", "", "infeasible")
    assert sol.weights.tolist() == [0.5, 0.5, 0, 0, 0, 0]
    assert sol.message.startswith("OSQP: infeasible; CLARABEL: infeasible")


def test_failing_solver_falls_back_to_second() -> None:
    model, mu = synthetic(6, 2, 7)
    mv = MeanVariance(6, 2, 0, gross=1.0, net=(1.0, 1.0), bounds=(0.0, 1.0), solvers=("NO_SUCH_SOLVER", "CLARABEL"))
    sol = solve_mv(mv, model, mu)
    assert (sol.fallback, sol.solver, sol.status) == ("second_solver", "CLARABEL", "optimal")
    assert sol.message.startswith("NO_SUCH_SOLVER: solver_error (") and abs(sol.weights.sum() - 1) < 1e-6


def test_nan_input_keeps_previous() -> None:
    model, mu = synthetic(6, 2, 8)
    mv = MeanVariance(6, 2, 0, gross=1.0, net=(1.0, 1.0), bounds=(0.0, 1.0))
    mu[2] = np.nan
    prev = np.full(6, 1 / 6)
    sol = solve_mv(mv, model, mu, prev)
    assert (sol.fallback, sol.status, sol.solver) == ("previous", "nan_input", "")
    assert sol.weights.tolist() == prev.tolist()


@pytest.mark.parametrize("budgets", [np.ones(12), np.linspace(0.5, 4.0, 12)])
def test_risk_budget_newton_equals_clarabel(budgets: np.ndarray) -> None:
    model, _ = synthetic(12, 12, 11)
    newton = RiskBudget(12, 12).solve(model=model, budgets=budgets)
    conic = RiskBudget(12, 12, solvers=("CLARABEL",)).solve(model=model, budgets=budgets)
    assert (newton.solver, conic.solver, newton.status, conic.status) == ("NEWTON", "CLARABEL", "optimal", "optimal")
    np.testing.assert_allclose(newton.weights, conic.weights, atol=1e-5)  # Clarabel on exp cones: ~1e-6
    np.testing.assert_allclose(model.contributions(newton.weights), budgets / budgets.sum(), atol=1e-9)


def test_risk_budget_dpp_solve_equals_cvxpy_solve() -> None:
    model, _ = synthetic(10, 3, 12)
    rb = RiskBudget(10, 3, solvers=("CLARABEL",))
    sol = rb.solve(model=model, budgets=np.arange(1.0, 11.0))
    rb.load_parameters()
    rb.problem.solve(solver="CLARABEL", **CLARABEL_SETTINGS)
    assert rb.y.value is not None
    np.testing.assert_allclose(sol.weights, rb.y.value / rb.y.value.sum(), atol=1e-6)


def test_mean_variance_solver_order_and_warm_state_only_from_osqp() -> None:
    model, mu = synthetic(6, 2, 13)
    mv = MeanVariance(6, 2, 0, gross=1.0, net=(1.0, 1.0), bounds=(0.0, 1.0))
    assert solve_mv(mv, model, mu).solver == "OSQP" and mv.warm_state() is not None
    mv = MeanVariance(6, 2, 0, gross=1.0, net=(1.0, 1.0), bounds=(0.0, 1.0), solvers=("CLARABEL", "OSQP"))
    assert solve_mv(mv, model, mu).solver == "CLARABEL" and mv.warm_state() is None


def test_risk_budget_with_unusable_budgets_is_equal_weight() -> None:
    model, _ = synthetic(4, 2, 9)
    sol = RiskBudget(4, 2).solve(model=model, budgets=np.array([1.0, 0.0, 1.0, 1.0]))
    assert (sol.fallback, sol.status) == ("previous", "invalid_input") and sol.weights.tolist() == [0.25] * 4


# --- agreement with skfolio on real hourly returns -------------------------------------------------------------


def skfolio_prior(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from skfolio.prior import EmpiricalPrior

    dist = EmpiricalPrior().fit(x).return_distribution_
    return np.asarray(dist.mu), np.asarray(dist.covariance)


def test_min_variance_and_utility_agree_with_skfolio() -> None:
    from skfolio import RiskMeasure
    from skfolio.optimization import MeanRisk, ObjectiveFunction

    x = hourly_returns()
    n = x.shape[1]
    mu, cov = skfolio_prior(x)
    model = RiskModel.from_cov([f"a{i}" for i in range(n)], cov)
    mv = MeanVariance(n, n, 0, gross=1e3, net=(1.0, 1.0), bounds=(0.0, 1.0))
    ours = solve_mv(mv, model, np.zeros(n), gamma=1.0)
    ref = MeanRisk(risk_measure=RiskMeasure.VARIANCE, objective_function=ObjectiveFunction.MINIMIZE_RISK).fit(x)
    np.testing.assert_allclose(ours.weights, ref.weights_, atol=1e-4)
    for gamma in (2.0, 50.0):
        ours = solve_mv(mv, model, mu, gamma=gamma)
        ref = MeanRisk(risk_measure=RiskMeasure.VARIANCE, objective_function=ObjectiveFunction.MAXIMIZE_UTILITY,
                       risk_aversion=gamma).fit(x)
        np.testing.assert_allclose(ours.weights, ref.weights_, atol=1e-4)


@pytest.mark.parametrize("unequal", [False, True])
def test_risk_parity_agrees_with_skfolio(unequal: bool) -> None:
    from skfolio import RiskMeasure
    from skfolio.optimization import RiskBudgeting

    x = hourly_returns()
    n = x.shape[1]
    _, cov = skfolio_prior(x)
    budgets = np.linspace(1.0, 3.0, n) if unequal else np.ones(n)
    ours = RiskBudget(n, n).solve(model=RiskModel.from_cov([f"a{i}" for i in range(n)], cov), budgets=budgets)
    ref = RiskBudgeting(risk_measure=RiskMeasure.VARIANCE, risk_budget=budgets).fit(x)
    assert ours.status == "optimal"
    np.testing.assert_allclose(ours.weights, ref.weights_, atol=1e-4)


# --- tier risk parity ----------------------------------------------------------------------------------------


def test_tier_risk_parity_assets_outside_tiers_get_zero() -> None:
    model, _ = synthetic(6, 2, 10)
    sol, shares = tier_risk_parity(model, {"a": ["a0", "a1"], "b": ["a2", "a3", "zz"]}, {"a": 3.0, "b": 1.0})
    assert sol.weights[4:].tolist() == [0.0, 0.0] and abs(sol.weights.sum() - 1) < 1e-9
    assert shares == pytest.approx({"a": 0.75, "b": 0.25}, abs=1e-6)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n_tiers=st.integers(2, 4), inside=st.sampled_from(["erc", "inverse_vol"]))
def test_tier_shares_match_budgets(seed: int, n_tiers: int, inside: str) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(n_tiers, 12))
    model, _ = synthetic(n, 3, seed)
    labels = np.concatenate([np.arange(n_tiers), rng.integers(0, n_tiers, n - n_tiers)])
    tiers = {f"t{j}": [model.assets[i] for i in range(n) if labels[i] == j] for j in range(n_tiers)}
    budgets = {t: float(rng.uniform(0.2, 1.0)) for t in tiers}
    sol, shares = tier_risk_parity(model, tiers, budgets, inside=inside)
    total = sum(budgets.values())
    assert sol.status == "optimal" and (sol.weights >= 0).all() and abs(sol.weights.sum() - 1) < 1e-8
    for t in tiers:
        assert abs(shares[t] - budgets[t] / total) < 1e-3
    if inside == "erc":
        c = model.contributions(sol.weights)
        for members in tiers.values():
            ix = [model.assets.index(a) for a in members]
            assert np.ptp(c[ix]) < 1e-3


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), lo=st.floats(-0.3, 0.0), hi=st.floats(0.2, 0.6), gross=st.floats(1.0, 2.0))
def test_mean_variance_weights_satisfy_constraints(seed: int, lo: float, hi: float, gross: float) -> None:
    model, mu = synthetic(8, 3, seed)
    mv = _mv_cache(lo, hi, gross)
    sol = solve_mv(mv, model, mu * 20, gamma=0.5, costs=1e-4)
    w = sol.weights
    assert sol.fallback == "none" and np.isfinite(w).all()
    assert np.abs(w).sum() <= gross + 1e-5 and 0.0 - 1e-5 <= w.sum() <= 1.0 + 1e-5
    assert (w >= lo - 1e-5).all() and (w <= hi + 1e-5).all()


def _mv_cache(lo: float, hi: float, gross: float) -> MeanVariance:
    return MeanVariance(8, 3, 0, gross=gross, net=(0.0, 1.0), bounds=(lo, hi))


def test_cvxpy_is_available_with_the_solvers() -> None:
    assert {"OSQP", "CLARABEL", "SCS"} <= set(cp.installed_solvers())
