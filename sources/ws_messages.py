"""Parse venue websocket and REST market-data payloads into normalized records (pure, no network).

One entry point, `parse_message(venue, payload, ...)`, reads one message of binance, okx, bybit, kraken or
coinbase (websocket push or REST response, as recorded) and returns a `Parsed`: trade rows, top-of-book
quote rows and order-book records (`BookUpdate`, snapshot or delta, with the venue's sequence numbers
where it gives them). A record that cannot be read becomes a `Quarantined` item whose one-line reason
names the field; the parser never raises. `check_sequence` tells whether a book update follows the
previous one (okx ``seqId``/``prevSeqId``, bybit ``u``, binance ``U``/``u``/``pu``).

Times are UTC epoch nanoseconds. Symbols are the venue's market ids (``BTC-USDT``, ``BTCUSDT``, ``XBTUSDT``);
`unified_symbol` maps them to ccxt's unified form for recorded payloads (the live source uses ccxt's own
symbols).

Examples
--------
>>> p = parse_message("okx", '{"arg": {"channel": "trades", "instId": "BTC-USDT"}, "data": [{"instId": "BTC-USDT",'
...                   ' "tradeId": "7", "px": "100.5", "sz": "0.2", "side": "sell", "ts": "1000"}]}')
>>> p.trades[0]
TradeRow(symbol='BTC-USDT', ts_event=1000000000, price=100.5, amount=0.2, side=-1, trade_id='7')
>>> parse_message("okx", '{"arg": {"channel": "trades"}, "data": [{"px": "x"').rejected[0].reason[:17]
'okx: invalid JSON'
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np

from headrace.events import (
    NS_PER_MS,
    NS_PER_S,
    SIDE_BUY,
    SIDE_SELL,
    SIDE_UNKNOWN,
    Provenance,
    Quarantined,
    QuoteChunk,
    TradeChunk,
)

VENUES = ("binance", "okx", "bybit", "kraken", "coinbase")
MAX_REASON = 200
_ECHO = 40  # characters of a bad value echoed in a reason

Level = tuple[float, float]  # price, size (size 0 = delete the level)


@dataclass(frozen=True, slots=True)
class TradeRow:
    symbol: str
    ts_event: int
    price: float
    amount: float
    side: int  # +1 buy, -1 sell, 0 unknown (taker side)
    trade_id: str | None


@dataclass(frozen=True, slots=True)
class QuoteRow:
    symbol: str
    ts_event: int
    bid: float
    ask: float
    bid_size: float
    ask_size: float


@dataclass(frozen=True, slots=True)
class BookUpdate:
    """An order-book snapshot or delta; ids are the venue's numbering (None where it gives none).

    `first_id`/`last_id` are the first and last update ids the message covers (okx ``seqId``, bybit ``u``,
    binance ``U``/``u``), `prev_id` the id the previous message must have ended with (okx ``prevSeqId``,
    binance futures ``pu``), `seq` a venue cross-sequence (bybit ``seq``, coinbase ``sequence_num``),
    `checksum` the venue's book checksum (okx, kraken).
    """

    symbol: str
    ts_event: int
    kind: Literal["snapshot", "delta"]
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    first_id: int | None = None
    last_id: int | None = None
    prev_id: int | None = None
    seq: int | None = None
    checksum: int | None = None


@dataclass(frozen=True, slots=True)
class Parsed:
    trades: tuple[TradeRow, ...] = ()
    quotes: tuple[QuoteRow, ...] = ()
    books: tuple[BookUpdate, ...] = ()
    rejected: tuple[Quarantined, ...] = ()


class Malformed(ValueError):
    """A field of a record is missing or unreadable; the message is the quarantine reason."""


@dataclass
class _Out:
    trades: list[TradeRow] = field(default_factory=list)
    quotes: list[QuoteRow] = field(default_factory=list)
    books: list[BookUpdate] = field(default_factory=list)
    rejected: list[Quarantined] = field(default_factory=list)

    def done(self) -> Parsed:
        return Parsed(tuple(self.trades), tuple(self.quotes), tuple(self.books), tuple(self.rejected))


def _echo(v: object) -> str:
    s = repr(v)
    return s if len(s) <= _ECHO else s[: _ECHO - 3] + "..."


def one_line(reason: str) -> str:
    """Make `reason` one line of at most 200 characters.

    >>> len(one_line("x" * 500))
    200
    """
    r = " ".join(reason.split())
    return r if len(r) <= MAX_REASON else r[: MAX_REASON - 3] + "..."


# ---------------------------------------------------------------------------------------------------
# field readers: each raises Malformed naming the field


def _get(rec: Any, key: str | int, where: str) -> Any:
    if isinstance(key, int):
        if not isinstance(rec, list | tuple):
            raise Malformed(f"{where}: expected a list, got {type(rec).__name__}")
        if key >= len(rec):
            raise Malformed(f"{where}: missing element {key}")
        return rec[key]
    if not isinstance(rec, dict):
        raise Malformed(f"{where}: expected an object, got {type(rec).__name__}")
    if key not in rec or rec[key] is None:
        raise Malformed(f"missing field '{key}' in {where}")
    return rec[key]


def _name(key: str | int) -> str:
    return f"'{key}'" if isinstance(key, str) else f"element {key}"


def _num(rec: Any, key: str | int, where: str) -> float:
    v = _get(rec, key, where)
    name = _name(key)
    if isinstance(v, bool) or not isinstance(v, str | int | float):
        raise Malformed(f"field {name} in {where} has wrong type {type(v).__name__}: {_echo(v)}")
    try:
        x = float(v)
    except ValueError:
        raise Malformed(f"field {name} in {where} is not a number: {_echo(v)}") from None
    if not math.isfinite(x):
        raise Malformed(f"field {name} in {where} is not finite: {_echo(v)}")
    return x


def _price(rec: Any, key: str | int, where: str) -> float:
    x = _num(rec, key, where)
    if x <= 0:
        raise Malformed(f"field {_name(key)} in {where} is not a positive price: {_echo(x)}")
    return x


def _size(rec: Any, key: str | int, where: str, *, zero_ok: bool = False) -> float:
    x = _num(rec, key, where)
    if x < 0 or (x == 0 and not zero_ok):
        raise Malformed(f"field {_name(key)} in {where} is a {'negative' if x < 0 else 'zero'} size: {_echo(x)}")
    return x


def _int(rec: Any, key: str | int, where: str) -> int:
    v = _get(rec, key, where)
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise Malformed(f"field '{key}' in {where} has wrong type {type(v).__name__}: {_echo(v)}")
    try:
        return int(v)
    except ValueError:
        raise Malformed(f"field '{key}' in {where} is not an integer: {_echo(v)}") from None


def _opt_int(rec: Any, key: str, where: str) -> int | None:
    if not isinstance(rec, dict) or rec.get(key) is None:
        return None
    return _int(rec, key, where)


def _ts_ms(rec: Any, key: str, where: str) -> int:
    ms = _int(rec, key, where)
    if ms <= 0:
        raise Malformed(f"field '{key}' in {where} is not a positive epoch time: {_echo(ms)}")
    return ms * NS_PER_MS


def _ts_s(rec: Any, key: str | int, where: str) -> int:
    s = _num(rec, key, where)
    if s <= 0:
        raise Malformed(f"field {_name(key)} in {where} is not a positive epoch time: {_echo(s)}")
    return round(s * 1e6) * 1000  # venues give at most microseconds


def _ts_iso(rec: Any, key: str, where: str) -> int:
    v = _get(rec, key, where)
    if not isinstance(v, str):
        raise Malformed(f"field '{key}' in {where} has wrong type {type(v).__name__}: {_echo(v)}")
    try:
        head, _, frac = v.rstrip("Z").partition(".")
        base = datetime.fromisoformat(head + "+00:00")
        digits = (frac + "000000000")[:9]
        if frac and not frac.isdigit():
            raise ValueError(frac)
    except ValueError:
        raise Malformed(f"field '{key}' in {where} is not an ISO time: {_echo(v)}") from None
    return int(base.timestamp()) * NS_PER_S + int(digits)


def _list(rec: Any, key: str, where: str) -> list[Any]:
    v = _get(rec, key, where)
    if not isinstance(v, list):
        raise Malformed(f"field '{key}' in {where} has wrong type {type(v).__name__}, expected a list")
    return v


def _side(v: object, where: str) -> int:
    s = str(v).lower()
    if s in ("buy", "b", "bid"):
        return SIDE_BUY
    if s in ("sell", "s", "ask"):
        return SIDE_SELL
    raise Malformed(f"field 'side' in {where} is not buy/sell: {_echo(v)}")


def _levels(raw: list[Any], where: str, price: str | int = 0, size: str | int = 1) -> tuple[Level, ...]:
    out = []
    for i, lv in enumerate(raw):
        w = f"{where} level {i}"
        out.append((_price(lv, price, w), _size(lv, size, w, zero_ok=True)))
    return tuple(out)


# ---------------------------------------------------------------------------------------------------
# per venue


def _okx(msg: Any, out: _Out, q: _Q) -> None:
    if not isinstance(msg, dict):
        raise Malformed(f"okx message: expected an object, got {type(msg).__name__}")
    data = _list(msg, "data", "okx message")
    if "arg" in msg:
        arg = _get(msg, "arg", "okx message")
        channel = str(_get(arg, "channel", "okx arg"))
    elif "code" in msg:  # REST
        if str(msg["code"]) != "0":
            raise Malformed(f"okx error code {_echo(msg['code'])}: {_echo(msg.get('msg'))}")
        first = data[0] if data else None
        if isinstance(first, dict) and "tradeId" in first:
            channel = "rest-trades"
        elif isinstance(first, dict) and ("asks" in first or "bids" in first):
            channel = "rest-books"
        else:
            return  # candles, funding rates: not market data the live source streams
    else:
        raise Malformed("okx message has neither 'arg' nor 'code'")
    inst = str(msg.get("arg", {}).get("instId", "")) if isinstance(msg.get("arg"), dict) else ""
    for i, rec in enumerate(data):
        w = f"okx {channel} data[{i}]"
        with q.record(i, rec):
            if channel in ("trades", "trades-all", "rest-trades"):
                out.trades.append(TradeRow(str(_get(rec, "instId", w)), _ts_ms(rec, "ts", w), _price(rec, "px", w),
                                           _size(rec, "sz", w), _side(_get(rec, "side", w), w),
                                           str(_get(rec, "tradeId", w))))
            elif channel in ("tickers", "bbo-tbt"):
                out.quotes.append(QuoteRow(str(_get(rec, "instId", w)), _ts_ms(rec, "ts", w), _price(rec, "bidPx", w),
                                           _price(rec, "askPx", w), _size(rec, "bidSz", w, zero_ok=True),
                                           _size(rec, "askSz", w, zero_ok=True)))
            elif channel.startswith("books") or channel == "rest-books":
                kind: Literal["snapshot", "delta"] = "delta" if msg.get("action") == "update" else "snapshot"
                seq = _opt_int(rec, "seqId", w)
                out.books.append(BookUpdate(inst, _ts_ms(rec, "ts", w), kind,
                                            _levels(_list(rec, "bids", w), w), _levels(_list(rec, "asks", w), w),
                                            first_id=seq, last_id=seq, prev_id=_opt_int(rec, "prevSeqId", w),
                                            checksum=_opt_int(rec, "checksum", w)))


def _bybit(msg: Any, out: _Out, q: _Q) -> None:
    if not isinstance(msg, dict):
        raise Malformed(f"bybit message: expected an object, got {type(msg).__name__}")
    if "retCode" in msg:  # REST
        if msg["retCode"] != 0:
            raise Malformed(f"bybit retCode {_echo(msg['retCode'])}: {_echo(msg.get('retMsg'))}")
        res = _get(msg, "result", "bybit response")
        if isinstance(res, dict) and "list" in res:
            if res["list"] and all(isinstance(r, list) for r in res["list"]):
                return  # klines: not market data the live source streams
            for i, rec in enumerate(_list(res, "list", "bybit result")):
                w = f"bybit trades list[{i}]"
                with q.record(i, rec):
                    out.trades.append(TradeRow(str(_get(rec, "symbol", w)), _ts_ms(rec, "time", w),
                                               _price(rec, "price", w), _size(rec, "size", w),
                                               _side(_get(rec, "side", w), w), str(_get(rec, "execId", w))))
        else:
            w = "bybit orderbook result"
            u = _opt_int(res, "u", w)
            out.books.append(BookUpdate(str(_get(res, "s", w)), _ts_ms(res, "ts", w), "snapshot",
                                        _levels(_list(res, "b", w), w), _levels(_list(res, "a", w), w),
                                        first_id=u, last_id=u, seq=_opt_int(res, "seq", w)))
        return
    topic = str(_get(msg, "topic", "bybit message"))
    kind = str(msg.get("type", "snapshot"))
    if topic.startswith(("publicTrade.", "trade.")):
        for i, rec in enumerate(_list(msg, "data", "bybit trade message")):
            w = f"bybit trade data[{i}]"
            with q.record(i, rec):
                out.trades.append(TradeRow(str(_get(rec, "s", w)), _ts_ms(rec, "T", w), _price(rec, "p", w),
                                           _size(rec, "v", w), _side(_get(rec, "S", w), w), str(_get(rec, "i", w))))
    elif topic.startswith("tickers."):
        rec = _get(msg, "data", "bybit ticker message")
        w = "bybit ticker data"
        keys = ("bid1Price", "ask1Price", "bid1Size", "ask1Size")
        if kind == "delta" and not all(isinstance(rec, dict) and k in rec for k in keys):
            return  # a delta carries only the fields that changed
        out.quotes.append(QuoteRow(str(_get(rec, "symbol", w)), _ts_ms(msg, "ts", "bybit ticker message"),
                                   _price(rec, "bid1Price", w), _price(rec, "ask1Price", w),
                                   _size(rec, "bid1Size", w, zero_ok=True), _size(rec, "ask1Size", w, zero_ok=True)))
    elif topic.startswith("orderbook."):
        rec = _get(msg, "data", "bybit orderbook message")
        w = "bybit orderbook data"
        u = _int(rec, "u", w)
        out.books.append(BookUpdate(str(_get(rec, "s", w)), _ts_ms(msg, "ts", "bybit orderbook message"),
                                    "delta" if kind == "delta" else "snapshot",
                                    _levels(_list(rec, "b", w), w), _levels(_list(rec, "a", w), w),
                                    first_id=u, last_id=u, seq=_opt_int(rec, "seq", w)))


def _kraken(msg: Any, out: _Out, q: _Q) -> None:
    if not isinstance(msg, dict):
        raise Malformed(f"kraken message: expected an object, got {type(msg).__name__}")
    if msg.get("result") == "success":  # futures REST
        if "orderBook" in msg:
            w = "kraken futures orderBook"
            book = _get(msg, "orderBook", "kraken futures response")
            out.books.append(BookUpdate("", _ts_iso(msg, "serverTime", "kraken futures response"), "snapshot",
                                        _levels(_list(book, "bids", w), w), _levels(_list(book, "asks", w), w)))
        return  # funding rates and other futures payloads are not streamed
    if "result" in msg or "error" in msg:  # REST
        errors = msg.get("error") or []
        if errors:
            raise Malformed(f"kraken error: {_echo(errors)}")
        res = _get(msg, "result", "kraken response")
        if not isinstance(res, dict):
            raise Malformed(f"field 'result' in kraken response has wrong type {type(res).__name__}")
        for pair, body in res.items():
            if pair == "last":
                continue
            if isinstance(body, list):  # Trades: [price, volume, time, side, ordertype, misc, trade_id]
                for i, rec in enumerate(body):
                    w = f"kraken trades {pair}[{i}]"
                    with q.record(i, rec):
                        tid = _get(rec, 6, w) if isinstance(rec, list) and len(rec) > 6 else None
                        out.trades.append(TradeRow(pair, _ts_s(rec, 2, w), _price(rec, 0, w), _size(rec, 1, w),
                                                   _side(_get(rec, 3, w), w), None if tid is None else str(tid)))
            elif isinstance(body, dict) and "asks" in body:
                w = f"kraken book {pair}"
                bids, asks = _list(body, "bids", w), _list(body, "asks", w)
                times = [lv[2] for lv in bids + asks if isinstance(lv, list) and len(lv) > 2]
                ts = max((_ts_s(times, i, w) for i in range(len(times))), default=0)
                out.books.append(BookUpdate(pair, ts, "snapshot", _levels(bids, w), _levels(asks, w)))
            elif isinstance(body, dict) and "a" in body and "b" in body:
                w = f"kraken ticker {pair}"
                a, b = _get(body, "a", w), _get(body, "b", w)
                out.quotes.append(QuoteRow(pair, 0, _price(b, 0, w + " b"), _price(a, 0, w + " a"),
                                           _size(b, 2, w + " b", zero_ok=True), _size(a, 2, w + " a", zero_ok=True)))
            else:
                raise Malformed(f"kraken result {_echo(pair)} is neither trades, book nor ticker")
        return
    channel = str(_get(msg, "channel", "kraken message"))
    if channel in ("heartbeat", "status"):
        return
    data = _list(msg, "data", f"kraken {channel} message")
    for i, rec in enumerate(data):
        w = f"kraken {channel} data[{i}]"
        with q.record(i, rec):
            if channel == "trade":
                out.trades.append(TradeRow(str(_get(rec, "symbol", w)), _ts_iso(rec, "timestamp", w),
                                           _price(rec, "price", w), _size(rec, "qty", w),
                                           _side(_get(rec, "side", w), w), str(_get(rec, "trade_id", w))))
            elif channel == "ticker":
                ts = _ts_iso(rec, "timestamp", w) if isinstance(rec, dict) and "timestamp" in rec else 0
                out.quotes.append(QuoteRow(str(_get(rec, "symbol", w)), ts, _price(rec, "bid", w),
                                           _price(rec, "ask", w), _size(rec, "bid_qty", w, zero_ok=True),
                                           _size(rec, "ask_qty", w, zero_ok=True)))
            elif channel == "book":
                kind: Literal["snapshot", "delta"] = "delta" if msg.get("type") == "update" else "snapshot"
                ts = _ts_iso(rec, "timestamp", w) if isinstance(rec, dict) and "timestamp" in rec else 0
                out.books.append(BookUpdate(str(_get(rec, "symbol", w)), ts, kind,
                                            _levels(_list(rec, "bids", w), w, "price", "qty"),
                                            _levels(_list(rec, "asks", w), w, "price", "qty"),
                                            checksum=_opt_int(rec, "checksum", w)))


def _coinbase(msg: Any, out: _Out, q: _Q) -> None:
    if not isinstance(msg, dict):
        raise Malformed(f"coinbase message: expected an object, got {type(msg).__name__}")
    if "pricebook" in msg:  # REST product book
        pb = _get(msg, "pricebook", "coinbase response")
        w = "coinbase pricebook"
        out.books.append(BookUpdate(str(_get(pb, "product_id", w)), _ts_iso(pb, "time", w), "snapshot",
                                    _levels(_list(pb, "bids", w), w, "price", "size"),
                                    _levels(_list(pb, "asks", w), w, "price", "size")))
        return
    if "channel" not in msg:
        if "trades" in msg:  # REST ticker: recent trades and the best bid/ask
            for i, rec in enumerate(_list(msg, "trades", "coinbase ticker")):
                with q.record(i, rec):
                    out.trades.append(_coinbase_trade(rec, f"coinbase ticker trades[{i}]"))
            w = "coinbase ticker"
            if out.trades and msg.get("best_bid") not in (None, "") and msg.get("best_ask") not in (None, ""):
                last = max(out.trades, key=lambda t: t.ts_event)
                out.quotes.append(QuoteRow(last.symbol, last.ts_event, _price(msg, "best_bid", w),
                                           _price(msg, "best_ask", w), math.nan, math.nan))
            return
        if "candles" in msg:
            return
        raise Malformed("coinbase message has no 'channel'")
    channel = str(msg["channel"])
    seq = _opt_int(msg, "sequence_num", "coinbase message")
    for j, ev in enumerate(_list(msg, "events", f"coinbase {channel} message")):
        if channel == "market_trades":
            for i, rec in enumerate(_list(ev, "trades", f"coinbase events[{j}]")):
                with q.record(i, rec):
                    out.trades.append(_coinbase_trade(rec, f"coinbase market_trades events[{j}].trades[{i}]"))
        elif channel == "ticker":
            ts = _ts_iso(msg, "timestamp", "coinbase message")
            for i, rec in enumerate(_list(ev, "tickers", f"coinbase events[{j}]")):
                w = f"coinbase ticker events[{j}].tickers[{i}]"
                with q.record(i, rec):
                    out.quotes.append(QuoteRow(str(_get(rec, "product_id", w)), ts, _price(rec, "best_bid", w),
                                               _price(rec, "best_ask", w),
                                               _size(rec, "best_bid_quantity", w, zero_ok=True),
                                               _size(rec, "best_ask_quantity", w, zero_ok=True)))
        elif channel == "l2_data":
            w = f"coinbase l2_data events[{j}]"
            bids: list[Level] = []
            asks: list[Level] = []
            for i, u in enumerate(_list(ev, "updates", w)):
                wu = f"{w}.updates[{i}]"
                lv = (_price(u, "price_level", wu), _size(u, "new_quantity", wu, zero_ok=True))
                (bids if _side(_get(u, "side", wu), wu) == SIDE_BUY else asks).append(lv)
            out.books.append(BookUpdate(str(_get(ev, "product_id", w)), _ts_iso(msg, "timestamp", "coinbase message"),
                                        "snapshot" if ev.get("type") == "snapshot" else "delta",
                                        tuple(bids), tuple(asks), seq=seq))


def _coinbase_trade(rec: Any, w: str) -> TradeRow:
    return TradeRow(str(_get(rec, "product_id", w)), _ts_iso(rec, "time", w), _price(rec, "price", w),
                    _size(rec, "size", w), _side(_get(rec, "side", w), w), str(_get(rec, "trade_id", w)))


def _binance(msg: Any, out: _Out, q: _Q) -> None:
    if isinstance(msg, dict) and "stream" in msg and "data" in msg:  # combined stream wrapper
        msg = msg["data"]
    if isinstance(msg, list):  # REST trades (klines are lists of lists: not streamed)
        if msg and all(isinstance(r, list) for r in msg):
            return
        for i, rec in enumerate(msg):
            w = f"binance trades[{i}]"
            with q.record(i, rec):
                maker = _get(rec, "isBuyerMaker", w)
                if not isinstance(maker, bool):
                    raise Malformed(f"field 'isBuyerMaker' in {w} has wrong type {type(maker).__name__}")
                out.trades.append(TradeRow("", _ts_ms(rec, "time", w), _price(rec, "price", w), _size(rec, "qty", w),
                                           SIDE_SELL if maker else SIDE_BUY, str(_int(rec, "id", w))))
        return
    if not isinstance(msg, dict):
        raise Malformed(f"binance message: expected an object, got {type(msg).__name__}")
    event = msg.get("e")
    w = f"binance {event or 'message'}"
    if event in ("trade", "aggTrade"):
        m = _get(msg, "m", w)
        if not isinstance(m, bool):
            raise Malformed(f"field 'm' in {w} has wrong type {type(m).__name__}")
        out.trades.append(TradeRow(str(_get(msg, "s", w)), _ts_ms(msg, "T", w), _price(msg, "p", w),
                                   _size(msg, "q", w), SIDE_SELL if m else SIDE_BUY,
                                   str(_int(msg, "t" if event == "trade" else "a", w))))
    elif event == "bookTicker" or (event is None and "B" in msg and "A" in msg):
        ts = _ts_ms(msg, "E", w) if "E" in msg else 0
        out.quotes.append(QuoteRow(str(_get(msg, "s", w)), ts, _price(msg, "b", w), _price(msg, "a", w),
                                   _size(msg, "B", w, zero_ok=True), _size(msg, "A", w, zero_ok=True)))
    elif event == "depthUpdate":
        out.books.append(BookUpdate(str(_get(msg, "s", w)), _ts_ms(msg, "E", w), "delta",
                                    _levels(_list(msg, "b", w), w), _levels(_list(msg, "a", w), w),
                                    first_id=_int(msg, "U", w), last_id=_int(msg, "u", w),
                                    prev_id=_opt_int(msg, "pu", w)))
    elif "lastUpdateId" in msg:  # REST depth
        last = _int(msg, "lastUpdateId", "binance depth")
        out.books.append(BookUpdate("", 0, "snapshot", _levels(_list(msg, "bids", "binance depth"), "binance depth"),
                                    _levels(_list(msg, "asks", "binance depth"), "binance depth"),
                                    first_id=last, last_id=last))
    elif "bidPrice" in msg:  # REST bookTicker
        w = "binance bookTicker response"
        out.quotes.append(QuoteRow(str(_get(msg, "symbol", w)), 0, _price(msg, "bidPrice", w),
                                   _price(msg, "askPrice", w), _size(msg, "bidQty", w, zero_ok=True),
                                   _size(msg, "askQty", w, zero_ok=True)))
    elif "result" in msg and "id" in msg:  # subscription acknowledgement
        return
    # other events (klines, mark price) are not market data the live source streams


_PARSERS = {"okx": _okx, "bybit": _bybit, "kraken": _kraken, "coinbase": _coinbase, "binance": _binance}


class _Q:
    """Collects quarantined records: one bad record of a list is quarantined, the others are kept."""

    def __init__(self, venue: str, source: str, ts_recv: int, out: _Out) -> None:
        self.venue, self.source, self.ts_recv, self.out = venue, source, ts_recv, out

    def reject(self, row: int, reason: str, raw: object) -> None:
        text = raw if isinstance(raw, str) else json.dumps(raw, default=str)
        self.out.rejected.append(Quarantined(instrument="", ts_event=0, ts_recv=self.ts_recv, source=self.source,
                                             row=row, reason=one_line(f"{self.venue}: {reason}"), raw=text[:4000]))

    def record(self, row: int, raw: object) -> _Guard:
        return _Guard(self, row, raw)


class _Guard:
    def __init__(self, q: _Q, row: int, raw: object) -> None:
        self.q, self.row, self.raw = q, row, raw

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: object) -> bool:
        if isinstance(e, Malformed):
            self.q.reject(self.row, str(e), self.raw)
            return True
        return False


def parse_message(venue: str, payload: str | bytes | Any, *, source: str = "", ts_recv: int = 0) -> Parsed:
    """Parse one recorded or live message of `venue`; never raises (bad input comes back in `rejected`).

    `payload` is the JSON text or the already-decoded value. `source` names where it came from (a file or
    a feed) and `ts_recv` is when it was received (epoch ns), both copied to quarantined items.

    >>> msg = b'{"topic": "orderbook.1.X", "data": {"s": "X", "b": [], "a": [], "u": 5}}'
    >>> parse_message("bybit", msg).rejected[0].reason
    "bybit: missing field 'ts' in bybit orderbook message"
    >>> parse_message("nowhere", "{}").rejected[0].reason
    'nowhere: unknown venue (known: binance, okx, bybit, kraken, coinbase)'
    """
    out = _Out()
    q = _Q(venue, source or venue, ts_recv, out)
    raw_text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
    parser = _PARSERS.get(venue)
    if parser is None:
        q.reject(-1, f"unknown venue (known: {', '.join(VENUES)})", raw_text if isinstance(raw_text, str) else "")
        return out.done()
    if isinstance(raw_text, str):
        try:
            msg = json.loads(raw_text)
        except ValueError as e:
            q.reject(-1, f"invalid JSON: {e}", raw_text)
            return out.done()
    else:
        msg = raw_text
    try:
        parser(msg, out, q)
    except Malformed as e:
        out.trades, out.quotes, out.books = [], [], []
        q.reject(-1, str(e), msg)
    except Exception as e:  # noqa: BLE001 - a parser bug must not stop the feed either; the reason says what
        out.trades, out.quotes, out.books = [], [], []
        q.reject(-1, f"unreadable message ({type(e).__name__}: {e})", msg)
    return out.done()


# ---------------------------------------------------------------------------------------------------
# sequence numbers


def check_sequence(prev: BookUpdate | None, cur: BookUpdate) -> str | None:
    """Return a gap reason when `cur` does not follow `prev` in the venue's numbering, else None.

    A snapshot starts a new chain; a venue without ids is never a gap. The rule by what the venue gives:
    ``prev_id`` (okx prevSeqId, binance futures pu) must equal the previous last id; otherwise
    ``first_id`` (binance spot U, bybit u) must be the previous last id + 1.

    >>> a = BookUpdate("X", 1, "delta", (), (), first_id=5, last_id=7)
    >>> check_sequence(a, BookUpdate("X", 2, "delta", (), (), first_id=8, last_id=9)) is None
    True
    >>> check_sequence(a, BookUpdate("X", 2, "delta", (), (), first_id=10, last_id=12))
    'sequence gap: expected 8 got 10'
    """
    if cur.kind == "snapshot" or prev is None or prev.last_id is None:
        return None
    if cur.prev_id is not None and cur.prev_id != -1:
        return None if cur.prev_id == prev.last_id else f"sequence gap: expected {prev.last_id} got {cur.prev_id}"
    if cur.first_id is not None:
        want = prev.last_id + 1
        return None if cur.first_id == want else f"sequence gap: expected {want} got {cur.first_id}"
    return None


# ---------------------------------------------------------------------------------------------------
# rows -> chunks, symbols


_QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "USD", "EUR", "GBP", "BTC", "ETH")


def unified_symbol(venue: str, market_id: str) -> str:
    """Map a venue market id of a recorded payload to ccxt's unified spot symbol (best effort).

    >>> [unified_symbol(v, s) for v, s in [("okx", "BTC-USDT"), ("bybit", "BTCUSDT"), ("kraken", "XBTUSDT")]]
    ['BTC/USDT', 'BTC/USDT', 'BTC/USDT']
    """
    if "/" in market_id:
        base, _, quote = market_id.partition("/")
    elif "-" in market_id:
        base, _, quote = market_id.partition("-")
        quote = quote.split("-")[0]
    else:
        quote = next((qq for qq in _QUOTES if market_id.endswith(qq) and len(market_id) > len(qq)), "")
        base = market_id[: len(market_id) - len(quote)] if quote else market_id
    rename = {"XBT": "BTC", "XDG": "DOGE"}
    return f"{rename.get(base, base)}/{rename.get(quote, quote)}" if quote else market_id


def _origin(n: int, source: str, first_row: int) -> Provenance:
    return Provenance(files=(source,), file_index=np.zeros(n, np.int32),
                      row=np.arange(first_row, first_row + n, dtype=np.int64))


def trade_chunk(instrument: str, rows: list[TradeRow] | tuple[TradeRow, ...], ts_recv: int, source: str,
                first_row: int = 0) -> TradeChunk:
    """Rows of one instrument as a `TradeChunk`; provenance rows count messages of `source` from `first_row`."""
    n = len(rows)
    ids = [r.trade_id for r in rows]
    return TradeChunk(instrument=instrument, ts_event=np.array([r.ts_event for r in rows], np.int64),
                      ts_recv=np.full(n, ts_recv, np.int64), price=np.array([r.price for r in rows], np.float64),
                      amount=np.array([r.amount for r in rows], np.float64),
                      side=np.array([r.side for r in rows], np.int8),
                      trade_id=None if n == 0 or any(i is None for i in ids) else np.array(ids, np.str_),
                      origin=_origin(n, source, first_row))


def quote_chunk(instrument: str, rows: list[QuoteRow] | tuple[QuoteRow, ...], ts_recv: int, source: str,
                first_row: int = 0) -> QuoteChunk:
    """Rows of one instrument as a `QuoteChunk`."""
    n = len(rows)
    return QuoteChunk(instrument=instrument, ts_event=np.array([r.ts_event for r in rows], np.int64),
                      ts_recv=np.full(n, ts_recv, np.int64), bid=np.array([r.bid for r in rows], np.float64),
                      ask=np.array([r.ask for r in rows], np.float64),
                      bid_size=np.array([r.bid_size for r in rows], np.float64),
                      ask_size=np.array([r.ask_size for r in rows], np.float64), origin=_origin(n, source, first_row))


__all__ = ["SIDE_UNKNOWN", "BookUpdate", "Malformed", "Parsed", "QuoteRow", "TradeRow", "check_sequence",
           "one_line", "parse_message", "quote_chunk", "trade_chunk", "unified_symbol"]
