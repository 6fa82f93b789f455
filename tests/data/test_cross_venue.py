"""The replay on mixed clocks (Binance.US 1-minute bars beside Kraken 5-minute bars, ../shared/data/cross_venue):
no fill before its order plus latency, instruments whose data stops leave the cross-section, and the result
does not depend on the number of workers or on a crash and resume.

The slice: 2023-03-20 00:00 to 03-22 06:00, where Binance.US ends (03-21 23:59) and Kraken goes on.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from bytewax.recovery import init_db_dir

from headrace.config import Config
from headrace.events import Bar, Fill, InstrumentStatus, Order, OrderStatus, Position, Target
from helpers import SHARED_DATA, CrashingSource, by_id, flatten, run_flow, small_config
from sources.formats import read_paths
from sources.replay_plan import ReplayPlan

pytestmark = pytest.mark.skipif(not SHARED_DATA.exists(), reason="needs ../shared/data beside the repo")

CROSS = SHARED_DATA / "cross_venue"
FILES = [CROSS / "binanceus", CROSS / "kraken" / "XBTUSD_5.csv.gz", CROSS / "kraken" / "XBTUSDT_5.csv.gz",
         CROSS / "kraken" / "XBTUSDC_5.csv.gz"]  # XBTUSDC_1 is the same instrument on 1-minute bars: left out
START, END = datetime(2023, 3, 20, tzinfo=UTC), datetime(2023, 3, 22, 6, tzinfo=UTC)
BINANCE_LAST_CLOSE = datetime(2023, 3, 22, tzinfo=UTC)
NS = 10**9
USD = ('account.currency="USD"', "account.fx_rates={USDT=1.0, USDC=1.0}")


def ns(t: datetime) -> int:
    return int(t.timestamp()) * NS


@pytest.fixture(scope="module")
def plan() -> ReplayPlan:
    frames = read_paths([str(p) for p in FILES])
    cut = [dataclasses.replace(f, frame=f.frame.filter(pl.col("ts_open").is_between(ns(START), ns(END),
                                                                                   closed="left")))
           for f in frames]
    return ReplayPlan.build(cut, 500)


def config(*extra: str) -> Config:
    return small_config(*USD, *extra)


def of(kind: type, events: list[Any]) -> list[Any]:
    return sorted((e for e in events if isinstance(e, kind)), key=lambda e: (e.ts_event, e.event_id))


@pytest.fixture(scope="module")
def straight(plan: ReplayPlan) -> list[Any]:
    """One uninterrupted run, one worker, account.latency = 0s (fill at the first open at or after the order)."""
    return run_flow(plan, config())


def check_fills_never_precede_their_orders(events: list[Any], latency_ns: int) -> list[tuple[Order, Fill]]:
    orders = {o.order_id: o for o in of(Order, events)}
    opens = {(b.instrument, b.ts_open) for b in of(Bar, events)}
    pairs = []
    for f in of(Fill, events):
        o = orders[f.order_id]
        due = o.ts_event + latency_ns
        assert f.ts_event >= due, f"{f.instrument} filled at {f.ts_event}, before its order at {o.ts_event} + latency"
        assert f.ts_event == min(t for i, t in opens if i == f.instrument and t >= due)  # and at the first such open
        pairs.append((o, f))
    return pairs


def test_on_mixed_clocks_every_fill_uses_the_first_bar_opening_at_or_after_its_order(straight: list[Any]) -> None:
    pairs = check_fills_never_precede_their_orders(straight, 0)
    kraken = [(o, f) for o, f in pairs if f.instrument.startswith("kraken:")]
    # the case that went wrong: a 5-minute instrument ordered between its bar boundaries
    between = [(o, f) for o, f in kraken if o.ts_event % (300 * NS) != 0]
    assert between and all(f.ts_event > o.ts_event for o, f in between)
    assert any(f.instrument.startswith("binanceus:") for _, f in pairs)


def test_with_a_latency_fills_wait_for_it_on_every_clock(plan: ReplayPlan) -> None:
    events = run_flow(plan, config("account.latency=\"90s\""))
    pairs = check_fills_never_precede_their_orders(events, 90 * NS)
    assert len({f.instrument.split(":")[0] for _, f in pairs}) == 2


def test_when_binance_data_ends_its_instruments_go_stale_and_are_no_longer_traded(straight: list[Any]) -> None:
    statuses = of(InstrumentStatus, straight)
    binance = sorted(i for i in {b.instrument for b in of(Bar, straight)} if i.startswith("binanceus:"))
    assert sorted((s.instrument, s.status) for s in statuses) == [(i, "stale") for i in binance]
    stale_at = statuses[0].ts_event
    assert {s.ts_event for s in statuses} == {stale_at} and {s.last_bar_ts for s in statuses} == {
        ns(BINANCE_LAST_CLOSE)}
    assert ns(BINANCE_LAST_CLOSE) + 3600 * NS < stale_at <= ns(BINANCE_LAST_CLOSE) + 3900 * NS  # 1 h, next 5m bar
    later_targets = [t for t in of(Target, straight) if t.ts_event >= stale_at]
    assert later_targets and {t.instrument.split(":")[0] for t in later_targets} == {"kraken"}
    assert not [o for o in of(Order, straight) if o.ts_event >= stale_at and o.instrument.startswith("binanceus:")]
    held = [p for p in of(Position, straight) if p.ts_event >= stale_at and p.instrument.startswith("binanceus:")]
    assert held and all(p.stale and p.mark_ts == ns(BINANCE_LAST_CLOSE) for p in held)
    # every order ends: filled, or expired or skipped with a reason
    ended = {f.order_id for f in of(Fill, straight)} | {s.order_id for s in of(OrderStatus, straight)}
    assert ended == {o.order_id for o in of(Order, straight)}


def test_cross_venue_replay_gives_the_same_result_with_two_workers(plan: ReplayPlan, straight: list[Any]) -> None:
    two = run_flow(plan, config(), workers=2)
    assert of(Fill, two) == of(Fill, straight) and of(Fill, two)
    assert by_id(two) == by_id(straight)




def test_cross_venue_replay_resumed_after_a_crash_equals_an_uninterrupted_run(plan: ReplayPlan, straight: list[Any],
                                                                               tmp_path: Path) -> None:
    crash_at = plan.n_slices * 2 // 3  # after some Kraken orders fill on 5-minute bars
    init_db_dir(tmp_path, 1)
    before: list[tuple[str, Any]] = []
    with pytest.raises(Exception) as info:
        run_flow(plan, config(), source=CrashingSource(plan, crash_at), recovery=tmp_path, got=before)
    assert "crash at slice" in str(info.value.__cause__ or info.value)
    after = run_flow(plan, config(), recovery=tmp_path)
    assert len(of(Bar, after)) < len(of(Bar, straight)) / 2  # it resumed, it did not start over
    first, second = by_id(flatten(before)), by_id(after)
    assert all(first[k] == second[k] for k in set(first) & set(second))
    assert {**first, **second} == by_id(straight)
