"""What each ``[risk]`` setting does: one replay per setting over the May 2021 sell-off, one table of the results.

The data is the 82-asset hourly universe (``../shared/data/universe/huobi-pob/cryptos_2017to2021_hourly.parquet``,
huobi, USDT) replayed by ``headrace replay`` with daily rebalances and ML off (``--set strategy.rebalance_bars=24
--set ml.enabled=false``) over ``RANGE`` (``--quick``: ``QUICK_RANGE``), both containing the sell-off of
19 May 2021. Every setting is the default config with one ``[risk]`` key changed (``SETTINGS``), plus the default
itself and the risk engine off. The replays run one after another (the machine is shared), each a fresh
``headrace replay --json`` process writing to one embedded chDB in a temp dir under its own run id; after the last
one, this process opens that chDB and reads, per run, the risk tables: ``risk_reports`` (the per-bar ES),
``risk_scalings`` (count and lowest scale), ``risk_denials`` (count and codes) and ``trading_states``.

Columns of the table (Markdown, on stdout; progress on stderr):

- total return, max drawdown, Sharpe (annualised, hourly returns) and fills: from the replay's JSON summary;
- ES scalings: rebalances whose targets the ES limit scaled down, and the lowest factor put on them;
- denials: orders the pre-trade checks stopped or cut (``risk_denials`` rows; the codes are listed below the table);
- state changes: trading-state transitions (``trading_states`` rows);
- ES mean / max: the one-bar historical ES at 97.5 % of the positions held, every bar once ``min_bars`` returns
  are in (``risk_reports.es_historical``), as a fraction of equity.

Usage: ``.venv/bin/python benchmarks/calibrate_risk.py [--quick] [--only NAME ...]`` (about 6 minutes in full,
about 25 s per setting on 2 cores). Results and what they mean: docs/risk-calibration.md.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _report import log

from sinks.clickhouse import Store

ROOT = Path(__file__).resolve().parent.parent
HOURLY = ROOT.parent / "shared" / "data" / "universe" / "huobi-pob" / "cryptos_2017to2021_hourly.parquet"
HEADRACE = ROOT / ".venv" / "bin" / "headrace"
RANGE = "2021-03-01:2021-07-01"
QUICK_RANGE = "2021-04-20:2021-06-10"
COMMON = ["--venue", "huobi", "--quote", "USDT", "--set", "strategy.rebalance_bars=24", "--set", "ml.enabled=false"]
SETTINGS: dict[str, list[str]] = {  # name -> the [risk] overrides of that replay
    "risk_off": ["risk.enabled=false"],
    "default": [],
    "es_limit_0.05": ["risk.es_limit=0.05"],
    "es_limit_0.12": ["risk.es_limit=0.12"],
    "es_limit_0_off": ["risk.es_limit=0.0"],
    "es_measure_historical": ['risk.es_measure="historical"'],
    "es_measure_cornish_fisher": ['risk.es_measure="cornish_fisher"'],
    "es_action_reduce": ['risk.es_action="reduce"', "risk.es_resume=0.8"],
    "window_bars_250": ["risk.window_bars=250"],
    "window_bars_1000": ["risk.window_bars=1000"],
    "stress_reduce_0.5": ['risk.stress_action="reduce"', "risk.stress_limit=0.5"],
    "max_gross_1": ["risk.max_gross=1.0"],
    "max_position_fraction_0.05": ["risk.max_position_fraction=0.05"],
    "max_position_fraction_0.03": ["risk.max_position_fraction=0.03"],
    "price_band_bps_1": ["risk.price_band_bps=1.0"],
    "max_orders_20_per_1m": ["risk.max_orders=20", 'risk.rate_window="1m"'],
}


def replay(state: Path, run_id: str, timerange: str, sets: list[str]) -> dict[str, Any]:
    """One `headrace replay` of the universe with `sets` on top of the common overrides; its JSON summary."""
    cmd = [str(HEADRACE), "replay", "--data", str(HOURLY), *COMMON, "--timerange", timerange, "--run-id", run_id,
           "--quiet", "--json", "--set", f"storage.state_dir={json.dumps(str(state))}",
           *(a for s in sets for a in ("--set", s))]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"calibrate_risk: {' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}")
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def risk_rows(store: Store, run_id: str) -> dict[str, Any]:
    """What the risk tables hold for one run."""
    p = {"r": run_id}
    es = store.query("SELECT countIf(NOT isNaN(es_historical)) AS n, "
                     "avgIf(es_historical, NOT isNaN(es_historical)) AS mean, "
                     "maxIf(es_historical, NOT isNaN(es_historical)) AS max, "
                     "avgIf(es_cornish_fisher, NOT isNaN(es_cornish_fisher)) AS cf_mean, "
                     "maxIf(es_cornish_fisher, NOT isNaN(es_cornish_fisher)) AS cf_max "
                     "FROM risk_reports WHERE run_id = {r:String}", p)[0]
    sc = store.query("SELECT count() AS n, min(scale) AS lo FROM risk_scalings WHERE run_id = {r:String}", p)[0]
    den = store.query("SELECT arrayJoin(codes) AS code, count() AS n FROM risk_denials WHERE run_id = {r:String} "
                      "GROUP BY code ORDER BY code", p)
    nden = store.query("SELECT count() AS n, countIf(action = 'denied') AS denied FROM risk_denials "
                       "WHERE run_id = {r:String}", p)[0]
    states = store.query("SELECT ts_event, previous, state, source FROM trading_states WHERE run_id = {r:String} "
                         "ORDER BY ts_event", p)
    return {"es": es, "scalings": sc, "denial_codes": {d["code"]: int(d["n"]) for d in den},
            "denials": int(nden["n"]), "denied": int(nden["denied"]), "states": states}


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def num(x: Any, fmt: str = ".4f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def table(results: dict[str, tuple[dict[str, Any], dict[str, Any]]]) -> list[str]:
    lines = ["| setting | total return | max drawdown | Sharpe | fills | ES scalings (n, lowest scale) | denials "
             "| state changes | ES hist. mean | ES hist. max |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for name, (s, r) in results.items():
        sc = r["scalings"]
        es = r["es"]
        scal = f"{int(sc['n'])}, {num(sc['lo'], '.3f')}" if int(sc["n"]) else "0"
        den = f"{r['denials']} ({r['denied']} denied)" if r["denials"] else "0"
        lines.append(f"| {name} | {pct(s['total_return'])} | {pct(s['max_drawdown'])} | {s['sharpe']:.2f} "
                     f"| {s['fills']} | {scal} | {den} | {len(r['states'])} "
                     f"| {num(es['mean'] if int(es['n']) else None)} | {num(es['max'] if int(es['n']) else None)} |")
    return lines


def details(results: dict[str, tuple[dict[str, Any], dict[str, Any]]]) -> list[str]:
    out: list[str] = []
    for name, (s, r) in results.items():
        bits = []
        if r["denial_codes"]:
            bits.append("denial codes " + ", ".join(f"{c} x{n}" for c, n in r["denial_codes"].items()))
        if r["states"]:
            ch = "; ".join(f"{st['ts_event']:%Y-%m-%d %H:%M} {st['previous']}->{st['state']} ({st['source']})"
                           for st in r["states"][:6])
            more = f" (+{len(r['states']) - 6} more)" if len(r["states"]) > 6 else ""
            bits.append(f"state changes {ch}{more}")
        es = r["es"]
        if int(es["n"]):
            bits.append(f"ES Cornish-Fisher mean {num(es['cf_mean'])} max {num(es['cf_max'])}")
        bits.append(f"orders {s['orders']}, final risk state {s.get('risk_state', '-')}")
        out.append(f"- {name}: " + "; ".join(bits))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help=f"replay only {QUICK_RANGE} instead of {RANGE}")
    ap.add_argument("--only", action="append", choices=sorted(SETTINGS), metavar="NAME",
                    help="run only this setting (repeatable): " + ", ".join(SETTINGS))
    ap.add_argument("--keep", type=Path, metavar="DIR", help="write the runs' chDB under DIR and keep it (default: a "
                    "temp dir, removed at the end)")
    args = ap.parse_args()
    if not HOURLY.exists():
        raise SystemExit(f"calibrate_risk: {HOURLY} is missing (the shared data)")
    names = [n for n in SETTINGS if not args.only or n in args.only]
    timerange = QUICK_RANGE if args.quick else RANGE
    summaries: dict[str, dict[str, Any]] = {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="headrace-calibrate-risk-") as d:
        state = args.keep if args.keep is not None else Path(d) / "state"
        for i, name in enumerate(names):
            t0 = time.perf_counter()
            summaries[name] = replay(state, f"cal-{i}", timerange, SETTINGS[name])
            log(f"{name}: {time.perf_counter() - t0:.1f} s, return {summaries[name]['total_return']:.4f}, "
                f"fills {summaries[name]['fills']}")
        # one chDB path per process: opened only after every replay has finished with it
        store = Store.connect(f"chdb://{state / 'clickhouse'}", create=False)
        results = {name: (summaries[name], risk_rows(store, f"cal-{i}")) for i, name in enumerate(names)}
    print(f"Hourly universe, {timerange} (end excluded), huobi USDT, rebalance every 24 bars, ML off; "
          f"{len(names)} replays in {time.perf_counter() - t_all:.0f} s.\n")
    print("\n".join(table(results)))
    print()
    print("\n".join(details(results)))


if __name__ == "__main__":
    main()
