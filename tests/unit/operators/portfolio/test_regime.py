"""Volatility regime detector: hysteresis, dwell, warm-up, restore, and the May 2021 sell-off in the hourly universe."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.errors import ConfigError, SnapshotVersionError
from headrace.events import RegimeSwitch
from helpers import SHARED_DATA
from operators.covariance.factors import FactorModel
from operators.portfolio.regime import RegimeDetector

HOURLY = SHARED_DATA / "universe" / "huobi-pob" / "cryptos_2017to2021_hourly.parquet"

# fast EWMA that is the last squared return, slow EWMA that stays the first one: ratio = |m| / |m_0|
DIRECT = {"fast_halflife_bars": 1e-3, "slow_halflife_bars": 1e12, "enter_ratio": 2.0, "exit_ratio": 1.2}


def direct(min_dwell_bars: int = 0, warmup_bars: int = 0) -> RegimeDetector:
    return RegimeDetector(**DIRECT, min_dwell_bars=min_dwell_bars, warmup_bars=warmup_bars)  # type: ignore[arg-type]


def feed(d: RegimeDetector, ratios: list[float], t0: int = 0) -> list[RegimeSwitch]:
    out = [d.update(t0 + t, 0.01 * r) for t, r in enumerate(ratios)]
    return [c for c in out if c is not None]


between = st.floats(1.25, 1.95)


@settings(max_examples=50, deadline=None)
@given(wiggle=st.lists(between, min_size=1, max_size=60), wiggle2=st.lists(between, min_size=1, max_size=60))
def test_ratio_oscillating_between_exit_and_enter_does_not_flap(wiggle: list[float], wiggle2: list[float]) -> None:
    d = direct()
    assert feed(d, [1.0, *wiggle]) == [] and d.regime == "calm"
    enter = feed(d, [2.5, *wiggle], t0=100)
    assert [(c.ts_event, c.previous, c.regime) for c in enter] == [(100, "calm", "stressed")]
    assert enter[0].ratio == pytest.approx(2.5) and enter[0].reason.endswith(">= enter_ratio 2")
    leave = feed(d, [1.1, *wiggle2], t0=200)
    assert [(c.ts_event, c.regime) for c in leave] == [(200, "calm")] and "<= exit_ratio 1.2" in leave[0].reason
    assert d.regime == "calm"


def test_no_change_within_dwell_or_warmup_and_missing_returns_change_nothing() -> None:
    d = direct(min_dwell_bars=3, warmup_bars=2)
    assert feed(d, [1.0, 5.0]) == []  # bar 2 is still warm-up
    assert [c.ts_event for c in feed(d, [5.0], t0=2)] == [2]
    assert d.update(3, None) is None and d.update(4, float("nan")) is None  # not bars: dwell does not run
    assert feed(d, [1.0, 1.0], t0=5) == []  # 1 and 2 bars after the change
    assert [(c.ts_event, c.regime) for c in feed(d, [1.0], t0=7)] == [(7, "calm")]  # 3 bars after it
    assert d.snapshot().bars == 6


@pytest.mark.parametrize(("key", "kwargs"), [
    ("fast_halflife_bars", {"fast_halflife_bars": 0.0}),
    ("slow_halflife_bars", {"fast_halflife_bars": 10.0, "slow_halflife_bars": 10.0}),
    ("exit_ratio", {"exit_ratio": 0.0}),
    ("enter_ratio", {"enter_ratio": 1.1, "exit_ratio": 1.1}),
    ("min_dwell_bars", {"min_dwell_bars": -1}),
    ("warmup_bars", {"warmup_bars": -1}),
])
def test_bad_settings_are_refused_naming_the_key(key: str, kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match=f"portfolio.regime_{key}"):
        RegimeDetector(**kwargs)  # type: ignore[arg-type]


ret = st.one_of(st.none(), st.floats(-0.1, 0.1, allow_nan=False, width=64))


@settings(max_examples=50, deadline=None)
@given(rets=st.lists(ret, min_size=1, max_size=80), cut=st.integers(0, 80), dwell=st.integers(0, 5),
       warmup=st.integers(0, 5))
def test_restore_midway_equals_straight_run(rets: list[float | None], cut: int, dwell: int, warmup: int) -> None:
    kw = {"fast_halflife_bars": 2.0, "slow_halflife_bars": 20.0, "enter_ratio": 1.3, "exit_ratio": 0.9,
          "min_dwell_bars": dwell, "warmup_bars": warmup}
    cut = min(cut, len(rets))
    straight = RegimeDetector(**kw)  # type: ignore[arg-type]
    first = RegimeDetector(**kw)  # type: ignore[arg-type]
    want = [straight.update(t, r) for t, r in enumerate(rets)]
    got = [first.update(t, r) for t, r in enumerate(rets[:cut])]
    resumed = RegimeDetector.restore(first.snapshot(), **kw)  # type: ignore[arg-type]
    got += [resumed.update(cut + t, r) for t, r in enumerate(rets[cut:])]
    assert got == want and resumed.snapshot() == straight.snapshot()
    with pytest.raises(SnapshotVersionError):
        RegimeDetector.restore(replace(first.snapshot(), version=0), **kw)  # type: ignore[arg-type]


def test_hourly_universe_may_2021_sell_off_turns_stressed_without_flapping() -> None:
    if not HOURLY.exists():
        pytest.skip(f"needs the shared data: {HOURLY} is missing")
    import polars as pl

    df = pl.read_parquet(HOURLY).sort("Date")
    names = [c for c in df.columns if c != "Date"]
    with np.errstate(divide="ignore", invalid="ignore"):
        rets = np.diff(np.log(df.select(names).to_numpy().astype(np.float64)), axis=0)
    ts = df["Date"].cast(pl.Int64).to_numpy()[1:] * 1000  # microseconds -> nanoseconds
    factors = FactorModel(168.0)
    detector = RegimeDetector()  # the defaults
    changes = []
    for t, row in zip(ts, rets, strict=True):
        m = factors.update({a: float(v) for a, v in zip(names, row, strict=True) if np.isfinite(v)})
        change = detector.update(int(t), m)
        if change is not None:
            changes.append(change)
    when = [(datetime.fromtimestamp(c.ts_event / 1e9, UTC).strftime("%Y-%m-%d %H"), c.regime) for c in changes]
    into_may = [w for w, r in when if r == "stressed" and "2021-05-10" <= w <= "2021-05-25"]
    assert into_may, when
    assert 2 <= len(changes) <= 8, when  # about five months of hours: a handful of changes, no flapping
    assert [c.regime for c in changes] == ["stressed", "calm"] * (len(changes) // 2) + ["stressed"] * (len(changes) % 2)
    for c in changes:
        threshold = 1.5 if c.regime == "stressed" else 1.0
        assert (c.ratio >= threshold) if c.regime == "stressed" else (c.ratio <= threshold)
        assert f"ratio {c.ratio:.3g}" in c.reason and f"{threshold:g}" in c.reason
    assert when == [("2021-02-23 08", "stressed"), ("2021-03-01 11", "calm"), ("2021-04-18 03", "stressed"),
                    ("2021-04-27 16", "calm"), ("2021-05-12 23", "stressed"), ("2021-05-28 03", "calm")]
