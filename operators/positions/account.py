"""The account step: cash and positions per venue, orders from targets, simulated fills, marks.

One core per account. It owns everything that fills change (positions, cash, working orders) so that
fills reach positions without a loop in the dataflow. Each `CrossSection` (all bars closed at one time,
plus targets on rebalance times and instruments that went stale or came back) is handled in a fixed order:

1. working orders fill at the open of their instrument's first bar that opens at or after the order's
   time plus the latency (a time, not a count of bars: instruments run on different clocks); the half
   spread is the one quoted when that bar opened (the last bid/ask known then), never the bar's own;
2. marks, their times and the last known quotes move to the bars' closes;
3. instruments that went stale: their working orders expire (an `OrderStatus`), their positions keep
   the last mark and are flagged stale;
4. on a rebalance, targets become market orders sized on current equity; with ``fill_on =
   "decision_close"`` they fill at once at the decision bar's close, or are skipped (an `OrderStatus`)
   when their instrument has no bar closing at the decision time;
5. with margin monitoring (derivatives, ``venue:BASE/QUOTE:SETTLE``): each venue's margin, its alerts and
   snapshot rows, and at critical the auto-reduce orders, sent like the rebalance's (operators/risk/margin_watch.py;
   funding was paid in step 2, at each funding event a bar of a held contract carries);
6. equity is recorded, and positions that changed or are held on a rebalance.

At the end of the data, `flush` expires the orders still working. Positions use average cost: realised
PnL when a position shrinks, fees kept apart (quote currency). Contracts are booked the same way (a buy debits
its notional), which is why the margin wallet is derived as cash + amount x entry (margin_watch.py).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from headrace.errors import ConfigError, InvariantError
from headrace.events import (
    Bar,
    CrossSection,
    Equity,
    Fill,
    Order,
    OrderStatus,
    Position,
    split_instrument,
    stable_id,
)
from operators.base import check_version
from operators.execution.sim_venue import Quote, SimulatedVenue
from operators.positions.fx import FxTable
from operators.risk.engine import Book, RiskEngine, RiskOut, RiskSnap, relative_spread
from operators.risk.engine import Holding as RiskHolding
from operators.risk.margin_watch import (
    REDUCE_REASON,
    MarginSettings,
    MarginWatch,
    MarginWatchSnap,
    is_derivative,
    settle_of,
)
from operators.risk.pretrade import OrderCheck

AccountOut = Order | Fill | Position | Equity | OrderStatus | RiskOut
FillOn = Literal["next_open", "decision_close"]

EXPIRED_STALE = "instrument stale"
EXPIRED_END = "end of data"
SKIPPED_NO_BAR = "no bar closes at the decision time"
CANCELLED_HALT = "trading halted"
_split = functools.lru_cache(maxsize=4096)(split_instrument)  # the risk engine's per-bar path splits the same names


def check_fill_rule(fill_on: str, latency_ns: int) -> None:
    """Raise `ConfigError` unless `fill_on` is known, the latency >= 0, and 0 with ``decision_close``."""
    if fill_on not in ("next_open", "decision_close"):
        raise ConfigError("account.fill_on", f"must be 'next_open' or 'decision_close', was {fill_on!r}")
    if latency_ns < 0:
        raise ConfigError("account.latency", f"must be >= 0, was {latency_ns!r} ns")
    if fill_on == "decision_close" and latency_ns != 0:
        raise ConfigError("account.fill_on", f"'decision_close' fills at the decision itself, so "
                                             f"account.latency must be 0s (was {latency_ns} ns)")


@dataclass(frozen=True, slots=True)
class Holding:
    """One instrument's position: signed base amount, average entry price, realised PnL and fees."""

    amount: float = 0.0
    avg_price: float = 0.0
    realized: float = 0.0
    fees: float = 0.0

    def apply(self, fill: Fill) -> Holding:
        """Return the holding after `fill` (average-cost accounting)."""
        signed = fill.amount if fill.side == "buy" else -fill.amount
        a, avg, realized = self.amount, self.avg_price, self.realized
        if a == 0 or (a > 0) == (signed > 0):
            new = a + signed
            avg = (abs(a) * avg + abs(signed) * fill.price) / abs(new)
        else:
            closed = min(abs(signed), abs(a))
            realized += closed * (fill.price - avg) * (1.0 if a > 0 else -1.0)
            new = a + signed
            if abs(signed) > abs(a):
                avg = fill.price  # flipped: the remainder opens at the fill price
            elif abs(new) <= 1e-12 * max(abs(a), 1.0):
                new, avg = 0.0, 0.0
        return Holding(amount=new, avg_price=avg, realized=realized, fees=self.fees + fill.fee)


@dataclass(frozen=True, slots=True)
class Working:
    """An order waiting for its fill: the first bar of its instrument that opens at or after `due`."""

    order: Order
    due: int  # order time + latency, ns


@dataclass(frozen=True, slots=True)
class AccountSnap:
    version: int
    funded: bool
    cash: tuple[tuple[str, str, float], ...]  # venue, currency, amount
    holdings: tuple[tuple[str, Holding], ...]
    marks: tuple[tuple[str, float, int], ...]  # instrument, last close, its bar's close time
    quotes: tuple[tuple[str, float, float], ...]  # instrument, last known bid, ask
    stale: tuple[str, ...]
    working: tuple[Working, ...]
    fees_account: float
    traded_account: float
    last_ts: int
    risk: RiskSnap | None = None
    margin: MarginWatchSnap | None = None


SNAP_VERSION = 4


class Account:
    """Cash and positions of one account, trading toward targets through a simulated venue.

    Parameters
    ----------
    account_id
        Written on every order, fill, position and equity row.
    fx
        Converts quote currencies into the account currency (`fx.currency`).
    initial_cash
        Cash in the account currency, split evenly over `venues` on the first bar.
    min_trade_weight
        Trades smaller than this fraction of equity are skipped.
    latency_ns
        Time from a decision until its order reaches the venue (``account.latency``).
    fill_on
        "next_open": at the open of the instrument's first bar opening at or after decision + latency;
        "decision_close": at the decision bar's close (latency must be 0).
    risk
        The risk engine (keys: the instruments): measures every bar, scales targets to the ES limit, checks every
        order, applies trading states (operators/risk/engine.py); None: no risk engine.
    margin
        Margin monitoring and funding of derivative positions (operators/risk/margin_watch.py); None: off.
    """

    def __init__(self, account_id: str, venues: Sequence[str], fx: FxTable, sim: SimulatedVenue, *,
                 initial_cash: float, min_trade_weight: float, latency_ns: int = 0,
                 fill_on: FillOn = "next_open", risk: RiskEngine | None = None,
                 margin: MarginSettings | None = None) -> None:
        check_fill_rule(fill_on, latency_ns)
        self.account_id = account_id
        self.venues = tuple(sorted(set(venues)))
        self.fx = fx
        self.sim = sim
        self.initial_cash = initial_cash
        self.min_trade_weight = min_trade_weight
        self.latency_ns = latency_ns
        self.fill_on: FillOn = fill_on
        self._funded = False
        self._cash: dict[tuple[str, str], float] = {}
        self._holdings: dict[str, Holding] = {}
        self._marks: dict[str, float] = {}
        self._mark_ts: dict[str, int] = {}
        self._quotes: dict[str, Quote] = {}
        self._stale: set[str] = set()
        self._working: list[Working] = []
        self._fees_account = 0.0
        self._traded_account = 0.0
        self._last_ts = -1
        self.risk = risk
        self.margin = MarginWatch(account_id, margin) if margin is not None else None

    # -- the step -------------------------------------------------------------------------------

    def update(self, cs: CrossSection) -> list[AccountOut]:
        if cs.ts_event <= self._last_ts:
            raise InvariantError(f"account {self.account_id}: cross sections out of order, {cs.ts_event} "
                                 f"after {self._last_ts}")
        self._last_ts = cs.ts_event
        if not self._funded:
            share = self.initial_cash / len(self.venues)
            self._cash = {(v, self.fx.currency): share for v in self.venues}
            self._funded = True
        out: list[AccountOut] = []
        touched: set[str] = set()
        bars = {b.instrument: b for b in cs.bars}
        still: list[Working] = []
        for w in self._working:  # 1. working orders whose first bar at or after their due time is here
            bar = bars.get(w.order.instrument)
            if bar is None or bar.ts_open < w.due:
                still.append(w)
            else:  # the quote known at the bar's open: the last one stamped before this bar's own
                fill = self.sim.execute(w.order, bar, at="open", quote=self._quotes.get(w.order.instrument))
                out.append(self._fill(w.order, fill))
                touched.add(w.order.instrument)
        self._working = still
        for b in cs.bars:  # 2. marks and quotes
            self._marks[b.instrument] = b.close
            self._mark_ts[b.instrument] = b.ts_event
            if b.bid is not None and b.ask is not None:
                self._quotes[b.instrument] = (b.bid, b.ask)
            if self.margin is not None:  # the contract's mark; funding on the position held at the funding time
                h = self._holdings.get(b.instrument)
                paid = self.margin.observe(b, h.amount if h is not None else 0.0)
                if paid != 0.0:
                    venue, _, _, _ = _split(b.instrument)
                    key = (venue, settle_of(b.instrument) or "")
                    self._cash[key] = self._cash.get(key, 0.0) + paid
        for st in cs.statuses:  # 3. instruments whose data stopped, or resumed
            if st.status == "stale":
                self._stale.add(st.instrument)
                out += self._expire(cs.ts_event, EXPIRED_STALE, st.instrument)
            else:
                self._stale.discard(st.instrument)
            if st.instrument in self._holdings:
                touched.add(st.instrument)
        risk = self.risk
        if risk is not None:  # the risk engine's window, then the operator's commands
            out += self._observe_risk(risk, cs)
        if cs.targets:  # 4. decisions
            equity = self._equity_value()
            targets = cs.targets
            exposure = None
            if risk is not None:
                k, records = risk.scale(cs.ts_event, {t.instrument: t.weight for t in targets})
                out += records
                if k < 1.0:
                    targets = tuple(replace(t, weight=t.weight * k) for t in targets)
                exposure = self._exposure()
            orders = [o for t in targets if (o := self._order_for(cs.ts_event, t.instrument, t.weight, equity))]
            if risk is not None:  # sells first: each order is checked against the book the earlier ones leave
                orders.sort(key=lambda o: o.side != "sell")
            for decided in orders:
                order: Order | None = decided
                if risk is not None and exposure is not None:
                    order = self._pre_trade(risk, decided, equity, exposure, out)
                if order is not None:
                    self._send(order, bars, out, touched)
        if self.margin is not None:  # 5. margin
            out += self._margin(self.margin, cs, bars, touched)
        out.append(self._equity(cs.ts_event))  # 6. records
        held = {k for k, h in self._holdings.items() if h.amount != 0} if cs.targets else set()
        out += [self._position(k, cs.ts_event) for k in sorted(touched | held)]
        if risk is not None:
            book = self._book()
            out += risk.assess(cs.ts_event, book)
            if cs.targets:
                out += risk.stress(cs.ts_event, book, self.fx.currency)[1]
                out += risk.limit_rows(cs.ts_event, book)
        return out

    def _send(self, order: Order, bars: dict[str, Bar], out: list[AccountOut], touched: set[str]) -> None:
        """Record `order` and make it work (next open) or fill it at its bar's close (decision close)."""
        out.append(order)
        if self.fill_on == "next_open":
            self._working.append(Working(order, order.ts_event + self.latency_ns))
        elif (bar := bars.get(order.instrument)) is None:
            out.append(self._status(order, order.ts_event, "skipped", SKIPPED_NO_BAR))
        else:
            fill = self.sim.execute(order, bar, at="close", quote=self._quotes.get(order.instrument))
            out.append(self._fill(order, fill))
            touched.add(order.instrument)

    # -- margin ---------------------------------------------------------------------------------

    def _margin_inputs(self) -> dict[str, tuple[float, float]]:
        return {k: (h.amount, h.avg_price) for k, h in sorted(self._holdings.items())
                if h.amount != 0 and is_derivative(k)}

    def _margin(self, watch: MarginWatch, cs: CrossSection, bars: dict[str, Bar],
                touched: set[str]) -> list[AccountOut]:
        """Margin of the venues holding contracts: rows, alerts, and under ``reduce`` the auto-reduce orders (their
        pre-trade checks pass: they only reduce) with the account held in REDUCING while a venue is critical."""
        held = self._margin_inputs()
        ts = cs.ts_event
        step = watch.check(ts, held, self._cash, self._rate, rebalance=bool(cs.targets))
        out: list[AccountOut] = list(step.records)
        risk = self.risk
        if step.want is not None and risk is not None:
            out += risk.want(ts, "margin", step.want[0], step.want[1])
        if not step.reduce:
            return out
        equity = self._equity_value()
        exposure = self._exposure() if risk is not None else None
        for k, delta in step.reduce:
            px = self._marks[k] * self._rate(_split(k)[3])
            after = held[k][0] + delta
            order = Order(
                order_id=stable_id("order", self.account_id, k, ts, REDUCE_REASON), account=self.account_id,
                instrument=k, ts_event=ts, side="buy" if delta > 0 else "sell", amount=abs(delta),
                reason=REDUCE_REASON, target_weight=after * px / equity if equity > 0 else 0.0)
            if risk is not None and exposure is not None:
                checked = self._pre_trade(risk, order, equity, exposure, out)
                if checked is None:
                    continue
                order = checked
            self._send(order, bars, out, touched)
        return out

    # -- risk -----------------------------------------------------------------------------------

    def _observe_risk(self, risk: RiskEngine, cs: CrossSection) -> list[AccountOut]:
        prices: dict[str, float] = {}
        spreads: dict[str, float] = {}
        volumes: dict[str, float] = {}
        for b in cs.bars:
            rate = self.fx.rate(_split(b.instrument)[3], self._marks, self._mark_ts)
            if rate is None:
                continue
            prices[b.instrument] = b.close * rate
            volumes[b.instrument] = b.volume * b.close * rate
            if (spread := relative_spread(b.bid, b.ask)) is not None:
                spreads[b.instrument] = spread
        records, halted = risk.begin(cs.ts_event, prices, spreads, volumes)
        out: list[AccountOut] = list(records)
        if halted:  # a halt cancels every working order
            gone, self._working = self._working, []
            out += [OrderStatus(order_id=w.order.order_id, account=self.account_id, instrument=w.order.instrument,
                                ts_event=cs.ts_event, status="cancelled", reason=CANCELLED_HALT) for w in gone]
        return out

    def _book(self) -> Book:
        cash = tuple((v, c, x * self._rate(c)) for (v, c), x in sorted(self._cash.items()) if x != 0)
        holdings = []
        for k in sorted(self._holdings):
            if self._holdings[k].amount == 0:
                continue
            venue, _, base, quote = _split(k)
            holdings.append(RiskHolding(key=k, venue=venue, asset=base, quote=quote, value=self._value(k)))
        equity = sum(x for _, _, x in cash) + sum(h.value for h in holdings)
        return Book(equity=equity, holdings=tuple(holdings), cash=cash)

    def _exposure(self) -> dict[str, float]:
        """Per instrument, the value of its position and working orders (account currency)."""
        out: dict[str, float] = {}
        for k in sorted(set(self._holdings) | {w.order.instrument for w in self._working}):
            mark = self._marks.get(k)
            rate = self.fx.rate(_split(k)[3], self._marks, self._mark_ts)
            if mark is None or rate is None:
                continue
            out[k] = self._pending(k) * mark * rate
        return out

    def _pending(self, instrument: str) -> float:
        """The instrument's position once its working orders fill (base units, signed)."""
        return self._holdings.get(instrument, Holding()).amount + sum(
            (w.order.amount if w.order.side == "buy" else -w.order.amount)
            for w in self._working if w.order.instrument == instrument)

    def _pre_trade(self, risk: RiskEngine, order: Order, equity: float, exposure: dict[str, float],
                   out: list[AccountOut]) -> Order | None:
        """The risk engine's verdict on `order`: the order to send (perhaps cut), or None when denied; `exposure`
        moves with every order sent, so that each order is checked against the book the earlier ones leave."""
        k = order.instrument
        _, _, base, quote = _split(k)
        mark = self._marks[k]
        rate = self._rate(quote)
        px = mark * rate
        sign = 1.0 if order.side == "buy" else -1.0
        before = exposure.get(k, 0.0)
        asset_before = sum(v for i, v in exposure.items() if _split(i)[2] == base)
        gross_before = sum(abs(v) for v in exposure.values())
        net_before = sum(exposure.values())
        q = self._quotes.get(k)  # the price the order would trade at: its limit, else the quote it takes
        price = (order.limit_price * rate if order.limit_price is not None
                 else (q[1] if sign > 0 else q[0]) * rate if q is not None else px)

        def make(amount: float) -> OrderCheck:
            d = sign * amount * px
            return OrderCheck(instrument=k, asset=base, notional=amount * px, price=price, mark=px,
                              position_before=before, position_after=before + d, asset_before=asset_before,
                              asset_after=asset_before + d, gross_before=gross_before,
                              gross_after=gross_before - abs(before) + abs(before + d), net_before=net_before,
                              net_after=net_before + d, equity=equity)

        verdict = risk.check(order.ts_event, order.order_id, order.side, order.amount, before / px, make)
        if verdict.denial is not None:
            out.append(verdict.denial)
        if verdict.amount <= 0:
            out.append(order)
            out.append(self._status(order, order.ts_event, "denied", f"risk: {verdict.denial.reason}"
                                    if verdict.denial is not None else "risk"))
            return None
        if verdict.amount < order.amount:
            order = replace(order, amount=verdict.amount)
        exposure[k] = before + sign * order.amount * px
        return order

    def flush(self) -> list[AccountOut]:
        """At the end of input: orders still working expire, then the final position of every instrument traded."""
        if self._last_ts < 0:
            return []
        out: list[AccountOut] = list(self._expire(self._last_ts, EXPIRED_END))
        if self.margin is not None:
            out += self.margin.final(self._last_ts, self._margin_inputs(), self._cash, self._rate)
        return out + [self._position(k, self._last_ts) for k in sorted(self._holdings)]

    # -- pieces ---------------------------------------------------------------------------------

    def _status(self, order: Order, ts: int, status: Literal["expired", "skipped", "denied", "cancelled"],
                reason: str) -> OrderStatus:
        return OrderStatus(order_id=order.order_id, account=self.account_id, instrument=order.instrument,
                           ts_event=ts, status=status, reason=reason)

    def _expire(self, ts: int, reason: str, instrument: str | None = None) -> list[OrderStatus]:
        """Expire the working orders (of `instrument`, or all), in the order they were placed."""
        gone = [w for w in self._working if instrument is None or w.order.instrument == instrument]
        self._working = [w for w in self._working if instrument is not None and w.order.instrument != instrument]
        return [self._status(w.order, ts, "expired", reason) for w in gone]

    def _order_for(self, ts: int, instrument: str, weight: float, equity: float) -> Order | None:
        mark = self._marks.get(instrument)
        rate = self.fx.rate(split_instrument(instrument)[3], self._marks, self._mark_ts)
        if mark is None or rate is None or not equity > 0:
            return None
        current = self._pending(instrument)
        delta = weight * equity / (mark * rate) - current
        if abs(delta) * mark * rate < self.min_trade_weight * equity or delta == 0:
            return None
        return Order(order_id=stable_id("order", self.account_id, instrument, ts), account=self.account_id,
                     instrument=instrument, ts_event=ts, side="buy" if delta > 0 else "sell", amount=abs(delta),
                     reason="rebalance", target_weight=weight)

    def _fill(self, order: Order, fill: Fill) -> Fill:
        venue, _, _, quote = split_instrument(order.instrument)
        signed_cash = -fill.notional if fill.side == "buy" else fill.notional
        self._cash[(venue, quote)] = self._cash.get((venue, quote), 0.0) + signed_cash - fill.fee
        self._holdings[order.instrument] = self._holdings.get(order.instrument, Holding()).apply(fill)
        rate = self.fx.rate(quote, self._marks, self._mark_ts)
        self._fees_account += fill.fee * (rate if rate is not None else 0.0)
        self._traded_account += fill.notional * (rate if rate is not None else 0.0)
        return fill

    def _rate(self, ccy: str) -> float:
        rate = self.fx.rate(ccy, self._marks, self._mark_ts)
        if rate is None:
            raise InvariantError(f"account {self.account_id}: holds {ccy} but no rate is known yet")
        return rate

    def _equity_value(self) -> float:
        # sums run in sorted order: a restored core must add the same floats in the same order
        cash = sum(v * self._rate(c) for (_, c), v in sorted(self._cash.items()) if v != 0)
        return cash + sum(self._value(k) for k in sorted(self._holdings))

    def _value(self, instrument: str) -> float:
        h = self._holdings[instrument]
        if h.amount == 0:
            return 0.0
        return h.amount * self._marks[instrument] * self._rate(split_instrument(instrument)[3])

    def _equity(self, ts: int) -> Equity:
        cash = sum(v * self._rate(c) for (_, c), v in sorted(self._cash.items()) if v != 0)
        values = [self._value(k) for k in sorted(self._holdings)]
        return Equity(account=self.account_id, ts_event=ts, equity=cash + sum(values), cash=cash,
                      gross_exposure=sum(abs(v) for v in values), net_exposure=sum(values),
                      fees=self._fees_account, traded=self._traded_account, currency=self.fx.currency)

    def _position(self, instrument: str, ts: int) -> Position:
        h = self._holdings.get(instrument, Holding())
        mark = self._marks.get(instrument, 0.0)
        return Position(account=self.account_id, instrument=instrument, ts_event=ts, amount=h.amount,
                        avg_price=h.avg_price, mark=mark, unrealized_pnl=h.amount * (mark - h.avg_price),
                        realized_pnl=h.realized, fees=h.fees,
                        value_account=self._value(instrument) if instrument in self._holdings else 0.0,
                        mark_ts=self._mark_ts.get(instrument, 0), stale=instrument in self._stale)

    # -- state ----------------------------------------------------------------------------------

    def snapshot(self) -> AccountSnap:
        return AccountSnap(version=SNAP_VERSION, funded=self._funded,
                           cash=tuple((v, c, x) for (v, c), x in sorted(self._cash.items())),
                           holdings=tuple(sorted(self._holdings.items())),
                           marks=tuple((k, m, self._mark_ts[k]) for k, m in sorted(self._marks.items())),
                           quotes=tuple((k, b, a) for k, (b, a) in sorted(self._quotes.items())),
                           stale=tuple(sorted(self._stale)), working=tuple(self._working),
                           fees_account=self._fees_account, traded_account=self._traded_account,
                           last_ts=self._last_ts, risk=self.risk.snapshot() if self.risk is not None else None,
                           margin=self.margin.snapshot() if self.margin is not None else None)

    @classmethod
    def restore(cls, account_id: str, venues: Sequence[str], fx: FxTable, sim: SimulatedVenue, snap: AccountSnap, *,
                initial_cash: float, min_trade_weight: float, latency_ns: int = 0,
                fill_on: FillOn = "next_open", risk: RiskEngine | None = None,
                margin: MarginSettings | None = None) -> Account:
        """Rebuild an account from `snap`; `risk` is a fresh engine that takes the snapshot's risk state, `margin`
        the settings the snapshot's margin state (levels, marks, funding paid) continues with."""
        check_version(snap, expected=SNAP_VERSION)
        if risk is not None and snap.risk is not None:
            risk = RiskEngine.restore(risk.s, risk.keys, snap.risk, risk.inbox)
        core = cls(account_id, venues, fx, sim, initial_cash=initial_cash, min_trade_weight=min_trade_weight,
                   latency_ns=latency_ns, fill_on=fill_on, risk=risk, margin=margin)
        if margin is not None and snap.margin is not None:
            core.margin = MarginWatch.restore(account_id, margin, snap.margin)
        core._funded = snap.funded
        core._cash = {(v, c): x for v, c, x in snap.cash}
        core._holdings = dict(snap.holdings)
        core._marks = {k: m for k, m, _ in snap.marks}
        core._mark_ts = {k: t for k, _, t in snap.marks}
        core._quotes = {k: (b, a) for k, b, a in snap.quotes}
        core._stale = set(snap.stale)
        core._working = list(snap.working)
        core._fees_account, core._last_ts = snap.fees_account, snap.last_ts
        core._traded_account = snap.traded_account
        return core
