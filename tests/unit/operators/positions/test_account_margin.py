"""Margin monitoring and funding in the plain account, on hand-made bars of a linear contract whose marks and
funding events are set by hand; every expected figure is computed in the comments.

The account is funded with 1 000 USDT, trades without fees or spread and fills at the decision bar's close,
so a target weight w buys w x 1 000 / close XRP at the close."""

from __future__ import annotations

import math
import pickle
from dataclasses import replace

import pytest

from headrace.events import Alert, CrossSection, Equity, Fill, MarginSnapshot, Order, Target, TradingStateChange
from helpers import bar
from operators.execution.sim_venue import SimulatedVenue, VenueCosts
from operators.positions.account import Account
from operators.positions.fx import FxTable
from operators.risk.engine import RiskEngine, RiskSettings
from operators.risk.margin import MarginPosition, Tier, venue_margin
from operators.risk.margin_watch import REDUCE_REASON, MarginSettings, is_derivative, settle_of

C = "v:XRP/USDT:USDT"  # a linear perpetual settled in USDT
S = "v:BTC/USDT"  # spot on the same venue
SIM = SimulatedVenue({"v": VenueCosts(taker_fee_bps=0.0, half_spread_bps=0.0)})
FX = FxTable.resolve("USDT", [C, S], {})
ALERT_ONLY = MarginSettings(warn=0.5, critical=0.8, reduce_to=0.5, action="alert", leverage=10.0,
                            maintenance_rate=0.05)


def account(margin: MarginSettings | None = ALERT_ONLY, risk: RiskEngine | None = None) -> Account:
    return Account("main", ["v"], FX, SIM, initial_cash=1000.0, min_trade_weight=0.0, fill_on="decision_close",
                   risk=risk, margin=margin)


def section(i: int, close: float, mark: float | None, funding: tuple[tuple[int, float], ...] = (),
            weight: float | None = None) -> CrossSection:
    ts = 60 * i
    b = replace(bar(C, ts, close), mark_price=mark, mark_ts=None if mark is None else ts + 60, funding=funding)
    targets = () if weight is None else (Target(instrument=C, ts_event=ts + 60, weight=weight, status="ok",
                                                volatility=0.01),)
    return CrossSection(ts_event=ts + 60, bars=(b,), targets=targets)


def run(acct: Account, sections: list[CrossSection]) -> list[object]:
    return [o for cs in sections for o in acct.update(cs)]


def test_derivatives_are_the_symbols_with_a_settle_part() -> None:
    assert is_derivative(C) and settle_of(C) == "USDT"
    assert not is_derivative(S) and settle_of(S) is None


def test_funding_moves_the_settle_cash_by_minus_amount_times_mark_times_rate() -> None:
    acct = account()
    out = run(acct, [
        section(0, 1.0, 1.0, funding=((30, 0.01),), weight=0.5),  # funding before the buy: nothing held, no flow
        section(1, 1.0, 1.02, funding=((100, 0.0001),)),  # long 500: -500 x 1.02 x 0.0001 = -0.051
        section(2, 1.0, 0.98, funding=((150, -0.0002), (170, 0.0001))),  # +500 x 0.98 x 0.0002 - 500 x 0.98 x 1e-4
    ])
    eq = [o for o in out if isinstance(o, Equity)]
    # after the buy: cash 1000 - 500 x 1.0 = 500
    assert eq[0].cash == pytest.approx(500.0, abs=1e-12)
    assert eq[1].cash == pytest.approx(500.0 - 0.051, abs=1e-12)
    assert eq[1].equity == pytest.approx(999.949, abs=1e-12)  # the position is valued at the close, 1.0
    assert eq[2].cash == pytest.approx(500.0 - 0.051 + 0.098 - 0.049, abs=1e-12)
    assert acct.margin is not None
    assert acct.margin.funding_total(C) == pytest.approx(-0.051 + 0.049, abs=1e-12)


def test_a_short_receives_funding_at_a_positive_rate() -> None:
    acct = account()
    out = run(acct, [section(0, 2.0, 2.0, weight=-0.5), section(1, 2.0, 2.1, funding=((100, 0.001),))])
    eq = [o for o in out if isinstance(o, Equity)]
    # short 250 at 2.0: cash 1000 + 500 = 1500; funding -(-250) x 2.1 x 0.001 = +0.525
    assert eq[1].cash - eq[0].cash == pytest.approx(0.525, abs=1e-12)


# a levered long: weight 4 buys 4 000 XRP at 1.0, cash -3 000. Maintenance 5 %, leverage 10.
#   wallet WB = cash + amount x entry = -3000 + 4000 = 1000
#   margin balance MB(m) = WB + 4000 (m - 1) = 4000 m - 3000, maintenance MM(m) = 0.05 x 4000 m = 200 m
#   ratio(m) = 200 m / (4000 m - 3000): m=1 0.2, 0.95 0.2375, 0.85 0.425, 0.82 164/280 = 0.585714 (warn),
#   0.81 162/240 = 0.675 (still warn), 0.79 158/160 = 0.9875 (critical)
#   liquidation: WB + 4000 (P - 1) = 200 P  =>  P = 3000 / 3800 = 0.789474
MARKS = [1.0, 0.95, 0.85, 0.82, 0.81, 0.79]


def levered(acct: Account) -> list[object]:
    # closes half a cent above the marks: the margin must use the marks, the equity the closes
    return run(acct, [section(i, m + (0.005 if i else 0.0), m, weight=4.0 if i == 0 else None)
                      for i, m in enumerate(MARKS)])


def test_the_margin_snapshot_matches_the_hand_computation() -> None:
    out = levered(account())
    snaps = [o for o in out if isinstance(o, MarginSnapshot)]
    # the rebalance (t=60), the warn level (t=240, mark 0.82) and the critical level (t=360, mark 0.79)
    assert [s.ts_event for s in snaps] == [60, 240, 360]
    first, warn = snaps[0], snaps[1]
    assert first.wallet_balance == pytest.approx(1000.0, abs=1e-9)
    assert first.margin_balance == pytest.approx(1000.0, abs=1e-9)
    assert first.maintenance_margin == pytest.approx(200.0, abs=1e-9)
    assert first.initial_margin == pytest.approx(400.0, abs=1e-9)  # 4000 / 10
    assert first.margin_ratio == pytest.approx(0.2, abs=1e-12)
    assert first.liquidation_prices[0] == pytest.approx(3000 / 3800, abs=1e-12)
    assert first.min_distance == pytest.approx(1 - 3000 / 3800, abs=1e-12)
    # mark 0.82: MB 280, MM 164, IM 328, available -48, distance (0.82 - 0.789474) / 0.82 = 0.037227
    assert warn.wallet_balance == pytest.approx(1000.0, abs=1e-9)
    assert warn.margin_balance == pytest.approx(280.0, abs=1e-9)
    assert warn.maintenance_margin == pytest.approx(164.0, abs=1e-9)
    assert warn.initial_margin == pytest.approx(328.0, abs=1e-9)
    assert warn.available == pytest.approx(-48.0, abs=1e-9)
    assert warn.margin_ratio == pytest.approx(164 / 280, abs=1e-12)
    assert warn.distances[0] == pytest.approx((0.82 - 3000 / 3800) / 0.82, abs=1e-12)
    assert warn.instruments == (C,) and warn.positions == 1
    # the same figures from the margin core
    vm = venue_margin("v", 1000.0, [MarginPosition(C, "v", 4000.0, 1.0, 0.82, 10.0)], {},
                      [Tier(math.inf, 10.0, 0.05)])
    assert warn.margin_ratio == pytest.approx(vm.margin_ratio, rel=1e-12)
    assert warn.distances[0] == pytest.approx(vm.positions[0].distance_to_liquidation, rel=1e-12)
    # the equity values the position at the close (0.825), not the mark: -3000 + 4000 x 0.825 = 300
    [eq] = [o for o in out if isinstance(o, Equity) and o.ts_event == 240]
    assert eq.equity == pytest.approx(300.0, abs=1e-9)


def test_a_falling_mark_gives_one_warn_then_one_critical_alert() -> None:
    out = levered(account())
    alerts = [o for o in out if isinstance(o, Alert)]
    assert [(a.kind, a.ts_event, a.venue) for a in alerts] == [("margin_warn", 240, "v"), ("margin_critical", 360, "v")]
    assert "0.9875" in alerts[1].message
    assert not [o for o in out if isinstance(o, Order) and o.reason == REDUCE_REASON]  # action "alert"


def test_critical_under_reduce_sends_orders_closing_the_reduce_fraction() -> None:
    settings = replace(ALERT_ONLY, action="reduce")
    risk = RiskEngine(RiskSettings(account="main"), [C])
    acct = account(settings, risk)
    out = levered(acct)
    # at mark 0.79: MB 160, MM 158; close f so that 158 (1 - f) = 0.5 x 160  =>  f = 1 - 80 / 158
    f = 1 - 80 / 158
    [order] = [o for o in out if isinstance(o, Order) and o.reason == REDUCE_REASON]
    assert (order.ts_event, order.side, order.instrument) == (360, "sell", C)
    assert order.amount == pytest.approx(4000 * f, rel=1e-12)
    [fill] = [o for o in out if isinstance(o, Fill) and o.order_id == order.order_id]
    assert fill.price == pytest.approx(0.795, abs=1e-12)  # the decision bar's close
    [change] = [o for o in out if isinstance(o, TradingStateChange)]
    assert (change.state, change.source, change.ts_event) == ("REDUCING", "margin", 360)
    assert risk.state == "REDUCING"
    # the next bar at the same mark: 2025.3 XRP left, cash -3000 + 1974.7 x 0.795; ratio 80 / MB < critical - 0.05,
    # so the level falls back to warn and the margin source withdraws REDUCING
    nxt = acct.update(section(6, 0.79, 0.79))
    held = 4000 * (1 - f)
    mb = -3000 + 4000 * f * 0.795 + held * 0.79
    [snap] = [o for o in nxt if isinstance(o, MarginSnapshot)]
    assert snap.margin_ratio == pytest.approx(0.05 * held * 0.79 / mb, rel=1e-12)
    assert [(o.previous, o.state) for o in nxt if isinstance(o, TradingStateChange)] == [("REDUCING", "ACTIVE")]


def test_reduce_without_a_risk_engine_still_sends_the_orders() -> None:
    out = levered(account(replace(ALERT_ONLY, action="reduce")))
    [order] = [o for o in out if isinstance(o, Order) and o.reason == REDUCE_REASON]
    assert order.amount == pytest.approx(4000 * (1 - 80 / 158), rel=1e-12)


def test_flush_ends_with_a_snapshot_of_each_venue_holding_contracts() -> None:
    acct = account()
    run(acct, [section(0, 1.0, 1.0, weight=4.0), section(1, 0.95, 0.95)])
    [snap] = [o for o in acct.flush() if isinstance(o, MarginSnapshot)]
    # mark 0.95: 190 / 800
    assert (snap.ts_event, snap.margin_ratio) == (120, pytest.approx(190 / 800, abs=1e-12))


def test_spot_holdings_are_not_margined() -> None:
    acct = account()
    b = bar(S, 0, 100.0)
    out = acct.update(CrossSection(ts_event=60, bars=(b,), targets=(
        Target(instrument=S, ts_event=60, weight=0.5, status="ok", volatility=0.01),)))
    assert any(isinstance(o, Fill) for o in out)
    assert not [o for o in [*out, *acct.flush()] if isinstance(o, MarginSnapshot | Alert)]


def test_a_restored_account_continues_with_the_same_margin_state() -> None:
    settings = replace(ALERT_ONLY, action="reduce")
    secs = [section(i, m + (0.005 if i else 0.0), m, funding=((60 * i + 30, 0.0001),), weight=4.0 if i == 0 else None)
            for i, m in enumerate(MARKS)]
    straight = run(account(settings), secs)
    first = account(settings)
    head = run(first, secs[:4])  # after the warn alert
    snap = pickle.loads(pickle.dumps(first.snapshot()))
    assert snap.version == 4 and snap.margin is not None and snap.margin.levels == (("v", "warn"),)
    again = Account.restore("main", ["v"], FX, SIM, snap, initial_cash=1000.0, min_trade_weight=0.0,
                            fill_on="decision_close", margin=settings)
    assert head + run(again, secs[4:]) == straight
    assert again.margin is not None and first.margin is not None
    assert again.margin.funding_total() == pytest.approx(run_total(straight), abs=1e-12)


def run_total(out: list[object]) -> float:
    """Funding paid in `out`: the drift of cash between fills (no fees, so only funding and trades move it)."""
    cash = [o.cash for o in out if isinstance(o, Equity)]
    fills = {o.ts_event: o for o in out if isinstance(o, Fill)}
    total = 0.0
    for i in range(1, len(cash)):
        ts = 60 * (i + 1)
        trade = fills.get(ts)
        traded = 0.0 if trade is None else (trade.price * trade.amount * (1 if trade.side == "sell" else -1))
        total += cash[i] - cash[i - 1] - traded
    return total
