"""IOC matching of the simulated venue, against a brute-force loop over unit lots."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.router.matching import match_ioc
from operators.router.sor import Level


def brute_force(side: str, amount: int, limit: int, levels: list[Level]) -> list[tuple[float, float]]:
    """Take one unit at a time from the first level that crosses and still has units; merge by level."""
    left = [int(lv.amount) for lv in levels]
    taken = [0] * len(levels)
    for _ in range(amount):
        for i, lv in enumerate(levels):
            crosses = lv.price <= limit if side == "buy" else lv.price >= limit
            if crosses and left[i] > 0:
                left[i] -= 1
                taken[i] += 1
                break
    return [(lv.price, float(t)) for lv, t in zip(levels, taken) if t > 0]


books = st.lists(st.tuples(st.integers(90, 110), st.integers(0, 5)), max_size=8)


@given(side=st.sampled_from(["buy", "sell"]), amount=st.integers(0, 30), limit=st.integers(85, 115), book=books,
       ordered=st.booleans())
def test_match_ioc_equals_brute_force(side: str, amount: int, limit: int, book: list[tuple[int, int]],
                                      ordered: bool) -> None:
    if ordered:
        book = sorted(book, key=lambda x: x[0] if side == "buy" else -x[0])
    levels = [Level(float(p), float(a)) for p, a in book]
    fills = match_ioc(side, float(amount), float(limit), levels)
    assert list(fills) == brute_force(side, amount, limit, levels)
    assert sum(a for _, a in fills) <= amount
    assert all((p <= limit) if side == "buy" else (p >= limit) for p, _ in fills)


def test_match_ioc_partial_and_empty() -> None:
    bids = [Level(100.0, 1.0), Level(99.5, 2.0)]
    assert match_ioc("sell", 5.0, 99.5, bids) == ((100.0, 1.0), (99.5, 2.0))
    assert match_ioc("sell", 0.25, 99.0, bids) == ((100.0, 0.25),)
    assert match_ioc("sell", 1.0, 100.5, bids) == ()
    assert match_ioc("buy", 0.0, 200.0, bids) == ()


def test_match_ioc_refuses_unknown_side() -> None:
    with pytest.raises(ValueError, match="side must be"):
        match_ioc("short", 1.0, 1.0, [])
