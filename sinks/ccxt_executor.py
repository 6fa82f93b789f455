"""`CcxtExecutor`: the routed account's `Executor` over live venues (`Venue`, usually `CcxtVenue`).

The account step (`operators.positions.routed_account.RoutedAccount`) decides IOC children and hands each to
`submit` when it is decided; it reconciles its cash with the venues through `reconcile`, and drains `alerts`
after every cross-section. This class does the I/O and never raises for a venue's error: every outcome of a
child is an `Execution`, every venue that does not answer a reconciliation is stopped, with the reason.

Client order ids. A child's id is ``client_order_id(account, parent, venue, child_seq)`` with `parent` the
child's parent order id (its own order id when it has no parent) and ``child_seq`` the first 48 bits of a hash
of the child's order id (`child_seq`). Two children of one parent on one venue (two quote currencies) get two
ids; the same child sent again (after a crash) gets the same id, so the venue refuses a duplicate and
`CcxtVenue.submit` looks the order up instead of sending it twice. Since a venue may accept the id of a
*finished* order again (Binance refuses a duplicate only while the first is open), each child is first looked up
by its client id (one request): one the venue already has is not sent again, its outcome is returned. When that
lookup fails, the child is not sent (``unknown``): never an order twice.

Fills. A child's fills are the venue's own trades of that order (``fetch_my_trades``, matched by venue order
id or client id): real fill ids, prices, amounts and fees, a fee charged in the base currency converted to the
quote at the fill's price. When the trades cannot be read or do not add up to what the order says it filled,
one fill of ``filled`` at ``average`` stands for them, its fee estimated from the market's taker fee; the
Execution's reason says which (``fills from the venue's trades`` / ``fills estimated: ...``).

Reconciliation, per configured venue: the venue's balances of the currencies the account holds cash in there,
its open orders (the account keeps none: IOC children never stay open, so any open order is a difference) and
its fills in the `fills_window_ns` before the check, on the instruments this executor has traded there,
against the fills this executor saw (fills it only estimated are taken as the venue reports them). The
comparison is `operators.execution.reconcile.reconcile_venue` under the tolerance.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from decimal import Decimal

from headrace.events import Alert, Order, ReconciliationRecord, stable_id
from operators.execution.markets import Market, dec
from operators.execution.order_lifecycle import client_order_id
from operators.execution.reconcile import Fill as ReconFill
from operators.execution.reconcile import OpenOrder, Reconciliation, Tolerance, VenueState, reconcile_venue
from operators.execution.venue import OrderRequest, Venue, VenueFill, VenueOrder
from operators.positions.routed_account import Execution, Reconciled
from sinks.ccxt_venue import Throttled, redact

log = logging.getLogger("headrace.executor")

_TRADES_LOOKBACK_NS = 60 * 10**9  # a child's trades are read from this long before the venue's order time
_REL = 1e-9  # the trades of an order "add up" when they are within this fraction of its filled amount


def child_seq(order_id: str) -> int:
    """Return the child sequence number of the child order `order_id`: 48 bits of a hash of it.

    >>> child_seq("c-1") == child_seq("c-1"), child_seq("c-1") == child_seq("c-2"), 0 <= child_seq("x") < 2**48
    (True, False, True)
    """
    return int(stable_id("child_seq", order_id)[:12], 16)


def _text(v: object) -> str:
    return "absent" if v is None else str(v)


def _recon_fill(f: VenueFill, quote: str) -> ReconFill:
    symbol = f.instrument.partition(":")[2]
    return ReconFill(fill_id=f.fill_id, order_id=f.venue_order_id or f.client_id or "", symbol=symbol,
                     side="buy" if f.side == "buy" else "sell", amount=dec(f.amount), price=dec(f.price),
                     fee=dec(f.fee), fee_currency=f.fee_currency or quote, ts_event=f.ts)


def _open_order(o: VenueOrder) -> OpenOrder:
    return OpenOrder(client_id=o.client_id or (o.venue_id or ""), symbol=o.instrument.partition(":")[2],
                     side="buy" if o.side == "buy" else "sell", amount=dec(o.amount), filled=dec(o.filled),
                     price=None if o.price is None else dec(o.price))


class CcxtExecutor:
    """Sends the routed account's IOC children to live venues and reconciles the account with them.

    Parameters
    ----------
    account
        The account id (part of every client order id, and of the records and alerts).
    venues
        Per venue name (as in the instruments, ``binance:BTC/USDT``), its `Venue`.
    tolerance
        How far a balance may differ from the venue's before trading stops on that venue.
    fills_window_ns
        Reconciliation compares the fills of this window before the check.
    throttle_alert_s
        A venue's `Throttled` alerts of at least this many seconds become ``throttled`` `Alert`s.
    """

    def __init__(self, account: str, venues: Mapping[str, Venue], *, tolerance: Tolerance,
                 fills_window_ns: int = 3_600 * 10**9, throttle_alert_s: float = 60.0) -> None:
        if fills_window_ns <= 0:
            raise ValueError(f"fills_window_ns must be > 0, was {fills_window_ns!r}")
        self.account = account
        self.venues = dict(sorted(venues.items()))
        self.tolerance = tolerance
        self.fills_window_ns = fills_window_ns
        self.throttle_alert_s = throttle_alert_s
        self._fills: dict[str, list[ReconFill]] = {}  # per venue: the fills seen, with real venue fill ids
        self._estimated: dict[str, set[str]] = {}  # per venue: order ids (venue and client) whose fills were estimated
        self._traded: dict[str, set[str]] = {}  # per venue: the instruments sent to
        self._throttles_seen: dict[str, int] = {}
        self._pending: list[Alert] = []

    def __repr__(self) -> str:
        return f"CcxtExecutor({self.account!r}, venues={sorted(self.venues)})"

    # -- submit ---------------------------------------------------------------------------------------------

    def client_id(self, order: Order) -> str:
        """Return the client order id `order` is sent with (the same for the same child, always)."""
        venue = order.instrument.partition(":")[0]
        return client_order_id(self.account, order.parent_id or order.order_id, venue, child_seq(order.order_id))

    def submit(self, order: Order, ts: int) -> Execution:
        """Send child `order` as a limit IOC and return what the venue did with it."""
        venue_name, _, symbol = order.instrument.partition(":")
        venue = self.venues.get(venue_name)
        if venue is None:
            return Execution((), "rejected", f"venue {venue_name!r} is not configured for live trading "
                                             f"(configured: {', '.join(self.venues) or 'none'})")
        if order.limit_price is None:
            return Execution((), "rejected", "a market order: live children are sent as IOC limits only")
        try:
            cid = self.client_id(order)
        except ValueError as exc:
            return Execution((), "rejected", str(exc))
        try:
            market = venue.markets().get(symbol)
        except Exception as exc:  # noqa: BLE001 - any failure here means nothing was sent
            return Execution((), "rejected", redact(f"market metadata of {venue_name} unavailable: "
                                                    f"{type(exc).__name__}: {exc}"))
        if market is None:
            return Execution((), "rejected", f"no market metadata for {order.instrument}")
        self._traded.setdefault(venue_name, set()).add(order.instrument)
        try:  # sent before (a resubmission after a crash)? A venue may take a finished order's id again
            placed_before = venue.fetch_order_by_client_id(cid, order.instrument)
        except Exception as exc:  # noqa: BLE001
            return Execution((), "unknown", redact(f"client id {cid}: not sent, since the venue could not say "
                                                   f"whether it has it already: {type(exc).__name__}: {exc}"))
        if placed_before is not None:
            log.info("%s order %s already on the venue: not sent again", venue_name, cid)
            placed = placed_before
        else:
            request = OrderRequest(client_id=cid, instrument=order.instrument, side=order.side,
                                   amount=order.amount, price=order.limit_price)
            try:
                placed = venue.submit(request)
            except Exception as exc:  # noqa: BLE001 - the order may or may not be on the venue
                return Execution((), "unknown", redact(f"client id {cid}: {type(exc).__name__}: {exc}"))
        if placed.status in ("accepted", "partially_filled"):  # an IOC left working: take it off the book
            try:
                placed = venue.cancel(placed)
            except Exception as exc:  # noqa: BLE001
                return Execution(self._fills_of(venue, market, placed)[0], "unknown", redact(
                    f"client id {cid}: IOC left open on the venue and the cancel failed: {type(exc).__name__}"))
        return self._execution(venue, market, placed)

    def _execution(self, venue: Venue, market: Market, o: VenueOrder) -> Execution:
        if o.status == "rejected":
            return Execution((), "rejected", o.reason or "rejected by the venue")
        if o.status == "new":  # never reached the venue (throttled throughout)
            return Execution((), "rejected", f"not sent: {o.reason}")
        if o.status == "unknown":
            return Execution((), "unknown", f"client id {o.client_id}: acceptance unknown: {o.reason}")
        fills, how = self._fills_of(venue, market, o)
        if o.status == "filled":
            return Execution(fills, "filled", how)
        return Execution(fills, "cancelled", f"IOC: {o.filled:.10g} of {o.amount:.10g} filled, the rest "
                                             f"{'cancelled' if o.status == 'cancelled' else o.status} by the "
                                             f"venue; {how}")

    def _fills_of(self, venue: Venue, market: Market,
                  o: VenueOrder) -> tuple[tuple[tuple[str, float, float, float], ...], str]:
        """The order's fills (venue fill id, price, amount, fee in quote) and how they were found."""
        if o.filled <= 0:
            return (), "no fills"
        why = "the order has no venue id"
        if o.venue_id is not None:
            since = None if o.ts is None else o.ts - _TRADES_LOOKBACK_NS
            try:
                trades = [t for t in venue.fetch_my_trades(o.instrument, since)
                          if t.venue_order_id == o.venue_id or (t.client_id and t.client_id == o.client_id)]
            except Exception as exc:  # noqa: BLE001
                trades, why = [], f"trades unavailable ({type(exc).__name__})"
            else:
                total = sum(t.amount for t in trades)
                if trades and abs(total - o.filled) <= _REL * o.filled:
                    out = []
                    for t in trades:
                        fee = t.fee * t.price if t.fee_currency == market.base else t.fee
                        if t.fee_currency not in (None, market.base, market.quote):
                            fee = t.price * t.amount * float(market.taker_fee)
                        out.append((t.fill_id, t.price, t.amount, fee))
                    self._fills.setdefault(venue.name, []).extend(_recon_fill(t, market.quote) for t in trades)
                    other = sorted({t.fee_currency or "" for t in trades} - {"", market.base, market.quote})
                    note = f" (fees in {', '.join(other)} estimated from the taker fee)" if other \
                        else ""
                    return tuple(out), f"fills from the venue's trades{note}"
                why = f"the venue's trades of the order add up to {total:.10g}, not {o.filled:.10g}"
        price = o.average if o.average is not None else (o.price or 0.0)
        self._estimated.setdefault(venue.name, set()).update(x for x in (o.venue_id, o.client_id) if x)
        fee = o.filled * price * float(market.taker_fee)
        return ((f"{o.venue_id or o.client_id}-estimated", price, o.filled, fee),), \
            f"fills estimated: filled x average, fee at the taker fee {market.taker_fee} ({why})"

    # -- reconcile ------------------------------------------------------------------------------------------

    def reconcile(self, ts: int, cash: Mapping[tuple[str, str], float]) -> Reconciled:
        """Compare the account's cash (per venue and currency) with every venue's; the venue is the truth."""
        since = ts - self.fills_window_ns
        records: list[ReconciliationRecord] = []
        balances: list[tuple[str, str, float]] = []
        stopped: set[str] = set()
        tracked: dict[str, dict[str, float]] = {}
        for (where, ccy), amount in sorted(cash.items()):
            tracked.setdefault(where, {})[ccy] = amount
        for name in sorted(set(self.venues) | set(tracked)):
            self._fills[name] = [f for f in self._fills.get(name, []) if f.ts_event >= since]
            venue = self.venues.get(name)
            if venue is None:
                reason = "no venue configured for live trading: cannot reconcile"
            else:
                try:
                    remote = self._venue_state(venue, set(tracked.get(name, {})), since)
                    reason = ""
                except Exception as exc:  # noqa: BLE001 - a venue that does not answer is stopped
                    reason = redact(f"no answer from the venue: {type(exc).__name__}: {exc}")[:300]
            if reason:
                stopped.add(name)
                records.append(ReconciliationRecord(
                    account=self.account, venue=name, ts_event=ts, kind="venue", key=name, local="",
                    venue_value="absent", difference=reason, within_tolerance=False, action="stop"))
                self._pending.append(Alert(account=self.account, venue=name, ts_event=ts, kind="reconciliation",
                                           message=f"{name}: cannot reconcile: {reason}"))
                continue
            local = self._local_state(name, tracked.get(name, {}), remote)
            result = reconcile_venue(local, remote, self.tolerance, fills_since_ns=since)
            action = result.decision.action
            records += [self._record(r, ts, action) for r in result.records]
            balances += [(name, c, float(remote.balances.get(c, Decimal(0)))) for c in sorted(tracked.get(name, {}))]
            if action == "stop":
                stopped.add(name)
                reasons = "; ".join(result.decision.reasons)
                self._pending.append(Alert(
                    account=self.account, venue=name, ts_event=ts, kind="reconciliation",
                    message=f"{name}: {len(result.decision.reasons)} differences beyond tolerance: {reasons}"[:1000]))
            log.info("%s reconciled: %d differences, %s", name, len(result.records), action)
        return Reconciled(tuple(records), tuple(balances), frozenset(stopped))

    def _venue_state(self, venue: Venue, currencies: set[str], since: int) -> VenueState:
        bal = {b.currency: dec(b.total) for b in venue.fetch_balances() if b.currency in currencies}
        orders = tuple(_open_order(o) for o in venue.fetch_open_orders())
        fills: list[ReconFill] = []
        markets = venue.markets()
        for instrument in sorted(self._traded.get(venue.name, set())):
            market = markets.get(instrument.partition(":")[2])
            quote = market.quote if market is not None else ""
            fills += [_recon_fill(f, quote) for f in venue.fetch_my_trades(instrument, since) if f.ts >= since]
        return VenueState(venue.name, dict(sorted(bal.items())), orders, tuple(fills))

    def _local_state(self, name: str, cash: Mapping[str, float], remote: VenueState) -> VenueState:
        estimated = self._estimated.get(name, set())
        fills = {f.fill_id: f for f in self._fills.get(name, [])}
        fills |= {f.fill_id: f for f in remote.fills if f.order_id in estimated}  # known orders, fills unseen
        return VenueState(name, {c: dec(v) for c, v in sorted(cash.items())}, (),
                          tuple(sorted(fills.values(), key=lambda f: (f.ts_event, f.fill_id))))

    def _record(self, r: Reconciliation, ts: int, action: str) -> ReconciliationRecord:
        return ReconciliationRecord(account=self.account, venue=r.venue, ts_event=ts, kind=r.kind, key=r.key,
                                    local=_text(r.local), venue_value=_text(r.venue_value), difference=r.difference,
                                    within_tolerance=r.within_tolerance, action=action)

    # -- alerts ---------------------------------------------------------------------------------------------

    def alerts(self, ts: int) -> list[Alert]:
        """Return the alerts since the last call: venues throttled for long, reconciliations beyond tolerance."""
        out: list[Alert] = []
        for name, venue in self.venues.items():
            raised: Sequence[object] = getattr(venue, "alerts", ())
            seen = self._throttles_seen.get(name, 0)
            self._throttles_seen[name] = len(raised)
            for a in raised[seen:]:
                if isinstance(a, Throttled) and a.seconds >= self.throttle_alert_s:
                    out.append(Alert(account=self.account, venue=name, ts_event=ts, kind="throttled",
                                     message=f"{name} throttled for {a.seconds:.1f} s since {a.since_ns} (epoch ns)"))
        out += self._pending
        self._pending = []
        return out


__all__ = ["CcxtExecutor", "child_seq"]
