"""Parsing of recorded venue websocket and REST payloads (shared/data/responses, ticks/kraken, book/),
and quarantine of malformed variants of each."""

from __future__ import annotations

import copy
import csv
import dataclasses
import gzip
import itertools
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import SHARED_DATA
from sources.ws_messages import (
    BookUpdate,
    Parsed,
    check_sequence,
    parse_message,
    quote_chunk,
    trade_chunk,
    unified_symbol,
)

NAUT = SHARED_DATA / "responses" / "nautilus"
pytestmark = pytest.mark.skipif(not NAUT.exists(), reason="shared data missing (../shared/data/responses)")
MS = 1_000_000


def parse_file(venue: str, name: str) -> Parsed:
    return parse_message(venue, (NAUT / venue / name).read_text(), source=name)


def ok(p: Parsed) -> Parsed:
    assert p.rejected == (), [q.reason for q in p.rejected]
    return p


# ---------------------------------------------------------------------------------------------------
# okx


def test_okx_ws_trades() -> None:
    (t,) = ok(parse_file("okx", "ws_trades.json")).trades
    assert (t.symbol, t.ts_event, t.price, t.amount, t.side, t.trade_id) == (
        "BTC-USD", 1630048897897 * MS, 42219.9, 0.12060306, 1, "130639474")


def test_okx_rest_trades() -> None:
    p = ok(parse_file("okx", "http_get_trades.json"))
    assert [(t.trade_id, t.side, t.price, t.amount) for t in p.trades] == [
        ("734864333", -1, 102537.9, 0.00013669), ("734864332", 1, 102537.9, 0.0000125)]


def test_okx_ws_tickers_is_a_quote() -> None:
    (q,) = ok(parse_file("okx", "ws_tickers.json")).quotes
    assert (q.symbol, q.ts_event, q.bid, q.ask, q.bid_size, q.ask_size) == (
        "BTC-USDT", 1597026383085 * MS, 8888.88, 9999.99, 5.0, 11.0)


def test_okx_books_snapshot_and_update_carry_seq_ids() -> None:
    (snap,) = ok(parse_file("okx", "ws_books_snapshot.json")).books
    (upd,) = ok(parse_file("okx", "ws_books_update.json")).books
    assert (snap.kind, snap.last_id, snap.prev_id, snap.checksum) == ("snapshot", 123456, -1, -855196043)
    assert (upd.kind, upd.last_id, upd.prev_id) == ("delta", 123457, 123456)
    assert snap.asks[0] == (8476.98, 415.0) and snap.bids[0] == (8476.97, 256.0) and len(snap.asks) == 8
    assert check_sequence(snap, upd) is None
    later = BookUpdate("BTC-USDT", 1, "delta", (), (), first_id=123460, last_id=123460, prev_id=123459)
    assert check_sequence(upd, later) == "sequence gap: expected 123457 got 123459"


def test_okx_rest_order_book() -> None:
    (b,) = ok(parse_file("okx", "http_get_order_book.json")).books
    assert b.ts_event == 1704067200000 * MS and b.bids[0] == (41006.7, 0.487921) and b.asks[-1] == (41007.0, 2.0584253)


def test_okx_candles_and_funding_are_not_streamed() -> None:
    for name in ("ws_candle.json", "ws_funding_rate.json", "http_get_candlesticks.json",
                 "http_get_funding_rate_history.json"):
        assert parse_file("okx", name) == Parsed()


# ---------------------------------------------------------------------------------------------------
# bybit


def test_bybit_ws_trade_and_rest_trades() -> None:
    (t,) = ok(parse_file("bybit", "ws_public_trade.json")).trades
    assert (t.symbol, t.ts_event, t.price, t.amount, t.side) == ("BTCUSDT", 1709891679000 * MS, 27451.0, 0.01, 1)
    assert t.trade_id == "9dc75fca-4bdd-4773-9f78-6f5d7ab2a110"
    (r,) = ok(parse_file("bybit", "http_get_trades_recent.json")).trades
    assert (r.price, r.amount, r.side, r.trade_id) == (27450.5, 0.005, 1, "a905d5c3-1ed0-4f37-83e4-9c73a2fe2f01")


def test_bybit_ticker_is_a_quote() -> None:
    (q,) = ok(parse_file("bybit", "ws_ticker_linear.json")).quotes
    assert (q.ts_event, q.bid, q.ask, q.bid_size, q.ask_size) == (1673272861686 * MS, 17215.5, 17216.0, 84.489, 83.02)


def test_bybit_orderbook_snapshot_delta_and_rest() -> None:
    (s,) = ok(parse_file("bybit", "ws_orderbook_snapshot.json")).books
    (d,) = ok(parse_file("bybit", "ws_orderbook_delta.json")).books
    (r,) = ok(parse_file("bybit", "http_get_orderbook.json")).books
    assert (s.kind, s.last_id, s.seq, s.bids) == ("snapshot", 123456789, 987654321, ((27450.0, 0.5), (27449.5, 1.0)))
    assert (d.kind, d.last_id, d.seq, d.asks) == ("delta", 123456790, 987654322, ((27451.0, 0.0),))
    assert check_sequence(s, d) is None
    assert (r.last_id, r.seq, len(r.bids), len(r.asks)) == (1234567, 9876543, 3, 3)


def test_bybit_recorded_ob500_stream_chains_without_gaps() -> None:
    path = SHARED_DATA / "book" / "bybit" / "xrpusdt-ob500.data.zip"
    with zipfile.ZipFile(path) as z:
        lines = z.read(z.namelist()[0]).decode().splitlines()
    books = [ok(parse_message("bybit", line)).books[0] for line in lines]
    assert [b.kind for b in books] == ["snapshot"] + ["delta"] * 49
    assert [check_sequence(a, b) for a, b in itertools.pairwise(books)] == [None] * 49
    assert books[0].ts_event == 1733011200691 * MS and books[-1].ts_event == 1733011205490 * MS
    dropped = books[:10] + books[11:]  # one message lost on the way
    assert check_sequence(dropped[9], dropped[10]) == f"sequence gap: expected {books[10].last_id} got " \
                                                      f"{books[11].last_id}"


# ---------------------------------------------------------------------------------------------------
# kraken


def test_kraken_ws_trade_ticker_book() -> None:
    p = ok(parse_file("kraken", "ws_trade_update.json"))
    assert [(t.trade_id, t.side, t.price, t.amount) for t in p.trades] == [
        ("10218208", 1, 105944.2, 0.00027625), ("10218209", -1, 105910.5, 0.0001246)]
    assert p.trades[1].ts_event == 1696613756123456000  # 2023-10-06T17:35:56.123456Z
    (q,) = ok(parse_file("kraken", "ws_ticker_snapshot.json")).quotes
    assert (q.bid, q.ask, q.bid_size, q.ask_size) == (105944.2, 105944.3, 2.5, 3.2)
    (s,) = ok(parse_file("kraken", "ws_book_snapshot.json")).books
    (u,) = ok(parse_file("kraken", "ws_book_update.json")).books
    assert (s.kind, s.checksum, len(s.bids), u.kind, u.checksum, u.bids, u.asks) == (
        "snapshot", 2439117997, 3, "delta", 2114181697, ((105944.2, 0.25),), ())


def test_kraken_rest_book_ticker_and_futures_book() -> None:
    (b,) = ok(parse_file("kraken", "http_order_book.json")).books
    assert b.symbol == "XBTUSDT" and b.asks[0] == (105944.3, 0.136) and b.ts_event == 1762820249 * 10**9
    (q,) = ok(parse_file("kraken", "http_ticker.json")).quotes
    assert (q.bid, q.ask, q.bid_size, q.ask_size) == (105944.2, 105944.3, 1.0, 1.0)
    (f,) = ok(parse_file("kraken", "http_futures_orderbook.json")).books
    assert f.bids[0] == (105900.0, 0.5) and len(f.asks) == 3
    assert parse_file("kraken", "http_futures_historical_funding_rates.json") == Parsed()


def test_kraken_recorded_rest_trades_1000() -> None:
    path = SHARED_DATA / "ticks" / "kraken" / "XBTUSDT-http_trades.json.gz"
    raw = gzip.decompress(path.read_bytes())
    p = ok(parse_message("kraken", raw, source=str(path)))
    assert len(p.trades) == 1000
    recorded = json.loads(raw)["result"]["XBTUSDT"]
    assert [t.price for t in p.trades] == [float(r[0]) for r in recorded]
    assert [t.amount for t in p.trades] == [float(r[1]) for r in recorded]
    assert [t.trade_id for t in p.trades] == [str(r[6]) for r in recorded]
    assert [t.side for t in p.trades] == [1 if r[3] == "b" else -1 for r in recorded]
    ts = np.array([t.ts_event for t in p.trades])
    assert np.all(np.diff(ts) >= 0)
    assert ts[0] // 10**9 == 1762795433 and ts[-1] // 10**9 == 1762820035  # 17:23:53 .. 00:13:55 UTC
    chunk = trade_chunk("kraken:" + unified_symbol("kraken", "XBTUSDT"), p.trades, 5, str(path))
    assert chunk.instrument == "kraken:BTC/USDT" and len(chunk) == 1000 and chunk.origin.row[-1] == 999


# ---------------------------------------------------------------------------------------------------
# coinbase


def test_coinbase_ws_trades_and_ticker() -> None:
    p = ok(parse_file("coinbase", "ws_market_trades.json"))
    assert [(t.trade_id, t.side, t.price, t.amount) for t in p.trades] == [
        ("995098700", 1, 68900.5, 0.0015), ("995098701", -1, 68900.0, 0.05)]
    (q,) = ok(parse_file("coinbase", "ws_ticker.json")).quotes
    assert (q.symbol, q.bid, q.ask, q.bid_size, q.ask_size) == ("BTC-USD", 68900.0, 68901.0, 1.5, 0.5)
    assert q.ts_event == 1775572203 * 10**9  # the message's 2026-04-07T14:30:03Z


def test_coinbase_rest_book_and_ticker() -> None:
    (b,) = ok(parse_file("coinbase", "http_product_book.json")).books
    assert b.bids[0] == (68923.66, 0.17189468) and b.asks[0] == (68923.67, 0.16987193) and len(b.asks) == 5
    p = ok(parse_file("coinbase", "http_ticker.json"))
    assert len(p.trades) == 3 and p.trades[0].side == -1
    (q,) = p.quotes
    assert (q.bid, q.ask) == (68923.66, 68923.67) and q.ts_event == max(t.ts_event for t in p.trades)
    assert parse_file("coinbase", "ws_candles.json") == parse_file("coinbase", "http_candles.json") == Parsed()


# ---------------------------------------------------------------------------------------------------
# binance: recorded REST/WS payloads and the futures depth files (book/)


def test_binance_payloads() -> None:
    (t,) = ok(parse_file("binance", "futures__market_data_json__agg_trade_stream.json")).trades
    assert (t.trade_id, t.side, t.price, t.amount) == ("5933014", -1, 0.001, 100.0)
    (q,) = ok(parse_file("binance", "futures__market_data_json__book_ticker_stream.json")).quotes
    assert (q.bid, q.bid_size, q.ask, q.ask_size, q.ts_event) == (25.3519, 31.21, 25.3652, 40.66, 1568014460893 * MS)
    (d,) = ok(parse_file("binance", "futures__market_data_json__depth_update_stream.json")).books
    assert (d.first_id, d.last_id, d.prev_id) == (157, 160, 149)
    (s,) = ok(parse_file("binance", "spot__http_json__depth_response.json")).books
    assert (s.kind, s.last_id, s.bids, s.asks) == ("snapshot", 1027024, ((4.0, 431.0),), ((4.000002, 12.0),))


def _depth_messages(path: Path) -> list[dict[str, Any]]:
    by_update: dict[tuple[str, str, str], dict[str, Any]] = {}
    with path.open() as f:
        for r in csv.DictReader(f):
            key = (r["timestamp"], r["first_update_id"], r["last_update_id"])
            m = by_update.setdefault(key, {"e": "depthUpdate", "E": int(r["timestamp"]), "s": r["symbol"],
                                           "U": int(r["first_update_id"]), "u": int(r["last_update_id"]),
                                           "pu": int(r["pu"]), "b": [], "a": []})
            m[r["side"]].append([r["price"], r["qty"]])
    return list(by_update.values())


def test_binance_futures_depth_files_gap_between_snapshot_and_updates() -> None:
    book = SHARED_DATA / "book" / "binance-futures"
    (snap_msg,) = _depth_messages(book / "btcusdt-depth-snap.csv")
    snap = BookUpdate("BTCUSDT", snap_msg["E"] * MS, "snapshot", (), (), first_id=snap_msg["u"],
                      last_id=snap_msg["u"])
    updates = [ok(parse_message("binance", m)).books[0] for m in _depth_messages(book / "btcusdt-depth-update.csv")]
    assert len(updates) == 1 and updates[0].prev_id == 2098041693400 and len(updates[0].asks) + len(
        updates[0].bids) == 100
    # a snapshot never follows anything; the first update after it does not chain (10 minutes apart)
    as_delta = dataclasses.replace(snap, kind="delta")
    assert check_sequence(as_delta, updates[0]) == "sequence gap: expected 2098021528332 got 2098041693400"


# ---------------------------------------------------------------------------------------------------
# malformed variants: every record kind, each way of breaking it, is quarantined with a named reason


CASES = [  # (venue, file, path to the record, price field, size field)
    ("okx", "ws_trades.json", ("data", 0), "px", "sz"),
    ("okx", "ws_tickers.json", ("data", 0), "bidPx", "bidSz"),
    ("okx", "http_get_trades.json", ("data", 0), "px", "sz"),
    ("bybit", "ws_public_trade.json", ("data", 0), "p", "v"),
    ("bybit", "ws_ticker_linear.json", ("data",), "bid1Price", "bid1Size"),
    ("bybit", "http_get_trades_recent.json", ("result", "list", 0), "price", "size"),
    ("kraken", "ws_trade_update.json", ("data", 0), "price", "qty"),
    ("kraken", "ws_ticker_snapshot.json", ("data", 0), "bid", "bid_qty"),
    ("coinbase", "ws_market_trades.json", ("events", 0, "trades", 0), "price", "size"),
    ("coinbase", "ws_ticker.json", ("events", 0, "tickers", 0), "best_bid", "best_bid_quantity"),
]


def _record(msg: Any, path: tuple[Any, ...]) -> Any:
    for k in path:
        msg = msg[k]
    return msg


def _variants(case: tuple[Any, ...]) -> list[tuple[str, Any, str]]:
    venue, name, path, price, size = case
    msg = json.loads((NAUT / venue / name).read_text())
    out = []
    for label, edit, named in [
        ("missing price", lambda r: r.pop(price), f"missing field '{price}'"),
        ("non-numeric price", lambda r: r.__setitem__(price, "abc"), f"'{price}'"),
        ("negative size", lambda r: r.__setitem__(size, "-1.5"), f"'{size}'"),
        ("wrong type", lambda r: r.__setitem__(price, [1, 2]), f"'{price}'"),
        ("zero price", lambda r: r.__setitem__(price, "0"), f"'{price}'"),
        ("NaN price", lambda r: r.__setitem__(price, "nan"), f"'{price}'"),
    ]:
        m = copy.deepcopy(msg)
        edit(_record(m, path))
        out.append((label, m, named))
    return out


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_malformed_records_are_quarantined_naming_the_field(case: tuple[Any, ...]) -> None:
    venue, name = case[0], case[1]
    good = ok(parse_file(venue, name))
    n_good = len(good.trades) + len(good.quotes)
    for label, msg, named in _variants(case):
        p = parse_message(venue, json.dumps(msg), source=name, ts_recv=7)
        assert len(p.rejected) == 1, label
        q = p.rejected[0]
        assert named in q.reason and q.reason.startswith(f"{venue}: "), (label, q.reason)
        assert len(q.reason) <= 200 and "\n" not in q.reason
        assert (q.source, q.ts_recv) == (name, 7)
        assert len(p.trades) + len(p.quotes) == n_good - 1, label  # the other records are kept


@pytest.mark.parametrize("venue,name", [(c[0], c[1]) for c in CASES] + [
    ("okx", "ws_books_snapshot.json"), ("bybit", "ws_orderbook_delta.json"), ("kraken", "http_order_book.json"),
    ("kraken", "XBTUSDT"), ("coinbase", "http_product_book.json")])
def test_truncated_json_is_quarantined(venue: str, name: str) -> None:
    text = (SHARED_DATA / "ticks/kraken/XBTUSDT-http_trades.json.gz") if name == "XBTUSDT" else NAUT / venue / name
    raw = gzip.decompress(text.read_bytes()).decode() if name == "XBTUSDT" else text.read_text()
    p = parse_message(venue, raw[: len(raw) // 2])
    assert (p.trades, p.quotes, p.books) == ((), (), ())
    (q,) = p.rejected
    assert q.reason.startswith(f"{venue}: invalid JSON") and len(q.reason) <= 200 and q.row == -1


def test_malformed_book_levels_and_ids() -> None:
    msg = json.loads((NAUT / "bybit" / "ws_orderbook_delta.json").read_text())
    msg["data"]["b"][0][1] = "-3"
    assert parse_message("bybit", msg).rejected[0].reason == (
        "bybit: field element 1 in bybit orderbook data level 0 is a negative size: -3.0")
    msg["data"]["b"][0] = "27450"
    assert "expected a list, got str" in parse_message("bybit", msg).rejected[0].reason
    msg = json.loads((NAUT / "okx" / "ws_books_update.json").read_text())
    msg["data"][0]["seqId"] = "abc"
    assert parse_message("okx", msg).rejected[0].reason == (
        "okx: field 'seqId' in okx books data[0] is not an integer: 'abc'")
    assert parse_message("okx", {"arg": {"channel": "trades"}, "data": "x"}).rejected[0].reason == (
        "okx: field 'data' in okx message has wrong type str, expected a list")


def test_error_responses_are_quarantined() -> None:
    assert parse_message("okx", {"code": "50011", "msg": "Too Many Requests", "data": []}).rejected[0].reason == (
        "okx: okx error code '50011': 'Too Many Requests'")
    assert "kraken error" in parse_message("kraken", {"error": ["EGeneral:Invalid arguments"]}).rejected[0].reason
    assert "bybit retCode 10001" in parse_message("bybit", {"retCode": 10001, "retMsg": "bad"}).rejected[0].reason


json_values = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=5),
                           max_leaves=20)


@given(venue=st.sampled_from(["binance", "okx", "bybit", "kraken", "coinbase"]), value=json_values)
def test_parser_never_raises_on_arbitrary_json(venue: str, value: Any) -> None:
    p = parse_message(venue, value)
    assert all(len(q.reason) <= 200 and "\n" not in q.reason for q in p.rejected)


@given(cut=st.integers(min_value=0, max_value=400), case=st.sampled_from(CASES))
def test_parser_never_raises_on_truncated_text(cut: int, case: tuple[Any, ...]) -> None:
    raw = (NAUT / case[0] / case[1]).read_text()
    p = parse_message(case[0], raw[:cut])
    assert p.rejected or cut >= len(raw.rstrip())


def test_quote_chunk_from_rows() -> None:
    (q,) = parse_file("okx", "ws_tickers.json").quotes
    c = quote_chunk("okx:BTC/USDT", [q], 9, "okx/ws_tickers.json", first_row=4)
    assert (len(c), float(c.bid[0]), float(c.ask_size[0]), int(c.ts_recv[0]), int(c.origin.row[0])) == (
        1, 8888.88, 11.0, 9, 4)
