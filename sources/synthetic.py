"""A seeded synthetic tick set: correlated assets on several venues, with a basis between venues.

For tests and scale benchmarks, never for research conclusions. Fully vectorised (numpy): two million
events take well under a second. The model, on a one-second grid:

- fair log price of each asset = a one-factor random walk: ``beta * market + idiosyncratic`` shocks;
- each venue quotes the fair price times ``exp(basis)``, the basis a mean-reverting AR(1) of a few bps;
- events arrive at random times; each is a trade (at bid or ask, taker side random) or a top-of-book
  quote (spread of 1-3 bps), with log-normal sizes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from sources.formats import ParsedFrame

START_NS = 1_700_000_000 * 10**9
ROW_GROUP_ROWS = 65_536  # rows per Parquet row group: what a reader decodes at a time
BASE_PRICES = {"BTC": 30_000.0, "ETH": 2_000.0, "SOL": 50.0, "XRP": 0.5, "ADA": 0.3}


def generate(n_events: int, *, seed: int = 7, assets: Sequence[str] = ("BTC", "ETH", "SOL", "XRP", "ADA"),
             venues: Sequence[str] = ("binance", "kraken"), quote: str = "USDT", start_ns: int = START_NS,
             span_s: int = 86_400, trade_fraction: float = 0.5) -> list[ParsedFrame]:
    """Return `n_events` trade and quote events in all, as normalised frames (trades, quotes per instrument)."""
    return list(iter_frames(n_events, seed=seed, assets=assets, venues=venues, quote=quote, start_ns=start_ns,
                            span_s=span_s, trade_fraction=trade_fraction))


def iter_frames(n_events: int, *, seed: int = 7, assets: Sequence[str] = ("BTC", "ETH", "SOL", "XRP", "ADA"),
                venues: Sequence[str] = ("binance", "kraken"), quote: str = "USDT", start_ns: int = START_NS,
                span_s: int = 86_400, trade_fraction: float = 0.5) -> Iterator[ParsedFrame]:
    """Yield the frames of `generate` one at a time (the same frames), so a large set can be written to files
    while only one instrument's events are in memory: ``write(iter_frames(32_000_000), out_dir)``."""
    rng = np.random.default_rng(seed)
    n_assets, n_venues = len(assets), len(venues)
    grid = span_s
    sigma_s = 0.6 / np.sqrt(365 * 86_400)  # 60 %/year per second
    market = rng.normal(0.0, sigma_s * 0.8, grid)
    beta = rng.uniform(0.7, 1.3, n_assets)
    idio = rng.normal(0.0, sigma_s * 0.6, (n_assets, grid))
    log_fair = np.cumsum(beta[:, None] * market[None, :] + idio, axis=1)
    log_fair += np.log([BASE_PRICES.get(a, 10.0) for a in assets])[:, None]
    phi, basis_sd = 0.995, 3e-4  # AR(1) per second, stationary std 3 bps
    shocks = rng.normal(0.0, basis_sd * np.sqrt(1 - phi**2), (n_venues, n_assets, grid))
    basis = np.zeros_like(shocks)
    basis[..., 0] = rng.normal(0.0, basis_sd, (n_venues, n_assets))
    for t in range(1, grid):  # 86k steps over a (venues, assets) array: fast enough
        basis[..., t] = phi * basis[..., t - 1] + shocks[..., t]
    n_inst = n_assets * n_venues
    counts = np.full(n_inst, n_events // n_inst)
    counts[: n_events % n_inst] += 1
    k = 0
    for v, venue in enumerate(venues):
        for a, asset in enumerate(assets):
            n = int(counts[k])
            k += 1
            ts = start_ns + np.sort(rng.integers(0, span_s * 10**9, n))
            idx = np.minimum((ts - start_ns) // 10**9, grid - 1)
            mid = np.exp(log_fair[a, idx] + basis[v, a, idx])
            half = rng.uniform(0.5e-4, 1.5e-4, n)
            is_trade = rng.random(n) < trade_fraction
            inst = f"{venue}:{asset}/{quote}"
            side = np.where(rng.random(n) < 0.5, 1, -1).astype(np.int8)
            t_idx = np.flatnonzero(is_trade)
            q_idx = np.flatnonzero(~is_trade)
            trades = pl.DataFrame({
                "ts_event": ts[t_idx], "ts_recv": ts[t_idx],
                "price": mid[t_idx] * (1 + side[t_idx] * half[t_idx]),
                "amount": rng.lognormal(-1.0, 1.0, len(t_idx)), "side": side[t_idx],
            }).with_columns(pl.format("{}-{}", pl.lit(f"{venue}{asset}"), pl.int_range(0, pl.len())).alias("trade_id"))
            quotes = pl.DataFrame({
                "ts_event": ts[q_idx], "ts_recv": ts[q_idx],
                "bid": mid[q_idx] * (1 - half[q_idx]), "ask": mid[q_idx] * (1 + half[q_idx]),
                "bid_size": rng.lognormal(0.0, 1.0, len(q_idx)), "ask_size": rng.lognormal(0.0, 1.0, len(q_idx)),
            })
            for kind, df in (("trade", trades), ("quote", quotes)):
                df = df.with_columns(pl.int_range(0, pl.len(), dtype=pl.Int64).alias("row"),
                                     pl.lit(None, dtype=pl.Utf8).alias("problem"),
                                     pl.lit(None, dtype=pl.Utf8).alias("raw"))
                path = f"synthetic/{venue}/{asset}_{quote}-{kind}s"
                yield ParsedFrame(instrument=inst, kind=kind, timeframe_ns=0, path=path, frame=df)  # type: ignore[arg-type]


def write(frames: Iterable[ParsedFrame], out_dir: str) -> list[str]:
    """Write frames as ``<out_dir>/<venue>/<BASE>_<QUOTE>-trades.parquet`` / ``-quotes.parquet``, one at a time."""
    paths = []
    for f in frames:
        venue, _, symbol = f.instrument.partition(":")
        base, _, quote = symbol.partition("/")
        path = Path(out_dir) / venue / f"{base}_{quote}-{f.kind}s.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        df = f.frame.with_columns(pl.col("ts_event").cast(pl.Datetime("ns", "UTC")).alias("timestamp"))
        if f.kind == "trade":
            df = df.select("timestamp", pl.col("trade_id").alias("id"),
                           pl.col("side").replace_strict({1: "buy", -1: "sell"}, default=None, return_dtype=pl.Utf8),
                           "price", "amount")
        else:
            df = df.select("timestamp", "bid", "ask", "bid_size", "ask_size")
        df.write_parquet(path, row_group_size=ROW_GROUP_ROWS)
        paths.append(str(path))
    return sorted(paths)
