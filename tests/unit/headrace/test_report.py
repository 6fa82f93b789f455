"""Run performance figures against a plain loop over the equity curve, and the summary of real runs in chDB."""

from __future__ import annotations

import itertools
import math
import re
import statistics
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from headrace.config import Config, parse_duration
from headrace.events import NS_PER_YEAR
from headrace.report import (
    MAX_GRID_POINTS,
    Performance,
    Summary,
    format_duration,
    max_drawdown,
    performance,
    resample,
    summarize,
)

ROOT = Path(__file__).resolve().parents[3]
MINUTE = 60 * 10**9
DAY = 86_400 * 10**9
YEAR_DAYS = 365


# ---------------------------------------------------------------------------------------------------
# the plain computation: walk the grid one point at a time, nothing vectorised


def loop_drawdown(equity: list[float]) -> float:
    peak, worst = equity[0], 0.0
    for e in equity:
        peak = max(peak, e)
        worst = max(worst, 1 - e / peak)
    return worst


def loop_grid(rows: list[tuple[int, float]], start: int, step: int) -> list[float]:
    """Equity at start, start + step, ... (last row at or before each point), walking both lists."""
    out, i, last = [], 0, rows[0][1]
    t = start
    while t <= rows[-1][0]:
        while i < len(rows) and rows[i][0] <= t:
            last = rows[i][1]
            i += 1
        out.append(last)
        t += step
    return out


def loop_stats(rows: list[tuple[int, float]], start: int, step: int, traded: float) -> dict[str, float | None]:
    grid = loop_grid(rows, start, step)
    rets = [b / a - 1 for a, b in itertools.pairwise(grid)]
    periods_per_year = YEAR_DAYS * 86_400 * 10**9 / step
    out: dict[str, float | None] = {"sharpe": None, "sortino": None, "volatility": None}
    if len(rets) >= 2:
        mean, sd = statistics.fmean(rets), statistics.stdev(rets)
        out["volatility"] = sd * math.sqrt(periods_per_year)
        out["sharpe"] = mean / sd * math.sqrt(periods_per_year) if sd > 0 else None
        downside = math.sqrt(sum(min(r, 0.0) ** 2 for r in rets) / len(rets))
        out["sortino"] = mean / downside * math.sqrt(periods_per_year) if downside > 0 else None
    before = [e for t, e in rows if t <= start]
    raw = [before[-1] if before else rows[0][1]] + [e for t, e in rows if t > start]
    out["max_drawdown"] = loop_drawdown(raw)
    out["turnover"] = traded / statistics.fmean(grid)
    span = rows[-1][0] - start
    out["turnover_per_year"] = out["turnover"] * YEAR_DAYS * DAY / span if span > 0 else None
    out["cagr"] = (raw[-1] / raw[0]) ** (YEAR_DAYS * DAY / span) - 1 if span >= DAY else None
    return out


def median_step_sharpe(equity: np.ndarray, ts: np.ndarray) -> float:
    """The method this replaces: per-row returns annualised by the median step between rows."""
    rets = equity[1:] / equity[:-1] - 1.0
    return float(np.mean(rets) / np.std(rets, ddof=1) * math.sqrt(NS_PER_YEAR / float(np.median(np.diff(ts)))))


def close(a: float | None, b: float | None, rel: float = 1e-9) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


def mixed_clock(seed: int, warmup_rows: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """Equity on 1-minute rows for two days, then 5-minute rows for three (one clock stopped, like the
    cross-venue set), after `warmup_rows` flat 1-minute rows; returns (equity, ts, first decision)."""
    rng = np.random.default_rng(seed)
    first = warmup_rows * MINUTE
    ts = np.concatenate([np.arange(warmup_rows + 2 * 1440) * MINUTE,
                         first + 2 * DAY + np.arange(3 * 288) * 5 * MINUTE])
    rets = np.concatenate([rng.normal(2e-5, 5e-4, 2 * 1440), rng.normal(1e-4, 5e-4 * math.sqrt(5), 3 * 288)])
    equity = np.concatenate([np.ones(warmup_rows), np.cumprod(1 + rets)])
    return equity, ts, first


# ---------------------------------------------------------------------------------------------------
# statistics on a grid


@st.composite
def irregular_curves(draw: st.DrawFn) -> tuple[list[tuple[int, float]], int, int, float]:
    """Rows on 1-minute steps, then 5-minute steps (with gaps), after a flat warm-up; a grid step; traded."""
    fast = draw(st.integers(0, 80))
    slow = draw(st.integers(0, 40))
    warmup = draw(st.integers(0, 20))
    steps = [MINUTE] * (warmup + fast) + [5 * MINUTE * draw(st.integers(1, 3)) for _ in range(slow)]
    ts = list(itertools.accumulate(steps, initial=0))
    moves = draw(st.lists(st.floats(-0.05, 0.05), min_size=len(ts) - warmup, max_size=len(ts) - warmup))
    equity = [1.0] * warmup + list(itertools.accumulate(moves, lambda e, r: e * (1 + r), initial=1.0))[1:]
    rows = list(zip(ts, equity, strict=True))
    step = draw(st.sampled_from([MINUTE, 5 * MINUTE, 7 * MINUTE, 60 * MINUTE]))
    return rows, warmup * MINUTE, step, draw(st.floats(0.0, 50.0))


@given(case=irregular_curves())
def test_statistics_equal_a_plain_loop_over_a_grid_on_an_irregular_clock(
        case: tuple[list[tuple[int, float]], int, int, float]) -> None:
    rows, start, step, traded = case
    equity, ts = np.array([e for _, e in rows]), np.array([t for t, _ in rows], dtype=np.int64)
    got = performance(equity, ts, start=start, interval_ns=step, traded=traded)
    want = loop_stats(rows, start, step, traded)
    assert got.periods == len(loop_grid(rows, start, step)) - 1
    for key, value in want.items():
        assert close(getattr(got, key), value, rel=1e-7), (key, getattr(got, key), value)


def test_on_a_mixed_clock_the_grid_sharpe_is_the_loops_and_the_median_step_method_disagrees() -> None:
    equity, ts, _ = mixed_clock(seed=7)
    rows = list(zip(ts.tolist(), equity.tolist(), strict=True))
    got = performance(equity, ts, start=0, interval_ns=5 * MINUTE)
    want = loop_stats(rows, 0, 5 * MINUTE, 0.0)
    assert got.sharpe is not None and want["sharpe"] is not None
    assert math.isclose(got.sharpe, want["sharpe"], rel_tol=1e-9)
    old = median_step_sharpe(equity, ts)  # 1-minute median: every 5-minute return annualised as a minute's
    assert abs(old - got.sharpe) > 0.2 * abs(got.sharpe), (old, got.sharpe)


def test_the_flat_warm_up_before_the_first_decision_does_not_count() -> None:
    equity, ts, first = mixed_clock(seed=3, warmup_rows=1000)
    bare, bare_ts, _ = mixed_clock(seed=3)
    with_warmup = performance(equity, ts, start=first, interval_ns=5 * MINUTE, traded=3.0)
    without = performance(bare, bare_ts, start=0, interval_ns=5 * MINUTE, traded=3.0)
    assert with_warmup == without  # the same curve shifted in time: exactly the same figures
    counted = performance(equity, ts, start=0, interval_ns=5 * MINUTE, traded=3.0)
    assert counted.sharpe is not None and without.sharpe is not None
    assert abs(counted.sharpe) < abs(without.sharpe) * 0.95  # flat returns dilute the mean and the spread
    assert counted.turnover_per_year is not None and without.turnover_per_year is not None
    assert counted.turnover_per_year < without.turnover_per_year


def test_max_drawdown_sees_a_dip_between_grid_points() -> None:
    equity = np.array([1.0, 1.0, 0.8, 1.0, 1.0, 1.0])
    ts = np.arange(6) * MINUTE
    p = performance(equity, ts, start=0, interval_ns=5 * MINUTE)
    _, grid = resample(equity, ts, 0, 5 * MINUTE)
    assert grid.tolist() == [1.0, 1.0]  # the grid never sees the dip
    assert math.isclose(p.max_drawdown, 0.2)


def test_resample_takes_the_last_equity_at_or_before_each_grid_point() -> None:
    equity = np.array([1.0, 2.0, 3.0, 4.0])
    ts = np.array([0, 60, 120, 420]) * 10**9
    grid, eq = resample(equity, ts, 30 * 10**9, 120 * 10**9)
    assert grid.tolist() == [30 * 10**9, 150 * 10**9, 270 * 10**9, 390 * 10**9]
    assert eq.tolist() == [1.0, 3.0, 3.0, 3.0]  # 420 s is after the last grid point
    assert resample(equity, ts, 500 * 10**9, MINUTE)[0].size == 0  # starts after the last row
    with pytest.raises(ValueError, match="grid step must be > 0"):
        resample(equity, ts, 0, 0)
    with pytest.raises(ValueError, match="points, more than"):
        resample(equity, ts, 0, 420 * 10**9 // MAX_GRID_POINTS // 2)


def test_statistics_are_undefined_without_two_grid_returns_or_variation() -> None:
    ts = np.arange(3) * DAY
    flat = performance(np.array([1.0, 1.0, 1.0]), ts, start=0, interval_ns=DAY)
    assert (flat.sharpe, flat.sortino, flat.volatility, flat.max_drawdown) == (None, None, 0.0, 0.0)
    one = performance(np.array([1.0, 0.5]), ts[:2], start=0, interval_ns=DAY)
    assert (one.sharpe, one.sortino, one.volatility, one.max_drawdown, one.periods) == (None, None, None, 0.5, 1)
    assert performance(np.array([1.0]), ts[:1], start=DAY, interval_ns=DAY).periods == 0


def test_sortino_is_undefined_without_a_losing_step_and_cagr_without_a_day() -> None:
    rising = performance(np.array([1.0, 1.01, 1.03, 1.04]), np.arange(4) * DAY, start=0, interval_ns=DAY)
    assert rising.sharpe is not None and rising.sortino is None
    assert rising.cagr is not None and math.isclose(rising.cagr, 1.04 ** (365 / 3) - 1)
    short = performance(np.array([1.0, 1.01, 1.03, 1.04]), np.arange(4) * MINUTE, start=0, interval_ns=MINUTE)
    assert short.cagr is None and short.sharpe is not None


def test_five_minute_grids_annualise_over_a_24_7_year() -> None:
    rng = np.random.default_rng(1)
    eq = np.cumprod(1 + rng.normal(0.0001, 0.001, 1000))
    p5 = performance(eq, np.arange(1000) * 5 * MINUTE, start=0, interval_ns=5 * MINUTE)
    p1d = performance(eq, np.arange(1000) * DAY, start=0, interval_ns=DAY)
    assert p5.sharpe is not None and p1d.sharpe is not None and p5.volatility and p1d.volatility
    assert math.isclose(p5.sharpe / p1d.sharpe, math.sqrt(288), rel_tol=1e-9)
    assert math.isclose(p5.volatility / p1d.volatility, math.sqrt(288), rel_tol=1e-9)


@given(eq=st.lists(st.floats(0.01, 100.0), min_size=1, max_size=200))
def test_max_drawdown_equals_a_plain_loop(eq: list[float]) -> None:
    assert math.isclose(max_drawdown(np.array(eq)), loop_drawdown(eq), rel_tol=1e-12, abs_tol=1e-12)


@given(n=st.integers(1, 10**6), unit=st.sampled_from(["ns", "us", "ms", "s", "m", "h", "d"]))
def test_format_duration_round_trips_through_parse_duration(n: int, unit: str) -> None:
    ns = parse_duration(f"{n}{unit}")
    assert parse_duration(format_duration(ns)) == ns


def worked_example() -> Performance:
    # docs/metrics.md, "A worked example": keep the two in step
    ts = np.array([0, 1, 2, 3, 5, 10, 15, 20]) * DAY
    equity = np.array([100.0, 100.0, 100.0, 101.0, 103.0, 99.0, 102.0, 104.0])
    return performance(equity, ts, start=2 * DAY, interval_ns=5 * DAY, traded=250.0)


def test_the_worked_example_of_the_metrics_page_gives_its_figures() -> None:
    p = worked_example()
    assert p.sharpe is not None and p.sortino is not None and p.volatility is not None
    assert p.turnover_per_year is not None and p.cagr is not None
    figures = {"sharpe": f"{p.sharpe:.2f}", "sortino": f"{p.sortino:.2f}", "volatility": f"{p.volatility:.1%}",
               "max_drawdown": f"{p.max_drawdown:.2%}", "turnover": f"{p.turnover:.3f}",
               "turnover_per_year": f"{p.turnover_per_year:.1f}", "cagr": f"{p.cagr:.1%}"}
    assert (p.periods, figures) == (3, {"sharpe": "1.54", "sortino": "2.73", "volatility": "34.0%",
                                        "max_drawdown": "3.88%", "turnover": "2.475", "turnover_per_year": "50.2",
                                        "cagr": "121.5%"})
    ts, equity = np.array([0, 1, 2, 3, 5, 10, 15, 20]) * DAY, np.array([100, 100, 100, 101, 103, 99, 102, 104.0])
    assert f"{median_step_sharpe(equity, ts):.2f}" == "3.49"  # what the page says the old method gave
    page = (ROOT / "docs" / "metrics.md").read_text()
    for key, text in [*figures.items(), ("median step", "3.49")]:
        assert re.search(rf"(?<![\d.]){re.escape(text)}(?![\d])", page), f"docs/metrics.md lacks {key} = {text}"


# ---------------------------------------------------------------------------------------------------
# the summary of real runs in an embedded ClickHouse


@pytest.fixture(scope="module")
def store_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Two real replays of the demo data into chDB: "warm" (trades) and "cold" (momentum lookback too long)."""
    from bytewax.testing import run_main

    from flows.trading import build_flow
    from helpers import demo_plan, small_config
    from sinks.clickhouse import Store

    dsn = f"chdb://{tmp_path_factory.mktemp('clickhouse')}"
    Store.connect(dsn).init_schema()
    run_main(build_flow(demo_plan(300), small_config(), "warm", dsn=dsn))
    run_main(build_flow(demo_plan(100), cold_config(), "cold", dsn=dsn))
    Store.connect(dsn).optimize()
    yield dsn


def cold_config() -> Config:
    from helpers import small_config

    return small_config("features.momentum_lookback_bars=150")


def test_a_run_whose_strategy_never_warms_up_says_so_naming_the_keys_and_the_bars(store_dsn: str) -> None:
    from sinks.clickhouse import Store

    s = summarize(Store.connect(store_dsn), "cold", events_in=1000, initial_equity=1.0, wall_s=1.0,
                  config=cold_config())
    assert (s.orders, s.first_decision_ts, s.sharpe, s.max_drawdown, s.turnover) == (0, None, None, 0.0, 0.0)
    [warning] = s.warnings
    assert warning.startswith("the strategy never warmed up: no targets were decided")
    assert "features.momentum_lookback_bars = 150, so 151 bars," in warning
    assert "strategy.min_instruments = 2" in warning
    assert "bittrex:ETH/BTC 100" in warning and warning.count(" 100") == 10  # every instrument had 100 bars


def test_a_warmed_up_run_counts_from_its_first_target_on_the_bar_grid(store_dsn: str) -> None:
    from helpers import small_config
    from sinks.clickhouse import Store

    store = Store.connect(store_dsn)
    s = summarize(store, "warm", events_in=3000, initial_equity=1.0, wall_s=1.0, config=small_config())
    [first] = store.query("SELECT min(toUnixTimestamp64Nano(ts_event)) AS t FROM targets FINAL "
                          "WHERE run_id = 'warm'")
    assert s.first_decision_ts == first["t"] and s.warnings == ()
    assert (s.stats_interval, s.stats_interval_ns) == ("5m", 5 * MINUTE)  # the demo's bars are 5-minute
    rows = store.query("SELECT toUnixTimestamp64Nano(ts_event) AS ts, equity, traded FROM equity FINAL "
                       "WHERE run_id = 'warm' ORDER BY ts_event")
    assert rows[0]["ts"] < first["t"]  # there was a warm-up, and it is left out
    want = loop_stats([(r["ts"], r["equity"]) for r in rows], first["t"], 5 * MINUTE, rows[-1]["traded"])
    for key, value in want.items():
        assert close(getattr(s, key), value, rel=1e-7), (key, getattr(s, key), value)
    hourly = summarize(store, "warm", events_in=3000, initial_equity=1.0, wall_s=1.0,
                       config=small_config('metrics.interval="1h"'))
    assert hourly.stats_interval == "1h" and hourly.sharpe != s.sharpe


def test_a_grid_too_fine_for_the_run_falls_back_to_the_bar_length_and_says_so(store_dsn: str) -> None:
    from helpers import small_config
    from sinks.clickhouse import Store

    store = Store.connect(store_dsn)
    s = summarize(store, "warm", events_in=3000, initial_equity=1.0, wall_s=1.0,
                  config=small_config('metrics.interval="1ns"'))  # 1e13 points over the run
    auto = summarize(store, "warm", events_in=3000, initial_equity=1.0, wall_s=1.0, config=small_config())
    [w] = s.warnings
    assert w.startswith("statistics grid of 1ns not used: a 1ns grid over ")
    assert (s.stats_interval, s.sharpe) == ("5m", auto.sharpe) and s.sharpe is not None


def test_the_summary_names_its_store_without_the_password(store_dsn: str) -> None:
    from sinks.clickhouse import Store

    s = summarize(Store.connect(store_dsn), "warm", events_in=3000, initial_equity=1.0, wall_s=1.0,
                  store="http://bob:s3cret@db.example:8123/headrace")
    assert s.store == "http://bob:***@db.example:8123/headrace"
    assert "s3cret" not in str(s.to_dict())
    plain = summarize(Store.connect(store_dsn), "warm", events_in=3000, initial_equity=1.0, wall_s=1.0,
                      store=store_dsn)
    assert plain.store == store_dsn


def test_unfillable_orders_are_counted_apart_from_fills_once_each(store_dsn: str) -> None:
    from sinks.clickhouse import Store

    store = Store.connect(store_dsn)
    columns = ["run_id", "event_id", "order_id", "account", "instrument", "ts_event", "status", "reason"]
    row = ["statuses", "", "", "main", "bittrex:ETH/BTC", 1_600_000_000 * 10**9, "", ""]
    rows = [[*row[:1], f"e{i}", f"o{i}", *row[3:6], status, reason]
            for i, (status, reason) in enumerate([("expired", "end of data")] * 3 + [("skipped", "instrument stale")])]
    store.insert_rows("order_status", rows, columns)
    store.insert_rows("order_status", rows[:2], columns)  # written twice, as by a resumed run
    s = summarize(store, "statuses", events_in=0, initial_equity=1.0, wall_s=1.0)
    assert (s.orders_expired, s.orders_skipped, s.fills, s.orders) == (3, 1, 0, 0)


@pytest.mark.parametrize(("events_in", "loud"), [(1000, None), (999, False), (19, True)])
def test_a_summary_warns_when_more_than_one_percent_of_the_input_was_quarantined(
        store_dsn: str, events_in: int, loud: bool | None, capsys: pytest.CaptureFixture[str]) -> None:
    from headrace.cli import _print_summary
    from sinks.clickhouse import Store

    store = Store.connect(store_dsn)
    columns = ["run_id", "event_id", "instrument", "ts_event", "ts_recv", "source", "row", "reason", "raw"]
    reasons = ["open outside [low, high]"] * 7 + ["unparseable timestamp"] * 3
    store.insert_rows("quarantine", [["quarantined", f"q{i}", "bittrex:ETH/BTC", 0, 0, "a.csv", i, r, "{}"]
                                     for i, r in enumerate(reasons)], columns)
    s = summarize(store, "quarantined", events_in=events_in, initial_equity=1.0, wall_s=1.0)
    assert s.events_quarantined == 10 and math.isclose(s.quarantined_fraction, 10 / events_in)
    _print_summary(s)
    printed = capsys.readouterr().err
    if loud is None:
        assert s.warnings == () and "warning" not in printed.lower()
        return
    [w] = s.warnings
    assert f"10 of {events_in:,} rows" in w and "7 x open outside [low, high]; 3 x unparseable timestamp" in w
    assert w.startswith("most of the input was quarantined" if loud else "input quarantined")
    assert ("WARNING: 52.6% of the input was quarantined" in printed) is loud
    assert "open outside [low, high]" in printed  # brackets are text, not console markup


def test_the_summary_keeps_every_field_in_its_json_form() -> None:
    s = Summary(run_id="r", events_in=1, events_quarantined=0, bars=1, orders=0, fills=0, fees=0.0,
                initial_equity=1.0, final_equity=1.0, total_return=0.0, sharpe=None, max_drawdown=0.0, turnover=0.0,
                currency="BTC", wall_s=1.0, events_per_s=1.0, warnings=("a",))
    d = s.to_dict()
    assert d["warnings"] == ["a"] and set(d) == set(Summary.__dataclass_fields__)
