"""Where and when the account's orders fill: at the decision bar's close, or at the open of a later bar."""

from __future__ import annotations

import math

from headrace.events import CrossSection, Fill, Order, Target
from helpers import bar
from operators.execution.sim_venue import SimulatedVenue, VenueCosts
from operators.positions.account import Account
from operators.positions.fx import FxTable

A, B = "v:A/Q", "v:B/Q"
HS = 5.0 / 1e4
SIM = SimulatedVenue({"v": VenueCosts(taker_fee_bps=10.0, half_spread_bps=5.0)})
FX = FxTable.resolve("Q", [A, B], {})
MIN = 60 * 10**9


def account(*, at_close: bool) -> Account:
    """An account without latency, filling at the decision bar's close or at the next bar's open."""
    return Account("main", ["v"], FX, SIM, initial_cash=1000.0, min_trade_weight=0.0, latency_ns=0,
                   fill_on="decision_close" if at_close else "next_open")


def section(i: int, a: tuple[float, float], b: tuple[float, float],
            weights: tuple[float, float] | None) -> CrossSection:
    """Bar i (one minute) of A and B as (open, close), with targets when `weights` is given."""
    ts = MIN * i
    targets: tuple[Target, ...] = ()
    if weights is not None:
        targets = tuple(Target(instrument=k, ts_event=ts + MIN, weight=w, status="ok", volatility=0.01)
                        for k, w in zip((A, B), weights))
    return CrossSection(ts_event=ts + MIN, bars=(bar(A, ts, a[1], tf=MIN, open_=a[0]),
                                                bar(B, ts, b[1], tf=MIN, open_=b[0])), targets=targets)


def test_decision_close_fills_at_the_close_of_the_decision_bar() -> None:
    acct = account(at_close=True)
    out = acct.update(section(0, (100.0, 120.0), (10.0, 10.0), (0.5, 0.0)))
    [order] = [o for o in out if isinstance(o, Order)]
    [fill] = [o for o in out if isinstance(o, Fill)]
    assert fill.order_id == order.order_id and order.side == "buy"
    assert fill.ts_event == MIN  # the decision bar's close time, not its open (0)
    assert math.isclose(fill.price, 120.0 * (1 + HS), rel_tol=1e-12)  # the close, not the open of 100
    assert math.isclose(order.amount, 0.5 * 1000.0 / 120.0, rel_tol=1e-12)  # sized on the close as well


def test_decision_close_sells_at_the_close_too() -> None:
    acct = account(at_close=True)
    acct.update(section(0, (100.0, 100.0), (10.0, 10.0), (0.5, 0.0)))
    out = acct.update(section(1, (100.0, 90.0), (10.0, 10.0), (0.0, 0.0)))
    [fill] = [o for o in out if isinstance(o, Fill)]
    assert fill.side == "sell" and fill.ts_event == 2 * MIN
    assert math.isclose(fill.price, 90.0 * (1 - HS), rel_tol=1e-12)


def test_next_open_fills_at_the_open_of_the_following_bar_not_the_decision_bar() -> None:
    acct = account(at_close=False)
    first = acct.update(section(0, (100.0, 120.0), (10.0, 10.0), (0.5, 0.0)))
    assert [o for o in first if isinstance(o, Fill)] == []  # nothing fills on the bar that decided
    second = acct.update(section(1, (130.0, 140.0), (10.0, 10.0), None))
    [fill] = [o for o in second if isinstance(o, Fill)]
    assert fill.ts_event == MIN  # the next bar's open
    assert math.isclose(fill.price, 130.0 * (1 + HS), rel_tol=1e-12)


def test_fees_reduce_cash_on_the_sell_as_on_the_buy() -> None:
    acct = account(at_close=True)
    acct.update(section(0, (100.0, 100.0), (10.0, 10.0), (0.5, 0.0)))
    out = acct.update(section(1, (100.0, 100.0), (10.0, 10.0), (0.0, 0.0)))
    [sell] = [o for o in out if isinstance(o, Fill)]
    [pos] = [p for p in acct.flush() if p.instrument == A]
    buy_fee = 0.5 * 1000.0 / 100.0 * 100.0 * (1 + HS) * 1e-3
    assert math.isclose(sell.fee, sell.price * sell.amount * 1e-3, rel_tol=1e-12)
    assert math.isclose(pos.fees, buy_fee + sell.fee, rel_tol=1e-9)
