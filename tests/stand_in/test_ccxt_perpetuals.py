"""USDT-margined perpetuals on binance and bybit through `CcxtVenue(derivatives=True)`, against ccxt's own recorded
request and response fixtures (../shared/data/ccxt-static/, see its README) and the real market dumps.

Request side: ccxt's real binance and bybit classes, markets loaded offline from ../shared/data/markets/ccxt/, the
transport (`fetch`) intercepted so nothing reaches the network. For each recorded swap case, the request that
`CcxtVenue`'s own call makes (submit, cancel, fetch_open_orders, fetch_my_trades, fetch_positions) must have the
fixture's URL path, query and body without the fixture's `skipKeys`; a submission adds exactly our IOC time in
force and client id. Response side: the transport returns the recorded `httpResponse`; the `VenueOrder`,
`VenueFill` and `VenuePosition` we make of ccxt's result must carry the fixture's `parsedResponse` values
(contracts signed by side, contract size, entry price, unrealised PnL). A case whose market is not in the dump is
skipped with its name. Contract sizes: every linear USDT swap's rounding and notional (amounts in contracts).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from functools import cache
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import ccxt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import SHARED_DATA
from operators.execution.markets import Rounded, check_order, round_amount, round_price
from operators.execution.venue import Credentials, OrderRequest, VenueOrder
from sinks.ccxt_venue import CcxtVenue, parse_fill, parse_order, parse_position
from stand_in.test_ccxt_static_fixtures import ACCOUNT_OPTIONS, Captured, _drop, _fields, _markets, _request_of

STATIC = SHARED_DATA / "ccxt-static"
DUMPS = SHARED_DATA / "markets" / "ccxt"
VENUES = ("binance", "bybit")
CLIENT_ID = "0123456789abcdef0123456789abcdef"
TIF_AND_CID = {"binance": ("timeInForce", "newClientOrderId"), "bybit": ("timeInForce", "orderLinkId")}

pytestmark = pytest.mark.skipif(not (STATIC / "README.md").exists() or not DUMPS.exists(),
                                reason=f"shared data missing: {STATIC} or {DUMPS}")


@cache
def _doc(side: str, venue: str) -> dict[str, Any]:
    path = STATIC / side / f"{venue}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"methods": {}}


def _case(side: str, venue: str, method: str, description: str) -> dict[str, Any]:
    """The first fixture case of `method` with `description` (skips, naming it, when the fixture lacks it)."""
    for case in _doc(side, venue)["methods"].get(method, []):
        if case["description"] == description:
            if case.get("disabled"):
                pytest.skip(f"{venue} {method} {description!r}: disabled in the ccxt fixture")
            return case
    pytest.skip(f"{venue} {method} {description!r}: not in the {side} fixtures")


_VENUES: dict[tuple[str, str, str], CcxtVenue] = {}


def _venue(venue: str, side: str, options: dict[str, Any] | None = None) -> CcxtVenue:
    """A derivatives `CcxtVenue`: the dump's markets offline, dummy credentials (cached: ccxt classes are big)."""
    key = (venue, side, json.dumps(options or {}, sort_keys=True))
    if key not in _VENUES:
        creds = Credentials("dummykey", "ZHVtbXlzZWNyZXQx")
        opts = {**_doc(side, venue).get("options", {}), **ACCOUNT_OPTIONS.get(venue, {}), **(options or {})}
        _VENUES[key] = CcxtVenue(venue, creds, markets=_markets(venue), derivatives=True, options=opts)
    return _VENUES[key]


def _known(v: CcxtVenue, symbol: str | None, what: str) -> None:
    if symbol is not None and symbol not in v.exchange.markets:
        pytest.skip(f"{what}: market {symbol} not in the shared {v.name} definitions")


# --------------------------------------------------------------------------------------------------------------
# Requests


def _captured(v: CcxtVenue, call: Callable[[], Any]) -> Captured:
    def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        raise Captured(url, method, body)

    v.exchange.fetch = fetch
    with pytest.raises(Captured) as info:
        call()
    return info.value


def _our_call(v: CcxtVenue, method: str, args: list[Any]) -> Callable[[], Any]:
    """The `CcxtVenue` call that stands for a fixture's ccxt call."""
    if method == "createOrder":
        symbol, _, side, amount, price = args[:5]
        return lambda: v.submit(OrderRequest(CLIENT_ID, f"{v.name}:{symbol}", side, amount, price))
    if method == "cancelOrder":
        venue_id, symbol = args[0], args[1]
        params = args[2] if len(args) > 2 else {}
        if "clientOrderId" in params:
            return lambda: v.cancel(params["clientOrderId"], f"{v.name}:{symbol}")
        order = VenueOrder(client_id="", venue_id=venue_id, instrument=f"{v.name}:{symbol}", side="buy", amount=0.0,
                           price=None, filled=0.0, average=None, status="accepted", ts=None)
        return lambda: v.cancel(order)
    if method == "fetchOpenOrders":
        return lambda: v.fetch_open_orders(f"{v.name}:{args[0]}")
    if method == "fetchMyTrades":
        return lambda: v.fetch_my_trades(f"{v.name}:{args[0]}")
    if method == "fetchPositions":
        return v.fetch_positions
    raise AssertionError(f"no CcxtVenue call for {method}")


# (venue, ccxt method, fixture description, ccxt options CcxtVenue is configured with for it)
REQUEST_CASES: list[tuple[str, str, str, dict[str, Any]]] = [
    ("binance", "createOrder", "swap limit buy with weird price/amount", {}),
    ("binance", "createOrder", "Swap limit buy order", {}),
    ("binance", "createOrder", "Swap limit sell", {}),
    ("binance", "createOrder", "Exchange rate underlying swap createOrder", {}),  # USDBRL: not in the dump
    ("binance", "cancelOrder", "Swap cancelOrder", {}),
    ("binance", "cancelOrder", "cancel swap order with clientOrderId", {}),
    ("binance", "fetchOpenOrders", "Swap open orders", {}),
    ("binance", "fetchMyTrades", "Swap fetchMyTrades", {}),
    ("binance", "fetchPositions", "fetch default positions", {}),
    ("binance", "fetchPositions", "fetchPositions using v2 endpoint", {"fetchPositionsRisk": {"useV2": True}}),
    ("bybit", "createOrder", "Swap limit order", {}),
    ("bybit", "cancelOrder", "Swap cancelOrder", {}),
    ("bybit", "fetchMyTrades", "Swap fetchMyTrades", {}),
    ("bybit", "fetchPositions", "Swap fetchPositions", {}),
]


# Parameters the installed ccxt adds beyond the fixture's commit (exact: any other difference still fails).
DRIFT: dict[tuple[str, str], dict[str, str]] = {
    ("bybit", "Swap fetchPositions"): {"limit": "200"},  # ccxt 4.5 always asks for a page of 200 positions
}


def _want(case: dict[str, Any], output_type: str) -> tuple[str, dict[str, str], Any]:
    url = urlsplit(case["url"])
    out = case.get("output")
    body = None if not out else json.loads(out) if output_type == "json" else dict(parse_qsl(out))
    return url.path, dict(parse_qsl(url.query, keep_blank_values=True)), body


@pytest.mark.parametrize(("venue", "method", "description", "options"), REQUEST_CASES,
                         ids=[f"{v}-{m}-{d}" for v, m, d, _ in REQUEST_CASES])
def test_our_perpetual_request_is_the_recorded_one(venue: str, method: str, description: str,
                                                   options: dict[str, Any]) -> None:
    case = _case("request", venue, method, description)
    doc = _doc("request", venue)
    v = _venue(venue, "request", options)
    symbols = [a for a in case["input"] if isinstance(a, str) and "/" in a]
    _known(v, symbols[0] if symbols else None, f"{venue} {method} {description!r}")
    output_type = doc.get("outputType", "urlencoded")
    path, query, body = _request_of(_captured(v, _our_call(v, method, case["input"])), output_type, set())
    want_path, want_query, want_body = _want(case, output_type)
    assert path == want_path
    skip = set(doc.get("skipKeys", []))
    if method == "createOrder":  # the recorded order plus exactly our IOC time in force and client id
        tif, cid = TIF_AND_CID[venue]
        ours = _fields((path, query, body))
        assert ours[cid] == CLIENT_ID and str(ours[tif]).upper() == "IOC"
        recorded = _fields((want_path, want_query, want_body))
        assert _drop(ours, skip | {tif, cid}) == _drop(recorded, skip | {tif, cid})
    else:
        want_query = {**want_query, **DRIFT.get((venue, description), {})}
        assert (_drop(query, skip), _drop(body, skip)) == (_drop(want_query, skip), _drop(want_body, skip))


def test_a_perpetual_order_goes_to_the_futures_api_with_amounts_in_contracts() -> None:
    """The recorded 'weird' amount and price, rounded by us onto LTC/USDT:USDT's grid before ccxt sees them."""
    v = _venue("binance", "request")
    _known(v, "LTC/USDT:USDT", "binance LTC/USDT:USDT")
    c = _captured(v, lambda: v.submit(OrderRequest(CLIENT_ID, "binance:LTC/USDT:USDT", "sell", 0.132434234,
                                                   50.234234234)))
    path, _, body = _request_of(c, "urlencoded", set())
    assert path == "/fapi/v1/order"
    assert (body["quantity"], body["price"], body["side"], body["type"]) == ("0.132", "50.24", "SELL", "LIMIT")


def test_a_perpetual_order_below_the_minimum_notional_is_not_sent() -> None:
    v = _venue("binance", "request")
    _known(v, "LTC/USDT:USDT", "binance LTC/USDT:USDT")
    v.exchange.fetch = lambda *a, **k: pytest.fail("a request was sent")
    out = v.submit(OrderRequest(CLIENT_ID, "binance:LTC/USDT:USDT", "buy", 0.05, 60.0))  # 3 USDT < 5
    assert out.status == "rejected" and out.reason.startswith("limits.cost.min")


# --------------------------------------------------------------------------------------------------------------
# Responses


def _num(x: Any) -> float | None:
    return None if x is None else float(x)


def _ns(ms: Any) -> int | None:
    return None if ms is None else int(ms) * 1_000_000


def _serve(v: CcxtVenue, case: dict[str, Any]) -> None:
    v.exchange.fetch = lambda url, method="GET", headers=None, body=None: case["httpResponse"]


def _expected_position(venue: str, p: dict[str, Any]) -> tuple[Any, ...]:
    contracts = float(p["contracts"] or 0)
    return (f"{venue}:{p['symbol']}", -contracts if p.get("side") == "short" else contracts,
            _num(p.get("contractSize")) or 1.0, _num(p.get("entryPrice")), _num(p.get("unrealizedPnl")),
            _ns(p.get("timestamp")))


# (venue, ccxt method, fixture description, options CcxtVenue is configured with; None: not a CcxtVenue call, our
# parsing of ccxt's result of the recorded call)
POSITION_CASES: list[tuple[str, str, str, dict[str, Any] | None]] = [
    ("binance", "fetchPositions", "Fetch linear positions without symbols", {}),
    ("binance", "fetchPositions", "Fetch linear positions with symbols", {}),
    ("binance", "fetchPositions", "Fetch linear positions using account endnpoint", {"fetchPositions": "account"}),
    ("binance", "fetchPositions", "inverse positions", None),  # the only recorded short: contracts turn negative
    ("bybit", "fetchPositions", "Fetch linear position", {}),
    ("bybit", "fetchPosition", "linear position", None),
]


@pytest.mark.parametrize(("venue", "method", "description", "options"), POSITION_CASES,
                         ids=[f"{v}-{m}-{d}" for v, m, d, _ in POSITION_CASES])
def test_recorded_positions_parse_into_venue_positions(venue: str, method: str, description: str,
                                                       options: dict[str, Any] | None) -> None:
    case = _case("response", venue, method, description)
    v = _venue(venue, "response", options)
    symbols = case["input"][0] if case["input"] else None
    for s in [symbols] if isinstance(symbols, str) else symbols or []:
        _known(v, s, f"{venue} {method} {description!r}")
    _serve(v, case)
    parsed = case["parsedResponse"]
    want = [_expected_position(venue, p) for p in (parsed if isinstance(parsed, list) else [parsed])]
    if options is None:
        result = getattr(v.exchange, "fetch_position" if method == "fetchPosition" else "fetch_positions")(
            *case["input"])
        got = [parse_position(venue, p) for p in (result if isinstance(result, list) else [result])]
    else:
        got = list(v.fetch_positions())
        if isinstance(symbols, list):  # the venue's call asks for every position; the fixture asked for some
            got = [p for p in got if p.instrument.partition(":")[2] in symbols]
    assert want, "a position fixture without positions checks nothing"
    assert [(p.instrument, p.contracts, p.contract_size, p.entry_price, p.unrealized_pnl, p.ts) for p in got] == want


def _expected_fill(venue: str, t: dict[str, Any]) -> tuple[Any, ...]:
    fee = t.get("fee") or {}
    return (str(t["id"]), t.get("order"), f"{venue}:{t['symbol']}", t.get("side") or "", float(t["price"]),
            float(t["amount"]), _num(fee.get("cost")) or 0.0, fee.get("currency"), int(t["timestamp"]) * 1_000_000)


FILL_CASES = [("binance", "Swap private trade"), ("bybit", "Swap private trade"),
              ("bybit", "swap trades without symbol")]


@pytest.mark.parametrize(("venue", "description"), FILL_CASES, ids=[f"{v}-{d}" for v, d in FILL_CASES])
def test_recorded_perpetual_trades_parse_into_venue_fills(venue: str, description: str) -> None:
    case = _case("response", venue, "fetchMyTrades", description)
    v = _venue(venue, "response")
    symbol = case["input"][0]
    _known(v, symbol, f"{venue} fetchMyTrades {description!r}")
    _serve(v, case)
    if symbol is not None:
        fills = list(v.fetch_my_trades(f"{venue}:{symbol}"))
    else:  # CcxtVenue always names the instrument: our parsing of ccxt's result
        fills = [parse_fill(venue, t) for t in v.exchange.fetch_my_trades(*case["input"])]
    want = sorted((_expected_fill(venue, t) for t in case["parsedResponse"]), key=lambda f: (f[-1], f[0]))
    assert want, "a trade fixture without trades checks nothing"
    assert [(f.fill_id, f.venue_order_id, f.instrument, f.side, f.price, f.amount, f.fee, f.fee_currency, f.ts)
            for f in sorted(fills, key=lambda f: (f.ts, f.fill_id))] == want


def _expected_order(venue: str, p: dict[str, Any]) -> tuple[Any, ...]:
    status = {"open": "partially_filled" if (p.get("filled") or 0) > 0 else "accepted", "closed": "filled",
              "canceled": "cancelled", "expired": "expired", "rejected": "rejected", None: "accepted"}[p.get("status")]
    return (p.get("clientOrderId") or "", p.get("id"), f"{venue}:{p['symbol']}", p.get("side") or "",
            _num(p.get("amount")) or 0.0, _num(p.get("price")), _num(p.get("filled")) or 0.0, _num(p.get("average")),
            status, _ns(p.get("lastUpdateTimestamp") or p.get("timestamp")))


ORDER_CASES = [("binance", "fetchOpenOrder", "swap open order"),
               ("bybit", "fetchOpenOrder", "Fetch an open swap order by its ID and symbol"),
               ("bybit", "fetchClosedOrder", "Fetch swap closed order by its ID and symbol"),
               ("bybit", "fetchClosedOrders", "Fetch swap closed orders by the symbol")]


@pytest.mark.parametrize(("venue", "method", "description"), ORDER_CASES, ids=[f"{v}-{d}" for v, _, d in ORDER_CASES])
def test_recorded_perpetual_orders_parse_into_venue_orders(venue: str, method: str, description: str) -> None:
    case = _case("response", venue, method, description)
    v = _venue(venue, "response")
    symbols = [a for a in case["input"] if isinstance(a, str) and "/" in a]
    _known(v, symbols[0] if symbols else None, f"{venue} {method} {description!r}")
    _serve(v, case)
    snake = "".join("_" + c.lower() if c.isupper() else c for c in method)
    result = getattr(v.exchange, snake)(*case["input"])
    parsed = case["parsedResponse"]
    got = [parse_order(venue, o) for o in (result if isinstance(result, list) else [result])]
    assert [(o.client_id, o.venue_id, o.instrument, o.side, o.amount, o.price, o.filled, o.average, o.status, o.ts)
            for o in got] == [_expected_order(venue, p) for p in (parsed if isinstance(parsed, list) else [parsed])]


# --------------------------------------------------------------------------------------------------------------
# Contract sizes and rounding of every linear USDT swap in the dumps


@cache
def _linear_swaps(venue: str) -> tuple[CcxtVenue, tuple[str, ...]]:
    v = _venue(venue, "request")
    raw = v.exchange.markets
    return v, tuple(s for s, m in v.markets().items()
                    if m.type == "swap" and not m.inverse and m.quote == "USDT" and raw[s].get("linear"))


def test_the_dumps_hold_linear_usdt_perpetuals() -> None:
    for venue in VENUES:
        v, swaps = _linear_swaps(venue)
        assert "BTC/USDT:USDT" in swaps, (venue, swaps)
        assert v.markets()["BTC/USDT:USDT"].contract_size == Decimal(v.exchange.markets["BTC/USDT:USDT"]
                                                                          ["contractSize"])


@pytest.mark.parametrize("venue", VENUES)
@settings(max_examples=25)
@given(seed=st.integers(0, 2**32 - 1))
def test_every_linear_perpetual_rounds_contracts_like_ccxt_and_prices_contract_size(venue: str, seed: int) -> None:
    """As tests/unit/operators/execution/test_markets.py for every market, here on the swaps: amounts are contracts,
    the notional is contracts x contract size x price, and our truncation is ccxt's amount_to_precision."""
    v, swaps = _linear_swaps(venue)
    rng = random.Random(seed)
    ex = v.exchange
    for symbol in swaps:
        m = v.markets()[symbol]
        assert m.contract_size == Decimal(str(ex.markets[symbol]["contractSize"])), symbol
        step = m.amount_precision if m.precision_mode == "TICK_SIZE" else Decimal(1).scaleb(-int(m.amount_precision))
        amount = Decimal(rng.randint(1, 9_999_999)).scaleb(step.adjusted() - rng.randint(0, 4))  # contracts
        price = Decimal(rng.randint(1, 9_999_999)).scaleb(rng.randint(-6, 2))
        side = rng.choice(["buy", "sell"])
        a = round_amount(m, amount)
        try:
            ccxt_amount = Decimal(ex.amount_to_precision(symbol, format(amount, "f")))
        except ccxt.InvalidOrder:  # ccxt refuses an amount that rounds to zero
            ccxt_amount = Decimal(0)
        assert a == ccxt_amount, (symbol, amount, a, ccxt_amount)
        p = round_price(m, price, side)
        result = check_order(m, side, amount, price)
        if isinstance(result, Rounded):
            assert (result.amount, result.price) == (a, p)
            assert result.notional == a * m.contract_size * p, (symbol, result)
            assert m.min_cost is None or result.notional >= m.min_cost


def test_a_contract_size_other_than_one_scales_the_notional() -> None:
    """The linear USDT swaps in the dumps all have contract size 1; a 1000-unit contract (as Bybit's 1000PEPE)
    counts 1000 base units a contract, so the notional limit applies to contracts x size x price."""
    v, _ = _linear_swaps("bybit")
    m = replace(v.markets()["BTC/USDT:USDT"], contract_size=Decimal(1000), min_cost=Decimal(5))
    ok = check_order(m, "buy", "0.0012", "10")
    assert isinstance(ok, Rounded) and ok.notional == Decimal("0.001") * 1000 * Decimal("10.0")
    assert check_order(m, "buy", "0.0012", "4").limit == "limits.cost.min"  # type: ignore[union-attr]
