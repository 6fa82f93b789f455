"""Builders of small events and chunks for tests (plain functions, no Bytewax)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from headrace.events import Bar, MarketSlice, Provenance, QuoteChunk, TradeChunk

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"  # real data beside the clone; tests that need it skip without it
HOURLY = SHARED_DATA / "universe" / "huobi-pob" / "cryptos_2017to2021_hourly.parquet"  # 82 assets, one close each


def hourly_log_returns() -> tuple[tuple[str, ...], np.ndarray]:
    """The 82-asset hourly universe's assets and log returns (bars x assets, NaN before an asset lists);
    skips the calling test when the shared data is missing."""
    return universe_log_returns(HOURLY)


def universe_log_returns(path: Path) -> tuple[tuple[str, ...], np.ndarray]:
    """A wide price table's assets and log returns (a ``Date`` column and one close per asset; NaN before an
    asset lists); skips the calling test when the file is missing."""
    import polars as pl
    import pytest

    if not path.exists():
        pytest.skip(f"needs the shared data: {path} is missing")
    df = pl.read_parquet(path).sort("Date")
    names = tuple(c for c in df.columns if c != "Date")
    closes = df.select(names).to_numpy().astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return names, np.diff(np.log(closes), axis=0)


def origin(n: int, path: str = "test.csv", start_row: int = 0) -> Provenance:
    return Provenance(files=(path,), file_index=np.zeros(n, np.int32), row=np.arange(start_row, start_row + n))


def trades(instrument: str, ts: list[int], price: list[float], amount: list[float] | None = None,
           ids: list[str] | None = None, start_row: int = 0) -> TradeChunk:
    n = len(ts)
    return TradeChunk(instrument=instrument, ts_event=np.array(ts, np.int64), ts_recv=np.array(ts, np.int64),
                      price=np.array(price, float), amount=np.array(amount or [1.0] * n, float),
                      side=np.ones(n, np.int8), trade_id=None if ids is None else np.array(ids, str),
                      origin=origin(n, start_row=start_row))


def quotes(instrument: str, ts: list[int], bid: list[float], ask: list[float], bid_size: list[float] | None = None,
           ask_size: list[float] | None = None, start_row: int = 0) -> QuoteChunk:
    n = len(ts)
    return QuoteChunk(instrument=instrument, ts_event=np.array(ts, np.int64), ts_recv=np.array(ts, np.int64),
                      bid=np.array(bid, float), ask=np.array(ask, float),
                      bid_size=np.ones(n) if bid_size is None else np.array(bid_size, float),
                      ask_size=np.ones(n) if ask_size is None else np.array(ask_size, float),
                      origin=origin(n, start_row=start_row))


def market_slice(instrument: str, watermark: int, **chunks: object) -> MarketSlice:
    return MarketSlice(instrument=instrument, watermark=watermark, **chunks)  # type: ignore[arg-type]


def bar(instrument: str, ts_open: int, close: float, tf: int = 60, open_: float | None = None,
        bid: float | None = None, ask: float | None = None) -> Bar:
    o = close if open_ is None else open_
    return Bar(instrument=instrument, ts_open=ts_open, ts_event=ts_open + tf, open=o, high=max(o, close),
               low=min(o, close), close=close, volume=1.0, trades=1, bid=bid, ask=ask)


# ---------------------------------------------------------------------------------------------------
# real-data replays for flow, ClickHouse and CLI tests


from headrace.config import Config, load_config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "data" / "demo" / "bittrex"


def small_config(*extra: str) -> Config:
    """The demo's strategy on fewer bars, so short slices of real data trade."""
    return load_config(None, [*SMALL_SETS, *extra])


SMALL_SETS = ("features.momentum_lookback_bars=24", "features.vol_halflife_bars=24.0", "strategy.rebalance_bars=12",
              "replay.chunk_rows=500")


def demo_plan(rows: int = 600, chunk_rows: int = 500):  # type: ignore[no-untyped-def]
    """The first `rows` bars of each of the 10 real Bittrex instruments, as a replay plan."""
    from sources.formats import read_paths
    from sources.replay_plan import ReplayPlan

    frames = read_paths([str(DEMO)])
    cut = [f.__class__(instrument=f.instrument, kind=f.kind, timeframe_ns=f.timeframe_ns, path=f.path,
                       frame=f.frame.head(rows)) for f in frames]
    return ReplayPlan.build(cut, chunk_rows)


# ---------------------------------------------------------------------------------------------------
# Running the real flow in tests: every row it writes collected in memory; a replay that crashes midway.

from datetime import timedelta  # noqa: E402
from typing import Any  # noqa: E402

from bytewax.recovery import RecoveryConfig  # noqa: E402
from bytewax.run import cli_main  # noqa: E402
from bytewax.testing import TestingSink, run_main  # noqa: E402


def flatten(items: list[tuple[str, Any]]) -> list[Any]:
    out: list[Any] = []
    for _, v in items:
        out += v if isinstance(v, list) else [v]
    return out


def by_id(events: list[Any]) -> dict[str, Any]:
    return {e.event_id: e for e in events}


def run_flow(plan: Any, config: Config, *, workers: int = 1, source: Any = None, recovery: Path | None = None,
             got: list[tuple[str, Any]] | None = None) -> list[Any]:
    """Run the trading flow of `plan` (one worker, or `workers` threads), return every row it wrote."""
    from flows.trading import build_flow

    got = [] if got is None else got
    flow = build_flow(plan, config, "test", source=source, sink=TestingSink(got))
    rc = RecoveryConfig(str(recovery)) if recovery else None
    if workers == 1:
        run_main(flow, epoch_interval=timedelta(0), recovery_config=rc)
    else:
        cli_main(flow, workers_per_process=workers, epoch_interval=timedelta(0), recovery_config=rc)
    return flatten(got)


from bytewax.inputs import StatefulSourcePartition  # noqa: E402

from sources.replay import ReplaySource  # noqa: E402


class Crash(Exception):
    pass


class CrashingSource(ReplaySource):
    """Raise after `after` slices: a crash in the middle of a replay."""

    def __init__(self, plan: object, after: int) -> None:
        super().__init__(plan)  # type: ignore[arg-type]
        self.after = after

    def build_part(self, step_id: str, for_part: str, resume_state: object) -> StatefulSourcePartition:  # type: ignore[override]
        part = super().build_part(step_id, for_part, resume_state)  # type: ignore[arg-type]
        inner = part.next_batch
        after = self.after

        def next_batch() -> list[MarketSlice]:
            if part.next >= after:
                raise Crash(f"crash at slice {part.next}")
            return inner()

        part.next_batch = next_batch  # type: ignore[method-assign]
        return part


def models_off() -> Iterator[None]:
    """For a module-scoped autouse fixture: the online models off in every run its tests start (through the
    environment, as an operator would), restored afterwards. For test modules whose subject is not the models:
    it keeps the suite in its time budget; the same guarantees with the models on are tested in
    tests/cli/test_ml_replay.py."""
    import os

    before = os.environ.get("HEADRACE_ML__ENABLED")
    os.environ["HEADRACE_ML__ENABLED"] = "false"
    yield
    if before is None:
        os.environ.pop("HEADRACE_ML__ENABLED", None)
    else:
        os.environ["HEADRACE_ML__ENABLED"] = before
