"""A local stand-in of Binance spot's REST API, for ccxt's real client (no exchange is reachable in tests).

Endpoints: ``GET /api/v3/exchangeInfo`` (the recorded definitions in
``../shared/data/markets/venue-raw/binance/http_spot_market_exchange_info.json``), ``/api/v3/time``,
``/api/v3/ping``, ``POST/GET/DELETE /api/v3/order``, ``GET /api/v3/openOrders``, ``/api/v3/account``,
``/api/v3/myTrades``. The account is ccxt's recorded Binance spot balance reply
(``../shared/data/ccxt-static/response/binance.json``) unless balances are given. Every signed request's
``X-MBX-APIKEY`` header and HMAC-SHA256 signature are verified against the planted key and secret; every
request is recorded (method, path, params, whether it was signed).

Faults are scripted per (method, path) and used once, in order: ``Fault("429", retry_after_s=3)``,
``Fault("418")``, ``Fault("slow", delay_s=...)`` (the order IS processed, the answer comes after the client's
timeout), ``Fault("lost", delay_s=...)`` (the request is dropped and answered too late), ``Fault("duplicate")``
(-2010 Duplicate order sent.), ``Fault("insufficient")`` (-2010 insufficient
balance), ``Fault("partial", fill_ratio=0.4)`` (an IOC filled in part, the rest expired), ``Fault("rest")`` (an
IOC that does not fill: it stays on the book as NEW, so open orders and cancel have something to show).

Binance refuses a client order id only while an order with it is open; a filled or expired IOC's id may be sent
again. The stand-in does the same, so a blind resubmission would show up as a second accepted order.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

EXCHANGE_INFO = Path("markets/venue-raw/binance/http_spot_market_exchange_info.json")
RECORDED = Path("ccxt-static/response/binance.json")  # ccxt's recorded binance replies (its "Spot balance" case)
HOSTS = ("https://api.binance.com", "https://testnet.binance.vision")


@dataclass(frozen=True)
class Fault:
    kind: str  # "429", "418", "slow", "lost", "duplicate", "insufficient", "partial", "rest"
    retry_after_s: float | None = None
    delay_s: float = 0.0
    fill_ratio: float = 0.0


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    params: dict[str, str]
    signed: bool
    answered: int  # HTTP status sent (or meant to be sent)


@dataclass
class _Order:
    symbol: str
    order_id: int
    client_id: str
    side: str
    type: str
    tif: str
    price: Decimal
    qty: Decimal
    executed: Decimal
    status: str
    time_ms: int
    fills: list[dict[str, str]] = field(default_factory=list)

    def wire(self) -> dict[str, Any]:
        quote = sum((Decimal(f["price"]) * Decimal(f["qty"]) for f in self.fills), Decimal(0))
        return {"symbol": self.symbol, "orderId": self.order_id, "orderListId": -1, "clientOrderId": self.client_id,
                "price": f"{self.price:.8f}", "origQty": f"{self.qty:.8f}", "executedQty": f"{self.executed:.8f}",
                "cummulativeQuoteQty": f"{quote:.8f}", "status": self.status, "timeInForce": self.tif,
                "type": self.type, "side": self.side, "stopPrice": "0.00000000", "icebergQty": "0.00000000",
                "time": self.time_ms, "updateTime": self.time_ms, "isWorking": True, "workingTime": self.time_ms,
                "origQuoteOrderQty": "0.00000000", "selfTradePreventionMode": "NONE"}


class BinanceStandIn:
    """The server; use as a context manager. `url` is its base (``http://127.0.0.1:PORT``)."""

    def __init__(self, shared_data: Path, api_key: str, secret: str,
                 balances: dict[str, tuple[str, str]] | None = None) -> None:
        self.exchange_info = json.loads((shared_data / EXCHANGE_INFO).read_text(encoding="utf-8"))
        self.api_key, self.secret = api_key, secret
        self.account = self._recorded_account(shared_data) if balances is None else None
        self.balances = balances or {"BTC": ("1.00000000", "0.00000000"), "USDT": ("100000.00000000", "0.00000000")}
        self.requests: list[Recorded] = []
        self.faults: dict[tuple[str, str], deque[Fault]] = {}
        self.orders: dict[int, _Order] = {}
        self.trades: list[dict[str, Any]] = []
        self.commission = Decimal("0.001")
        self._next_id = 1000
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @staticmethod
    def _recorded_account(shared_data: Path) -> dict[str, Any] | None:
        """The recorded reply of GET /api/v3/account (ccxt's "Spot balance" case), when the shared data has it."""
        path = shared_data / RECORDED
        if not path.exists():
            return None
        cases = json.loads(path.read_text(encoding="utf-8"))["methods"].get("fetchBalance", [])
        spot = [c["httpResponse"] for c in cases if c["input"] == [] and not c.get("disabled")]
        return spot[0] if spot else None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def url_overrides(self, api_urls: dict[str, Any]) -> dict[str, str]:
        """Entries of a ccxt binance ``urls['api']`` on a Binance spot host, pointed at this server."""
        return {k: self.url + v[len(h):] for k, v in api_urls.items() if isinstance(v, str)
                for h in HOSTS if v.startswith(h)}

    def script(self, method: str, path: str, *faults: Fault) -> None:
        self.faults.setdefault((method, path), deque()).extend(faults)

    def accepted_orders(self) -> list[Recorded]:
        """The order submissions the venue accepted (whatever the client then heard)."""
        return [r for r in self.requests if (r.method, r.path, r.answered) == ("POST", "/api/v3/order", 200)]

    def __enter__(self) -> BinanceStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ---------------------------------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _serve(self, method: str) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                status, payload, headers, delay = stand_in.handle(method, parts.path, parts.query, body,
                                                                  self.headers.get("X-MBX-APIKEY"))
                if delay:
                    time.sleep(delay)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

        return Handler

    def _verify(self, query: str, body: str, api_key: str | None) -> tuple[int, dict[str, Any]] | None:
        if api_key != self.api_key:
            return 401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}
        total = query + body  # Binance signs the query string followed by the body
        signed, sep, signature = total.rpartition("&signature=")
        want = hmac.new(self.secret.encode(), signed.encode(), hashlib.sha256).hexdigest()
        if not sep or not hmac.compare_digest(want, signature):
            return 400, {"code": -1022, "msg": "Signature for this request is not valid."}
        if "timestamp" not in dict(parse_qsl(signed)):
            return 400, {"code": -1102, "msg": "Mandatory parameter 'timestamp' was not sent."}
        return None

    def handle(self, method: str, path: str, query: str, body: str,
               api_key: str | None) -> tuple[int, Any, dict[str, str], float]:
        params = dict(parse_qsl(query, keep_blank_values=True)) | dict(parse_qsl(body, keep_blank_values=True))
        signed = "signature" in params
        with self._lock:
            status, payload, headers, delay = self._dispatch(method, path, query, body, api_key, params, signed)
            clean = {k: v for k, v in params.items() if k != "signature"}
            self.requests.append(Recorded(method, path, clean, signed, status))
        return status, payload, headers, delay

    def _dispatch(self, method: str, path: str, query: str, body: str, api_key: str | None,
                  params: dict[str, str], signed: bool) -> tuple[int, Any, dict[str, str], float]:
        fault = None
        queue = self.faults.get((method, path))
        if queue:
            fault = queue.popleft()
        if fault and fault.kind == "429":
            ra = {"Retry-After": str(int(fault.retry_after_s))} if fault.retry_after_s is not None else {}
            msg = "Too many requests; current limit is 6000 request weight per 1 MINUTE."
            return 429, {"code": -1003, "msg": msg}, ra, 0.0
        if fault and fault.kind == "418":
            return 418, {"code": -1003, "msg": "Way too many requests; IP banned."}, \
                {"Retry-After": str(int(fault.retry_after_s or 120))}, 0.0
        public = {"/api/v3/exchangeInfo": lambda: self.exchange_info, "/api/v3/ping": dict,
                  "/api/v3/time": lambda: {"serverTime": int(time.time() * 1000)}}
        if path in public and method == "GET":
            return 200, public[path](), {}, 0.0
        private = {("POST", "/api/v3/order"), ("GET", "/api/v3/order"), ("DELETE", "/api/v3/order"),
                   ("GET", "/api/v3/openOrders"), ("GET", "/api/v3/account"), ("GET", "/api/v3/myTrades")}
        if fault and fault.kind == "lost":  # the request never reaches the matching engine; no answer in time
            return 504, {"code": -1007, "msg": "Timeout waiting for response from backend server."}, {}, fault.delay_s
        if (method, path) not in private:
            return 404, {"code": -1, "msg": f"stand-in has no {method} {path}"}, {}, 0.0
        bad = self._verify(query, body, api_key) if signed or api_key else (
            400, {"code": -1102, "msg": "Mandatory parameter 'signature' was not sent."})
        if bad:
            return bad[0], bad[1], {}, 0.0
        status, payload = getattr(self, "_" + method.lower() + path.replace("/api/v3/", "_").lower())(params, fault)
        return status, payload, {}, (fault.delay_s if fault and fault.kind == "slow" else 0.0)

    # ---------------------------------------------------------------------------------------------------------
    # Private endpoints

    def _find(self, params: dict[str, str]) -> _Order | None:
        for o in self.orders.values():
            if o.symbol == params.get("symbol") and (
                    ("origClientOrderId" in params and o.client_id == params["origClientOrderId"])
                    or ("orderId" in params and str(o.order_id) == params["orderId"])):
                return o
        return None

    def _post_order(self, params: dict[str, str], fault: Fault | None) -> tuple[int, Any]:
        cid = params.get("newClientOrderId", "")
        if fault and fault.kind == "insufficient":
            return 400, {"code": -2010, "msg": "Account has insufficient balance for requested action."}
        open_dup = any(o.client_id == cid and o.status in ("NEW", "PARTIALLY_FILLED") for o in self.orders.values())
        if (fault and fault.kind == "duplicate") or open_dup:
            return 400, {"code": -2010, "msg": "Duplicate order sent."}
        qty, price = Decimal(params["quantity"]), Decimal(params["price"])
        self._next_id += 1
        now = int(time.time() * 1000)
        o = _Order(params["symbol"], self._next_id, cid, params["side"], params["type"],
                   params.get("timeInForce", "GTC"), price, qty, Decimal(0), "NEW", now)
        ratio = Decimal(str(fault.fill_ratio)) if fault and fault.kind == "partial" else Decimal(1)
        if fault and fault.kind == "rest":
            ratio = Decimal(0)
        fill = (qty * ratio).quantize(Decimal("0.00001"))
        if fill > 0:
            self.trades.append({"symbol": o.symbol, "id": len(self.trades) + 1, "orderId": o.order_id,
                                "orderListId": -1, "price": f"{price:.8f}", "qty": f"{fill:.8f}",
                                "quoteQty": f"{price * fill:.8f}",
                                "commission": f"{price * fill * self.commission:.8f}",
                                "commissionAsset": "USDT", "time": now, "isBuyer": o.side == "BUY", "isMaker": False,
                                "isBestMatch": True})
            o.fills.append({"price": f"{price:.8f}", "qty": f"{fill:.8f}",
                            "commission": f"{price * fill * self.commission:.8f}", "commissionAsset": "USDT",
                            "tradeId": str(len(self.trades))})
            o.executed = fill
        if fill == qty:
            o.status = "FILLED"
        elif o.tif == "IOC" and not (fault and fault.kind == "rest"):
            o.status = "EXPIRED"  # the IOC's rest is cancelled by the venue
        self.orders[o.order_id] = o
        return 200, o.wire() | {"transactTime": now, "fills": list(o.fills)}

    def _get_order(self, params: dict[str, str], fault: Fault | None) -> tuple[int, Any]:
        o = self._find(params)
        return (200, o.wire()) if o else (400, {"code": -2013, "msg": "Order does not exist."})

    def _delete_order(self, params: dict[str, str], fault: Fault | None) -> tuple[int, Any]:
        o = self._find(params)
        if o is None or o.status not in ("NEW", "PARTIALLY_FILLED"):
            return 400, {"code": -2011, "msg": "Unknown order sent."}
        o.status = "CANCELED"
        return 200, o.wire() | {"origClientOrderId": o.client_id}

    def _get_openorders(self, params: dict[str, str], fault: Fault | None) -> tuple[int, Any]:
        return 200, [o.wire() for o in self.orders.values() if o.status in ("NEW", "PARTIALLY_FILLED")
                     and params.get("symbol") in (None, o.symbol)]

    def _get_account(self, params: dict[str, str], fault: Fault | None) -> tuple[int, Any]:
        if self.account is not None:
            return 200, self.account
        return 200, {"makerCommission": 10, "takerCommission": 10, "canTrade": True, "accountType": "SPOT",
                     "updateTime": 0, "permissions": ["SPOT"],
                     "balances": [{"asset": a, "free": f, "locked": lk} for a, (f, lk) in self.balances.items()]}

    def _get_mytrades(self, params: dict[str, str], fault: Fault | None) -> tuple[int, Any]:
        since = int(params.get("startTime", 0))
        return 200, [t for t in self.trades if t["symbol"] == params.get("symbol") and t["time"] >= since]


@dataclass
class FakeClock:
    """An injected clock for venue clients: `sleep` advances it instead of waiting (rate limits, Retry-After)."""

    now_ns: int = 1_700_000_000 * 10**9
    slept: list[float] = field(default_factory=list)

    def __call__(self) -> int:
        return self.now_ns

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now_ns += int(seconds * 10**9)
