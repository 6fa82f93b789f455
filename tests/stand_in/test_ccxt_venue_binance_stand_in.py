"""CcxtVenue with ccxt's real binance client against a local stand-in of Binance spot's REST API.

The stand-in (tests/stand_in/binance_rest.py) verifies every signature and records every request, so each test
checks the exact requests sent: no order lost or sent twice across 429s, bans, timeouts (accepted or not),
duplicate client ids, rejections and partial fills. Time for rate limits and backoff is a fake clock: waits
advance it instead of sleeping. Only the timeout tests wait for real, for the client's short timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import ccxt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import SHARED_DATA
from operators.execution.order_lifecycle import client_order_id
from operators.execution.rate_limit import NS_PER_S, VENUE_LIMITS, RateLimiter, VenueLimits, Window
from operators.execution.venue import (
    Credentials,
    MissingCredentials,
    OrderRequest,
    Venue,
    credentials_from_env,
)
from sinks.ccxt_venue import CcxtVenue, Throttled, redact, shared_rate_limiter
from stand_in.binance_rest import EXCHANGE_INFO, BinanceStandIn, FakeClock, Fault

pytestmark = pytest.mark.skipif(not (SHARED_DATA / EXCHANGE_INFO).exists(),
                                reason=f"shared data missing: {SHARED_DATA / EXCHANGE_INFO}")

KEY = "PLANTEDkey7f3a9c1e5b2d8f4a6c0e2b4d6f8a1c3e5"
SECRET = "PLANTEDsecret9b8a7c6d5e4f3a2b1c0d9e8f7a6b5c4"
BTC = "binance:BTC/USDT"
ORDER = "/api/v3/order"


@pytest.fixture
def stand_in() -> Iterator[BinanceStandIn]:
    with BinanceStandIn(SHARED_DATA, KEY, SECRET) as s:
        yield s


def make_venue(s: BinanceStandIn, clock: FakeClock, *, secret: str = SECRET, timeout_ms: int = 5_000,
               limits: VenueLimits | None = None, **kw: Any) -> CcxtVenue:
    urls = s.url_overrides(ccxt.binance().urls["api"])
    v = CcxtVenue("binance", Credentials(KEY, secret), clock=clock, sleep=clock.sleep,
                  rate_limiter=RateLimiter(limits or VENUE_LIMITS["binance"]), urls=urls, timeout_ms=timeout_ms, **kw)
    v.markets()
    return v


def cid(seq: int = 0) -> str:
    return client_order_id("main", "parent-1", "binance", seq)


def posts(s: BinanceStandIn) -> list[dict[str, str]]:
    return [r.params for r in s.requests if (r.method, r.path) == ("POST", ORDER)]


def calls(s: BinanceStandIn) -> list[tuple[str, str, int]]:
    return [(r.method, r.path, r.answered) for r in s.requests if r.path != "/api/v3/exchangeInfo"]


def without_time(p: dict[str, str]) -> dict[str, str]:
    assert p["recvWindow"] == "10000" and p["timestamp"].isdigit()
    return {k: v for k, v in p.items() if k not in ("timestamp", "recvWindow")}


def test_submit_sends_one_signed_limit_ioc_on_the_grid_stand_in(stand_in: BinanceStandIn) -> None:
    v = make_venue(stand_in, FakeClock())
    assert isinstance(v, Venue)
    buy = v.submit(OrderRequest(cid(0), BTC, "buy", 0.0123456, 60000.129))
    sell = v.submit(OrderRequest(cid(1), BTC, "sell", 0.02, 60000.121))
    assert [without_time(p) for p in posts(stand_in)] == [
        {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "IOC", "quantity": "0.01234",
         "price": "60000.12", "newClientOrderId": cid(0), "newOrderRespType": "FULL"},
        {"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "IOC", "quantity": "0.02",
         "price": "60000.13", "newClientOrderId": cid(1), "newOrderRespType": "FULL"}]
    assert all(r.signed for r in stand_in.requests if r.path == ORDER)
    assert (buy.status, buy.client_id, buy.filled, buy.average, buy.price) == ("filled", cid(0), 0.01234, 60000.12,
                                                                              60000.12)
    assert sell.venue_id is not None and sell.venue_id != buy.venue_id
    assert v.markets_source == "venue"
    assert stand_in.requests[0].path == "/api/v3/exchangeInfo" and not stand_in.requests[0].signed


def test_an_order_below_the_minimum_is_rejected_and_not_sent_stand_in(stand_in: BinanceStandIn) -> None:
    v = make_venue(stand_in, FakeClock())
    small = v.submit(OrderRequest(cid(), BTC, "buy", 0.0001, 60000.0))  # 6 USDT < min notional 10
    dust = v.submit(OrderRequest(cid(1), BTC, "buy", 0.000001, 60000.0))
    unknown = v.submit(OrderRequest(cid(2), "binance:DOGE/USDT", "buy", 1.0, 0.1))
    assert (small.status, small.reason) == ("rejected", "limits.cost.min: notional 6.00000 below limits.cost.min 10.0")
    assert dust.status == "rejected" and dust.reason.startswith("precision.amount")
    assert unknown.reason == "no market metadata for binance:DOGE/USDT"
    assert posts(stand_in) == []


def test_429_waits_for_retry_after_on_the_fake_clock_then_sends_once_stand_in(stand_in: BinanceStandIn) -> None:
    clock = FakeClock()
    v = make_venue(stand_in, clock)
    stand_in.script("POST", ORDER, Fault("429", retry_after_s=7))
    o = v.submit(OrderRequest(cid(), BTC, "buy", 0.01, 60000.0))
    assert o.status == "filled"
    assert calls(stand_in) == [("POST", ORDER, 429), ("POST", ORDER, 200)]
    assert [p["newClientOrderId"] for p in posts(stand_in)] == [cid(), cid()]
    assert clock.slept and max(clock.slept) >= 7.0  # Retry-After honoured, on the fake clock
    assert v.alerts == []  # throttled for 7 s, below the 60 s alert threshold


def test_418_ban_and_repeated_429s_raise_a_throttled_alert_stand_in(stand_in: BinanceStandIn) -> None:
    clock = FakeClock()
    v = make_venue(stand_in, clock, throttle_alert_s=100.0)
    start = clock.now_ns
    stand_in.script("GET", "/api/v3/account", Fault("418", retry_after_s=60), Fault("429", retry_after_s=50))
    balances = v.fetch_balances()
    assert stand_in.account is not None, "the recorded binance balance reply is missing"
    recorded = {b["asset"]: (float(b["free"]), float(b["locked"])) for b in stand_in.account["balances"]}
    assert {b.currency: (b.free, b.used) for b in balances} == recorded
    assert all(b.total == b.free + b.used for b in balances) and recorded["LTC"] == (0.919741, 0.0)
    assert calls(stand_in) == [("GET", "/api/v3/account", 418), ("GET", "/api/v3/account", 429),
                               ("GET", "/api/v3/account", 200)]
    assert sum(clock.slept) >= 110.0
    assert len(v.alerts) == 1 and isinstance(v.alerts[0], Throttled)
    assert (v.alerts[0].venue, v.alerts[0].since_ns, v.alerts[0].seconds) == ("binance", start, 110.0)


def test_throttled_throughout_gives_up_without_an_order_stand_in(stand_in: BinanceStandIn) -> None:
    v = make_venue(stand_in, FakeClock(), max_attempts=3)
    stand_in.script("POST", ORDER, *[Fault("429", retry_after_s=1)] * 3)
    o = v.submit(OrderRequest(cid(), BTC, "buy", 0.01, 60000.0))
    assert o.status == "new" and "still throttled after 3 attempts" in o.reason  # never reached the venue
    assert stand_in.accepted_orders() == [] and len(posts(stand_in)) == 3


def test_requests_wait_on_the_limiter_instead_of_drawing_429s_stand_in(stand_in: BinanceStandIn) -> None:
    clock = FakeClock()
    tight = VenueLimits(windows={"w": Window(100, 60 * NS_PER_S), "orders": Window(1, 10 * NS_PER_S)},
                        classes={"public": (("w", None),), "private": (("w", None),),
                                 "order": (("w", None), ("orders", 1))}, source="test")
    v = make_venue(stand_in, clock, limits=tight)
    for seq in range(3):
        assert v.submit(OrderRequest(cid(seq), BTC, "buy", 0.01, 60000.0)).status == "filled"
    assert clock.slept == [10.0, 10.0]  # one order per 10 s: the 2nd and 3rd waited
    assert [a for _, _, a in calls(stand_in)] == [200, 200, 200]


def test_timeout_of_an_accepted_order_is_looked_up_not_resent_stand_in(stand_in: BinanceStandIn) -> None:
    v = make_venue(stand_in, FakeClock(), timeout_ms=300)
    stand_in.script("POST", ORDER, Fault("slow", delay_s=0.8))
    o = v.submit(OrderRequest(cid(), BTC, "buy", 0.01, 60000.0))
    assert (o.status, o.client_id, o.filled) == ("filled", cid(), 0.01)
    assert calls(stand_in) == [("POST", ORDER, 200), ("GET", ORDER, 200)]
    lookup = stand_in.requests[-1].params
    assert without_time(lookup) == {"symbol": "BTCUSDT", "origClientOrderId": cid()}
    assert len(stand_in.accepted_orders()) == 1


def test_timeout_of_a_lost_order_resends_it_once_with_the_same_id_stand_in(stand_in: BinanceStandIn) -> None:
    v = make_venue(stand_in, FakeClock(), timeout_ms=300)
    stand_in.script("POST", ORDER, Fault("lost", delay_s=0.8))
    o = v.submit(OrderRequest(cid(), BTC, "sell", 0.01, 60000.0))
    assert o.status == "filled"
    assert calls(stand_in) == [("POST", ORDER, 504), ("GET", ORDER, 400), ("POST", ORDER, 200)]
    assert [p["newClientOrderId"] for p in posts(stand_in)] == [cid(), cid()]
    assert len(stand_in.accepted_orders()) == 1


def test_duplicate_client_id_returns_the_existing_order_stand_in(stand_in: BinanceStandIn) -> None:
    v = make_venue(stand_in, FakeClock())
    stand_in.script("POST", ORDER, Fault("rest"))  # the first stays open on the book
    first = v.submit(OrderRequest(cid(), BTC, "buy", 0.01, 50000.0))
    again = v.submit(OrderRequest(cid(), BTC, "buy", 0.01, 50000.0))  # a resubmission after a crash
    assert first.status == again.status == "accepted" and again.venue_id == first.venue_id
    assert calls(stand_in) == [("POST", ORDER, 200), ("POST", ORDER, 400), ("GET", ORDER, 200)]
    assert len(stand_in.accepted_orders()) == 1


def test_scripted_duplicate_rejection_after_a_fill_returns_the_fill_stand_in(stand_in: BinanceStandIn) -> None:
    v = make_venue(stand_in, FakeClock())
    done = v.submit(OrderRequest(cid(), BTC, "buy", 0.01, 60000.0))
    stand_in.script("POST", ORDER, Fault("duplicate"))
    again = v.submit(OrderRequest(cid(), BTC, "buy", 0.01, 60000.0))
    assert again == done
    assert len(stand_in.accepted_orders()) == 1


def test_insufficient_balance_is_a_rejection_without_retry_stand_in(stand_in: BinanceStandIn) -> None:
    v = make_venue(stand_in, FakeClock())
    stand_in.script("POST", ORDER, Fault("insufficient"))
    o = v.submit(OrderRequest(cid(), BTC, "buy", 0.01, 60000.0))
    assert o.status == "rejected" and o.venue_id is None
    assert o.reason.startswith("InsufficientFunds: ") and "insufficient balance" in o.reason
    assert calls(stand_in) == [("POST", ORDER, 400)]


def test_a_wrong_secret_fails_the_signature_check_and_is_not_retried_stand_in(stand_in: BinanceStandIn) -> None:
    v = make_venue(stand_in, FakeClock(), secret="not-the-planted-secret")
    o = v.submit(OrderRequest(cid(), BTC, "buy", 0.01, 60000.0))
    assert o.status == "rejected" and "Signature for this request is not valid" in o.reason
    assert calls(stand_in) == [("POST", ORDER, 400)]


def test_partial_fill_expires_the_rest_and_shows_in_my_trades_stand_in(stand_in: BinanceStandIn) -> None:
    v = make_venue(stand_in, FakeClock())
    stand_in.script("POST", ORDER, Fault("partial", fill_ratio=0.4))
    o = v.submit(OrderRequest(cid(), BTC, "buy", 0.05, 60000.0))
    assert (o.status, o.filled, o.amount, o.average) == ("expired", 0.02, 0.05, 60000.0)
    fills = v.fetch_my_trades(BTC, since_ns=0)
    assert [(f.venue_order_id, f.amount, f.price, f.fee_currency) for f in fills] == [(o.venue_id, 0.02, 60000.0,
                                                                                       "USDT")]
    assert fills[0].fee == pytest.approx(0.02 * 60000.0 * 0.001)
    assert without_time(stand_in.requests[-1].params) == {"symbol": "BTCUSDT", "startTime": "0"}
    assert len(stand_in.accepted_orders()) == 1


def test_open_orders_and_cancel_by_client_id_stand_in(stand_in: BinanceStandIn) -> None:
    v = make_venue(stand_in, FakeClock())
    stand_in.script("POST", ORDER, Fault("rest"))
    placed = v.submit(OrderRequest(cid(), BTC, "buy", 0.01, 50000.0))
    assert [(o.client_id, o.status) for o in v.fetch_open_orders(BTC)] == [(cid(), "accepted")]
    assert [o.client_id for o in v.fetch_open_orders()] == [cid()]
    cancelled = v.cancel(cid(), BTC)
    assert (cancelled.status, cancelled.venue_id) == ("cancelled", placed.venue_id)
    assert v.fetch_open_orders(BTC) == []
    delete = [r for r in stand_in.requests if r.method == "DELETE"]
    assert len(delete) == 1 and without_time(delete[0].params) == {"symbol": "BTCUSDT", "origClientOrderId": cid()}
    assert [without_time(r.params) for r in stand_in.requests if r.path == "/api/v3/openOrders"] == [
        {"symbol": "BTCUSDT"}, {}, {"symbol": "BTCUSDT"}]
    assert v.fetch_positions() == []


def test_planted_key_and_secret_never_appear_in_logs_output_or_reprs_stand_in(
        stand_in: BinanceStandIn, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)  # ccxt and urllib3 log requests (headers, signed URLs) at debug
    v = make_venue(stand_in, FakeClock(), timeout_ms=300)
    stand_in.script("POST", ORDER, Fault("429", retry_after_s=1), Fault("slow", delay_s=0.8), Fault("insufficient"))
    results: list[object] = [v.submit(OrderRequest(cid(0), BTC, "buy", 0.01, 60000.0)),
                             v.submit(OrderRequest(cid(1), BTC, "buy", 0.01, 60000.0)),
                             v.fetch_balances(), v.fetch_open_orders(BTC), v.fetch_my_trades(BTC)]
    print(results, v, v.exchange.headers)
    out = capsys.readouterr()
    texts = [caplog.text, out.out, out.err, repr(v), str(v), repr(results), repr(Credentials(KEY, SECRET)),
             f"{Credentials(KEY, SECRET)}", str(Credentials(KEY, SECRET, "pw-PLANTED"))]
    assert "POST" in caplog.text and "/api/v3/order" in caplog.text  # the logs were captured at all
    for text in texts:
        assert KEY not in text and SECRET not in text and "pw-PLANTED" not in text
        assert "signature=" not in text.replace("signature=***", "")
    assert redact(f"x {KEY} y {SECRET}") == "x *** y ***"


def test_credentials_from_env_names_the_missing_variable_only() -> None:
    env = {"HEADRACE_API_KEY_BINANCE": KEY, "HEADRACE_API_SECRET_BINANCE": SECRET}
    c = credentials_from_env("binance", env)
    assert (c.api_key, c.secret, c.password) == (KEY, SECRET, None)
    with pytest.raises(MissingCredentials, match=r"^HEADRACE_API_SECRET_OKX is not set") as info:
        credentials_from_env("okx", {"HEADRACE_API_KEY_OKX": KEY, "HEADRACE__API_SECRET_OKX": SECRET})
    assert KEY not in str(info.value) and SECRET not in str(info.value)
    with pytest.raises(MissingCredentials, match="HEADRACE_API_PASSWORD_OKX"):
        credentials_from_env("okx", {"HEADRACE_API_KEY_OKX": "k", "HEADRACE_API_SECRET_OKX": "s"}, password=True)


def test_one_rate_limiter_per_venue_in_a_process() -> None:
    a = CcxtVenue("binance", Credentials(KEY, SECRET))
    b = CcxtVenue("binance")
    assert a.limiter is b.limiter is shared_rate_limiter("binance")
    assert shared_rate_limiter("okx") is not a.limiter


def test_sandbox_mode_points_at_the_testnet_then_the_overrides() -> None:
    v = CcxtVenue("binance", Credentials(KEY, SECRET), sandbox=True)
    assert v.exchange.urls["api"]["private"].startswith("https://testnet.binance.vision")
    w = CcxtVenue("binance", sandbox=True, urls={"private": "http://127.0.0.1:1/api/v3"})
    assert w.exchange.urls["api"]["private"] == "http://127.0.0.1:1/api/v3"


FAULTS = st.sampled_from([Fault("429", retry_after_s=2), Fault("418", retry_after_s=5), Fault("duplicate"),
                          Fault("insufficient"), Fault("partial", fill_ratio=0.5), Fault("rest")])


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[BinanceStandIn, CcxtVenue]]:
    with BinanceStandIn(SHARED_DATA, KEY, SECRET) as s:
        yield s, make_venue(s, FakeClock(), max_attempts=3)


@settings(max_examples=25, deadline=None)
@given(faults=st.lists(FAULTS, max_size=4), seq=st.integers(0, 10**9))
def test_no_order_lost_or_sent_twice_under_any_fault_sequence_stand_in(
        shared: tuple[BinanceStandIn, CcxtVenue], faults: list[Fault], seq: int) -> None:
    s, v = shared
    s.faults.clear()
    s.script("POST", ORDER, *faults)
    client_id = client_order_id("main", f"prop-{len(s.requests)}", "binance", seq)
    o = v.submit(OrderRequest(client_id, BTC, "buy", 0.01, 60000.0))
    mine = [r for r in s.requests if r.path == ORDER and r.params.get("newClientOrderId") == client_id]
    accepted = [r for r in mine if r.answered == 200]
    assert len(accepted) <= 1
    on_venue = {str(x.order_id) for x in s.orders.values() if x.client_id == client_id}
    if o.status in ("accepted", "partially_filled", "filled", "expired"):
        assert len(accepted) == 1 and on_venue == {o.venue_id}
    else:  # rejected before acceptance, or never got through the throttles: nothing on the venue
        assert o.status in ("rejected", "new") and accepted == [] and on_venue == set()
