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

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.operators import KeyedStream
from bytewax.outputs import Sink

from flows._core_step import core_step
from headrace.blas import single_threaded_blas
from headrace.config import Config, PortfolioConfig, parse_duration
from headrace.errors import ConfigError
from headrace.events import (
    ArbSignal,
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
from operators.ml.core import MlCore, MlCoreSnap, MlSettings, ModelSpec
from operators.portfolio.cross_section import CrossSectionCore
from operators.portfolio.engine import EngineSettings, PortfolioEngine, PortfolioEngineSnap
from operators.portfolio.sizing import VolTargetSizer
from operators.positions.account import Account, AccountOut, AccountSnap, FillOn
from operators.positions.fx import FxTable, infer_currency
from operators.positions.routed_account import Executor, RoutedAccount, RoutedAccountSnap, RoutedOut
from operators.risk.engine import Command, RiskEngine, RiskSettings
from operators.risk.margin import Tier
from operators.risk.margin_watch import MarginSettings, is_derivative
from operators.risk.pretrade import PreTradeLimits
from operators.router.arbitrage import ArbitrageCore
from operators.router.listings import Listing, listings_by_asset
from operators.signals.momentum import CrossSectionalMomentum, SignalModel, TimeSeriesMomentum
from operators.validation.market_checks import MarketValidator
from sinks.clickhouse import ClickHouseSink
from sources.market_metadata import load_markets
from sources.replay import Progress, ReplaySource
from sources.replay_plan import ReplayPlan


@dataclass(frozen=True, slots=True)
class Wiring:
    """Everything the cores need that is known before the flow starts."""

    universe: tuple[str, ...]
    venues: tuple[str, ...]
    fx: FxTable
    sim: SimulatedVenue
    listings: dict[str, tuple[Listing, ...]] | None = None  # router on: per asset, the instruments carrying it
    balances: dict[tuple[str, str], float] | None = None  # router on: starting cash per venue and currency

    @property
    def assets(self) -> dict[str, tuple[str, ...]] | None:
        """Router on: asset -> its instruments, those quoted in the account currency first."""
        if self.listings is None:
            return None
        return {a: tuple(li.instrument for li in sorted(ls, key=lambda x: (x.quote != self.fx.currency,
                                                                            x.instrument)))
                for a, ls in self.listings.items()}


def wiring(config: Config, universe: Sequence[str]) -> Wiring:
    """Resolve the account currency, fx, venue costs and the router's listings; raises `ConfigError` early."""
    universe = tuple(sorted(universe))
    currency = infer_currency(universe, config.account.currency)
    fx = FxTable.resolve(currency, universe, config.account.fx_rates)
    venues = tuple(sorted({split_instrument(i)[0] for i in universe}))
    costs = {v: VenueCosts(config.venue(v).taker_fee_bps, config.venue(v).half_spread_bps) for v in venues}
    if not config.router.enabled:
        return Wiring(universe, venues, fx, SimulatedVenue(costs))
    r = config.router
    markets = load_markets(r.markets)
    listings = listings_by_asset(universe, markets, venues=r.venues, quotes=r.quotes, carriers=r.carriers,
                                 fee_rate={v: c.taker_fee_bps / 1e4 for v, c in costs.items()},
                                 half_spread={v: c.half_spread_bps / 1e4 for v, c in costs.items()})
    if not listings:
        raise ConfigError("router.venues", f"no replayed instrument may carry orders: the universe is "
                                           f"{list(universe)!r}; check router.venues, router.quotes and "
                                           f"router.carriers")
    if config.account.balances:
        balances = {(k.partition(":")[0], k.partition(":")[2]): v for k, v in config.account.balances.items()}
    else:
        traded = sorted({li.venue for ls in listings.values() for li in ls})
        balances = {(v, currency): config.account.initial_cash / len(traded) for v in traded}
    for (venue, ccy), amount in sorted(balances.items()):
        if amount > 0 and not fx.knows(ccy):
            raise ConfigError(f"account.fx_rates.{ccy}", f"account.balances holds {ccy} on {venue} but nothing "
                                                         f"prices {ccy} in {currency}; set a fallback rate")
    return Wiring(universe, venues, fx, SimulatedVenue(costs), listings, balances)


def signal_model(config: Config) -> SignalModel:
    """The strategy's signal, by ``strategy.name``."""
    return rule_signals(config)[0]


def rule_signals(config: Config) -> tuple[SignalModel, ...]:
    """The rule factors the models are compared with: the strategy's signal first, then the other momentum."""
    xs, ts = CrossSectionalMomentum(), TimeSeriesMomentum(config.features.momentum_lookback_bars)
    return (ts, xs) if config.strategy.name == "ts_momentum" else (xs, ts)


def regime_settings(p: PortfolioConfig) -> tuple[tuple[str, float], ...]:
    """`RegimeDetector`'s keyword arguments from the ``portfolio.regime_*`` keys (the portfolio engine's regime
    and the models' volatility regime are one definition)."""
    return (("fast_halflife_bars", p.regime_fast_halflife_bars), ("slow_halflife_bars", p.regime_slow_halflife_bars),
            ("enter_ratio", p.regime_enter_ratio), ("exit_ratio", p.regime_exit_ratio),
            ("min_dwell_bars", p.regime_min_dwell_bars), ("warmup_bars", p.regime_warmup_bars))


def ml_settings(config: Config) -> MlSettings | None:
    """The online models' settings from ``[ml]`` (None when off)."""
    m = config.ml
    if not m.enabled:
        return None
    p = config.portfolio
    return MlSettings(
        models=tuple(ModelSpec(x.name, x.kind, x.algorithm, x.pooled, x.mode) for x in m.models),
        horizon=m.horizon_bars or config.strategy.rebalance_bars, learn_every=m.learn_every_bars,
        metrics_window=m.metrics_window, drift_delta=m.drift_delta, drift_policy=m.drift_policy,
        relearn_samples=m.relearn_samples, blend_max_weight=m.blend_max_weight, blend_step=m.blend_step,
        blend_margin=m.blend_margin, blend_min_samples=m.blend_min_samples, blend_min_t=m.blend_min_t,
        skill_window=m.skill_window, seed=m.seed, cross_sectional=config.strategy.name == "xs_momentum",
        regime=regime_settings(p), account=config.account.id,
        features=(("horizons", tuple(m.feature_horizons)), ("vol_halflife", m.vol_halflife_bars),
                  ("z_halflife", m.zscore_halflife_bars), ("volume_halflife", m.volume_halflife_bars),
                  ("min_vol_bars", m.min_vol_bars)),
        store_every=m.store_features_every)


def warm_start(config: Config) -> dict[str, dict[str, tuple[Any, int]]] | None:
    """Per model name, the exported pipelines ``ml.warm_start`` names (None: fresh models)."""
    if not config.ml.enabled or not config.ml.warm_start:
        return None
    import pickle

    from headrace.ml_export import load_models, resolve_warm_start

    path = resolve_warm_start(config.ml.warm_start, Path(config.storage.state_dir))
    if path is None:
        return None
    exported = load_models(path)
    out: dict[str, dict[str, tuple[Any, int]]] = {}
    for m in config.ml.models:
        e = exported.model(m.name)
        if e is None:
            continue  # a model the file does not hold starts fresh
        horizon = config.ml.horizon_bars or config.strategy.rebalance_bars
        if e.horizon_bars != horizon:
            raise ConfigError("ml.warm_start", f"{path} holds {m.name} learnt on a {e.horizon_bars}-bar label, but "
                                               f"this run's horizon is {horizon} bars (ml.horizon_bars)")
        if (e.kind, e.algorithm, e.pooled) != (m.kind, m.algorithm, m.pooled):
            raise ConfigError("ml.warm_start", f"{path} holds {m.name} as {e.kind}/{e.algorithm}/"
                                               f"{'pooled' if e.pooled else 'per instrument'}, but ml.models "
                                               f"configures it as {m.kind}/{m.algorithm}/"
                                               f"{'pooled' if m.pooled else 'per instrument'}")
        pipelines = pickle.loads(e.state_bytes())  # a file the operator exported or imported (docs/ml.md)
        updates = dict(e.updates)
        out[m.name] = {k: (p, updates.get(k, 0)) for k, p in pipelines.items()}
    if not out:
        raise ConfigError("ml.warm_start", f"{path} holds none of the configured models "
                                           f"{[m.name for m in config.ml.models]}; it has "
                                           f"{[e.model for e in exported.models]}")
    return out


def margin_settings(config: Config, universe: Sequence[str]) -> MarginSettings | None:
    """Margin monitoring of the universe's derivatives (``[risk]`` margin keys; None when the risk engine is off or
    nothing is a contract). Tiers: ``risk.leverage_tiers`` read for each venue with contracts
    (`headrace.leverage_tiers`), instruments it does not list get one tier of ``risk.leverage`` and
    ``risk.maintenance_rate``."""
    r = config.risk
    contracts = [i for i in universe if is_derivative(i)]
    if not r.enabled or not contracts:
        return None
    tiers: dict[str, tuple[Tier, ...]] = {}
    if r.leverage_tiers:
        from headrace.leverage_tiers import by_instrument, load_tiers

        for venue in sorted({split_instrument(i)[0] for i in contracts}):
            tiers.update(by_instrument(venue, load_tiers(r.leverage_tiers, venue,
                                                         default_maintenance_rate=r.maintenance_rate,
                                                         default_max_leverage=r.leverage)))
    try:
        return MarginSettings(warn=r.margin_warn, critical=r.margin_critical, reduce_to=r.margin_reduce_to,
                              action=r.margin_action, leverage=r.leverage, maintenance_rate=r.maintenance_rate,
                              tiers=tuple(sorted(tiers.items())))
    except ValueError as e:
        raise ConfigError("risk.margin_warn", str(e)) from None


def risk_settings(config: Config, w: Wiring) -> RiskSettings | None:
    """The risk engine's settings from ``[risk]`` (None when off): limits, scenarios with their shock files
    loaded, and the operator commands a replay applies (`headrace.risk_commands`)."""
    r = config.risk
    if not r.enabled:
        return None
    from headrace.risk_commands import commands_path, scheduled
    from headrace.stress_data import configured_scenarios

    limits = PreTradeLimits(max_order_notional=r.max_order_notional, max_order_fraction=r.max_order_fraction,
                            max_position_fraction=r.max_position_fraction, max_asset_fraction=r.max_asset_fraction,
                            max_gross=r.max_gross, max_net=r.max_net, price_band_bps=r.price_band_bps,
                            max_orders=r.max_orders, window_ns=parse_duration(r.rate_window))
    return RiskSettings(
        account=config.account.id, alpha=r.alpha, window=r.window_bars, min_bars=r.min_bars,
        report_every=r.report_every_bars, es_limit=r.es_limit, es_measure=r.es_measure, es_action=r.es_action,
        es_resume=r.es_resume, spread_k=r.lvar_spread_k, impact_coefficient=r.impact_coefficient,
        spread_halflife=r.spread_halflife_bars, limits=limits, stress_limit=r.stress_limit,
        stress_action=r.stress_action, scenarios=configured_scenarios(config),
        commands=scheduled(commands_path(config), config.account.id),
        half_spreads=tuple((v, config.venue(v).half_spread_bps / 1e4) for v in w.venues))


def engine_settings(config: Config) -> EngineSettings | None:
    """The portfolio engine's settings from ``[portfolio]``, ``[sizing]`` and ``[strategy]``; None when it is off
    (``vol_target`` without ``record_risk`` or ``correlation_aware``)."""
    p, siz, strat = config.portfolio, config.sizing, config.strategy
    if p.method == "vol_target" and not (p.record_risk or p.correlation_aware):
        return None
    return EngineSettings(
        method=p.method, covariance=p.covariance, window_bars=p.window_bars, halflife_bars=p.halflife_bars,
        shrinkage=p.shrinkage, shrinkage_intensity=p.shrinkage_intensity, min_bars=p.min_bars,
        risk_model=p.risk_model, n_statistical=p.n_statistical, benchmark=p.benchmark,
        correlation_aware=p.correlation_aware, alpha_ic=p.alpha_ic, risk_aversion=p.risk_aversion,
        turnover_penalty=p.turnover_penalty_bps / 1e4, net=(p.net_min, p.net_max), gross=siz.max_gross_leverage,
        max_weight=siz.max_weight, long_only=strat.long_only, target_volatility=siz.target_volatility,
        factor_bounds=tuple((f, b[0], b[1]) for f, b in sorted(p.factor_bounds.items())),
        tiers=tuple((t, tuple(a)) for t, a in sorted(p.tiers.items())),
        tier_budgets=tuple(sorted(p.tier_budgets.items())), inside_tier=p.inside_tier,
        regime_budgets=tuple((r, tuple(sorted(b.items()))) for r, b in sorted(p.regime_budgets.items())),
        regime=regime_settings(p), timeframe_ns=config.timeframe_ns, rebalance_bars=strat.rebalance_bars,
        account=config.account.id)


def trading_costs(w: Wiring) -> dict[str, float]:
    """Per decision key, the cost of trading one unit of weight: taker fee plus half spread, as the simulated
    venue charges them (router on: the cheapest listing that carries the asset)."""
    if w.listings is not None:
        return {a: min(li.fee_rate + li.half_spread for li in ls) for a, ls in w.listings.items() if ls}
    costs = {i: w.sim.costs[split_instrument(i)[0]] for i in w.universe}
    return {i: (c.taker_fee_bps + c.half_spread_bps) / 1e4 for i, c in costs.items()}


def _rows_of_features(batch: FeatureBatch) -> list[WrittenEvent]:
    return [*batch.bars, *batch.features]


def _rows_of_cross_section(cs: CrossSection) -> list[WrittenEvent]:
    arbitrage: list[ArbSignal] = list(cs.arbitrage)
    return [*cs.signals, *cs.targets, *cs.statuses, *arbitrage, *cs.portfolio, *cs.ml]


def build_flow(plan: ReplayPlan | None, config: Config, run_id: str, *, dsn: str | None = None,
               progress: Progress | None = None, source: ReplaySource | None = None,
               sink: Sink[tuple[str, Any]] | None = None, executor: Executor | None = None,
               universe: Sequence[str] | None = None,
               risk_inbox: Callable[[int], list[Command]] | None = None) -> Dataflow:
    """Return the replay dataflow for `plan`, writing under `run_id` to `dsn` (default: the config's).

    `source` and `sink` replace the replay source and the ClickHouse sink (tests collect rows in memory;
    sink items are ``("clickhouse", event or list of events)``). Paper and live mode (`flows.live`) give a
    `source`, the `universe` it streams instead of a plan, and for live trading the router account's `executor`;
    `risk_inbox` gives the risk engine the operator's commands as they arrive.
    """
    if plan is None and (source is None or universe is None):
        raise ValueError("build_flow: without a replay plan, give the source and its universe")
    single_threaded_blas()
    w = wiring(config, plan.universe if plan is not None else tuple(universe or ()))
    tf = config.timeframe_ns
    feats_cfg, strat, siz, acct = config.features, config.strategy, config.sizing, config.account
    sizer = VolTargetSizer(siz.target_volatility, siz.max_weight, siz.max_gross_leverage, strat.long_only)
    rules = rule_signals(config)  # the strategy's signal, then the other rule factor the models are compared with
    signal = rules[0]
    stale_after = parse_duration(strat.stale_after)
    latency = parse_duration(acct.latency)
    fill_on: FillOn = "decision_close" if acct.fill_on == "decision_close" else "next_open"

    flow = Dataflow("headrace")
    market = op.input("market", flow, source if source is not None else ReplaySource(plan, progress))  # type: ignore[arg-type]
    by_instrument = op.key_on("key_instrument", market, lambda s: s.instrument)

    checked: Stream[MarketSlice | Quarantined] = op.key_rm("checked_values", core_step(
        "validate", by_instrument, lambda _: MarketValidator.from_config(config.validation),
        lambda snap: MarketValidator.from_config(config.validation, snap)))
    split = op.branch("split_quarantine", checked, lambda x: isinstance(x, MarketSlice))
    # the bar step sees its instrument's quarantined records too, in stream order, so that the feature vectors
    # built over them are flagged the same way in every run
    known = set(w.universe)
    clean = op.key_on("key_clean", op.filter("known_instrument", checked, lambda x: x.instrument in known),
                      lambda s: s.instrument)

    bars: KeyedStream[BarBatch] = core_step("bars", clean, lambda s: BarBuilder(s.instrument, tf),
                     lambda snap: BarBuilder.restore(tf, snap))
    features: KeyedStream[FeatureBatch] = core_step(
        "features", bars,
        lambda _: BarFeatures(feats_cfg.vol_halflife_bars, feats_cfg.momentum_lookback_bars),
        lambda snap: BarFeatures.restore(feats_cfg.vol_halflife_bars, feats_cfg.momentum_lookback_bars, snap))
    feature_batches = op.key_rm("feature_values", features)

    rc = config.router

    def new_arbitrage() -> ArbitrageCore | None:
        if w.listings is None:
            return None
        return ArbitrageCore(w.listings, w.fx, threshold_bps=rc.arbitrage_threshold_bps,
                             min_duration_ns=parse_duration(rc.arbitrage_min_duration),
                             quote_max_age_ns=parse_duration(rc.quote_max_age))

    settings = engine_settings(config)
    costs = trading_costs(w)

    def new_engine(snap: PortfolioEngineSnap | None = None) -> PortfolioEngine | None:
        if settings is None:
            return None
        if snap is None:
            return PortfolioEngine(settings, costs, clock=time.perf_counter_ns)
        return PortfolioEngine.restore(settings, snap, costs, clock=time.perf_counter_ns)

    mls = ml_settings(config)
    warm = warm_start(config)

    def new_ml(snap: MlCoreSnap | None = None) -> MlCore | None:
        if mls is None:
            return None
        if snap is None:
            return MlCore(mls, rules, warm=warm)
        return MlCore.restore(mls, rules, snap)

    def new_cross_section(_: object) -> CrossSectionCore:
        return CrossSectionCore(w.universe, signal, sizer, strat.rebalance_bars, strat.min_instruments,
                                stale_after_ns=stale_after, assets=w.assets, arbitrage=new_arbitrage(),
                                engine=new_engine(), ml=new_ml())

    decisions: Stream[CrossSection] = op.key_rm("cross_section_values", core_step(
        "cross_section", op.key_on("key_portfolio", feature_batches, lambda _: "portfolio"), new_cross_section,
        lambda snap: CrossSectionCore.restore(w.universe, signal, sizer, strat.rebalance_bars,
                                              strat.min_instruments, snap, stale_after_ns=stale_after,
                                              assets=w.assets, arbitrage=new_arbitrage(), engine=new_engine,
                                              ml=new_ml)))
    # the models' end-of-run records travel in a cross-section without bars: rows only, not for the account
    cross = op.filter("with_bars", decisions, lambda cs: bool(cs.bars))

    rs = risk_settings(config, w)
    ms = margin_settings(config, w.universe)

    def new_risk() -> RiskEngine | None:
        if rs is None:
            return None
        keys = tuple(w.listings) if w.listings is not None else w.universe
        return RiskEngine(rs, keys, risk_inbox)

    def new_account(_: object) -> Account | RoutedAccount:
        if w.listings is not None and w.balances is not None:
            return RoutedAccount(acct.id, w.listings, w.fx, balances=w.balances,
                                 min_trade_weight=siz.min_trade_weight, latency_ns=latency, fill_on=fill_on,
                                 band_bps=rc.band_bps, max_volume_share=rc.max_volume_share,
                                 quote_max_age_ns=parse_duration(rc.quote_max_age), executor=executor,
                                 reconcile_every_ns=parse_duration(config.live.reconcile_every), risk=new_risk())
        return Account(acct.id, w.venues, w.fx, w.sim, initial_cash=acct.initial_cash,
                       min_trade_weight=siz.min_trade_weight, latency_ns=latency, fill_on=fill_on, risk=new_risk(),
                       margin=ms)

    def restore_account(snap: AccountSnap | RoutedAccountSnap) -> Account | RoutedAccount:
        if isinstance(snap, RoutedAccountSnap):
            core = new_account(None)
            assert isinstance(core, RoutedAccount)
            return core.restore_state(snap)
        return Account.restore(acct.id, w.venues, w.fx, w.sim, snap, initial_cash=acct.initial_cash,
                               min_trade_weight=siz.min_trade_weight, latency_ns=latency, fill_on=fill_on,
                               risk=new_risk(), margin=ms)

    new_cross_section(None)  # contradictory settings (stale_after 0s, decision_close with a latency) fail here,
    new_account(None)  # when the flow is built, not in the middle of a run
    account: Stream[AccountOut | RoutedOut] = op.key_rm("account_values", core_step(
        "account", op.key_on("key_account", cross, lambda _: acct.id), new_account, restore_account))

    rows = op.merge(
        "rows",
        split.falses,
        op.map("feature_rows", feature_batches, _rows_of_features),
        op.map("decision_rows", decisions, _rows_of_cross_section),
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
