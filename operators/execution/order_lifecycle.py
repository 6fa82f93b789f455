"""The life of one child order on a venue: its client order id, its states, its fills and its errors.

Three pure parts, no I/O and no clock:

- :func:`client_order_id`: a deterministic id from (account, parent order, venue, child sequence). It does not
  depend on the attempt, so a resubmission after a crash or a timeout carries the same id as the first try.
- :data:`TRANSITIONS` / :func:`transition` / :func:`apply`: one table of the states an order moves through, with
  fills accumulated (filled amount, average price); an impossible move or an over-fill raises
  :class:`InvalidTransition`.
- :func:`classify` / :func:`next_action`: ccxt's exceptions split into ``retryable``, ``final`` and
  ``unknown_outcome`` (the order may or may not exist: look it up by client id before sending it again).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Literal, get_args

from ccxt.base import errors as ccxt_errors

from headrace.errors import HeadraceError, InvariantError
from headrace.events import stable_id

# --------------------------------------------------------------------------------------------------------------
# Client order ids


@dataclass(frozen=True, slots=True)
class ClientIdRule:
    """What one venue accepts as a client order id: the request parameter, a maximum length and a pattern."""

    param: str  # the venue's own parameter name, passed through ccxt's params
    max_length: int
    pattern: str  # a full-match regular expression

    def accepts(self, client_id: str) -> bool:
        """Return whether `client_id` is within this venue's length and character rules."""
        return len(client_id) <= self.max_length and re.fullmatch(self.pattern, client_id) is not None


_BINANCE = ClientIdRule("newClientOrderId", 36, r"[.A-Z:/a-z0-9_-]{1,36}")
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

#: Client id rules by ccxt exchange id (see docs/order-lifecycle.md for which were checked against what).
CLIENT_ID_RULES: Mapping[str, ClientIdRule] = MappingProxyType({
    "binance": _BINANCE,
    "binanceus": _BINANCE,
    "binanceusdm": _BINANCE,
    "okx": ClientIdRule("clOrdId", 32, r"[A-Za-z0-9]{1,32}"),
    "bybit": ClientIdRule("orderLinkId", 36, r"[A-Za-z0-9_-]{1,36}"),
    # Kraken's cl_ord_id takes a long UUID, a short UUID (32 hex digits) or free text of up to 18 characters.
    "kraken": ClientIdRule("cl_ord_id", 36, rf"{_UUID}|[0-9a-f]{{32}}|[\x20-\x7e]{{1,18}}"),
    # ccxt's own default is "ccxt-" + a UUID (41 characters), so Coinbase takes at least that length.
    "coinbase": ClientIdRule("client_order_id", 41, rf"(ccxt-)?{_UUID}"),
})

_UUID_FORMATTED = frozenset({"coinbase"})  # venues whose id is written as an 8-4-4-4-12 UUID


def client_order_id(account: str, parent_order_id: str, venue: str, child_seq: int) -> str:
    """Return the client order id of child `child_seq` of a parent order on `venue`.

    The id is 128 bits of a hash of its inputs: 32 lowercase hex digits, which every supported venue accepts
    (OKX's 32 alphanumerics is the tightest rule), written as an 8-4-4-4-12 UUID where the venue wants one
    (Coinbase). The attempt number is deliberately not an input: a resubmission reuses the id.

    Parameters
    ----------
    account
        Account id the order belongs to.
    parent_order_id
        Id of the parent order the router split.
    venue
        ccxt exchange id; must have an entry in :data:`CLIENT_ID_RULES`.
    child_seq
        Sequence number of the child within the parent, >= 0.

    Examples
    --------
    >>> cid = client_order_id("main", "p-1", "okx", 0)
    >>> len(cid), cid == client_order_id("main", "p-1", "okx", 0), cid == client_order_id("main", "p-1", "okx", 1)
    (32, True, False)
    >>> client_order_id("main", "p-1", "coinbase", 0).count("-")
    4
    >>> client_order_id("main", "p-1", "nowhere", 0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: no client order id rule for venue 'nowhere'; known: binance, binanceus, ..., okx
    """
    rule = CLIENT_ID_RULES.get(venue)
    if rule is None:
        raise ValueError(f"no client order id rule for venue {venue!r}; known: {', '.join(sorted(CLIENT_ID_RULES))}")
    if child_seq < 0:
        raise ValueError(f"child_seq must be >= 0, was {child_seq!r}")
    digest = stable_id("client_order_id", "v1", account, parent_order_id, venue, child_seq)
    cid = digest
    if venue in _UUID_FORMATTED:
        cid = f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:]}"
    if not rule.accepts(cid):  # pragma: no cover - a broken rule table, caught by the tests
        raise InvariantError(f"client order id {cid!r} breaks the rule of venue {venue!r}: {rule!r}")
    return cid


# --------------------------------------------------------------------------------------------------------------
# States and transitions

OrderState = Literal["new", "accepted", "partially_filled", "filled", "cancelled", "rejected", "expired", "unknown"]
Transition = Literal["accept", "fill_partial", "fill_complete", "cancel", "reject", "expire", "timeout", "not_found"]
STATES: tuple[OrderState, ...] = get_args(OrderState)
TRANSITION_KINDS: tuple[Transition, ...] = get_args(Transition)
TERMINAL: frozenset[OrderState] = frozenset({"filled", "cancelled", "rejected", "expired"})

# The venue's answer to a submission or a lookup: accepted, filled (in part or whole), cancelled, rejected or
# expired. An IOC child can come back already filled, cancelled or expired, so `new` and `unknown` take those
# directly. `timeout`: the submission's outcome is unknown; `not_found`: a lookup by client id found nothing, so
# the order never reached the venue and may be sent again (with the same id). A late or repeated
# acknowledgement changes nothing. Terminal states accept nothing.
_ANSWERS: dict[Transition, OrderState] = {
    "accept": "accepted", "fill_partial": "partially_filled", "fill_complete": "filled", "cancel": "cancelled",
    "reject": "rejected", "expire": "expired",
}
TRANSITIONS: Mapping[tuple[OrderState, Transition], OrderState] = MappingProxyType({
    **{("new", t): s for t, s in _ANSWERS.items()},
    ("new", "timeout"): "unknown",
    **{("unknown", t): s for t, s in _ANSWERS.items()},
    ("unknown", "timeout"): "unknown",  # the lookup itself timed out
    ("unknown", "not_found"): "new",
    ("accepted", "accept"): "accepted",
    ("accepted", "fill_partial"): "partially_filled",
    ("accepted", "fill_complete"): "filled",
    ("accepted", "cancel"): "cancelled",
    ("accepted", "expire"): "expired",
    ("partially_filled", "accept"): "partially_filled",
    ("partially_filled", "fill_partial"): "partially_filled",
    ("partially_filled", "fill_complete"): "filled",
    ("partially_filled", "cancel"): "cancelled",
    ("partially_filled", "expire"): "expired",
})


class InvalidTransition(HeadraceError):
    """An event that cannot happen to an order in its state (or a fill beyond the order's amount)."""

    def __init__(self, state: str, event: str, reason: str) -> None:
        super().__init__(f"order in state {state!r} cannot take event {event!r}: {reason}")
        self.state, self.event = state, event


def transition(state: OrderState, event: Transition) -> OrderState:
    """Return the state after `event`, or raise :class:`InvalidTransition` when the table has no such move.

    Examples
    --------
    >>> transition("new", "timeout"), transition("unknown", "not_found"), transition("accepted", "fill_partial")
    ('unknown', 'new', 'partially_filled')
    >>> transition("filled", "cancel")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    operators...InvalidTransition: order in state 'filled' cannot take event 'cancel': filled is terminal
    """
    nxt = TRANSITIONS.get((state, event))
    if nxt is None:
        why = f"{state} is terminal" if state in TERMINAL else "not in the transition table"
        raise InvalidTransition(state, event, why)
    return nxt


EventKind = Literal["accept", "fill", "cancel", "reject", "expire", "timeout", "not_found"]

FILL_REL_TOL = 1e-9  # fills summing to within this share of the amount complete the order; beyond it over-fill


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """What happened to an order: a venue answer, a fill (`amount` base units at `price`), a timeout, a lookup miss."""

    kind: EventKind
    amount: float = 0.0
    price: float = 0.0


@dataclass(frozen=True, slots=True)
class OrderStatus:
    """One child order's state, filled amount (base units) and average fill price (None before the first fill).

    Examples
    --------
    >>> s = OrderStatus(client_order_id="c1", amount=2.0)
    >>> for e in [OrderEvent("accept"), OrderEvent("fill", 0.5, 100.0), OrderEvent("fill", 1.5, 104.0)]:
    ...     s = apply(s, e)
    >>> s.state, s.filled, s.average_price, s.remaining
    ('filled', 2.0, 103.0, 0.0)
    >>> apply(OrderStatus(client_order_id="c2", amount=1.0), OrderEvent("fill", 1.5, 10.0))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    operators...InvalidTransition: order in state 'new' cannot take event 'fill': over-fill: 1.5 filled of 1.0
    """

    client_order_id: str
    amount: float
    state: OrderState = "new"
    filled: float = 0.0
    average_price: float | None = None

    @property
    def remaining(self) -> float:
        """Return the amount not yet filled (base units, >= 0)."""
        return max(self.amount - self.filled, 0.0)

    @property
    def terminal(self) -> bool:
        """Return whether the order can change no more."""
        return self.state in TERMINAL


def apply(status: OrderStatus, event: OrderEvent) -> OrderStatus:
    """Return `status` after `event`: a fill accumulates amount and average price and completes at the amount.

    Raises :class:`InvalidTransition` for a move the table does not allow and for a fill beyond the order's
    amount, and :class:`~headrace.errors.InvariantError` for a fill whose amount or price is not finite and > 0.
    """
    if event.kind != "fill":
        return replace(status, state=transition(status.state, event.kind))
    if not (math.isfinite(event.amount) and event.amount > 0 and math.isfinite(event.price) and event.price > 0):
        raise InvariantError(f"fill of order {status.client_order_id!r} must have finite amount and price > 0, "
                             f"were {event.amount!r} and {event.price!r}")
    total = status.filled + event.amount
    if total > status.amount * (1 + FILL_REL_TOL):
        if status.state in TERMINAL:
            transition(status.state, "fill_partial")  # raises: terminal states take no fill
        raise InvalidTransition(status.state, "fill", f"over-fill: {total!r} filled of {status.amount!r}")
    complete = total >= status.amount * (1 - FILL_REL_TOL)
    state = transition(status.state, "fill_complete" if complete else "fill_partial")
    avg = event.price if status.average_price is None else (
        (status.average_price * status.filled + event.price * event.amount) / total)
    return replace(status, state=state, filled=status.amount if complete else total, average_price=avg)


# --------------------------------------------------------------------------------------------------------------
# ccxt errors

Outcome = Literal["retryable", "final", "unknown_outcome"]

# (class, outcome when submitting an order, outcome for anything else). The first match wins, so every class
# comes before its ccxt parents (a test checks that no rule is shadowed). On submission, an error after which the
# venue may have taken the order is an unknown outcome: the order is looked up by client id before it is sent
# again, since Binance only refuses a client id that is still open (a filled IOC child would be sent twice).
# Rate limits, bans, a bad nonce and maintenance are refusals before any processing: retryable.
_RULES: tuple[tuple[type[BaseException], Outcome, Outcome], ...] = (
    (ccxt_errors.DuplicateOrderId, "unknown_outcome", "final"),  # our id is already there: an earlier try got in
    (ccxt_errors.InvalidOrder, "final", "final"),  # with OrderNotFound, OrderNotFillable, ...
    (ccxt_errors.InsufficientFunds, "final", "final"),
    (ccxt_errors.AuthenticationError, "final", "final"),  # with PermissionDenied, AccountSuspended
    (ccxt_errors.BadRequest, "final", "final"),  # with BadSymbol
    (ccxt_errors.ExchangeError, "final", "final"),  # OperationRejected, NotSupported, ArgumentsRequired, ...
    (ccxt_errors.RateLimitExceeded, "retryable", "retryable"),
    (ccxt_errors.DDoSProtection, "retryable", "retryable"),
    (ccxt_errors.InvalidNonce, "retryable", "retryable"),
    (ccxt_errors.OnMaintenance, "retryable", "retryable"),
    (ccxt_errors.RequestTimeout, "unknown_outcome", "retryable"),
    (ccxt_errors.ExchangeNotAvailable, "unknown_outcome", "retryable"),
    (ccxt_errors.NetworkError, "unknown_outcome", "retryable"),
    (ccxt_errors.BadResponse, "unknown_outcome", "retryable"),  # the venue answered; we could not read it
    (ccxt_errors.CancelPending, "retryable", "retryable"),
    (ccxt_errors.OperationFailed, "unknown_outcome", "retryable"),
    (ccxt_errors.BaseError, "unknown_outcome", "final"),
)


def classify(exc: BaseException, *, on_submit: bool = True) -> Outcome:
    """Return how to treat `exc`, raised by a ccxt call: ``retryable``, ``final`` or ``unknown_outcome``.

    `on_submit` says whether the call was an order submission; only then can an error leave the order's
    existence unknown. A cancel, lookup or fetch is safe to repeat, so its network errors are retryable. An
    exception that is not ccxt's is ``unknown_outcome`` on submission and ``final`` otherwise.

    Examples
    --------
    >>> import ccxt
    >>> classify(ccxt.RequestTimeout("t")), classify(ccxt.RequestTimeout("t"), on_submit=False)
    ('unknown_outcome', 'retryable')
    >>> classify(ccxt.RateLimitExceeded("429")), classify(ccxt.InsufficientFunds("no"))
    ('retryable', 'final')
    """
    for cls, submitting, other in _RULES:
        if isinstance(exc, cls):
            return submitting if on_submit else other
    return "unknown_outcome" if on_submit else "final"


Action = Literal["retry", "give_up", "lookup", "reject"]


def next_action(exc: BaseException, attempts: int, *, max_attempts: int, on_submit: bool = True) -> Action:
    """Return what to do after `exc` on try number `attempts` (1-based) of at most `max_attempts`.

    ``lookup``: fetch the order by client id and apply what the venue says (``not_found`` makes it ``new``
    again, to be resubmitted with the same id); ``reject``: a final error, a rejection event and no retry;
    ``retry``: try again after a backoff; ``give_up``: retries are exhausted, raise an alert.

    Examples
    --------
    >>> import ccxt
    >>> [next_action(ccxt.ExchangeNotAvailable("503"), n, max_attempts=3, on_submit=False) for n in (1, 3)]
    ['retry', 'give_up']
    >>> next_action(ccxt.RequestTimeout("t"), 1, max_attempts=3), next_action(ccxt.InvalidOrder("x"), 1, max_attempts=3)
    ('lookup', 'reject')
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, was {max_attempts!r}")
    outcome = classify(exc, on_submit=on_submit)
    if outcome == "final":
        return "reject"
    if outcome == "unknown_outcome":
        return "lookup"
    return "retry" if attempts < max_attempts else "give_up"
