"""The trading graph, wired for replay: market slices in, every decision and result to ClickHouse.

```
market ─► validate (per instrument) ──quarantined──────────────────────────────┐
             │ clean slices                                                     │
             ▼                                                                  │
           bars (per instrument) ─► features (per instrument) ──bars, features──┤
                                          │                                     │
                                          ▼ key "portfolio"                     │
                                    cross_section ──signals, targets, ──────────┤
                                          │       instrument status             ▼
                                          ▼ key = account id               clickhouse
                                       account ──orders, fills, order status,──┘
                                                 positions, equity
```

Step ids are a schema: Bytewax keys saved state by them, so renaming one loses its state on resume.

Bytewax's own runner works too: ``python -m bytewax.run flows.trading:flow`` builds the flow from
the environment (``HEADRACE_DATA`` = paths separated by ``:``, ``HEADRACE_CONFIG``, ``HEADRACE_RUN_ID``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.operators import KeyedStream
from bytewax.outputs import Sink

from flows._core_step import core_step
from headrace.config import Config, parse_duration
from headrace.events import (
    BarBatch,
    CrossSection,
    FeatureBatch,
    MarketSlice,
    Quarantined,
    WrittenEvent,
    split_instrument,
)
from operators.bars.bar_builder import BarBuilder
from operators.execution.sim_venue import SimulatedVenue, VenueCosts
from operators.features.bar_features import BarFeatures
from operators.portfolio.cross_section import CrossSectionCore
from operators.portfolio.sizing import VolTargetSizer
from operators.positions.account import Account, AccountOut, AccountSnap, FillOn
from operators.positions.fx import FxTable, infer_currency
from operators.signals.momentum import CrossSectionalMomentum
from operators.validation.market_checks import MarketValidator
from sinks.clickhouse import ClickHouseSink
from sources.replay import Progress, ReplaySource
from sources.replay_plan import ReplayPlan


@dataclass(frozen=True, slots=True)
class Wiring:
    """Everything the cores need that is known before the flow starts."""

    universe: tuple[str, ...]
    venues: tuple[str, ...]
    fx: FxTable
    sim: SimulatedVenue


def wiring(config: Config, universe: Sequence[str]) -> Wiring:
    """Resolve the account currency, fx and venue costs for `universe`; raises `ConfigError` early."""
    universe = tuple(sorted(universe))
    currency = infer_currency(universe, config.account.currency)
    fx = FxTable.resolve(currency, universe, config.account.fx_rates)
    venues = tuple(sorted({split_instrument(i)[0] for i in universe}))
    costs = {v: VenueCosts(config.venue(v).taker_fee_bps, config.venue(v).half_spread_bps) for v in venues}
    return Wiring(universe, venues, fx, SimulatedVenue(costs))


def _rows_of_features(batch: FeatureBatch) -> list[WrittenEvent]:
    return [*batch.bars, *batch.features]


def _rows_of_cross_section(cs: CrossSection) -> list[WrittenEvent]:
    return [*cs.signals, *cs.targets, *cs.statuses]


def build_flow(plan: ReplayPlan, config: Config, run_id: str, *, dsn: str | None = None,
               progress: Progress | None = None, source: ReplaySource | None = None,
               sink: Sink[tuple[str, Any]] | None = None) -> Dataflow:
    """Return the replay dataflow for `plan`, writing under `run_id` to `dsn` (default: the config's).

    `source` and `sink` replace the replay source and the ClickHouse sink (tests collect rows in memory;
    sink items are ``("clickhouse", event or list of events)``).
    """
    w = wiring(config, plan.universe)
    tf = config.timeframe_ns
    feats_cfg, strat, siz, acct = config.features, config.strategy, config.sizing, config.account
    sizer = VolTargetSizer(siz.target_volatility, siz.max_weight, siz.max_gross_leverage, strat.long_only)
    signal = CrossSectionalMomentum()
    stale_after = parse_duration(strat.stale_after)
    latency = parse_duration(acct.latency)
    fill_on: FillOn = "decision_close" if acct.fill_on == "decision_close" else "next_open"

    flow = Dataflow("headrace")
    market = op.input("market", flow, source or ReplaySource(plan, progress))
    by_instrument = op.key_on("key_instrument", market, lambda s: s.instrument)

    checked: Stream[MarketSlice | Quarantined] = op.key_rm("checked_values", core_step(
        "validate", by_instrument, lambda _: MarketValidator.from_config(config.validation),
        lambda snap: MarketValidator.from_config(config.validation, snap)))
    split = op.branch("split_quarantine", checked, lambda x: isinstance(x, MarketSlice))
    clean = op.key_on("key_clean", split.trues, lambda s: s.instrument)

    bars: KeyedStream[BarBatch] = core_step("bars", clean, lambda s: BarBuilder(s.instrument, tf),
                     lambda snap: BarBuilder.restore(tf, snap))
    features: KeyedStream[FeatureBatch] = core_step(
        "features", bars,
        lambda _: BarFeatures(feats_cfg.vol_halflife_bars, feats_cfg.momentum_lookback_bars),
        lambda snap: BarFeatures.restore(feats_cfg.vol_halflife_bars, feats_cfg.momentum_lookback_bars, snap))
    feature_batches = op.key_rm("feature_values", features)

    def new_cross_section(_: object) -> CrossSectionCore:
        return CrossSectionCore(w.universe, signal, sizer, strat.rebalance_bars, strat.min_instruments,
                                stale_after_ns=stale_after)

    cross: Stream[CrossSection] = op.key_rm("cross_section_values", core_step(
        "cross_section", op.key_on("key_portfolio", feature_batches, lambda _: "portfolio"), new_cross_section,
        lambda snap: CrossSectionCore.restore(w.universe, signal, sizer, strat.rebalance_bars,
                                              strat.min_instruments, snap, stale_after_ns=stale_after)))

    def new_account(_: object) -> Account:
        return Account(acct.id, w.venues, w.fx, w.sim, initial_cash=acct.initial_cash,
                       min_trade_weight=siz.min_trade_weight, latency_ns=latency, fill_on=fill_on)

    def restore_account(snap: AccountSnap) -> Account:
        return Account.restore(acct.id, w.venues, w.fx, w.sim, snap, initial_cash=acct.initial_cash,
                               min_trade_weight=siz.min_trade_weight, latency_ns=latency, fill_on=fill_on)

    new_cross_section(None)  # contradictory settings (stale_after 0s, decision_close with a latency) fail here,
    new_account(None)  # when the flow is built, not in the middle of a run
    account: Stream[AccountOut] = op.key_rm("account_values", core_step(
        "account", op.key_on("key_account", cross, lambda _: acct.id), new_account, restore_account))

    rows = op.merge(
        "rows",
        split.falses,
        op.map("feature_rows", feature_batches, _rows_of_features),
        op.map("decision_rows", cross, _rows_of_cross_section),
        account,
    )
    op.output("clickhouse", op.key_on("key_sink", rows, lambda _: "clickhouse"),
              sink or ClickHouseSink(dsn or config.dsn(), run_id, config.storage.batch_rows))
    return flow


def __getattr__(name: str) -> Dataflow:
    # `python -m bytewax.run flows.trading:flow`: build the flow from the environment, recorded like a replay
    if name != "flow":
        raise AttributeError(name)
    from flows.runner import flow_from_environment

    return flow_from_environment(build_flow)
