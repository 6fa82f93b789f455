"""Reconciliation of the local view with the venue's: on ccxt's recorded binance answers, and as properties."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import SHARED_DATA
from operators.execution.reconcile import (
    Fill,
    OpenOrder,
    Tolerance,
    VenueState,
    from_ccxt,
    reconcile,
    reconcile_venue,
)

STATIC = SHARED_DATA / "ccxt-static" / "response" / "binance.json"
TOL = Tolerance(absolute=Decimal("0.0001"), relative=Decimal("0.001"))


@cache
def recorded() -> VenueState:
    """binance's state from ccxt's own recorded fetchBalance, fetchOpenOrders and fetchMyTrades answers."""
    if not STATIC.exists():
        pytest.skip(f"ccxt's recorded binance responses not found at {STATIC}")
    methods: dict[str, list[dict[str, Any]]] = json.loads(STATIC.read_text())["methods"]
    return from_ccxt("binance", methods["fetchBalance"][0]["parsedResponse"],
                     methods["fetchOpenOrders"][0]["parsedResponse"], methods["fetchMyTrades"][0]["parsedResponse"])


def test_the_recorded_binance_answers_parse_into_a_state() -> None:
    s = recorded()
    assert s.balances == {"BTC": Decimal("0"), "ETH": Decimal("0.02229833"), "LTC": Decimal("0.919741")}
    assert [(o.client_id, o.symbol, o.side, o.amount, o.filled, o.price) for o in s.open_orders] == [
        ("x-R4BD3S82102a551f8c1642bba06728", "LTC/USDT", "buy", Decimal("0.2"), Decimal("0"), Decimal("50"))]
    [f] = s.fills
    assert (f.fill_id, f.order_id, f.side, f.amount, f.price, f.fee, f.fee_currency, f.ts_event) == (
        "309520010", "3784695242", "sell", Decimal("0.2"), Decimal("69.63"), Decimal("0.013926"), "USDT",
        1698138992358 * 10**6)


def test_a_local_view_that_missed_an_order_and_a_fill_adopts_them_and_stops() -> None:
    venue = recorded()
    local = VenueState("binance", {**venue.balances, "LTC": Decimal("1.119741")}, (), ())  # never saw the sell
    r = reconcile_venue(local, venue, TOL)
    assert [(x.kind, x.key, x.difference, x.within_tolerance) for x in r.records] == [
        ("balance", "LTC", "-0.2", False),
        ("open_order", "x-R4BD3S82102a551f8c1642bba06728", "missing locally", False),
        ("fill", "309520010", "missing locally", False)]
    assert r.records[0].local == Decimal("1.119741") and r.records[0].venue_value == Decimal("0.919741")
    assert r.records[1].local is None and r.records[1].venue_value == venue.open_orders[0]
    assert r.decision.action == "stop" and len(r.decision.reasons) == 3
    assert r.decision.reasons[0] == "balance LTC: local 1.119741, venue 0.919741, difference -0.2"
    assert r.corrected == venue  # the venue is the truth


def test_a_balance_within_tolerance_is_recorded_but_trading_continues() -> None:
    venue = recorded()
    local = replace(venue, balances={**venue.balances, "ETH": Decimal("0.02229")})  # 8.33e-6 off
    r = reconcile_venue(local, venue, TOL)
    assert [(x.key, x.difference, x.within_tolerance) for x in r.records] == [("ETH", "+0.00000833", True)]
    assert r.decision.action == "continue" and r.decision.reasons == ()
    assert r.corrected.balances["ETH"] == Decimal("0.02229833")


def test_an_order_the_venue_no_longer_has_and_a_fill_it_does_not_know_are_dropped() -> None:
    venue = recorded()
    gone = OpenOrder("c-gone", "LTC/USDT", "sell", Decimal("1"), Decimal("0"), Decimal("90"))
    phantom = Fill("f-local", "o1", "LTC/USDT", "buy", Decimal("1"), Decimal("70"), Decimal("0"), "USDT",
                   venue.fills[0].ts_event + 1)
    local = replace(venue, open_orders=(*venue.open_orders, gone), fills=(*venue.fills, phantom))
    r = reconcile_venue(local, venue, TOL)
    assert [(x.kind, x.key, x.difference) for x in r.records] == [
        ("open_order", "c-gone", "missing on venue"), ("fill", "f-local", "missing on venue")]
    assert r.corrected.open_orders == venue.open_orders and r.corrected.fills == venue.fills


def test_a_partly_filled_order_differs_and_takes_the_venues_fill() -> None:
    venue = recorded()
    o = venue.open_orders[0]
    local = replace(venue, open_orders=(replace(o, filled=Decimal("0.1")),))
    r = reconcile_venue(local, venue, TOL)
    [rec] = r.records
    assert (rec.kind, rec.difference, rec.within_tolerance) == ("open_order", "differs", False)
    assert str(rec.local) == "buy 0.2 LTC/USDT @ 50 filled 0.1" and str(rec.venue_value) == str(o)
    assert r.corrected.open_orders == (o,)


def test_fills_before_the_window_are_not_compared_and_stay() -> None:
    venue = recorded()
    ts = venue.fills[0].ts_event
    old = Fill("f-old", "o0", "LTC/USDT", "buy", Decimal("1"), Decimal("60"), Decimal("0"), "USDT", ts - 10)
    local = replace(venue, fills=(old, *venue.fills))
    r = reconcile_venue(local, venue, TOL, fills_since_ns=ts)
    assert r.records == () and r.decision.action == "continue"
    assert r.corrected.fills == (old, *venue.fills)


def test_a_venue_that_did_not_answer_is_stopped_and_one_only_the_venue_knows_is_adopted() -> None:
    venue = recorded()
    local = {"kraken": VenueState("kraken", {"USD": Decimal("10")}, (), ())}
    out = reconcile(local, {"binance": venue}, TOL)
    assert [(r.venue, r.decision.action) for r in out] == [("binance", "stop"), ("kraken", "stop")]
    assert out[0].corrected == venue and out[1].corrected == local["kraken"]
    assert out[1].decision.reasons == ("no state from the venue: cannot reconcile",)


def test_duplicate_ids_and_mismatched_venues_are_refused() -> None:
    venue = recorded()
    with pytest.raises(ValueError, match="lists client_id 'x-R4BD3S82102a551f8c1642bba06728' twice"):
        reconcile_venue(replace(venue, open_orders=venue.open_orders * 2), venue, TOL)
    with pytest.raises(ValueError, match="'okx' with the venue state of 'binance'"):
        reconcile_venue(replace(venue, venue="okx"), venue, TOL)
    with pytest.raises(ValueError, match="tolerance relative must be a finite number >= 0, was -1"):
        Tolerance(relative=Decimal(-1))


# ---------------------------------------------------------------------------------------------------
# properties

amounts = st.decimals(min_value=0, max_value=10**6, places=6, allow_nan=False, allow_infinity=False)
ids = st.text("abcdef0123456789", min_size=1, max_size=6)
sides = st.sampled_from(["buy", "sell"])
orders = st.builds(OpenOrder, ids, st.sampled_from(["BTC/USDT", "ETH/USDC"]), sides, amounts, amounts,
                   st.none() | amounts)
fills = st.builds(Fill, ids, ids, st.sampled_from(["BTC/USDT"]), sides, amounts, amounts, amounts,
                  st.sampled_from(["USDT", "BNB"]), st.integers(0, 10**18))
states = st.builds(
    VenueState, st.just("binance"), st.dictionaries(st.sampled_from(["BTC", "USDT", "USDC", "ETH"]), amounts),
    st.lists(orders, unique_by=lambda o: o.client_id).map(tuple),
    st.lists(fills, unique_by=lambda f: f.fill_id).map(tuple))


def canonical(s: VenueState) -> VenueState:
    return VenueState(s.venue, s.balances, tuple(sorted(s.open_orders, key=lambda o: o.client_id)),
                      tuple(sorted(s.fills, key=lambda f: (f.ts_event, f.fill_id))))


@settings(max_examples=200, deadline=None)
@given(states)
def test_a_state_reconciled_with_itself_has_no_differences(s: VenueState) -> None:
    r = reconcile_venue(s, s, Tolerance())
    assert r.records == () and r.decision.action == "continue"
    assert r.corrected == canonical(s)


@settings(max_examples=200, deadline=None)
@given(states, st.sampled_from(["BTC", "USDT", "USDC", "ETH"]), st.decimals(min_value="0.01", max_value=1000,
                                                                         places=2, allow_nan=False),
       st.booleans())
def test_a_balance_moved_beyond_tolerance_is_reported_with_both_values(s: VenueState, ccy: str, move: Decimal,
                                                                       up: bool) -> None:
    tol = Tolerance(absolute=Decimal("0.001"), relative=Decimal("0.00001"))
    before = s.balances.get(ccy, Decimal(0))
    after = before + move if up or before < move else before - move
    venue = replace(s, balances={**s.balances, ccy: after})
    r = reconcile_venue(s, venue, tol)
    [rec] = r.records
    assert (rec.kind, rec.key, rec.venue_value) == ("balance", ccy, after)
    assert rec.local == s.balances.get(ccy)  # None when the local view had no such currency
    assert Decimal(rec.difference) == after - before
    beyond = abs(after - before) > max(Decimal("0.001"), Decimal("0.00001") * max(before, after))
    assert rec.within_tolerance is not beyond
    assert r.decision.action == ("stop" if beyond else "continue")
    assert r.corrected.balances == venue.balances


@settings(max_examples=200, deadline=None)
@given(states, st.data())
def test_a_dropped_or_changed_order_or_fill_is_always_a_difference(s: VenueState, data: st.DataObject) -> None:
    items = [("open_order", o.client_id) for o in s.open_orders] + [("fill", f.fill_id) for f in s.fills]
    if not items:
        return
    kind, key = data.draw(st.sampled_from(items))
    change = data.draw(st.sampled_from(["drop", "amount"]))
    if kind == "open_order":
        kept = tuple(o for o in s.open_orders if o.client_id != key)
        if change == "amount":
            kept += tuple(replace(o, amount=o.amount + 1) for o in s.open_orders if o.client_id == key)
        venue = replace(s, open_orders=kept)
    else:
        kept_f = tuple(f for f in s.fills if f.fill_id != key)
        if change == "amount":
            kept_f += tuple(replace(f, amount=f.amount + 1) for f in s.fills if f.fill_id == key)
        venue = replace(s, fills=kept_f)
    r = reconcile_venue(s, venue, Tolerance(absolute=Decimal(10**9)))  # no tolerance reaches orders or fills
    [rec] = r.records
    assert (rec.kind, rec.key, rec.within_tolerance) == (kind, key, False)
    assert rec.local is not None and rec.difference == ("missing on venue" if change == "drop" else "differs")
    assert (rec.venue_value is None) == (change == "drop")
    assert r.decision.action == "stop"
    assert r.corrected == canonical(venue)
