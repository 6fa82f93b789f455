"""Per-venue rate limits: weighted sliding windows that make requests wait, and backoff after a throttle.

One `RateLimiter` stands for one venue and is shared by everything in a process that talks to it. Each
endpoint class (``public``, ``private``, ``order``) counts against one or more windows (Binance: request
weight 6000 per minute; orders 100 per 10 s and 200,000 per day). `acquire` returns how long the caller
must wait before sending so that the request fits *every* window it counts against, and reserves its
tokens at that time. Windows are sliding (a request sent at ``t`` counts in ``(t - window, t]``), which is
at least as strict as the venues' fixed intervals and decaying counters. A request may take room left
before an earlier reservation (a public request need not queue behind an order waiting for the order
window), but only where it pushes no window over its limit, the windows of later reservations included.

After a 429/418 or ccxt's ``RateLimitExceeded``, `on_throttled` blocks the venue for an exponentially
growing, jittered delay (at least the server's Retry-After); `on_success` ends the streak. The jitter comes
from a counter-based generator (a hash of the seed and the draw number), so it is deterministic for a seed
and its whole state is one integer. Time is always an argument: nothing here reads a clock.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, bisect_right, insort
from collections.abc import Mapping
from dataclasses import dataclass

from headrace.errors import ConfigError
from operators.base import check_version

NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Window:
    """At most `limit` units of cost in any `window_ns` span."""

    limit: int
    window_ns: int


# An endpoint class's cost in each window it counts against: a fixed number, or None for the request's weight.
ClassCost = tuple[tuple[str, int | None], ...]


@dataclass(frozen=True, slots=True)
class VenueLimits:
    """The windows of one venue and, per endpoint class, what a request of that class costs in each."""

    windows: Mapping[str, Window]
    classes: Mapping[str, ClassCost]
    source: str  # where the numbers come from, and which of them are assumptions


_MINUTE, _DAY = 60 * NS_PER_S, 86_400 * NS_PER_S

# Defaults per venue (spot, default account tier). Per-IP and per-account limits are folded into one limiter.
VENUE_LIMITS: Mapping[str, VenueLimits] = {
    # Binance spot: GET /api/v3/exchangeInfo `rateLimits` (REQUEST_WEIGHT 6000 / 1 MINUTE, ORDERS 100 / 10 SECOND,
    # ORDERS 200000 / 1 DAY). An order costs request weight 1 and one order in each ORDERS window.
    "binance": VenueLimits(
        windows={"request_weight": Window(6000, _MINUTE), "orders_10s": Window(100, 10 * NS_PER_S),
                 "orders_1d": Window(200_000, _DAY)},
        classes={"public": (("request_weight", None),), "private": (("request_weight", None),),
                 "order": (("request_weight", None), ("orders_10s", 1), ("orders_1d", 1))},
        source="binance spot exchangeInfo rateLimits; exact"),
    # OKX v5 REST: limits are per endpoint; place/cancel order 60 requests / 2 s (per instrument), market
    # tickers 20 / 2 s. Assumption: one venue-wide order window of 60 / 2 s and 20 / 2 s for everything else.
    "okx": VenueLimits(
        windows={"requests": Window(20, 2 * NS_PER_S), "orders": Window(60, 2 * NS_PER_S)},
        classes={"public": (("requests", None),), "private": (("requests", None),), "order": (("orders", None),)},
        source="okx v5 per-endpoint limits; venue-wide windows are an assumption (conservative)"),
    # Bybit v5: 600 HTTP requests / 5 s per IP. Create order 10 / s per UID for linear (20 / s for spot):
    # assumption: the stricter 10 / s for every order.
    "bybit": VenueLimits(
        windows={"ip": Window(600, 5 * NS_PER_S), "orders": Window(10, NS_PER_S)},
        classes={"public": (("ip", None),), "private": (("ip", None),), "order": (("ip", 1), ("orders", 1))},
        source="bybit v5 rate limit rules; the order window is an assumption (linear default, spot allows 20 / s)"),
    # Kraken spot REST, Starter tier: a call counter of at most 15 that decays by 0.33 / s (public endpoints
    # about 1 / s). Modelled as 15 per 45 s, a sliding window never looser than the decaying counter; the
    # per-pair trading limiter (order-age penalties) is not modelled: assumption.
    "kraken": VenueLimits(
        windows={"public": Window(1, NS_PER_S), "counter": Window(15, 45 * NS_PER_S)},
        classes={"public": (("public", None),), "private": (("counter", None),), "order": (("counter", None),)},
        source="kraken rest api rate limits, starter tier; the sliding-window form is an assumption"),
    # Coinbase Advanced Trade: private endpoints 30 requests / s per user, public 10 / s per IP.
    "coinbase": VenueLimits(
        windows={"public": Window(10, NS_PER_S), "private": Window(30, NS_PER_S)},
        classes={"public": (("public", None),), "private": (("private", None),), "order": (("private", None),)},
        source="coinbase advanced trade rest rate limits"),
}


_END = 2**63  # sorts after any cost in (time, cost) pairs
_INTERVAL_NS = {"SECOND": NS_PER_S, "MINUTE": _MINUTE, "HOUR": 60 * _MINUTE, "DAY": _DAY}


def binance_limits(rate_limits: list[Mapping[str, object]], source: str) -> VenueLimits:
    """Build a Binance venue's limits from the ``rateLimits`` of its exchangeInfo (the venue's own numbers).

    Binance has changed these over time (a 2021 spot snapshot says 1200 weight and 50 orders per 10 s), so a
    live venue should use what it serves; `VENUE_LIMITS["binance"]` is the fallback. ``RAW_REQUESTS`` counts
    every request once.

    >>> lim = binance_limits([{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
    ...                        "limit": 6000}, {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
    ...                        "limit": 100}], source="doc")
    >>> lim.windows["orders_10s"], lim.classes["order"]
    (Window(limit=100, window_ns=10000000000), (('request_weight', None), ('orders_10s', 1)))
    """
    windows: dict[str, Window] = {}
    weight: list[tuple[str, int | None]] = []
    orders: list[tuple[str, int | None]] = []
    for rl in rate_limits:
        kind, interval, num = str(rl["rateLimitType"]), str(rl["interval"]), int(str(rl["intervalNum"]))
        if kind not in ("REQUEST_WEIGHT", "RAW_REQUESTS", "ORDERS"):
            raise ConfigError("rate_limits.binance", f"unknown rateLimitType {kind!r}")
        span = f"{num}{ {'SECOND': 's', 'MINUTE': 'm', 'HOUR': 'h', 'DAY': 'd'}[interval]}"
        name = "request_weight" if (kind, span) == ("REQUEST_WEIGHT", "1m") else f"{kind.lower()}_{span}"
        windows[name] = Window(int(str(rl["limit"])), num * _INTERVAL_NS[interval])
        if kind == "ORDERS":
            orders.append((name, 1))
        else:
            weight.append((name, None if kind == "REQUEST_WEIGHT" else 1))
    requests = tuple(weight)
    return VenueLimits(windows=windows, classes={"public": requests, "private": requests,
                                                 "order": requests + tuple(orders)}, source=source)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with equal jitter: attempt ``n`` waits in ``[d/2, d]``, ``d = min(cap, base * 2**n)``."""

    base_s: float = 1.0
    cap_s: float = 60.0
    seed: int = 0


@dataclass(frozen=True, slots=True)
class RateLimiterSnap:
    version: int
    reservations: tuple[tuple[str, tuple[tuple[int, int], ...]], ...]  # window -> (send time ns, cost)
    last_now_ns: int
    blocked_until_ns: int
    attempts: int  # consecutive throttles since the last success
    throttled_since_ns: int | None
    draws: int  # jitter values drawn so far


def jitter(seed: int, draw: int) -> float:
    """Return a deterministic uniform number in [0, 1) for draw number `draw` of generator `seed`.

    >>> jitter(7, 0) == jitter(7, 0), 0.0 <= jitter(7, 1) < 1.0, jitter(7, 0) != jitter(8, 0)
    (True, True, True)
    """
    digest = hashlib.blake2b(f"{seed}\x1f{draw}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class RateLimiter:
    """Weighted sliding windows of one venue, and its backoff after throttles.

    Examples
    --------
    >>> lim = RateLimiter(VenueLimits(windows={"w": Window(3, 10)}, classes={"any": (("w", None),)}, source="x"))
    >>> [lim.acquire("any", 1, now_ns=0) for _ in range(3)]  # three fit now
    [0, 0, 0]
    >>> lim.acquire("any", 2, now_ns=4)  # waits until the sends at 0 leave the window, at 10
    6
    >>> lim.acquire("any", 1, now_ns=5)  # the window (0, 10] then holds 2 + 1
    5
    """

    def __init__(self, limits: VenueLimits, backoff: Backoff | None = None) -> None:
        for cls, costs in limits.classes.items():
            for name, _ in costs:
                if name not in limits.windows:
                    raise ConfigError(f"rate_limits.{cls}", f"counts against unknown window {name!r}")
        for name, w in limits.windows.items():
            if w.limit <= 0 or w.window_ns <= 0:
                raise ConfigError(f"rate_limits.{name}", f"limit and window must be > 0, were {w!r}")
        self.limits = limits
        self.backoff = backoff or Backoff()
        self._res: dict[str, list[tuple[int, int]]] = {name: [] for name in limits.windows}  # sorted
        self._used: dict[str, int] = dict.fromkeys(limits.windows, 0)
        self._last_now_ns = 0
        self._blocked_until_ns = 0
        self._attempts = 0
        self._throttled_since_ns: int | None = None
        self._draws = 0

    def _now(self, now_ns: int) -> int:
        """Callers may read their clocks out of order: time never goes backwards here."""
        self._last_now_ns = max(self._last_now_ns, now_ns)
        return self._last_now_ns

    def _prune(self, now: int) -> None:
        for name, q in self._res.items():
            k = bisect_right(q, (now - self.limits.windows[name].window_ns, _END))  # no send time >= now sees these
            if k:
                self._used[name] -= sum(c for _, c in q[:k])
                del q[:k]

    def _sum(self, name: str, lo: int, hi: int) -> int:
        """Cost reserved in (lo, hi] of window `name`, summing whichever side of the range is shorter."""
        q = self._res[name]
        i, j = bisect_right(q, (lo, _END)), bisect_right(q, (hi, _END))
        if j - i <= i + len(q) - j:
            return sum(c for _, c in q[i:j])
        return self._used[name] - sum(c for _, c in q[:i]) - sum(c for _, c in q[j:])

    def _fits(self, name: str, cost: int, t: int) -> bool:
        """Whether `cost` sent at `t` keeps window `name` within its limit, at `t` and at every later send."""
        w, q = self.limits.windows[name], self._res[name]
        if self._sum(name, t - w.window_ns, t) + cost > w.limit:
            return False
        later = q[bisect_right(q, (t, _END)):bisect_left(q, (t + w.window_ns, -1))]
        return all(self._sum(name, ts - w.window_ns, ts) + cost <= w.limit for ts, _ in later)

    def _earliest(self, name: str, cost: int, start: int) -> int:
        """Earliest time >= `start` at which `cost` fits window `name`: `start`, or when a reservation leaves it."""
        if self._fits(name, cost, start):
            return start
        w, q = self.limits.windows[name], self._res[name]
        for ts, _ in q[bisect_right(q, (start - w.window_ns, _END)):]:  # room only appears as reservations leave
            if self._fits(name, cost, ts + w.window_ns):
                return ts + w.window_ns
        return max(start, q[-1][0] + w.window_ns)  # unreachable once cost <= limit: an empty window fits

    def acquire(self, endpoint_class: str, weight: int, now_ns: int) -> int:
        """Reserve a request of `endpoint_class` with `weight`; return ns to wait before sending (0: now)."""
        now = self._now(now_ns)
        costs = [(name, weight if fixed is None else fixed) for name, fixed in self.limits.classes[endpoint_class]]
        for name, cost in costs:
            if not 0 <= cost <= self.limits.windows[name].limit:
                raise ValueError(f"a {endpoint_class!r} request costs {cost!r} in window {name!r}, which allows "
                                 f"{self.limits.windows[name].limit!r}: it can never be sent")
        self._prune(now)
        t = max(now, self._blocked_until_ns)
        while True:  # the earliest time every window allows: no window allows anything between t and its answer
            later = max((self._earliest(name, cost, t) for name, cost in costs), default=t)
            if later == t:
                break
            t = later
        for name, cost in costs:
            if cost:
                insort(self._res[name], (t, cost))
                self._used[name] += cost
        return t - now_ns  # from the caller's own reading, even if an earlier one was later

    def on_throttled(self, now_ns: int, retry_after_s: float | None = None) -> int:
        """Record a 429/418/RateLimitExceeded; block the venue and return ns to wait before the next request.

        The wait is the jittered exponential backoff, and never less than `retry_after_s` when the venue gave one.
        """
        now = self._now(now_ns)
        b = self.backoff
        full = min(b.cap_s, b.base_s * 2.0 ** min(self._attempts, 62))
        wait_ns = int(full * (0.5 + 0.5 * jitter(b.seed, self._draws)) * NS_PER_S)
        self._draws += 1
        self._attempts += 1
        if retry_after_s is not None:
            wait_ns = max(wait_ns, int(retry_after_s * NS_PER_S))
        if self._throttled_since_ns is None:
            self._throttled_since_ns = now
        self._blocked_until_ns = max(self._blocked_until_ns, now + wait_ns)
        return self._blocked_until_ns - now_ns

    def on_success(self, now_ns: int) -> None:
        """A request went through: the throttle streak ends and the backoff starts again from its base."""
        self._now(now_ns)
        self._attempts = 0
        self._throttled_since_ns = None

    def throttled_for(self, now_ns: int) -> int:
        """Return ns since the first throttle of the current streak (0 when not throttled), for an alert."""
        since = self._throttled_since_ns
        return 0 if since is None else max(now_ns, self._last_now_ns) - since

    def snapshot(self) -> RateLimiterSnap:
        return RateLimiterSnap(version=1, reservations=tuple((n, tuple(q)) for n, q in self._res.items()),
                               last_now_ns=self._last_now_ns, blocked_until_ns=self._blocked_until_ns,
                               attempts=self._attempts, throttled_since_ns=self._throttled_since_ns,
                               draws=self._draws)

    @classmethod
    def restore(cls, limits: VenueLimits, snap: RateLimiterSnap, backoff: Backoff | None = None) -> RateLimiter:
        check_version(snap, expected=1)
        core = cls(limits, backoff)
        for name, entries in snap.reservations:
            core._res[name] = list(entries)
            core._used[name] = sum(c for _, c in entries)
        core._last_now_ns, core._blocked_until_ns = snap.last_now_ns, snap.blocked_until_ns
        core._attempts, core._throttled_since_ns, core._draws = snap.attempts, snap.throttled_since_ns, snap.draws
        return core
