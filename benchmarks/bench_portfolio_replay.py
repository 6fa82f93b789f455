"""Replay throughput of the 82-asset hourly universe (huobi, USDT) with each portfolio method, on one worker.

For each ``portfolio.method`` (vol_target with the engine recording risk, ``portfolio.record_risk=true``;
and the default, vol_target with the engine off, as the baseline ``off``) the whole flow runs over the
universe's whole file (Jan to Jun 2021, 3,862 hours, 316,682 bars) with a sink that drops the rows, on a plan
built before the timer; rebalancing daily (``strategy.rebalance_bars=24``). Figures (median of ``--repeats``
timed runs, default 2, after an untimed warm-up):

- ``portfolio_<method>_bars_per_s``: bars through the flow per second;
- ``portfolio_<method>_rebalances``: rebalances decided (the same for every method);
- ``portfolio_<method>_decide_ms_p50`` / ``_p99``: the engine's time per rebalance (returns to weights and
  records), as its ``rebalances.solve_ms`` column records it.

Needs the recorded data: ``--data`` (default ``../shared/data/universe/huobi-pob/cryptos_2017to2021_hourly.parquet``
beside the repo). stdout carries only ``name: value`` lines; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from _report import emit, log
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from flows.runner import run
from flows.trading import build_flow
from headrace.config import load_config
from headrace.events import Rebalance
from sources.select import open_plan

ROOT = Path(__file__).resolve().parent.parent
HOURLY = ROOT.parent / "shared" / "data" / "universe" / "huobi-pob" / "cryptos_2017to2021_hourly.parquet"
CASES = {
    "off": [],
    "vol_target": ["portfolio.record_risk=true"],
    "mean_variance": ['portfolio.method="mean_variance"'],
    "tier_risk_parity": ['portfolio.method="tier_risk_parity"'],
    "regime_tiers": ['portfolio.method="regime_tiers"'],
}
COMMON = ['replay.venue="huobi"', 'replay.quote="USDT"', "strategy.rebalance_bars=24",
          "features.momentum_lookback_bars=168", "features.vol_halflife_bars=72.0", "replay.chunk_rows=20000"]


class _Keep(StatelessSinkPartition[Any]):
    def __init__(self, out: list[float]) -> None:
        self.out = out

    def write_batch(self, items: list[Any]) -> None:
        for _, v in items:
            for e in v if isinstance(v, list) else [v]:
                if isinstance(e, Rebalance):
                    self.out.append(e.solve_ms)


class RebalanceSink(DynamicSink[Any]):
    """Drops every row but keeps the rebalances' measured solve times."""

    def __init__(self) -> None:
        self.solve_ms: list[float] = []

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Keep:
        return _Keep(self.solve_ms)


def once(data: Path, overrides: list[str]) -> tuple[float, int, list[float]]:
    config = load_config(None, [*COMMON, *overrides])
    plan = open_plan([str(data)], config)
    sink = RebalanceSink()
    flow = build_flow(plan, config, "bench", sink=sink)
    t0 = time.perf_counter()
    run(flow, workers=1, epoch_s=10.0)
    return time.perf_counter() - t0, plan.total_rows, sink.solve_ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=HOURLY)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    log("warm-up")
    once(args.data, CASES["off"])
    for name, overrides in CASES.items():
        rates, times = [], []
        for i in range(args.repeats):
            wall, rows, solve_ms = once(args.data, overrides)
            rates.append(rows / wall)
            times = solve_ms
            log(f"{name} repeat {i + 1}: {rows / wall:,.0f} bars/s ({rows:,} bars, {wall:.1f} s)")
        emit(f"portfolio_{name}_bars_per_s", statistics.median(rates))
        if times:
            emit(f"portfolio_{name}_rebalances", len(times))
            emit(f"portfolio_{name}_decide_ms_p50", float(np.percentile(times, 50)))
            emit(f"portfolio_{name}_decide_ms_p99", float(np.percentile(times, 99)))


if __name__ == "__main__":
    main()
