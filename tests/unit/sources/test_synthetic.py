"""The seeded synthetic tick set: exact size, reproducible, correlated assets, a small mean-reverting basis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from sources import synthetic
from sources.formats import read_paths
from sources.replay_plan import ReplayPlan


def mids_per_second(frames: list, instrument: str) -> pl.DataFrame:
    q = next(f.frame for f in frames if f.instrument == instrument and f.kind == "quote")
    return (q.with_columns(((pl.col("bid") + pl.col("ask")) / 2).alias("mid"), (pl.col("ts_event") // 60_000_000_000)
                           .alias("minute"))
            .group_by("minute").agg(pl.col("mid").last()).sort("minute"))


def test_generator_gives_exactly_n_events_and_is_reproducible() -> None:
    a = synthetic.generate(50_001, seed=3)
    b = synthetic.generate(50_001, seed=3)
    c = synthetic.generate(50_001, seed=4)
    assert sum(f.frame.height for f in a) == 50_001
    assert all(x.frame.equals(y.frame) for x, y in zip(a, b, strict=True))
    assert not all(x.frame.equals(y.frame) for x, y in zip(a, c, strict=True))
    assert {f.instrument for f in a} == {f"{v}:{s}/USDT" for v in ("binance", "kraken")
                                         for s in ("BTC", "ETH", "SOL", "XRP", "ADA")}


def test_assets_are_positively_correlated_through_the_market_factor() -> None:
    frames = synthetic.generate(400_000, seed=7)
    rets = []
    for asset in ("BTC", "ETH", "SOL", "XRP", "ADA"):
        m = mids_per_second(frames, f"binance:{asset}/USDT")
        rets.append(np.diff(np.log(m["mid"].to_numpy()))[:1400])
    corr = np.corrcoef(np.array(rets))
    off = corr[~np.eye(5, dtype=bool)]
    assert off.min() > 0.2, corr  # one-factor model: every pair co-moves


def test_venues_quote_the_same_asset_with_a_small_mean_reverting_basis() -> None:
    frames = synthetic.generate(400_000, seed=7)
    a = mids_per_second(frames, "binance:BTC/USDT")
    b = mids_per_second(frames, "kraken:BTC/USDT")
    j = a.join(b, on="minute", suffix="_k")
    basis = np.log(j["mid"].to_numpy() / j["mid_k"].to_numpy())
    assert np.abs(basis).max() < 0.01  # a few bps, never a different price level
    assert basis.std() > 1e-5  # but there is a basis to trade
    assert abs(np.corrcoef(basis[:-60], basis[60:])[0, 1]) < 0.9  # it decays: mean reverting, not a walk


def test_quotes_are_never_crossed_and_trades_sit_at_the_touch() -> None:
    for f in synthetic.generate(20_000, seed=1):
        d = f.frame
        if f.kind == "quote":
            assert (d["bid"] < d["ask"]).all()
        else:
            assert (d["price"] > 0).all() and (d["amount"] > 0).all() and d["side"].is_in([1, -1]).all()
        assert d["ts_event"].is_sorted()


def test_written_files_read_back_into_the_same_replay(tmp_path: Path) -> None:
    frames = synthetic.generate(10_000, seed=2)
    paths = synthetic.write(frames, str(tmp_path))
    assert len(paths) == 20
    back = read_paths([str(tmp_path)])
    plan_a, plan_b = ReplayPlan.build(frames, 1000), ReplayPlan.build(back, 1000)
    assert plan_a.universe == plan_b.universe and plan_a.total_rows == plan_b.total_rows == 10_000
    for j in range(plan_a.n_slices):
        for x, y in zip(plan_a.slice(j), plan_b.slice(j), strict=True):
            for kind in ("trades", "quotes"):
                cx, cy = getattr(x, kind), getattr(y, kind)
                assert (cx is None) == (cy is None)
                if cx is not None:
                    assert np.array_equal(cx.ts_event, cy.ts_event)
                    assert np.allclose(cx.price if kind == "trades" else cx.bid,
                                       cy.price if kind == "trades" else cy.bid, rtol=0, atol=0)
