"""What the online models cost: feature, prediction and learning rates, and the replay with and without ML.

Two parts (see benchmarks/README.md for every printed line):

- **the cores**, in this process: the demo bars (``data/demo/bittrex``, 10 instruments, 57,546 real 5-minute
  bars) through ``MlFeatures`` with the default feature settings of the config (``ml.feature_horizons``,
  the halflives, ``ml.min_vol_bars``), one instance per instrument: bars advanced per second
  (``MlFeatures.advance``) and vectors built per second (``MlFeatures.vector``; the time of ``advance`` +
  ``vector`` less that of ``advance`` alone). Then, for each model of the default ``[[ml.models]]``, a
  ``DelayedLabelModel`` of its kind over the valid vectors, in time order, keyed by instrument: learns per
  second (``observe(..., predict=False)`` with horizon 1, so every bar learns the label of the one before;
  each call also predicts on the vector it keeps, as a learning bar does) and then, on the model so trained,
  predictions per second (``predict(key, x)``, River's ``predict_one`` / ``predict_proba_one`` through the
  scaler pipeline). Medians of ``--repeat`` timed runs after an untimed warm-up.
- **the replay**: ``headrace replay --data data/demo/bittrex --json`` in a fresh process per run, each with its
  own temp ``storage.state_dir`` (embedded chDB), with the default config (ML on: one pooled model in shadow,
  one blended), with ``--set ml.enabled=false`` and with ``--set ml.store_features_every=1`` (ML on, every feature
  vector stored); the cases alternate (repeat r of each before repeat r + 1 of any) after one untimed
  warm-up run. Bars/s = bars / ``wall_s`` of the command's JSON summary (reading, plan, chDB open, the flow;
  not the interpreter start). The ML overhead is ``1 - on / off`` in %. ``--hourly`` adds the same three
  cases for the 82-asset hourly universe (316,682 bars, huobi, USDT, daily rebalances), skipped with a
  message when ``../shared/data`` is missing.

Aim (the issue): ML costs at most 20 % of the replay's throughput.

stdout carries only ``name: value`` lines (``--json``: one JSON object of the same names instead); progress,
the raw figures of every repeat and the load average go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
from _report import emit, log

from headrace.config import Config, load_config
from headrace.events import Bar
from operators.features.ml_features import MlFeatures
from operators.ml.online import DelayedLabelModel

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "data" / "demo" / "bittrex"
DEMO_BARS = 57_546
HOURLY = ROOT.parent / "shared" / "data" / "universe" / "huobi-pob" / "cryptos_2017to2021_hourly.parquet"
HOURLY_ARGS = ["--venue", "huobi", "--quote", "USDT", "--set", "strategy.rebalance_bars=24"]
HEADRACE = ROOT / ".venv" / "bin" / "headrace"
CASES = {  # replay case -> extra --set overrides
    "ml_on": [],
    "ml_off": ["ml.enabled=false"],
    "ml_on_every_vector_stored": ["ml.store_features_every=1"],
}

Row = tuple[str, int, dict[str, float], float]  # instrument, ts_event, feature vector, close


# ---------------------------------------------------------------------------------------------------
# the cores


def demo_bars() -> dict[str, list[Bar]]:
    """The demo's bars per instrument (``bittrex:ETH/BTC``), in time order."""
    out: dict[str, list[Bar]] = {}
    for path in sorted(DEMO.glob("*.feather")):
        base, quote = path.name.split("-")[0].split("_")
        frame = pl.read_ipc(path)
        ts = frame["date"].dt.epoch("ns").to_list()
        step = ts[1] - ts[0]
        instrument = f"bittrex:{base}/{quote}"
        out[instrument] = [
            Bar(instrument=instrument, ts_open=t - step, ts_event=t, open=o, high=h, low=lo, close=c, volume=v,
                trades=-1)
            for t, o, h, lo, c, v in zip(ts, frame["open"], frame["high"], frame["low"], frame["close"],
                                         frame["volume"], strict=True)]
    return out


def features_of(config: Config) -> Callable[[], MlFeatures]:
    ml = config.ml
    return lambda: MlFeatures(horizons=ml.feature_horizons, vol_halflife=ml.vol_halflife_bars,
                              z_halflife=ml.zscore_halflife_bars, volume_halflife=ml.volume_halflife_bars,
                              min_vol_bars=ml.min_vol_bars)


def timed(body: Callable[[], Any], repeats: int) -> list[float]:
    body()  # untimed warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        body()
        times.append(time.perf_counter() - t0)
    return times


def bench_cores(config: Config, repeats: int, out: dict[str, float | int]) -> None:
    bars = demo_bars()
    n = sum(len(b) for b in bars.values())
    if n != DEMO_BARS:
        raise SystemExit(f"bench_ml: the demo data holds {n} bars, expected {DEMO_BARS}")
    new = features_of(config)
    log(f"cores: {n:,} demo bars, {len(bars)} instruments; features horizons {config.ml.feature_horizons}, "
        f"halflife {config.ml.vol_halflife_bars}, min_vol_bars {config.ml.min_vol_bars}")

    def advance() -> None:
        for series in bars.values():
            f = new()
            for bar in series:
                f.advance(bar)

    def update() -> None:
        for series in bars.values():
            f = new()
            for bar in series:
                f.advance(bar)
                f.vector()

    t_adv = timed(advance, repeats)
    t_both = timed(update, repeats)
    log("  advance: " + ", ".join(f"{t:.3f}" for t in t_adv) + " s; advance + vector: "
        + ", ".join(f"{t:.3f}" for t in t_both) + " s")
    adv_s, both_s = statistics.median(t_adv), statistics.median(t_both)
    out["ml_features_advance_per_s"] = n / adv_s
    out["ml_features_vector_per_s"] = n / max(both_s - adv_s, 1e-9)
    out["ml_features_update_per_s"] = n / both_s

    rows: list[Row] = []
    for instrument, series in bars.items():
        f = new()
        for bar in series:
            v = f.update(bar)
            if v.valid:
                rows.append((instrument, bar.ts_event, v.as_dict(), bar.close))
    rows.sort(key=lambda r: (r[1], r[0]))
    out["ml_valid_vectors"] = len(rows)
    log(f"  {len(rows):,} valid vectors of {n:,} ({len(rows[0][2])} features each)")

    for m in config.ml.models:
        if m.algorithm != "linear" or not m.pooled:
            log(f"  model {m.name}: {m.algorithm}, pooled={m.pooled}: not the default kind, measured as it is")
        trained: list[DelayedLabelModel] = []

        def learn(m: Any = m, trained: list[DelayedLabelModel] = trained) -> None:
            model = DelayedLabelModel(m.name, m.kind, horizon=1, pooled=m.pooled, forest=m.algorithm == "forest",
                                      seed=config.ml.seed)
            for key, ts, x, close in rows:
                model.observe(key, ts, x, close, predict=False)
            trained[:] = [model]

        t_learn = timed(learn, repeats)
        model = trained[0]
        learns = model.updates() if m.pooled else sum(model.updates(k) for k in bars)

        def predict(model: DelayedLabelModel = model) -> None:
            for key, _, x, _ in rows:
                model.predict(key, x)

        t_pred = timed(predict, repeats)
        log(f"  model {m.name} ({m.kind}, {m.algorithm}, {'pooled' if m.pooled else 'per instrument'}): "
            f"learn {', '.join(f'{t:.3f}' for t in t_learn)} s for {learns:,} labels; predict "
            f"{', '.join(f'{t:.3f}' for t in t_pred)} s for {len(rows):,} vectors")
        out[f"ml_{m.name}_learns_per_s"] = learns / statistics.median(t_learn)
        out[f"ml_{m.name}_predictions_per_s"] = len(rows) / statistics.median(t_pred)


# ---------------------------------------------------------------------------------------------------
# the replay


def replay(tmp: Path, label: str, data: Path, extra: list[str]) -> dict[str, Any]:
    state = tmp / label
    cmd = [str(HEADRACE), "replay", "--data", str(data), "--run-id", label.replace("_", "-"), "--quiet", "--json",
           "--set", f"storage.state_dir={json.dumps(str(state))}", *extra]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench_ml: {' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}")
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def bench_replay(name: str, data: Path, common: list[str], repeats: int, out: dict[str, float | int]) -> None:
    log(f"replay {name}: {data}, cases {', '.join(CASES)}, {repeats} repeats alternating after a warm-up")
    rates: dict[str, list[float]] = {c: [] for c in CASES}
    bars: set[int] = set()
    with tempfile.TemporaryDirectory(prefix="headrace-bench-ml-") as d:
        replay(Path(d), "warmup", data, common)
        for r in range(repeats):
            for case, sets in CASES.items():
                s = replay(Path(d), f"{case}_{r}", data, [*common, *(a for k in sets for a in ("--set", k))])
                bars.add(int(s["bars"]))
                rates[case].append(s["bars"] / s["wall_s"])
                log(f"  {case} repeat {r + 1}: {rates[case][-1]:,.0f} bars/s ({s['bars']:,} bars, "
                    f"{s['wall_s']:.2f} s, {s['orders']:,} orders)")
    if len(bars) != 1:
        raise SystemExit(f"bench_ml: the cases of {name} replayed different bar counts: {sorted(bars)}")
    log(f"  (load average {os.getloadavg()[0]:.2f})")
    med = {c: statistics.median(v) for c, v in rates.items()}
    out[f"ml_replay_{name}_bars"] = bars.pop()
    for case, v in med.items():
        out[f"ml_replay_{name}_{case}_bars_per_s"] = v
    out[f"ml_replay_{name}_overhead_pct"] = 100 * (1 - med["ml_on"] / med["ml_off"])
    out[f"ml_replay_{name}_every_vector_stored_overhead_pct"] = 100 * (1 - med["ml_on_every_vector_stored"]
                                                                          / med["ml_off"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per figure (median)")
    ap.add_argument("--hourly", action="store_true", help="also the 82-asset hourly universe (../shared/data)")
    ap.add_argument("--no-replay", action="store_true", help="the cores only")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout instead of name: value lines")
    args = ap.parse_args()
    config = load_config()  # the defaults, as `make demo`
    log(f"bench_ml: {args.repeat} repeats, median; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    out: dict[str, float | int] = {}
    bench_cores(config, args.repeat, out)
    if not args.no_replay:
        bench_replay("demo", DEMO, [], args.repeat, out)
        if args.hourly:
            if HOURLY.exists():
                bench_replay("hourly", HOURLY, HOURLY_ARGS, args.repeat, out)
            else:
                log(f"bench_ml: --hourly skipped: {HOURLY} is missing")
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            emit(k, v)


if __name__ == "__main__":
    main()
