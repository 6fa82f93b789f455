"""The account with the router: asset targets become IOC children across venues, within balances and each
market's rules; fills never precede their child; cash and positions add up; a restored core continues exactly."""

from __future__ import annotations

import math
import pickle
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.errors import ConfigError
from headrace.events import (
    Alert,
    Balance,
    Bar,
    CrossSection,
    Equity,
    Fill,
    Order,
    OrderStatus,
    Position,
    ReconciliationRecord,
    RoutingDecision,
    Target,
)
from operators.execution.markets import Rounded, check_order, market_example
from operators.positions.fx import FxTable
from operators.positions.routed_account import Execution, Reconciled, RoutedAccount
from operators.router.listings import Listing

A_USD, A_USDC, B_USD = "a:BTC/USD", "a:BTC/USDC", "b:BTC/USD"
UNIVERSE = [A_USD, A_USDC, B_USD]


def market(instrument: str, **kw: object):  # type: ignore[no-untyped-def]
    venue, symbol = instrument.split(":")
    return market_example(instrument=instrument, venue=venue, symbol=symbol, quote=symbol.split("/")[1],
                          amount_precision=Decimal("0.0001"), min_amount=Decimal("0.0001"), min_cost=Decimal("1"),
                          **kw)


def listings(with_market: bool = True) -> dict[str, tuple[Listing, ...]]:
    fee = {"a": 0.001, "b": 0.002}
    return {"BTC": tuple(Listing(i, i[0], "BTC", i.split("/")[1], market(i) if with_market else None, fee[i[0]],
                                 0.0005) for i in UNIVERSE)}


FX = FxTable.resolve("USD", UNIVERSE, fixed={"USDC": 1.0})
CASH = {("a", "USD"): 1000.0, ("a", "USDC"): 1000.0, ("b", "USD"): 1000.0}


def account(latency: int = 0, fill_on: str = "next_open", share: float = 0.5, with_market: bool = True,
            balances: dict | None = None) -> RoutedAccount:
    return RoutedAccount("main", listings(with_market), FX, balances=balances or CASH, min_trade_weight=0.0,
                         latency_ns=latency, fill_on=fill_on, band_bps=100.0, max_volume_share=share,  # type: ignore[arg-type]
                         quote_max_age_ns=600)


def bar(instrument: str, ts: int, close: float, open_: float | None = None, volume: float = 10.0) -> Bar:
    o = close if open_ is None else open_
    return Bar(instrument=instrument, ts_open=ts - 60, ts_event=ts, open=o, high=max(o, close), low=min(o, close),
               close=close, volume=volume, trades=1)


def sections(steps: list[tuple[float, float, float, float | None]]) -> list[CrossSection]:
    """Each step: the three closes (a USD, a USDC, b USD) and an optional BTC target weight."""
    out = []
    for n, (pa, pc, pb, w) in enumerate(steps):
        ts = 60 * (n + 1)
        bars = (bar(A_USD, ts, pa, open_=pa * 1.0005), bar(A_USDC, ts, pc, open_=pc * 0.9995),
                bar(B_USD, ts, pb, open_=pb))
        targets = () if w is None else (Target(instrument="BTC", ts_event=ts, weight=w, status="ok",
                                               volatility=0.01),)
        out.append(CrossSection(ts_event=ts, bars=bars, targets=targets))
    return out


def run(acct: RoutedAccount, css: list[CrossSection]) -> list:
    return [o for cs in css for o in acct.update(cs)] + acct.flush()


px = st.floats(95.0, 105.0)
steps_st = st.lists(st.tuples(px, px, px, st.one_of(st.none(), st.floats(0.0, 1.0))), min_size=2, max_size=25)


@settings(max_examples=80, deadline=None)
@given(steps=steps_st, fill_on=st.sampled_from(["next_open", "decision_close"]))
def test_cash_never_goes_negative_and_equity_is_cash_plus_positions(steps, fill_on) -> None:
    acct = account(fill_on=fill_on)
    out = run(acct, sections(steps))
    balances = [b for b in out if isinstance(b, Balance)]
    assert all(b.amount >= -1e-9 for b in balances), "a child spent more than its venue held"
    fills = [f for f in out if isinstance(f, Fill)]
    spent = {}
    for f in fills:
        key = (f.instrument.split(":")[0], f.fee_currency)
        spent[key] = spent.get(key, 0.0) + (f.notional if f.side == "buy" else -f.notional) + f.fee
    final = {(b.venue, b.currency): b.amount for b in balances if b.ts_event == acct._last_ts}
    for key, start in CASH.items():
        assert math.isclose(final[key], start - spent.get(key, 0.0), rel_tol=1e-9, abs_tol=1e-7)
    final_positions = {p.instrument: p for p in out if isinstance(p, Position) and p.ts_event == acct._last_ts}
    held = sum(p.amount for p in final_positions.values())
    assert math.isclose(held, sum(f.amount if f.side == "buy" else -f.amount for f in fills), abs_tol=1e-9)
    last = [e for e in out if isinstance(e, Equity)][-1]
    positions = {p.instrument: p for p in out if isinstance(p, Position) and p.ts_event == acct._last_ts}
    cash = sum(v * FX.rate(c, acct._marks, acct._mark_ts, venue=v_) for (v_, c), v in acct._cash.items())  # type: ignore[operator]
    assert math.isclose(last.equity, cash + sum(p.value_account for p in positions.values()), rel_tol=1e-9)


@settings(max_examples=80, deadline=None)
@given(steps=steps_st, latency=st.sampled_from([0, 30, 60, 90]))
def test_children_are_on_their_market_grid_and_fill_after_their_time_within_share_and_limit(steps, latency) -> None:
    share = 0.05
    out = run(account(latency=latency, share=share), sections(steps))
    orders = {o.order_id: o for o in out if isinstance(o, Order)}
    markets = {li.instrument: li.market for li in listings()["BTC"]}
    bars = {(b.instrument, b.ts_open): b for cs in sections(steps) for b in cs.bars}
    for o in orders.values():
        assert o.parent_id and o.limit_price is not None
        checked = check_order(markets[o.instrument], o.side, o.amount, o.limit_price)
        assert isinstance(checked, Rounded) and float(checked.amount) == o.amount
        assert float(checked.price) == o.limit_price
    for f in (f for f in out if isinstance(f, Fill)):
        o = orders[f.order_id]
        assert f.ts_event >= o.ts_event + latency
        b = bars[(f.instrument, f.ts_event)]
        assert f.amount <= share * b.volume + 1e-12
        assert f.price <= o.limit_price if f.side == "buy" else f.price >= o.limit_price
    filled = {f.order_id: f.amount for f in out if isinstance(f, Fill)}
    ended = {s.order_id for s in out if isinstance(s, OrderStatus)}
    for oid, o in orders.items():  # every child ends filled, cancelled (IOC rest) or expired: none is lost
        assert oid in ended or math.isclose(filled.get(oid, 0.0), o.amount)


def test_a_parent_is_split_across_venues_by_price_net_of_fees_and_every_candidate_is_recorded() -> None:
    acct = account(share=0.5)
    cs = sections([(100.0, 100.0, 100.0, None), (100.0, 100.0, 100.0, 0.9)])
    out = run(acct, cs)
    routing = [r for r in out if isinstance(r, RoutingDecision)]
    assert sorted(r.instrument for r in routing) == UNIVERSE
    chosen = {r.instrument: r.chosen_amount for r in routing if r.chosen_amount > 0}
    # a's fee (10 bps) beats b's (20 bps): a's listings fill first, each up to its depth (half of 10 BTC)...
    assert set(chosen) >= {A_USD, A_USDC}
    children = [o for o in out if isinstance(o, Order)]
    assert {o.parent_id for o in children} == {routing[0].parent_id}
    assert all(r.child_id in {o.order_id for o in children} for r in routing if r.chosen_amount > 0)


def test_without_market_metadata_the_parent_is_denied_with_every_reason() -> None:
    out = run(account(with_market=False), sections([(100.0, 100.0, 100.0, None), (100.0, 100.0, 100.0, 0.5)]))
    denied = [s for s in out if isinstance(s, OrderStatus)]
    assert [s.status for s in denied] == ["denied"]
    assert denied[0].reason.count("no market metadata") == 3
    assert not [o for o in out if isinstance(o, (Order, Fill))]


def test_an_ioc_child_beyond_its_limit_is_cancelled_unfilled() -> None:
    # the next bar opens 5 % above the decision close: far beyond the 100 bps band
    css = sections([(100.0, 100.0, 100.0, None), (100.0, 100.0, 100.0, 0.5)])
    css.append(CrossSection(ts_event=180, bars=tuple(bar(i, 180, 105.0, open_=105.0) for i in UNIVERSE)))
    out = run(account(), css)
    assert not [f for f in out if isinstance(f, Fill)]
    cancelled = [s for s in out if isinstance(s, OrderStatus)]
    assert cancelled and all(s.status == "cancelled" and "beyond the limit" in s.reason for s in cancelled)


def test_usdc_cash_is_valued_at_the_rate_the_market_implies() -> None:
    acct = account()
    out = run(acct, sections([(90.0, 100.0, 90.0, None)]))  # BTC 90 USD = 100 USDC on a: 1 USDC = 0.9 USD
    usdc = [b for b in out if isinstance(b, Balance) and b.currency == "USDC"][-1]
    assert usdc.rate == pytest.approx(0.9) and usdc.value_account == pytest.approx(900.0)
    assert next(e for e in out if isinstance(e, Equity)).equity == pytest.approx(2900.0)


@settings(max_examples=40, deadline=None)
@given(steps=steps_st, cut=st.integers(0, 24), latency=st.sampled_from([0, 90]))
def test_a_restored_core_continues_exactly(steps, cut, latency) -> None:
    css = sections(steps)
    cut = min(cut, len(css))
    straight = run(account(latency=latency), css)
    first = account(latency=latency)
    before = [o for cs in css[:cut] for o in first.update(cs)]
    resumed = account(latency=latency).restore_state(pickle.loads(pickle.dumps(first.snapshot())))
    assert before + run(resumed, css[cut:]) == straight


def test_the_router_needs_starting_balances() -> None:
    with pytest.raises(ConfigError, match=r"account\.balances"):
        RoutedAccount("main", listings(), FX, balances={}, min_trade_weight=0.0)


class StandInExecutor:
    """A stand-in for the live venues (they cannot be reached here): records every order it is sent, fills
    half of each, and reports venue b's USD balance 10 lower than the account thinks."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, float, float | None, int]] = []
        self.checks: list[dict] = []

    def submit(self, order: Order, ts: int) -> Execution:
        self.sent.append((order.instrument, order.side, order.amount, order.limit_price, ts))
        return Execution(fills=((f"v{len(self.sent)}", order.limit_price or 0.0, order.amount / 2, 0.01),),
                         status="cancelled", reason="IOC rest")

    def reconcile(self, ts: int, cash) -> Reconciled:  # type: ignore[no-untyped-def]
        self.checks.append(dict(cash))
        venue_b = cash[("b", "USD")] - 10.0
        rec = ReconciliationRecord(account="main", venue="b", ts_event=ts, kind="balance", key="USD",
                                   local=str(cash[("b", "USD")]), venue_value=str(venue_b), difference="-10",
                                   within_tolerance=False, action="stop")
        return Reconciled(records=(rec,), balances=(("b", "USD", venue_b),), stopped=frozenset({"b"}))

    def alerts(self, ts: int) -> list:
        return []


def test_with_a_stand_in_executor_children_are_sent_at_once_and_reconciliation_stops_a_venue() -> None:
    ex = StandInExecutor()
    acct = RoutedAccount("main", listings(), FX, balances=CASH, min_trade_weight=0.0, band_bps=100.0,
                         max_volume_share=0.5, executor=ex, reconcile_every_ns=10**12)
    out = run(acct, sections([(100.0, 100.0, 99.0, None), (100.0, 100.0, 99.0, 0.9)]))
    # reconciled once (the first cross-section), the venue's balance adopted, b stopped with an alert
    assert len(ex.checks) == 1 and acct._cash[("b", "USD")] == 990.0
    assert [(r.venue, r.kind, r.key) for r in out if isinstance(r, ReconciliationRecord)] == [("b", "balance", "USD")]
    assert [(a.venue, a.kind) for a in out if isinstance(a, Alert)] == [("b", "venue_stopped")]
    # b is the cheapest venue, but stopped: the children go to a only, sent when decided (t = 120)
    orders = [o for o in out if isinstance(o, Order)]
    assert [(i, s, a, lim, t) for i, s, a, lim, t in ex.sent] == [
        (o.instrument, o.side, o.amount, o.limit_price, 120) for o in orders]
    assert {o.instrument for o in orders} <= {A_USD, A_USDC} and orders
    fills = [f for f in out if isinstance(f, Fill)]
    assert [f.amount for f in fills] == [o.amount / 2 for o in orders]
    assert all(s.status == "cancelled" and "IOC rest" in s.reason for s in out if isinstance(s, OrderStatus))


def test_with_order_books_a_child_takes_the_levels_known_at_its_open_and_stops_where_depth_ends() -> None:
    asks = ((100.0, 1.0), (100.5, 2.0), (101.0, 3.0))
    bids = ((99.5, 1.0),)

    def book_bar(ts: int, close: float, book_asks: tuple = asks) -> Bar:
        return Bar(instrument=A_USD, ts_open=ts - 60, ts_event=ts, open=close, high=close, low=close, close=close,
                   volume=1000.0, trades=1, bid=bids[0][0], ask=book_asks[0][0], bid_size=1.0,
                   ask_size=book_asks[0][1], bids=bids, asks=book_asks)

    one = {"BTC": (Listing(A_USD, "a", "BTC", "USD", market(A_USD), 0.001, 0.0005),)}
    acct = RoutedAccount("main", one, FxTable.resolve("USD", [A_USD], {}), balances={("a", "USD"): 1000.0},
                         min_trade_weight=0.0, band_bps=100.0, max_volume_share=0.5)
    out = acct.update(CrossSection(ts_event=60, bars=(book_bar(60, 100.0),)))
    # decide at 120 (the book still shows 6 BTC up to 101): ~9 BTC of 1000 USD wanted, 6 routed
    out += acct.update(CrossSection(ts_event=120, bars=(book_bar(120, 100.0),), targets=(
        Target(instrument="BTC", ts_event=120, weight=0.9, status="ok", volatility=0.01),)))
    [r] = [x for x in out if isinstance(x, RoutingDecision)]
    assert r.depth_source == "book" and r.depth_amount == pytest.approx(6.0)
    [child] = [x for x in out if isinstance(x, Order)]
    # bar 180 closes on a thinner book (1 + 2 BTC), but that is its close; at its open (120) the book known is
    # the one after bar 120: the child takes all 6 BTC there, not the 3 a look-ahead would give
    out += acct.update(CrossSection(ts_event=180, bars=(book_bar(180, 100.0, ((100.0, 1.0), (100.5, 2.0))),)))
    out += acct.update(CrossSection(ts_event=240, bars=(book_bar(240, 100.0),)))
    [fill] = [x for x in out if isinstance(x, Fill)]
    assert child.amount == pytest.approx(6.0)
    assert fill.ts_event == 120 and fill.amount == pytest.approx(6.0)
    # volume-weighted over the levels taken, within the limit
    taken, left = [], fill.amount
    for p, a in asks:
        take = min(a, left)
        taken.append((p, take))
        left -= take
    assert fill.price == pytest.approx(sum(p * a for p, a in taken) / fill.amount)
    assert fill.price <= child.limit_price
