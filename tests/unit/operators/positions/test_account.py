from __future__ import annotations

import math
import pickle

from hypothesis import given
from hypothesis import strategies as st

from headrace.events import CrossSection, Equity, Fill, Order, Position, Target
from helpers import bar
from operators.execution.sim_venue import SimulatedVenue, VenueCosts
from operators.positions.account import Account, Holding
from operators.positions.fx import FxTable

A, B = "v:A/Q", "v:B/Q"
SIM = SimulatedVenue({"v": VenueCosts(taker_fee_bps=10.0, half_spread_bps=5.0)})
FX = FxTable.resolve("Q", [A, B], {})


def account(latency: int = 1) -> Account:
    return Account("main", ["v"], FX, SIM, initial_cash=1000.0, latency_bars=latency, min_trade_weight=0.0)


def sections(prices: list[tuple[float, float]], weights: dict[int, tuple[float, float]]) -> list[CrossSection]:
    out = []
    for i, (pa, pb) in enumerate(prices):
        ts = 60 * i
        bars = (bar(A, ts, pa, open_=pa * 0.999), bar(B, ts, pb, open_=pb * 1.001))
        targets = ()
        if i in weights:
            wa, wb = weights[i]
            targets = (Target(instrument=A, ts_event=ts + 60, weight=wa, status="ok", volatility=0.01),
                       Target(instrument=B, ts_event=ts + 60, weight=wb, status="ok", volatility=0.01))
        out.append(CrossSection(ts_event=ts + 60, bars=bars, targets=targets))
    return out


prices_st = st.lists(st.tuples(st.floats(50, 150), st.floats(5, 15)), min_size=3, max_size=40)
weights_st = st.dictionaries(st.integers(0, 39), st.tuples(st.floats(-0.6, 0.6), st.floats(-0.6, 0.6)), max_size=10)


@given(prices=prices_st, weights=weights_st, latency=st.integers(0, 2))
def test_equity_is_initial_cash_plus_pnl_minus_fees(prices, weights, latency) -> None:
    acct = account(latency)
    outs = [o for cs in sections(prices, weights) for o in acct.update(cs)]
    last = [o for o in outs if isinstance(o, Equity)][-1]
    positions = {p.instrument: p for p in acct.flush()}
    pnl = sum(p.realized_pnl + p.unrealized_pnl - p.fees for p in positions.values())
    assert math.isclose(last.equity, 1000.0 + pnl, rel_tol=1e-9, abs_tol=1e-7)
    fills = [o for o in outs if isinstance(o, Fill)]
    assert math.isclose(last.fees, sum(f.fee for f in fills), rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(last.traded, sum(f.notional for f in fills), rel_tol=1e-9, abs_tol=1e-9)


@given(fills=st.lists(st.tuples(st.sampled_from(["buy", "sell"]), st.floats(0.1, 5.0), st.floats(1.0, 100.0)),
                      min_size=1, max_size=30), mark=st.floats(1.0, 100.0))
def test_average_cost_pnl_equals_cash_flows_plus_position_value(fills, mark) -> None:
    h = Holding()
    cash = 0.0
    for i, (side, amount, price) in enumerate(fills):
        f = Fill(fill_id=str(i), order_id=str(i), account="a", instrument=A, ts_event=i, side=side, price=price,
                 amount=amount, fee=0.0, fee_currency="Q", liquidity="taker", slippage_bps=0.0)
        h = h.apply(f)
        cash += -price * amount if side == "buy" else price * amount
    total = h.realized + h.amount * (mark - h.avg_price)
    assert math.isclose(total, cash + h.amount * mark, rel_tol=1e-9, abs_tol=1e-6)


def test_latency_one_fills_at_the_next_bar_open_with_half_spread_and_fee() -> None:
    acct = account(latency=1)
    cs = sections([(100.0, 10.0), (110.0, 11.0)], {0: (0.5, 0.0)})
    first = acct.update(cs[0])
    [order] = [o for o in first if isinstance(o, Order)]
    assert order.side == "buy" and math.isclose(order.amount, 0.5 * 1000.0 / 100.0)
    second = acct.update(cs[1])
    [fill] = [o for o in second if isinstance(o, Fill)]
    assert fill.order_id == order.order_id and fill.ts_event == 60
    assert math.isclose(fill.price, 110.0 * 0.999 * 1.0005)
    assert math.isclose(fill.fee, fill.price * fill.amount * 0.001)
    [pos] = [o for o in second if isinstance(o, Position)]
    assert pos.instrument == A and math.isclose(pos.amount, order.amount)


def test_account_restore_midway_is_invisible() -> None:
    cs = sections([(100 + i, 10 + (i % 3)) for i in range(30)], {2: (0.3, 0.2), 9: (-0.2, 0.4), 20: (0.0, 0.0)})
    straight = account()
    expected = [o for c in cs for o in straight.update(c)] + straight.flush()
    first = account()
    got = [o for c in cs[:12] for o in first.update(c)]
    second = Account.restore("main", ["v"], FX, SIM, 1000.0, 1, 0.0, pickle.loads(pickle.dumps(first.snapshot())))
    got += [o for c in cs[12:] for o in second.update(c)] + second.flush()
    assert got == expected
