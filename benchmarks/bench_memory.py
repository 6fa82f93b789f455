"""Peak memory and throughput of a replay as the input grows: 2 M, 8 M and 32 M synthetic tick events.

What runs (see benchmarks/README.md for every printed line): for each size N,
``sources.synthetic.generate(N, seed=7)`` (10 instruments on two venues, trades and quotes) is written to
Parquet in a temp dir, one frame at a time (``synthetic.iter_frames``), by a process of its own, so the
generator never holds the whole set. Then each case replays those files end to end in a fresh Python
process: the plan (file reading included) and the whole trading flow of ``flows.trading.build_flow``
with the default config, one Bytewax worker, 10 s epochs (as ``headrace replay`` without a recovery
dir), and either the real ClickHouse sink writing to a fresh embedded chDB in the temp dir or a sink that
drops every row. At the end the process reads its peak resident set size (``VmHWM`` in
``/proc/self/status``: everything it ever held at once, the interpreter, polars, Bytewax and the
embedded chDB included) and reports it with its events/s (N over the wall time of plan + flow).

Cases: ``lazy`` is the replay as ``headrace replay`` runs it (``ReplayPlan.open``: files read in
batches while the flow runs); ``eager`` is the replay before it (``read_paths`` of every file whole, then
``ReplayPlan.build``), measured at 2 M and 8 M for comparison (at 32 M it would need several GB; pass
``--eager-all`` to run it anyway). One run per case (they are slow; see docs/performance.md for the
spread of the chDB figures). ``--sizes 2000000,8000000`` picks other sizes.

stdout carries only ``name: value`` lines; progress and diagnostics go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _report import emit, log

ROOT = Path(__file__).resolve().parent.parent
SEED = 7
SIZES = (2_000_000, 8_000_000, 32_000_000)
EAGER_UP_TO = 8_000_000
EPOCH_S = 10.0


def status_mb(field: str) -> float:
    """A field of /proc/self/status (VmRSS, VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"bench_memory: /proc/self/status has no {field}")


# ---------------------------------------------------------------------------------------------------
# the child processes


def generate(n: int, out_dir: str) -> None:
    from sources import synthetic

    synthetic.write(synthetic.iter_frames(n, seed=SEED), out_dir)
    print(json.dumps({"peak_rss_mb": status_mb("VmHWM")}))


def replay(data_dir: str, n: int, mode: str, sink_kind: str, work: str) -> None:
    from bytewax.outputs import DynamicSink, StatelessSinkPartition

    from flows.runner import run
    from flows.trading import build_flow
    from headrace.config import load_config
    from sources.formats import ReadOptions, read_paths
    from sources.replay_plan import ReplayPlan

    class _Drop(StatelessSinkPartition[Any]):
        def write_batch(self, items: list[Any]) -> None:
            pass

    class DropSink(DynamicSink[Any]):
        def build(self, step_id: str, worker_index: int, worker_count: int) -> _Drop:
            return _Drop()

    config = load_config()  # the defaults, as `headrace replay`
    options = ReadOptions.from_config(config)
    dsn = f"chdb://{work}/clickhouse"
    if sink_kind == "clickhouse":  # open the store (DDL) before the timer and the baseline, as the CLI does
        from sinks.clickhouse import Store

        Store.connect(dsn)
    baseline = status_mb("VmRSS")
    events = 0

    def progress(k: int) -> None:
        nonlocal events
        events += k

    t0 = time.perf_counter()
    if mode == "lazy":
        plan: ReplayPlan = ReplayPlan.open([data_dir], config.replay.chunk_rows, options=options)
    else:
        plan = ReplayPlan.build(read_paths([data_dir], options=options), config.replay.chunk_rows)
    flow = build_flow(plan, config, f"bench-memory-{mode}", dsn=dsn, progress=progress,
                      sink=DropSink() if sink_kind == "null" else None)
    run(flow, workers=1, epoch_s=EPOCH_S)
    wall = time.perf_counter() - t0
    if events != n or plan.total_rows != n:
        raise SystemExit(f"bench_memory: replayed {events} events (plan: {plan.total_rows}), expected {n}")
    print(json.dumps({"peak_rss_mb": status_mb("VmHWM"), "baseline_rss_mb": baseline, "wall_s": wall,
                      "events_per_s": n / wall}))


def child(*args: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, *args]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench_memory: {' '.join(args)} failed ({done.returncode}): {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# ---------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="event counts, comma separated")
    parser.add_argument("--eager-all", action="store_true", help="also replay eagerly above 8 M events")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        what, *rest = args.child
        if what == "generate":
            generate(int(rest[0]), rest[1])
        else:
            replay(rest[0], int(rest[1]), rest[2], rest[3], rest[4])
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    log(f"bench_memory: sizes {sizes}, 1 worker, one run per case; {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="headrace-bench-memory-") as d:
        for n in sizes:
            data = Path(d) / f"ticks_{n}"
            t0 = time.perf_counter()
            gen = child("--child", "generate", str(n), str(data))
            size_mb = sum(p.stat().st_size for p in data.rglob("*.parquet")) / 2**20
            log(f"generated {n:,} events: {size_mb:.0f} MB of Parquet in {time.perf_counter() - t0:.1f} s "
                f"(generator peak RSS {gen['peak_rss_mb']:.0f} MB)")
            emit(f"memory_synthetic_{n}_generator_peak_rss_mb", gen["peak_rss_mb"])
            cases = [("lazy", "clickhouse"), ("lazy", "null")]
            if n <= EAGER_UP_TO or args.eager_all:
                cases += [("eager", "clickhouse"), ("eager", "null")]
            for mode, sink in cases:
                work = Path(d) / f"work_{n}_{mode}_{sink}"
                work.mkdir()
                got = child("--child", "replay", str(data), str(n), mode, sink, str(work))
                log(f"  {mode:5} {sink:10}: peak RSS {got['peak_rss_mb']:.0f} MB (after imports "
                    f"{got['baseline_rss_mb']:.0f} MB), {got['wall_s']:.1f} s, {got['events_per_s']:,.0f} events/s "
                    f"(load {os.getloadavg()[0]:.2f})")
                name = f"memory_synthetic_{n}_{mode}_{'clickhouse' if sink == 'clickhouse' else 'null_sink'}"
                emit(f"{name}_peak_rss_mb", got["peak_rss_mb"])
                emit(f"{name}_events_per_s", got["events_per_s"])
                if mode == "lazy" and sink == "clickhouse":
                    emit(f"memory_synthetic_{n}_rss_after_imports_mb", got["baseline_rss_mb"])
                shutil.rmtree(work)
            shutil.rmtree(data)


if __name__ == "__main__":
    main()
