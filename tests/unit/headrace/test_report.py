"""Run performance figures against a plain loop over the equity curve."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from headrace.report import performance

DAY_NS = 86_400 * 10**9


def loop_drawdown(equity: list[float]) -> float:
    peak, worst = equity[0], 0.0
    for e in equity:
        peak = max(peak, e)
        worst = max(worst, 1 - e / peak)
    return worst


@given(eq=st.lists(st.floats(0.01, 100.0), min_size=3, max_size=200))
def test_sharpe_and_drawdown_equal_a_plain_computation(eq: list[float]) -> None:
    ts = np.arange(len(eq)) * DAY_NS
    sharpe, mdd = performance(np.array(eq), ts)
    assert math.isclose(mdd, loop_drawdown(eq), rel_tol=1e-12, abs_tol=1e-12)
    rets = [b / a - 1 for a, b in itertools.pairwise(eq)]
    sd = statistics.stdev(rets)
    if sd > 1e-12:
        assert sharpe is not None
        assert math.isclose(sharpe, statistics.fmean(rets) / sd * math.sqrt(365), rel_tol=1e-6)


def test_sharpe_is_undefined_without_variation_or_points() -> None:
    assert performance(np.array([1.0, 1.0, 1.0]), np.arange(3) * DAY_NS) == (None, 0.0)
    assert performance(np.array([1.0]), np.array([0])) == (None, 0.0)
    assert performance(np.array([1.0, 0.5]), np.arange(2) * DAY_NS) == (None, 0.5)


def test_five_minute_bars_annualise_over_a_24_7_year() -> None:
    rng = np.random.default_rng(1)
    eq = np.cumprod(1 + rng.normal(0.0001, 0.001, 1000))
    s5, _ = performance(eq, np.arange(1000) * 300 * 10**9)
    s1d, _ = performance(eq, np.arange(1000) * DAY_NS)
    assert s5 is not None and s1d is not None
    assert math.isclose(s5 / s1d, math.sqrt(288), rel_tol=1e-9)
