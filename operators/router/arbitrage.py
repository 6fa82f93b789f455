"""The cross-exchange arbitrage signal: a consolidated top of book per asset, and spreads that persist.

Every venue instrument carrying an asset contributes its last quote (the bar's closing bid/ask, or the close
± the venue's half spread when the data has no quotes), valued in the account currency at one market rate per
currency (the freshest, `FxTable.rate`), so two legs in the same quote currency compare their own prices
exactly (buy BTC for USDC on one venue, sell it for USDC on the other), whatever USDC is worth. For each ordered pair
of venues (buy on one at its ask, sell on the other at its bid) the net spread after both legs' taker fees is

    net = bid_sell * rate_sell * (1 - fee_sell) / (ask_buy * rate_buy * (1 + fee_buy)) - 1

A pair whose net spread stays above the threshold for at least `min_duration_ns` becomes an `ArbSignal`
"open" (once), and a "closed" one (carrying the widest spread seen) when the spread falls back or a leg's
quote grows older than `quote_max_age_ns`. Only pairs on different venues count: on one venue the market
rate of a quote currency may be implied by the same instruments, so a same-venue spread would say nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from headrace.errors import ConfigError
from headrace.events import ArbSignal, Bar
from operators.base import check_version
from operators.positions.fx import FxTable
from operators.router.listings import Listing


@dataclass(frozen=True, slots=True)
class Track:
    """A pair above the threshold: since when, whether it was signalled, and the widest spreads seen."""

    first_ts: int
    confirmed: bool
    max_net_bps: float
    max_gross_bps: float


@dataclass(frozen=True, slots=True)
class ArbitrageSnap:
    version: int
    quotes: tuple[tuple[str, float, float, int], ...]  # instrument, bid, ask, time
    marks: tuple[tuple[str, float, int], ...]
    tracks: tuple[tuple[str, str, str, Track], ...]  # asset, buy, sell, track


@dataclass(frozen=True, slots=True)
class Consolidated:
    """The best bid and ask of an asset across venues and quote currencies, in the account currency."""

    asset: str
    bid: float
    bid_instrument: str
    ask: float
    ask_instrument: str


class ArbitrageCore:
    """Consolidate quotes per asset across venues; emit a signal when a net spread persists.

    Examples
    --------
    >>> from headrace.events import Bar
    >>> fx = FxTable.resolve("USD", ["a:BTC/USD", "b:BTC/USD"], fixed={})
    >>> ls = {"BTC": (Listing("a:BTC/USD", "a", "BTC", "USD", None, 0.001, 0.0),
    ...               Listing("b:BTC/USD", "b", "BTC", "USD", None, 0.001, 0.0))}
    >>> arb = ArbitrageCore(ls, fx, threshold_bps=5.0, min_duration_ns=60, quote_max_age_ns=600)
    >>> def bar(i, t, c): return Bar(instrument=i, ts_open=t - 60, ts_event=t, open=c, high=c, low=c, close=c,
    ...                              volume=1.0, trades=1)
    >>> arb.update(60, [bar("a:BTC/USD", 60, 100.0), bar("b:BTC/USD", 60, 101.0)])  # 100 -> 80 bps: seen
    []
    >>> [(s.status, s.buy_instrument, round(s.net_spread_bps, 1)) for s in
    ...  arb.update(120, [bar("a:BTC/USD", 120, 100.0), bar("b:BTC/USD", 120, 101.0)])]
    [('open', 'a:BTC/USD', 79.8)]
    >>> [(s.status, round(s.net_spread_bps, 1)) for s in
    ...  arb.update(180, [bar("a:BTC/USD", 180, 100.0), bar("b:BTC/USD", 180, 100.0)])]
    [('closed', 79.8)]
    """

    def __init__(self, listings: Mapping[str, Sequence[Listing]], fx: FxTable, *, threshold_bps: float,
                 min_duration_ns: int, quote_max_age_ns: int) -> None:
        if quote_max_age_ns <= 0:
            raise ConfigError("router.quote_max_age", f"must be > 0, was {quote_max_age_ns} ns")
        self.listings = {a: tuple(sorted(ls, key=lambda x: x.instrument)) for a, ls in sorted(listings.items())}
        self._of = {li.instrument: li for ls in self.listings.values() for li in ls}
        self.fx = fx
        self.threshold_bps = threshold_bps
        self.min_duration_ns = min_duration_ns
        self.quote_max_age_ns = quote_max_age_ns
        self._quotes: dict[str, tuple[float, float, int]] = {}
        self._marks: dict[str, float] = {}
        self._mark_ts: dict[str, int] = {}
        self._tracks: dict[tuple[str, str, str], Track] = {}

    def observe(self, bars: Sequence[Bar]) -> None:
        """Take the bars' closes as marks (every bar, for the fx) and their quotes (listed instruments)."""
        for b in bars:
            self._marks[b.instrument] = b.close
            self._mark_ts[b.instrument] = b.ts_event
            li = self._of.get(b.instrument)
            if li is None:
                continue
            if b.bid is not None and b.ask is not None and 0 < b.bid <= b.ask:
                self._quotes[b.instrument] = (b.bid, b.ask, b.ts_event)
            else:
                hs = li.half_spread
                self._quotes[b.instrument] = (b.close * (1 - hs), b.close * (1 + hs), b.ts_event)

    def _priced(self, ts: int, asset: str) -> list[tuple[Listing, float, float]]:
        """Listings of `asset` with a fresh quote and a known rate: (listing, bid, ask) in the account currency."""
        out = []
        for li in self.listings[asset]:
            q = self._quotes.get(li.instrument)
            if q is None or ts - q[2] > self.quote_max_age_ns:
                continue
            rate = self.fx.rate(li.quote, self._marks, self._mark_ts)
            if rate is None:
                continue
            out.append((li, q[0] * rate, q[1] * rate))
        return out

    def consolidated(self, ts: int) -> list[Consolidated]:
        """Return the consolidated top of book of every asset with a fresh quote at `ts`."""
        out = []
        for asset in self.listings:
            priced = self._priced(ts, asset)
            if priced:
                bid = max(priced, key=lambda x: (x[1], x[0].instrument))
                ask = min(priced, key=lambda x: (x[2], x[0].instrument))
                out.append(Consolidated(asset, bid[1], bid[0].instrument, ask[2], ask[0].instrument))
        return out

    def update(self, ts: int, bars: Sequence[Bar]) -> list[ArbSignal]:
        """Observe `bars` (all closed at `ts`), then open and close signals; pairs in sorted order."""
        self.observe(bars)
        out: list[ArbSignal] = []
        live: set[tuple[str, str, str]] = set()
        for asset in self.listings:
            priced = self._priced(ts, asset)
            for buy, _, ask in priced:
                for sell, bid, _ in priced:
                    if buy.venue == sell.venue:
                        continue
                    gross = (bid / ask - 1.0) * 1e4
                    net = (bid * (1 - sell.fee_rate) / (ask * (1 + buy.fee_rate)) - 1.0) * 1e4
                    if net <= self.threshold_bps:
                        continue
                    key = (asset, buy.instrument, sell.instrument)
                    live.add(key)
                    t = self._tracks.get(key) or Track(ts, False, net, gross)
                    t = Track(t.first_ts, t.confirmed, max(t.max_net_bps, net), max(t.max_gross_bps, gross))
                    if not t.confirmed and ts - t.first_ts >= self.min_duration_ns:
                        t = Track(t.first_ts, True, t.max_net_bps, t.max_gross_bps)
                        out.append(ArbSignal(asset=asset, ts_event=ts, status="open", buy_instrument=buy.instrument,
                                             sell_instrument=sell.instrument, net_spread_bps=net,
                                             gross_spread_bps=gross, opened_ts=t.first_ts))
                    self._tracks[key] = t
        for key in sorted(set(self._tracks) - live):
            t = self._tracks.pop(key)
            if t.confirmed:
                out.append(ArbSignal(asset=key[0], ts_event=ts, status="closed", buy_instrument=key[1],
                                     sell_instrument=key[2], net_spread_bps=t.max_net_bps,
                                     gross_spread_bps=t.max_gross_bps, opened_ts=t.first_ts))
        return out

    def open_signals(self) -> list[tuple[str, str, str]]:
        """The (asset, buy, sell) pairs signalled and still open."""
        return sorted(k for k, t in self._tracks.items() if t.confirmed)

    def snapshot(self) -> ArbitrageSnap:
        return ArbitrageSnap(
            version=1,
            quotes=tuple((k, b, a, t) for k, (b, a, t) in sorted(self._quotes.items())),
            marks=tuple((k, m, self._mark_ts[k]) for k, m in sorted(self._marks.items())),
            tracks=tuple((a, b, s, t) for (a, b, s), t in sorted(self._tracks.items())),
        )

    def restore_state(self, snap: ArbitrageSnap) -> ArbitrageCore:
        """Load `snap` into this (freshly built) core and return it."""
        check_version(snap, expected=1)
        self._quotes = {k: (b, a, t) for k, b, a, t in snap.quotes}
        self._marks = {k: m for k, m, _ in snap.marks}
        self._mark_ts = {k: t for k, _, t in snap.marks}
        self._tracks = {(a, b, s): t for a, b, s, t in snap.tracks}
        return self
