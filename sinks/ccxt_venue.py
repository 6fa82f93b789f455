"""`CcxtVenue`: the `Venue` interface over ccxt's synchronous REST client (binance, okx, bybit, kraken, coinbase).

Every request first waits on the venue's `RateLimiter` (one per venue and process: `shared_rate_limiter`), so
requests wait instead of drawing 429s. A throttle (429, 418, ``RateLimitExceeded``/``DDoSProtection``) blocks
the venue for a jittered backoff of at least the server's Retry-After; a venue throttled for longer than
`throttle_alert_s` adds a `Throttled` alert to `venue.alerts`. Errors follow the order lifecycle's
classification (`operators.execution.order_lifecycle.next_action`):

- retryable (network errors, timeouts of a lookup, maintenance): bounded retries after a backoff;
- final (``InvalidOrder``, ``InsufficientFunds``, ``AuthenticationError``...): a ``rejected`` `VenueOrder` with
  the reason, never retried;
- unknown outcome (a submission that timed out, a duplicate client id): the order is looked up by its client
  id first, and sent again (with the same id) only when the venue says it does not exist.

Credentials are never logged: ccxt's own debug log (URLs with signatures, headers with the key) goes through a
redacting filter, and error texts lose their query strings and any credential before they are kept.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import ccxt

from headrace.errors import ConfigError, HeadraceError
from operators.execution.markets import Market, Skipped, check_order
from operators.execution.order_lifecycle import CLIENT_ID_RULES, OrderState, next_action
from operators.execution.rate_limit import NS_PER_S, VENUE_LIMITS, Backoff, RateLimiter, jitter
from operators.execution.venue import (
    Credentials,
    OrderRequest,
    VenueBalance,
    VenueFill,
    VenueOrder,
    VenuePosition,
)
from sources.market_metadata import MODES, VenueMarkets, ccxt_exchange, venue_markets

log = logging.getLogger("headrace.venue")

# --------------------------------------------------------------------------------------------------------------
# One rate limiter per venue and process

_LIMITERS: dict[str, RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def shared_rate_limiter(venue: str) -> RateLimiter:
    """Return the process's one `RateLimiter` of `venue` (created from `VENUE_LIMITS` on first use)."""
    with _LIMITERS_LOCK:
        lim = _LIMITERS.get(venue)
        if lim is None:
            base = venue if venue in VENUE_LIMITS else venue.removesuffix("us").removesuffix("usdm")
            if base not in VENUE_LIMITS:
                raise ConfigError(f"rate_limits.{venue}", f"no rate limits known; known: {', '.join(VENUE_LIMITS)}")
            lim = _LIMITERS[venue] = RateLimiter(VENUE_LIMITS[base])
        return lim


# --------------------------------------------------------------------------------------------------------------
# Alerts and errors


@dataclass(frozen=True, slots=True)
class Throttled:
    """Alert: `venue` has been throttled since `since_ns` (epoch ns) for `seconds`."""

    venue: str
    since_ns: int
    seconds: float


class VenueUnavailable(HeadraceError):
    """A venue call failed after its bounded retries (the last error is named, without credentials)."""


# --------------------------------------------------------------------------------------------------------------
# Redaction

_SIGNATURE = re.compile(r"(signature|sign|apiKey|api_key|X-MBX-APIKEY)([=:]\s*'?)[^&\s',}]+", re.IGNORECASE)
_QUERY = re.compile(r"(https?://[^\s?'\"]+)\?[^\s'\"]*")


class _Redactor(logging.Filter):
    """Rewrites a log record so that no registered credential, signature or signed query string remains."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def redact(self, text: str) -> str:
        text = _QUERY.sub(r"\1?<query hidden>", text)
        text = _SIGNATURE.sub(r"\1\2***", text)
        for s in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(s, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = None
        return True


_REDACTOR = _Redactor()
for _name in ("ccxt", "ccxt.base.exchange", "urllib3.connectionpool", log.name):  # urllib3 logs signed URLs
    logging.getLogger(_name).addFilter(_REDACTOR)


def redact(text: str) -> str:
    """Return `text` without credentials of any venue built in this process, signatures or query strings.

    >>> redact("binance GET https://api.binance.com/api/v3/order?symbol=BTCUSDT&signature=abc123")
    'binance GET https://api.binance.com/api/v3/order?<query hidden>'
    """
    return _REDACTOR.redact(text)


# --------------------------------------------------------------------------------------------------------------
# Request weights (Binance spot's documented weights; other venues count every request once)

_BINANCE_WEIGHTS: Mapping[str, int] = {
    "load_markets": 20, "create_order": 1, "cancel_order": 1, "fetch_order": 4, "fetch_open_orders": 6,
    "fetch_open_orders_all": 80, "fetch_balance": 20, "fetch_my_trades": 20, "fetch_positions": 5,
}
_CLASSES: Mapping[str, str] = {"load_markets": "public", "create_order": "order"}

# The parameter a venue's fetchOrder takes a client order id in.
_LOOKUP_PARAM: Mapping[str, str] = {"binance": "origClientOrderId", "binanceus": "origClientOrderId",
                                    "binanceusdm": "origClientOrderId", "okx": "clOrdId", "bybit": "orderLinkId"}

_THROTTLES = (ccxt.RateLimitExceeded, ccxt.DDoSProtection)


def _duplicate(exc: BaseException) -> bool:
    return isinstance(exc, ccxt.DuplicateOrderId) or "duplicate order" in str(exc).lower()


def _ns(ms: Any) -> int | None:
    return None if ms is None else int(ms) * 1_000_000


def _f(x: Any, default: float = 0.0) -> float:
    return default if x is None else float(x)


def order_status(o: Mapping[str, Any]) -> OrderState:
    """Map a ccxt order's status (and fill) onto the lifecycle's states.

    >>> order_status({"status": "open", "filled": 0.0}), order_status({"status": "open", "filled": 0.5})
    ('accepted', 'partially_filled')
    >>> order_status({"status": "closed"}), order_status({"status": "canceled"}), order_status({"status": None})
    ('filled', 'cancelled', 'accepted')
    """
    status, filled = o.get("status"), _f(o.get("filled"))
    if status == "open" or status is None:
        return "partially_filled" if filled > 0 else "accepted"
    states: dict[str, OrderState] = {"closed": "filled", "canceled": "cancelled", "cancelled": "cancelled",
                                     "expired": "expired", "rejected": "rejected"}
    return states.get(str(status), "accepted")


def parse_order(venue: str, o: Mapping[str, Any], client_id: str | None = None) -> VenueOrder:
    """Turn a ccxt unified order into a `VenueOrder` (`client_id` when the venue does not echo it)."""
    return VenueOrder(client_id=o.get("clientOrderId") or client_id or "", venue_id=o.get("id"),
                      instrument=f"{venue}:{o['symbol']}", side=str(o.get("side") or ""), amount=_f(o.get("amount")),
                      price=None if o.get("price") is None else float(o["price"]), filled=_f(o.get("filled")),
                      average=None if o.get("average") is None else float(o["average"]), status=order_status(o),
                      ts=_ns(o.get("lastUpdateTimestamp") or o.get("timestamp")))


def parse_balances(venue: str, b: Mapping[str, Any]) -> list[VenueBalance]:
    """Turn a ccxt unified balance into one `VenueBalance` per currency, sorted by currency."""
    total, free, used = b.get("total") or {}, b.get("free") or {}, b.get("used") or {}
    return [VenueBalance(venue=venue, currency=c, free=_f(free.get(c)), used=_f(used.get(c)), total=_f(total.get(c)))
            for c in sorted(total)]


def parse_fill(venue: str, t: Mapping[str, Any]) -> VenueFill:
    """Turn a ccxt unified trade of the account into a `VenueFill`."""
    fee = t.get("fee") or {}
    return VenueFill(fill_id=str(t["id"]), client_id=t.get("clientOrderId"), venue_order_id=t.get("order"),
                     instrument=f"{venue}:{t['symbol']}", side=str(t.get("side") or ""), price=_f(t.get("price")),
                     amount=_f(t.get("amount")), fee=_f(fee.get("cost")), fee_currency=fee.get("currency"),
                     ts=_ns(t.get("timestamp")) or 0)


def parse_position(venue: str, p: Mapping[str, Any]) -> VenuePosition:
    """Turn a ccxt unified position into a `VenuePosition` (short positions negative)."""
    contracts = _f(p.get("contracts"))
    return VenuePosition(venue=venue, instrument=f"{venue}:{p['symbol']}",
                         contracts=-contracts if p.get("side") == "short" else contracts,
                         contract_size=_f(p.get("contractSize"), 1.0),
                         entry_price=None if p.get("entryPrice") is None else float(p["entryPrice"]),
                         unrealized_pnl=None if p.get("unrealizedPnl") is None else float(p["unrealizedPnl"]),
                         ts=_ns(p.get("timestamp")))


def _retry_after(headers: Any) -> float | None:
    if not headers:
        return None
    for k, v in dict(headers).items():
        if str(k).lower() == "retry-after":
            try:
                return float(v)
            except (TypeError, ValueError):
                return None
    return None


class CcxtVenue:
    """A venue reached through ccxt's synchronous REST client.

    Parameters
    ----------
    name
        ccxt exchange id (``binance``, ``okx``, ``bybit``, ``kraken``, ``coinbase``...).
    credentials
        API key and secret; None for public calls only.
    clock, sleep
        Epoch-ns clock and sleep (seconds) used for rate limits and backoff; injectable for tests.
    rate_limiter
        Defaults to the process's shared limiter of the venue (`shared_rate_limiter`).
    sandbox
        The venue's testnet (ccxt's ``set_sandbox_mode(True)``).
    urls
        Overrides of ``exchange.urls['api']`` entries (a local stand-in in tests), applied after sandbox mode.
    markets
        Offline market metadata; without it `markets()` loads them from the venue.
    """

    def __init__(self, name: str, credentials: Credentials | None = None, *, clock: Callable[[], int] = time.time_ns,
                 sleep: Callable[[float], None] = time.sleep, rate_limiter: RateLimiter | None = None,
                 sandbox: bool = False, urls: Mapping[str, str] | None = None, timeout_ms: int = 10_000,
                 max_attempts: int = 5, backoff: Backoff | None = None, throttle_alert_s: float = 60.0,
                 markets: VenueMarkets | None = None, derivatives: bool = False,
                 options: Mapping[str, Any] | None = None) -> None:
        if not hasattr(ccxt, name):
            raise ConfigError(f"venues.{name}", "not a ccxt exchange id")
        self.name = name
        self._credentials = credentials
        self.clock, self.sleep = clock, sleep
        self.limiter = rate_limiter or shared_rate_limiter(name)
        self.max_attempts, self.backoff, self.throttle_alert_s = max_attempts, backoff or Backoff(), throttle_alert_s
        self.derivatives = derivatives
        self.alerts: list[Throttled] = []
        self._draws = 0
        self._alerted_since: int | None = None
        if credentials is not None:
            _REDACTOR.secrets.update(credentials.secrets())
        config: dict[str, Any] = {"enableRateLimit": False, "timeout": timeout_ms}  # our limiter waits instead
        if credentials is not None:
            config |= {"apiKey": credentials.api_key, "secret": credentials.secret}
            if credentials.password:
                config["password"] = credentials.password
        if markets is not None:
            ex = ccxt_exchange(markets)
            for k, v in config.items():
                setattr(ex, k, v)
        else:
            ex = getattr(ccxt, name)(config)
        if name.startswith("binance"):  # spot markets only; currencies and margin pairs need sapi (not on testnet)
            ex.options["fetchCurrencies"] = False
            ex.options["fetchMargins"] = False
            ex.options.setdefault("fetchOpenOrders", {})["warnWithoutSymbol"] = False  # weighted 80 by our limiter
            ex.options.setdefault("fetchMarkets", {})["types"] = ["linear"] if derivatives else ["spot"]
        ex.options.update(options or {})
        if sandbox:
            ex.set_sandbox_mode(True)
        for key, url in (urls or {}).items():
            ex.urls["api"][key] = url
        self.exchange = ex
        self._markets: dict[str, Market] | None = markets.markets if markets is not None else None
        self.markets_source = markets.source if markets is not None else None

    def __repr__(self) -> str:
        return f"CcxtVenue({self.name!r}, credentials={self._credentials!r})"

    # ---------------------------------------------------------------------------------------------------------
    # Calls through the limiter

    def _weight(self, method: str) -> int:
        return _BINANCE_WEIGHTS.get(method, 1) if self.name.startswith("binance") else 1

    def _backoff_s(self, attempt: int) -> float:
        full = min(self.backoff.cap_s, self.backoff.base_s * 2.0 ** min(attempt, 62))
        self._draws += 1
        return full * (0.5 + 0.5 * jitter(self.backoff.seed, self._draws - 1))

    def _wait(self, ns: int) -> None:
        if ns > 0:
            self.sleep(ns / NS_PER_S)

    def _send(self, method: str, *args: Any, weight_key: str | None = None) -> Any:
        """Call ccxt's `method` once it fits the rate limits; wait out throttles (bounded), raise anything else."""
        fn = getattr(self.exchange, method)
        for _ in range(self.max_attempts):
            self._wait(self.limiter.acquire(_CLASSES.get(method, "private"), self._weight(weight_key or method),
                                            self.clock()))
            self.exchange.last_response_headers = None
            try:
                result = fn(*args)
            except _THROTTLES as exc:
                now = self.clock()
                wait = self.limiter.on_throttled(now, _retry_after(self.exchange.last_response_headers))
                since = now - self.limiter.throttled_for(now)
                throttled_s = (now + wait - since) / NS_PER_S  # throttled until the venue may be asked again
                log.warning("%s %s throttled (%s); waiting %.3f s", self.name, method, type(exc).__name__,
                            wait / NS_PER_S)
                if throttled_s >= self.throttle_alert_s and self._alerted_since != since:  # one alert a streak
                    self._alerted_since = since
                    self.alerts.append(Throttled(self.name, since, throttled_s))
                self._wait(wait)
                last: BaseException = exc
                continue
            self.limiter.on_success(self.clock())
            return result
        raise VenueUnavailable(f"{self.name} {method}: still throttled after {self.max_attempts} attempts: "
                               f"{redact(str(last))}")

    def _call(self, method: str, *args: Any, weight_key: str | None = None) -> Any:
        """`_send` with bounded retries of retryable errors (for calls that are safe to repeat)."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                return self._send(method, *args, weight_key=weight_key)
            except ccxt.BaseError as exc:
                action = next_action(exc, attempt, max_attempts=self.max_attempts, on_submit=False)
                if action != "retry":
                    raise
                log.info("%s %s failed (%s), retry %d", self.name, method, type(exc).__name__, attempt)
                self.sleep(self._backoff_s(attempt - 1))
        raise AssertionError("unreachable")  # pragma: no cover

    # ---------------------------------------------------------------------------------------------------------
    # The Venue interface

    def markets(self) -> Mapping[str, Market]:
        """Return the markets by ccxt symbol: the offline ones given, else loaded from the venue once."""
        if self._markets is None:
            raw = self._call("load_markets")
            mode = MODES[self.exchange.precisionMode]
            vm = venue_markets(self.name, dict(raw), source="venue", mode=mode)
            self._markets, self.markets_source = vm.markets, vm.source
        return self._markets

    def _symbol(self, instrument: str) -> str:
        venue, _, symbol = instrument.partition(":")
        if venue != self.name or not symbol:
            raise ValueError(f"instrument {instrument!r} is not on venue {self.name!r}")
        return symbol

    def _rejected(self, order: OrderRequest, reason: str, venue_id: str | None = None) -> VenueOrder:
        return VenueOrder(client_id=order.client_id, venue_id=venue_id, instrument=order.instrument, side=order.side,
                          amount=order.amount, price=order.price, filled=0.0, average=None, status="rejected",
                          ts=None, reason=redact(reason))

    def submit(self, order: OrderRequest) -> VenueOrder:
        """Send `order` as a limit IOC with its client id; never a second order for one client id.

        The amount and price are rounded onto the market's grid first (an order that rounds to nothing or breaks
        a limit is rejected here, not sent).
        """
        symbol = self._symbol(order.instrument)
        market = self.markets().get(symbol)
        if market is None:
            return self._rejected(order, f"no market metadata for {order.instrument}")
        if order.side not in ("buy", "sell"):
            return self._rejected(order, f"side must be buy or sell, was {order.side!r}")
        rounded = check_order(market, order.side, order.amount, order.price)  # type: ignore[arg-type]
        if isinstance(rounded, Skipped):
            return self._rejected(order, f"{rounded.limit}: {rounded.reason}")
        rule = CLIENT_ID_RULES.get(self.name)
        params: dict[str, Any] = {"timeInForce": "IOC", (rule.param if rule else "clientOrderId"): order.client_id}
        args = (symbol, "limit", order.side, _plain(rounded.amount), _plain(rounded.price), params)
        uncertain = False
        last = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                placed = self._send("create_order", *args)
            except VenueUnavailable as exc:  # throttled throughout: the venue refused every try
                last = str(exc)
                break
            except ccxt.BaseError as exc:
                last = f"{type(exc).__name__}: {exc}"
                if _duplicate(exc):  # our id is already on the venue: an earlier try got in
                    found = self.fetch_order_by_client_id(order.client_id, order.instrument)
                    if found is not None:
                        log.info("%s order %s already on the venue: not sent again", self.name, order.client_id)
                        return found
                    uncertain = True
                    continue
                action = next_action(exc, attempt, max_attempts=self.max_attempts, on_submit=True)
                if action == "reject":
                    log.info("%s order %s rejected: %s", self.name, order.client_id, redact(last))
                    return self._rejected(order, last)
                if action == "lookup":
                    uncertain = True
                    log.info("%s order %s: outcome unknown (%s), looking it up by client id", self.name,
                             order.client_id, type(exc).__name__)
                    try:
                        found = self.fetch_order_by_client_id(order.client_id, order.instrument)
                    except (ccxt.BaseError, VenueUnavailable) as lookup_exc:
                        last = f"lookup failed: {type(lookup_exc).__name__}"
                        break  # still unknown: never resubmit blind
                    if found is not None:
                        return found
                    uncertain = False  # the venue does not have it: send again with the same id
                if action in ("retry", "lookup") and attempt < self.max_attempts:
                    self.sleep(self._backoff_s(attempt - 1))
                continue
            result = parse_order(self.name, placed, order.client_id)
            log.info("%s order %s %s: filled %s of %s", self.name, order.client_id, result.status, result.filled,
                     result.amount)
            return result
        state: OrderState = "unknown" if uncertain else "new"
        return VenueOrder(client_id=order.client_id, venue_id=None, instrument=order.instrument, side=order.side,
                          amount=float(rounded.amount), price=float(rounded.price), filled=0.0, average=None,
                          status=state, ts=None, reason=redact(f"gave up after {self.max_attempts} attempts: {last}"))

    def fetch_order_by_client_id(self, client_id: str, instrument: str) -> VenueOrder | None:
        """Return the order with `client_id` on `instrument`, or None when the venue does not know it."""
        param = _LOOKUP_PARAM.get(self.name, "clientOrderId")
        try:
            o = self._call("fetch_order", None, self._symbol(instrument), {param: client_id})
        except ccxt.OrderNotFound:
            return None
        return parse_order(self.name, o, client_id)

    def cancel(self, order: VenueOrder | str, instrument: str | None = None) -> VenueOrder:
        """Cancel by `VenueOrder` (its venue id when known) or by client id (with `instrument`)."""
        if isinstance(order, VenueOrder):
            cid, instrument, venue_id = order.client_id, order.instrument, order.venue_id
        else:
            if instrument is None:
                raise ValueError("cancel by client id needs the instrument")
            cid, venue_id = order, None
        params = {} if venue_id else {_LOOKUP_PARAM.get(self.name, "clientOrderId"): cid}
        o = self._call("cancel_order", venue_id, self._symbol(instrument), params)
        return parse_order(self.name, o, cid)

    def fetch_open_orders(self, instrument: str | None = None) -> list[VenueOrder]:
        """Return the working orders of `instrument` (all instruments when None)."""
        symbol = None if instrument is None else self._symbol(instrument)
        key = "fetch_open_orders" if symbol else "fetch_open_orders_all"
        return [parse_order(self.name, o) for o in self._call("fetch_open_orders", symbol, weight_key=key)]

    def fetch_balances(self) -> list[VenueBalance]:
        """Return every currency's balance."""
        return parse_balances(self.name, self._call("fetch_balance"))

    def fetch_positions(self) -> list[VenuePosition]:
        """Return the derivatives positions (none on a spot venue)."""
        if not self.derivatives:
            return []
        return [parse_position(self.name, p) for p in self._call("fetch_positions")]

    def fetch_my_trades(self, instrument: str, since_ns: int | None = None) -> list[VenueFill]:
        """Return the account's fills on `instrument` since `since_ns`, oldest first."""
        since_ms = None if since_ns is None else since_ns // 1_000_000
        trades = self._call("fetch_my_trades", self._symbol(instrument), since_ms)
        return sorted((parse_fill(self.name, t) for t in trades), key=lambda f: (f.ts, f.fill_id))


def _plain(x: Decimal) -> float:
    return float(x)


__all__ = ["CcxtVenue", "Throttled", "VenueUnavailable", "order_status", "parse_balances", "parse_fill",
           "parse_order", "parse_position", "redact", "shared_rate_limiter"]
