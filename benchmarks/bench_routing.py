"""Smart order routing: routing decisions per second for one parent order across 5 venues, 20 book levels each.

The venues are real BTC markets from the ccxt definitions in ``../shared/data/markets/ccxt`` (binance,
bybit, okx BTC/USDT, kraken BTC/USD, and a fifth from the Bitget dump), each with its real precision, minimums
and taker fee; a venue whose definition is missing is replaced by ``market_example``. Each venue has a
synthetic book side of 20 levels around 60,000 (a seeded random walk on the venue's tick, sizes 0.01 to 1.5
BTC), so a parent of 0.5 to 12 BTC spreads over several venues and levels. The parents alternate buy and sell
with seeded amounts, some with a finite quote or base balance on one venue; they are built before the timer.

One decision is one `route(parent, candidates)` call (ranking, band, balances, rounding to each market with
`check_order`, re-allocation). Each run times 2,000 decisions with ``time.perf_counter()`` after an untimed
warm-up; the figure is the median of 5 runs. stdout carries only ``name: value`` lines; the readable line and
the raw timings go to stderr.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from pathlib import Path

from _report import emit, log

from operators.execution.markets import Market, market_example
from operators.router.sor import Candidate, Level, Parent, route
from sources.market_metadata import load_dump

ROOT = Path(__file__).resolve().parent.parent
MARKETS = ROOT.parent / "shared" / "data" / "markets"
VENUES = (("binance", "ccxt/binance.json", "BTC/USDT"), ("bybit", "ccxt/bybit.json", "BTC/USDT"),
          ("kraken", "ccxt/kraken.json", "BTC/USD"), ("okx", "ccxt/okx.json", "BTC/USDT"),
          ("bitget", "ccxt-dumps/bitget_mkt_meta.json.gz", "BTC/USDT"))
LEVELS = 20
DECISIONS = 2_000
RUNS = 5
SEED = 7


def venue_market(venue: str, path: str, symbol: str) -> Market:
    file = MARKETS / path
    if file.exists():
        markets = load_dump(file).markets
        if symbol in markets:
            return markets[symbol]
    log(f"{venue}: no definition of {symbol} at {file}; using market_example")
    return market_example(instrument=f"{venue}:{symbol}", venue=venue)


def tick(m: Market) -> float:
    if m.precision_mode == "TICK_SIZE":
        return float(m.price_precision)
    if m.precision_mode == "DECIMAL_PLACES":
        return 10.0 ** -int(m.price_precision)
    return 1.0


def book(m: Market, rng: random.Random, side: str) -> tuple[Level, ...]:
    step = max(tick(m), 0.01)
    price = round(60_000 * (1 + rng.uniform(-0.0005, 0.0005)) / step) * step
    sign = 1 if side == "buy" else -1
    levels = []
    for _ in range(LEVELS):
        levels.append(Level(price, round(rng.uniform(0.01, 1.5), 4)))
        price += sign * step * rng.randint(1, 20)
    return tuple(levels)


def decisions(markets: list[Market], rng: random.Random, n: int) -> list[tuple[Parent, list[Candidate]]]:
    out = []
    for i in range(n):
        side = "buy" if i % 2 == 0 else "sell"
        cands = []
        for m in markets:
            avail = math.inf if rng.random() < 0.7 else rng.uniform(0.2, 3) * (60_000 if side == "buy" else 1)
            cands.append(Candidate(m.instrument, m, book(m, rng, side), 1.0, float(m.taker_fee) or 0.001, avail,
                                   "book"))
        out.append((Parent(f"p{i}", "acc", "BTC", side, round(rng.uniform(0.5, 12), 4), i, band_bps=50), cands))
    return out


def main() -> None:
    markets = [venue_market(*v) for v in VENUES]
    log("venues: " + ", ".join(m.instrument for m in markets))
    rng = random.Random(SEED)
    work = decisions(markets, rng, DECISIONS)
    children = sum(len(route(p, c).children) for p, c in work[:200])  # warm-up, and a sanity figure
    rates = []
    for run in range(RUNS):
        t0 = time.perf_counter()
        for parent, cands in work:
            route(parent, cands)
        elapsed = time.perf_counter() - t0
        rates.append(DECISIONS / elapsed)
        log(f"run {run + 1}: {DECISIONS} decisions in {elapsed:.3f} s = {rates[-1]:.0f}/s")
    rate = statistics.median(rates)
    log(f"routing: {rate:.0f} decisions/s ({len(markets)} venues x {LEVELS} levels, median of {RUNS} runs)")
    emit(f"routing_{len(markets)}_venues_{LEVELS}_levels_decisions_per_s", rate)
    emit("routing_children_per_decision", children / 200)


if __name__ == "__main__":
    main()
