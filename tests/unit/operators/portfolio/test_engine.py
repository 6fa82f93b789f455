"""The portfolio engine on its own: returns from closes, assets joining, each method, failures as data, restore."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from headrace.errors import ConfigError
from headrace.events import Alert, Exposure, Rebalance, RiskShare
from operators.portfolio.engine import EngineSettings, PortfolioEngine, asset_of

H = 3_600 * 10**9
T0 = 1_600_000_000 * 10**9
KEYS = tuple(f"x:{a}/USDT" for a in ("BTC", "ETH", "ADA", "XRP", "DOGE", "LTC"))
TIERS = (("major", ("BTC", "ETH")), ("large", ("ADA", "XRP")))


def settings(method: str = "vol_target", **kw: object) -> EngineSettings:
    base: dict[str, object] = dict(method=method, tiers=TIERS, window_bars=200, min_bars=30, timeframe_ns=H,
                                   rebalance_bars=10, regime=(("warmup_bars", 50), ("min_dwell_bars", 5)))
    base.update(kw)
    return EngineSettings(**base)  # type: ignore[arg-type]


def prices(n: int, seed: int = 3, keys: tuple[str, ...] = KEYS) -> list[dict[str, float]]:
    """Correlated geometric random walks: a common factor plus noise, one close per key per bar."""
    rng = np.random.default_rng(seed)
    market = rng.normal(0, 0.01, n)
    out, level = [], np.full(len(keys), 100.0)
    for t in range(n):
        level = level * np.exp(market[t] * np.linspace(0.6, 1.4, len(keys)) + rng.normal(0, 0.008, len(keys)))
        out.append({k: float(p) for k, p in zip(keys, level)})
    return out


def feed(engine: PortfolioEngine, bars: list[dict[str, float]], start: int = 0) -> list[object]:
    out: list[object] = []
    for t, closes in enumerate(bars, start):
        out += engine.observe(T0 + t * H, {k: (c, k, H) for k, c in closes.items()})
    return out


def decide(engine: PortfolioEngine, t: int, keys: tuple[str, ...] = KEYS) -> tuple[dict[str, float], list[object]]:
    scores = {k: (i - 2.5) / 2.5 for i, k in enumerate(keys)}
    vol = {k: 0.01 for k in keys}
    vt = {k: max(s, 0.0) * 0.1 for k, s in scores.items()}
    w, recs = engine.decide(T0 + t * H, list(keys), scores, vol, vt)
    return w, list(recs)


def test_asset_of_reads_instruments_and_assets() -> None:
    assert asset_of("binance:BTC/USDT:USDT") == "BTC" and asset_of("ETH") == "ETH"


def test_an_unknown_method_is_refused_with_its_key() -> None:
    with pytest.raises(ConfigError, match=r"portfolio\.method"):
        EngineSettings(method="min_variance")


def test_the_covariance_sees_one_bar_returns_and_scales_a_gap() -> None:
    e = PortfolioEngine(settings())
    e.observe(T0, {"x:A/USDT": (100.0, "x:A/USDT", H)})
    e.observe(T0 + H, {"x:A/USDT": (110.0, "x:A/USDT", H)})
    e.observe(T0 + 5 * H, {"x:A/USDT": (121.0, "x:A/USDT", H)})  # four bars later: the return is scaled by 1/2
    est = e.cov.estimate()
    r = [math.log(1.1), math.log(1.1) / 2]
    assert est.mean[0] == pytest.approx(np.mean(r), rel=1e-6)


def test_returns_are_in_units_of_the_finest_bar_not_the_configured_timeframe() -> None:
    e = PortfolioEngine(settings(timeframe_ns=300 * 10**9))  # replay.timeframe 5m, hourly bars
    assert e.timeframe_ns == 300 * 10**9
    feed(e, prices(60))
    assert e.timeframe_ns == H
    _, recs = decide(e, 60)
    [reb] = [r for r in recs if isinstance(r, Rebalance)]
    assert reb.ex_ante_vol_annual == pytest.approx(reb.ex_ante_vol * math.sqrt(365 * 24), rel=1e-9)
    assert PortfolioEngine.restore(e.s, e.snapshot()).timeframe_ns == H


def test_a_price_from_another_instrument_gives_no_return() -> None:
    e = PortfolioEngine(settings())
    e.observe(T0, {"BTC": (100.0, "a:BTC/USDT", H)})
    e.observe(T0 + H, {"BTC": (90.0, "b:BTC/USD", H)})  # the venue changed: no return
    e.observe(T0 + 2 * H, {"BTC": (99.0, "b:BTC/USD", H)})
    assert e.cov.estimate().counts[0, 0] == 1


def test_before_min_bars_there_is_no_risk_model_and_no_alert() -> None:
    e = PortfolioEngine(settings("mean_variance"))
    feed(e, prices(10))
    w, recs = decide(e, 10)
    [reb] = [r for r in recs if isinstance(r, Rebalance)]
    assert reb.status == "no_risk_model" and reb.assets == 0 and set(w.values()) == {0.0}
    assert not [r for r in recs if isinstance(r, Alert)]


def test_an_asset_joins_the_optimiser_once_it_has_min_bars_of_history() -> None:
    e = PortfolioEngine(settings("tier_risk_parity"))
    bars = prices(100)
    for t, closes in enumerate(bars):
        if t < 80:
            closes = {k: c for k, c in closes.items() if k != "x:DOGE/USDT"}  # DOGE lists at bar 80
        e.observe(T0 + t * H, {k: (c, k, H) for k, c in closes.items()})
    w, recs = decide(e, 100)
    [reb] = [r for r in recs if isinstance(r, Rebalance)]
    assert reb.assets == 5 and w["x:DOGE/USDT"] == 0.0
    feed(e, prices(40, seed=9), start=100)
    w, recs = decide(e, 140)
    assert next(r for r in recs if isinstance(r, Rebalance)).assets == 6 and w["x:DOGE/USDT"] > 0


@pytest.mark.parametrize("inside", ["erc", "inverse_vol"])
def test_tier_risk_parity_meets_the_tier_budgets(inside: str) -> None:
    e = PortfolioEngine(settings("tier_risk_parity", inside_tier=inside,
                                 tier_budgets=(("major", 0.5), ("large", 0.3), ("other", 0.2)), max_weight=1.0))
    feed(e, prices(150))
    w, recs = decide(e, 150)
    tiers = {r.name: r for r in recs if isinstance(r, RiskShare) and r.kind == "tier"}
    assert {k: round(v.budget, 6) for k, v in tiers.items()} == {"major": 0.5, "large": 0.3, "other": 0.2}
    for t in tiers.values():
        assert t.share == pytest.approx(t.budget, abs=1e-3)
    assert all(x >= 0 for x in w.values())
    [reb] = [r for r in recs if isinstance(r, Rebalance)]
    assert reb.ex_ante_vol_annual == pytest.approx(0.5, rel=1e-6)  # scaled to the target volatility


def test_mean_variance_keeps_bounds_and_records_exposures() -> None:
    e = PortfolioEngine(settings("mean_variance", factor_bounds=(("market", 0.0, 0.3),), max_weight=0.4, gross=1.0))
    feed(e, prices(150))
    w, recs = decide(e, 150)
    x = np.array(list(w.values()))
    assert x.min() >= -1e-7 and x.max() <= 0.4 + 1e-7 and abs(x).sum() <= 1 + 1e-7
    market = next(r for r in recs if isinstance(r, Exposure) and r.factor == "market")
    assert market.exposure <= 0.3 + 1e-6 and market.upper == 0.3
    assert next(r for r in recs if isinstance(r, Rebalance)).status.startswith("optimal")


def test_the_factor_risk_model_records_market_and_statistical_exposures() -> None:
    e = PortfolioEngine(settings("tier_risk_parity", risk_model="factor", n_statistical=2))
    feed(e, prices(150))
    _, recs = decide(e, 150)
    factors = {r.factor: r.exposure for r in recs if isinstance(r, Exposure)}
    assert set(factors) == {"market", "tier:major", "tier:large", "pc1", "pc2"}
    assert factors["market"] > 0  # a long book of assets that all load on the common factor
    [reb] = [r for r in recs if isinstance(r, Rebalance)]
    assert reb.status == "optimal" and reb.ex_ante_vol_annual == pytest.approx(0.5, rel=1e-6)


def test_an_infeasible_solve_keeps_the_previous_targets_and_raises_an_alert() -> None:
    e = PortfolioEngine(settings("mean_variance", factor_bounds=(("market", 5.0, 6.0),)))  # unreachable with 1x
    feed(e, prices(150))
    w, recs = decide(e, 150)
    [reb] = [r for r in recs if isinstance(r, Rebalance)]
    assert reb.fallback == "previous" and reb.status not in ("optimal", "optimal_inaccurate") and reb.message
    assert set(w.values()) == {0.0}  # no previous targets yet
    [alert] = [r for r in recs if isinstance(r, Alert)]
    assert alert.kind == "solver_fallback" and "mean_variance" in alert.message


def test_correlation_aware_vol_target_halves_two_identical_bets() -> None:
    keys = ("x:A/USDT", "x:B/USDT", "x:C/USDT")
    rng = np.random.default_rng(1)
    e = PortfolioEngine(settings(correlation_aware=True, shrinkage="none"))
    level = np.array([100.0, 100.0, 100.0])
    for t in range(100):
        shock = rng.normal(0, 0.01, 2)
        level = level * np.exp([shock[0], shock[0], shock[1]])  # A and B move as one
        e.observe(T0 + t * H, {k: (float(p), k, H) for k, p in zip(keys, level)})
    w, _ = e.decide(T0 + 100 * H, list(keys), {k: 1.0 for k in keys}, {k: 0.01 for k in keys},
                    {k: 0.2 for k in keys})
    # A and B share one risk: each about halved (C's sample correlation with them is not exactly 0)
    assert w["x:A/USDT"] == pytest.approx(w["x:B/USDT"], rel=1e-9)
    assert w["x:A/USDT"] == pytest.approx(0.1, rel=0.1) and w["x:C/USDT"] == pytest.approx(0.2, rel=0.1)


@pytest.mark.parametrize("method", ["vol_target", "mean_variance", "tier_risk_parity", "regime_tiers"])
@pytest.mark.parametrize("covariance", ["rolling", "ewma"])
def test_restore_midway_equals_a_straight_run(method: str, covariance: str) -> None:
    bars = prices(200, seed=5)
    s = settings(method, covariance=covariance, halflife_bars=50.0)

    def run(cut: int | None) -> list[object]:
        e = PortfolioEngine(s)
        out: list[object] = []
        for t, closes in enumerate(bars):
            if cut is not None and t == cut:
                e = PortfolioEngine.restore(s, e.snapshot())
            out += e.observe(T0 + t * H, {k: (c, k, H) for k, c in closes.items()})
            if t % 10 == 9 and t >= 40:
                w, recs = decide(e, t)
                out += [sorted(w.items()), *recs]
        return out

    straight = run(None)
    assert any(isinstance(r, Rebalance) and r.assets == 6 for r in straight)
    for cut in (45, 131):
        assert run(cut) == straight


def test_solve_time_comes_from_the_clock_given() -> None:
    ticks = iter(range(0, 10**12, 3_000_000))
    e = PortfolioEngine(settings("tier_risk_parity"), clock=lambda: next(ticks))
    feed(e, prices(60))
    _, recs = decide(e, 60)
    [reb] = [r for r in recs if isinstance(r, Rebalance)]
    assert reb.solve_ms == 3.0
    assert dataclasses.replace(reb, solve_ms=0.0) == reb  # a measurement: not part of the row's identity
