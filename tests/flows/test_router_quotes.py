"""The router on recorded top-of-book quotes (Binance BTC/USDT, with sizes): candidates priced from the quote
and sized by it, and every fill within the size quoted at its time and its child's limit."""

from __future__ import annotations

from typing import Any

import pytest

from headrace.events import Bar, Fill, Order, RoutingDecision
from helpers import SHARED_DATA, run_flow, small_config
from sources.formats import read_paths
from sources.replay_plan import ReplayPlan

pytestmark = pytest.mark.skipif(not SHARED_DATA.exists(), reason="needs ../shared/data beside the repo")


def test_routed_children_take_no_more_than_the_quoted_size() -> None:
    ticks = SHARED_DATA / "ticks" / "binance"
    plan = ReplayPlan.build(read_paths([str(ticks / "btcusdt-quotes.parquet"), str(ticks / "btcusdt-trades.parquet")]),
                            200)
    config = small_config(
        'replay.timeframe="1s"', "features.momentum_lookback_bars=3", "features.vol_halflife_bars=3.0",
        "strategy.rebalance_bars=3", "strategy.min_instruments=1", 'strategy.name="ts_momentum"',
        "sizing.max_weight=1.0", "sizing.min_trade_weight=0.0", "router.enabled=true",
        f'router.markets=["{SHARED_DATA / "markets" / "ccxt" / "binance.json"}"]',
        'account.balances={"binance:USDT" = 1000000.0}', 'account.currency="USDT"')
    events: list[Any] = run_flow(plan, config)
    routing = [e for e in events if isinstance(e, RoutingDecision)]
    assert routing and {r.depth_source for r in routing} == {"quote"}
    bars = {(b.instrument, b.ts_event): b for b in events if isinstance(b, Bar)}
    orders = {o.order_id: o for o in events if isinstance(o, Order)}
    fills = [f for f in events if isinstance(f, Fill)]
    assert fills
    for f in fills:
        o = orders[f.order_id]
        known = max((b for (i, t), b in bars.items() if i == f.instrument and t <= f.ts_event),
                    key=lambda b: b.ts_event)  # the last bar closed at or before the fill: its quote was known
        size = known.ask_size if f.side == "buy" else known.bid_size
        assert size is not None and f.amount <= size + 1e-12
        assert f.price == (known.ask if f.side == "buy" else known.bid)
        assert f.price <= o.limit_price if f.side == "buy" else f.price >= o.limit_price
