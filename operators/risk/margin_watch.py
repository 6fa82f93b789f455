"""Margin monitoring and funding of the derivative positions of a plain account (the glue between
`operators.positions.account.Account` and the margin core `operators.risk.margin`).

Derivatives are the instruments whose ccxt symbol has a settle part, ``venue:BASE/QUOTE:SETTLE`` (linear
perpetuals such as ``binance:XRP/USDT:USDT``); spot symbols (``venue:BASE/QUOTE``) are never margined.

The account books a derivative like spot, by average cost: a buy of q at price p debits q x p from the venue's
cash in the quote (= settle) currency, a sell credits it. So the cash already holds minus the entry notional of
every open contract position, and the venue's margin figures are derived from it:

- wallet balance WB = cash(venue, settle) + sum q x entry (what a futures wallet would show: the collateral
  plus realised P&L, minus fees and funding paid, with no open position's notional in it);
- margin balance MB = WB + sum q x (mark - entry) = cash + sum q x mark, the same as the account's equity on
  that venue when it holds nothing else in that currency.

Spot holdings on the same venue are not collateral: what they cost is out of the cash, so they lower the
wallet (conservative). Money amounts are converted into the account currency at the settle currency's rate;
liquidation prices stay in the instrument's quote currency, ratios and distances have no unit. The mark is the
bar's ``mark_price`` (the venue's mark-price candle), else its close.

Funding: at every funding event ``(time, rate)`` a bar of a held contract carries, the settle currency's cash
moves by ``funding_payment(amount, mark, rate) = -amount x mark x rate`` (longs pay a positive rate), with the
bar's mark.

Records: a `MarginSnapshot` per venue holding derivatives when its level (ok, warn, critical, liquidation) moved,
on every rebalance and at the end of the data, and an `Alert` (``margin_warn``, ``margin_critical``,
``margin_liquidation``) each time a venue's margin ratio climbs to a higher level (`MarginMonitor`, hysteresis).
With ``action = "reduce"`` a venue that reaches critical gets market orders closing `MarginMonitor.reduce_fraction`
of each of its derivative positions, and the account is held in REDUCING by the source ``margin`` until every
venue is back below critical.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from headrace.events import Alert, Bar, MarginSnapshot
from operators.base import check_version
from operators.risk.margin import (
    LEVELS,
    MarginMonitor,
    MarginPosition,
    Tier,
    VenueMargin,
    check_tiers,
    funding_payment,
    venue_margin,
)

REDUCE_REASON = "margin auto-reduce"
SOURCE = "margin"
SNAP_VERSION = 1


def settle_of(instrument: str) -> str | None:
    """Return the settle currency of a derivative instrument, None for spot.

    >>> settle_of("binance:XRP/USDT:USDT"), settle_of("binance:XRP/USDT")
    ('USDT', None)
    """
    symbol = instrument.partition(":")[2]
    settle = symbol.partition(":")[2]
    return settle or None


def is_derivative(instrument: str) -> bool:
    """True for ``venue:BASE/QUOTE:SETTLE``.

    >>> is_derivative("binance:XRP/USDT:USDT"), is_derivative("kraken:BTC/USD")
    (True, False)
    """
    return settle_of(instrument) is not None


def wallet_balance(cash: float, positions: Sequence[tuple[float, float]]) -> float:
    """Return the wallet balance from the settle currency's cash and the ``(amount, entry price)`` of the
    venue's contract positions: cash + sum amount x entry (the account debited the entry notional of longs and
    credited that of shorts).

    >>> wallet_balance(-9_000.0, [(10_000.0, 1.0)])  # 1 000 in, 10 000 XRP bought at 1.0
    1000.0
    >>> wallet_balance(11_000.0, [(-10_000.0, 1.0)])  # the same short
    1000.0
    """
    return cash + sum(a * e for a, e in positions)


@dataclass(frozen=True, slots=True)
class MarginSettings:
    """``[risk]`` margin keys: thresholds, action, leverage and tiers (keyed by instrument)."""

    warn: float = 0.5
    critical: float = 0.8
    reduce_to: float = 0.5
    action: Literal["alert", "reduce"] = "reduce"
    leverage: float = 5.0
    maintenance_rate: float = 0.01
    tiers: tuple[tuple[str, tuple[Tier, ...]], ...] = ()  # instrument -> tiers; others use `default_tiers`
    hysteresis: float = 0.05

    def __post_init__(self) -> None:
        MarginMonitor(self.warn, self.critical, self.reduce_to, self.hysteresis)  # raises on bad thresholds
        for _, ts in self.tiers:
            check_tiers(ts)

    @property
    def default_tiers(self) -> tuple[Tier, ...]:
        """One tier: the configured leverage and maintenance rate, no maintenance amount."""
        return (Tier(math.inf, self.leverage, self.maintenance_rate),)

    def monitor(self) -> MarginMonitor:
        return MarginMonitor(self.warn, self.critical, self.reduce_to, self.hysteresis)


@dataclass(frozen=True, slots=True)
class MarginWatchSnap:
    version: int
    levels: tuple[tuple[str, str], ...]
    marks: tuple[tuple[str, float], ...]
    funding: tuple[tuple[str, float], ...]  # instrument, funding received so far (settle currency)
    emitted: tuple[tuple[str, int], ...]  # venue, time of its last snapshot row


@dataclass(slots=True)
class MarginStep:
    """What one check asks of the account: rows to record, positions to cut (instrument, signed amount to trade)
    and the trading state the margin source wants (None: no change)."""

    records: list[MarginSnapshot | Alert] = field(default_factory=list)
    reduce: list[tuple[str, float]] = field(default_factory=list)
    want: tuple[Literal["REDUCING", "ACTIVE"], str] | None = None


def snapshot_row(account: str, ts: int, vm: VenueMargin, rate: float = 1.0,
                 quote_rates: Mapping[str, float] | None = None) -> MarginSnapshot:
    """The `MarginSnapshot` row of `vm` (figures already in the account currency); liquidation prices divided by
    their instrument's rate (`quote_rates`) back into its quote currency."""
    qr = quote_rates or {}
    lps = tuple(math.nan if p.liquidation_price is None else p.liquidation_price / qr.get(p.instrument, rate)
                for p in vm.positions)
    dist = tuple(p.distance_to_liquidation for p in vm.positions)
    return MarginSnapshot(account=account, venue=vm.venue, ts_event=ts, wallet_balance=vm.wallet_balance,
                          margin_balance=vm.margin_balance, initial_margin=vm.initial_margin,
                          maintenance_margin=vm.maintenance_margin, margin_ratio=vm.margin_ratio,
                          available=vm.available, positions=len(vm.positions),
                          min_distance=min(dist, default=math.inf),
                          instruments=tuple(p.instrument for p in vm.positions), liquidation_prices=lps,
                          distances=dist)


class MarginWatch:
    """Marks, funding and margin levels of one account's derivative positions (module docstring)."""

    def __init__(self, account: str, settings: MarginSettings) -> None:
        self.account = account
        self.s = settings
        self._tiers = dict(settings.tiers)
        self._default = settings.default_tiers
        self._monitor = settings.monitor()
        self._marks: dict[str, float] = {}
        self._funding: dict[str, float] = {}
        self._emitted: dict[str, int] = {}

    def funding_total(self, instrument: str | None = None) -> float:
        """Funding received so far (settle currency; negative when paid), of one instrument or all."""
        if instrument is not None:
            return self._funding.get(instrument, 0.0)
        return sum(v for _, v in sorted(self._funding.items()))

    def observe(self, bar: Bar, amount: float) -> float:
        """Take a derivative bar's mark; return the funding cash flow of its funding events for a position of
        `amount` (0 for spot bars or no position)."""
        if not is_derivative(bar.instrument):
            return 0.0
        mark = bar.mark_price if bar.mark_price is not None and bar.mark_price > 0 else bar.close
        self._marks[bar.instrument] = mark
        if amount == 0 or not bar.funding:
            return 0.0
        paid = 0.0
        for _, rate in bar.funding:
            paid += funding_payment(amount, mark, rate)
        self._funding[bar.instrument] = self._funding.get(bar.instrument, 0.0) + paid
        return paid

    def mark(self, instrument: str) -> float | None:
        return self._marks.get(instrument)

    def figures(self, holdings: Mapping[str, tuple[float, float]], cash: Mapping[tuple[str, str], float],
                rate: Callable[[str], float]) -> dict[str, tuple[VenueMargin, dict[str, float]]]:
        """Per venue holding derivatives, its margin (account currency) and each position's price rate.

        `holdings`: instrument -> (signed amount, average entry price), quote currency; `cash`: (venue,
        currency) -> amount; `rate(ccy)`: the account-currency value of one unit of `ccy`."""
        by_venue: dict[str, list[str]] = {}
        for k in sorted(holdings):
            if holdings[k][0] != 0 and is_derivative(k) and (k in self._marks):
                by_venue.setdefault(k.partition(":")[0], []).append(k)
        out: dict[str, tuple[VenueMargin, dict[str, float]]] = {}
        for venue, keys in by_venue.items():
            settles = sorted({settle_of(k) or "" for k in keys})
            wallet = 0.0
            rates: dict[str, float] = {}
            positions = []
            for ccy in settles:
                r = rate(ccy)
                own = [k for k in keys if settle_of(k) == ccy]
                wallet += wallet_balance(cash.get((venue, ccy), 0.0), [holdings[k] for k in own]) * r
                for k in own:
                    rates[k] = r
                    a, entry = holdings[k]
                    positions.append(MarginPosition(k, venue, a, entry * r, self._marks[k] * r, self.s.leverage))
            out[venue] = (venue_margin(venue, wallet, positions, self._tiers, self._default), rates)
        return out

    def check(self, ts: int, holdings: Mapping[str, tuple[float, float]], cash: Mapping[tuple[str, str], float],
              rate: Callable[[str], float], rebalance: bool) -> MarginStep:
        """Margin of every venue holding derivatives at `ts`: alerts on a higher level, a snapshot row when the
        level moved or on a rebalance, and under ``reduce`` the cuts of a venue that reached critical."""
        step = MarginStep()
        figs = self.figures(holdings, cash, rate)
        before = dict(self._monitor.snapshot())
        critical_at = LEVELS.index("critical")
        for venue in sorted(set(figs) | {v for v, lv in before.items() if lv != "ok"}):
            if venue in figs:
                vm, rates = figs[venue]
            else:  # nothing held there any more: the level falls back
                vm, rates = VenueMargin(venue, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, ()), {}
            alerts = self._monitor.check(vm)
            level = dict(self._monitor.snapshot())[venue]
            for a in alerts:
                step.records.append(Alert(account=self.account, venue=venue, ts_event=ts, kind=f"margin_{a.level}",
                                          message=a.message))
            if level != before.get(venue, "ok") or rebalance:
                step.records.append(self._row(ts, vm, rates))
            if (self.s.action == "reduce" and alerts and LEVELS.index(alerts[-1].level) >= critical_at
                    and vm.positions):
                f = self._monitor.reduce_fraction(vm, self._tiers, self._default)
                if f > 0:
                    step.reduce += [(p.instrument, -holdings[p.instrument][0] * f) for p in vm.positions]
        levels = dict(self._monitor.snapshot())
        anyc = any(LEVELS.index(lv) >= critical_at for lv in levels.values())
        if self.s.action == "reduce":
            was = any(LEVELS.index(lv) >= critical_at for lv in before.values())
            if anyc and not was:
                worst = max(levels.items(), key=lambda kv: LEVELS.index(kv[1]))
                step.want = ("REDUCING", f"margin {worst[1]} on {worst[0]}")
            elif was and not anyc:
                step.want = ("ACTIVE", "margin ratio back below critical on every venue")
        return step

    def final(self, ts: int, holdings: Mapping[str, tuple[float, float]], cash: Mapping[tuple[str, str], float],
              rate: Callable[[str], float]) -> list[MarginSnapshot]:
        """At the end of the data: a snapshot of every venue holding derivatives (unless one was made at `ts`)."""
        return [self._row(ts, vm, rates) for venue, (vm, rates) in self.figures(holdings, cash, rate).items()
                if self._emitted.get(venue) != ts]

    def _row(self, ts: int, vm: VenueMargin, rates: Mapping[str, float]) -> MarginSnapshot:
        self._emitted[vm.venue] = ts
        return snapshot_row(self.account, ts, vm, quote_rates=rates)

    # -- state ----------------------------------------------------------------------------------

    def snapshot(self) -> MarginWatchSnap:
        return MarginWatchSnap(version=SNAP_VERSION, levels=self._monitor.snapshot(),
                               marks=tuple(sorted(self._marks.items())), funding=tuple(sorted(self._funding.items())),
                               emitted=tuple(sorted(self._emitted.items())))

    @classmethod
    def restore(cls, account: str, settings: MarginSettings, snap: MarginWatchSnap) -> MarginWatch:
        check_version(snap, SNAP_VERSION)
        core = cls(account, settings)
        core._monitor = MarginMonitor.restore(snap.levels, settings.warn, settings.critical, settings.reduce_to,
                                              settings.hysteresis)
        core._marks = dict(snap.marks)
        core._funding = dict(snap.funding)
        core._emitted = dict(snap.emitted)
        return core
