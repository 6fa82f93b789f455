"""Intraday margin of derivative positions per venue: initial and maintenance margin from leverage tiers, the
cross-margin ratio, each position's liquidation price and distance to it, funding cash flows, threshold alerts
with hysteresis and the auto-reduce fraction.

Conventions (Binance USDT-M, cross margin, one-way mode; linear contracts settled in the quote currency):

- ``amount`` q is signed base units (contracts x contract size); ``notional`` N = |q| x mark.
- Tiers are ordered by ``max_notional``; a notional belongs to the first tier with N <= max_notional.
- Initial margin IM = N / min(leverage, tier.max_leverage): the venue never lets a position hold more leverage
  than its tier allows.
- Maintenance margin MM = N x tier.maintenance_rate - tier.maintenance_amount (Binance's ``cum``, which makes MM
  continuous across tier boundaries; 0 for a venue without it). MM is never below 0.
- Unrealized P&L U = q x (mark - entry).
- Margin balance MB = wallet balance + sum U; margin ratio = sum MM / MB (Binance's account margin ratio: 1.0 is
  liquidation), inf when MB <= 0; available = MB - sum IM.

Liquidation price of position i, the other positions held at their marks: solve MB(P) = MM(P) for i's price P,

    WB + U_o + q (P - EP) = MM_o + |q| P r - c     =>     P = (WB + U_o - MM_o + c - q EP) / (|q| r - q)

with U_o, MM_o the other positions' unrealized P&L and maintenance margin, r, c the maintenance rate and amount of
the tier that holds the notional |q| P. With no other position this is Binance's published USDT-M cross-margin
formula ``LP = (WB - TMM1 + UPNL1 + cum - Side x Position x EP) / (Position x MMR - Side x Position)``. The
equation is solved in each tier and the solution whose notional lies in that tier is taken (the tier at the
current notional if none does). A long whose solution is <= 0 cannot be liquidated by its own price (None,
distance inf); a short whose solution is <= 0 is below maintenance at every price (None, distance 0).
Distance to liquidation = (mark - LP) / mark for a long, (LP - mark) / mark for a short, clamped at 0.

Funding: at each funding time the account receives ``-q x mark x rate`` (longs pay a positive rate).

Auto-reduce: closing the fraction f of every position at its mark realizes f x U into the wallet and leaves
(1 - f) x U unrealized, so MB does not move (fees ignored); each position's MM becomes MM_i((1 - f) N_i). The
fraction solves sum MM_i((1 - f) N_i) = reduce_to x MB. MM is linear in f between the points where a position
crosses a tier boundary, so f is found exactly on the segment where the sum crosses the target. MB <= 0 gives 1.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

LEVELS = ("ok", "warn", "critical", "liquidation")


@dataclass(frozen=True, slots=True)
class Tier:
    """One leverage tier (margin bracket) of an instrument."""

    max_notional: float  # upper bound of the tier's position notional (inf for the last)
    max_leverage: float  # initial margin rate = 1 / max_leverage
    maintenance_rate: float  # maintenance margin rate
    maintenance_amount: float = 0.0  # Binance's "cum" maintenance amount (deduction), 0 if the venue has none


@dataclass(frozen=True, slots=True)
class MarginPosition:
    """A derivative position as the margin monitor sees it."""

    instrument: str  # "binance:XRP/USDT:USDT"
    venue: str
    amount: float  # signed contracts * contract size (base units)
    entry_price: float
    mark_price: float
    leverage: float  # the leverage the position is opened with (initial margin = notional / leverage)


@dataclass(frozen=True, slots=True)
class PositionMargin:
    """Margin figures of one position."""

    instrument: str
    notional: float
    initial_margin: float
    maintenance_margin: float
    unrealized_pnl: float
    liquidation_price: float | None
    distance_to_liquidation: float  # fraction of mark, >= 0; inf when no liquidation price
    maintenance_rate: float = 0.0  # of the tier holding the notional
    maintenance_amount: float = 0.0  # of the tier holding the notional


@dataclass(frozen=True, slots=True)
class VenueMargin:
    """Cross-margin account figures of one venue."""

    venue: str
    wallet_balance: float
    margin_balance: float
    initial_margin: float
    maintenance_margin: float
    margin_ratio: float  # maintenance_margin / margin_balance (1.0 = liquidation), inf when balance <= 0
    available: float  # margin_balance - initial_margin
    positions: tuple[PositionMargin, ...]


@dataclass(frozen=True, slots=True)
class MarginAlert:
    """A venue's margin ratio crossed a threshold upwards."""

    venue: str
    level: str  # "warn" | "critical" | "liquidation"
    margin_ratio: float
    threshold: float
    message: str


def check_tiers(tiers: Sequence[Tier]) -> None:
    """Raise ValueError unless `tiers` is non-empty, ordered by max_notional, leverage > 0 and rates in [0, 1).

    >>> check_tiers([Tier(10_000.0, 50.0, 0.01), Tier(5_000.0, 20.0, 0.02)])
    Traceback (most recent call last):
    ...
    ValueError: tiers must be ordered by max_notional: 5000.0 after 10000.0
    """
    if not tiers:
        raise ValueError("tiers must not be empty")
    prev = 0.0
    for t in tiers:
        if t.max_notional <= prev:
            raise ValueError(f"tiers must be ordered by max_notional: {t.max_notional} after {prev}")
        if not t.max_leverage > 0:
            raise ValueError(f"tier max_leverage must be > 0, was {t.max_leverage}")
        if not 0 <= t.maintenance_rate < 1:
            raise ValueError(f"tier maintenance_rate must be in [0, 1), was {t.maintenance_rate}")
        prev = t.max_notional


def tier_for(tiers: Sequence[Tier], notional: float) -> Tier:
    """Return the tier holding `notional`: the first with notional <= max_notional (the last beyond every bound).

    >>> ts = [Tier(5_000.0, 50.0, 0.01), Tier(math.inf, 20.0, 0.025, 75.0)]
    >>> tier_for(ts, 5_000.0).max_leverage, tier_for(ts, 5_000.01).max_leverage
    (50.0, 20.0)
    """
    if not tiers:
        raise ValueError("tiers must not be empty")
    for t in tiers:
        if notional <= t.max_notional:
            return t
    return tiers[-1]


def maintenance_margin(tiers: Sequence[Tier], notional: float) -> float:
    """Return N x rate - maintenance amount of the tier holding `notional` (never below 0).

    >>> maintenance_margin([Tier(5_000.0, 50.0, 0.01), Tier(math.inf, 20.0, 0.025, 75.0)], 10_000.0)
    175.0
    """
    if notional <= 0:
        return 0.0
    t = tier_for(tiers, notional)
    return max(0.0, notional * t.maintenance_rate - t.maintenance_amount)


def initial_margin(tiers: Sequence[Tier], notional: float, leverage: float) -> float:
    """Return N / min(leverage, max leverage of the tier).

    >>> initial_margin([Tier(math.inf, 20.0, 0.025)], 1_000.0, 50.0)
    50.0
    """
    if not leverage > 0:
        raise ValueError(f"leverage must be > 0, was {leverage}")
    return notional / min(leverage, tier_for(tiers, notional).max_leverage)


def _liquidation_price(q: float, entry: float, tiers: Sequence[Tier], rest: float,
                       notional_now: float) -> float | None:
    """Solve WB + U_o - MM_o + q (P - EP) = |q| P r - c for P (`rest` = WB + U_o - MM_o), tier by tier."""
    lower = 0.0
    chosen: float | None = None
    for t in tiers:
        denom = abs(q) * t.maintenance_rate - q
        p = (rest + t.maintenance_amount - q * entry) / denom
        if p > 0 and lower < abs(q) * p <= t.max_notional:
            chosen = p
            break
        lower = t.max_notional
    if chosen is None:
        t = tier_for(tiers, notional_now)
        chosen = (rest + t.maintenance_amount - q * entry) / (abs(q) * t.maintenance_rate - q)
    return chosen if chosen > 0 else None


def funding_payment(amount: float, mark_price: float, rate: float) -> float:
    """Return the funding cash flow to the account: -amount x mark x rate (longs pay a positive rate).

    >>> funding_payment(1_000.0, 1.1, 0.0001), funding_payment(-1_000.0, 1.1, 0.0001)
    (-0.11, 0.11)
    """
    return -amount * mark_price * rate


def _tiers_of(p: MarginPosition, tiers: Mapping[str, Sequence[Tier]], default_tiers: Sequence[Tier]) -> Sequence[Tier]:
    return tiers.get(p.instrument) or default_tiers


def venue_margin(venue: str, wallet_balance: float, positions: Sequence[MarginPosition],
                 tiers: Mapping[str, Sequence[Tier]], default_tiers: Sequence[Tier]) -> VenueMargin:
    """Return one venue's cross-margin figures (module docstring for the formulas).

    `tiers` is keyed by instrument ("binance:XRP/USDT:USDT"); instruments without an entry use `default_tiers`.

    >>> tiers = [Tier(math.inf, 20.0, 0.01)]
    >>> m = venue_margin("binance", 100.0, [MarginPosition("binance:X/USDT:USDT", "binance", 1_000.0, 1.0, 0.95,
    ...                   10.0)], {}, tiers)
    >>> round(m.margin_balance, 6), round(m.maintenance_margin, 6), round(m.margin_ratio, 6)
    (50.0, 9.5, 0.19)
    >>> round(m.positions[0].liquidation_price, 6)  # (100 - 1000 x 1) / (1000 x 0.01 - 1000)
    0.909091
    """
    held = [p for p in positions if p.amount != 0]
    for p in held:
        if p.venue != venue:
            raise ValueError(f"position {p.instrument} is on venue {p.venue!r}, not {venue!r}")
        if not (p.mark_price > 0 and p.entry_price > 0):
            raise ValueError(f"position {p.instrument}: mark and entry prices must be > 0, were "
                             f"{p.mark_price} and {p.entry_price}")
    ts = [_tiers_of(p, tiers, default_tiers) for p in held]
    notionals = [abs(p.amount) * p.mark_price for p in held]
    upnl = [p.amount * (p.mark_price - p.entry_price) for p in held]
    mm = [maintenance_margin(t, n) for t, n in zip(ts, notionals, strict=True)]
    im = [initial_margin(t, n, p.leverage) for t, n, p in zip(ts, notionals, held, strict=True)]
    total_u, total_mm = sum(upnl), sum(mm)
    mb = wallet_balance + total_u
    out = []
    for i, p in enumerate(held):
        rest = wallet_balance + (total_u - upnl[i]) - (total_mm - mm[i])
        lp = _liquidation_price(p.amount, p.entry_price, ts[i], rest, notionals[i])
        if lp is None:
            dist = math.inf if p.amount > 0 else 0.0
        else:
            dist = max(0.0, (p.mark_price - lp) / p.mark_price * (1 if p.amount > 0 else -1))
        t = tier_for(ts[i], notionals[i])
        out.append(PositionMargin(p.instrument, notionals[i], im[i], mm[i], upnl[i], lp, dist,
                                  t.maintenance_rate, t.maintenance_amount))
    ratio = total_mm / mb if mb > 0 else math.inf
    return VenueMargin(venue=venue, wallet_balance=wallet_balance, margin_balance=mb, initial_margin=sum(im),
                       maintenance_margin=total_mm, margin_ratio=ratio, available=mb - sum(im), positions=tuple(out))


def reduce_positions(positions: Sequence[MarginPosition], wallet_balance: float,
                     fraction: float) -> tuple[float, tuple[MarginPosition, ...]]:
    """Return the wallet balance and positions after closing `fraction` of every position at its mark (no fees).

    >>> w, ps = reduce_positions([MarginPosition("v:X", "v", 100.0, 1.0, 0.9, 5.0)], 50.0, 0.25)
    >>> round(w, 6), ps[0].amount
    (47.5, 75.0)
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], was {fraction}")
    realized = sum(fraction * p.amount * (p.mark_price - p.entry_price) for p in positions)
    kept = tuple(MarginPosition(p.instrument, p.venue, p.amount * (1 - fraction), p.entry_price, p.mark_price,
                                p.leverage) for p in positions)
    return wallet_balance + realized, kept


@dataclass(frozen=True, slots=True)
class MarginMonitorSnap:
    """The monitor's state: the level each venue is at, sorted by venue."""

    version: int
    levels: tuple[tuple[str, str], ...]


class MarginMonitor:
    """Thresholds with hysteresis; remembers the level per venue so an alert fires on crossing, not every bar.

    Levels: ok < warn (ratio >= warn) < critical (>= critical) < liquidation (>= 1). A venue goes up a level as
    soon as its ratio reaches the threshold, and one alert fires for the highest level reached; it only goes
    back down once its ratio falls below the threshold minus `hysteresis` (no alert on the way down), so a
    ratio hovering around a threshold alerts once.

    >>> mon = MarginMonitor(warn=0.5, critical=0.8)
    >>> vm = lambda r: VenueMargin("binance", 10.0, 10.0, 1.0, 10.0 * r, r, 9.0, ())
    >>> [a.level for a in mon.check(vm(0.55))], mon.check(vm(0.49)), [a.level for a in mon.check(vm(0.9))]
    (['warn'], [], ['critical'])
    """

    def __init__(self, warn: float = 0.5, critical: float = 0.8, reduce_to: float = 0.5,
                 hysteresis: float = 0.05) -> None:
        if not 0 < warn < critical < 1:
            raise ValueError(f"need 0 < warn < critical < 1, were warn={warn}, critical={critical}")
        if not 0 < reduce_to < critical:
            raise ValueError(f"reduce_to must be in (0, critical={critical}), was {reduce_to}")
        if not 0 <= hysteresis < warn:
            raise ValueError(f"hysteresis must be in [0, warn={warn}), was {hysteresis}")
        self.warn, self.critical, self.reduce_to, self.hysteresis = warn, critical, reduce_to, hysteresis
        self._levels: dict[str, str] = {}

    def thresholds(self) -> tuple[float, float, float]:
        """Return the thresholds of warn, critical and liquidation."""
        return self.warn, self.critical, 1.0

    def _level(self, ratio: float, current: int) -> int:
        ths = self.thresholds()
        up = sum(1 for t in ths if ratio >= t)
        if up >= current:
            return up
        down = current  # falling: leave a level only once below its threshold minus the band
        while down > 0 and ratio < ths[down - 1] - self.hysteresis:
            down -= 1
        return down

    def check(self, m: VenueMargin) -> list[MarginAlert]:
        """Update the venue's level from its margin ratio; return an alert when it rose to a higher level."""
        current = LEVELS.index(self._levels.get(m.venue, "ok"))
        new = self._level(m.margin_ratio, current)
        self._levels[m.venue] = LEVELS[new]
        if new <= current:
            return []
        level, threshold = LEVELS[new], self.thresholds()[new - 1]
        msg = (f"{m.venue}: margin ratio {m.margin_ratio:.4f} reached {level} ({threshold:g}); maintenance "
               f"{m.maintenance_margin:.2f} on margin balance {m.margin_balance:.2f}")
        return [MarginAlert(m.venue, level, m.margin_ratio, threshold, msg)]

    def reduce_fraction(self, m: VenueMargin, tiers: Mapping[str, Sequence[Tier]] | None = None,
                        default_tiers: Sequence[Tier] | None = None) -> float:
        """Return the fraction of every position on the venue to close so that the ratio falls to `reduce_to`.

        0 when the ratio is below `critical`; 1 when the margin balance is <= 0. With no tiers given, every
        position keeps the tier it is in (its ``maintenance_rate`` and ``maintenance_amount``), exact while no
        position falls into a lower tier; pass the tiers `m` was computed with to follow tier changes.

        >>> vm = VenueMargin("binance", 10.0, 10.0, 1.0, 9.0, 0.9, 9.0,
        ...                  (PositionMargin("binance:X", 900.0, 45.0, 9.0, 0.0, 0.99, 0.01, 0.01, 0.0),))
        >>> MarginMonitor().reduce_fraction(vm)  # 1 - 0.5 x 10 / 9
        0.4444444444444444
        """
        if m.margin_ratio < self.critical:
            return 0.0
        if m.margin_balance <= 0:
            return 1.0
        target = self.reduce_to * m.margin_balance
        tmap, dflt = tiers or {}, default_tiers or ()
        pos_tiers: list[tuple[float, Sequence[Tier]]] = []
        for p in m.positions:
            own = (Tier(math.inf, 1.0, p.maintenance_rate, p.maintenance_amount),)
            pos_tiers.append((p.notional, own if tiers is None and default_tiers is None
                              else tmap.get(p.instrument) or dflt))
        # f where a position's notional reaches a tier bound: (1 - f) N = bound; MM is linear in f in between
        cuts = {0.0, 1.0}
        for n, ts in pos_tiers:
            cuts.update(1.0 - t.max_notional / n for t in ts if 0 < t.max_notional < n)
        grid = sorted(cuts)
        for lo, hi in itertools.pairwise(grid):
            mid = (lo + hi) / 2
            a = b = 0.0  # MM(f) = a - b f on [lo, hi) with the tiers held at mid
            for n, ts in pos_tiers:
                t = tier_for(ts, n * (1 - mid))
                a += n * t.maintenance_rate - t.maintenance_amount
                b += n * t.maintenance_rate
            if a - b * lo <= target:
                return lo
            f = (a - target) / b
            if f <= hi:
                return f
        return 1.0

    def snapshot(self) -> tuple[tuple[str, str], ...]:
        """Return the level of every venue seen, sorted by venue."""
        return tuple(sorted(self._levels.items()))

    @classmethod
    def restore(cls, snap: tuple[tuple[str, str], ...], warn: float = 0.5, critical: float = 0.8,
                reduce_to: float = 0.5, hysteresis: float = 0.05) -> MarginMonitor:
        """Rebuild a monitor from `snapshot`'s levels with the given thresholds."""
        mon = cls(warn, critical, reduce_to, hysteresis)
        for venue, level in snap:
            if level not in LEVELS:
                raise ValueError(f"unknown margin level {level!r} for venue {venue!r} in snapshot")
            mon._levels[venue] = level
        return mon
