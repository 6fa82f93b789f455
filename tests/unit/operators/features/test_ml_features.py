"""ML feature vectors against a batch computation on real bars, with gaps, quotes and quarantine flags."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from headrace.errors import ConfigError, InvariantError
from headrace.events import Bar
from helpers import ROOT
from operators.features.ml_features import MlFeatures

FIVE_MIN = 300 * 10**9
ETH = ROOT / "data" / "demo" / "bittrex" / "ETH_BTC-5m.feather"
DROPPED = (100, 101, 102, 400)  # rows taken out: gaps of three bars and of one


def real_bars(rows: int = 600) -> list[Bar]:
    df = pl.read_ipc(ETH).head(rows).with_row_index("i").filter(~pl.col("i").is_in(DROPPED))
    out = []
    for r in df.iter_rows(named=True):
        t = int(r["date"].timestamp() * 1e9)
        out.append(Bar(instrument="bittrex:ETH/BTC", ts_open=t, ts_event=t + FIVE_MIN, open=r["open"], high=r["high"],
                       low=r["low"], close=r["close"], volume=r["volume"], trades=-1))
    return out


def ewm(xs: np.ndarray, alpha: float) -> np.ndarray:
    out, m = np.empty(len(xs)), xs[0]
    for i, x in enumerate(xs):
        m = x if i == 0 else (1 - alpha) * m + alpha * x
        out[i] = m
    return out


def test_features_equal_a_batch_computation_on_real_bars_with_gaps() -> None:
    bars = real_bars()
    f = MlFeatures(horizons=(1, 3, 12), vol_halflife=20.0, z_halflife=30.0, volume_halflife=10.0, min_vol_bars=5)
    vectors = [f.update(b) for b in bars]
    close = np.array([b.close for b in bars])
    volume = np.array([b.volume for b in bars])
    r = np.diff(np.log(close))
    a_vol, a_z, a_v = (1 - 0.5 ** (1 / h) for h in (20.0, 30.0, 10.0))
    var = ewm(r * r, a_vol)
    level = ewm(np.log(close), a_z)
    vol_ewm = ewm(volume, a_v)
    for i, v in enumerate(vectors):
        d = v.as_dict()
        for h in (1, 3, 12):
            if i >= h:
                assert d[f"ret_{h}"] == pytest.approx(math.log(close[i] / close[i - h]), rel=1e-12)
            else:
                assert f"ret_{h}" not in d
        if i >= 1:
            assert d["vol"] == pytest.approx(math.sqrt(var[i - 1]), rel=1e-12)
            assert d["zscore"] == pytest.approx((math.log(close[i]) - level[i]) / math.sqrt(var[i - 1]), rel=1e-9)
            assert d["volume_surprise"] == pytest.approx(math.log(volume[i] / vol_ewm[i - 1]), rel=1e-12)
        assert ("warmup" in v.flags) == (i < 12 or i < 5)


def test_a_missing_bar_flags_the_vectors_whose_horizon_spans_it() -> None:
    bars = real_bars()
    f = MlFeatures(horizons=(1, 6), min_vol_bars=1)
    flagged = {b.ts_event for b in bars if "gap" in f.update(b).flags}
    gaps = [i for i in range(1, len(bars)) if bars[i].ts_event - bars[i - 1].ts_event > FIVE_MIN]
    assert len(gaps) == 2
    expected = {bars[j].ts_event for g in gaps for j in range(g, min(g + 6, len(bars)))}
    assert flagged == expected


def test_a_quarantined_record_invalidates_the_vectors_near_it() -> None:
    bars = real_bars(60)
    f = MlFeatures(horizons=(1, 4), min_vol_bars=1)
    for b in bars[:30]:
        f.update(b)
    f.mark_quarantined(bars[29].ts_event + 60 * 10**9)  # a bad trade inside the next bar
    flags = [f.update(b).flags for b in bars[30:]]
    assert all("quarantine" in fl for fl in flags[:5]) and not any("quarantine" in fl for fl in flags[6:])


def test_quotes_give_spread_and_microprice() -> None:
    f = MlFeatures(horizons=(1,), min_vol_bars=1)
    b = Bar(instrument="x:A/B", ts_open=0, ts_event=1, open=100, high=100, low=100, close=100.0, volume=1.0, trades=1,
            bid=99.0, ask=101.0, bid_size=3.0, ask_size=1.0)
    d = f.update(b).as_dict()
    assert d["spread"] == pytest.approx(0.02)
    assert d["microprice"] == pytest.approx(((99 * 1 + 101 * 3) / 4 - 100) / 100)  # more bid: micro above mid


def test_restore_midway_equals_a_straight_run() -> None:
    bars = real_bars(300)
    straight = MlFeatures(horizons=(1, 5), min_vol_bars=3)
    expected = [straight.update(b) for b in bars]
    f = MlFeatures(horizons=(1, 5), min_vol_bars=3)
    got = [f.update(b) for b in bars[:150]]
    f = MlFeatures.restore(f.snapshot(), horizons=(1, 5), min_vol_bars=3)
    got += [f.update(b) for b in bars[150:]]
    assert got == expected


def test_bad_settings_and_bars_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"ml\.feature_horizons"):
        MlFeatures(horizons=())
    with pytest.raises(ConfigError, match=r"ml\.vol_halflife"):
        MlFeatures(vol_halflife=0)
    f = MlFeatures()
    b = real_bars(2)
    f.update(b[1])
    with pytest.raises(InvariantError, match="not after"):
        f.update(b[0])
