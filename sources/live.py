"""The live source: trades, top of book and order books of one venue and symbol through ccxt.pro.

`LiveFeed` is the asyncio part, usable without Bytewax (``async for item in feed.stream()``): it runs
ccxt.pro's ``watch_trades``, ``watch_bids_asks`` (or ``watch_ticker``) and ``watch_order_book`` side by
side and turns what they return into `MarketSlice` items (trades -> `TradeChunk`, top of book ->
`QuoteChunk`) and `LiveBook` records (the top levels of the order book). `LiveSource` is the Bytewax input:
one partition per ``venue:symbol``, each running its feed on its own event loop.

- **Reconnect.** A `NetworkError` (closed connection, timeout, venue unavailable) ends the current watch
  call; the feed waits an exponential backoff with jitter (`Backoff`) and calls again, which makes ccxt
  reconnect and resubscribe. Consecutive failures are bounded (`Backoff.max_attempts`); the log names the
  feed, the channel and the error class only (no URL, no message text, so no secret can leak).
  Trades seen before a reconnect are not emitted twice (recent trade ids are remembered).
- **Sequence gaps.** ccxt.pro numbers the book itself and raises `InvalidNonce`/`ChecksumError` when an
  update does not follow the last one; the next watch call resubscribes and rebuilds the book from a
  fresh REST snapshot. The feed surfaces each gap as a `Quarantined` item in `MarketSlice.rejected`,
  reason ``sequence gap after update id N (ChecksumError); resynced from snapshot at update id M``, and
  counts gaps and resyncs in `FeedStats`.
- **Quarantine.** Every raw message passes through `sources.ws_messages` before ccxt sees it (for the
  venues whose websocket format it reads: binance, okx, bybit, coinbase); a message it rejects, a frame
  that is not valid JSON, a message ccxt fails on and a trade or quote ccxt returns without a usable price
  or size become `Quarantined` items and the stream goes on.

Time: ``ts_recv`` comes from the clock the caller passes (``clock``, epoch ns: ``time.time_ns`` in paper and
live mode, a fake in tests; the module itself never reads the wall clock);
``ts_event`` is the venue's time, or the receive time where the venue gives none (binance spot
bookTicker). The slice watermark is the latest event time this feed has emitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import queue
import random
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ccxt.pro
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from ccxt.base.errors import InvalidNonce, NetworkError

from headrace.events import NS_PER_MS, MarketSlice, Quarantined
from sources.ws_messages import QuoteRow, TradeRow, one_line, parse_message, quote_chunk, trade_chunk

log = logging.getLogger("headrace.live")

Clock = Callable[[], int]
Sleep = Callable[[float], Any]
CHANNELS = ("trades", "quotes", "book")
PREVALIDATED = ("binance", "okx", "bybit", "coinbase")  # venues whose websocket format ws_messages reads


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: attempt n waits ``min(cap, initial * factor**(n-1))`` scaled by a
    uniform factor in ``[1 - jitter, 1 + jitter]``; `max_attempts` consecutive failures end the feed.

    >>> b = Backoff(initial=0.5, factor=2.0, cap=4.0, jitter=0.0)
    >>> [b.delay(n, random.Random(0)) for n in (1, 2, 3, 4, 5)]
    [0.5, 1.0, 2.0, 4.0, 4.0]
    >>> 0.375 <= Backoff(jitter=0.25).delay(1, random.Random(1)) <= 0.625
    True
    """

    initial: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    jitter: float = 0.25
    max_attempts: int | None = 10

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = min(self.cap, self.initial * self.factor ** max(0, attempt - 1))
        return base * (1.0 + self.jitter * (2.0 * rng.random() - 1.0))


@dataclass(slots=True)
class FeedStats:
    """Counters a feed reports (read them any time; they only grow)."""

    trades: int = 0
    quotes: int = 0
    books: int = 0
    duplicates: int = 0  # trades dropped because their id was already emitted (replayed after a reconnect)
    reconnects: int = 0
    gaps: int = 0
    resyncs: int = 0
    quarantined: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # error class -> count


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveBook:
    """The top `depth` levels of one instrument's order book after an update (ccxt's `nonce` = update id)."""

    instrument: str
    ts_event: int
    ts_recv: int
    bids: tuple[tuple[float, float], ...]
    asks: tuple[tuple[float, float], ...]
    nonce: int | None


LiveItem = MarketSlice | LiveBook


class FeedFailed(RuntimeError):
    """The feed gave up: too many consecutive network failures, or an error that retrying cannot fix."""


class _Fatal:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _finite_positive(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _finite_nonneg(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def check_trade(t: dict[str, Any]) -> str | None:
    """Reason a ccxt unified trade cannot be used, naming the field; None when it is fine.

    >>> check_trade({"id": "1", "timestamp": 5, "price": 1.0, "amount": -2.0})
    "trade 1: field 'amount' is not a positive number: -2.0"
    """
    for key, ok in (("timestamp", _finite_positive), ("price", _finite_positive), ("amount", _finite_positive)):
        if not ok(t.get(key)):
            return one_line(f"trade {t.get('id')}: field '{key}' is not a positive number: {t.get(key)!r}"[:200])
    return None


def check_quote(t: dict[str, Any]) -> str | None:
    """Reason a ccxt ticker / bid-ask cannot be a top-of-book quote; None when it is fine.

    >>> check_quote({"bid": 2.0, "ask": 1.0, "bidVolume": 1, "askVolume": 1})
    'quote: crossed book, bid 2.0 > ask 1.0'
    """
    for key in ("bid", "ask"):
        if not _finite_positive(t.get(key)):
            return f"quote: field '{key}' is not a positive number: {t.get(key)!r}"[:200]
    for key in ("bidVolume", "askVolume"):
        if t.get(key) is not None and not _finite_nonneg(t.get(key)):
            return f"quote: field '{key}' is not a non-negative number: {t.get(key)!r}"[:200]
    if t["bid"] > t["ask"]:
        return f"quote: crossed book, bid {t['bid']} > ask {t['ask']}"
    return None


def live_message_problem(venue: str, message: object) -> str | None:
    """Reason a decoded raw websocket message of `venue` is malformed, or None (also for control messages).

    >>> live_message_problem("binance", {"e": "trade", "s": "BTCUSDT", "t": 1, "p": "abc", "q": "1",
    ...                                  "T": 1, "m": True})
    "binance: field 'p' in binance trade is not a number: 'abc'"
    >>> live_message_problem("binance", {"result": None, "id": 1}) is None
    True
    """
    if venue not in PREVALIDATED or not isinstance(message, dict | list):
        return None
    if isinstance(message, dict):
        m = message
        control = {
            "binance": "e" not in m and not ("B" in m and "A" in m),
            "okx": "event" in m or "data" not in m,
            "bybit": "topic" not in m,
            "coinbase": m.get("channel") not in ("market_trades", "ticker", "l2_data"),
        }[venue]
        if control:
            return None
    got = parse_message(venue, message)
    return got.rejected[0].reason if got.rejected else None


class LiveFeed:
    """Stream one venue:symbol from a ccxt.pro exchange; give each feed its own exchange instance.

    `channels` picks among ``trades``, ``quotes`` and ``book``; `book_depth` levels are kept in `LiveBook`.
    `clock` (epoch ns) stamps receive times: the caller passes the wall clock (``time.time_ns``, from the
    command that starts paper or live mode; nothing under sources/ reads it) or a test clock. `sleep` and `rng`
    drive the backoff (inject them in tests).
    """

    def __init__(self, exchange: Any, symbol: str, *, clock: Clock, channels: Sequence[str] = CHANNELS,
                 book_depth: int = 20, sleep: Sleep = asyncio.sleep, backoff: Backoff = Backoff(),
                 rng: random.Random | None = None, remember_trades: int = 10_000) -> None:
        unknown = sorted(set(channels) - set(CHANNELS))
        if unknown:
            raise ValueError(f"unknown channels {unknown}; known: {list(CHANNELS)}")
        self.exchange = exchange
        self.venue = str(exchange.id)
        self.symbol = symbol
        self.instrument = f"{self.venue}:{symbol}"
        self.channels = tuple(channels)
        self.book_depth = book_depth
        self.clock = clock
        self.sleep = sleep
        self.backoff = backoff
        self.rng = rng if rng is not None else random.Random()
        self.stats = FeedStats()
        self.watermark = 0
        self._seen: deque[str] = deque(maxlen=remember_trades)
        self._seen_set: set[str] = set()
        self._rows = 0
        self._queue: asyncio.Queue[LiveItem | _Fatal] | None = None
        self._gap: str | None = None  # the gap waiting for its resync
        self._guarded = False
        self._last_nonce: Any = None  # the book's update id before the last watch call

    # -- quarantine -------------------------------------------------------------------------------

    def _quarantine(self, reason: str, raw: object, ts_event: int = 0) -> None:
        self.stats.quarantined += 1
        text = raw if isinstance(raw, str) else Quarantined.raw_json({"message": raw})
        if isinstance(raw, bytes):
            text = raw.decode("utf-8", "replace")
        q = Quarantined(instrument=self.instrument, ts_event=ts_event, ts_recv=self.clock(),
                        source=f"live:{self.instrument}", row=-1, reason=one_line(reason), raw=str(text)[:4000])
        self._put(MarketSlice(instrument=self.instrument, watermark=self.watermark, rejected=(q,)))

    def _put(self, item: LiveItem | _Fatal) -> None:
        if self._queue is not None:
            self._queue.put_nowait(item)

    def _install_guard(self) -> None:
        """Check every raw message before ccxt handles it; quarantine what is malformed."""
        if self._guarded:
            return
        self._guarded = True
        ex = self.exchange
        handle = ex.handle_message

        def guarded(client: Any, message: Any) -> Any:
            reason = live_message_problem(self.venue, message)
            if reason is not None:
                self._quarantine(reason, message)
                return None
            try:
                return handle(client, message)
            except Exception as e:  # noqa: BLE001 - a message ccxt cannot handle is quarantined, not fatal
                self._quarantine(f"{self.venue}: ccxt could not handle message ({type(e).__name__}: {e})", message)
                return None

        ex.handle_message = guarded
        make_client = ex.client

        def client(url: str) -> Any:
            c = make_client(url)
            if not getattr(c, "_headrace_guarded", False):
                decode = c.handle_text_or_binary_message

                def checked(data: Any) -> Any:
                    try:
                        return decode(data)
                    except ValueError as e:  # orjson and json decode errors are ValueErrors
                        self._quarantine(f"{self.venue}: invalid JSON ({e})", data)
                        return None

                c.handle_text_or_binary_message = checked
                c._headrace_guarded = True
            return c

        ex.client = client

    # -- conversion -------------------------------------------------------------------------------

    def _emit_trades(self, trades: Iterable[dict[str, Any]], ts_recv: int) -> None:
        rows: list[TradeRow] = []
        for t in trades:
            reason = check_trade(t)
            if reason is not None:
                self._quarantine(f"{self.venue}: {reason}", t.get("info", t))
                continue
            tid = None if t.get("id") is None else str(t["id"])
            if tid is not None:
                if tid in self._seen_set:
                    self.stats.duplicates += 1
                    continue
                if len(self._seen) == self._seen.maxlen:
                    self._seen_set.discard(self._seen[0])
                self._seen.append(tid)
                self._seen_set.add(tid)
            side = {"buy": 1, "sell": -1}.get(str(t.get("side")), 0)
            rows.append(TradeRow(self.symbol, int(t["timestamp"]) * NS_PER_MS, float(t["price"]),
                                 float(t["amount"]), side, tid))
        if rows:
            self.stats.trades += len(rows)
            self.watermark = max(self.watermark, max(r.ts_event for r in rows))
            chunk = trade_chunk(self.instrument, rows, ts_recv, f"live:{self.instrument}", self._rows)
            self._rows += len(rows)
            self._put(MarketSlice(instrument=self.instrument, watermark=self.watermark, trades=chunk))

    def _emit_quote(self, t: dict[str, Any], ts_recv: int) -> None:
        reason = check_quote(t)
        if reason is not None:
            self._quarantine(f"{self.venue}: {reason}", t.get("info", t))
            return
        ts = int(t["timestamp"]) * NS_PER_MS if t.get("timestamp") else ts_recv
        row = QuoteRow(self.symbol, ts, float(t["bid"]), float(t["ask"]),
                       float(t["bidVolume"]) if t.get("bidVolume") is not None else math.nan,
                       float(t["askVolume"]) if t.get("askVolume") is not None else math.nan)
        self.stats.quotes += 1
        self.watermark = max(self.watermark, ts)
        chunk = quote_chunk(self.instrument, [row], ts_recv, f"live:{self.instrument}", self._rows)
        self._rows += 1
        self._put(MarketSlice(instrument=self.instrument, watermark=self.watermark, quotes=chunk))

    def _emit_book(self, ob: Any, ts_recv: int) -> None:
        nonce = ob.get("nonce")
        ts = int(ob["timestamp"]) * NS_PER_MS if ob.get("timestamp") else ts_recv
        if self._gap is not None:
            self.stats.resyncs += 1
            self._quarantine(f"{self._gap}; resynced from snapshot at update id {nonce}", {"nonce": nonce}, ts)
            self._gap = None
        self.stats.books += 1
        self.watermark = max(self.watermark, ts)
        lv = self.book_depth
        self._put(LiveBook(instrument=self.instrument, ts_event=ts, ts_recv=ts_recv,
                           bids=tuple((float(p), float(s)) for p, s, *_ in ob["bids"][:lv]),
                           asks=tuple((float(p), float(s)) for p, s, *_ in ob["asks"][:lv]),
                           nonce=None if nonce is None else int(nonce)))

    # -- the watch loops --------------------------------------------------------------------------

    async def _watch_once(self, channel: str) -> None:
        ex = self.exchange
        if channel == "trades":
            got = await ex.watch_trades(self.symbol)
            self._emit_trades(got, self.clock())
        elif channel == "quotes":
            if ex.has.get("watchBidsAsks"):
                got = await ex.watch_bids_asks([self.symbol])
                for t in (got.values() if isinstance(got, dict) else [got]):
                    if t.get("symbol") in (None, self.symbol):
                        self._emit_quote(t, self.clock())
            else:
                self._emit_quote(await ex.watch_ticker(self.symbol), self.clock())
        else:
            ob = await ex.watch_order_book(self.symbol)
            self._last_nonce = ob.get("nonce")
            self._emit_book(ob, self.clock())

    async def _run(self, channel: str) -> None:
        failures = 0
        while True:
            try:
                await self._watch_once(channel)
                failures = 0
            except InvalidNonce as e:  # ChecksumError included: the book lost an update
                self.stats.gaps += 1
                self._bump(e)
                self._gap = f"sequence gap after update id {self._last_nonce} ({type(e).__name__})"
                log.warning("%s %s: %s; resyncing from a snapshot", self.instrument, channel, type(e).__name__)
            except NetworkError as e:
                failures += 1
                self._bump(e)
                limit = self.backoff.max_attempts
                if limit is not None and failures > limit:
                    self._put(_Fatal(FeedFailed(
                        f"{self.instrument} {channel}: {failures - 1} reconnects failed, last {type(e).__name__}")))
                    return
                delay = self.backoff.delay(failures, self.rng)
                self.stats.reconnects += 1
                log.warning("%s %s: %s; reconnect %d in %.2f s", self.instrument, channel, type(e).__name__,
                            failures, delay)
                await self.sleep(delay)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - anything else cannot be fixed by retrying
                self._bump(e)
                self._put(_Fatal(FeedFailed(f"{self.instrument} {channel}: {type(e).__name__}")))
                return

    def _bump(self, e: BaseException) -> None:
        name = type(e).__name__
        self.stats.errors[name] = self.stats.errors.get(name, 0) + 1

    async def stream(self) -> AsyncIterator[LiveItem]:
        """Yield `MarketSlice` and `LiveBook` items until cancelled; raise `FeedFailed` when the feed gives up."""
        self._queue = asyncio.Queue()
        self._install_guard()
        if self.exchange.markets is None:
            await self.exchange.load_markets()
        tasks = [asyncio.ensure_future(self._run(c)) for c in self.channels]
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, _Fatal):
                    raise item.error
                yield item
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t

    async def close(self) -> None:
        await self.exchange.close()


# ---------------------------------------------------------------------------------------------------
# Bytewax input


ExchangeFactory = Callable[[str], Any]  # venue id -> a new ccxt.pro exchange instance


def ccxt_pro_exchange(venue: str) -> Any:
    """A new ccxt.pro exchange for `venue` (public market data only: no keys)."""
    return getattr(ccxt.pro, venue)({"enableRateLimit": True})


class _LivePartition(StatefulSourcePartition[LiveItem, None]):
    """Runs one feed on its own event loop in a thread; `next_batch` drains what has arrived."""

    def __init__(self, feed: LiveFeed, books: bool, max_batch: int, limit: int | None) -> None:
        self.feed = feed
        self.books = books
        self.max_batch = max_batch
        self.left = limit  # items still to emit; None = forever
        self.items: queue.Queue[LiveItem | BaseException] = queue.Queue()
        self.stop = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, name=f"live-{feed.instrument}", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        async def pump() -> None:
            try:
                async for item in self.feed.stream():
                    if self.books or not isinstance(item, LiveBook):
                        self.items.put(item)
                    if self.stop.is_set():
                        break
            except Exception as e:  # noqa: BLE001 - handed to the Bytewax thread, which raises it
                self.items.put(e)

        self._task = self.loop.create_task(pump())
        with contextlib.suppress(asyncio.CancelledError):
            self.loop.run_until_complete(self._task)
        self.loop.run_until_complete(self.feed.close())
        self.loop.close()

    def next_batch(self) -> list[LiveItem]:
        if self.left is not None and self.left <= 0:
            self.close()
            raise StopIteration
        out: list[LiveItem] = []
        most = self.max_batch if self.left is None else min(self.max_batch, self.left)
        try:
            item = self.items.get(timeout=0.05)
            while True:
                if isinstance(item, BaseException):
                    self.close()
                    raise item
                out.append(item)
                if len(out) >= most:
                    break
                item = self.items.get_nowait()
        except queue.Empty:
            pass
        if self.left is not None:
            self.left -= len(out)
        return out

    def snapshot(self) -> None:
        return None  # live data cannot be replayed: nothing to resume from

    def close(self) -> None:
        """Stop the feed: cancel its watch loops on its own event loop and wait for the thread."""
        self.stop.set()
        if self.thread.is_alive() and self._task is not None:
            self.loop.call_soon_threadsafe(self._task.cancel)
        self.thread.join(timeout=5)


class LiveSource(FixedPartitionedSource[LiveItem, None]):
    """Bytewax input over live feeds: one partition per ``venue:symbol`` instrument.

    Emits `MarketSlice` items (and `LiveBook` records when `books` is true). `exchange_factory` makes one
    ccxt.pro exchange per partition; `clock` and `feed_options` go to each `LiveFeed`. `limit` ends each partition after
    that many items (bounded captures and tests); by default a partition runs until the flow stops. There is
    no resume state: a restarted live flow starts from the venue's present.
    """

    def __init__(self, instruments: Sequence[str], *, clock: Clock,
                 exchange_factory: ExchangeFactory = ccxt_pro_exchange, books: bool = False, max_batch: int = 256,
                 limit: int | None = None, **feed_options: Any) -> None:
        for inst in instruments:
            if ":" not in inst:
                raise ValueError(f"instrument must look like 'venue:BASE/QUOTE', was {inst!r}")
        self.instruments = list(instruments)
        self.exchange_factory = exchange_factory
        self.books = books
        self.max_batch = max_batch
        self.limit = limit
        self.clock = clock
        self.feed_options = feed_options

    def list_parts(self) -> list[str]:
        return list(self.instruments)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _LivePartition:
        venue, _, symbol = for_part.partition(":")
        feed = LiveFeed(self.exchange_factory(venue), symbol, clock=self.clock, **self.feed_options)
        return _LivePartition(feed, self.books, self.max_batch, self.limit)
