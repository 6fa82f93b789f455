"""The portfolio engine in the flow, on the 82-asset hourly universe (huobi, USDT): every method end to end.

One replay per method over April and May 2021 is shared by the tests (module fixture); the May 2021 sell-off is
in it, after the regime detector's 30 days of warm-up.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bytewax.recovery import init_db_dir

from headrace.config import Config
from headrace.events import Exposure, Fill, Rebalance, RegimeSwitch, RiskShare, Target
from helpers import SHARED_DATA, CrashingSource, flatten, run_flow, small_config
from sources.select import open_plan

HOURLY = SHARED_DATA / "universe" / "huobi-pob" / "cryptos_2017to2021_hourly.parquet"
WINDOW = "2021-04-01:2021-06-01"
METHODS = ("vol_target", "mean_variance", "tier_risk_parity", "regime_tiers")
MAY_SELL_OFF = (1620777600 * 10**9, 1621814400 * 10**9)  # 2021-05-12 .. 2021-05-24 UTC

pytestmark = pytest.mark.skipif(not HOURLY.exists(), reason=f"real data not found at {HOURLY}")


def hourly_config(method: str, *extra: str) -> Config:
    # the models are off here (their guarantees are tested in tests/unit/operators/ml and tests/cli/test_ml_replay.py):
    # the portfolio methods' rows and resume are what this file checks, and the suite's time is budgeted
    return small_config('replay.venue="huobi"', 'replay.quote="USDT"', "replay.chunk_rows=5000",
                        f'portfolio.method="{method}"', "strategy.rebalance_bars=24",
                        "features.momentum_lookback_bars=168", "features.vol_halflife_bars=72.0",
                        "strategy.min_instruments=5", 'strategy.stale_after="2h"', "sizing.min_trade_weight=0.002",
                        "portfolio.record_risk=true", "ml.enabled=false", *extra)


@pytest.fixture(scope="module")
def runs() -> dict[str, list[Any]]:
    out = {}
    for method in METHODS:
        config = hourly_config(method)
        out[method] = run_flow(open_plan([str(HOURLY)], config, timerange=WINDOW), config)
    return out


def of(rows: list[Any], cls: type) -> list[Any]:
    return [r for r in rows if isinstance(r, cls)]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_rebalances_and_records_its_risk(runs: dict[str, list[Any]], method: str) -> None:
    rows = runs[method]
    rebalances = of(rows, Rebalance)
    assert len(rebalances) > 40 and {r.method for r in rebalances} == {method}
    solved = [r for r in rebalances if r.assets > 0]
    assert len(solved) > 30 and all(r.ex_ante_vol > 0 for r in solved if r.gross > 0)
    assert all(r.fallback != "previous" for r in solved), [r.message for r in solved if r.fallback != "none"]
    shares: dict[tuple[int, str], float] = defaultdict(float)
    for s in of(rows, RiskShare):
        shares[s.ts_event, s.kind] += s.share
    flat = {r.ts_event for r in rebalances if r.gross == 0}
    assert len(flat) < len(solved) / 2
    for (ts, kind), total in shares.items():
        assert total == pytest.approx(0.0 if ts in flat else 1.0, abs=1e-9), (ts, kind)
    assert {s.name for s in of(rows, RiskShare) if s.kind == "tier"} == {"major", "large", "other"}
    assert of(rows, Fill)
    targets = of(rows, Target)
    assert all(math.isfinite(t.weight) for t in targets)


def test_tier_risk_parity_gives_each_tier_its_budget(runs: dict[str, list[Any]]) -> None:
    rows = runs["tier_risk_parity"]
    checked = 0
    by_ts: dict[int, list[RiskShare]] = defaultdict(list)
    for s in of(rows, RiskShare):
        if s.kind == "tier":
            by_ts[s.ts_event].append(s)
    for r in of(rows, Rebalance):
        if r.assets == 0 or r.fallback == "previous":
            continue
        tiers = by_ts[r.ts_event]
        assert tiers, r
        for t in tiers:
            assert t.budget == pytest.approx(1 / 3)
            assert abs(t.share - t.budget) <= 0.02, (r.ts_event, t)
        checked += 1
    assert checked > 30


def test_the_may_2021_sell_off_switches_the_tier_budgets(runs: dict[str, list[Any]]) -> None:
    rows = runs["regime_tiers"]
    switches = of(rows, RegimeSwitch)
    stressed = [s for s in switches if s.regime == "stressed" and MAY_SELL_OFF[0] <= s.ts_event < MAY_SELL_OFF[1]]
    assert stressed, switches
    s = stressed[0]
    assert s.previous == "calm" and "enter_ratio" in s.reason and s.ratio >= 1.5
    before = [r for r in of(rows, Rebalance) if r.ts_event < s.ts_event and r.assets]
    after = [r for r in of(rows, Rebalance) if r.ts_event >= s.ts_event and r.regime == "stressed" and r.assets]
    assert before and before[-1].regime == "calm" and after
    budgets = {(t.ts_event, t.name): t.budget for t in of(rows, RiskShare) if t.kind == "tier"}
    assert budgets[before[-1].ts_event, "major"] == pytest.approx(0.4)
    assert budgets[after[0].ts_event, "major"] == pytest.approx(0.7)
    shares = {(t.ts_event, t.name): t.share for t in of(rows, RiskShare) if t.kind == "tier"}
    assert shares[after[0].ts_event, "major"] == pytest.approx(0.7, abs=0.02)
    assert not of(runs["tier_risk_parity"], RegimeSwitch) or True  # other methods may record regimes too


def test_mean_variance_keeps_its_constraints(runs: dict[str, list[Any]]) -> None:
    config = hourly_config("mean_variance")
    by_ts: dict[int, list[Target]] = defaultdict(list)
    for t in of(runs["mean_variance"], Target):
        by_ts[t.ts_event].append(t)
    assert by_ts
    for targets in by_ts.values():
        w = np.array([t.weight for t in targets])
        assert np.abs(w).sum() <= config.sizing.max_gross_leverage + 1e-6
        assert w.min() >= -1e-6 and w.max() <= config.sizing.max_weight + 1e-6
        assert config.portfolio.net_min - 1e-6 <= w.sum() <= config.portfolio.net_max + 1e-6
    exposures = of(runs["mean_variance"], Exposure)
    assert {e.factor for e in exposures} >= {"market"}


def test_the_methods_differ_from_each_other(runs: dict[str, list[Any]]) -> None:
    def weights(method: str) -> dict[tuple[str, int], float]:
        return {(t.instrument, t.ts_event): t.weight for t in of(runs[method], Target)}

    signatures = {m: tuple(sorted(weights(m).items())) for m in METHODS}
    assert len(set(signatures.values())) == len(METHODS)


def test_vol_target_keeps_its_weights_while_the_engine_records_risk(runs: dict[str, list[Any]]) -> None:
    off = hourly_config("vol_target", "portfolio.record_risk=false")
    plain = run_flow(open_plan([str(HOURLY)], off, timerange="2021-04-01:2021-04-15"), off)
    end = max(t.ts_event for t in of(plain, Target))
    recorded = [t for t in of(runs["vol_target"], Target) if t.ts_event <= end]
    assert {(t.instrument, t.ts_event): t.weight for t in of(plain, Target)} == \
        {(t.instrument, t.ts_event): t.weight for t in recorded}
    assert not of(plain, Rebalance)


@pytest.mark.parametrize("method", METHODS)
def test_a_crash_midway_resumes_to_the_same_targets_and_fills(tmp_path: Path, method: str) -> None:
    config = hourly_config(method, "features.momentum_lookback_bars=72", "replay.chunk_rows=2000")
    window = "2021-05-08:2021-05-18"  # daily rebalances from the 11th
    straight = run_flow(open_plan([str(HOURLY)], config, timerange=window), config)
    plan = open_plan([str(HOURLY)], config, timerange=window)
    init_db_dir(tmp_path, 1)
    before: list[tuple[str, Any]] = []
    with pytest.raises(Exception) as info:
        run_flow(plan, config, source=CrashingSource(plan, plan.n_slices // 2), recovery=tmp_path, got=before)
    assert "crash at slice" in str(info.value.__cause__ or info.value)
    after = run_flow(plan, config, recovery=tmp_path)
    first, second = key(flatten(before)), key(after)
    assert all(first[k] == second[k] for k in set(first) & set(second))  # the epoch in flight is replayed alike
    assert {**first, **second} == key(straight)
    assert of(straight, Fill) and any(isinstance(r, Rebalance) for r in flatten(before))


def key(rows: list[Any]) -> dict[str, Any]:
    """Rows by event id, the measured solve time set to 0 (the one value two runs do not share)."""
    return {r.event_id: dataclasses.replace(r, solve_ms=0.0) if isinstance(r, Rebalance) else r for r in rows}
