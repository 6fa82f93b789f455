"""The simulated venue's costs, each on a hand-computed fill: the fee on both sides, the side of the spread,
the half spread from quotes, and the price a fill takes (the bar's open or its close)."""

from __future__ import annotations

import math

import pytest

from headrace.events import Bar, Order
from operators.execution.sim_venue import SimulatedVenue, VenueCosts

INST = "v:A/Q"
FEE_BPS, HALF_SPREAD_BPS = 10.0, 5.0
VENUE = SimulatedVenue({"v": VenueCosts(taker_fee_bps=FEE_BPS, half_spread_bps=HALF_SPREAD_BPS)})


def a_bar(open_: float = 100.0, close: float = 120.0, bid: float | None = None, ask: float | None = None) -> Bar:
    return Bar(instrument=INST, ts_open=0, ts_event=60, open=open_, high=max(open_, close) + 1.0,
               low=min(open_, close) - 1.0, close=close, volume=1.0, trades=1, bid=bid, ask=ask)


def an_order(side: str, amount: float = 2.0) -> Order:
    return Order(order_id=f"o-{side}", account="main", instrument=INST, ts_event=0, side=side,  # type: ignore[arg-type]
                 amount=amount, reason="rebalance", target_weight=0.1)


@pytest.mark.parametrize("side", ["buy", "sell"])
def test_the_taker_fee_is_charged_on_buys_and_sells_alike(side: str) -> None:
    fill = VENUE.execute(an_order(side, amount=3.0), a_bar(), at="close")
    assert fill.fee > 0
    assert math.isclose(fill.fee, FEE_BPS / 1e4 * fill.price * 3.0, rel_tol=1e-12)
    assert fill.fee_currency == "Q" and fill.liquidity == "taker"


def test_buys_pay_above_the_reference_price_and_sells_receive_below_it() -> None:
    bar = a_bar(close=120.0)
    buy = VENUE.execute(an_order("buy"), bar, at="close")
    sell = VENUE.execute(an_order("sell"), bar, at="close")
    assert math.isclose(buy.price, 120.0 * (1 + HALF_SPREAD_BPS / 1e4), rel_tol=1e-12)
    assert math.isclose(sell.price, 120.0 * (1 - HALF_SPREAD_BPS / 1e4), rel_tol=1e-12)
    assert sell.price < 120.0 < buy.price
    assert buy.slippage_bps == pytest.approx(HALF_SPREAD_BPS) == sell.slippage_bps


def test_the_half_spread_from_quotes_is_half_the_quoted_spread_not_all_of_it() -> None:
    # bid 99, ask 101 around a mid of 100: half the spread is 1, i.e. (101 - 99) / (101 + 99) = 1 % of the price
    bar = a_bar(open_=100.0, close=100.0, bid=99.0, ask=101.0)
    buy = VENUE.execute(an_order("buy"), bar, at="close")
    sell = VENUE.execute(an_order("sell"), bar, at="close")
    assert math.isclose(buy.price, 101.0, rel_tol=1e-12)  # a buy at mid 100 pays the ask
    assert math.isclose(sell.price, 99.0, rel_tol=1e-12)  # a sell receives the bid
    assert buy.slippage_bps == pytest.approx(100.0)


def test_a_quote_passed_for_a_fill_at_the_open_gives_half_its_spread_on_the_right_side() -> None:
    bar = a_bar(open_=100.0, close=120.0, bid=119.0, ask=121.0)  # the bar's closing quote is not known at its open
    buy = VENUE.execute(an_order("buy"), bar, at="open", quote=(99.0, 101.0))
    sell = VENUE.execute(an_order("sell"), bar, at="open", quote=(99.0, 101.0))
    assert math.isclose(buy.price, 101.0, rel_tol=1e-12) and math.isclose(sell.price, 99.0, rel_tol=1e-12)
    assert math.isclose(sell.fee, FEE_BPS / 1e4 * 99.0 * 2.0, rel_tol=1e-12)


def test_quotes_replace_the_configured_half_spread() -> None:
    tight = VENUE.execute(an_order("buy"), a_bar(close=100.0, bid=99.99, ask=100.01), at="close")
    assert math.isclose(tight.price, 100.0 * (1 + 0.02 / 200.0), rel_tol=1e-12)  # 1 bp, not the configured 5


@pytest.mark.parametrize("side", ["buy", "sell"])
def test_a_fill_at_the_close_takes_the_close_and_its_time(side: str) -> None:
    bar = a_bar(open_=100.0, close=120.0)
    fill = VENUE.execute(an_order(side), bar, at="close")
    assert fill.ts_event == bar.ts_event
    assert fill.price == pytest.approx(120.0, rel=1e-3)  # within the half spread of the close, far from the open


@pytest.mark.parametrize("side", ["buy", "sell"])
def test_a_fill_at_the_open_takes_the_open_and_its_time(side: str) -> None:
    bar = a_bar(open_=100.0, close=120.0)
    fill = VENUE.execute(an_order(side), bar, at="open")
    assert fill.ts_event == bar.ts_open
    assert fill.price == pytest.approx(100.0, rel=1e-3)


def test_fills_are_complete_and_keep_the_order_identity() -> None:
    order = an_order("sell", amount=0.25)
    fill = VENUE.execute(order, a_bar(), at="close")
    assert (fill.order_id, fill.instrument, fill.side, fill.amount, fill.account) == (
        order.order_id, INST, "sell", 0.25, "main")
    assert fill.notional == pytest.approx(fill.price * 0.25)
