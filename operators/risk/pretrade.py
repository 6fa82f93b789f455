"""Pre-trade checks and trading states: what may leave the account, order by order.

Every order is checked against every limit before it is sent; each check that fails gives a `Violation` (code,
actual, limit, blocking) and all of them are kept, so a denied order says every reason at once. Exposure limits
(position per instrument, per asset across venues, gross, net) block only an order that *increases* the
exposure they bound: an order that brings an over-limit book back toward its limit always passes them.

Trading states, most to least permissive:

- ``ACTIVE``: every order that passes the checks is sent;
- ``REDUCING``: only risk-reducing orders (those that shrink the position of their instrument without flipping
  it) are sent; an order that would flip the position is cut to the part that closes it;
- ``HALTED``: nothing is sent (working orders are cancelled by the account).

A state has a source: an operator command or a limit. The strictest wanted state wins; a limit that comes back
releases only the state it set, never an operator's (`TradingStates`).

>>> limits = PreTradeLimits(max_order_notional=1_000.0)
>>> o = OrderCheck(instrument="binance:BTC/USDT", asset="BTC", notional=2_500.0, price=100.0, mark=100.0,
...                position_before=0.0, position_after=2_500.0, asset_before=0.0, asset_after=2_500.0,
...                gross_before=0.0, gross_after=2_500.0, net_before=0.0, net_after=2_500.0, equity=10_000.0)
>>> [v.text() for v in check_order(o, limits)]
['max_order_notional: 2500 > 1000']
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

TradingState = Literal["ACTIVE", "REDUCING", "HALTED"]
STATES: tuple[TradingState, ...] = ("ACTIVE", "REDUCING", "HALTED")  # in order of strictness
_RANK = {s: i for i, s in enumerate(STATES)}


@dataclass(frozen=True, slots=True)
class Violation:
    """One check an order failed: `actual` against `limit`; a non-blocking one is recorded, not enforced."""

    code: str
    actual: float
    limit: float
    blocking: bool = True

    def text(self) -> str:
        return f"{self.code}: {self.actual:.6g} > {self.limit:.6g}" + ("" if self.blocking else " (not blocking)")


@dataclass(frozen=True, slots=True)
class PreTradeLimits:
    """The pre-trade limits; 0 turns a limit off. Fractions and multiples are of equity."""

    max_order_notional: float = 0.0  # account currency
    max_order_fraction: float = 0.0
    max_position_fraction: float = 0.0  # per instrument
    max_asset_fraction: float = 0.0  # per asset, summed over venues
    max_gross: float = 0.0
    max_net: float = 0.0
    price_band_bps: float = 0.0
    max_orders: int = 0  # per window
    window_ns: int = 60 * 10**9


@dataclass(frozen=True, slots=True)
class OrderCheck:
    """What the account knows of one order when it decides it; values signed, in the account currency.

    `price` is the price the order would trade at (its limit, else the quote it would take, else the mark) and
    `mark` the reference it is compared with (the last close), in the same currency.
    """

    instrument: str
    asset: str
    notional: float
    price: float
    mark: float
    position_before: float
    position_after: float
    asset_before: float
    asset_after: float
    gross_before: float
    gross_after: float
    net_before: float
    net_after: float
    equity: float

    @property
    def reduces(self) -> bool:
        """True when the order shrinks its instrument's position without flipping it."""
        b, a = self.position_before, self.position_after
        return b != 0 and abs(a) < abs(b) and (a == 0 or (a > 0) == (b > 0))


def _over(code: str, actual: float, limit: float, grows: bool) -> list[Violation]:
    return [Violation(code, actual, limit)] if limit > 0 and actual > limit and grows else []


def check_order(o: OrderCheck, limits: PreTradeLimits, orders_in_window: int = 0) -> list[Violation]:
    """Return every limit the order breaks (empty: it may go). `orders_in_window` counts the orders sent in the
    throttle's window before this one."""
    out: list[Violation] = []
    lim = limits
    out += _over("max_order_notional", o.notional, lim.max_order_notional, True)
    eq = o.equity if o.equity > 0 else math.nan
    if lim.max_order_fraction > 0:
        out += _over("max_order_fraction", o.notional / eq if eq == eq else math.inf, lim.max_order_fraction, True)
    if eq != eq:  # no equity left: every exposure limit is breached by any order that adds exposure
        eq = 1e-300
    out += _over("max_position_fraction", abs(o.position_after) / eq, lim.max_position_fraction,
                 abs(o.position_after) > abs(o.position_before))
    out += _over("max_asset_fraction", abs(o.asset_after) / eq, lim.max_asset_fraction,
                 abs(o.asset_after) > abs(o.asset_before))
    out += _over("max_gross", o.gross_after / eq, lim.max_gross, o.gross_after > o.gross_before)
    out += _over("max_net", abs(o.net_after) / eq, lim.max_net, abs(o.net_after) > abs(o.net_before))
    if lim.price_band_bps > 0 and o.mark > 0:
        out += _over("price_band_bps", abs(o.price / o.mark - 1.0) * 1e4, lim.price_band_bps, True)
    if lim.max_orders > 0 and orders_in_window >= lim.max_orders:
        out.append(Violation("max_orders", float(orders_in_window + 1), float(lim.max_orders)))
    return out


def reduce_only(amount: float, side_sign: float, position: float) -> float:
    """The part of an order (`amount` > 0, `side_sign` +1 buy / -1 sell) that reduces `position` (signed, base
    units) without flipping it: 0 when the order adds to the position.

    >>> reduce_only(3.0, -1.0, 2.0), reduce_only(1.0, -1.0, 2.0), reduce_only(1.0, 1.0, 2.0)
    (2.0, 1.0, 0.0)
    """
    if position == 0 or (side_sign > 0) == (position > 0):
        return 0.0
    return min(amount, abs(position))


class OrderRate:
    """Orders sent in the last `window_ns` (the throttle's count), from the order times given."""

    def __init__(self, window_ns: int, times: tuple[int, ...] = ()) -> None:
        self.window_ns = window_ns
        self._times: deque[int] = deque(times)

    def count(self, ts: int) -> int:
        while self._times and self._times[0] <= ts - self.window_ns:
            self._times.popleft()
        return len(self._times)

    def add(self, ts: int) -> None:
        self._times.append(ts)

    def snapshot(self) -> tuple[int, ...]:
        return tuple(self._times)


@dataclass(frozen=True, slots=True)
class StateChange:
    ts: int
    previous: TradingState
    state: TradingState
    source: str
    reason: str


class TradingStates:
    """The account's trading state from the states its sources want: the strictest wins.

    Sources are ``operator`` and the limits (``limit:es``, ``limit:stress``, ``margin``). A source sets its state
    with `want`; ``ACTIVE`` withdraws it. `resume` by the operator clears the operator's own state only.

    >>> s = TradingStates()
    >>> s.want(1, "limit:es", "REDUCING", "es 0.09 > 0.08").state
    'REDUCING'
    >>> s.want(2, "operator", "HALTED", "exchange incident").state
    'HALTED'
    >>> s.want(3, "limit:es", "ACTIVE", "es back to 0.05") is None  # still halted by the operator
    True
    >>> s.want(4, "operator", "ACTIVE", "incident over").state
    'ACTIVE'
    """

    def __init__(self, wanted: tuple[tuple[str, TradingState], ...] = ()) -> None:
        self._wanted: dict[str, TradingState] = dict(wanted)

    @property
    def state(self) -> TradingState:
        return max(self._wanted.values(), key=lambda s: _RANK[s], default="ACTIVE")

    def wanted(self, source: str) -> TradingState:
        return self._wanted.get(source, "ACTIVE")

    def want(self, ts: int, source: str, state: TradingState, reason: str) -> StateChange | None:
        """Record what `source` wants; return the change of the account's state, if any."""
        before = self.state
        if state == "ACTIVE":
            self._wanted.pop(source, None)
        else:
            self._wanted[source] = state
        after = self.state
        return None if after == before else StateChange(ts, before, after, source, reason)

    def snapshot(self) -> tuple[tuple[str, TradingState], ...]:
        return tuple(sorted(self._wanted.items()))
