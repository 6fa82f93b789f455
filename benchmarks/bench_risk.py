"""What the risk engine costs: per bar and per rebalance for 20, 50 and 100 assets; the replay with it on and off.

Two parts (see benchmarks/README.md for every printed line):

- **the cores**, in this process: a `RiskEngine` (``operators/risk/engine.py``) with the default ``[risk]`` settings,
  built by ``flows.trading.risk_settings`` as a replay builds them (window 500 bars, min 50, alpha 0.975, ES limit
  0.08, the seven default stress scenarios with their shock files, the pre-trade limits), fed the real hourly
  closes of the universe ``../shared/data/universe/huobi-pob/cryptos_2017to2021_hourly.parquet`` (82 assets, as
  ``huobi:<ASSET>/USDT``): the first 20, 50 and all 82 of its columns; for 100 assets, the 82 plus the first 18
  columns again as assets of their own (``huobi:<ASSET>_SHIFTED/USDT``) starting ``SHIFT`` hours later, so they are
  real returns of other hours, not copies. Each repeat builds a fresh engine and feeds it ``window`` bars untimed
  (the ring buffer full), then times ``--bars`` bars (default 1,000) of what the account calls every bar:
  ``observe(prices, spreads, volumes)``, ``commands(ts)``, ``assess(ts, book)``, the book holding every asset
  (90 % of equity spread evenly at the start of the timed bars, marked to each bar's close, 10 % cash). The inputs
  (price dicts, books) are built before the timer: the figure is the engine's time only. Two input kinds:
  ``closes`` as the hourly universe's replay passes them (closes only, volume 0, no quotes: LVaR takes the
  venue's configured half spread and no impact term) and ``quoted`` with a relative spread and a bar volume for
  every asset (synthetic, from each bar's real return: spread 2 bps + 10 % of |return|, volume 10^6 x
  (1 + 50 |return|) in USDT), which also runs the spread EWMA and the square-root impact term.
  Then the rebalance cost on the engine so fed: ``scale`` of equal target weights (``TARGET_GROSS`` / n each:
  their ES is above the limit, so the targets are scaled and the ES computed twice), ``stress`` of the book
  (every default scenario), ``limit_rows`` and one pre-trade ``check`` per asset (a small order, buy and sell
  alternating), ``--rebalances`` times (default 200), an hour apart. Medians of ``--repeat`` repeats after an
  untimed warm-up repeat.
- **the replay**: the whole trading flow over the hourly universe (``replay.venue = "huobi"``,
  ``replay.quote = "USDT"``, otherwise the default config; 316,684 bars), in this process on one Bytewax worker
  (``flows.runner.run``, 10 s epochs) with a sink that drops every row, the plan opened before the timer, and
  ``storage.state_dir`` a temp dir (no operator commands). Cases: risk engine on (the default) and off
  (``risk.enabled=false``), each with ML on (the default) and off (``ml.enabled=false``: ML dominates the flow's
  time, so the risk engine's share shows better without it). One untimed warm-up run, then the cases alternate
  (repeat r of each before repeat r + 1 of any). ``--quick`` replays only ``QUICK_RANGE`` (the May 2021 sell-off
  and the weeks around it) instead of the whole file.

stdout carries only ``name: value`` lines (``--json``: one JSON object of the same names instead); progress, the
raw figures of every repeat and the load average go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from _report import emit, log
from bench_replay import DropSink

from flows.runner import run
from flows.trading import build_flow, risk_settings, wiring
from headrace.config import load_config
from operators.risk.engine import Book, Holding, RiskEngine
from operators.risk.pretrade import OrderCheck
from sources.select import open_plan

ROOT = Path(__file__).resolve().parent.parent
HOURLY = ROOT.parent / "shared" / "data" / "universe" / "huobi-pob" / "cryptos_2017to2021_hourly.parquet"
SIZES = (20, 50, 100)
SHIFT = 2_000  # hours: where the 18 extra assets of the 100-asset case start
HOUR_NS = 3_600 * 10**9
TARGET_GROSS = 5.0  # equal targets this many times equity: above the ES limit, so `scale` does its whole work
EQUITY = 10_000.0
QUICK_RANGE = "2021-04-20:2021-06-01"
REPLAY_COMMON = ['replay.venue="huobi"', 'replay.quote="USDT"']
CASES = {  # replay case -> extra overrides
    "risk_on": [],
    "risk_off": ["risk.enabled=false"],
    "risk_on_ml_off": ["ml.enabled=false"],
    "risk_off_ml_off": ["risk.enabled=false", "ml.enabled=false"],
}


# ---------------------------------------------------------------------------------------------------
# the cores


def closes(n: int, bars: int) -> tuple[list[str], np.ndarray]:
    """`n` instrument keys and their hourly closes (bars x n): the universe's first columns, then shifted ones."""
    df = pl.read_parquet(HOURLY)
    assets = df.columns[1:]
    if len(df) < SHIFT + bars:
        raise SystemExit(f"bench_risk: {HOURLY} holds {len(df)} hours, {SHIFT + bars} needed")
    names = [f"huobi:{a}/USDT" for a in assets[:n]]
    cols = [df[a].to_numpy()[:bars] for a in assets[:n]]
    for a in assets[:max(0, n - len(assets))]:
        names.append(f"huobi:{a}_SHIFTED/USDT")
        cols.append(df[a].to_numpy()[SHIFT:SHIFT + bars])
    out = np.column_stack(cols).astype(np.float64)
    if not np.isfinite(out).all() or not (out > 0).all():
        raise SystemExit(f"bench_risk: {HOURLY} has missing or non-positive closes in the first {bars} hours")
    return names, out


BarInput = tuple[int, dict[str, float], dict[str, float], dict[str, float], Book]


def inputs(keys: list[str], px: np.ndarray, warm: int, quoted: bool) -> list[BarInput]:
    """Every bar's observe and assess arguments, built before any timer."""
    qty = 0.9 * EQUITY / len(keys) / px[warm]  # the book bought at the first timed bar, held
    cash = 0.1 * EQUITY
    ret = np.vstack([np.zeros((1, px.shape[1])), px[1:] / px[:-1] - 1.0])
    out: list[BarInput] = []
    for t in range(px.shape[0]):
        prices = dict(zip(keys, px[t].tolist(), strict=True))
        if quoted:
            r = np.abs(ret[t])
            spreads = dict(zip(keys, (2e-4 + 0.1 * r).tolist(), strict=True))
            volumes = dict(zip(keys, (1e6 * (1 + 50 * r)).tolist(), strict=True))
        else:
            spreads, volumes = {}, dict.fromkeys(keys, 0.0)
        values = (qty * px[t]).tolist() if t >= warm else [0.0] * len(keys)
        holdings = tuple(Holding(key=k, venue="huobi", asset=k.split(":")[1].split("/")[0], quote="USDT", value=v)
                         for k, v in zip(keys, values, strict=True) if v != 0)
        book_cash = cash if t >= warm else EQUITY
        book = Book(equity=book_cash + sum(values), holdings=holdings, cash=(("huobi", "USDT", book_cash),))
        out.append((t * HOUR_NS, prices, spreads, volumes, book))
    return out


def feed(engine: RiskEngine, bars: list[BarInput]) -> None:
    for ts, prices, spreads, volumes, book in bars:
        engine.observe(prices, spreads, volumes)
        engine.commands(ts)
        engine.assess(ts, book)


def rebalance(engine: RiskEngine, ts: int, book: Book, prices: dict[str, float], targets: dict[str, float]) -> float:
    """What the account asks of the engine at one rebalance; returns the ES scale it got."""
    k, _ = engine.scale(ts, targets)
    exposure = {h.key: h.value for h in book.holdings}
    gross = sum(abs(v) for v in exposure.values())
    net = sum(exposure.values())
    for i, key in enumerate(engine.keys):
        px = prices[key]
        sign = 1.0 if i % 2 == 0 else -1.0
        before = exposure.get(key, 0.0)

        def make(amount: float, key: str = key, px: float = px, sign: float = sign,
                 before: float = before) -> OrderCheck:
            d = sign * amount * px
            return OrderCheck(instrument=key, asset=key.split(":")[1].split("/")[0], notional=amount * px, price=px,
                              mark=px, position_before=before, position_after=before + d, asset_before=before,
                              asset_after=before + d, gross_before=gross, gross_after=gross - abs(before)
                              + abs(before + d), net_before=net, net_after=net + d, equity=book.equity)

        engine.check(ts, f"o{ts}-{i}", "buy" if sign > 0 else "sell", 0.001 * book.equity / px, before / px, make)
    engine.stress(ts, book, "USDT")
    engine.limit_rows(ts, book)
    return k


def bench_cores(repeats: int, bars: int, rebalances: int, out: dict[str, float | int]) -> None:
    with tempfile.TemporaryDirectory(prefix="headrace-bench-risk-") as state:  # no operator commands
        cfg = load_config(None, [*REPLAY_COMMON, f"storage.state_dir={json.dumps(state)}"])
        wired = {n: risk_settings(cfg, wiring(cfg, closes(n, 1)[0])) for n in SIZES}
    for n in SIZES:
        settings = wired[n]
        if settings is None:
            raise SystemExit("bench_risk: the default config has the risk engine off")
        keys, px = closes(n, settings.window + bars)
        warm = settings.window
        log(f"cores, {n} assets: {n - max(0, n - 82)} real columns"
            + (f" + {n - 82} shifted by {SHIFT} h" if n > 82 else "")
            + f"; window {settings.window}, {len(settings.scenarios)} scenarios; {bars} timed bars, "
              f"{rebalances} rebalances")
        for kind in ("closes", "quoted"):
            data = inputs(keys, px, warm, kind == "quoted")
            per_bar: list[float] = []
            per_reb: list[float] = []
            scales: set[float] = set()
            for r in range(repeats + 1):  # the first is the warm-up
                engine = RiskEngine(settings, keys)
                feed(engine, data[:warm])
                t0 = time.perf_counter()
                feed(engine, data[warm:])
                t_bar = (time.perf_counter() - t0) / bars
                ts0, prices, _, _, book = data[-1]
                targets = dict.fromkeys(keys, TARGET_GROSS / n)
                t0 = time.perf_counter()
                for i in range(rebalances):
                    scales.add(rebalance(engine, ts0 + (i + 1) * HOUR_NS, book, prices, targets))
                t_reb = (time.perf_counter() - t0) / rebalances
                if r:
                    per_bar.append(t_bar)
                    per_reb.append(t_reb)
            log(f"  {kind}: per bar " + ", ".join(f"{t * 1e6:.1f}" for t in per_bar) + " µs; per rebalance "
                + ", ".join(f"{t * 1e6:.0f}" for t in per_reb) + f" µs; ES {engine.measures.es_historical:.4f} "
                f"(historical), {engine.measures.es_cornish_fisher:.4f} (CF); scale {sorted(scales)}")
            tag = "" if kind == "closes" else "_quoted"
            out[f"risk_bar_{n}_assets{tag}_us"] = statistics.median(per_bar) * 1e6
            out[f"risk_rebalance_{n}_assets{tag}_us"] = statistics.median(per_reb) * 1e6


# ---------------------------------------------------------------------------------------------------
# the replay


def replay(overrides: list[str], timerange: str) -> tuple[int, float]:
    """One in-process replay of the hourly universe; its bars and flow wall time (plan opened before the timer)."""
    with tempfile.TemporaryDirectory(prefix="headrace-bench-risk-") as d:
        config = load_config(None, [*REPLAY_COMMON, f"storage.state_dir={json.dumps(d)}", *overrides])
        plan = open_plan([str(HOURLY)], config, timerange=timerange)
        flow = build_flow(plan, config, "bench-risk", sink=DropSink())
        t0 = time.perf_counter()
        run(flow, workers=1, epoch_s=10.0)
        return plan.total_rows, time.perf_counter() - t0


def bench_replay(repeats: int, quick: bool, out: dict[str, float | int]) -> None:
    timerange = QUICK_RANGE if quick else ""
    log(f"replay: {HOURLY.name}" + (f" over {timerange}" if quick else " (whole file)")
        + f", cases {', '.join(CASES)}, {repeats} repeats alternating after a warm-up")
    replay(CASES["risk_on"], timerange)
    rates: dict[str, list[float]] = {c: [] for c in CASES}
    bars: set[int] = set()
    for r in range(repeats):
        for case, sets in CASES.items():
            n, wall = replay(sets, timerange)
            bars.add(n)
            rates[case].append(n / wall)
            log(f"  {case} repeat {r + 1}: {n / wall:,.0f} bars/s ({n:,} bars, {wall:.2f} s)")
    if len(bars) != 1:
        raise SystemExit(f"bench_risk: the cases replayed different bar counts: {sorted(bars)}")
    log(f"  (load average {os.getloadavg()[0]:.2f})")
    name = "replay_hourly" + ("_quick" if quick else "")
    med = {c: statistics.median(v) for c, v in rates.items()}
    out[f"{name}_bars"] = bars.pop()
    for case, v in med.items():
        out[f"{name}_{case}_bars_per_s"] = v
    out[f"{name}_risk_overhead_pct"] = 100 * (1 - med["risk_on"] / med["risk_off"])
    out[f"{name}_risk_overhead_ml_off_pct"] = 100 * (1 - med["risk_on_ml_off"] / med["risk_off_ml_off"])


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per figure (median)")
    ap.add_argument("--bars", type=int, default=1_000, help="timed bars per core repeat")
    ap.add_argument("--rebalances", type=int, default=200, help="timed rebalances per core repeat")
    ap.add_argument("--quick", action="store_true", help=f"replay only {QUICK_RANGE} of the hourly universe")
    ap.add_argument("--no-replay", action="store_true", help="the cores only (under a minute)")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout instead of name: value lines")
    args = ap.parse_args()
    if not HOURLY.exists():
        raise SystemExit(f"bench_risk: {HOURLY} is missing (the shared data beside the repo)")
    log(f"bench_risk: {args.repeat} repeats, median; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    out: dict[str, float | int] = {}
    bench_cores(args.repeat, args.bars, args.rebalances, out)
    if not args.no_replay:
        bench_replay(args.repeat, args.quick, out)
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            emit(k, v)


if __name__ == "__main__":
    main()
