"""Smart order routing: a parent order becomes IOC limit children across venues, best executable price first.

Every price level of every usable candidate is ranked by what one base unit costs (buy) or brings (sell) in
the account currency *net of the taker fee*: ``price * fx * (1 + fee)`` ascending for a buy, ``price * fx *
(1 - fee)`` descending for a sell; ties go to the instrument name, then to the level's place in its book, so
the plan never depends on the order the candidates come in. Levels outside the price-protection band
(around the best top-of-book price in the account currency, before fees) or beyond the parent's limit price
are never taken. The parent amount is taken greedily, level by level, within each candidate's available
balance (a buy's spend including its fee; a sell's base).

Each candidate's share is then rounded to its market with `check_order`: the amount truncates, the limit is
the worst level price taken, put on the price grid so that it still crosses that level when this stays
inside the band (else rounded the way that does not worsen the order, and the levels it no longer crosses
are dropped for that candidate). A share that breaks a minimum or rounds to zero is not sent: its reason is
recorded and the amount goes to the other candidates' remaining levels; a share that truncates caps that
candidate at its rounded amount. This repeats until nothing changes (each round drops a candidate, caps
one or drops a level, so it ends). Children carry exactly the rounded values.

Amounts of a parent, of levels and of `Child.base_amount` are base units; `Child.amount` is in the
market's order units (base for spot, contracts of `Market.contract_size` base for linear derivatives).
Inverse contracts are not routed. Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import pairwise
from typing import Literal

from headrace.events import stable_id
from operators.execution.markets import Market, Rounded, Skipped, check_order, dec, round_amount, round_price

Side = Literal["buy", "sell"]

NO_METADATA = "no market metadata"
NO_FX = "no fx rate"
INVERSE = "inverse contract"
NO_DEPTH = "no depth"
NO_BALANCE = "no balance"
OUTSIDE_BAND = "outside band"
BEYOND_LIMIT = "beyond limit price"
NOT_NEEDED = "not needed"
_EPS = 1e-12  # relative: an amount this small against the parent is nothing left to route


@dataclass(frozen=True, slots=True)
class Level:
    """One price level on the side we take: asks for a buy (ascending), bids for a sell (descending)."""

    price: float  # in the instrument's quote currency
    amount: float  # base units


@dataclass(frozen=True, slots=True)
class Candidate:
    """One venue instrument that may carry the parent's asset, with the depth and balance seen there."""

    instrument: str  # "venue:BASE/QUOTE" (derivatives "venue:BASE/QUOTE:SETTLE")
    market: Market | None  # None: no metadata, never routed
    levels: tuple[Level, ...]
    fx: float | None  # value of one unit of the quote currency in the account currency; None: not routed
    fee_rate: float  # taker fee, fraction (0.001 = 10 bps)
    available: float  # buy: quote available (fees included); sell: base available; math.inf = unlimited
    depth_source: str  # "book" | "quote" | "bar"


@dataclass(frozen=True, slots=True)
class Parent:
    """An order for an asset, to be split across venues."""

    parent_id: str
    account: str
    asset: str
    side: Side
    amount: float  # base units > 0
    ts_event: int
    band_bps: float = 50.0  # protection band around the best top-of-book price in the account currency
    limit_price: float | None = None  # account currency per base unit, before fees


@dataclass(frozen=True, slots=True)
class Child:
    """An IOC limit order to one venue, on its market's grid and within its limits."""

    child_id: str  # stable_id("child", parent_id, instrument)
    parent_id: str
    instrument: str
    side: str
    amount: float  # the rounded amount in order units, exactly check_order's Decimal as float
    limit_price: float  # the rounded limit (quote currency), never beyond the band
    expected_price: float  # volume-weighted price of the levels it expects to take (quote currency)
    expected_fee: float  # quote currency
    expected_cost_account: float  # (expected_price * base_amount +/- fee) * fx: spent (buy) or received (sell)
    base_amount: float = 0.0  # amount * contract size: base units (equal to amount on spot)


@dataclass(frozen=True, slots=True)
class CandidateReport:
    """One row per candidate, chosen or not, for execution-cost attribution."""

    instrument: str
    depth_source: str
    best_price_account: float | None  # top level net of fee in account currency (None when not priced)
    depth_amount: float  # base amount available inside the band (and the parent's limit)
    chosen_amount: float  # base units; 0 when not used
    expected_price: float | None  # quote currency, for a chosen candidate
    reason: str  # "" when chosen, else why not


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """The children of a parent and the report on every candidate."""

    parent: Parent
    children: tuple[Child, ...]
    candidates: tuple[CandidateReport, ...]
    unrouted: float  # base amount not routed (depth, balance or minimums ran out)


@dataclass(slots=True)
class _State:
    """A usable candidate while the plan settles."""

    cand: Candidate
    market: Market
    fx: float
    levels: list[Level]  # inside band and limit, best first
    depth: float
    cap: float = math.inf  # base units
    max_cap: float = math.inf  # the market's maximum amount, in base units
    cap_units: Decimal | None = None  # the rounded order amount the cap stands for
    ceiling: float | None = None  # quote price the rounded limit reaches (buy: at most; sell: at least)
    reason: str = ""
    alloc: float = 0.0
    result: tuple[Rounded, float, float, float] | None = None  # rounded, base amount, expected price, fee


def _better(side: str, a: float, b: float) -> bool:
    """True when price `a` is at least as good as `b` for the taker: a buy pays less, a sell gets more."""
    return a <= b if side == "buy" else a >= b


def _net(side: str, price: float, fx: float, fee: float) -> float:
    return price * fx * (1 + fee) if side == "buy" else price * fx * (1 - fee)


def _rank(side: str, st: _State, lv: Level) -> float:
    """Sort key of a level: its net price in account currency, best (lowest key) first."""
    net = _net(side, lv.price, st.fx, st.cand.fee_rate)
    return net if side == "buy" else -net


def _walk(levels: Sequence[Level], amount: float) -> tuple[float, float, float]:
    """Take `amount` from `levels` in order: (amount taken, notional, worst price touched)."""
    left, notional, worst = amount, 0.0, math.nan
    for lv in levels:
        if left <= amount * _EPS:  # what float sums leave over is not a level to touch
            break
        take = min(lv.amount, left)
        notional += take * lv.price
        worst, left = lv.price, left - take
    return amount - max(left, 0.0), notional, worst


def _limit(st: _State, side: Side, worst: float, band: float, parent_limit: float | None) -> Decimal:
    """The child's limit: on the grid and crossing `worst` when that stays inside the band, else not worse."""
    m = st.market
    aggressive = round_price(m, worst, "sell" if side == "buy" else "buy")  # a buy rounds up to cross
    inside = _better(side, float(aggressive) * st.fx, band) and (
        parent_limit is None or _better(side, float(aggressive) * st.fx, parent_limit))
    if aggressive > 0 and inside and round_price(m, aggressive, side) == aggressive:
        return aggressive
    return round_price(m, worst, side)


def _ranking(states: list[_State], side: Side) -> list[tuple[float, str, int, int]]:
    """Every level of the states in play, best net price first: (key, instrument, level index, state index)."""
    ranked = [(_rank(side, st, lv), st.cand.instrument, j, i)
              for i, st in enumerate(states) if not st.reason for j, lv in enumerate(st.levels)]
    ranked.sort()
    return ranked


def _greedy(states: list[_State], ranked: list[tuple[float, str, int, int]], side: Side, amount: float) -> None:
    """Allocate `amount` over the ranked levels of the states still in play, within balances, caps and ceilings."""
    for st in states:
        st.alloc = 0.0
    budget = [st.cand.available for st in states]
    left = amount
    for _, _, j, i in ranked:
        if left <= amount * _EPS:
            break
        st, lv = states[i], states[i].levels[j]
        if st.reason or (st.ceiling is not None and not _better(side, lv.price, st.ceiling)):
            continue
        take = min(lv.amount, left, st.cap - st.alloc)
        if side == "buy":
            unit = lv.price * (1 + st.cand.fee_rate)
            take = min(take, budget[i] / unit)
            budget[i] = max(budget[i] - take * unit, 0.0)
        else:
            take = min(take, budget[i])
            budget[i] = max(budget[i] - take, 0.0)
        if take <= 0:
            continue
        st.alloc += take
        left -= take


def _settle(st: _State, side: Side, band: float, parent_limit: float | None) -> str:
    """Round the state's allocation: "" when it stands as it is, else what changed.

    "skipped" (the share breaks a rule: the candidate is out), "ceiling" (the rounded limit no longer crosses
    its worst level: that level is out), "truncated" (the amount rounded down; `result` holds the rounded order).
    """
    st.result = None
    if st.alloc <= 0:
        return ""
    levels = [lv for lv in st.levels if st.ceiling is None or _better(side, lv.price, st.ceiling)]
    cs = st.market.contract_size
    at_cap = st.cap_units is not None and st.alloc >= st.cap * (1 - _EPS)
    units = st.cap_units if at_cap and st.cap_units is not None else round_amount(st.market, dec(st.alloc) / cs)
    _, _, worst = _walk(levels, float(units * cs) if units > 0 else st.alloc)
    limit = _limit(st, side, worst, band, parent_limit)
    r = check_order(st.market, side, units if units > 0 else dec(st.alloc) / cs, limit)
    if isinstance(r, Skipped):
        st.reason = r.reason
        return "skipped"
    if not _better(side, worst, float(r.price)):  # the rounded limit no longer reaches the worst level
        st.ceiling = float(r.price)
        return "ceiling"
    base = float(r.amount * cs)
    taken, notional, _ = _walk(levels, base)
    price = notional / taken if taken > 0 else float(r.price)
    st.result = (r, base, price, price * base * st.cand.fee_rate)
    return "truncated" if base < st.alloc * (1 - _EPS) and st.cap_units != r.amount else ""


def _usable(c: Candidate, side: Side) -> tuple[str, list[Level]]:
    """Why a candidate cannot be routed at all ("" when it can), and its levels, best first."""
    levels = sorted((lv for lv in c.levels if lv.price > 0 and lv.amount > 0),
                    key=lambda lv: lv.price if side == "buy" else -lv.price)
    if c.market is None:
        return NO_METADATA, levels
    if c.fx is None or not c.fx > 0:
        return NO_FX, levels
    if c.market.inverse:
        return INVERSE, levels
    if not levels:
        return NO_DEPTH, levels
    if not c.available > 0:
        return NO_BALANCE, levels
    return "", levels


def route(parent: Parent, candidates: Sequence[Candidate]) -> RoutePlan:
    """Split `parent` into IOC limit children over `candidates`, best executable price net of fees first.

    >>> from operators.execution.markets import market_example
    >>> def venue(name, *levels, fee=0.001):
    ...     return Candidate(f"{name}:BTC/USDT", market_example(instrument=f"{name}:BTC/USDT"),
    ...                      tuple(Level(p, a) for p, a in levels), 1.0, fee, math.inf, "book")
    >>> a, b = venue("a", (100.0, 1.0), (100.4, 1.0)), venue("b", (100.2, 1.0))
    >>> plan = route(Parent("p1", "acc", "BTC", "buy", 1.5, 0), [b, a])
    >>> [(c.instrument, c.amount, c.limit_price, c.expected_price) for c in plan.children]
    [('a:BTC/USDT', 1.0, 100.0, 100.0), ('b:BTC/USDT', 0.5, 100.2, 100.2)]
    >>> plan.unrouted
    0.0

    A share below the market's minimum notional is not sent; its amount goes to the next best level:

    >>> plan = route(Parent("p2", "acc", "BTC", "buy", 1.03, 0), [a, b])
    >>> [(c.instrument, c.amount, c.limit_price) for c in plan.children]
    [('a:BTC/USDT', 1.03, 100.4)]
    >>> [(r.instrument, r.reason) for r in plan.candidates]
    [('a:BTC/USDT', ''), ('b:BTC/USDT', 'notional 3.0060 below limits.cost.min 5')]
    """
    if not parent.amount > 0 or not math.isfinite(parent.amount):
        raise ValueError(f"parent {parent.parent_id}: amount must be a positive number, got {parent.amount}")
    if parent.side not in ("buy", "sell"):
        raise ValueError(f"parent {parent.parent_id}: side must be 'buy' or 'sell', got {parent.side!r}")
    if not parent.band_bps >= 0:
        raise ValueError(f"parent {parent.parent_id}: band_bps must be >= 0, got {parent.band_bps}")
    side = parent.side
    ordered = sorted(candidates, key=lambda c: c.instrument)
    twice = sorted({a.instrument for a, b in pairwise(ordered) if a.instrument == b.instrument})
    if twice:
        raise ValueError(f"parent {parent.parent_id}: candidate instruments appear more than once: {twice}")
    pre = [_usable(c, side) for c in ordered]
    # band reference: the best top of book in account currency, before fees, over every priced candidate
    tops = [lv[0].price * c.fx for c, (why, lv) in zip(ordered, pre)
            if c.fx is not None and why in ("", NO_BALANCE)]
    ref = (min(tops) if side == "buy" else max(tops)) if tops else math.nan
    band = ref * (1 + parent.band_bps / 1e4) if side == "buy" else ref * (1 - parent.band_bps / 1e4)

    reasons: list[str] = []
    states: list[_State | None] = []
    live: list[_State] = []
    for c, (why, levels) in zip(ordered, pre):
        st: _State | None = None
        if c.market is not None and c.fx is not None and why in ("", NO_BALANCE):
            fx = c.fx
            in_band = [lv for lv in levels if _better(side, lv.price * fx, band)]
            inside = [lv for lv in in_band if parent.limit_price is None
                      or _better(side, lv.price * fx, parent.limit_price)]
            st = _State(c, c.market, fx, inside, sum(lv.amount for lv in inside))
            if c.market.max_amount is not None:
                st.max_cap = st.cap = float(c.market.max_amount * c.market.contract_size)
            if not why:
                why = OUTSIDE_BAND if not in_band else BEYOND_LIMIT if not inside else ""
            st.reason = why
            live.append(st)
        reasons.append(why)
        states.append(st)

    # Settle: a skipped share or a dropped level frees amount for everyone, so the truncation caps start over;
    # otherwise the best-ranked truncated candidate is fixed at its rounded amount and the rest re-allocated.
    # Each round drops a candidate or a level (at most n + levels times) or fixes one more candidate.
    n = len(live)
    ranked = _ranking(live, side)
    for _ in range((n + sum(len(st.levels) for st in live) + 1) * (n + 1) + 1):
        _greedy(live, ranked, side, parent.amount)
        outcome = [(_settle(st, side, band, parent.limit_price), st) for st in live if not st.reason]
        if any(what in ("skipped", "ceiling") for what, _ in outcome):
            for st in live:
                st.cap, st.cap_units = st.max_cap, None
            continue
        truncated = [st for what, st in outcome if what == "truncated"]
        if not truncated:
            break
        first = min(truncated, key=lambda st: (_rank(side, st, st.levels[0]), st.cand.instrument))
        assert first.result is not None
        first.cap, first.cap_units = first.result[1], first.result[0].amount

    children: list[Child] = []
    reports: list[CandidateReport] = []
    for c, (_, top), why, st in zip(ordered, pre, reasons, states):
        best = _net(side, top[0].price, c.fx, c.fee_rate) if c.fx is not None and c.fx > 0 and top else None
        if st is None or st.result is None:
            reason = why or (st.reason if st is not None else "") or NOT_NEEDED
            if reason == NOT_NEEDED and st is not None and st.ceiling is not None and not any(
                    _better(side, lv.price, st.ceiling) for lv in st.levels):
                reason = OUTSIDE_BAND  # its limit can only be put on the grid outside the band
            reports.append(CandidateReport(c.instrument, c.depth_source, best, st.depth if st else 0.0, 0.0, None,
                                           reason))
            continue
        r, base, price, fee = st.result
        fx = st.fx
        cost = (price * base + fee) * fx if side == "buy" else (price * base - fee) * fx
        children.append(Child(stable_id("child", parent.parent_id, c.instrument), parent.parent_id, c.instrument,
                              side, float(r.amount), float(r.price), price, fee, cost, base))
        reports.append(CandidateReport(c.instrument, c.depth_source, best, st.depth, base, price, ""))
    unrouted = max(parent.amount - sum(ch.base_amount for ch in children), 0.0)
    return RoutePlan(parent, tuple(children), tuple(reports), unrouted)
