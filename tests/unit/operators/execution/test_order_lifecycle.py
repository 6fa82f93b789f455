"""Order lifecycle: client ids (deterministic, unique, valid on every venue), the transition table (every pair),
fills that never over-fill or leave a terminal state, and the classification of every ccxt exception class."""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Callable
from typing import Any

import ccxt
import pytest
from ccxt.base.errors import error_hierarchy
from hypothesis import given
from hypothesis import strategies as st

from headrace.errors import InvariantError
from helpers import SHARED_DATA
from operators.execution.order_lifecycle import (
    _RULES,
    CLIENT_ID_RULES,
    STATES,
    TERMINAL,
    TRANSITION_KINDS,
    InvalidTransition,
    OrderEvent,
    OrderStatus,
    apply,
    classify,
    client_order_id,
    next_action,
    transition,
)

# ---------------------------------------------------------------------------------------------- client order ids

# Each venue's rule written out independently of the module's table.
VENUE_CHECKS: dict[str, Callable[[str], bool]] = {
    "binance": lambda c: len(c) <= 36 and re.fullmatch(r"[.A-Z:/a-z0-9_-]+", c) is not None,
    "binanceus": lambda c: len(c) <= 36 and re.fullmatch(r"[.A-Z:/a-z0-9_-]+", c) is not None,
    "binanceusdm": lambda c: len(c) <= 36 and re.fullmatch(r"[.A-Z:/a-z0-9_-]+", c) is not None,
    "okx": lambda c: len(c) <= 32 and c.isascii() and c.isalnum(),
    "bybit": lambda c: len(c) <= 36 and re.fullmatch(r"[A-Za-z0-9_-]+", c) is not None,
    "kraken": lambda c: len(c) == 32 and all(ch in "0123456789abcdef" for ch in c),  # the short UUID form
    "coinbase": lambda c: re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", c) is not None,
}

names = st.text(max_size=40)


def test_every_venue_with_a_rule_has_an_independent_check() -> None:
    assert set(VENUE_CHECKS) == set(CLIENT_ID_RULES)


@given(account=names, parent=names, venue=st.sampled_from(sorted(CLIENT_ID_RULES)), seq=st.integers(0, 10**9))
def test_client_ids_are_deterministic_and_valid_on_their_venue(account: str, parent: str, venue: str, seq: int) -> None:
    cid = client_order_id(account, parent, venue, seq)
    assert cid == client_order_id(account, parent, venue, seq)  # a resubmission reuses the id
    assert VENUE_CHECKS[venue](cid), (venue, cid)
    assert CLIENT_ID_RULES[venue].accepts(cid)


@given(keys=st.lists(st.tuples(names, names, st.sampled_from(sorted(CLIENT_ID_RULES)), st.integers(0, 50)),
                     min_size=2, max_size=60, unique=True))
def test_client_ids_differ_for_different_children(keys: list[tuple[str, str, str, int]]) -> None:
    ids = [client_order_id(*k) for k in keys]
    assert len(set(ids)) == len(ids)


def test_client_ids_of_one_parent_split_across_venues_and_children_are_all_distinct() -> None:
    ids = {client_order_id("main", "parent-1", v, i) for v in CLIENT_ID_RULES for i in range(1000)}
    assert len(ids) == 1000 * len(CLIENT_ID_RULES)


def test_client_id_separates_its_inputs_unambiguously() -> None:
    # joining inputs naively ("a" + "b1" vs "ab" + "1") must not collide
    assert client_order_id("a", "b1", "okx", 0) != client_order_id("ab", "1", "okx", 0)
    assert client_order_id("main", "p", "okx", 1) != client_order_id("main", "p1", "okx", 0)


def test_client_id_for_an_unknown_venue_or_negative_child_is_refused() -> None:
    with pytest.raises(ValueError, match="'nowhere'"):
        client_order_id("main", "p", "nowhere", 0)
    with pytest.raises(ValueError, match="child_seq"):
        client_order_id("main", "p", "okx", -1)


CLIENT_ID_FIELDS = {"binance": "newClientOrderId", "okx": "clOrdId", "bybit": "orderLinkId",
                    "kraken": "cl_ord_id", "coinbase": "client_order_id"}


def recorded_client_ids(venue: str) -> list[str]:
    path = SHARED_DATA / "ccxt-static" / "request" / f"{venue}.json"
    if not path.exists():
        pytest.skip(f"{path} is missing (../shared/data not present)")
    found: list[str] = []

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                if k == CLIENT_ID_FIELDS[venue] and isinstance(v, str) and v:
                    found.append(v)
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        elif isinstance(x, str) and x.startswith("{"):
            with contextlib.suppress(ValueError):
                walk(json.loads(x))

    walk(json.loads(path.read_text(encoding="utf-8")))
    for m in re.finditer(rf"(?:^|[?&]){CLIENT_ID_FIELDS[venue]}=([^&\"]+)", path.read_text(encoding="utf-8")):
        found.append(m.group(1))
    return found


@pytest.mark.parametrize("venue", ["binance", "okx", "bybit", "coinbase"])
def test_the_rules_accept_the_client_ids_ccxt_really_sends(venue: str) -> None:
    ids = recorded_client_ids(venue)
    assert ids, f"no {CLIENT_ID_FIELDS[venue]} in the recorded {venue} requests"
    rejected = [c for c in ids if not CLIENT_ID_RULES[venue].accepts(c)]
    assert rejected == []


@pytest.mark.parametrize(("venue", "bad"), [("okx", "a-b"), ("okx", "x" * 33), ("binance", "a b"),
                                            ("binance", "x" * 37), ("bybit", "a.b"), ("coinbase", "not-a-uuid"),
                                            ("kraken", "x" * 19)])
def test_the_rules_refuse_ids_the_venue_would_refuse(venue: str, bad: str) -> None:
    assert not CLIENT_ID_RULES[venue].accepts(bad)


# ---------------------------------------------------------------------------------------------- transition table

ANSWERS = {"accept": "accepted", "fill_partial": "partially_filled", "fill_complete": "filled",
           "cancel": "cancelled", "reject": "rejected", "expire": "expired"}
EXPECTED: dict[tuple[str, str], str] = {
    **{("new", e): s for e, s in ANSWERS.items()}, ("new", "timeout"): "unknown",
    **{("unknown", e): s for e, s in ANSWERS.items()}, ("unknown", "timeout"): "unknown",
    ("unknown", "not_found"): "new",
    ("accepted", "accept"): "accepted", ("accepted", "fill_partial"): "partially_filled",
    ("accepted", "fill_complete"): "filled", ("accepted", "cancel"): "cancelled", ("accepted", "expire"): "expired",
    ("partially_filled", "accept"): "partially_filled", ("partially_filled", "fill_partial"): "partially_filled",
    ("partially_filled", "fill_complete"): "filled", ("partially_filled", "cancel"): "cancelled",
    ("partially_filled", "expire"): "expired",
}
ALL_PAIRS = [(s, e) for s in STATES for e in TRANSITION_KINDS]


def test_the_table_covers_the_eight_states_and_eight_transitions() -> None:
    assert set(STATES) == {"new", "accepted", "partially_filled", "filled", "cancelled", "rejected", "expired",
                           "unknown"}
    assert len(ALL_PAIRS) == 64
    assert set(TERMINAL) == {"filled", "cancelled", "rejected", "expired"}


@pytest.mark.parametrize(("state", "event"), ALL_PAIRS)
def test_every_state_and_event_pair(state: Any, event: Any) -> None:
    if (state, event) in EXPECTED:
        assert transition(state, event) == EXPECTED[(state, event)]
    else:
        with pytest.raises(InvalidTransition, match=f"state '{state}' cannot take event '{event}'"):
            transition(state, event)


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_terminal_states_take_no_event_at_all(state: Any) -> None:
    for event in TRANSITION_KINDS:
        with pytest.raises(InvalidTransition, match="terminal"):
            transition(state, event)


def test_after_a_timeout_the_order_is_resubmitted_only_when_the_lookup_finds_nothing() -> None:
    s = apply(OrderStatus(client_order_id="c", amount=1.0), OrderEvent("timeout"))
    assert s.state == "unknown"
    assert apply(s, OrderEvent("not_found")).state == "new"
    assert apply(s, OrderEvent("fill", 1.0, 5.0)).state == "filled"  # the lookup found it filled
    with pytest.raises(InvalidTransition):
        apply(OrderStatus(client_order_id="c", amount=1.0), OrderEvent("not_found"))  # no lookup without a timeout


# ---------------------------------------------------------------------------------------------- fills


def test_partial_fills_accumulate_amount_and_volume_weighted_price() -> None:
    s = OrderStatus(client_order_id="c", amount=3.0)
    s = apply(s, OrderEvent("accept"))
    s = apply(s, OrderEvent("fill", 1.0, 100.0))
    assert (s.state, s.filled, s.average_price, s.remaining) == ("partially_filled", 1.0, 100.0, 2.0)
    s = apply(s, OrderEvent("fill", 2.0, 103.0))
    assert (s.state, s.filled, s.average_price, s.remaining) == ("filled", 3.0, 102.0, 0.0)


def test_decimal_fills_that_sum_to_the_amount_in_floats_complete_the_order() -> None:
    s = OrderStatus(client_order_id="c", amount=0.3)
    s = apply(apply(s, OrderEvent("fill", 0.1, 1.0)), OrderEvent("fill", 0.2, 1.0))  # 0.1 + 0.2 != 0.3 in floats
    assert s.state == "filled" and s.filled == 0.3


def test_an_over_fill_is_an_error_and_a_fill_after_a_terminal_state_too() -> None:
    s = apply(OrderStatus(client_order_id="c", amount=1.0), OrderEvent("fill", 0.6, 1.0))
    with pytest.raises(InvalidTransition, match="over-fill"):
        apply(s, OrderEvent("fill", 0.5, 1.0))
    cancelled = apply(s, OrderEvent("cancel"))
    with pytest.raises(InvalidTransition, match="terminal"):
        apply(cancelled, OrderEvent("fill", 0.1, 1.0))


@pytest.mark.parametrize(("amount", "price"), [(0.0, 1.0), (-1.0, 1.0), (math.nan, 1.0), (1.0, 0.0),
                                               (1.0, math.inf)])
def test_a_fill_without_a_positive_finite_amount_and_price_is_an_invariant_error(amount: float, price: float) -> None:
    with pytest.raises(InvariantError):
        apply(OrderStatus(client_order_id="c", amount=1.0), OrderEvent("fill", amount, price))


events = st.one_of(
    st.sampled_from([OrderEvent(k) for k in ("accept", "cancel", "reject", "expire", "timeout", "not_found")]),
    st.builds(OrderEvent, kind=st.just("fill"), amount=st.floats(1e-6, 2.0), price=st.floats(1.0, 1e5)),
)


@given(amount=st.floats(1e-3, 5.0), evs=st.lists(events, max_size=40))
def test_event_sequences_never_leave_a_terminal_state_or_over_fill(amount: float, evs: list[OrderEvent]) -> None:
    s = OrderStatus(client_order_id="c", amount=amount)
    prices: list[float] = []
    taken = 0.0  # the fills accepted so far
    for ev in evs:
        try:
            nxt = apply(s, ev)
        except InvalidTransition:
            continue  # refused: the order is unchanged
        if s.terminal:
            raise AssertionError(f"{s.state} moved to {nxt.state} on {ev!r}")
        if ev.kind == "fill":
            prices.append(ev.price)
            taken += ev.amount
        assert taken <= amount * (1 + 1e-9), f"over-filled: {taken!r} of {amount!r}"
        assert nxt.filled >= s.filled
        assert nxt.filled <= amount
        assert (nxt.state == "filled") == math.isclose(nxt.filled, amount, rel_tol=1e-9)
        if prices:
            assert nxt.average_price is not None
            assert min(prices) * (1 - 1e-12) <= nxt.average_price <= max(prices) * (1 + 1e-12)
        s = nxt


# ---------------------------------------------------------------------------------------------- ccxt errors

# Outcome on submission and for any other call (cancel, lookup, fetch), for every class in ccxt's hierarchy.
R, F, U = "retryable", "final", "unknown_outcome"
EXPECTED_OUTCOMES = {
    "BaseError": (U, F), "ExchangeError": (F, F), "AuthenticationError": (F, F), "PermissionDenied": (F, F),
    "AccountNotEnabled": (F, F), "AccountSuspended": (F, F), "ArgumentsRequired": (F, F), "BadRequest": (F, F),
    "BadSymbol": (F, F), "OperationRejected": (F, F), "NoChange": (F, F), "MarginModeAlreadySet": (F, F),
    "MarketClosed": (F, F), "ManualInteractionNeeded": (F, F), "RestrictedLocation": (F, F),
    "InsufficientFunds": (F, F), "InvalidAddress": (F, F), "AddressPending": (F, F), "InvalidOrder": (F, F),
    "OrderNotFound": (F, F), "OrderNotCached": (F, F), "OrderImmediatelyFillable": (F, F),
    "OrderNotFillable": (F, F), "DuplicateOrderId": (U, F), "ContractUnavailable": (F, F), "NotSupported": (F, F),
    "InvalidProxySettings": (F, F), "ExchangeClosedByUser": (F, F), "OperationFailed": (U, R),
    "NetworkError": (U, R), "DDoSProtection": (R, R), "RateLimitExceeded": (R, R), "ExchangeNotAvailable": (U, R),
    "OnMaintenance": (R, R), "InvalidNonce": (R, R), "ChecksumError": (R, R), "RequestTimeout": (U, R),
    "BadResponse": (U, R), "NullResponse": (U, R), "CancelPending": (R, R), "UnsubscribeError": (U, F),
}


def hierarchy_names(tree: dict[str, Any]) -> list[str]:
    return [n for k, v in tree.items() for n in (k, *hierarchy_names(v))]


def test_every_ccxt_exception_class_has_an_expected_outcome() -> None:
    assert sorted(hierarchy_names(error_hierarchy)) == sorted(EXPECTED_OUTCOMES)


@pytest.mark.parametrize("name", sorted(EXPECTED_OUTCOMES))
def test_classification_of_each_ccxt_exception_class(name: str) -> None:
    exc = getattr(ccxt, name)("binance {\"code\":-1}")
    assert (classify(exc), classify(exc, on_submit=False)) == EXPECTED_OUTCOMES[name]


def test_ccxt_hierarchy_assumptions_the_rules_rely_on() -> None:
    assert issubclass(ccxt.RequestTimeout, ccxt.NetworkError)
    assert issubclass(ccxt.RateLimitExceeded, ccxt.NetworkError) and issubclass(ccxt.DDoSProtection, ccxt.NetworkError)
    assert issubclass(ccxt.DuplicateOrderId, ccxt.InvalidOrder) and issubclass(ccxt.OrderNotFound, ccxt.InvalidOrder)
    assert issubclass(ccxt.BadSymbol, ccxt.BadRequest)


def test_no_rule_is_shadowed_by_an_earlier_parent() -> None:
    classes = [cls for cls, _, _ in _RULES]
    shadowed = [(b.__name__, a.__name__) for i, a in enumerate(classes) for b in classes[i + 1:] if issubclass(b, a)]
    assert shadowed == []


def test_exceptions_from_outside_ccxt_are_unknown_on_submission_and_final_otherwise() -> None:
    assert classify(ValueError("x")) == U
    assert classify(ValueError("x"), on_submit=False) == F


def test_retries_are_bounded_and_unknown_outcomes_are_looked_up() -> None:
    limited = ccxt.RateLimitExceeded("429")
    assert [next_action(limited, n, max_attempts=3) for n in (1, 2, 3, 4)] == ["retry", "retry", "give_up", "give_up"]
    assert next_action(ccxt.RequestTimeout("t"), 5, max_attempts=3) == "lookup"
    assert next_action(ccxt.InsufficientFunds("f"), 1, max_attempts=3) == "reject"
    with pytest.raises(ValueError, match="max_attempts"):
        next_action(limited, 1, max_attempts=0)
