from __future__ import annotations

import math
import pickle

import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from headrace.events import BarBatch
from helpers import bar
from operators.features.bar_features import BarFeatures

closes_st = st.lists(st.floats(0.5, 2.0), min_size=1, max_size=120)


def bars_of(closes: list[float]):
    return [bar("x:A/B", 60 * i, c) for i, c in enumerate(closes)]


@given(closes=closes_st, halflife=st.floats(1.0, 50.0), lookback=st.integers(1, 30))
def test_features_equal_polars_batch_computation(closes, halflife, lookback) -> None:
    core = BarFeatures(halflife, lookback)
    got = [core.update_bar(b) for b in bars_of(closes)]
    s = pl.Series(closes)
    rets = s.log().diff()
    var = rets.drop_nulls().pow(2).ewm_mean(half_life=halflife, adjust=False).to_list()
    mom = s.log().diff(lookback).to_list()
    for i, f in enumerate(got):
        if i == 0:
            assert f.log_return is None and f.volatility is None
            continue
        assert math.isclose(f.log_return, rets[i], rel_tol=1e-12, abs_tol=1e-15)
        if i >= 2:
            assert math.isclose(f.volatility, math.sqrt(var[i - 1]), rel_tol=1e-9, abs_tol=1e-15)
        else:
            assert f.volatility is None
        if mom[i] is None:
            assert f.momentum is None
        else:
            assert math.isclose(f.momentum, mom[i], rel_tol=1e-9, abs_tol=1e-12)


@given(closes=closes_st, cut=st.integers(0, 120))
def test_bar_features_restore_midway_is_invisible(closes, cut) -> None:
    bars = bars_of(closes)
    straight, first = BarFeatures(5.0, 4), BarFeatures(5.0, 4)
    expected = [straight.update_bar(b) for b in bars]
    got = [first.update_bar(b) for b in bars[:cut]]
    second = BarFeatures.restore(5.0, 4, pickle.loads(pickle.dumps(first.snapshot())))
    got += [second.update_bar(b) for b in bars[cut:]]
    assert got == expected


def test_feature_batch_keeps_bars_and_watermark() -> None:
    bars = tuple(bars_of([1.0, 1.1]))
    [out] = BarFeatures(5.0, 1).update(BarBatch(instrument="x:A/B", watermark=999, bars=bars))
    assert out.bars == bars and out.watermark == 999 and len(out.features) == 2
    assert math.isclose(out.features[1].momentum, math.log(1.1))
