"""Reconciliation: the account's local view of a venue against the venue's own, the venue being the truth.

Three things are compared per venue: balances per currency (within an absolute or relative tolerance), open
orders by client order id, and recent fills by fill id (an order or a fill missing on either side, or differing,
is always a difference). The result is, per venue:

- one :class:`Reconciliation` record per difference, with both values (an exact match gives no record);
- a decision: ``continue`` trading on the venue, or ``stop`` when any difference is beyond tolerance;
- the corrected local state: the venue's balances, the venue's open orders (unknown ones adopted, vanished ones
  dropped) and, in the compared window, the venue's fills (missing ones added).

Pure and deterministic: no I/O, no clock (the start of the fill window comes in as an argument). Values are
`Decimal`, as in :mod:`operators.execution.markets`, so an exact match is exact.

>>> usd = {"USDT": Decimal("1000"), "BTC": Decimal("0.5")}
>>> local = VenueState("binance", usd, (), ())
>>> remote = VenueState("binance", {"USDT": Decimal("990"), "BTC": Decimal("0.5")}, (), ())
>>> r = reconcile_venue(local, remote, Tolerance(absolute=Decimal("1"), relative=Decimal("0.001")))
>>> [(x.key, str(x.local), str(x.venue_value), x.difference, x.within_tolerance) for x in r.records]
[('USDT', '1000', '990', '-10', False)]
>>> r.decision.action, r.decision.reasons
('stop', ('balance USDT: local 1000, venue 990, difference -10',))
>>> r.corrected.balances == remote.balances
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, TypeVar

from operators.execution.markets import dec

Side = Literal["buy", "sell"]
Kind = Literal["balance", "open_order", "fill"]
Action = Literal["continue", "stop"]


@dataclass(frozen=True, slots=True)
class OpenOrder:
    """A working order as the account or the venue sees it."""

    client_id: str
    symbol: str
    side: Side
    amount: Decimal  # ordered, base units
    filled: Decimal
    price: Decimal | None  # None: a market order

    def __str__(self) -> str:
        at = "market" if self.price is None else f"@ {self.price}"
        return f"{self.side} {self.amount} {self.symbol} {at} filled {self.filled}"


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution of an order (a ccxt trade of the account)."""

    fill_id: str
    order_id: str  # the venue's order id (or the client id where the venue reports only that)
    symbol: str
    side: Side
    amount: Decimal
    price: Decimal
    fee: Decimal
    fee_currency: str
    ts_event: int  # venue time, UTC epoch ns

    def __str__(self) -> str:
        return f"{self.side} {self.amount} {self.symbol} @ {self.price} fee {self.fee} {self.fee_currency}"


T = TypeVar("T", OpenOrder, Fill)


@dataclass(frozen=True, slots=True)
class VenueState:
    """What is held and working on one venue: total balance per currency, open orders, recent fills."""

    venue: str
    balances: Mapping[str, Decimal]  # currency -> total; a currency not listed holds 0
    open_orders: tuple[OpenOrder, ...]
    fills: tuple[Fill, ...]


@dataclass(frozen=True, slots=True)
class Tolerance:
    """How far a balance may differ before trading stops on the venue.

    A difference `d` in a currency is within tolerance when ``|d| <= absolute`` (or the currency's own entry in
    `absolute_by_currency`) or ``|d| <= relative * max(|local|, |venue|)``. Orders and fills have no tolerance.

    >>> t = Tolerance(absolute=Decimal("0.01"), relative=Decimal("0.001"), absolute_by_currency={"BTC": Decimal(0)})
    >>> t.allows("USDT", Decimal("100"), Decimal("100.01")), t.allows("USDT", Decimal("100"), Decimal("100.2"))
    (True, False)
    >>> t.allows("BTC", Decimal("1"), Decimal("1.0005")), t.allows("BTC", Decimal("1"), Decimal("1.002"))
    (True, False)
    """

    absolute: Decimal = Decimal(0)
    relative: Decimal = Decimal(0)
    absolute_by_currency: Mapping[str, Decimal] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, v in (("absolute", self.absolute), ("relative", self.relative),
                        *((f"absolute_by_currency[{c!r}]", x) for c, x in self.absolute_by_currency.items())):
            if not (v.is_finite() and v >= 0):
                raise ValueError(f"reconciliation tolerance {name} must be a finite number >= 0, was {v}")

    def allows(self, currency: str, local: Decimal, venue: Decimal) -> bool:
        """Return whether the balances `local` and `venue` of `currency` are close enough."""
        d = abs(venue - local)
        return d <= self.absolute_by_currency.get(currency, self.absolute) or \
            d <= self.relative * max(abs(local), abs(venue))


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """One difference between the local view and the venue's, with both values (None: absent on that side)."""

    venue: str
    kind: Kind
    key: str  # currency, client order id or fill id
    local: Decimal | OpenOrder | Fill | None
    venue_value: Decimal | OpenOrder | Fill | None
    difference: str  # balances: venue - local; else "missing locally", "missing on venue" or "differs"
    within_tolerance: bool

    def describe(self) -> str:
        """One line naming the difference and both values (for an alert or a log)."""
        what = self.kind.replace("_", " ")
        return f"{what} {self.key}: local {_text(self.local)}, venue {_text(self.venue_value)}, " \
               f"difference {self.difference}"


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether trading continues on a venue, and the differences beyond tolerance that stopped it."""

    venue: str
    action: Action
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class VenueReconciliation:
    """The reconciliation of one venue: its differences, the decision and the corrected local state."""

    venue: str
    records: tuple[Reconciliation, ...]
    decision: Decision
    corrected: VenueState


def _text(v: Decimal | OpenOrder | Fill | None) -> str:
    return "absent" if v is None else str(v)


def _signed(d: Decimal) -> str:
    text = format(d.normalize(), "f")  # -0.200000 -> -0.2, 1E+2 -> 100
    return f"+{text}" if d > 0 else text


def _balances(venue: str, local: Mapping[str, Decimal], remote: Mapping[str, Decimal],
              tol: Tolerance) -> list[Reconciliation]:
    out = []
    for ccy in sorted(set(local) | set(remote)):
        lv, vv = local.get(ccy, Decimal(0)), remote.get(ccy, Decimal(0))
        if lv != vv:
            out.append(Reconciliation(venue, "balance", ccy, local.get(ccy), remote.get(ccy), _signed(vv - lv),
                                      tol.allows(ccy, lv, vv)))
    return out


def _by_key(kind: Kind, venue: str, local: Mapping[str, T], remote: Mapping[str, T]) -> list[Reconciliation]:
    out = []
    for key in sorted(set(local) | set(remote)):
        lv, vv = local.get(key), remote.get(key)
        if lv != vv:
            diff = "missing locally" if lv is None else "missing on venue" if vv is None else "differs"
            out.append(Reconciliation(venue, kind, key, lv, vv, diff, False))
    return out


def _unique(venue: str, side: str, items: Sequence[T], key: str) -> dict[str, T]:
    out: dict[str, T] = {}
    for x in items:
        k = getattr(x, key)
        if k in out:
            raise ValueError(f"{side} state of {venue!r} lists {key} {k!r} twice")
        out[k] = x
    return out


def reconcile_venue(local: VenueState, venue: VenueState, tolerance: Tolerance,
                    fills_since_ns: int | None = None) -> VenueReconciliation:
    """Compare one venue's local state with the venue's; return the differences, the decision, the corrected state.

    Only fills at or after `fills_since_ns` are compared (the venue's "recent fills" window; None: all). Local
    fills before the window are kept as they are.

    >>> o = OpenOrder("c1", "BTC/USDT", "buy", Decimal("1"), Decimal("0"), Decimal("100"))
    >>> f = Fill("t1", "o0", "BTC/USDT", "buy", Decimal("1"), Decimal("99"), Decimal("0.1"), "USDT", 5)
    >>> r = reconcile_venue(VenueState("x", {}, (o,), ()), VenueState("x", {}, (), (f,)), Tolerance())
    >>> [(x.kind, x.key, x.difference) for x in r.records]
    [('open_order', 'c1', 'missing on venue'), ('fill', 't1', 'missing locally')]
    >>> r.decision.action, r.corrected.open_orders, [x.fill_id for x in r.corrected.fills]
    ('stop', (), ['t1'])
    """
    if local.venue != venue.venue:
        raise ValueError(f"cannot reconcile the local state of {local.venue!r} with the venue state of "
                         f"{venue.venue!r}")
    name = venue.venue
    lo_orders = _unique(name, "local", local.open_orders, "client_id")
    ve_orders = _unique(name, "venue", venue.open_orders, "client_id")

    def recent(f: Fill) -> bool:
        return fills_since_ns is None or f.ts_event >= fills_since_ns

    lo_fills = _unique(name, "local", [f for f in local.fills if recent(f)], "fill_id")
    ve_fills = _unique(name, "venue", [f for f in venue.fills if recent(f)], "fill_id")
    records = (*_balances(name, local.balances, venue.balances, tolerance),
               *_by_key("open_order", name, lo_orders, ve_orders),
               *_by_key("fill", name, lo_fills, ve_fills))
    beyond = tuple(r.describe() for r in records if not r.within_tolerance)
    decision = Decision(name, "stop" if beyond else "continue", beyond)
    fills = sorted([*(f for f in local.fills if not recent(f)), *ve_fills.values()],
                   key=lambda f: (f.ts_event, f.fill_id))
    corrected = VenueState(name, dict(sorted(venue.balances.items())),
                           tuple(ve_orders[k] for k in sorted(ve_orders)), tuple(fills))
    return VenueReconciliation(name, records, decision, corrected)


def reconcile(local: Mapping[str, VenueState], venue: Mapping[str, VenueState], tolerance: Tolerance,
              fills_since_ns: int | None = None) -> tuple[VenueReconciliation, ...]:
    """Reconcile every venue of either side, in venue order.

    A venue the account knows but whose state did not come back cannot be checked: it is stopped, its local
    state kept. A venue known only from its own answer is reconciled against an empty local state.

    >>> s = VenueState("okx", {"USDT": Decimal("5")}, (), ())
    >>> [(r.venue, r.decision.action, r.decision.reasons) for r in reconcile({"okx": s}, {}, Tolerance())]
    [('okx', 'stop', ('no state from the venue: cannot reconcile',))]
    >>> [(r.venue, r.decision.action, len(r.records)) for r in reconcile({"okx": s}, {"okx": s}, Tolerance())]
    [('okx', 'continue', 0)]
    """
    out = []
    for name in sorted(set(local) | set(venue)):
        if name not in venue:
            out.append(VenueReconciliation(name, (), Decision(name, "stop", (
                "no state from the venue: cannot reconcile",)), local[name]))
            continue
        out.append(reconcile_venue(local.get(name) or VenueState(name, {}, (), ()), venue[name], tolerance,
                                   fills_since_ns))
    return tuple(out)



def from_ccxt(venue: str, balance: Mapping[str, Any], open_orders: Sequence[Mapping[str, Any]],
              trades: Sequence[Mapping[str, Any]]) -> VenueState:
    """Build a venue's state from ccxt's unified answers: ``fetch_balance``, ``fetch_open_orders``, ``fetch_my_trades``.

    Balances are the ``total`` per currency; an order without ``clientOrderId`` is keyed by its venue id; times
    go from ccxt's ms to ns.

    >>> s = from_ccxt("binance", {"total": {"LTC": 0.919741, "BTC": 0}},
    ...               [{"clientOrderId": "c1", "id": "9", "symbol": "LTC/USDT", "side": "buy", "amount": 0.2,
    ...                 "filled": 0, "price": 50}],
    ...               [{"id": "t1", "order": "8", "symbol": "LTC/USDT", "side": "sell", "amount": 0.2,
    ...                 "price": 69.63, "fee": {"cost": 0.013926, "currency": "USDT"}, "timestamp": 1698138992358}])
    >>> s.balances
    {'BTC': Decimal('0'), 'LTC': Decimal('0.919741')}
    >>> str(s.open_orders[0]), str(s.fills[0]), s.fills[0].ts_event
    ('buy 0.2 LTC/USDT @ 50 filled 0', 'sell 0.2 LTC/USDT @ 69.63 fee 0.013926 USDT', 1698138992358000000)
    """
    totals = balance.get("total") or {}
    orders = tuple(OpenOrder(client_id=str(o.get("clientOrderId") or o["id"]), symbol=o["symbol"], side=o["side"],
                             amount=dec(o["amount"]), filled=dec(o.get("filled") or 0),
                             price=None if o.get("price") is None else dec(o["price"])) for o in open_orders)
    fills = tuple(Fill(fill_id=str(t["id"]), order_id=str(t.get("order") or ""), symbol=t["symbol"], side=t["side"],
                       amount=dec(t["amount"]), price=dec(t["price"]), fee=dec((t.get("fee") or {}).get("cost") or 0),
                       fee_currency=str((t.get("fee") or {}).get("currency") or ""),
                       ts_event=int(t["timestamp"]) * 1_000_000) for t in trades)
    return VenueState(venue, {c: dec(v) for c, v in sorted(totals.items()) if v is not None}, orders, fills)
