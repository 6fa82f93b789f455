"""Profile one replay (the bar path or the tick path) under cProfile: where the time goes, by stage.

Not a benchmark (``make bench`` runs only ``bench_*.py``); a tool for docs/performance.md::

    .venv/bin/python benchmarks/profile_replay.py bars            # demo bars, ClickHouse sink
    .venv/bin/python benchmarks/profile_replay.py ticks --null    # 2,000,000 synthetic ticks, dropping sink
    .venv/bin/python benchmarks/profile_replay.py ticks --top 40  # more functions

One untimed warm-up run, then one profiled run of the whole replay: reading the files, building the plan,
the flow under ``bytewax.testing.run_main`` (on this thread, so cProfile sees every step) and, unless
``--null``, the ClickHouse sink writing to an embedded chDB in a temp dir. Prints the time per stage
(cumulative seconds of the stage's entry points, which do not nest in one another) and the functions with
the most own time. cProfile roughly doubles per-call Python costs: read the shares, not the seconds.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from bytewax.testing import run_main

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_replay import DEMO, SEED, TICKS, DropSink

from flows.trading import build_flow
from headrace.config import load_config
from operators.bars.bar_builder import BarBuilder
from operators.features.bar_features import BarFeatures
from operators.portfolio.cross_section import CrossSectionCore
from operators.positions.account import Account
from operators.validation.market_checks import MarketValidator
from sinks.clickhouse import Store
from sinks.rows import to_arrow
from sources import synthetic
from sources.formats import read_paths
from sources.replay_plan import ReplayPlan

# stage -> entry points; their cumulative times do not overlap (none calls another)
STAGES: dict[str, list[Callable[..., Any]]] = {
    "read files (sources/formats.read_paths)": [read_paths],
    "plan build (ReplayPlan.build)": [ReplayPlan.build.__func__],  # type: ignore[attr-defined]
    "source slices (ReplayPlan.slice)": [ReplayPlan.slice],
    "validate (MarketValidator)": [MarketValidator.update],
    "bars (BarBuilder)": [BarBuilder.update, BarBuilder.flush],
    "features (BarFeatures)": [BarFeatures.update],
    "cross section (CrossSectionCore)": [CrossSectionCore.update, CrossSectionCore.flush],
    "account (Account)": [Account.update, Account.flush],
    "sink rows -> Arrow (sinks/rows.to_arrow)": [to_arrow],
    "sink insert (chDB via clickhouse-connect)": [Store.insert],
    "sink schema (Store.init_schema)": [Store.init_schema],
}


def stage_times(stats: pstats.Stats) -> dict[str, float]:
    raw = stats.stats  # type: ignore[attr-defined]
    out = {}
    for stage, funcs in STAGES.items():
        keys = {(f.__code__.co_filename, f.__code__.co_firstlineno, f.__code__.co_name) for f in funcs}
        out[stage] = sum(v[3] for k, v in raw.items() if k in keys)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", choices=["bars", "ticks"])
    ap.add_argument("--null", action="store_true", help="drop the rows instead of writing them to chDB")
    ap.add_argument("--top", type=int, default=25, help="functions to list by own time")
    args = ap.parse_args()
    config = load_config()
    with tempfile.TemporaryDirectory(prefix="headrace-profile-") as d:
        dsn = f"chdb://{d}/clickhouse"
        if args.path == "bars":
            paths = [str(DEMO)]
        else:
            print(f"writing synthetic.generate({TICKS:,}, seed={SEED}) to Parquet", file=sys.stderr)
            synthetic.write(synthetic.generate(TICKS, seed=SEED), f"{d}/ticks")
            paths = [f"{d}/ticks"]

        def replay(run_id: str) -> None:
            frames = read_paths(paths, venue=config.replay.venue, symbol=config.replay.symbol)
            plan = ReplayPlan.build(frames, config.replay.chunk_rows)
            flow = build_flow(plan, config, run_id, dsn=dsn, sink=DropSink() if args.null else None)
            run_main(flow, epoch_interval=timedelta(seconds=10))

        try:
            replay("profile-warmup")
            if not args.null:
                Store.connect(dsn).optimize()
            t0 = time.perf_counter()
            replay("profile-unprofiled")
            wall = time.perf_counter() - t0
            if not args.null:
                Store.connect(dsn).optimize()
            prof = cProfile.Profile()
            prof.enable()
            replay("profile")
            prof.disable()
        finally:
            if not args.null:
                Store.connect(dsn).close()
    stats = pstats.Stats(prof)
    total = stats.total_tt  # type: ignore[attr-defined]
    print(f"# {args.path}, {'dropping' if args.null else 'ClickHouse'} sink: {wall:.3f} s unprofiled, "
          f"{total:.3f} s profiled")
    stages = stage_times(stats)
    for stage, s in stages.items():
        print(f"{stage:45s} {s:7.3f} s  {100 * s / total:5.1f} %")
    rest = max(0.0, total - sum(stages.values()))
    print(f"{'Bytewax and the rest':45s} {rest:7.3f} s  {100 * rest / total:5.1f} %")
    print()
    stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
