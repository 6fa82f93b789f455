"""Pre-trade checks and trading states: every limit code fires with its actual and limit, exposure limits block only
orders that add exposure, every violation is collected at once, the throttle counts a sliding window, and the
strictest wanted state wins with each transition returned exactly once."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.risk.pretrade import (
    STATES,
    OrderCheck,
    OrderRate,
    PreTradeLimits,
    TradingStates,
    Violation,
    check_order,
    reduce_only,
)

EQ = 10_000.0


def order(notional: float = 1_000.0, price: float = 100.0, mark: float = 100.0, before: float = 0.0,
          asset_before: float | None = None, gross_before: float | None = None,
          net_before: float | None = None, sign: float = 1.0, equity: float = EQ) -> OrderCheck:
    """An order of `notional` on `sign`'s side on an instrument holding `before`; the book's asset, gross and net
    exposure are the instrument's unless given."""
    d = sign * notional
    ab = before if asset_before is None else asset_before
    gb = abs(before) if gross_before is None else gross_before
    nb = before if net_before is None else net_before
    return OrderCheck(instrument="v:BTC/USDT", asset="BTC", notional=notional, price=price, mark=mark,
                      position_before=before, position_after=before + d, asset_before=ab, asset_after=ab + d,
                      gross_before=gb, gross_after=gb - abs(before) + abs(before + d), net_before=nb,
                      net_after=nb + d, equity=equity)


def codes(vs: list[Violation]) -> dict[str, tuple[float, float]]:
    return {v.code: (v.actual, v.limit) for v in vs}


@pytest.mark.parametrize(("limits", "oc", "code", "actual", "limit"), [
    (PreTradeLimits(max_order_notional=500.0), order(notional=1_000.0), "max_order_notional", 1_000.0, 500.0),
    (PreTradeLimits(max_order_fraction=0.05), order(notional=1_000.0), "max_order_fraction", 0.1, 0.05),
    (PreTradeLimits(max_position_fraction=0.15), order(notional=1_000.0, before=1_000.0),
     "max_position_fraction", 0.2, 0.15),
    (PreTradeLimits(max_asset_fraction=0.25), order(notional=1_000.0, before=500.0, asset_before=2_000.0),
     "max_asset_fraction", 0.3, 0.25),
    (PreTradeLimits(max_gross=0.5), order(notional=1_000.0, gross_before=5_000.0, net_before=0.0),
     "max_gross", 0.6, 0.5),
    (PreTradeLimits(max_net=0.3), order(notional=1_000.0, sign=-1.0, gross_before=0.0, net_before=-3_000.0),
     "max_net", 0.4, 0.3),
    (PreTradeLimits(price_band_bps=100.0), order(price=102.5, mark=100.0), "price_band_bps", 250.0, 100.0),
    (PreTradeLimits(price_band_bps=100.0), order(price=97.0, mark=100.0), "price_band_bps", 300.0, 100.0),
])
def test_each_limit_fires_alone_with_its_actual_and_limit(limits: PreTradeLimits, oc: OrderCheck, code: str,
                                                          actual: float, limit: float) -> None:
    vs = check_order(oc, limits)
    assert [v.code for v in vs] == [code]
    assert vs[0].actual == pytest.approx(actual, rel=1e-12)
    assert vs[0].limit == limit
    assert vs[0].blocking
    # with the limit off it passes
    assert check_order(oc, replace(limits, **{code: 0.0})) == []


def test_limits_of_zero_are_off_and_an_order_within_every_limit_passes() -> None:
    oc = order(notional=1_000.0, price=100.4, before=1_000.0)
    assert check_order(oc, PreTradeLimits(), orders_in_window=10**6) == []
    loose = PreTradeLimits(max_order_notional=1_000.0, max_order_fraction=0.1, max_position_fraction=0.2,
                           max_asset_fraction=0.2, max_gross=0.2, max_net=0.2, price_band_bps=40.0 + 1e-9,
                           max_orders=3)
    assert check_order(oc, loose, orders_in_window=2) == []  # every actual equals its limit: not over it


def test_every_violation_is_collected_at_once() -> None:
    limits = PreTradeLimits(max_order_notional=500.0, max_order_fraction=0.05, max_position_fraction=0.1,
                            max_asset_fraction=0.1, max_gross=0.1, max_net=0.1, price_band_bps=10.0, max_orders=2)
    oc = order(notional=2_000.0, price=101.0, mark=100.0)
    got = codes(check_order(oc, limits, orders_in_window=2))
    assert list(got) == ["max_order_notional", "max_order_fraction", "max_position_fraction", "max_asset_fraction",
                         "max_gross", "max_net", "price_band_bps", "max_orders"]
    expected = {"max_order_notional": (2_000.0, 500.0), "max_order_fraction": (0.2, 0.05),
                "max_position_fraction": (0.2, 0.1), "max_asset_fraction": (0.2, 0.1), "max_gross": (0.2, 0.1),
                "max_net": (0.2, 0.1), "price_band_bps": (100.0, 10.0), "max_orders": (3.0, 2.0)}
    for c, (a, lim) in expected.items():
        assert got[c][0] == pytest.approx(a, rel=1e-9), c
        assert got[c][1] == lim, c


@pytest.mark.parametrize("limits", [PreTradeLimits(max_position_fraction=0.1), PreTradeLimits(max_asset_fraction=0.1),
                                    PreTradeLimits(max_gross=0.1), PreTradeLimits(max_net=0.1)])
def test_exposure_limits_block_only_orders_that_increase_what_they_bound(limits: PreTradeLimits) -> None:
    over = 5_000.0  # the book is 0.5 of equity long, far over every limit
    grows = order(notional=100.0, before=over)
    shrinks = order(notional=100.0, before=over, sign=-1.0)
    assert [v.code for v in check_order(grows, limits)] != []
    assert check_order(shrinks, limits) == []  # back toward the limit: passes although still over it
    flips_past = order(notional=11_000.0, before=over, sign=-1.0)  # -0.6 after: larger than before, over the limit
    assert [v.code for v in check_order(flips_past, limits)] != []


def test_max_orders_counts_the_orders_already_in_the_window() -> None:
    limits = PreTradeLimits(max_orders=3)
    assert check_order(order(), limits, orders_in_window=2) == []
    assert codes(check_order(order(), limits, orders_in_window=3)) == {"max_orders": (4.0, 3.0)}


def test_no_equity_left_blocks_orders_that_add_exposure_and_lets_reductions_go() -> None:
    limits = PreTradeLimits(max_order_fraction=0.5, max_position_fraction=0.5)
    adds = codes(check_order(order(equity=0.0), limits))
    assert set(adds) == {"max_order_fraction", "max_position_fraction"}
    assert math.isinf(adds["max_order_fraction"][0])
    reduces = codes(check_order(order(equity=-5.0, before=2_000.0, sign=-1.0), limits))
    assert set(reduces) == {"max_order_fraction"}  # the order fraction has no meaning without equity


def test_violation_text_names_code_actual_and_limit() -> None:
    assert Violation("max_gross", 1.25, 1.0).text() == "max_gross: 1.25 > 1"
    assert Violation("reduce_only", 3.0, 2.0, blocking=False).text() == "reduce_only: 3 > 2 (not blocking)"


@given(amount=st.floats(1e-6, 1e6), sign=st.sampled_from([-1.0, 1.0]), position=st.floats(-1e6, 1e6))
def test_reduce_only_never_flips_and_never_adds(amount: float, sign: float, position: float) -> None:
    part = reduce_only(amount, sign, position)
    assert 0.0 <= part <= amount
    after = position + sign * part
    assert abs(after) <= abs(position)
    assert after == 0 or (after > 0) == (position > 0)
    if position != 0 and (sign > 0) != (position > 0):
        assert part == min(amount, abs(position))
    else:
        assert part == 0.0


def test_reduces_is_a_shrink_without_a_flip() -> None:
    assert order(notional=500.0, before=1_000.0, sign=-1.0).reduces
    assert order(notional=1_000.0, before=1_000.0, sign=-1.0).reduces  # to flat
    assert not order(notional=1_500.0, before=1_000.0, sign=-1.0).reduces  # flips
    assert not order(notional=500.0, before=1_000.0).reduces  # adds
    assert not order(notional=500.0, before=0.0).reduces  # opens


def test_order_rate_counts_a_sliding_window() -> None:
    r = OrderRate(window_ns=100)
    assert r.count(0) == 0
    for t in (0, 10, 50):
        r.add(t)
    assert r.count(50) == 3
    assert r.count(99) == 3
    assert r.count(100) == 2  # the order at 0 is a full window old
    assert r.count(110) == 1
    assert r.snapshot() == (50,)
    assert OrderRate(100, r.snapshot()).count(149) == 1
    assert r.count(150) == 0


@given(times=st.lists(st.integers(0, 1_000), max_size=40), window=st.integers(1, 300), at=st.integers(0, 1_400))
def test_order_rate_equals_a_count_over_the_window(times: list[int], window: int, at: int) -> None:
    times = sorted(times)
    r = OrderRate(window)
    for t in times:
        r.add(t)
    now = max([at, *times])
    assert r.count(now) == sum(1 for t in times if now - window < t <= now)


def test_strictest_wanted_state_wins() -> None:
    s = TradingStates()
    assert s.state == "ACTIVE"
    a = s.want(1, "limit:es", "REDUCING", "es")
    assert a is not None and (a.previous, a.state, a.source, a.ts) == ("ACTIVE", "REDUCING", "limit:es", 1)
    b = s.want(2, "margin", "HALTED", "margin call")
    assert b is not None and (b.previous, b.state, b.source) == ("REDUCING", "HALTED", "margin")
    assert s.want(3, "operator", "REDUCING", "check") is None  # still HALTED by the margin monitor
    c = s.want(4, "margin", "ACTIVE", "margin ok")
    assert c is not None and (c.previous, c.state, c.source, c.reason) == ("HALTED", "REDUCING", "margin", "margin ok")
    assert s.snapshot() == (("limit:es", "REDUCING"), ("operator", "REDUCING"))


def test_a_limit_coming_back_does_not_release_the_operators_state() -> None:
    s = TradingStates()
    assert s.want(1, "operator", "REDUCING", "manual") is not None
    assert s.want(2, "limit:es", "HALTED", "x") is not None
    ch = s.want(3, "limit:es", "ACTIVE", "back")
    assert ch is not None and ch.state == "REDUCING"  # the operator's REDUCING stays
    assert s.want(4, "limit:stress", "ACTIVE", "never wanted anything") is None
    assert s.state == "REDUCING"
    assert s.wanted("operator") == "REDUCING" and s.wanted("limit:es") == "ACTIVE"
    last = s.want(5, "operator", "ACTIVE", "resume")
    assert last is not None and (last.previous, last.state) == ("REDUCING", "ACTIVE")


@given(steps=st.lists(st.tuples(st.sampled_from(["operator", "limit:es", "limit:stress", "margin"]),
                                st.sampled_from(STATES)), max_size=30))
def test_transitions_are_returned_exactly_once_and_chain(steps: list[tuple[str, str]]) -> None:
    s = TradingStates()
    wanted: dict[str, str] = {}
    state = "ACTIVE"
    for i, (src, st_) in enumerate(steps):
        ch = s.want(i, src, st_, f"r{i}")  # type: ignore[arg-type]
        wanted[src] = st_
        expect = max(wanted.values(), key=STATES.index)
        if expect == state:
            assert ch is None
        else:
            assert ch is not None and (ch.previous, ch.state, ch.source, ch.ts) == (state, expect, src, i)
        state = expect
        assert s.state == state
        again = s.want(i, src, st_, "again")  # type: ignore[arg-type]
        assert again is None  # the same want twice changes nothing
        assert TradingStates(s.snapshot()).state == state
