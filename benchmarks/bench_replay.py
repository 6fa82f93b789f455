"""Replay throughput of the trading flow on one Bytewax worker, all figures from one run.

What runs (see benchmarks/README.md for every printed line):

- the demo bars, ``data/demo/bittrex`` (10 instruments, 57,546 real 5-minute bars), through the whole
  flow with the default config (as ``make demo``) and the real ClickHouse sink writing to an embedded
  chDB in a temp dir: flow only (plan built before the timer), end to end (file reading and plan
  building included), and with the sink replaced by one that drops; then ``headrace replay`` itself,
  as ``make demo`` runs it, in a fresh process per run (its own reported throughput and the wall time);
- a synthetic tick set, ``sources.synthetic.generate(2_000_000, seed=7)`` (10 instruments, two venues,
  trades and quotes), written to Parquet in the temp dir before any timer, then replayed the same three
  ways (end to end = ``read_paths`` of those files + ``ReplayPlan.build`` + the flow);
- the bare Bytewax pass-through of the same number of items (2,000,000 ints in batches of
  ``replay.chunk_rows``, source -> dropping sink) and our ``ReplaySource`` over the synthetic plan ->
  ``key_on`` -> dropping sink, so the ratios show what the engine and our operators cost.

Each figure is the median of 3 timed repeats (``time.perf_counter()``) after an untimed warm-up (the
tick paths warm up on a 200,000-event set). The repeats of one data set's cases are interleaved, so a
machine that slows down for a while (the chDB inserts are sensitive to it) slows every case alike.
Flows run through ``flows.runner.run`` with one worker and 10 s epochs, like ``headrace replay``
without a recovery dir. All repeats share one temp chDB directory, each with its own run id (chDB
serves one path per process); after every run that wrote to it, ``Store.optimize()`` runs untimed, as
the CLI does after its flow, so one repeat's background merges do not land in the next one's timer.
Rows written are checked after the timers. Nothing is written outside temp dirs.

Targets (the issue): >= 500,000 tick events/s for the tick set and >= 20,000 bars/s for bar input, on
one worker. For reference only, not measured here: NautilusTrader 1.231 replays about 66-69 k quote
ticks/s on this machine (ARCHITECTURE.md, "Performance budget"), backtrader 5-11 k bars/s.

stdout carries only ``name: value`` lines; progress and diagnostics go to stderr.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _report import emit, log
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from flows.runner import run
from flows.trading import build_flow
from headrace.config import Config, load_config
from sinks.clickhouse import Store
from sources import synthetic
from sources.formats import read_paths
from sources.replay import ReplaySource
from sources.replay_plan import ReplayPlan

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "data" / "demo" / "bittrex"
DEMO_BARS = 57_546
TICKS = 2_000_000
WARMUP_TICKS = 200_000
SEED = 7
REPEATS = 3
EPOCH_S = 10.0  # what `headrace replay` uses without a recovery dir: epochs only pace sink flushes


# ---------------------------------------------------------------------------------------------------
# a dropping sink and a source of pre-built int batches (the bare engine)


class _DropPartition(StatelessSinkPartition[Any]):
    def write_batch(self, items: list[Any]) -> None:
        pass


class DropSink(DynamicSink[Any]):
    """Accept every item and keep nothing."""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DropPartition:
        return _DropPartition()


class _BatchPartition(StatefulSourcePartition[int, int]):
    def __init__(self, batches: list[list[int]], start: int) -> None:
        self.batches = batches
        self.next = start

    def next_batch(self) -> list[int]:
        if self.next >= len(self.batches):
            raise StopIteration
        self.next += 1
        return self.batches[self.next - 1]

    def snapshot(self) -> int:
        return self.next


class BatchSource(FixedPartitionedSource[int, int]):
    """Emit pre-built batches from one partition (nothing computed per item)."""

    def __init__(self, batches: list[list[int]]) -> None:
        self.batches = batches

    def list_parts(self) -> list[str]:
        return ["ints"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _BatchPartition:
        return _BatchPartition(self.batches, resume_state or 0)


def passthrough_flow(batches: list[list[int]]) -> Dataflow:
    flow = Dataflow("bench_passthrough")
    op.output("out", op.input("in", flow, BatchSource(batches)), DropSink())
    return flow


def replay_source_flow(plan: ReplayPlan) -> Dataflow:
    # the flow's first two steps as in flows.trading.build_flow, then straight out
    flow = Dataflow("bench_replay_source")
    market = op.input("market", flow, ReplaySource(plan))
    op.output("out", op.key_on("key_instrument", market, lambda s: s.instrument), DropSink())
    return flow


# ---------------------------------------------------------------------------------------------------
# timing


Case = tuple[Callable[[int], None], Callable[[], None] | None]  # timed body(repeat), untimed after()


def median_s(cases: dict[str, Case]) -> dict[str, float]:
    """Time every case REPEATS times, interleaved (repeat r of every case before repeat r + 1 of any), so
    drifting machine conditions hit all cases alike; return each case's median wall time in seconds."""
    times: dict[str, list[float]] = {label: [] for label in cases}
    for r in range(REPEATS):
        for label, (body, after) in cases.items():
            t0 = time.perf_counter()
            body(r)
            times[label].append(time.perf_counter() - t0)
            if after is not None:
                after()
    for label, ts in times.items():
        log(f"  {label}: " + ", ".join(f"{t:.3f}" for t in ts) + " s")
    log(f"  (load average {os.getloadavg()[0]:.2f})")
    return {label: statistics.median(ts) for label, ts in times.items()}


def run_flow(flow: Dataflow) -> None:
    run(flow, workers=1, epoch_s=EPOCH_S)


def settle(dsn: str) -> Callable[[], None]:
    """What `headrace replay` does after its flow (untimed here): merge the tables, so background merges of one
    repeat's parts do not run during the next repeat's timer."""
    return lambda: Store.connect(dsn).optimize()


def read_and_plan(paths: list[str], config: Config, stages: dict[str, list[float]] | None = None) -> ReplayPlan:
    t0 = time.perf_counter()
    frames = read_paths(paths, venue=config.replay.venue, symbol=config.replay.symbol)
    t1 = time.perf_counter()
    plan = ReplayPlan.build(frames, config.replay.chunk_rows)
    t2 = time.perf_counter()
    if stages is not None:
        stages["read"].append(t1 - t0)
        stages["plan"].append(t2 - t1)
    return plan


def counts(store: Store, table: str, prefix: str) -> dict[str, int]:
    rows = store.query(f"SELECT run_id, count() AS n FROM {table} WHERE startsWith(run_id, {{p:String}}) "
                       "GROUP BY run_id", {"p": prefix})
    return {r["run_id"]: int(r["n"]) for r in rows}


def check_written(store: Store, prefix: str, runs: int, table: str, expected: int | None = None) -> int:
    """Return the rows `table` got per run under `prefix`; fail unless every run wrote the same (and `expected`)."""
    got = counts(store, table, prefix)
    values = set(got.values())
    if len(got) != runs or len(values) != 1 or (expected is not None and values != {expected}):
        raise SystemExit(f"bench_replay: {table} rows per run under {prefix!r} are {got!r}, "
                         f"expected {runs} runs" + (f" of {expected}" if expected is not None else ""))
    return values.pop()


# ---------------------------------------------------------------------------------------------------
# the benchmarks


def bench_demo(config: Config, dsn: str) -> None:
    paths = [str(DEMO)]
    log(f"demo bars: {DEMO}")
    plan = read_and_plan(paths, config)  # untimed; also imports ccxt (venue names) once
    if plan.total_rows != DEMO_BARS:
        raise SystemExit(f"bench_replay: the demo data holds {plan.total_rows} rows, expected {DEMO_BARS}")
    log("  warm-up (untimed)")
    run_flow(build_flow(read_and_plan(paths, config), config, "bench-warmup-demo", dsn=dsn))
    settle(dsn)()

    stages: dict[str, list[float]] = {"read": [], "plan": []}
    t = median_s({
        "flow, ClickHouse sink": (
            lambda r: run_flow(build_flow(plan, config, f"bench-demo-flow-{r}", dsn=dsn)), settle(dsn)),
        "end to end, ClickHouse sink": (
            lambda r: run_flow(build_flow(read_and_plan(paths, config, stages), config, f"bench-demo-e2e-{r}",
                                          dsn=dsn)), settle(dsn)),
        "flow, dropping sink": (
            lambda r: run_flow(build_flow(plan, config, f"bench-demo-null-{r}", sink=DropSink())), None),
    })
    flow_s, e2e_s, null_s = t["flow, ClickHouse sink"], t["end to end, ClickHouse sink"], t["flow, dropping sink"]

    store = Store.connect(dsn)
    for prefix in ("bench-demo-flow-", "bench-demo-e2e-"):
        check_written(store, prefix, REPEATS, "bars", DEMO_BARS)
        check_written(store, prefix, REPEATS, "features", DEMO_BARS)
    n = DEMO_BARS
    emit(f"replay_demo_bars_{n}_bars_per_s", n / flow_s)
    emit(f"replay_demo_bars_{n}_end_to_end_bars_per_s", n / e2e_s)
    emit(f"replay_demo_bars_{n}_null_sink_bars_per_s", n / null_s)
    emit(f"replay_demo_bars_{n}_read_files_ms", 1e3 * statistics.median(stages["read"]))
    emit(f"replay_demo_bars_{n}_plan_build_ms", 1e3 * statistics.median(stages["plan"]))
    emit(f"replay_demo_bars_{n}_bars_written", check_written(store, "bench-demo-flow-", REPEATS, "bars"))
    emit(f"replay_demo_bars_{n}_orders", check_written(store, "bench-demo-flow-", REPEATS, "orders"))
    emit(f"replay_demo_bars_{n}_fills", check_written(store, "bench-demo-flow-", REPEATS, "fills"))


def bench_cli(tmp: Path) -> None:
    """`headrace replay` of the demo as `make demo` runs it (a fresh process each time, its own temp chDB),
    reporting the CLI's own throughput (events over its wall time: reading, plan, chDB open, flow and the
    OPTIMIZE after it; not the interpreter start) and the process's wall time."""
    log("headrace replay (the CLI, one process per run, fresh temp chDB each)")
    cmd = [sys.executable, "-c", "import sys; from headrace.cli import app; sys.argv[0] = 'headrace'; app()",
           "replay", "--data", str(DEMO), "--run-id", "demo", "--quiet", "--json"]
    rates: list[float] = []
    walls: list[float] = []
    for r in range(REPEATS + 1):  # the first is the untimed warm-up
        work = tmp / f"cli_{r}"
        work.mkdir()
        t0 = time.perf_counter()
        done = subprocess.run([*cmd, "--db", f"chdb://{work}/clickhouse"], cwd=work, capture_output=True,
                              text=True, check=False)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"bench_replay: headrace replay failed ({done.returncode}): {done.stderr[-2000:]}")
        summary = json.loads(done.stdout)
        if summary["bars"] != DEMO_BARS:
            raise SystemExit(f"bench_replay: headrace replay wrote {summary['bars']} bars, expected {DEMO_BARS}")
        if r:
            rates.append(float(summary["events_per_s"]))
            walls.append(wall)
    log("  CLI events/s: " + ", ".join(f"{x:.0f}" for x in rates) + "; process wall: "
        + ", ".join(f"{x:.2f}" for x in walls) + " s")
    emit(f"replay_demo_bars_{DEMO_BARS}_cli_reported_bars_per_s", statistics.median(rates))
    emit(f"replay_demo_bars_{DEMO_BARS}_cli_process_wall_s", statistics.median(walls))


def bench_ticks(config: Config, dsn: str, tmp: Path) -> None:
    n = TICKS
    log(f"synthetic ticks: generate({n:,}, seed={SEED}) and a {WARMUP_TICKS:,}-event warm-up set, to Parquet")
    big_dir, small_dir = tmp / f"ticks_{n}", tmp / f"ticks_{WARMUP_TICKS}"
    synthetic.write(synthetic.generate(n, seed=SEED), str(big_dir))
    synthetic.write(synthetic.generate(WARMUP_TICKS, seed=SEED), str(small_dir))

    log("  warm-up (untimed, small set)")
    small = read_and_plan([str(small_dir)], config)
    run_flow(build_flow(small, config, "bench-warmup-ticks", dsn=dsn))
    settle(dsn)()
    run_flow(build_flow(small, config, "bench-warmup-ticks-null", sink=DropSink()))
    run_flow(replay_source_flow(small))
    run_flow(passthrough_flow([list(range(i, min(i + config.replay.chunk_rows, WARMUP_TICKS)))
                               for i in range(0, WARMUP_TICKS, config.replay.chunk_rows)]))

    plan = read_and_plan([str(big_dir)], config)  # untimed: the flow-only figures replay this plan
    if plan.total_rows != n:
        raise SystemExit(f"bench_replay: the synthetic set holds {plan.total_rows} rows, expected {n}")
    log(f"  plan: {plan.total_rows:,} rows, {plan.n_slices} slices of <= {config.replay.chunk_rows:,} rows, "
        f"{len(plan.universe)} instruments")

    chunk = config.replay.chunk_rows
    batches = [list(range(i, min(i + chunk, n))) for i in range(0, n, chunk)]
    stages: dict[str, list[float]] = {"read": [], "plan": []}
    bare = f"bare Bytewax, {len(batches)} batches of ints -> dropping sink"
    t = median_s({
        "flow, ClickHouse sink": (
            lambda r: run_flow(build_flow(plan, config, f"bench-ticks-flow-{r}", dsn=dsn)), settle(dsn)),
        "end to end, ClickHouse sink": (
            lambda r: run_flow(build_flow(read_and_plan([str(big_dir)], config, stages), config,
                                          f"bench-ticks-e2e-{r}", dsn=dsn)), settle(dsn)),
        "flow, dropping sink": (
            lambda r: run_flow(build_flow(plan, config, f"bench-ticks-null-{r}", sink=DropSink())), None),
        "ReplaySource -> key_on -> dropping sink": (lambda r: run_flow(replay_source_flow(plan)), None),
        bare: (lambda r: run_flow(passthrough_flow(batches)), None),
    })
    flow_s, e2e_s, null_s = t["flow, ClickHouse sink"], t["end to end, ClickHouse sink"], t["flow, dropping sink"]
    source_s, bare_s = t["ReplaySource -> key_on -> dropping sink"], t[bare]

    store = Store.connect(dsn)
    bars = check_written(store, "bench-ticks-flow-", REPEATS, "bars")
    check_written(store, "bench-ticks-e2e-", REPEATS, "bars", bars)
    emit(f"replay_synthetic_{n}_ticks_per_s", n / flow_s)
    emit(f"replay_synthetic_{n}_end_to_end_ticks_per_s", n / e2e_s)
    emit(f"replay_synthetic_{n}_null_sink_ticks_per_s", n / null_s)
    emit(f"replay_synthetic_{n}_read_files_ms", 1e3 * statistics.median(stages["read"]))
    emit(f"replay_synthetic_{n}_plan_build_ms", 1e3 * statistics.median(stages["plan"]))
    emit(f"replay_synthetic_{n}_bars_written", bars)
    emit(f"replay_source_keyed_{n}_ticks_per_s", n / source_s)
    emit(f"bytewax_passthrough_{n}_items_per_s", n / bare_s)
    emit("ratio_tick_flow_to_passthrough", bare_s / flow_s)
    emit("ratio_tick_flow_to_replay_source", source_s / flow_s)


def main() -> None:
    config = load_config()  # the defaults, as `make demo`
    log(f"bench_replay: 1 worker, {REPEATS} repeats, median; {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="headrace-bench-") as d:
        dsn = f"chdb://{d}/clickhouse"
        try:
            bench_demo(config, dsn)
            bench_cli(Path(d))
            bench_ticks(config, dsn, Path(d))
        finally:
            Store.connect(dsn).close()  # chDB holds its directory until closed


if __name__ == "__main__":
    main()
