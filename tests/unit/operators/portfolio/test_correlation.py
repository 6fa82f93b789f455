"""Correlation-aware sizing: identical bets share, independent bets and hedges stand, what it does to the variance."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.errors import InvariantError
from operators.portfolio.correlation import correlation_scale
from operators.portfolio.risk_model import RiskModel


def one_factor(n: int, vol: float = 0.02, specific: float = 0.0) -> RiskModel:
    return RiskModel(tuple(f"x{i}" for i in range(n)), np.full((n, 1), vol), np.full(n, specific))


@pytest.mark.parametrize("n", [2, 3, 7])
def test_identical_bets_each_get_one_over_n(n: int) -> None:
    w = np.linspace(0.1, 0.3, n)  # identical assets: each one's contribution is its share of the sum
    scaled, c = correlation_scale(w, one_factor(n))
    np.testing.assert_allclose(c, w / w.sum(), rtol=1e-12)
    if n == 2:
        equal, c2 = correlation_scale(np.array([0.4, 0.4]), one_factor(2))
        np.testing.assert_allclose(c2, [0.5, 0.5])
        np.testing.assert_allclose(equal, [0.2, 0.2])
    np.testing.assert_allclose(scaled, w * w / w.sum(), rtol=1e-12)


def test_independent_bets_are_unchanged() -> None:
    model = RiskModel(("a", "b", "c"), np.zeros((3, 0)), np.array([1e-4, 4e-4, 9e-4]))
    w = np.array([0.3, -0.2, 0.5])
    scaled, c = correlation_scale(w, model)
    assert c.tolist() == [1.0, 1.0, 1.0] and scaled.tolist() == w.tolist()


def test_hedge_and_zero_are_left_alone() -> None:
    model = RiskModel.from_cov(("a", "b", "z"), np.array([[1.0, 0.8, 0.5], [0.8, 1.0, 0.5], [0.5, 0.5, 1.0]]))
    scaled, c = correlation_scale(np.array([1.0, -1.0, 0.0]), model)  # long a, short b: each reduces the other
    np.testing.assert_allclose(c, [1.0, 1.0, 1.0])
    np.testing.assert_allclose(scaled, [1.0, -1.0, 0.0])
    scaled, c = correlation_scale(np.array([1.0, -0.5, 0.0]), model)  # b still hedges; a adds nothing beyond itself
    assert c[1] == 1.0 and c[2] == 1.0 and c[0] == 1.0  # a's contribution 1 - 0.4 < its stand-alone 1
    scaled, c = correlation_scale(np.array([1.0, 1.0, -0.2]), model)  # a and b stack, the short z hedges
    assert c[0] == pytest.approx(1.0 / (1.0 + 0.8 - 0.1)) and c[1] == pytest.approx(c[0]) and c[2] == 1.0


def test_hedges_can_raise_the_variance() -> None:
    """Ten longs of 0.1 against a short of 0.7 in the same asset: the longs are cut to a third, the short kept."""
    model = one_factor(11)
    w = np.array([0.1] * 10 + [-0.7])
    scaled, c = correlation_scale(w, model)
    np.testing.assert_allclose(c, [1 / 3] * 10 + [1.0])
    assert scaled.sum() == pytest.approx(-0.7 + 1 / 3)
    assert model.variance(scaled) > 1.4 * model.variance(w)


def test_bad_weights_are_refused() -> None:
    with pytest.raises(InvariantError, match="3 assets"):
        correlation_scale(np.array([1.0, 2.0]), one_factor(3))
    with pytest.raises(InvariantError, match="finite"):
        correlation_scale(np.array([1.0, np.nan]), one_factor(2))


@st.composite
def books(draw: st.DrawFn, long_only: bool) -> tuple[np.ndarray, RiskModel]:
    n = draw(st.integers(1, 10))
    k = draw(st.integers(0, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    loadings = rng.normal(0, 0.02, (n, k))
    if long_only:
        loadings = np.abs(loadings)  # non-negative correlations
    specific = rng.uniform(0, 4e-4, n) * draw(st.sampled_from([0.0, 1.0]))
    w = rng.normal(0, 1, n) * (rng.uniform(size=n) > 0.2)
    if long_only:
        w = np.abs(w)
    return w, RiskModel(tuple(f"x{i}" for i in range(n)), loadings, specific)


@settings(max_examples=200, deadline=None)
@given(book=books(long_only=False))
def test_signs_kept_no_position_grows_and_scales_in_unit_interval(book: tuple[np.ndarray, RiskModel]) -> None:
    w, model = book
    scaled, c = correlation_scale(w, model)
    assert ((c >= 0) & (c <= 1)).all()
    assert (np.abs(scaled) <= np.abs(w)).all() and (np.sign(scaled) * np.sign(w) >= 0).all()
    contribution = w * model.marginal(w)
    alone = w * w * np.diag(model.cov())
    assert (c[contribution <= 0] == 1).all()
    cut = c < 1
    np.testing.assert_allclose(c[cut] * contribution[cut], alone[cut], rtol=1e-9, atol=1e-18)


@settings(max_examples=200, deadline=None)
@given(book=books(long_only=True))
def test_variance_never_rises_when_no_pair_offsets(book: tuple[np.ndarray, RiskModel]) -> None:
    w, model = book
    assert (np.outer(w, w) * model.cov() >= 0).all()
    scaled, _ = correlation_scale(w, model)
    v0 = model.variance(w)
    assert model.variance(scaled) <= v0 * (1 + 1e-12) + 1e-18
