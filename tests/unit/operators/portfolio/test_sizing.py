"""Volatility-targeted sizing against a direct computation, and its caps."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from operators.portfolio.sizing import VolTargetSizer, annualise

names = st.lists(st.sampled_from([f"v:A{i}/Q" for i in range(12)]), min_size=1, max_size=12, unique=True)


@st.composite
def book(draw: st.DrawFn) -> tuple[dict[str, float], dict[str, float | None], VolTargetSizer]:
    ks = draw(names)
    scores = {k: draw(st.floats(-1, 1)) for k in ks}
    vols = {k: draw(st.one_of(st.none(), st.floats(0.0, 3.0))) for k in ks}
    sizer = VolTargetSizer(draw(st.floats(0.05, 2.0)), draw(st.floats(0.01, 1.0)), draw(st.floats(0.1, 3.0)),
                           draw(st.booleans()))
    return scores, vols, sizer


@given(case=book())
def test_weights_equal_the_formula_then_the_caps(case) -> None:  # type: ignore[no-untyped-def]
    scores, vols, s = case
    got = s.weights(scores, vols)
    raw = {}
    for k, score in scores.items():
        v = vols[k]
        w = 0.0 if v is None or v <= 0 else score * s.target_volatility / v
        w = max(w, 0.0) if s.long_only else w
        raw[k] = min(max(w, -s.max_weight), s.max_weight)
    gross = sum(abs(w) for w in raw.values())
    scale = s.max_gross_leverage / gross if gross > s.max_gross_leverage else 1.0
    assert set(got) == set(scores)
    for k in scores:
        assert math.isclose(got[k], raw[k] * scale, rel_tol=1e-12, abs_tol=1e-15)
    assert sum(abs(w) for w in got.values()) <= s.max_gross_leverage * (1 + 1e-12)
    assert all(abs(w) <= s.max_weight * (1 + 1e-12) for w in got.values())
    if s.long_only:
        assert all(w >= 0 for w in got.values())


def test_annualising_a_5_minute_volatility_uses_a_24_7_year() -> None:
    bars_per_year = 365 * 24 * 12
    assert math.isclose(annualise(0.001, 300 * 10**9), 0.001 * math.sqrt(bars_per_year))
