"""Events to ClickHouse columns: which table each event goes to, and its row as columns.

Pure code (no Bytewax, no client): `to_arrow(table, run_id, events)` builds one Arrow table per insert,
column-oriented, with times as ``timestamp[ns, UTC]`` so ClickHouse's DateTime64(9) gets exact ns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

from headrace.events import (
    Alert,
    ArbSignal,
    Balance,
    Bar,
    Equity,
    Exposure,
    Features,
    FeatureVector,
    Fill,
    InstrumentStatus,
    MlDrift,
    MlMetric,
    MlModelState,
    MlOutcome,
    MlPrediction,
    MlSkill,
    MlWeight,
    Order,
    OrderStatus,
    Position,
    Quarantined,
    Rebalance,
    ReconciliationRecord,
    RegimeSwitch,
    RiskShare,
    RoutingDecision,
    Signal,
    Target,
    WrittenEvent,
)

TS = pa.timestamp("ns", tz="UTC")
STRINGS = pa.list_(pa.string())
FLOATS = pa.list_(pa.float64())
INTS = pa.list_(pa.int64())


def _venue(i: str) -> str:
    return i.partition(":")[0]


def _asset_quote(i: str) -> tuple[str, str]:
    """Asset and quote of a position: ``venue:BASE/QUOTE`` per instrument, ``venue:ASSET`` per venue (router)."""
    symbol = i.partition(":")[2]
    base, _, rest = symbol.partition("/")
    return base, rest.partition(":")[0]


Columns = list[tuple[str, pa.DataType, Callable[[Any], Any]]]

SCHEMAS: dict[str, tuple[type, Columns]] = {
    "bars": (Bar, [
        ("instrument", pa.string(), lambda e: e.instrument),
        ("venue", pa.string(), lambda e: _venue(e.instrument)),
        ("ts_open", TS, lambda e: e.ts_open),
        ("ts_event", TS, lambda e: e.ts_event),
        ("open", pa.float64(), lambda e: e.open),
        ("high", pa.float64(), lambda e: e.high),
        ("low", pa.float64(), lambda e: e.low),
        ("close", pa.float64(), lambda e: e.close),
        ("volume", pa.float64(), lambda e: e.volume),
        ("trades", pa.int64(), lambda e: e.trades),
        ("bid", pa.float64(), lambda e: e.bid),
        ("ask", pa.float64(), lambda e: e.ask),
    ]),
    "features": (Features, [
        ("instrument", pa.string(), lambda e: e.instrument),
        ("ts_event", TS, lambda e: e.ts_event),
        ("close", pa.float64(), lambda e: e.close),
        ("log_return", pa.float64(), lambda e: e.log_return),
        ("volatility", pa.float64(), lambda e: e.volatility),
        ("momentum", pa.float64(), lambda e: e.momentum),
    ]),
    "signals": (Signal, [
        ("instrument", pa.string(), lambda e: e.instrument),
        ("ts_event", TS, lambda e: e.ts_event),
        ("strategy", pa.string(), lambda e: e.strategy),
        ("score", pa.float64(), lambda e: e.score),
    ]),
    "targets": (Target, [
        ("instrument", pa.string(), lambda e: e.instrument),
        ("ts_event", TS, lambda e: e.ts_event),
        ("weight", pa.float64(), lambda e: e.weight),
        ("status", pa.string(), lambda e: e.status),
        ("volatility", pa.float64(), lambda e: e.volatility),
    ]),
    "orders": (Order, [
        ("account", pa.string(), lambda e: e.account),
        ("instrument", pa.string(), lambda e: e.instrument),
        ("venue", pa.string(), lambda e: _venue(e.instrument)),
        ("ts_event", TS, lambda e: e.ts_event),
        ("side", pa.string(), lambda e: e.side),
        ("amount", pa.float64(), lambda e: e.amount),
        ("reason", pa.string(), lambda e: e.reason),
        ("target_weight", pa.float64(), lambda e: e.target_weight),
        ("parent_id", pa.string(), lambda e: e.parent_id),
        ("limit_price", pa.float64(), lambda e: e.limit_price),
    ]),
    "fills": (Fill, [
        ("order_id", pa.string(), lambda e: e.order_id),
        ("account", pa.string(), lambda e: e.account),
        ("instrument", pa.string(), lambda e: e.instrument),
        ("venue", pa.string(), lambda e: _venue(e.instrument)),
        ("ts_event", TS, lambda e: e.ts_event),
        ("side", pa.string(), lambda e: e.side),
        ("price", pa.float64(), lambda e: e.price),
        ("amount", pa.float64(), lambda e: e.amount),
        ("notional", pa.float64(), lambda e: e.notional),
        ("fee", pa.float64(), lambda e: e.fee),
        ("fee_currency", pa.string(), lambda e: e.fee_currency),
        ("liquidity", pa.string(), lambda e: e.liquidity),
        ("slippage_bps", pa.float64(), lambda e: e.slippage_bps),
    ]),
    "positions": (Position, [
        ("account", pa.string(), lambda e: e.account),
        ("instrument", pa.string(), lambda e: e.instrument),
        ("venue", pa.string(), lambda e: _venue(e.instrument)),
        ("asset", pa.string(), lambda e: _asset_quote(e.instrument)[0]),
        ("quote", pa.string(), lambda e: _asset_quote(e.instrument)[1]),
        ("ts_event", TS, lambda e: e.ts_event),
        ("amount", pa.float64(), lambda e: e.amount),
        ("avg_price", pa.float64(), lambda e: e.avg_price),
        ("mark", pa.float64(), lambda e: e.mark),
        ("unrealized_pnl", pa.float64(), lambda e: e.unrealized_pnl),
        ("realized_pnl", pa.float64(), lambda e: e.realized_pnl),
        ("fees", pa.float64(), lambda e: e.fees),
        ("value_account", pa.float64(), lambda e: e.value_account),
        ("mark_ts", TS, lambda e: e.mark_ts),
        ("stale", pa.bool_(), lambda e: e.stale),
    ]),
    "order_status": (OrderStatus, [
        ("order_id", pa.string(), lambda e: e.order_id),
        ("account", pa.string(), lambda e: e.account),
        ("instrument", pa.string(), lambda e: e.instrument),
        ("ts_event", TS, lambda e: e.ts_event),
        ("status", pa.string(), lambda e: e.status),
        ("reason", pa.string(), lambda e: e.reason),
    ]),
    "instrument_status": (InstrumentStatus, [
        ("instrument", pa.string(), lambda e: e.instrument),
        ("ts_event", TS, lambda e: e.ts_event),
        ("status", pa.string(), lambda e: e.status),
        ("last_bar_ts", TS, lambda e: e.last_bar_ts),
    ]),
    "equity": (Equity, [
        ("account", pa.string(), lambda e: e.account),
        ("ts_event", TS, lambda e: e.ts_event),
        ("equity", pa.float64(), lambda e: e.equity),
        ("cash", pa.float64(), lambda e: e.cash),
        ("gross_exposure", pa.float64(), lambda e: e.gross_exposure),
        ("net_exposure", pa.float64(), lambda e: e.net_exposure),
        ("fees", pa.float64(), lambda e: e.fees),
        ("traded", pa.float64(), lambda e: e.traded),
        ("currency", pa.string(), lambda e: e.currency),
    ]),
    "routing": (RoutingDecision, [
        ("parent_id", pa.string(), lambda e: e.parent_id),
        ("account", pa.string(), lambda e: e.account),
        ("asset", pa.string(), lambda e: e.asset),
        ("ts_event", TS, lambda e: e.ts_event),
        ("side", pa.string(), lambda e: e.side),
        ("parent_amount", pa.float64(), lambda e: e.parent_amount),
        ("instrument", pa.string(), lambda e: e.instrument),
        ("venue", pa.string(), lambda e: _venue(e.instrument)),
        ("depth_source", pa.string(), lambda e: e.depth_source),
        ("best_price_account", pa.float64(), lambda e: e.best_price_account),
        ("depth_amount", pa.float64(), lambda e: e.depth_amount),
        ("chosen_amount", pa.float64(), lambda e: e.chosen_amount),
        ("expected_price", pa.float64(), lambda e: e.expected_price),
        ("child_id", pa.string(), lambda e: e.child_id),
        ("reason", pa.string(), lambda e: e.reason),
    ]),
    "arbitrage": (ArbSignal, [
        ("asset", pa.string(), lambda e: e.asset),
        ("ts_event", TS, lambda e: e.ts_event),
        ("status", pa.string(), lambda e: e.status),
        ("buy_instrument", pa.string(), lambda e: e.buy_instrument),
        ("sell_instrument", pa.string(), lambda e: e.sell_instrument),
        ("net_spread_bps", pa.float64(), lambda e: e.net_spread_bps),
        ("gross_spread_bps", pa.float64(), lambda e: e.gross_spread_bps),
        ("opened_ts", TS, lambda e: e.opened_ts),
    ]),
    "balances": (Balance, [
        ("account", pa.string(), lambda e: e.account),
        ("venue", pa.string(), lambda e: e.venue),
        ("currency", pa.string(), lambda e: e.currency),
        ("ts_event", TS, lambda e: e.ts_event),
        ("amount", pa.float64(), lambda e: e.amount),
        ("rate", pa.float64(), lambda e: e.rate),
        ("value_account", pa.float64(), lambda e: e.value_account),
    ]),
    "alerts": (Alert, [
        ("account", pa.string(), lambda e: e.account),
        ("venue", pa.string(), lambda e: e.venue),
        ("ts_event", TS, lambda e: e.ts_event),
        ("kind", pa.string(), lambda e: e.kind),
        ("message", pa.string(), lambda e: e.message),
    ]),
    "reconciliation": (ReconciliationRecord, [
        ("account", pa.string(), lambda e: e.account),
        ("venue", pa.string(), lambda e: e.venue),
        ("ts_event", TS, lambda e: e.ts_event),
        ("kind", pa.string(), lambda e: e.kind),
        ("key", pa.string(), lambda e: e.key),
        ("local", pa.string(), lambda e: e.local),
        ("venue_value", pa.string(), lambda e: e.venue_value),
        ("difference", pa.string(), lambda e: e.difference),
        ("within_tolerance", pa.bool_(), lambda e: e.within_tolerance),
        ("action", pa.string(), lambda e: e.action),
    ]),
    "rebalances": (Rebalance, [
        ("ts_event", TS, lambda e: e.ts_event),
        ("method", pa.string(), lambda e: e.method),
        ("regime", pa.string(), lambda e: e.regime),
        ("assets", pa.int64(), lambda e: e.assets),
        ("solver", pa.string(), lambda e: e.solver),
        ("status", pa.string(), lambda e: e.status),
        ("fallback", pa.string(), lambda e: e.fallback),
        ("message", pa.string(), lambda e: e.message),
        ("solve_ms", pa.float64(), lambda e: e.solve_ms),
        ("ex_ante_vol", pa.float64(), lambda e: e.ex_ante_vol),
        ("ex_ante_vol_annual", pa.float64(), lambda e: e.ex_ante_vol_annual),
        ("horizon_bars", pa.int64(), lambda e: e.horizon_bars),
        ("gross", pa.float64(), lambda e: e.gross),
        ("net", pa.float64(), lambda e: e.net),
        ("turnover", pa.float64(), lambda e: e.turnover),
        ("condition_number", pa.float64(), lambda e: e.condition_number),
        ("shrinkage", pa.float64(), lambda e: e.shrinkage),
    ]),
    "risk_contributions": (RiskShare, [
        ("ts_event", TS, lambda e: e.ts_event),
        ("kind", pa.string(), lambda e: e.kind),
        ("name", pa.string(), lambda e: e.name),
        ("tier", pa.string(), lambda e: e.tier),
        ("weight", pa.float64(), lambda e: e.weight),
        ("share", pa.float64(), lambda e: e.share),
        ("budget", pa.float64(), lambda e: e.budget),
    ]),
    "factor_exposures": (Exposure, [
        ("ts_event", TS, lambda e: e.ts_event),
        ("factor", pa.string(), lambda e: e.factor),
        ("exposure", pa.float64(), lambda e: e.exposure),
        ("lower", pa.float64(), lambda e: e.lower),
        ("upper", pa.float64(), lambda e: e.upper),
    ]),
    "regime_changes": (RegimeSwitch, [
        ("ts_event", TS, lambda e: e.ts_event),
        ("previous", pa.string(), lambda e: e.previous),
        ("regime", pa.string(), lambda e: e.regime),
        ("reason", pa.string(), lambda e: e.reason),
        ("fast_vol", pa.float64(), lambda e: e.fast_vol),
        ("slow_vol", pa.float64(), lambda e: e.slow_vol),
        ("ratio", pa.float64(), lambda e: e.ratio),
    ]),
    "quarantine": (Quarantined, [
        ("instrument", pa.string(), lambda e: e.instrument),
        ("ts_event", TS, lambda e: e.ts_event),
        ("ts_recv", TS, lambda e: e.ts_recv),
        ("source", pa.string(), lambda e: e.source),
        ("row", pa.int64(), lambda e: e.row),
        ("reason", pa.string(), lambda e: e.reason),
        ("raw", pa.string(), lambda e: e.raw),
    ]),
    "ml_features": (FeatureVector, [
        ("instrument", pa.string(), lambda e: e.instrument),
        ("ts_event", TS, lambda e: e.ts_event),
        ("names", STRINGS, lambda e: [n for n, _ in e.values]),
        ("values", FLOATS, lambda e: [v for _, v in e.values]),
        ("flags", STRINGS, lambda e: list(e.flags)),
        ("close", pa.float64(), lambda e: e.close),
    ]),
    "ml_predictions": (MlPrediction, [
        ("model", pa.string(), lambda e: e.model),
        ("version", pa.int64(), lambda e: e.version),
        ("instrument", pa.string(), lambda e: e.instrument),
        ("ts_event", TS, lambda e: e.ts_event),
        ("purpose", pa.string(), lambda e: e.purpose),
        ("value", pa.float64(), lambda e: e.value),
        ("score", pa.float64(), lambda e: e.score),
        ("feature_ts", TS, lambda e: e.feature_ts),
        ("names", STRINGS, lambda e: list(e.names)),
        ("inputs", FLOATS, lambda e: list(e.inputs)),
        ("contributions", FLOATS, lambda e: list(e.contributions)),
        ("intercept", pa.float64(), lambda e: e.intercept),
    ]),
    "ml_outcomes": (MlOutcome, [
        ("model", pa.string(), lambda e: e.model),
        ("version", pa.int64(), lambda e: e.version),
        ("instrument", pa.string(), lambda e: e.instrument),
        ("ts_event", TS, lambda e: e.ts_event),
        ("ts_resolved", TS, lambda e: e.ts_resolved),
        ("value", pa.float64(), lambda e: e.value),
        ("label", pa.float64(), lambda e: e.label),
        ("regime", pa.string(), lambda e: e.regime),
    ]),
    "ml_metrics": (MlMetric, [
        ("model", pa.string(), lambda e: e.model),
        ("ts_event", TS, lambda e: e.ts_event),
        ("instrument", pa.string(), lambda e: e.instrument),
        ("regime", pa.string(), lambda e: e.regime),
        ("samples", pa.int64(), lambda e: e.samples),
        ("window_samples", pa.int64(), lambda e: e.window_samples),
        ("log_loss", pa.float64(), lambda e: e.log_loss),
        ("accuracy", pa.float64(), lambda e: e.accuracy),
        ("mae", pa.float64(), lambda e: e.mae),
        ("hit_rate", pa.float64(), lambda e: e.hit_rate),
        ("ic", pa.float64(), lambda e: e.ic),
        ("drift_events", pa.int64(), lambda e: e.drift_events),
    ]),
    "ml_skill": (MlSkill, [
        ("name", pa.string(), lambda e: e.name),
        ("mode", pa.string(), lambda e: e.mode),
        ("instrument", pa.string(), lambda e: e.instrument),
        ("ts_event", TS, lambda e: e.ts_event),
        ("ts_resolved", TS, lambda e: e.ts_resolved),
        ("score", pa.float64(), lambda e: e.score),
        ("label", pa.float64(), lambda e: e.label),
    ]),
    "ml_weights": (MlWeight, [
        ("model", pa.string(), lambda e: e.model),
        ("ts_event", TS, lambda e: e.ts_event),
        ("previous", pa.float64(), lambda e: e.previous),
        ("weight", pa.float64(), lambda e: e.weight),
        ("reason", pa.string(), lambda e: e.reason),
        ("model_ic", pa.float64(), lambda e: e.model_ic),
        ("rules_ic", pa.float64(), lambda e: e.rules_ic),
        ("samples", pa.int64(), lambda e: e.samples),
    ]),
    "ml_drift": (MlDrift, [
        ("model", pa.string(), lambda e: e.model),
        ("ts_event", TS, lambda e: e.ts_event),
        ("policy", pa.string(), lambda e: e.policy),
        ("version", pa.int64(), lambda e: e.version),
        ("relearned", pa.int64(), lambda e: e.relearned),
        ("detail", pa.string(), lambda e: e.detail),
    ]),
    "ml_models": (MlModelState, [
        ("model", pa.string(), lambda e: e.model),
        ("ts_event", TS, lambda e: e.ts_event),
        ("kind", pa.string(), lambda e: e.kind),
        ("algorithm", pa.string(), lambda e: e.algorithm),
        ("pooled", pa.bool_(), lambda e: e.pooled),
        ("horizon_bars", pa.int64(), lambda e: e.horizon_bars),
        ("update_keys", STRINGS, lambda e: [k for k, _ in e.updates]),
        ("update_counts", INTS, lambda e: [n for _, n in e.updates]),
        ("features", STRINGS, lambda e: list(e.features)),
        ("state", pa.string(), lambda e: e.state),
    ]),
}

TABLE_OF: dict[type, str] = {cls: table for table, (cls, _) in SCHEMAS.items()}


def table_of(event: WrittenEvent) -> str:
    """Return the table an event is written to.

    Examples
    --------
    >>> table_of(Signal(instrument="x:A/B", ts_event=1, strategy="s", score=0.5))
    'signals'
    """
    return TABLE_OF[type(event)]


def to_arrow(table: str, run_id: str, events: Sequence[WrittenEvent]) -> pa.Table:
    """Return `events` (all of `table`'s type) as an Arrow table with ``run_id`` and ``event_id`` first."""
    _, cols = SCHEMAS[table]
    arrays = [pa.array([run_id] * len(events), pa.string()), pa.array([e.event_id for e in events], pa.string())]
    names = ["run_id", "event_id"]
    for name, dtype, get in cols:
        arrays.append(pa.array([get(e) for e in events], dtype))
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)
