"""CcxtExecutor (the routed account's live executor) with ccxt's real binance client against the Binance stand-in.

The stand-in (tests/stand_in/binance_rest.py) verifies every signature and records every request, so each test
checks the exact requests sent and that the Execution's fills are the stand-in's own trades. Rate-limit waits run
on a fake clock; only the timeout test waits for real, for the client's short timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal

import ccxt
import pytest

from headrace.events import Order
from helpers import SHARED_DATA
from operators.execution.order_lifecycle import client_order_id
from operators.execution.rate_limit import NS_PER_S, VENUE_LIMITS, RateLimiter
from operators.execution.reconcile import Tolerance
from operators.execution.venue import Credentials, OrderRequest
from operators.positions.routed_account import Execution, Executor
from sinks.ccxt_executor import CcxtExecutor, child_seq
from sinks.ccxt_venue import CcxtVenue
from stand_in.binance_rest import EXCHANGE_INFO, BinanceStandIn, FakeClock, Fault

pytestmark = pytest.mark.skipif(not (SHARED_DATA / EXCHANGE_INFO).exists(),
                                reason=f"shared data missing: {SHARED_DATA / EXCHANGE_INFO}")

KEY = "PLANTEDexecKey4d2c8e1f7a3b9c5d0e6f2a8b4c1d7e3"
SECRET = "PLANTEDexecSecret8e2f6a0b4c9d3e7f1a5b9c2d6e0f4"
BTC = "binance:BTC/USDT"
ORDER = "/api/v3/order"
BALANCES = {"BTC": ("1.00000000", "0.00000000"), "USDT": ("100000.00000000", "0.00000000")}


@pytest.fixture
def stand_in() -> Iterator[BinanceStandIn]:
    with BinanceStandIn(SHARED_DATA, KEY, SECRET, balances=dict(BALANCES)) as s:
        yield s


def make_executor(s: BinanceStandIn, *, timeout_ms: int = 5_000, max_attempts: int = 5,
                  throttle_alert_s: float = 60.0, tolerance: Tolerance | None = None) -> CcxtExecutor:
    clock = FakeClock()
    venue = CcxtVenue("binance", Credentials(KEY, SECRET), clock=clock, sleep=clock.sleep,
                      rate_limiter=RateLimiter(VENUE_LIMITS["binance"]),
                      urls=s.url_overrides(ccxt.binance().urls["api"]),
                      timeout_ms=timeout_ms, max_attempts=max_attempts, throttle_alert_s=throttle_alert_s)
    return CcxtExecutor("main", {"binance": venue}, throttle_alert_s=throttle_alert_s,
                        tolerance=tolerance or Tolerance(absolute=Decimal("0.01"), relative=Decimal("0.0001")))


def child(n: int = 1, side: str = "buy", amount: float = 0.01, price: float = 60000.0,
          instrument: str = BTC) -> Order:
    return Order(order_id=f"child-{n}", account="main", instrument=instrument, ts_event=0, side=side,  # type: ignore[arg-type]
                 amount=amount, reason="route", target_weight=0.1, parent_id="parent-1", limit_price=price)


def cid(n: int = 1) -> str:
    return client_order_id("main", "parent-1", "binance", child_seq(f"child-{n}"))


def posts(s: BinanceStandIn) -> list[dict[str, str]]:
    return [{k: v for k, v in r.params.items() if k not in ("timestamp", "recvWindow")}
            for r in s.requests if (r.method, r.path) == ("POST", ORDER)]


def calls(s: BinanceStandIn) -> list[tuple[str, str, int]]:
    return [(r.method, r.path, r.answered) for r in s.requests if r.path != "/api/v3/exchangeInfo"]


def venue_fills(s: BinanceStandIn) -> list[tuple[str, float, float, float]]:
    return [(str(t["id"]), float(t["price"]), float(t["qty"]), float(t["commission"])) for t in s.trades]


def now_ns() -> int:  # the stand-in stamps trades with the wall clock; a check "now" sees them in its window
    return time.time_ns() + NS_PER_S


def test_submit_sends_one_limit_ioc_and_returns_the_venues_fills_stand_in(stand_in: BinanceStandIn) -> None:
    ex: Executor = make_executor(stand_in)  # the account step's protocol (checked by mypy)
    assert isinstance(ex, CcxtExecutor)
    e = ex.submit(child(1, "buy", 0.0123456, 60000.129), 0)
    assert posts(stand_in) == [{"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "IOC",
                                "quantity": "0.01234", "price": "60000.12", "newClientOrderId": cid(1),
                                "newOrderRespType": "FULL"}]
    assert (e.status, e.reason) == ("filled", "fills from the venue's trades")
    assert list(e.fills) == venue_fills(stand_in) == [("1", 60000.12, 0.01234, 0.74040148)]
    assert [r.path for r in stand_in.requests if r.method == "GET"][-1] == "/api/v3/myTrades"
    assert ex.client_id(child(1)) == cid(1) != ex.client_id(child(2))


def test_partial_fill_is_cancelled_with_the_filled_part_stand_in(stand_in: BinanceStandIn) -> None:
    ex = make_executor(stand_in)
    stand_in.script("POST", ORDER, Fault("partial", fill_ratio=0.4))
    e = ex.submit(child(1, "sell", 0.05), 0)
    assert e.status == "cancelled"
    assert e.reason == ("IOC: 0.02 of 0.05 filled, the rest expired by the venue; fills from the venue's trades")
    assert list(e.fills) == venue_fills(stand_in) and sum(f[2] for f in e.fills) == 0.02
    assert len(stand_in.accepted_orders()) == 1


def test_insufficient_balance_is_rejected_with_the_venues_reason_stand_in(stand_in: BinanceStandIn) -> None:
    ex = make_executor(stand_in)
    stand_in.script("POST", ORDER, Fault("insufficient"))
    e = ex.submit(child(), 0)
    assert (e.status, e.fills) == ("rejected", ())
    assert e.reason.startswith("InsufficientFunds: ") and "insufficient balance" in e.reason
    assert calls(stand_in) == [("GET", ORDER, 400), ("POST", ORDER, 400)]  # a final error: no retry, no trades


def test_a_resubmission_after_a_crash_is_not_sent_again_stand_in(stand_in: BinanceStandIn) -> None:
    first = make_executor(stand_in).submit(child(1), 0)
    again = make_executor(stand_in).submit(child(1), 0)  # a fresh process re-deciding the same child
    assert again == first and first.status == "filled" and len(first.fills) == 1
    assert len(stand_in.accepted_orders()) == 1 and len(posts(stand_in)) == 1
    lookups = [r.params for r in stand_in.requests if (r.method, r.path) == ("GET", ORDER)]
    assert [(p["symbol"], p["origClientOrderId"]) for p in lookups] == [("BTCUSDT", cid(1))] * 2


def test_a_resubmitted_child_found_working_is_cancelled_not_sent_stand_in(stand_in: BinanceStandIn) -> None:
    ex = make_executor(stand_in)
    stand_in.script("POST", ORDER, Fault("rest"))
    ex.venues["binance"].submit(OrderRequest(cid(1), BTC, "buy", 0.01, 50000.0))  # sent before a crash, still open
    e = ex.submit(child(1), 0)
    assert (e.status, e.fills) == ("cancelled", ()) and len(posts(stand_in)) == 1
    assert [r.method for r in stand_in.requests if r.path == ORDER] == ["POST", "GET", "DELETE"]


def test_a_failed_lookup_sends_nothing_stand_in(stand_in: BinanceStandIn) -> None:
    ex = make_executor(stand_in, max_attempts=2)
    stand_in.script("GET", ORDER, *[Fault("429", retry_after_s=1)] * 2)
    e = ex.submit(child(1), 0)
    assert e.status == "unknown" and e.reason.startswith(f"client id {cid(1)}: not sent")
    assert posts(stand_in) == []


def test_fills_are_estimated_when_the_trades_cannot_be_read_stand_in(stand_in: BinanceStandIn) -> None:
    ex = make_executor(stand_in, max_attempts=2)
    stand_in.script("GET", "/api/v3/myTrades", *[Fault("429", retry_after_s=1)] * 2)
    e = ex.submit(child(1, amount=0.02), 0)
    order_id = str(max(stand_in.orders))
    assert e.status == "filled" and e.fills == ((f"{order_id}-estimated", 60000.0, 0.02, 60000.0 * 0.02 * 0.001),)
    assert e.reason == "fills estimated: filled x average, fee at the taker fee 0.001 (trades unavailable " \
                       "(VenueUnavailable))"
    r = ex.reconcile(now_ns(), {("binance", "USDT"): 100000.0})  # the venue's fill of a known order: adopted
    assert (r.records, r.stopped) == ((), frozenset())


def test_an_unconfigured_venue_or_a_market_order_is_rejected_unsent_stand_in(stand_in: BinanceStandIn) -> None:
    ex = make_executor(stand_in)
    e = ex.submit(child(instrument="kraken:BTC/USD"), 0)
    assert e == Execution((), "rejected", "venue 'kraken' is not configured for live trading (configured: binance)")
    market = ex.submit(replace(child(), limit_price=None), 0)
    assert market == Execution((), "rejected", "a market order: live children are sent as IOC limits only")
    assert ex.submit(child(instrument="binance:NOPE/USDT"), 0).reason == "no market metadata for binance:NOPE/USDT"
    assert posts(stand_in) == []


def test_timeout_of_an_accepted_order_gives_one_order_and_its_fills_stand_in(stand_in: BinanceStandIn) -> None:
    ex = make_executor(stand_in, timeout_ms=300)
    stand_in.script("POST", ORDER, Fault("slow", delay_s=0.7))
    e = ex.submit(child(), 0)
    assert len(stand_in.accepted_orders()) == 1 and [p["newClientOrderId"] for p in posts(stand_in)] == [cid()]
    assert calls(stand_in)[:3] == [("GET", ORDER, 400), ("POST", ORDER, 200), ("GET", ORDER, 200)]  # not resent
    assert e.status == "filled" and list(e.fills) == venue_fills(stand_in) and len(e.fills) == 1


def test_an_ioc_left_on_the_book_is_cancelled_and_no_open_order_remains_stand_in(stand_in: BinanceStandIn) -> None:
    ex = make_executor(stand_in)
    stand_in.script("POST", ORDER, Fault("rest"))
    e = ex.submit(child(), 0)
    assert (e.status, e.fills) == ("cancelled", ())
    assert [r.method for r in stand_in.requests if r.path == ORDER] == ["GET", "POST", "DELETE"]
    r = ex.reconcile(now_ns(), {("binance", "USDT"): 100000.0})
    assert (r.records, r.stopped) == ((), frozenset())


def test_reconcile_beyond_tolerance_stops_the_venue_with_both_values_stand_in(stand_in: BinanceStandIn) -> None:
    ex = make_executor(stand_in)
    ts = now_ns()
    r = ex.reconcile(ts, {("binance", "USDT"): 99000.0, ("binance", "BTC"): 1.0})
    assert [(x.kind, x.key, x.local, x.venue_value, x.difference, x.within_tolerance, x.action)
            for x in r.records] == [("balance", "USDT", "99000.0", "100000.0", "+1000", False, "stop")]
    assert r.stopped == frozenset({"binance"})
    assert r.balances == (("binance", "BTC", 1.0), ("binance", "USDT", 100000.0))  # only the tracked currencies
    alerts = ex.alerts(ts)
    assert [(a.kind, a.venue) for a in alerts] == [("reconciliation", "binance")]
    assert "balance USDT: local 99000.0, venue 100000.0, difference +1000" in alerts[0].message
    assert ex.alerts(ts) == []  # drained
    assert [r.path for r in stand_in.requests if r.signed] == ["/api/v3/account", "/api/v3/openOrders"]


def test_reconcile_within_tolerance_continues_and_matches_the_fills_seen_stand_in(stand_in: BinanceStandIn) -> None:
    ex = make_executor(stand_in)
    stand_in.script("POST", ORDER, Fault("partial", fill_ratio=0.5))
    assert ex.submit(child(1), 0).status == "cancelled"
    assert ex.submit(child(2, "sell"), 0).status == "filled"
    r = ex.reconcile(now_ns(), {("binance", "USDT"): 100000.004})  # 0.004 within the absolute 0.01
    assert [(x.key, x.within_tolerance, x.action) for x in r.records] == [("USDT", True, "continue")]
    assert r.stopped == frozenset() and r.balances == (("binance", "USDT", 100000.0),)
    assert ex.alerts(0) == []
    trades = [x for x in stand_in.requests if x.path == "/api/v3/myTrades"]
    assert trades[-1].params["symbol"] == "BTCUSDT"  # the fills of the traded instrument were compared


def test_an_open_order_or_an_unseen_fill_on_the_venue_is_a_difference_stand_in(stand_in: BinanceStandIn) -> None:
    ex = make_executor(stand_in)
    ex.submit(child(1), 0)  # makes the instrument one the executor trades
    venue = ex.venues["binance"]
    stand_in.script("POST", ORDER, Fault("rest"))
    venue.submit(OrderRequest("elsewhere-1", BTC, "buy", 0.01, 50000.0))  # an order not sent by this account
    venue.submit(OrderRequest("elsewhere-2", BTC, "sell", 0.01, 60000.0))  # and a fill it never saw
    r = ex.reconcile(now_ns(), {("binance", "USDT"): 100000.0})
    assert sorted((x.kind, x.key, x.difference, x.action) for x in r.records) == [
        ("fill", "2", "missing locally", "stop"), ("open_order", "elsewhere-1", "missing locally", "stop")]
    assert r.stopped == frozenset({"binance"})


def test_a_throttled_venue_raises_an_alert_and_one_that_does_not_answer_is_stopped_stand_in(
        stand_in: BinanceStandIn) -> None:
    ex = make_executor(stand_in, max_attempts=3, throttle_alert_s=100.0)
    stand_in.script("GET", "/api/v3/account", *[Fault("429", retry_after_s=40)] * 3)
    r = ex.reconcile(5, {("binance", "USDT"): 100000.0})
    assert r.stopped == frozenset({"binance"}) and r.balances == ()
    (rec,) = r.records
    assert (rec.kind, rec.key, rec.action, rec.within_tolerance) == ("venue", "binance", "stop", False)
    assert rec.difference.startswith("no answer from the venue: VenueUnavailable: binance fetch_balance: still "
                                     "throttled after 3 attempts")
    alerts = ex.alerts(7)
    assert [(a.kind, a.venue, a.ts_event) for a in alerts] == [("throttled", "binance", 7),  # when drained
                                                               ("reconciliation", "binance", 5)]  # when found
    assert alerts[0].message.startswith("binance throttled for 1")  # >= 100 s, on the fake clock
    assert calls(stand_in) == [("GET", "/api/v3/account", 429)] * 3


def test_a_short_throttle_raises_no_alert_stand_in(stand_in: BinanceStandIn) -> None:
    ex = make_executor(stand_in, throttle_alert_s=100.0)
    stand_in.script("GET", "/api/v3/account", Fault("429", retry_after_s=30))
    assert ex.reconcile(now_ns(), {("binance", "USDT"): 100000.0}).stopped == frozenset()
    assert ex.alerts(0) == []


def test_planted_key_and_secret_never_appear_anywhere_stand_in(
        stand_in: BinanceStandIn, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    ex = make_executor(stand_in, max_attempts=2, throttle_alert_s=10.0)
    stand_in.script("POST", ORDER, Fault("insufficient"), Fault("partial", fill_ratio=0.5))
    stand_in.script("GET", "/api/v3/account", *[Fault("429", retry_after_s=20)] * 2)
    results: list[object] = [ex.submit(child(1), 0), ex.submit(child(2), 0),
                             ex.reconcile(now_ns(), {("binance", "USDT"): 1.0}),
                             ex.reconcile(now_ns(), {("binance", "USDT"): 1.0}), ex.alerts(0), ex]
    print(results)
    out = capsys.readouterr()
    assert "/api/v3/order" in caplog.text and any(isinstance(x, list) and x for x in results)
    for text in (caplog.text, out.out, out.err, repr(results)):
        assert KEY not in text and SECRET not in text
