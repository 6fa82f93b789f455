"""Signed-volume order flow (bars from trades with aggressor sides) and the cross-venue basis (a pair quoted on
several venues): against batch computations."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from headrace.events import Bar
from helpers import market_slice, trades
from operators.bars.bar_builder import BarBuilder, aggregate
from operators.features.ml_features import MlFeatures
from operators.ml.core import MlCore, MlSettings, ModelSpec
from operators.signals.momentum import CrossSectionalMomentum

TF = 60 * 10**9


def test_buy_and_sell_volume_per_bar_equal_a_group_by() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    ts = np.sort(rng.integers(0, 50 * TF, n)).astype(np.int64)
    price = 100 + rng.standard_normal(n).cumsum() * 0.01
    amount = rng.exponential(1.0, n)
    side = rng.choice(np.array([1, -1, 0], dtype=np.int8), n)
    aggs = aggregate(ts, price, amount, TF, side)
    batch = (pl.DataFrame({"bucket": ts - ts % TF, "amount": amount, "side": side})
             .group_by("bucket", maintain_order=True)
             .agg(buy=pl.col("amount").filter(pl.col("side") == 1).sum(),
                  sell=pl.col("amount").filter(pl.col("side") == -1).sum()))
    assert [a.start for a in aggs] == batch["bucket"].to_list()
    assert [a.buy for a in aggs] == pytest.approx(batch["buy"].to_list(), rel=1e-12)
    assert [a.sell for a in aggs] == pytest.approx(batch["sell"].to_list(), rel=1e-12)


def test_bars_from_trades_carry_the_split_and_the_feature_is_the_imbalance() -> None:
    b = BarBuilder("x:A/B", TF)
    ts = [1, 2, 3, TF + 1]
    chunk = replace(trades("x:A/B", ts, [10.0, 11.0, 10.5, 10.0], [2.0, 1.0, 3.0, 1.0]),
                    side=np.array([1, -1, 1, 0], np.int8))
    out = b.update(market_slice("x:A/B", TF + 1, trades=chunk))
    [bar] = [x for batch in out for x in batch.bars]
    assert (bar.buy_volume, bar.sell_volume, bar.volume) == (5.0, 1.0, 6.0)
    f = MlFeatures(horizons=(1,), min_vol_bars=1)
    f.advance(bar)
    assert f.vector().as_dict()["order_flow"] == pytest.approx((5.0 - 1.0) / 6.0)
    [last] = [x for batch in b.flush() for x in batch.bars]
    assert last.buy_volume is None and last.sell_volume is None  # one trade without a side: no split known
    f.advance(last)
    assert "order_flow" not in f.vector().as_dict()


def _bar(inst: str, t: int, close: float) -> Bar:
    return Bar(instrument=inst, ts_open=t * TF, ts_event=(t + 1) * TF, open=close, high=close, low=close,
               close=close, volume=1.0, trades=1)


def test_the_basis_is_each_venues_log_price_against_the_others_mean() -> None:
    settings = MlSettings(models=(ModelSpec("m"),), horizon=2,
                          features=(("horizons", (1,)), ("min_vol_bars", 1)))
    core = MlCore(settings, (CrossSectionalMomentum(),))
    closes = {"a:BTC/USD": [100.0, 101.0, 102.0], "b:BTC/USD": [100.5, 100.0, 103.0], "c:BTC/USD": [99.0],
              "a:ETH/USD": [10.0, 10.1, 10.2]}
    for t in range(3):
        core.observe((t + 1) * TF, {k: (_bar(k, t, v[t]), ()) for k, v in closes.items() if t < len(v)})
    basis = {k: core._features[k].vector().as_dict().get("basis") for k in closes}
    # at the third bar c's last bar is two bars old: a and b compare with each other only
    assert basis["a:BTC/USD"] == pytest.approx(math.log(102.0) - math.log(103.0))
    assert basis["b:BTC/USD"] == pytest.approx(math.log(103.0) - math.log(102.0))
    assert basis["a:ETH/USD"] is None  # one venue only
    # c's basis from its only bar, against a and b then
    assert basis["c:BTC/USD"] == pytest.approx(math.log(99.0) - (math.log(100.0) + math.log(100.5)) / 2)
