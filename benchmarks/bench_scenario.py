"""Replay throughput of the router scenario ``usdc-depeg-2023`` (BTC across Binance.US and Kraken in USD, USDT and
USDC, router and arbitrage signal on), on one Bytewax worker.

Two figures, each the median of 3 timed runs after an untimed warm-up:

- ``scenario_bars_per_s_flow``: the whole flow (validation, bars, features, cross-section with the arbitrage
  core, the routed account) with a sink that drops the rows, on a plan built before the timer;
- ``scenario_bars_per_s_e2e``: ``headrace replay --scenario usdc-depeg-2023 --json`` in a fresh process
  writing to embedded chDB in a temp dir, bars divided by the process's wall time (start-up included).

Needs the recorded data: ``--data`` (default ``../shared/data/cross_venue`` beside the repo).
stdout carries only ``name: value`` lines; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import emit, log
from bench_replay import DropSink

from flows.runner import run
from flows.trading import build_flow
from headrace import scenarios
from headrace.config import load_config
from sources.select import open_plan

ROOT = Path(__file__).resolve().parent.parent


def flow_once(files: list[str], overrides: list[str], config_path: Path) -> tuple[float, int]:
    config = load_config(config_path, overrides)
    plan = open_plan(files, config)
    flow = build_flow(plan, config, "bench", sink=DropSink())
    t0 = time.perf_counter()
    run(flow, workers=1, epoch_s=10.0)
    return time.perf_counter() - t0, plan.total_rows


def e2e_once(data: Path) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "headrace.cli", "replay", "--scenario", "usdc-depeg-2023",
                              "--data", str(data), "--json", "--quiet", "--set", f"storage.state_dir={tmp}/state"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout
        wall = time.perf_counter() - t0
    return wall, int(json.loads(out)["bars"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cross_venue")
    args = ap.parse_args()
    sc = scenarios.load("usdc-depeg-2023", [str(args.data)])
    overrides = list(sc.overrides)
    log("warm-up")
    flow_once(list(sc.files), overrides, sc.config)
    flows, e2e = [], []
    for i in range(3):
        wall, rows = flow_once(list(sc.files), overrides, sc.config)
        flows.append(rows / wall)
        wall, bars = e2e_once(args.data)
        e2e.append(bars / wall)
        log(f"repeat {i + 1}: flow {flows[-1]:,.0f} bars/s, end to end {e2e[-1]:,.0f} bars/s")
    emit("scenario_bars_per_s_flow", statistics.median(flows))
    emit("scenario_bars_per_s_e2e", statistics.median(e2e))
    log(f"scenario usdc-depeg-2023: {statistics.median(flows):,.0f} bars/s flow only, "
        f"{statistics.median(e2e):,.0f} bars/s end to end ({rows:,} bars, median of 3)")


if __name__ == "__main__":
    main()
