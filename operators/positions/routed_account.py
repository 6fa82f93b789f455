"""The account step with the router: targets per asset become parent orders, routed as IOC children.

One core per account, as `Account`: it owns cash, positions and working orders, so fills reach positions
without a loop. Here cash is held per venue *and currency* (``kraken:USDC``) and positions per venue *and
asset* (``kraken:BTC``): buying BTC with USDC on Kraken and selling it for USD there are two trades of one
Kraken BTC position. Each `CrossSection` is handled in a fixed order:

1. working children fill at the open of their instrument's first bar opening at or after the child's time
   plus the latency, as IOC limits against the liquidity known then, level by level and only at prices
   within the child's limit: the order book's levels when the data is a book (the last state before that
   open), else the top-of-book quote and its size, else that open ± the half spread for the router's share
   of the bar's volume; the rest is cancelled;
2. marks, quotes and volumes move to the bars';
3. instruments that went stale: their children expire;
4. on a rebalance, each asset's target weight becomes a parent order (the difference between the target
   and what is held and working across venues, at the asset's freshest mark in the account currency),
   which `route` splits over the venue instruments that carry the asset, ranked by executable price net of
   fees, within each venue's balance and rules; a parent no venue can carry is a ``denied`` (no market
   metadata anywhere) or ``skipped`` order status with every candidate's reason. With ``fill_on =
   "decision_close"`` the children fill at once against the decision bar;
5. equity, the positions that changed or are held on a rebalance, and the balances that changed (all of
   them on a rebalance).

Every value in the account currency uses the market rate of the venue that holds it
(`FxTable.rate(..., venue=)`): USDC cash on Kraken is worth what Kraken's BTC/USD and BTC/USDC imply.
Average cost, realised PnL and fees of a position are in the account currency at the rates of each fill.

Paper and live. With an `executor` (live trading), children are not simulated: each is handed to the
executor when it is decided, and what the venue did (its fills, or why not) is applied at once, since an IOC
order ends when the venue answers. The executor also reconciles: on the first cross-section and then every
`reconcile_every_ns`, it compares the account's cash with the venues' and returns the differences (written as
`ReconciliationRecord`s), the venues' balances (the venue is the truth: the account adopts them) and the venues
on which trading must stop; those get no more children. The executor does the I/O; this core only calls it
through the `Executor` protocol, so it stays free of network code and, without an executor, deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from headrace.errors import ConfigError, InvariantError
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
    Side,
    stable_id,
)
from operators.base import check_version
from operators.execution.markets import Rounded, check_order, round_amount
from operators.positions.account import (
    EXPIRED_END,
    EXPIRED_STALE,
    SKIPPED_NO_BAR,
    FillOn,
    Holding,
    check_fill_rule,
)
from operators.positions.fx import FxTable
from operators.risk.engine import Book, RiskEngine, RiskOut, RiskSnap, relative_spread
from operators.risk.engine import Holding as RiskHolding
from operators.risk.pretrade import OrderCheck
from operators.router.listings import Listing
from operators.router.matching import match_ioc
from operators.router.sor import NO_METADATA, Candidate, Level, Parent, RoutePlan, route

RoutedOut = (Order | Fill | Position | Equity | OrderStatus | RoutingDecision | Balance | Alert
             | ReconciliationRecord | RiskOut)


@dataclass(frozen=True, slots=True)
class Execution:
    """What a venue did with one child order: its fills and, unless it filled completely, the end and why."""

    fills: tuple[tuple[str, float, float, float], ...]  # venue fill id, price (quote), amount (base), fee (quote)
    status: Literal["filled", "cancelled", "rejected", "expired", "unknown"]
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Reconciled:
    """The outcome of one reconciliation: differences, the venues' balances, and venues to stop trading on."""

    records: tuple[ReconciliationRecord, ...]
    balances: tuple[tuple[str, str, float], ...]  # venue, currency, amount: the venues' truth
    stopped: frozenset[str]


class Executor(Protocol):
    """The live venues behind the account step (implemented with ccxt in `sinks/ccxt_executor.py`)."""

    def submit(self, order: Order, ts: int) -> Execution: ...

    def reconcile(self, ts: int, cash: Mapping[tuple[str, str], float]) -> Reconciled: ...

    def alerts(self, ts: int) -> list[Alert]: ...


@dataclass(frozen=True, slots=True)
class WorkingChild:
    """A routed child waiting for the first bar of its instrument that opens at or after `due`."""

    order: Order
    due: int
    reserved: float  # buy: quote currency held back for it (fee included); sell: base units


@dataclass(frozen=True, slots=True)
class RoutedAccountSnap:
    version: int
    funded: bool
    cash: tuple[tuple[str, str, float], ...]  # venue, currency, amount
    holdings: tuple[tuple[str, str, Holding], ...]  # venue, asset, holding (account currency)
    marks: tuple[tuple[str, float, int], ...]
    quotes: tuple[tuple[str, float, float], ...]
    volumes: tuple[tuple[str, float], ...]
    sizes: tuple[tuple[str, float, float], ...]  # instrument, last bid size, ask size
    books: tuple[tuple[str, tuple[tuple[float, float], ...], tuple[tuple[float, float], ...]], ...]
    stale: tuple[str, ...]
    working: tuple[WorkingChild, ...]
    fees_account: float
    traded_account: float
    last_ts: int
    risk: RiskSnap | None = None


class RoutedAccount:
    """Cash per venue and currency, positions per venue and asset, orders routed across venues.

    Parameters
    ----------
    listings
        Per asset, the venue instruments that may carry it (`listings_by_asset`).
    fx
        Market rates into the account currency (`fx.currency`), fixed rates as the fallback.
    balances
        Starting cash per (venue, currency).
    band_bps, max_volume_share
        The router's price-protection band, and the share of a bar's volume a child may take.
    quote_max_age_ns
        An instrument whose last bar is older than this gets no children.
    """

    def __init__(self, account_id: str, listings: Mapping[str, Sequence[Listing]], fx: FxTable, *,
                 balances: Mapping[tuple[str, str], float], min_trade_weight: float, latency_ns: int = 0,
                 fill_on: FillOn = "next_open", band_bps: float = 50.0, max_volume_share: float = 0.1,
                 quote_max_age_ns: int = 15 * 60 * 10**9, executor: Executor | None = None,
                 reconcile_every_ns: int = 5 * 60 * 10**9, risk: RiskEngine | None = None) -> None:
        check_fill_rule(fill_on, latency_ns)
        if not balances and executor is None:
            raise ConfigError("account.balances", "the router needs starting cash per venue and currency (live "
                                                  "trading takes it from the venues)")
        self.account_id = account_id
        self.listings = {a: tuple(sorted(ls, key=lambda x: x.instrument)) for a, ls in sorted(listings.items())}
        self._of = {li.instrument: li for ls in self.listings.values() for li in ls}
        self.fx = fx
        self.balances = dict(balances)
        self.min_trade_weight = min_trade_weight
        self.latency_ns = latency_ns
        self.fill_on: FillOn = fill_on
        self.band_bps = band_bps
        self.max_volume_share = max_volume_share
        self.quote_max_age_ns = quote_max_age_ns
        self.executor = executor
        self.reconcile_every_ns = reconcile_every_ns
        self._next_reconcile = -1
        self._stopped: set[str] = set()
        self._funded = False
        self._cash: dict[tuple[str, str], float] = {}
        self._holdings: dict[tuple[str, str], Holding] = {}
        self._marks: dict[str, float] = {}
        self._mark_ts: dict[str, int] = {}
        self._quotes: dict[str, tuple[float, float]] = {}
        self._volumes: dict[str, float] = {}
        self._sizes: dict[str, tuple[float, float]] = {}
        self._books: dict[str, tuple[tuple[tuple[float, float], ...], tuple[tuple[float, float], ...]]] = {}
        self._stale: set[str] = set()
        self._working: list[WorkingChild] = []
        self._fees_account = 0.0
        self._traded_account = 0.0
        self._last_ts = -1
        self.risk = risk  # keys: the assets; parents are checked before they are routed

    # -- the step -------------------------------------------------------------------------------

    def update(self, cs: CrossSection) -> list[RoutedOut]:
        if cs.ts_event <= self._last_ts:
            raise InvariantError(f"account {self.account_id}: cross sections out of order, {cs.ts_event} "
                                 f"after {self._last_ts}")
        self._last_ts = cs.ts_event
        out: list[RoutedOut] = []
        changed: set[tuple[str, str]] = set()  # balances
        touched: set[tuple[str, str]] = set()  # positions
        if not self._funded:
            self._cash = dict(sorted(self.balances.items()))
            self._funded = True
            changed |= set(self._cash)
        if self.executor is not None and cs.ts_event >= self._next_reconcile:
            out += self._reconcile(cs.ts_event, changed)
        bars = {b.instrument: b for b in cs.bars}
        for w in list(self._working):  # 1. children whose first bar at or after their due time is here
            bar = bars.get(w.order.instrument)
            if bar is not None and bar.ts_open >= w.due:
                self._working.remove(w)  # before it executes: its reservation is no longer held back
                out += self._execute(w, bar, "open", changed, touched)
        for b in cs.bars:  # 2. marks, quotes, volumes
            self._marks[b.instrument] = b.close
            self._mark_ts[b.instrument] = b.ts_event
            self._volumes[b.instrument] = b.volume
            if b.bid is not None and b.ask is not None and 0 < b.bid <= b.ask:
                self._quotes[b.instrument] = (b.bid, b.ask)
                if b.bid_size is not None and b.ask_size is not None:
                    self._sizes[b.instrument] = (b.bid_size, b.ask_size)
            if b.bids or b.asks:
                self._books[b.instrument] = (b.bids, b.asks)
        for st in cs.statuses:  # 3. instruments whose data stopped, or resumed
            if st.status == "stale":
                self._stale.add(st.instrument)
                gone = [w for w in self._working if w.order.instrument == st.instrument]
                self._working = [w for w in self._working if w.order.instrument != st.instrument]
                out += [self._status(w.order.order_id, w.order.instrument, cs.ts_event, "expired", EXPIRED_STALE)
                        for w in gone]
            else:
                self._stale.discard(st.instrument)
            li = self._of.get(st.instrument)
            if li is not None and (li.venue, li.base) in self._holdings:
                touched.add((li.venue, li.base))
        if self.risk is not None:
            out += self._observe_risk(self.risk, cs)
        if cs.targets:  # 4. decisions
            out += self._decide(cs, bars, changed, touched)
        out.append(self._equity(cs.ts_event))  # 5. records
        if cs.targets:
            touched |= {k for k, h in self._holdings.items() if h.amount != 0}
            changed |= {k for k, v in self._cash.items() if v != 0}
        out += [self._position(k, cs.ts_event) for k in sorted(touched)]
        out += [self._balance(k, cs.ts_event) for k in sorted(changed)]
        if self.executor is not None:
            out += self.executor.alerts(cs.ts_event)
        if self.risk is not None:
            book = self._book()
            out += self.risk.assess(cs.ts_event, book)
            if cs.targets:
                out += self.risk.stress(cs.ts_event, book, self.fx.currency)[1]
                out += self.risk.limit_rows(cs.ts_event, book)
        return out

    # -- risk -----------------------------------------------------------------------------------

    def _observe_risk(self, risk: RiskEngine, cs: CrossSection) -> list[RoutedOut]:
        prices: dict[str, float] = {}
        spreads: dict[str, float] = {}
        volumes: dict[str, float] = {}
        for b in cs.bars:
            li = self._of.get(b.instrument)
            if li is None or (mark := self._asset_mark(li.base)) is None:
                continue
            prices[li.base] = mark
            volumes[li.base] = volumes.get(li.base, 0.0) + b.volume * mark
            if (spread := relative_spread(b.bid, b.ask)) is not None:
                spreads[li.base] = spread
        records, halted = risk.begin(cs.ts_event, prices, spreads, volumes)
        out: list[RoutedOut] = list(records)
        if halted:  # a halt cancels every working child
            gone, self._working = self._working, []
            out += [self._status(w.order.order_id, w.order.instrument, cs.ts_event, "cancelled", "trading halted")
                    for w in gone]
        return out

    def _book(self) -> Book:
        cash = tuple((v, c, x * self._rate(c, v)) for (v, c), x in sorted(self._cash.items()) if x != 0)
        holdings = []
        for (venue, asset), h in sorted(self._holdings.items()):
            if h.amount == 0:
                continue
            quote = next((li.quote for li in self.listings.get(asset, ()) if li.venue == venue), "")
            holdings.append(RiskHolding(key=asset, venue=venue, asset=asset, quote=quote,
                                        value=self._value((venue, asset))))
        equity = sum(x for _, _, x in cash) + sum(h.value for h in holdings)
        return Book(equity=equity, holdings=tuple(holdings), cash=cash)

    def _pre_trade(self, risk: RiskEngine, parent_id: str, asset: str, side: Side, amount: float, mark: float,
                   current: float, equity: float, exposure: dict[str, float], ts: int,
                   out: list[RoutedOut]) -> float:
        """The amount of a parent order the risk engine lets through (0: denied, with its records)."""
        sign = 1.0 if side == "buy" else -1.0
        before = exposure.get(asset, current * mark)
        gross_before = sum(abs(v) for v in exposure.values())
        net_before = sum(exposure.values())

        def make(q: float) -> OrderCheck:
            d = sign * q * mark
            return OrderCheck(instrument=asset, asset=asset, notional=q * mark, price=mark, mark=mark,
                              position_before=before, position_after=before + d, asset_before=before,
                              asset_after=before + d, gross_before=gross_before,
                              gross_after=gross_before - abs(before) + abs(before + d), net_before=net_before,
                              net_after=net_before + d, equity=equity)

        verdict = risk.check(ts, parent_id, side, amount, current, make)
        if verdict.denial is not None:
            out.append(verdict.denial)
        if verdict.amount <= 0:
            reason = f"risk: {verdict.denial.reason}" if verdict.denial is not None else "risk"
            out.append(self._status(parent_id, asset, ts, "denied", reason))
            return 0.0
        exposure[asset] = before + sign * verdict.amount * mark
        return verdict.amount

    def _reconcile(self, ts: int, changed: set[tuple[str, str]]) -> list[RoutedOut]:
        """Compare cash with the venues, adopt their balances, stop the venues beyond tolerance."""
        assert self.executor is not None
        self._next_reconcile = ts + self.reconcile_every_ns
        result = self.executor.reconcile(ts, dict(self._cash))
        for venue, ccy, amount in result.balances:
            if self._cash.get((venue, ccy)) != amount:
                self._cash[(venue, ccy)] = amount
                changed.add((venue, ccy))
        out: list[RoutedOut] = list(result.records)
        for venue in sorted(result.stopped - self._stopped):
            out.append(Alert(account=self.account_id, venue=venue, ts_event=ts, kind="venue_stopped",
                             message=f"trading on {venue} stopped: reconciliation found differences beyond "
                                     f"tolerance ({sum(r.venue == venue for r in result.records)} records)"))
        self._stopped = set(result.stopped)
        return out

    def flush(self) -> list[RoutedOut]:
        """At the end of input: children still working expire; final positions and balances."""
        if self._last_ts < 0:
            return []
        out: list[RoutedOut] = [self._status(w.order.order_id, w.order.instrument, self._last_ts, "expired",
                                             EXPIRED_END) for w in self._working]
        self._working = []
        out += [self._position(k, self._last_ts) for k in sorted(self._holdings)]
        return out + [self._balance(k, self._last_ts) for k in sorted(self._cash)]

    # -- decisions ------------------------------------------------------------------------------

    def _decide(self, cs: CrossSection, bars: Mapping[str, Bar], changed: set[tuple[str, str]],
                touched: set[tuple[str, str]]) -> list[RoutedOut]:
        out: list[RoutedOut] = []
        ts = cs.ts_event
        equity = self._equity_value()
        targets = cs.targets
        exposure: dict[str, float] = {}
        if self.risk is not None:
            k, records = self.risk.scale(ts, {t.instrument: t.weight for t in targets})
            out += records
            if k < 1.0:
                targets = tuple(replace(t, weight=t.weight * k) for t in targets)
            for asset in self.listings:
                m = self._asset_mark(asset)
                held = self._pending(asset)
                if m is not None and held != 0:
                    exposure[asset] = held * m
        for t in sorted(targets, key=lambda x: x.instrument):
            asset = t.instrument
            mark = self._asset_mark(asset)
            if asset not in self.listings or mark is None or not equity > 0:
                continue
            current = self._pending(asset)
            delta = t.weight * equity / mark - current
            if delta == 0 or abs(delta) * mark < self.min_trade_weight * equity:
                continue
            side: Side = "buy" if delta > 0 else "sell"
            parent_id = stable_id("parent", self.account_id, asset, ts)
            amount = abs(delta)
            if self.risk is not None:
                amount = self._pre_trade(self.risk, parent_id, asset, side, amount, mark, current, equity, exposure,
                                         ts, out)
                if amount <= 0:
                    continue
            parent = Parent(parent_id=parent_id, account=self.account_id,
                            asset=asset, side=side, amount=amount, ts_event=ts, band_bps=self.band_bps)
            plan = route(parent, [self._candidate(li, side, ts) for li in self.listings[asset]
                                  if li.venue not in self._stopped])
            out += self._records(plan, t.weight)
            if not plan.children:
                out.append(self._unrouted(plan, ts))
                continue
            for child in plan.children:
                order = Order(order_id=child.child_id, account=self.account_id, instrument=child.instrument,
                              ts_event=ts, side=side, amount=child.base_amount or child.amount, reason="route",
                              target_weight=t.weight, parent_id=parent.parent_id,
                              limit_price=self._band_limit(child.instrument, side, order_amount=child.amount,
                                                           fallback=child.limit_price, ts=ts))
                out.append(order)
                reserved = child.expected_price * order.amount + child.expected_fee if side == "buy" else order.amount
                w = WorkingChild(order, ts + self.latency_ns, reserved)
                if self.executor is not None:
                    out += self._apply_execution(order, self.executor.submit(order, ts), ts, changed, touched)
                elif self.fill_on == "next_open":
                    self._working.append(w)
                elif (bar := bars.get(order.instrument)) is None:
                    out.append(self._status(order.order_id, order.instrument, ts, "skipped", SKIPPED_NO_BAR))
                else:
                    out += self._execute(w, bar, "close", changed, touched)
        return out

    def _candidate(self, li: Listing, side: Side, ts: int) -> Candidate:
        """What the router sees of one listing at `ts`: its top level (from bars), rate and free balance."""
        mark, mark_ts = self._marks.get(li.instrument), self._mark_ts.get(li.instrument, 0)
        levels, source = self._depth(li, side, None)
        if mark is None or li.instrument in self._stale or ts - mark_ts > self.quote_max_age_ns:
            levels = ()
        fx = self.fx.rate(li.quote, self._marks, self._mark_ts, venue=li.venue)
        return Candidate(instrument=li.instrument, market=li.market, levels=levels, fx=fx, fee_rate=li.fee_rate,
                         available=self._free(li, side), depth_source=source)

    def _free(self, li: Listing, side: str) -> float:
        """What `li`'s venue holds for a new child of `side`, less what working children hold back: quote
        currency for a buy (fees included), the base asset for a sell."""
        key = (li.venue, li.quote if side == "buy" else li.base)
        held = self._cash.get(key, 0.0) if side == "buy" else self._holdings.get(key, Holding()).amount
        same = [w for w in self._working if w.order.side == side and self._free_key(w.order) == key]
        return max(held - sum(w.reserved for w in same), 0.0)

    def _free_key(self, o: Order) -> tuple[str, str]:
        """Where a working child's reservation is held: its venue's quote currency (buy) or base asset (sell)."""
        li = self._of[o.instrument]
        return li.venue, li.quote if o.side == "buy" else li.base

    def _depth(self, li: Listing, side: str, bar: Bar | None) -> tuple[tuple[Level, ...], str]:
        """The liquidity a child of `side` can take on `li`, best first, and where it comes from.

        The book's levels (source "book") when the data is an order book; else the top-of-book quote with its
        size ("quote"); else one level at the price ± the half spread for the router's share of the volume
        ("bar"). With `bar`, the bar-based level is at that bar's open and volume (a fill at its open);
        without, at the last close and volume (what the router sees when it decides).
        """
        inst = li.instrument
        if (book := self._books.get(inst)) is not None:
            side_levels = book[1] if side == "buy" else book[0]
            return tuple(Level(p, a) for p, a in side_levels if p > 0 and a > 0), "book"
        quote, sizes = self._quotes.get(inst), self._sizes.get(inst)
        if quote is not None and sizes is not None:
            price, size = (quote[1], sizes[1]) if side == "buy" else (quote[0], sizes[0])
            return ((Level(price, size),) if price > 0 and size > 0 else ()), "quote"
        if bar is not None:
            ref, volume = bar.open, bar.volume
        elif (mark := self._marks.get(inst)) is not None:
            ref, volume = mark, self._volumes.get(inst, 0.0)
        else:
            return (), "bar"
        hs = (quote[1] - quote[0]) / (quote[1] + quote[0]) if quote is not None else li.half_spread
        price = ref * (1 + hs) if side == "buy" else ref * (1 - hs)
        depth = self.max_volume_share * volume
        return ((Level(price, depth),) if depth > 0 and price > 0 else ()), "quote" if quote else "bar"

    def _band_limit(self, instrument: str, side: Side, *, order_amount: float, fallback: float, ts: int) -> float:
        """The child's IOC limit at the edge of the price-protection band around its venue's current price.

        The router's limit is the worst level it expects to take; with depth from bars the next open moves
        away from that level, so the child is sent with the band's edge, on the price grid, when the order
        still passes its market's limits there (else the router's limit).
        """
        li = self._of[instrument]
        mark = self._marks.get(instrument)
        if mark is None or li.market is None:
            return fallback
        edge = mark * (1 + self.band_bps / 1e4) if side == "buy" else mark * (1 - self.band_bps / 1e4)
        checked = check_order(li.market, side, order_amount, edge)
        if not isinstance(checked, Rounded):
            return fallback
        price = float(checked.price)
        return max(price, fallback) if side == "buy" else min(price, fallback)

    def _records(self, plan: RoutePlan, weight: float) -> list[RoutingDecision]:
        p = plan.parent
        child_of = {c.instrument: c.child_id for c in plan.children}
        return [RoutingDecision(parent_id=p.parent_id, account=p.account, asset=p.asset, ts_event=p.ts_event,
                                side=p.side, parent_amount=p.amount, instrument=r.instrument,
                                depth_source=r.depth_source, best_price_account=r.best_price_account,
                                depth_amount=r.depth_amount, chosen_amount=r.chosen_amount,
                                expected_price=r.expected_price, child_id=child_of.get(r.instrument, ""),
                                reason=r.reason) for r in plan.candidates]

    def _unrouted(self, plan: RoutePlan, ts: int) -> OrderStatus:
        """A parent with no child: denied when no venue has metadata for it, else skipped; every reason named."""
        reasons = [r.reason for r in plan.candidates]
        status: Literal["denied", "skipped"] = "denied" if reasons and all(
            r == NO_METADATA for r in reasons) else "skipped"
        text = "; ".join(f"{r.instrument}: {r.reason}" for r in plan.candidates) or "no venue carries the asset"
        return self._status(plan.parent.parent_id, plan.parent.asset, ts, status, text)

    # -- execution ------------------------------------------------------------------------------

    def _execute(self, w: WorkingChild, bar: Bar, at: Literal["open", "close"], changed: set[tuple[str, str]],
                 touched: set[tuple[str, str]]) -> list[RoutedOut]:
        """Fill a child as an IOC limit against `bar` (its open or close); the rest is cancelled."""
        o = w.order
        li = self._of[o.instrument]
        # at the decision bar's close its closing book, quote and volume are already taken in; at a later bar's
        # open, not yet: the state then is the one before that bar (bar-based depth uses the bar's open)
        levels, source = self._depth(li, o.side, None if at == "close" else bar)
        limit = o.limit_price if o.limit_price is not None else (levels[0].price if levels else 0.0)
        amount = o.amount
        if o.side == "buy" and limit > 0:  # a venue fills no more than the cash it holds (free + this child's)
            amount = min(amount, self._free(li, "buy") / (limit * (1 + li.fee_rate)))
        taken = match_ioc(o.side, amount, limit, levels) if amount > 0 else ()
        filled = sum(a for _, a in taken)
        if li.market is not None and 0 < filled < o.amount:
            filled = float(round_amount(li.market, filled))
        if len(taken) == 1:  # one level: its price exactly (a weighted mean of one would round)
            price = taken[0][0]
        elif taken:
            price = sum(p * a for p, a in taken) / sum(a for _, a in taken)
        else:
            price = levels[0].price if levels else 0.0
        ts = bar.ts_open if at == "open" else bar.ts_event
        out: list[RoutedOut] = []
        if filled > 0:
            mid = self._marks.get(o.instrument, price)
            fill = Fill(fill_id=stable_id("fill", o.order_id), order_id=o.order_id, account=o.account,
                        instrument=o.instrument, ts_event=ts, side=o.side, price=price, amount=filled,
                        fee=price * filled * li.fee_rate, fee_currency=li.quote, liquidity="taker",
                        slippage_bps=abs(price / mid - 1.0) * 1e4 if mid > 0 else 0.0)
            self._apply(fill, li)
            changed.add((li.venue, li.quote))
            touched.add((li.venue, li.base))
            out.append(fill)
        if filled < o.amount:
            why = (f"IOC: no liquidity ({source})" if not levels else
                   f"IOC: {levels[0].price:.10g} beyond the limit {limit:.10g}" if not taken else
                   f"IOC: {filled:.10g} of {o.amount:.10g} filled, depth ({source}) or cash ran out")
            out.append(self._status(o.order_id, o.instrument, ts, "cancelled", why))
        return out

    def _apply_execution(self, o: Order, ex: Execution, ts: int, changed: set[tuple[str, str]],
                         touched: set[tuple[str, str]]) -> list[RoutedOut]:
        """Apply what a live venue did with child `o`: its fills, then the end of the rest."""
        li = self._of[o.instrument]
        out: list[RoutedOut] = []
        for venue_fill_id, price, amount, fee in ex.fills:
            fill = Fill(fill_id=stable_id("fill", o.order_id, venue_fill_id), order_id=o.order_id,
                        account=o.account, instrument=o.instrument, ts_event=ts, side=o.side, price=price,
                        amount=amount, fee=fee, fee_currency=li.quote, liquidity="taker", slippage_bps=0.0)
            self._apply(fill, li)
            changed.add((li.venue, li.quote))
            touched.add((li.venue, li.base))
            out.append(fill)
        if ex.status != "filled":
            status: Literal["cancelled", "skipped", "expired"] = (
                "expired" if ex.status == "expired" else "skipped" if ex.status in ("rejected", "unknown")
                else "cancelled")
            out.append(self._status(o.order_id, o.instrument, ts, status, f"{ex.status}: {ex.reason}"[:300]))
        return out

    def _apply(self, fill: Fill, li: Listing) -> None:
        rate = self._rate(li.quote, li.venue)
        signed = -fill.notional if fill.side == "buy" else fill.notional
        key = (li.venue, li.quote)
        self._cash[key] = self._cash.get(key, 0.0) + signed - fill.fee
        pos = (li.venue, li.base)
        self._holdings[pos] = self._holdings.get(pos, Holding()).apply(
            replace(fill, price=fill.price * rate, fee=fill.fee * rate))
        self._fees_account += fill.fee * rate
        self._traded_account += fill.notional * rate

    # -- valuation ------------------------------------------------------------------------------

    def _pending(self, asset: str) -> float:
        """The asset's position over every venue once the working children fill (base units, signed)."""
        return (sum(h.amount for (_, a), h in self._holdings.items() if a == asset)
                + sum(self._signed(w.order) for w in self._working if self._of[w.order.instrument].base == asset))

    @staticmethod
    def _signed(o: Order) -> float:
        return o.amount if o.side == "buy" else -o.amount

    def _rate(self, ccy: str, venue: str) -> float:
        rate = self.fx.rate(ccy, self._marks, self._mark_ts, venue=venue)
        if rate is None:
            raise InvariantError(f"account {self.account_id}: holds {ccy} on {venue} but no rate is known yet; "
                                 f"set account.fx_rates.{ccy} as the fallback")
        return rate

    def _venue_mark(self, venue: str, asset: str) -> tuple[float, int] | None:
        """The freshest price of `asset` on `venue` in the account currency, and its time."""
        best: tuple[float, int] | None = None
        for li in self.listings.get(asset, ()):
            m = self._marks.get(li.instrument)
            if li.venue != venue or m is None:
                continue
            rate = self.fx.rate(li.quote, self._marks, self._mark_ts, venue=venue)
            ts = self._mark_ts[li.instrument]
            if rate is not None and (best is None or ts > best[1]):
                best = (m * rate, ts)
        return best

    def _asset_mark(self, asset: str) -> float | None:
        """The freshest price of `asset` on any venue, in the account currency."""
        marks = [m for v in sorted({li.venue for li in self.listings.get(asset, ())})
                 if (m := self._venue_mark(v, asset)) is not None]
        return max(marks, key=lambda x: x[1])[0] if marks else None

    def _value(self, key: tuple[str, str]) -> float:
        h = self._holdings[key]
        if h.amount == 0:
            return 0.0
        mark = self._venue_mark(*key)
        if mark is None:
            raise InvariantError(f"account {self.account_id}: holds {key[1]} on {key[0]} without a price there")
        return h.amount * mark[0]

    def _cash_value(self) -> float:
        return sum(v * self._rate(c, venue) for (venue, c), v in sorted(self._cash.items()) if v != 0)

    def _equity_value(self) -> float:
        return self._cash_value() + sum(self._value(k) for k in sorted(self._holdings))

    def _equity(self, ts: int) -> Equity:
        cash = self._cash_value()
        values = [self._value(k) for k in sorted(self._holdings)]
        return Equity(account=self.account_id, ts_event=ts, equity=cash + sum(values), cash=cash,
                      gross_exposure=sum(abs(v) for v in values), net_exposure=sum(values),
                      fees=self._fees_account, traded=self._traded_account, currency=self.fx.currency)

    def _position(self, key: tuple[str, str], ts: int) -> Position:
        venue, asset = key
        h = self._holdings.get(key, Holding())
        mark = self._venue_mark(venue, asset)
        price, mark_ts = mark if mark is not None else (0.0, 0)
        stale = all(li.instrument in self._stale for li in self.listings.get(asset, ()) if li.venue == venue)
        return Position(account=self.account_id, instrument=f"{venue}:{asset}", ts_event=ts, amount=h.amount,
                        avg_price=h.avg_price, mark=price, unrealized_pnl=h.amount * (price - h.avg_price),
                        realized_pnl=h.realized, fees=h.fees, value_account=h.amount * price, mark_ts=mark_ts,
                        stale=stale)

    def _balance(self, key: tuple[str, str], ts: int) -> Balance:
        venue, ccy = key
        amount = self._cash.get(key, 0.0)
        rate = self.fx.rate(ccy, self._marks, self._mark_ts, venue=venue)
        r = rate if rate is not None else math.nan
        return Balance(account=self.account_id, venue=venue, currency=ccy, ts_event=ts, amount=amount, rate=r,
                       value_account=amount * r)

    def _status(self, order_id: str, instrument: str, ts: int,
                status: Literal["expired", "skipped", "cancelled", "denied"], reason: str) -> OrderStatus:
        return OrderStatus(order_id=order_id, account=self.account_id, instrument=instrument, ts_event=ts,
                           status=status, reason=reason)

    # -- state ----------------------------------------------------------------------------------

    def snapshot(self) -> RoutedAccountSnap:
        return RoutedAccountSnap(
            version=3, funded=self._funded,
            cash=tuple((v, c, x) for (v, c), x in sorted(self._cash.items())),
            holdings=tuple((v, a, h) for (v, a), h in sorted(self._holdings.items())),
            marks=tuple((k, m, self._mark_ts[k]) for k, m in sorted(self._marks.items())),
            quotes=tuple((k, b, a) for k, (b, a) in sorted(self._quotes.items())),
            volumes=tuple(sorted(self._volumes.items())),
            sizes=tuple((k, b, a) for k, (b, a) in sorted(self._sizes.items())),
            books=tuple((k, b, a) for k, (b, a) in sorted(self._books.items())),
            stale=tuple(sorted(self._stale)), working=tuple(self._working),
            fees_account=self._fees_account, traded_account=self._traded_account, last_ts=self._last_ts,
            risk=self.risk.snapshot() if self.risk is not None else None)

    def restore_state(self, snap: RoutedAccountSnap) -> RoutedAccount:
        """Load `snap` into this (freshly built) core and return it."""
        check_version(snap, expected=3)
        if self.risk is not None and snap.risk is not None:
            self.risk = RiskEngine.restore(self.risk.s, self.risk.keys, snap.risk, self.risk.inbox)
        self._funded = snap.funded
        self._cash = {(v, c): x for v, c, x in snap.cash}
        self._holdings = {(v, a): h for v, a, h in snap.holdings}
        self._marks = {k: m for k, m, _ in snap.marks}
        self._mark_ts = {k: t for k, _, t in snap.marks}
        self._quotes = {k: (b, a) for k, b, a in snap.quotes}
        self._volumes = dict(snap.volumes)
        self._sizes = {k: (b, a) for k, b, a in snap.sizes}
        self._books = {k: (b, a) for k, b, a in snap.books}
        self._stale = set(snap.stale)
        self._working = list(snap.working)
        self._fees_account, self._traded_account = snap.fees_account, snap.traded_account
        self._last_ts = snap.last_ts
        return self
