from __future__ import annotations

import math
import pickle
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headrace.errors import ConfigError
from headrace.events import CrossSection, Equity, Fill, InstrumentStatus, Order, OrderStatus, Position, Target
from helpers import bar
from operators.execution.sim_venue import SimulatedVenue, VenueCosts
from operators.positions.account import Account, FillOn, Holding
from operators.positions.fx import FxTable

A, B = "v:A/Q", "v:B/Q"
SIM = SimulatedVenue({"v": VenueCosts(taker_fee_bps=10.0, half_spread_bps=5.0)})
FX = FxTable.resolve("Q", [A, B], {})


def account(latency_ns: int = 0, fill_on: FillOn = "next_open") -> Account:
    return Account("main", ["v"], FX, SIM, initial_cash=1000.0, min_trade_weight=0.0, latency_ns=latency_ns,
                   fill_on=fill_on)


LATENCIES: dict[str, tuple[int, FillOn]] = {"close": (0, "decision_close"), "open": (0, "next_open"),
                                            "open+60": (60, "next_open"), "open+90": (90, "next_open")}


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


@given(prices=prices_st, weights=weights_st, latency=st.sampled_from(sorted(LATENCIES)))
def test_equity_is_initial_cash_plus_pnl_minus_fees(prices, weights, latency) -> None:
    acct = account(*LATENCIES[latency])
    outs = [o for cs in sections(prices, weights) for o in acct.update(cs)]
    last = [o for o in outs if isinstance(o, Equity)][-1]
    positions = {p.instrument: p for p in acct.flush() if isinstance(p, Position)}
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


def test_latency_zero_fills_at_the_next_bar_open_with_half_spread_and_fee() -> None:
    acct = account()
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
    second = Account.restore("main", ["v"], FX, SIM, pickle.loads(pickle.dumps(first.snapshot())), initial_cash=1000.0,
                             min_trade_weight=0.0)
    got += [o for c in cs[12:] for o in second.update(c)] + second.flush()
    assert got == expected


# -- latency in time, on mixed clocks -------------------------------------------------------------

FAST, SLOW = A, B  # A on 1-minute bars, B on 5-minute bars


def mixed_clock(minutes: int, targets_at: dict[int, tuple[float, float]], *, quoted: bool = False,
                slow_until: int | None = None) -> list[CrossSection]:
    """Cross sections at every minute: a 1-minute bar of A, and a 5-minute bar of B on every 5th minute
    (none after minute `slow_until`). Targets for A and B at the minutes in `targets_at`."""
    out = []
    for m in range(1, minutes + 1):
        ts = 60 * m
        px = 100.0 + (m % 7)
        quote = {"bid": px * 0.999, "ask": px * 1.001} if quoted else {}
        bars = [bar(FAST, ts - 60, px, open_=px - 0.5, **quote)]
        if m % 5 == 0 and (slow_until is None or m <= slow_until):
            bars.append(bar(SLOW, ts - 300, 10.0 + (m % 3), tf=300, open_=9.0 + (m % 4)))
        targets = ()
        if m in targets_at:
            wa, wb = targets_at[m]
            targets = (Target(instrument=FAST, ts_event=ts, weight=wa, status="ok", volatility=0.01),
                       Target(instrument=SLOW, ts_event=ts, weight=wb, status="ok", volatility=0.01))
        out.append(CrossSection(ts_event=ts, bars=tuple(sorted(bars, key=lambda b: b.instrument)), targets=targets))
    return out


def run(acct: Account, sections_: list[CrossSection]) -> list[object]:
    return [o for cs in sections_ for o in acct.update(cs)] + acct.flush()


def test_an_order_fills_at_the_first_bar_of_its_instrument_that_opens_after_the_decision() -> None:
    # decided at minute 8 (after B's 5-minute bar [5, 10) opened): B fills at the open of [10, 15), never at 5
    outs = run(account(), mixed_clock(20, {5: (0.0, 0.0), 8: (0.3, 0.3)}))
    orders = {o.instrument: o for o in outs if isinstance(o, Order)}
    fills = {f.instrument: f for f in outs if isinstance(f, Fill)}
    assert orders[SLOW].ts_event == 480
    assert fills[SLOW].ts_event == 600 and math.isclose(fills[SLOW].price, (9.0 + 15 % 4) * 1.0005)
    assert fills[FAST].ts_event == 480 and math.isclose(fills[FAST].price, (100.0 + 9 % 7 - 0.5) * 1.0005)


def test_latency_is_a_time_the_same_for_every_clock() -> None:
    outs = run(account(latency_ns=90), mixed_clock(20, {8: (0.3, 0.3)}))
    fills = {f.instrument: f.ts_event for f in outs if isinstance(f, Fill)}
    assert fills == {FAST: 600, SLOW: 600}  # 480 + 90 = 570: A's bar opening at 600, B's at 600


@given(latency=st.integers(0, 700), decisions=st.lists(st.integers(1, 40), min_size=1, max_size=8, unique=True),
       slow_tf=st.sampled_from([120, 300, 600]))
def test_no_fill_uses_a_bar_that_opened_before_its_order_plus_latency(latency, decisions, slow_tf) -> None:
    sections_ = []
    for m in range(1, 45):
        ts = 60 * m
        bars = [bar(FAST, ts - 60, 100.0 + m % 5)]
        if ts % slow_tf == 0:
            bars.append(bar(SLOW, ts - slow_tf, 10.0 + m % 3, tf=slow_tf))
        targets = ()
        if m in decisions:
            w = 0.1 + 0.05 * (m % 4)
            targets = (Target(instrument=FAST, ts_event=ts, weight=w, status="ok", volatility=0.01),
                       Target(instrument=SLOW, ts_event=ts, weight=-w, status="ok", volatility=0.01))
        sections_.append(CrossSection(ts_event=ts, bars=tuple(bars), targets=targets))
    outs = run(account(latency_ns=latency), sections_)
    orders = {o.order_id: o for o in outs if isinstance(o, Order)}
    fills = [f for f in outs if isinstance(f, Fill)]
    ended = {s.order_id for s in outs if isinstance(s, OrderStatus)}
    opens = {(b.instrument, b.ts_open) for cs in sections_ for b in cs.bars}
    for f in fills:
        due = orders[f.order_id].ts_event + latency
        assert f.ts_event >= due
        # and it is the first bar of its instrument that opened at or after that time
        assert f.ts_event == min(t for i, t in opens if i == f.instrument and t >= due)
    assert {f.order_id for f in fills} | ended == set(orders) and not {f.order_id for f in fills} & ended


# -- orders that cannot fill ----------------------------------------------------------------------

def test_decision_close_skips_an_order_whose_instrument_has_no_bar_at_the_decision() -> None:
    # minute 8: B (5-minute bars) has no bar closing then; it was a KeyError before
    outs = run(account(fill_on="decision_close"), mixed_clock(20, {8: (0.3, 0.3)}))
    [skipped] = [s for s in outs if isinstance(s, OrderStatus)]
    assert (skipped.instrument, skipped.status, skipped.ts_event) == (SLOW, "skipped", 480)
    assert skipped.reason == "no bar closes at the decision time"
    [fill] = [f for f in outs if isinstance(f, Fill)]
    assert (fill.instrument, fill.ts_event) == (FAST, 480)  # A fills at the decision bar's close
    assert math.isclose(fill.price, (100.0 + 8 % 7) * 1.0005)


def test_decision_close_with_a_latency_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        account(latency_ns=60, fill_on="decision_close")
    assert info.value.key == "account.fill_on"


def test_orders_still_working_at_the_end_of_the_data_expire() -> None:
    # decided on the last bar: nothing can fill them
    outs = run(account(), mixed_clock(10, {10: (0.3, 0.3)}))
    orders = [o for o in outs if isinstance(o, Order)]
    statuses = [s for s in outs if isinstance(s, OrderStatus)]
    assert len(orders) == 2 and not any(isinstance(o, Fill) for o in outs)
    assert [(s.order_id, s.status, s.reason, s.ts_event) for s in statuses] == [
        (o.order_id, "expired", "end of data", 600) for o in orders]


def test_working_orders_of_an_instrument_gone_stale_expire_and_its_position_keeps_its_last_mark() -> None:
    sections_ = mixed_clock(40, {8: (0.3, 0.3), 22: (0.2, 0.5)}, slow_until=20)
    # the cross-section says B is stale at minute 26 (its last bar closed at 20)
    stale = InstrumentStatus(instrument=SLOW, ts_event=1560, status="stale", last_bar_ts=1200)
    sections_[25] = replace(sections_[25], statuses=(stale,))
    outs = run(account(), sections_)
    [expired] = [s for s in outs if isinstance(s, OrderStatus)]
    order_22 = [o for o in outs if isinstance(o, Order) and o.instrument == SLOW and o.ts_event == 1320]
    assert [expired.order_id] == [o.order_id for o in order_22]
    assert (expired.status, expired.reason, expired.ts_event) == ("expired", "instrument stale", 1560)
    marked = [p for p in outs if isinstance(p, Position) and p.instrument == SLOW and p.ts_event >= 1560]
    assert marked and all(p.stale and p.mark_ts == 1200 and p.mark == 10.0 + 20 % 3 for p in marked)
    before = [p for p in outs if isinstance(p, Position) and p.instrument == SLOW and p.ts_event < 1560]
    assert before and not any(p.stale for p in before)


# -- the spread known at the fill's time ------------------------------------------------------------

def test_a_fill_at_a_bars_open_pays_the_spread_quoted_at_that_open_not_the_bars_closing_one() -> None:
    acct = account()
    first = bar(A, 0, 100.0, bid=99.99, ask=100.01)  # 1 bp half spread, known at 60
    second = bar(A, 60, 110.0, open_=101.0, bid=109.0, ask=111.0)  # ~91 bp, only known at 120
    target = (Target(instrument=A, ts_event=60, weight=0.5, status="ok", volatility=0.01),)
    acct.update(CrossSection(ts_event=60, bars=(first,), targets=target))
    [fill] = [f for f in acct.update(CrossSection(ts_event=120, bars=(second,))) if isinstance(f, Fill)]
    assert fill.ts_event == 60
    assert math.isclose(fill.price, 101.0 * (1 + 0.02 / 200.0)) and math.isclose(fill.slippage_bps, 1.0)


def test_a_fill_at_the_decision_close_pays_the_bars_closing_spread() -> None:
    acct = account(fill_on="decision_close")
    first = bar(A, 0, 100.0, bid=99.0, ask=101.0)
    second = bar(A, 60, 110.0, open_=101.0, bid=109.989, ask=110.011)
    acct.update(CrossSection(ts_event=60, bars=(first,)))
    target = (Target(instrument=A, ts_event=120, weight=0.5, status="ok", volatility=0.01),)
    [fill] = [f for f in acct.update(CrossSection(ts_event=120, bars=(second,), targets=target))
              if isinstance(f, Fill)]
    assert fill.ts_event == 120 and math.isclose(fill.price, 110.011)


def test_the_quote_known_at_the_open_survives_a_restore() -> None:
    cs = mixed_clock(30, {4: (0.3, 0.3), 12: (0.1, 0.5), 21: (0.4, 0.0)}, quoted=True)
    straight = account(latency_ns=90)
    expected = run(straight, cs)
    first = account(latency_ns=90)
    got = [o for c in cs[:13] for o in first.update(c)]  # an order is working at the cut
    snap = pickle.loads(pickle.dumps(first.snapshot()))
    assert snap.working and snap.quotes
    second = Account.restore("main", ["v"], FX, SIM, snap, initial_cash=1000.0, min_trade_weight=0.0, latency_ns=90)
    assert got + run(second, cs[13:]) == expected
