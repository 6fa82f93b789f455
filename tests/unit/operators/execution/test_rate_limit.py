"""Rate limits on a fake clock (integers we advance): requests sent when the limiter says never overfill any
sliding window, bursts wait, Retry-After is honoured, backoff grows then resets, jitter is deterministic for a
seed, and a snapshot restored mid-stream changes nothing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.errors import ConfigError
from helpers import SHARED_DATA
from operators.execution.rate_limit import (
    NS_PER_S,
    VENUE_LIMITS,
    Backoff,
    RateLimiter,
    VenueLimits,
    Window,
    binance_limits,
)

# Small windows that overlap the way a venue's do: a weighted one shared by all, a count of orders, a slow one.
SMALL = VenueLimits(
    windows={"weight": Window(10, 100), "orders": Window(3, 40), "slow": Window(5, 1_000)},
    classes={"public": (("weight", None),), "order": (("weight", None), ("orders", 1), ("slow", 1))},
    source="test")

Request = tuple[str, int, int]  # endpoint class, weight, ns since the previous request was asked for
requests = st.lists(st.tuples(st.sampled_from(["public", "order"]), st.integers(0, 10), st.integers(0, 60)),
                    max_size=120)


def send_all(lim: RateLimiter, reqs: list[Request], start: int = 0) -> list[tuple[str, int, int]]:
    """Ask for each request in turn; return (class, weight, send time) with send time = asked + wait."""
    now, sent = start, []
    for cls, weight, gap in reqs:
        now += gap
        sent.append((cls, weight, now + lim.acquire(cls, weight, now)))
    return sent


def max_in_any_window(limits: VenueLimits, sent: list[tuple[str, int, int]], window: str) -> int:
    """The most cost a sliding window (t - w, t] ever holds; the maximum is at some send time."""
    w = limits.windows[window].window_ns
    costs = [(t, weight if fixed is None else fixed) for cls, weight, t in sent
             for name, fixed in limits.classes[cls] if name == window]
    return max((sum(c for ts, c in costs if t - w < ts <= t) for t, _ in costs), default=0)


@settings(max_examples=200, deadline=None)
@given(requests)
def test_requests_sent_when_the_limiter_says_never_overfill_any_window(reqs: list[Request]) -> None:
    sent = send_all(RateLimiter(SMALL), reqs)
    for name, window in SMALL.windows.items():
        assert max_in_any_window(SMALL, sent, name) <= window.limit, name


@settings(max_examples=50, deadline=None)
@given(requests, st.lists(st.tuples(st.integers(0, 200), st.none() | st.floats(0, 1e-7)), max_size=3))
def test_windows_hold_with_throttles_in_between(reqs: list[Request], throttles: list[tuple[int, float | None]]) -> None:
    lim, now, sent = RateLimiter(SMALL, Backoff(base_s=1e-7, cap_s=1e-6)), 0, []
    for i, (cls, weight, gap) in enumerate(reqs):
        now += gap
        for at, retry_after in throttles:
            if at == i:
                lim.on_throttled(now, retry_after)
        sent.append((cls, weight, now + lim.acquire(cls, weight, now)))
    for name, window in SMALL.windows.items():
        assert max_in_any_window(SMALL, sent, name) <= window.limit, name


def test_binance_orders_burst_waits_for_the_10_second_window() -> None:
    lim = RateLimiter(VENUE_LIMITS["binance"])
    assert [lim.acquire("order", 1, now_ns=0) for _ in range(100)] == [0] * 100
    assert lim.acquire("order", 1, now_ns=0) == 10 * NS_PER_S  # the 101st: when the first leaves the window
    assert lim.acquire("public", 20, now_ns=0) == 0  # market data does not queue behind orders


def test_binance_request_weight_waits_for_the_minute() -> None:
    lim = RateLimiter(VENUE_LIMITS["binance"])
    assert lim.acquire("public", 5_990, now_ns=0) == 0
    assert lim.acquire("public", 10, now_ns=NS_PER_S) == 0  # exactly full
    assert lim.acquire("order", 1, now_ns=2 * NS_PER_S) == 58 * NS_PER_S  # until the 5,990 leave at 60 s
    with pytest.raises(ValueError, match="can never be sent"):
        lim.acquire("public", 6_001, now_ns=0)


def test_binance_daily_order_count_waits_for_the_day_after_the_first_order() -> None:
    lim = RateLimiter(VENUE_LIMITS["binance"])
    now = 0
    for _ in range(200_000):  # as fast as the 10-second window allows: 20,000 s, well inside one day
        now += lim.acquire("order", 1, now)
    assert now == 1_999 * 10 * NS_PER_S
    assert lim.acquire("order", 1, now) == 86_400 * NS_PER_S - now  # the first order (at 0) leaves the day


def test_a_caller_whose_clock_reading_is_older_still_waits_until_the_reserved_time() -> None:
    lim = RateLimiter(VenueLimits(windows={"w": Window(1, 10)}, classes={"any": (("w", None),)}, source="test"))
    assert lim.acquire("any", 1, now_ns=100) == 0
    assert lim.acquire("any", 1, now_ns=95) == 15  # read its clock before the first caller: sends at 110


def test_retry_after_is_honoured_and_blocks_every_request() -> None:
    lim = RateLimiter(VENUE_LIMITS["binance"], Backoff(base_s=1.0, cap_s=60.0, seed=1))
    wait = lim.on_throttled(now_ns=5 * NS_PER_S, retry_after_s=30.0)
    assert wait == 30 * NS_PER_S  # the backoff alone would be at most 1 s
    assert lim.acquire("public", 1, now_ns=6 * NS_PER_S) == 29 * NS_PER_S
    assert lim.acquire("order", 1, now_ns=35 * NS_PER_S) == 0


def test_backoff_grows_to_its_cap_then_resets_on_success() -> None:
    b = Backoff(base_s=1.0, cap_s=16.0, seed=3)
    lim, now, waits = RateLimiter(VENUE_LIMITS["okx"], b), 0, []
    for _ in range(8):
        waits.append(lim.on_throttled(now, None))
        now += waits[-1]
    for n, wait in enumerate(waits):  # attempt n waits in [d/2, d], d = min(cap, base * 2**n)
        d = min(16.0, 2.0**n) * NS_PER_S
        assert d / 2 <= wait <= d
    assert waits[:5] == sorted(waits[:5]) and waits[0] < waits[4]
    assert lim.throttled_for(now) == now  # throttled since the first 429, at 0
    lim.on_success(now)
    assert lim.throttled_for(now + 1) == 0
    assert 0.5 * NS_PER_S <= lim.on_throttled(now, None) <= NS_PER_S  # back to the base


def test_throttled_for_grows_while_the_venue_stays_throttled() -> None:
    lim = RateLimiter(VENUE_LIMITS["bybit"])
    assert lim.throttled_for(100) == 0
    lim.on_throttled(10 * NS_PER_S, None)
    lim.on_throttled(12 * NS_PER_S, 1.0)
    assert lim.throttled_for(70 * NS_PER_S) == 60 * NS_PER_S  # past an alert threshold of, say, 30 s


def test_jitter_is_deterministic_for_a_seed_and_differs_between_seeds() -> None:
    def waits(seed: int) -> list[int]:
        lim = RateLimiter(VENUE_LIMITS["kraken"], Backoff(base_s=1.0, cap_s=1.0, seed=seed))
        return [lim.on_throttled(i * 10 * NS_PER_S, None) for i in range(20)]

    assert waits(42) == waits(42)
    assert waits(42) != waits(43)
    assert len(set(waits(42))) > 10  # the cap is reached at once: only the jitter varies


@settings(max_examples=100, deadline=None)
@given(requests, st.integers(0, 120), st.lists(st.integers(0, 119), max_size=4), st.integers(0, 2**32))
def test_snapshot_and_restore_mid_stream_is_invisible(reqs: list[Request], cut: int, throttle_at: list[int],
                                                      seed: int) -> None:
    b = Backoff(base_s=1e-7, cap_s=1e-5, seed=seed)

    def step(lim: RateLimiter, i: int, now: int) -> tuple[int, int, int]:
        cls, weight, _ = reqs[i]
        t = lim.on_throttled(now, None) if i in throttle_at else -1
        if i % 7 == 3:
            lim.on_success(now)
        return t, lim.acquire(cls, weight, now), lim.throttled_for(now)

    whole, resumed = RateLimiter(SMALL, b), RateLimiter(SMALL, b)
    now, a, c = 0, [], []
    for i, (_, _, gap) in enumerate(reqs):
        now += gap
        if i == cut:
            resumed = RateLimiter.restore(SMALL, resumed.snapshot(), b)
        a.append(step(whole, i, now))
        c.append(step(resumed, i, now))
    assert a == c
    assert whole.snapshot() == resumed.snapshot()


def test_an_endpoint_class_naming_an_unknown_window_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown window 'nope'"):
        RateLimiter(VenueLimits(windows={}, classes={"public": (("nope", None),)}, source="test"))


@pytest.mark.parametrize("venue", sorted(VENUE_LIMITS))
def test_every_default_venue_has_the_three_endpoint_classes(venue: str) -> None:
    lim = RateLimiter(VENUE_LIMITS[venue])
    assert {"public", "private", "order"} <= set(lim.limits.classes)
    assert lim.acquire("order", 1, 0) == 0 and lim.acquire("public", 1, 0) == 0


EXCHANGE_INFO = SHARED_DATA / "markets" / "venue-raw" / "binance"


@pytest.mark.skipif(not EXCHANGE_INFO.is_dir(), reason="../shared/data (recorded binance exchangeInfo) is missing")
@pytest.mark.parametrize(("market", "weight", "orders"), [
    ("spot", 1200, {"orders_10s": Window(50, 10 * NS_PER_S), "orders_1d": Window(160_000, 86_400 * NS_PER_S)}),
    ("futures", 6000, {"orders_1m": Window(1200, 60 * NS_PER_S), "orders_10s": Window(300, 10 * NS_PER_S)}),
])
def test_limits_from_recorded_binance_exchange_info(market: str, weight: int, orders: dict[str, Window]) -> None:
    payload = json.loads((EXCHANGE_INFO / f"http_{market}_market_exchange_info.json").read_text())
    lim = binance_limits(payload["rateLimits"], source=f"recorded {market} exchangeInfo")
    assert lim.windows["request_weight"] == Window(weight, 60 * NS_PER_S)
    assert {k: v for k, v in lim.windows.items() if k.startswith("orders")} == orders
    assert {name for name, _ in lim.classes["order"]} >= set(orders)
    limiter = RateLimiter(lim)
    first = orders["orders_10s"].limit
    assert [limiter.acquire("order", 1, 0) for _ in range(first)] == [0] * first
    assert limiter.acquire("order", 1, 0) == 10 * NS_PER_S


def test_binance_default_request_weight_matches_ccxt_cost_model() -> None:
    ccxt = pytest.importorskip("ccxt")
    ex = ccxt.binance()
    api = ex.describe()["api"]
    weight_per_cost = 20 / api["public"]["get"]["exchangeInfo"]["cost"]  # exchangeInfo has request weight 20
    per_minute = 60_000 / ex.rateLimit * weight_per_cost
    assert per_minute == VENUE_LIMITS["binance"].windows["request_weight"].limit
