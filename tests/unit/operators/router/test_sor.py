"""Smart order routing: every child on its market's grid and limits (every real market), LP optimality, the rules."""

from __future__ import annotations

import math
import random
from decimal import Decimal
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from headrace.events import stable_id
from helpers import SHARED_DATA
from operators.execution.markets import Market, Rounded, check_order, dec, market_example
from operators.router.sor import (
    BEYOND_LIMIT,
    INVERSE,
    NO_BALANCE,
    NO_DEPTH,
    NO_FX,
    NO_METADATA,
    NOT_NEEDED,
    OUTSIDE_BAND,
    Candidate,
    Level,
    Parent,
    RoutePlan,
    route,
)

MARKETS = SHARED_DATA / "markets"
DUMPS = ("ccxt/binance.json", "ccxt/bybit.json", "ccxt/kraken.json", "ccxt/okx.json",
         "ccxt-dumps/bitget_mkt_meta.json.gz", "ccxt-dumps/hyperliquid_mkt_meta.json.gz")
ACCOUNT_PRICE = 1000.0  # what one base unit is worth in the account currency in the synthetic books


@cache
def all_markets() -> tuple[Market, ...]:
    from sources.market_metadata import load_dump

    if not MARKETS.exists():
        return ()
    out: list[Market] = []
    for name in DUMPS:
        path = MARKETS / name
        assert path.exists(), f"market dump missing: {path}"
        out.extend(load_dump(Path(path)).markets.values())
    return tuple(sorted(out, key=lambda m: m.instrument))


needs_markets = pytest.mark.skipif(not MARKETS.exists(), reason=f"real market dumps not found at {MARKETS}")


def price_step(m: Market) -> Decimal:
    if m.precision_mode == "TICK_SIZE":
        return m.price_precision
    if m.precision_mode == "DECIMAL_PLACES":
        return Decimal(1).scaleb(-int(m.price_precision))
    return Decimal(1)


def plausible_price(m: Market, k: int) -> float:
    """A price on the market's grid, `k` steps (clamped to the market's price limits)."""
    p = price_step(m) * k
    if m.min_price is not None:
        p = max(p, m.min_price * 2)
    if m.max_price is not None:
        p = min(p, m.max_price / 2)
    return float(p)


def book(m: Market, rng: random.Random, side: str, n: int) -> tuple[float, tuple[Level, ...]]:
    """A side of a synthetic book on `m`: the top price and `n` levels walking away from it, some off the grid."""
    top = plausible_price(m, rng.randint(1_000, 200_000))
    minimum = float(max(m.min_amount or 0, Decimal(0)) * m.contract_size)
    if m.min_cost is not None:
        minimum = max(minimum, float(m.min_cost) / top)
    size = max(minimum, float(m.amount_precision if m.precision_mode == "TICK_SIZE" else 0) * float(m.contract_size))
    size = max(size, 1e-6)
    sign = 1 if side == "buy" else -1
    levels = []
    for i in range(n):
        price = top * (1 + sign * i * rng.choice([0.0002, 0.0005, 0.001]))
        if rng.random() < 0.3:
            price *= 1 + sign * rng.random() * 1e-5  # off the grid
        levels.append(Level(price, size * rng.choice([0.3, 0.8, 1, 2, 5, 40])))
    return top, tuple(levels)


def synthetic_candidate(m: Market, rng: random.Random, side: str) -> Candidate:
    top, levels = book(m, rng, side, rng.randint(1, 6))
    fx = ACCOUNT_PRICE / top * (1 + rng.uniform(-0.002, 0.002))
    available = rng.choice([math.inf, math.inf, 0.0, rng.uniform(0.1, 3) * sum(lv.amount for lv in levels)])
    if side == "buy" and math.isfinite(available):
        available *= top
    return Candidate(m.instrument, m, levels, fx, float(m.taker_fee), available, "book")


def check_plan(plan: RoutePlan, cands: list[Candidate]) -> int:
    """Assert what holds for every plan; return the number of children."""
    parent, by_name = plan.parent, {c.instrument: c for c in cands}
    assert [r.instrument for r in plan.candidates] == sorted(c.instrument for c in cands)
    chosen = {r.instrument for r in plan.candidates if r.reason == ""}
    assert chosen == {ch.instrument for ch in plan.children}
    tops = [min(lv.price for lv in c.levels) * c.fx if parent.side == "buy" else max(lv.price for lv in c.levels) * c.fx
            for c in cands if c.market is not None and c.fx is not None and c.levels and not c.market.inverse]
    for ch in plan.children:
        c = by_name[ch.instrument]
        assert c.market is not None and c.fx is not None
        r = check_order(c.market, parent.side, ch.amount, ch.limit_price)
        assert isinstance(r, Rounded), (ch, r)
        assert (r.amount, r.price) == (dec(ch.amount), dec(ch.limit_price)), (ch, r)  # already rounded values
        assert ch.base_amount == float(r.amount * c.market.contract_size)
        assert ch.child_id == stable_id("child", parent.parent_id, ch.instrument)
        ref = min(tops) if parent.side == "buy" else max(tops)
        band = parent.band_bps / 1e4
        if parent.side == "buy":
            assert ch.limit_price * c.fx <= ref * (1 + band) * (1 + 1e-12)
            assert ch.expected_price * ch.base_amount * (1 + c.fee_rate) <= c.available * (1 + 1e-9)
        else:
            assert ch.limit_price * c.fx >= ref * (1 - band) * (1 - 1e-12)
            assert ch.base_amount <= c.available * (1 + 1e-9)
    for rep in plan.candidates:
        if rep.reason:
            assert rep.chosen_amount == 0
    routed = sum(ch.base_amount for ch in plan.children)
    assert routed <= parent.amount * (1 + 1e-9)
    assert plan.unrouted == pytest.approx(max(parent.amount - routed, 0.0), abs=1e-9 * parent.amount)
    return len(plan.children)


# --------------------------------------------------------------------------------------------------------------
# every real market


@needs_markets
def test_every_market_routes_onto_its_grid_and_limits() -> None:
    """Deterministic sweep: one synthetic book and two parents (buy and sell) on every market of every dump."""
    rng = random.Random(7)
    routed = inverse = 0
    for m in all_markets():
        for side in ("buy", "sell"):
            top, levels = book(m, rng, side, 4)
            cand = Candidate(m.instrument, m, levels, ACCOUNT_PRICE / top, float(m.taker_fee), math.inf, "book")
            amount = sum(lv.amount for lv in levels) * rng.choice([0.1, 0.5, 1.0, 2.0])
            plan = route(Parent("p", "acc", m.base, side, amount, 0, band_bps=200), [cand])  # type: ignore[arg-type]
            routed += check_plan(plan, [cand])
            if m.inverse:
                inverse += 1
                assert plan.candidates[0].reason == INVERSE
    n = len(all_markets())
    assert n > 1700 and inverse > 0
    assert routed > 1.5 * (n - inverse), f"only {routed} children over {n} markets: the sweep routes too little"


@needs_markets
@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), side=st.sampled_from(["buy", "sell"]), k=st.integers(1, 4),
       scale=st.sampled_from([0.05, 0.3, 1.0, 3.0]), band=st.sampled_from([5.0, 50.0, 300.0]))
def test_children_satisfy_their_markets(seed: int, side: str, k: int, scale: float, band: float) -> None:
    """Random parents over random sets of real markets: every child re-checks to itself, inside band and balance."""
    rng = random.Random(seed)
    markets = rng.sample(all_markets(), k)
    cands = [synthetic_candidate(m, rng, side) for m in markets]
    depth = sum(lv.amount for c in cands for lv in c.levels)
    parent = Parent("p", "acc", "X", side, depth * scale, 0, band_bps=band)  # type: ignore[arg-type]
    plan = route(parent, cands)
    check_plan(plan, cands)
    rng.shuffle(cands)
    assert route(parent, cands) == plan


# --------------------------------------------------------------------------------------------------------------
# optimality against the linear program (no minimums, fine precision)

FINE = market_example(amount_precision=Decimal("1e-10"), price_precision=Decimal("0.01"), min_amount=None,
                      max_amount=None, min_cost=None)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), side=st.sampled_from(["buy", "sell"]))
def test_greedy_cost_equals_linear_program_optimum(seed: int, side: str) -> None:
    rng = random.Random(seed)
    cands = []
    for v in range(rng.randint(1, 4)):
        fx = rng.choice([1.0, rng.uniform(0.5, 2.0)])
        top = rng.randint(9_000, 11_000) / fx
        levels = tuple(Level(round(top + (1 if side == "buy" else -1) * i * rng.uniform(0, 30), 2), rng.uniform(0.1, 3))
                       for i in range(rng.randint(1, 5)))
        levels = tuple(sorted(levels, key=lambda lv: lv.price if side == "buy" else -lv.price))
        avail = rng.choice([math.inf, rng.uniform(0.2, 4)])
        if side == "buy":
            avail *= top
        name = f"v{v}:BTC/USD"
        cands.append(Candidate(name, FINE, levels, fx, rng.choice([0.0, 0.001, 0.0026, 0.006]), avail, "book"))
    parent = Parent("p", "acc", "BTC", side, rng.uniform(0.1, 12), 0, band_bps=1e9)  # type: ignore[arg-type]
    plan = route(parent, cands)
    check_plan(plan, cands)

    # the linear program over every level: x_l in [0, amount_l]; balance per candidate; total = what we routed
    costs, uppers, rows, caps = [], [], [], []
    for i, c in enumerate(cands):
        row = []
        for lv in c.levels:
            net = lv.price * c.fx * ((1 + c.fee_rate) if side == "buy" else (1 - c.fee_rate))
            costs.append(net if side == "buy" else -net)
            uppers.append(lv.amount)
            row.append(lv.price * (1 + c.fee_rate) if side == "buy" else 1.0)
        if math.isfinite(c.available):
            full = np.zeros(sum(len(x.levels) for x in cands))
            start = sum(len(x.levels) for x in cands[:i])
            full[start:start + len(row)] = row
            rows.append(full)
            caps.append(c.available)
    n = len(costs)
    a_ub, b_ub = (np.array(rows), np.array(caps)) if rows else (None, None)
    most = linprog(-np.ones(n), A_ub=a_ub, b_ub=b_ub, bounds=list(zip([0.0] * n, uppers)), method="highs")
    routed = parent.amount - plan.unrouted
    assert routed == pytest.approx(min(parent.amount, -most.fun), rel=1e-7, abs=1e-8)  # fills all it can
    best = linprog(np.array(costs), A_ub=a_ub, b_ub=b_ub, A_eq=np.ones((1, n)), b_eq=[routed],
                   bounds=list(zip([0.0] * n, uppers)), method="highs")
    assert best.status == 0
    greedy = sum(ch.expected_cost_account for ch in plan.children)
    optimum = best.fun if side == "buy" else -best.fun
    assert greedy == pytest.approx(optimum, rel=1e-7, abs=1e-6)


# --------------------------------------------------------------------------------------------------------------
# the rules, one at a time

def cand(name: str, levels: list[tuple[float, float]], fx: float | None = 1.0, fee: float = 0.001,
         available: float = math.inf, market: Market | None = None, no_market: bool = False) -> Candidate:
    m = None if no_market else (market or market_example(instrument=f"{name}:BTC/USDT"))
    return Candidate(f"{name}:BTC/USDT", m, tuple(Level(p, a) for p, a in levels), fx, fee, available, "book")


def reasons(plan: RoutePlan) -> dict[str, str]:
    return {r.instrument.split(":")[0]: r.reason for r in plan.candidates}


def amounts(plan: RoutePlan) -> dict[str, float]:
    return {ch.instrument.split(":")[0]: ch.amount for ch in plan.children}


def test_fee_and_fx_decide_the_ranking() -> None:
    # b's price is lower but its fee makes it dearer; c quotes in a currency worth 0.999 of the account's
    a, b, c = cand("a", [(100.0, 1.0)], fee=0.001), cand("b", [(99.95, 1.0)], fee=0.002), \
        cand("c", [(100.02, 1.0)], fx=0.999, fee=0.001)
    plan = route(Parent("p", "acc", "BTC", "buy", 1.0, 0), [a, b, c])
    assert amounts(plan) == {"c": 1.0}
    assert reasons(plan) == {"a": NOT_NEEDED, "b": NOT_NEEDED, "c": ""}
    best = {r.instrument.split(":")[0]: r.best_price_account for r in plan.candidates}
    assert best == {"a": pytest.approx(100.1), "b": pytest.approx(99.95 * 1.002),
                    "c": pytest.approx(100.02 * .999 * 1.001)}
    sell = route(Parent("p", "acc", "BTC", "sell", 1.0, 0), [a, b, c])
    assert amounts(sell) == {"a": 1.0}  # 100 * 0.999 beats 99.95 * 0.998 and 100.02 * 0.999 * 0.999


def test_buy_balance_caps_spend_including_fee_and_sell_balance_caps_base() -> None:
    a, b = cand("a", [(100.0, 5.0)], available=250.0), cand("b", [(100.2, 5.0)])
    plan = route(Parent("p", "acc", "BTC", "buy", 3.0, 0), [a, b])
    ch = {c.instrument.split(":")[0]: c for c in plan.children}
    assert ch["a"].amount == 2.497  # 250 / (100 * 1.001) = 2.4975..., truncated
    assert ch["a"].expected_price * ch["a"].amount + ch["a"].expected_fee <= 250.0
    assert ch["b"].amount == pytest.approx(0.503)
    plan = route(Parent("p", "acc", "BTC", "sell", 3.0, 0), [cand("a", [(100.0, 5.0)], available=1.25),
                                                              cand("b", [(99.9, 5.0)], available=0.0)])
    assert amounts(plan) == {"a": 1.25}
    assert reasons(plan) == {"a": "", "b": NO_BALANCE}
    assert plan.unrouted == pytest.approx(1.75)


def test_band_excludes_levels_and_candidates() -> None:
    a = cand("a", [(100.0, 1.0), (100.4, 1.0), (100.6, 1.0)])
    far = cand("b", [(101.0, 10.0)])
    plan = route(Parent("p", "acc", "BTC", "buy", 3.0, 0, band_bps=50), [a, far])
    assert amounts(plan) == {"a": 2.0}
    assert plan.children[0].limit_price == 100.4
    assert reasons(plan) == {"a": "", "b": OUTSIDE_BAND}
    assert plan.candidates[0].depth_amount == 2.0 and plan.unrouted == pytest.approx(1.0)
    sell = route(Parent("p", "acc", "BTC", "sell", 3.0, 0, band_bps=50),
                 [cand("a", [(100.0, 1.0), (99.6, 1.0), (99.4, 1.0)])])
    assert amounts(sell) == {"a": 2.0} and sell.children[0].limit_price == 99.6


def test_off_grid_level_gets_a_crossing_limit_inside_the_band_only() -> None:
    plan = route(Parent("p", "acc", "BTC", "buy", 1.0, 0), [cand("a", [(100.005, 1.0)])])
    assert plan.children[0].limit_price == 100.01  # on the grid and still crossing 100.005
    # the band is exactly the top level: 100.01 would leave it, 100.00 does not cross, so nothing is sent
    plan = route(Parent("p", "acc", "BTC", "buy", 1.0, 0, band_bps=0), [cand("a", [(100.005, 1.0)])])
    assert plan.children == () and reasons(plan) == {"a": OUTSIDE_BAND}


def test_parent_limit_price_in_account_currency() -> None:
    a, b = cand("a", [(100.0, 1.0), (100.3, 1.0)]), cand("b", [(50.1, 1.0)], fx=2.0)  # b: 100.2 in account ccy
    plan = route(Parent("p", "acc", "BTC", "buy", 3.0, 0, limit_price=100.25), [a, b])
    assert amounts(plan) == {"a": 1.0, "b": 1.0}
    assert all(ch.limit_price * (2.0 if ch.instrument.startswith("b") else 1.0) <= 100.25 for ch in plan.children)
    plan = route(Parent("p", "acc", "BTC", "buy", 1.0, 0, limit_price=99.0), [a])
    assert plan.children == () and reasons(plan) == {"a": BEYOND_LIMIT}


def test_no_metadata_no_fx_no_depth_are_never_routed() -> None:
    good = cand("d", [(101.0, 10.0)])
    plan = route(Parent("p", "acc", "BTC", "buy", 1.0, 0, band_bps=500),
                 [cand("a", [(100.0, 10.0)], no_market=True), cand("b", [(100.0, 10.0)], fx=None),
                  cand("c", []), good])
    assert reasons(plan) == {"a": NO_METADATA, "b": NO_FX, "c": NO_DEPTH, "d": ""}
    assert amounts(plan) == {"d": 1.0}
    assert [r.best_price_account for r in plan.candidates][:3] == [pytest.approx(100.1), None, None]


def test_minimum_reallocates_to_other_venues_until_stable() -> None:
    # a's share (0.04 BTC = 4 USDT) is below its 5 USDT minimum: it goes to b and c's remaining levels
    a = cand("a", [(100.0, 0.04)], fee=0.0)
    b = cand("b", [(100.1, 0.5)], fee=0.0)
    c = cand("c", [(100.2, 5.0)], fee=0.0)
    plan = route(Parent("p", "acc", "BTC", "buy", 1.0, 0), [c, a, b])
    assert reasons(plan) == {"a": "notional 4.000 below limits.cost.min 5", "b": "", "c": ""}
    assert amounts(plan) == {"b": 0.5, "c": 0.5}
    # truncation: b's 0.5004 rounds to 0.5 and the rest goes to c
    plan = route(Parent("p", "acc", "BTC", "buy", 1.0, 0), [cand("b", [(100.1, 0.5004)], fee=0.0), c])
    assert amounts(plan) == {"b": 0.5, "c": 0.5} and plan.unrouted == 0.0
    # nothing else to take: the skipped amount stays unrouted
    plan = route(Parent("p", "acc", "BTC", "buy", 0.04, 0), [a])
    assert plan.children == () and plan.unrouted == 0.04


def test_contracts_are_order_units_and_base_amounts_are_base() -> None:
    perp = market_example(instrument="okx:BTC/USDT:USDT", type="swap", contract_size=Decimal("0.01"),
                          amount_precision=Decimal("0.01"), min_amount=Decimal("0.01"))
    plan = route(Parent("p", "acc", "BTC", "sell", 0.12345, 0),
                 [cand("okx", [(30_000.0, 5.0)], market=perp)])
    (ch,) = plan.children
    assert (ch.amount, ch.base_amount) == (12.34, 0.1234)
    assert plan.candidates[0].chosen_amount == 0.1234


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_same_input_same_plan_whatever_the_candidate_order(seed: int) -> None:
    rng = random.Random(seed)
    cands = [cand(n, [(round(rng.uniform(99, 101), 2), rng.choice([0.03, 0.5, 2.0])) for _ in range(3)],
                  fee=rng.choice([0.0, 0.001]), available=rng.choice([math.inf, 80.0]))
             for n in "abcde"]
    cands = [c for c in cands] + [cand("f", [(100.0, 1.0)])]  # ties on price with others
    parent = Parent("p", "acc", "BTC", "buy", rng.uniform(0.1, 6), 0, band_bps=100)
    plan = route(parent, cands)
    for _ in range(3):
        rng.shuffle(cands)
        assert route(parent, cands) == plan
    check_plan(plan, cands)


def test_bad_parents_are_refused() -> None:
    with pytest.raises(ValueError, match="amount must be a positive number"):
        route(Parent("p", "acc", "BTC", "buy", 0.0, 0), [])
    with pytest.raises(ValueError, match="side must be"):
        route(Parent("p", "acc", "BTC", "short", 1.0, 0), [])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="band_bps must be >= 0"):
        route(Parent("p", "acc", "BTC", "buy", 1.0, 0, band_bps=-1), [])
    with pytest.raises(ValueError, match=r"more than once: \['a:BTC/USDT'\]"):
        route(Parent("p", "acc", "BTC", "buy", 1.0, 0), [cand("a", [(1.0, 1.0)]), cand("a", [(2.0, 1.0)])])


@needs_markets
def test_real_binance_btc_market() -> None:
    from sources.market_metadata import load_dump

    m = load_dump(MARKETS / "ccxt/binance.json").markets["BTC/USDT"]
    asks = [(60_000.0 + i * 0.5, 0.1) for i in range(20)]
    plan = route(Parent("p", "acc", "BTC", "buy", 1.0000001, 0, band_bps=5),
                 [Candidate(m.instrument, m, tuple(Level(p, a) for p, a in asks), 1.0, 0.001, math.inf, "book")])
    (ch,) = plan.children
    r = check_order(m, "buy", ch.amount, ch.limit_price)
    assert isinstance(r, Rounded) and float(r.amount) == ch.amount == 1.0 and ch.limit_price == 60_004.5
    assert ch.expected_price == pytest.approx(sum(p for p, _ in asks[:10]) / 10)
