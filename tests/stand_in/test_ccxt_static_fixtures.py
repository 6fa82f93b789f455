"""ccxt's own recorded request and response fixtures (../shared/data/ccxt-static/, see its README) for the calls
CcxtVenue makes: createOrder, cancelOrder, fetchOpenOrders, fetchBalance, fetchMyTrades (and fetchOrder, its lookup
by client id).

Request side: the real ccxt client of each venue, markets loaded offline, its transport (`fetch`) intercepted so
nothing reaches the network; the URL path, query and body it builds must equal the fixture's, without the
fixture's `skipKeys` (timestamps, nonces, signatures, generated client ids). Hosts are not compared: some cases were
recorded against testnet or demo hosts. Response side: the transport returns the recorded `httpResponse`; our
parsing of ccxt's result into VenueOrder / VenueBalance / VenueFill must equal the fixture's `parsedResponse`, read
field by field. Also: CcxtVenue.submit's own request is a fixture's limit order plus exactly the IOC time in force
and our client id.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import ccxt
import pytest

from helpers import SHARED_DATA
from operators.execution.venue import Credentials, OrderRequest
from sinks.ccxt_venue import CcxtVenue, parse_balances, parse_fill, parse_order
from sources.market_metadata import VenueMarkets, load_dump, venue_markets

STATIC = SHARED_DATA / "ccxt-static"
VENUES = ("binance", "bybit", "okx", "kraken", "coinbase")
REQUEST_METHODS = ("createOrder", "cancelOrder", "fetchOpenOrders", "fetchBalance", "fetchMyTrades", "fetchOrder")
RESPONSE_METHODS = ("createOrder", "fetchOrder", "fetchOpenOrders", "fetchBalance", "fetchMyTrades")
SNAKE = {m: "".join("_" + c.lower() if c.isupper() else c for c in m) for m in REQUEST_METHODS}

pytestmark = pytest.mark.skipif(not (STATIC / "README.md").exists(), reason=f"shared data missing: {STATIC}")


def _fixture(side: str, venue: str) -> dict[str, Any]:
    path = STATIC / side / f"{venue}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"methods": {}}


def _markets_path(venue: str) -> Path:
    return SHARED_DATA / "markets" / "ccxt" / f"{venue}.json"


_OUR_PARAMS = {"timeInForce", "clientOrderId", "newClientOrderId", "origClientOrderId", "clOrdId", "orderLinkId",
               "type"}


def _ours(method: str, args: list[Any]) -> bool:
    """Whether a fixture case is a call CcxtVenue makes: spot, limit orders, no params beyond ours."""
    symbols = [a for a in args if isinstance(a, str) and "/" in a]
    params = args[-1] if args and isinstance(args[-1], dict) else {}
    if any(":" in s for s in symbols) or set(params) - _OUR_PARAMS or params.get("type", "spot") != "spot":
        return False
    if method == "createOrder":
        return len(args) >= 5 and args[1] == "limit"
    return True


# Cases where the installed ccxt builds another request than the fixture's commit recorded (strict: a fix shows).
KNOWN_DRIFT: dict[str, dict[str, str]] = {
    "request": {"coinbase-fetchBalance-0": "ccxt 4.5 pages v2 accounts with limit=250; the fixture has limit=100"},
}


def _cases(side: str, methods: tuple[str, ...]) -> Iterator[Any]:
    if not (STATIC / "README.md").exists():
        return
    for venue in VENUES:
        doc = _fixture(side, venue)
        for method in methods:
            for i, case in enumerate(doc["methods"].get(method, [])):
                if not _ours(method, case["input"]) or case.get("options"):
                    continue
                case_id = f"{venue}-{method}-{i}"
                marks = [pytest.mark.skip(reason="disabled in the ccxt fixture")] if case.get("disabled") else []
                if case_id in KNOWN_DRIFT.get(side, {}):
                    marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_DRIFT[side][case_id]))
                yield pytest.param(venue, method, case, doc, id=case_id, marks=marks)


class Captured(Exception):
    def __init__(self, url: str, method: str, body: Any) -> None:
        super().__init__(url)
        self.url, self.method, self.body = url, method, body


_VENUES: dict[str, CcxtVenue] = {}
# What ccxt's own static tests assume of an account (bybit: a unified account, so no lookup of it first).
ACCOUNT_OPTIONS: dict[str, dict[str, Any]] = {"bybit": {"enableUnifiedAccount": True, "enableUnifiedMargin": False}}


COINBASE_PRODUCTS = SHARED_DATA / "markets" / "venue-raw" / "coinbase" / "http_products.json"


def _markets(venue: str) -> VenueMarkets:
    """The venue's markets offline: the ccxt dump, or for coinbase its raw products through ccxt's own parser."""
    if venue == "coinbase" and COINBASE_PRODUCTS.exists():
        products = json.loads(COINBASE_PRODUCTS.read_text(encoding="utf-8"))["products"]
        parsed = [ccxt.coinbase().parse_spot_market(p, {}) for p in products if p["product_type"] == "SPOT"]
        return venue_markets(venue, {m["symbol"]: m for m in parsed}, source=str(COINBASE_PRODUCTS))
    if not _markets_path(venue).exists():
        pytest.skip(f"no ccxt market definitions for {venue} in the shared data ({_markets_path(venue)})")
    vm = load_dump(_markets_path(venue), venue)
    full = ccxt.Exchange().safe_market_structure()  # every key ccxt's parsers read, for older dumps
    return replace(vm, raw={s: {**full, **m} for s, m in vm.raw.items()})


def _venue(venue: str, doc: dict[str, Any], case: dict[str, Any]) -> CcxtVenue:
    """CcxtVenue with the venue's markets offline and dummy credentials (one per venue: ccxt classes are big)."""
    if venue not in _VENUES:
        # base64 (kraken decodes it) without padding (coinbase reads a trailing "=" as a cloud key)
        creds = Credentials("dummykey", "ZHVtbXlzZWNyZXQx", "dummypassword")
        _VENUES[venue] = CcxtVenue(venue, creds, markets=_markets(venue),
                                   options={**doc.get("options", {}), **ACCOUNT_OPTIONS.get(venue, {})})
    return _VENUES[venue]


def _params(text: str | None, output_type: str) -> Any:
    if text is None or text == "":
        return None
    if output_type == "json":
        return json.loads(text)
    return dict(parse_qsl(text, keep_blank_values=True))


def _drop(x: Any, skip: set[str]) -> Any:
    if isinstance(x, dict):
        return {k: _drop(v, skip) for k, v in x.items() if k not in skip}
    if isinstance(x, list):
        return [_drop(v, skip) for v in x]
    return x


def _capture(v: CcxtVenue, method: str, args: list[Any]) -> Captured:
    def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        raise Captured(url, method, body)

    v.exchange.fetch = fetch
    try:
        getattr(v.exchange, SNAKE[method])(*args)
    except Captured as c:
        return c
    raise AssertionError(f"{method} sent no request")


def _request_of(c: Captured, output_type: str, skip: set[str]) -> tuple[str, Any, Any]:
    parts = urlsplit(c.url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    body = _params(c.body if isinstance(c.body, str) or c.body is None else c.body.decode(), output_type)
    return parts.path, _drop(query, skip), _drop(body, skip)


SYMBOL_ARG = {"createOrder": 0, "cancelOrder": 1, "fetchOrder": 1, "fetchOpenOrders": 0, "fetchMyTrades": 0}


def _symbol_known(v: CcxtVenue, method: str, case: dict[str, Any]) -> None:
    """Skip a case whose market (a symbol, or an exchange id such as DOGE-USDT) is not in the shared definitions."""
    args = case["input"]
    pos = SYMBOL_ARG.get(method)
    symbol = args[pos] if pos is not None and pos < len(args) and isinstance(args[pos], str) else None
    if symbol is not None and symbol not in v.exchange.markets and symbol not in v.exchange.markets_by_id:
        pytest.skip(f"market {symbol} not in the shared {v.name} definitions")


@pytest.mark.parametrize(("venue", "method", "case", "doc"), list(_cases("request", REQUEST_METHODS)))
def test_ccxt_builds_the_recorded_request(venue: str, method: str, case: dict[str, Any], doc: dict[str, Any]) -> None:
    v = _venue(venue, doc, case)
    _symbol_known(v, method, case)
    skip = set(doc.get("skipKeys", []))
    output_type = doc.get("outputType", "urlencoded")
    got = _request_of(_capture(v, method, case["input"]), output_type, skip)
    want_url = urlsplit(case["url"])
    want = (want_url.path, _drop(dict(parse_qsl(want_url.query, keep_blank_values=True)), skip),
            _drop(_params(case.get("output"), output_type), skip))
    assert got == want


def _num(x: Any) -> float | None:
    return None if x is None else float(x)


def _expected_order(venue: str, p: dict[str, Any]) -> tuple[Any, ...]:
    status = {"open": "partially_filled" if (p.get("filled") or 0) > 0 else "accepted", "closed": "filled",
              "canceled": "cancelled", "expired": "expired", "rejected": "rejected", None: "accepted"}[p.get("status")]
    return (p.get("clientOrderId") or "", p.get("id"), f"{venue}:{p['symbol']}", p.get("side") or "",
            _num(p.get("amount")) or 0.0, _num(p.get("price")), _num(p.get("filled")) or 0.0, _num(p.get("average")),
            status, None if (p.get("lastUpdateTimestamp") or p.get("timestamp")) is None
            else int(p.get("lastUpdateTimestamp") or p.get("timestamp")) * 1_000_000)


@pytest.mark.parametrize(("venue", "method", "case", "doc"), list(_cases("response", RESPONSE_METHODS)))
def test_our_parsing_of_the_recorded_response(venue: str, method: str, case: dict[str, Any],
                                              doc: dict[str, Any]) -> None:
    v = _venue(venue, doc, case)
    _symbol_known(v, method, case)
    v.exchange.fetch = lambda url, method="GET", headers=None, body=None: case["httpResponse"]
    result = getattr(v.exchange, SNAKE[method])(*case["input"])
    parsed = case["parsedResponse"]
    if method in ("createOrder", "fetchOrder", "fetchOpenOrders"):
        got = [parse_order(venue, o) for o in (result if isinstance(result, list) else [result])]
        want = parsed if isinstance(parsed, list) else [parsed]
        assert [(o.client_id, o.venue_id, o.instrument, o.side, o.amount, o.price, o.filled, o.average, o.status,
                 o.ts) for o in got] == [_expected_order(venue, p) for p in want]
    elif method == "fetchBalance":
        got_b = {b.currency: (b.free, b.used, b.total) for b in parse_balances(venue, result)}
        want_b = {c: (_num(parsed["free"].get(c)) or 0.0, _num(parsed["used"].get(c)) or 0.0, _num(t) or 0.0)
                  for c, t in parsed["total"].items()}
        assert got_b == want_b
    else:
        fills = [parse_fill(venue, t) for t in result]
        assert [(f.fill_id, f.venue_order_id, f.instrument, f.side, f.price, f.amount, f.fee, f.fee_currency, f.ts)
                for f in fills] == [
            (str(t["id"]), t.get("order"), f"{venue}:{t['symbol']}", t.get("side") or "", float(t["price"]),
             float(t["amount"]), _num((t.get("fee") or {}).get("cost")) or 0.0, (t.get("fee") or {}).get("currency"),
             int(t["timestamp"]) * 1_000_000) for t in parsed]


def _fields(request: tuple[str, Any, Any]) -> dict[str, Any]:
    """Query and body of one order request in one dict (okx posts a batch of one)."""
    body = request[2] or {}
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    return {**request[1], **body}


LIMIT_CASES = {  # one recorded spot limit order per venue: (description, our time-in-force and client id keys)
    "binance": ("timeInForce", "newClientOrderId"),
    "bybit": ("timeInForce", "orderLinkId"),
    "okx": ("ordType", "clOrdId"),
    "kraken": ("timeinforce", "cl_ord_id"),
}


@pytest.mark.parametrize("venue", sorted(LIMIT_CASES))
def test_our_submit_is_a_recorded_limit_order_plus_ioc_and_client_id(venue: str) -> None:
    doc = _fixture("request", venue)
    cases = [c for c in doc["methods"].get("createOrder", []) if not c.get("disabled") and len(c["input"]) in (5, 6)
             and c["input"][1] == "limit" and not (c["input"][5:] or [{}])[0] and ":" not in c["input"][0]]
    if not cases:
        pytest.skip(f"no plain spot limit order among the {venue} fixtures")
    case = cases[0]
    v = _venue(venue, doc, case)
    _symbol_known(v, "createOrder", case)
    symbol, _, side, amount, price = case["input"][:5]
    output_type = doc.get("outputType", "urlencoded")
    recorded = _request_of(_capture(v, "createOrder", case["input"]), output_type, set())

    def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        raise Captured(url, method, body)

    v.exchange.fetch = fetch
    with pytest.raises(Captured) as info:
        v.submit(OrderRequest("0123456789abcdef0123456789abcdef", f"{venue}:{symbol}", side, amount, price))
    ours = _request_of(info.value, output_type, set())
    tif_key, cid_key = LIMIT_CASES[venue]
    assert ours[0] == recorded[0]
    ours_fields, recorded_fields = _fields(ours), _fields(recorded)
    assert ours_fields[cid_key] == "0123456789abcdef0123456789abcdef"
    assert str(ours_fields[tif_key]).upper() == "IOC"
    skip = {tif_key, cid_key, *doc.get("skipKeys", [])}
    assert _drop(ours_fields, skip) == _drop(recorded_fields, skip)
