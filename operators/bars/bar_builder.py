"""Event-time bars of one instrument: built from trades and quotes, or recorded bars passed through.

Bars are cut on event time, never on the wall clock: the bar ``[start, start + timeframe)`` closes
when the source's watermark says every record before ``start + timeframe`` has arrived. Trades make
OHLCV; a bar with quotes but no trades takes its OHLC from mid prices (volume 0); a bar with neither
is not emitted. Each bar carries the last best bid/ask and their sizes known at its close, when quotes
were seen, and the top levels of the last order-book state when the quotes come from an order book.
Bars of a perpetual contract replayed with its mark-price candles and funding events carry the last mark
price known at their close (a candle is known when it closes) and the funding events since the previous
bar's close (the first bar: since its open; events at or before it concern no position of the replay).
A recorded bar arrives with everything stamped at or before its close; a bar built from ticks closes once
everything stamped before its close has arrived, so it takes the marks and funding stamped strictly before
its close (one stamped on the close goes to the next bar): the same whatever the slices.
All tick work is numpy on whole chunks; Python runs once per bar, not per tick.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from headrace.errors import ConfigError, InvariantError
from headrace.events import (
    F64,
    I64,
    Bar,
    BarBatch,
    BarChunk,
    FundingChunk,
    MarkChunk,
    MarketSlice,
    Quarantined,
    QuoteChunk,
    TradeChunk,
)
from operators.base import check_version

Levels = tuple[tuple[float, float], ...]
Stamped = tuple[tuple[int, float], ...]  # (event time, value) in time order
_VERSION = 4


@dataclass(frozen=True, slots=True)
class Agg:
    """Open-high-low-close, summed volume and count of one bar bucket so far."""

    start: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    count: int
    bid: float | None = None  # last quote in the bucket (quote aggregates only)
    ask: float | None = None
    bid_size: float | None = None
    ask_size: float | None = None
    bids: Levels = ()  # its top levels (quotes from an order book)
    asks: Levels = ()
    buy: float = 0.0  # volume of trades whose aggressor bought (side +1), sold (-1); unknown sides in neither
    sell: float = 0.0

    def merge(self, later: Agg) -> Agg:
        return Agg(self.start, self.open, max(self.high, later.high), min(self.low, later.low), later.close,
                   self.volume + later.volume, self.count + later.count, later.bid, later.ask, later.bid_size,
                   later.ask_size, later.bids, later.asks, self.buy + later.buy, self.sell + later.sell)


@dataclass(frozen=True, slots=True)
class BarBuilderSnap:
    version: int
    instrument: str
    trades: tuple[Agg, ...]
    quotes: tuple[Agg, ...]
    last_bid: float | None
    last_ask: float | None
    last_recorded: int
    last_bid_size: float | None
    last_ask_size: float | None
    last_bids: Levels
    last_asks: Levels
    watermark: int = int(np.iinfo(np.int64).min)
    quarantined: tuple[int, ...] = ()
    mark: tuple[int, float] | None = None  # (close time, price) of the last mark candle handed to a bar
    marks: Stamped = ()  # mark candles not yet handed to a bar
    funding: Stamped = ()  # funding events not yet handed to a bar
    last_close: int | None = None  # close time of the last bar


def aggregate(ts: I64, price: F64, size: F64, timeframe_ns: int, side: npt.NDArray[np.int8] | None = None
              ) -> list[Agg]:
    """Group time-ordered values into bar buckets of `timeframe_ns` and return one `Agg` per bucket.

    The batch equivalent is a polars ``group_by_dynamic`` (or ``group_by(ts // tf)``) with first, max,
    min, last, sum and count.

    Examples
    --------
    >>> a = aggregate(np.array([0, 1, 7]), np.array([2.0, 3.0, 1.0]), np.array([1.0, 1.0, 2.0]), 5)
    >>> [(g.start, g.open, g.high, g.low, g.close, g.volume, g.count) for g in a]
    [(0, 2.0, 3.0, 2.0, 3.0, 2.0, 2), (5, 1.0, 1.0, 1.0, 1.0, 2.0, 1)]
    """
    if len(ts) == 0:
        return []
    bucket = ts - ts % timeframe_ns
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    ends = np.r_[starts[1:], len(ts)] - 1
    highs = np.maximum.reduceat(price, starts)
    lows = np.minimum.reduceat(price, starts)
    vols = np.add.reduceat(size, starts)
    counts = np.diff(np.r_[starts, len(ts)])
    if side is None:
        buys = sells = np.zeros(len(starts))
    else:
        buys = np.add.reduceat(np.where(side > 0, size, 0.0), starts)
        sells = np.add.reduceat(np.where(side < 0, size, 0.0), starts)
    return [
        Agg(int(b), float(o), float(h), float(lo), float(c), float(v), int(n), buy=float(bu), sell=float(se))
        for b, o, h, lo, c, v, n, bu, se in zip(bucket[starts].tolist(), price[starts].tolist(), highs.tolist(),
                                                lows.tolist(), price[ends].tolist(), vols.tolist(), counts.tolist(),
                                                buys.tolist(), sells.tolist())
    ]


class BarBuilder:
    """Bars of one instrument from its validated market slices (`update(MarketSlice) -> [BarBatch]`).

    Parameters
    ----------
    instrument
        The key this core serves.
    timeframe_ns
        Length of bars built from ticks, in ns; recorded bars keep their own length.
    """

    def __init__(self, instrument: str, timeframe_ns: int) -> None:
        if timeframe_ns <= 0:
            raise ConfigError("replay.timeframe", f"must be > 0 ns, was {timeframe_ns!r}")
        self.instrument = instrument
        self.timeframe_ns = timeframe_ns
        self._trades: dict[int, Agg] = {}  # open buckets, by start
        self._quotes: dict[int, Agg] = {}
        self._last_bid: float | None = None
        self._last_ask: float | None = None
        self._last_bid_size: float | None = None
        self._last_ask_size: float | None = None
        self._last_bids: Levels = ()
        self._last_asks: Levels = ()
        self._last_recorded = np.iinfo(np.int64).min
        self._watermark = int(np.iinfo(np.int64).min)
        self._quarantined: list[int] = []
        self._mark: tuple[int, float] | None = None
        self._marks: list[tuple[int, float]] = []
        self._funding: list[tuple[int, float]] = []
        self._last_close: int | None = None

    def update(self, item: MarketSlice | Quarantined) -> list[BarBatch]:
        if isinstance(item, Quarantined):
            # where in the stream the bad record sat (its own stamp may be the garbage): the feature vectors
            # built over it are flagged; it travels with the next batch
            self._quarantined.append(self._watermark if self._watermark > 0 else max(item.ts_event, 0))
            return []
        bars: list[Bar] = []
        if item.marks is not None and len(item.marks):
            self._marks += _stamped(item.marks)
        if item.funding is not None and len(item.funding):
            self._funding += _stamped(item.funding)
        if item.bars is not None and len(item.bars):
            bars += self._attach(self._recorded(item.bars), 0)
        if item.trades is not None and len(item.trades):
            self._fold_trades(item.trades)
        if item.quotes is not None and len(item.quotes):
            self._fold_quotes(item.quotes)
        bars += self._attach(self._close(item.watermark), 1)
        self._watermark = max(self._watermark, item.watermark)
        marks, self._quarantined = tuple(self._quarantined), []
        return [BarBatch(instrument=self.instrument, watermark=item.watermark, bars=tuple(bars), quarantined=marks)]

    def flush(self) -> list[BarBatch]:
        """Close the bars still open at the end of input (the last bar of a replay is partial)."""
        bars = self._attach(self._close(np.iinfo(np.int64).max), 1)
        marks, self._quarantined = tuple(self._quarantined), []
        return [BarBatch(instrument=self.instrument, watermark=np.iinfo(np.int64).max, bars=tuple(bars),
                         quarantined=marks)]

    def _attach(self, bars: list[Bar], before: int) -> list[Bar]:
        # bars in close order: each takes the last mark stamped at or before close - `before`, and its funding events
        # (`before` 0 for recorded bars, 1 ns for bars built from ticks: see the module docstring)
        if not bars:
            return bars
        if self._mark is None and not self._marks and not self._funding:  # no contract data: bars as they are
            self._last_close = bars[-1].ts_event
            return bars
        out = []
        for b in bars:
            te = b.ts_event - before
            n = bisect.bisect_right(self._marks, te, key=lambda m: m[0])
            if n:
                self._mark, self._marks = self._marks[n - 1], self._marks[n:]
            k = bisect.bisect_right(self._funding, te, key=lambda f: f[0])
            since = b.ts_open - before if self._last_close is None else self._last_close
            funding = tuple(f for f in self._funding[:k] if f[0] > since)
            self._funding = self._funding[k:]
            self._last_close = te
            mark = self._mark
            out.append(replace(b, mark_price=mark[1], mark_ts=mark[0], funding=funding) if mark is not None
                       else replace(b, funding=funding) if funding else b)
        return out

    def _recorded(self, c: BarChunk) -> list[Bar]:
        if int(c.ts_event[0]) <= self._last_recorded:
            raise InvariantError(f"recorded bars of {self.instrument} not after {self._last_recorded}: "
                                 f"{int(c.ts_event[0])}")
        self._last_recorded = int(c.ts_event[-1])
        inst = self.instrument
        return [
            Bar(instrument=inst, ts_open=to, ts_event=te, open=o, high=h, low=lo, close=cl, volume=v, trades=-1)
            for to, te, o, h, lo, cl, v in zip(c.ts_open.tolist(), c.ts_event.tolist(), c.open.tolist(),
                                               c.high.tolist(), c.low.tolist(), c.close.tolist(), c.volume.tolist())
        ]

    def _fold_trades(self, t: TradeChunk) -> None:
        for g in aggregate(t.ts_event, t.price, t.amount, self.timeframe_ns, t.side):
            prev = self._trades.get(g.start)
            self._trades[g.start] = prev.merge(g) if prev else g

    def _fold_quotes(self, q: QuoteChunk) -> None:
        mid = (q.bid + q.ask) * 0.5
        groups = aggregate(q.ts_event, mid, np.zeros_like(mid), self.timeframe_ns)
        ends = np.cumsum([g.count for g in groups]) - 1
        for g, e in zip(groups, ends.tolist()):
            g = replace(g, bid=float(q.bid[e]), ask=float(q.ask[e]), bid_size=float(q.bid_size[e]),
                        ask_size=float(q.ask_size[e]), bids=_levels(q.bid_levels, e), asks=_levels(q.ask_levels, e))
            prev = self._quotes.get(g.start)
            self._quotes[g.start] = prev.merge(g) if prev else g

    def _close(self, watermark: int) -> list[Bar]:
        # a bucket is complete when every record before its end has arrived: end - 1 <= watermark
        tf = self.timeframe_ns
        done = sorted(s for s in {*self._trades, *self._quotes} if s + tf - 1 <= watermark)
        out: list[Bar] = []
        for s in done:
            t, q = self._trades.pop(s, None), self._quotes.pop(s, None)
            if q is not None:
                self._last_bid, self._last_ask = q.bid, q.ask
                self._last_bid_size, self._last_ask_size, self._last_bids, self._last_asks = (
                    q.bid_size, q.ask_size, q.bids, q.asks)
            src = t if t is not None else q
            assert src is not None
            out.append(Bar(instrument=self.instrument, ts_open=s, ts_event=s + tf, open=src.open, high=src.high,
                           low=src.low, close=src.close, volume=t.volume if t else 0.0, trades=t.count if t else 0,
                           bid=self._last_bid, ask=self._last_ask, bid_size=self._last_bid_size,
                           ask_size=self._last_ask_size, bids=self._last_bids, asks=self._last_asks,
                           buy_volume=t.buy if t and t.buy + t.sell > 0 else None,
                           sell_volume=t.sell if t and t.buy + t.sell > 0 else None))
        return out

    def snapshot(self) -> BarBuilderSnap:
        return BarBuilderSnap(version=_VERSION, instrument=self.instrument,
                              trades=tuple(self._trades[k] for k in sorted(self._trades)),
                              quotes=tuple(self._quotes[k] for k in sorted(self._quotes)),
                              last_bid=self._last_bid, last_ask=self._last_ask, last_recorded=self._last_recorded,
                              last_bid_size=self._last_bid_size, last_ask_size=self._last_ask_size,
                              last_bids=self._last_bids, last_asks=self._last_asks, watermark=self._watermark,
                              quarantined=tuple(self._quarantined), mark=self._mark, marks=tuple(self._marks),
                              funding=tuple(self._funding), last_close=self._last_close)

    @classmethod
    def restore(cls, timeframe_ns: int, snap: BarBuilderSnap) -> BarBuilder:
        if snap.version != 3:  # version 3: before mark prices and funding (their fields take their defaults)
            check_version(snap, expected=_VERSION)
        core = cls(snap.instrument, timeframe_ns)
        core._trades = {a.start: a for a in snap.trades}
        core._quotes = {a.start: a for a in snap.quotes}
        core._last_bid, core._last_ask, core._last_recorded = snap.last_bid, snap.last_ask, snap.last_recorded
        core._last_bid_size, core._last_ask_size = snap.last_bid_size, snap.last_ask_size
        core._last_bids, core._last_asks = snap.last_bids, snap.last_asks
        core._watermark, core._quarantined = snap.watermark, list(snap.quarantined)
        # version 3 snapshots (pickled before these fields) lack them: they start empty
        core._mark, core._last_close = getattr(snap, "mark", None), getattr(snap, "last_close", None)
        core._marks, core._funding = list(getattr(snap, "marks", ())), list(getattr(snap, "funding", ()))
        return core


def _levels(levels: npt.NDArray[np.void] | None, i: int) -> Levels:
    """The levels (price, amount) of row `i` of `QuoteChunk.bid_levels` / `ask_levels`, without the NaN padding."""
    if levels is None:
        return ()
    prices, amounts = levels["price"][i], levels["amount"][i]
    n = int(np.count_nonzero(~np.isnan(prices)))
    return tuple(zip(prices[:n].tolist(), amounts[:n].tolist()))


def _stamped(c: MarkChunk | FundingChunk) -> list[tuple[int, float]]:
    """The (event time, value) pairs of a mark-price or funding chunk."""
    values = c.price if isinstance(c, MarkChunk) else c.rate
    return list(zip(c.ts_event.tolist(), values.tolist()))
