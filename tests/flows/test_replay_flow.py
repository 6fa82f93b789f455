"""The replay flow under the real Bytewax runtime: parity with a plain loop, workers, recovery."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bytewax.recovery import init_db_dir

from flows.trading import engine_settings, ml_settings, risk_settings, rule_signals, trading_costs, wiring
from headrace.config import Config, parse_duration
from headrace.events import Fill, MarketSlice
from helpers import CrashingSource, by_id, flatten, run_flow, small_config
from operators.bars.bar_builder import BarBuilder
from operators.features.bar_features import BarFeatures
from operators.ml.core import MlCore
from operators.portfolio.cross_section import CrossSectionCore
from operators.portfolio.engine import PortfolioEngine
from operators.portfolio.sizing import VolTargetSizer
from operators.positions.account import Account
from operators.risk.engine import RiskEngine
from operators.signals.momentum import CrossSectionalMomentum
from operators.validation.market_checks import MarketValidator
from sources.replay_plan import ReplayPlan


def plain_loop(plan: ReplayPlan, config: Config) -> list[Any]:
    """The same cores, in the same order, with no dataflow engine."""
    w = wiring(config, plan.universe)
    f, s, z, a = config.features, config.strategy, config.sizing, config.account
    sizer = VolTargetSizer(z.target_volatility, z.max_weight, z.max_gross_leverage, s.long_only)
    validators = {i: MarketValidator() for i in plan.universe}
    builders = {i: BarBuilder(i, config.timeframe_ns) for i in plan.universe}
    feats = {i: BarFeatures(f.vol_halflife_bars, f.momentum_lookback_bars) for i in plan.universe}
    settings = engine_settings(config)
    engine = PortfolioEngine(settings, trading_costs(w)) if settings is not None else None
    mls = ml_settings(config)
    ml = MlCore(mls, rule_signals(config)) if mls is not None else None
    cross = CrossSectionCore(plan.universe, CrossSectionalMomentum(), sizer, s.rebalance_bars, s.min_instruments,
                             stale_after_ns=parse_duration(s.stale_after), engine=engine, ml=ml)
    rs = risk_settings(config, w)
    risk = RiskEngine(rs, w.universe) if rs is not None else None
    account = Account(a.id, w.venues, w.fx, w.sim, initial_cash=a.initial_cash, min_trade_weight=z.min_trade_weight,
                      latency_ns=parse_duration(a.latency), fill_on=a.fill_on,  # type: ignore[arg-type]
                      risk=risk)
    out: list[Any] = []

    def downstream(batches: list[Any]) -> None:
        for b in batches:
            for fb in feats[b.instrument].update(b):
                out.extend([*fb.bars, *fb.features])
                for cs in cross.update(fb):
                    out.extend([*cs.signals, *cs.targets, *cs.statuses, *cs.portfolio, *cs.ml])
                    out.extend(account.update(cs))

    for j in range(plan.n_slices):
        for item in plan.slice(j):
            for o in validators[item.instrument].update(item):
                if isinstance(o, MarketSlice):
                    downstream(builders[o.instrument].update(o))
                else:
                    out.append(o)
                    if o.instrument in builders:  # the bar step sees it too: it flags the feature vectors
                        downstream(builders[o.instrument].update(o))
    for i in plan.universe:
        downstream(builders[i].flush())
    for cs in cross.flush():
        out.extend([*cs.signals, *cs.targets, *cs.statuses, *cs.portfolio, *cs.ml])
        if cs.bars:  # the models' end-of-run records come in a cross-section without bars, not for the account
            out.extend(account.update(cs))
    out.extend(account.flush())
    return out


def fills(events: list[Any]) -> list[Fill]:
    return sorted((e for e in events if isinstance(e, Fill)), key=lambda f: (f.ts_event, f.instrument))


def test_flow_output_equals_the_cores_run_in_a_plain_loop(demo_plan: ReplayPlan) -> None:
    config = small_config()
    flow_out = run_flow(demo_plan, config)
    loop_out = plain_loop(demo_plan, config)
    assert by_id(flow_out) == by_id(loop_out)
    assert len(fills(flow_out)) > 0


def test_two_workers_give_the_same_fills_as_one(demo_plan: ReplayPlan) -> None:
    config = small_config()
    one = run_flow(demo_plan, config, workers=1)
    two = run_flow(demo_plan, config, workers=2)
    assert fills(one) == fills(two) and len(fills(one)) > 0
    assert by_id(one) == by_id(two)




@pytest.mark.parametrize("crash_at", [1, 5, 9])
def test_replay_resumed_after_a_crash_equals_an_uninterrupted_run(demo_plan: ReplayPlan, tmp_path: Path,
                                                                   crash_at: int) -> None:
    config = small_config()
    expected = by_id(run_flow(demo_plan, config))
    init_db_dir(tmp_path, 1)
    before: list[tuple[str, Any]] = []
    with pytest.raises(Exception) as info:
        run_flow(demo_plan, config, source=CrashingSource(demo_plan, crash_at), recovery=tmp_path, got=before)
    assert "crash at slice" in str(info.value.__cause__ or info.value)
    after = run_flow(demo_plan, config, recovery=tmp_path)
    assert after, "the resumed run wrote nothing"
    first, second = by_id(flatten(before)), by_id(after)
    # what both runs wrote (the epoch in flight at the crash is replayed) is identical, row for row
    assert all(first[k] == second[k] for k in set(first) & set(second))
    # and, deduplicated by event_id as ClickHouse does, the two runs wrote exactly the uninterrupted output
    assert {**first, **second} == expected


TICK_SETS = ("replay.timeframe=1m", "features.momentum_lookback_bars=30", "features.vol_halflife_bars=30.0",
             "strategy.rebalance_bars=20", "strategy.long_only=false", "sizing.max_gross_leverage=2.0")


def test_ticks_through_the_flow_equal_the_plain_loop_and_trade(tick_plan: ReplayPlan) -> None:
    config = small_config(*TICK_SETS)
    flow_out = run_flow(tick_plan, config)
    assert by_id(flow_out) == by_id(plain_loop(tick_plan, config))
    bars = [e for e in flow_out if type(e).__name__ == "Bar"]
    assert len({b.instrument for b in bars}) == 10 and all(b.ts_event - b.ts_open == 60 * 10**9 for b in bars)
    late = [b for b in bars if b.ts_open >= min(x.ts_open for x in bars) + 600 * 10**9]
    assert late and all(b.bid is not None and b.ask is not None and b.bid < b.ask for b in late)  # quotes reach bars
    sides = {f.side for f in fills(flow_out)}
    assert sides == {"buy", "sell"}


@pytest.mark.parametrize("crash_at", [3, 17])
def test_tick_replay_resumed_after_a_crash_equals_an_uninterrupted_run(tick_plan: ReplayPlan, tmp_path: Path,
                                                                        crash_at: int) -> None:
    config = small_config(*TICK_SETS)
    expected = by_id(run_flow(tick_plan, config))
    init_db_dir(tmp_path, 1)
    before: list[tuple[str, Any]] = []
    with pytest.raises(Exception) as info:
        run_flow(tick_plan, config, source=CrashingSource(tick_plan, crash_at), recovery=tmp_path, got=before)
    assert "crash at slice" in str(info.value.__cause__ or info.value)  # a flow error wraps the cause
    after = run_flow(tick_plan, config, recovery=tmp_path)
    assert {**by_id(flatten(before)), **by_id(after)} == expected
