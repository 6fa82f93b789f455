"""The trading graph on live data: paper mode (simulated execution) and live mode (orders sent to venues).

The graph is the replay graph of `flows.trading` (same steps, same step ids, same rows), with `LiveSource`
(ccxt.pro websockets: trades and top of book per ``venue:BASE/QUOTE``) in place of the replay source:

```
LiveSource ─► LiveBounds (merged watermark, stop, --duration, --max-items, rows counted) ─► the replay graph
```

- **Paper** (``executor=None``): the account simulates fills exactly as in replay.
- **Live** (``executor``: a `sinks.ccxt_executor.CcxtExecutor`): with ``[router] enabled = true`` the routed
  account hands each child to the executor when it is decided and reconciles with the venues at the first
  cross-section and every ``live.reconcile_every``.

Time: every receive time comes from the `clock` the command passes (``time.time_ns``); nothing here or in
`sources/` reads the wall clock itself. A live flow has no resume state: a restarted run starts from the venues'
present, under a new run id.

Watermarks. A `LiveFeed`'s watermark is a promise about its own instrument only; `LiveBounds` rewrites each
slice's watermark to the minimum over the instruments that have reported (and 0 until all have), which is
what the bar and cross-section steps read as "everything up to here has arrived".
"""

from __future__ import annotations

import dataclasses
import signal
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import Sink

from headrace.config import Config
from headrace.errors import ConfigError
from headrace.events import MarketSlice, Quarantined
from operators.positions.routed_account import Executor
from sources.live import Clock, ExchangeFactory, LiveSource

CHANNELS = ("trades", "quotes")  # the flow builds bars from trades and quotes; books are not read (yet)


# ---------------------------------------------------------------------------------------------------
# instruments and URLs


def parse_instruments(venues: Sequence[str], symbols: Sequence[str], instruments: Sequence[str]) -> tuple[str, ...]:
    """Return the sorted, distinct ``venue:BASE/QUOTE`` instruments of ``--venue``/``--symbol`` and ``--instrument``.

    Every ``--symbol`` is taken on every ``--venue``; a malformed one is a `ConfigError` naming it.

    >>> parse_instruments(["Binance"], ["btc/usdt", "ETH/USDT"], ["kraken:BTC/USD"])
    ('binance:BTC/USDT', 'binance:ETH/USDT', 'kraken:BTC/USD')
    >>> parse_instruments([], ["BTC/USDT"], [])
    Traceback (most recent call last):
    ...
    headrace.errors.ConfigError: config key '--symbol': give the venue of 'BTC/USDT' with --venue, or --instrument
    """
    out: set[str] = set()
    if symbols and not venues:
        raise ConfigError("--symbol", f"give the venue of {symbols[0]!r} with --venue, or --instrument")
    pairs = [(v, s, "--symbol") for v in venues for s in symbols]
    for inst in instruments:
        v, sep, s = inst.partition(":")
        if not sep:
            raise ConfigError("--instrument", f"{inst!r} must look like venue:BASE/QUOTE (binance:BTC/USDT)")
        pairs.append((v, s, "--instrument"))
    for v, s, opt in pairs:
        base, sep, quote = s.strip().partition("/")
        if not v.strip() or not sep or not base or not quote or "/" in quote or ":" in s:
            raise ConfigError(opt, f"{s!r} on {v!r} must look like BASE/QUOTE (BTC/USDT) on a ccxt venue id")
        out.add(f"{v.strip().lower()}:{base.upper()}/{quote.upper()}")
    if not out:
        raise ConfigError("--symbol", "no instrument to trade: give --venue and --symbol, or --instrument")
    return tuple(sorted(out))


def rest_url_overrides(api: Mapping[str, Any], base: str) -> dict[str, str]:
    """The string entries of a ccxt ``urls['api']`` with their scheme and host replaced by `base` (paths kept).

    Nested entries (websocket URLs) are left alone.

    >>> rest_url_overrides({"public": "https://api.binance.com/api/v3", "ws": {"spot": "wss://x/ws"}},
    ...                    "http://127.0.0.1:8080/")
    {'public': 'http://127.0.0.1:8080/api/v3'}
    """
    root = base.rstrip("/")
    return {k: root + urlsplit(v).path for k, v in api.items() if isinstance(v, str) and "://" in v}


def _ws_overridden(ws: Any, url: str) -> Any:
    if isinstance(ws, dict):
        return {k: _ws_overridden(v, url) for k, v in ws.items()}
    return url if isinstance(ws, str) else ws


def point_exchange(exchange: Any, *, rest: str | None = None, ws: str | None = None) -> None:
    """Point a ccxt (or ccxt.pro) exchange at `rest` (every REST entry of ``urls['api']``, paths kept) and `ws`
    (every websocket URL); None keeps the venue's own."""
    api = exchange.urls["api"]
    if rest:
        api.update(rest_url_overrides(api, rest))
    if ws and "ws" in api:
        api["ws"] = _ws_overridden(api["ws"], ws)


def venue_market_files(config: Config) -> dict[str, Any]:
    """The `VenueMarkets` of the files (or folders) in ``router.markets``, by venue; a later file wins."""
    from sources.market_metadata import load_venue_file

    out: dict[str, Any] = {}
    for p in map(Path, config.router.markets):
        files = sorted([*p.glob("*.json"), *p.glob("*.json.gz")]) if p.is_dir() else [p]
        for f in files:
            if not f.is_file():
                raise ConfigError("router.markets", f"{str(f)!r}: no such file or folder")
            vm = load_venue_file(f)
            out[vm.venue] = vm
    return out


def live_exchange_factory(config: Config) -> ExchangeFactory:
    """ccxt.pro exchanges (public data, no keys) honouring ``live.ws_urls``/``live.rest_urls``; a venue whose
    markets are in ``router.markets`` gets them offline (no ``load_markets`` request)."""
    import ccxt.pro

    from sources.market_metadata import CCXT_MODE

    offline = venue_market_files(config) if config.router.markets else {}

    def make(venue: str) -> Any:
        if not hasattr(ccxt.pro, venue):
            raise ConfigError("--venue", f"{venue!r} has no websocket client in ccxt.pro")
        ex = getattr(ccxt.pro, venue)({"enableRateLimit": True})
        point_exchange(ex, rest=config.live.rest_urls.get(venue), ws=config.live.ws_urls.get(venue))
        vm = offline.get(venue)
        if vm is not None:
            ex.precisionMode = CCXT_MODE[vm.precision_mode]
            ex.set_markets({s: {**ex.safe_market_structure(), **m} for s, m in vm.raw.items()})
        return ex

    return make


# ---------------------------------------------------------------------------------------------------
# the bounded, merged input


@dataclass
class LiveCounters:
    """Shared by the partitions of one run: rows in, slices in, why the input ended, the merged watermark."""

    rows: int = 0
    items: int = 0
    late: int = 0
    ended: str = ""  # "", "max-items", "duration", "stopped by SIGINT", ...
    emitted: int = 0  # the merged watermark handed downstream so far (never decreases)
    latest: dict[str, int] = field(default_factory=dict)  # per instrument, the feed's own watermark
    lock: threading.Lock = field(default_factory=threading.Lock)


def slice_rows(s: MarketSlice) -> int:
    """Rows a slice carries: trades, quotes, bars and quarantined records."""
    return sum(len(c.ts_event) for c in (s.trades, s.quotes, s.bars) if c is not None) + len(s.rejected)


def drop_late(s: MarketSlice, watermark: int) -> tuple[MarketSlice, int]:
    """`s` without the trades and quotes at or before `watermark` (their bars are closed), those quarantined
    with the reason; and how many were late."""
    from operators.validation.market_checks import row_values, take

    rejected = list(s.rejected)
    kept: dict[str, Any] = {}
    for name in ("trades", "quotes"):
        chunk = getattr(s, name)
        if chunk is None or not len(chunk):
            continue
        late = chunk.ts_event <= watermark
        if not late.any():
            continue
        for i in late.nonzero()[0].tolist():
            rejected.append(Quarantined(
                instrument=s.instrument, ts_event=int(chunk.ts_event[i]), ts_recv=int(chunk.ts_recv[i]),
                source=f"live:{s.instrument}", row=-1, raw=Quarantined.raw_json(row_values(chunk, i)),
                reason=f"late: event time {int(chunk.ts_event[i])} is at or before the watermark {watermark} "
                       f"already passed (its bar is closed)"))
        kept[name] = None if late.all() else take(chunk, ~late)
    if not kept:
        return s, 0
    return dataclasses.replace(s, rejected=tuple(rejected), **kept), len(rejected) - len(s.rejected)


class _BoundedPartition(StatefulSourcePartition[MarketSlice, None]):
    def __init__(self, inner: StatefulSourcePartition[Any, Any], bounds: LiveBounds) -> None:
        self.inner, self.bounds = inner, bounds
        self.done = False

    def _end(self, why: str) -> None:
        c = self.bounds.counters
        with c.lock:
            c.ended = c.ended or why
        self.done = True
        self.inner.close()
        raise StopIteration

    def next_batch(self) -> list[MarketSlice]:
        b, c = self.bounds, self.bounds.counters
        if self.done:
            raise StopIteration
        if b.stop is not None and b.stop.is_set():
            signum = getattr(b.stop, "signum", 0)
            self._end(f"stopped by {signal.Signals(signum).name}" if signum else "stopped")
        if c.ended:  # another partition hit a bound
            self._end(c.ended)
        if b.deadline_ns is not None and b.clock() >= b.deadline_ns:
            self._end("duration")
        if b.max_items is not None and c.items >= b.max_items:
            self._end("max-items")
        got = [x for x in self.inner.next_batch() if isinstance(x, MarketSlice)]
        out = []
        with c.lock:
            if b.max_items is not None:
                got = got[: max(0, b.max_items - c.items)]
            for s in got:
                c.items += 1
                c.rows += slice_rows(s)
                s, late = drop_late(s, c.emitted)
                c.late += late
                c.latest[s.instrument] = max(c.latest.get(s.instrument, 0), s.watermark)
                if len(c.latest) == len(b.instruments):
                    c.emitted = max(c.emitted, min(c.latest.values()) - b.lateness_ns)
                out.append(dataclasses.replace(s, watermark=c.emitted))
        return out

    def next_awake(self) -> Any:
        return self.inner.next_awake()

    def snapshot(self) -> None:
        return None

    def close(self) -> None:
        self.inner.close()


class LiveBounds(FixedPartitionedSource[MarketSlice, None]):
    """`inner` (a `LiveSource`) with one watermark over all its instruments, ending cleanly (end of input: every
    step flushes and the run is summarised) when `stop` is set, at `deadline_ns` on `clock`, or after
    `max_items` slices in all.

    The merged watermark is the minimum of the instruments' own, less `lateness_ns` (a trade reaches us after
    a quote stamped at its receive time; venues deliver trades a little late), and 0 until every instrument
    has reported. A trade or quote at or before the watermark already handed on is late: its bar is closed,
    so it is quarantined with the reason. Rows, slices and late rows are counted in `counters`.
    """

    def __init__(self, inner: LiveSource, *, clock: Clock, stop: threading.Event | None = None,
                 deadline_ns: int | None = None, max_items: int | None = None, lateness_ns: int = 2 * 10**9,
                 counters: LiveCounters | None = None) -> None:
        self.inner, self.clock, self.stop = inner, clock, stop
        self.deadline_ns, self.max_items, self.lateness_ns = deadline_ns, max_items, lateness_ns
        self.instruments = tuple(inner.instruments)
        self.counters = counters if counters is not None else LiveCounters()

    def list_parts(self) -> list[str]:
        return list(self.inner.list_parts())

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _BoundedPartition:
        return _BoundedPartition(self.inner.build_part(step_id, for_part, None), self)


# ---------------------------------------------------------------------------------------------------
# the flow


def build_live_flow(config: Config, instruments: Sequence[str], run_id: str, *, clock: Clock,
                    source: FixedPartitionedSource[MarketSlice, Any] | None = None, executor: Executor | None = None,
                    dsn: str | None = None, sink: Sink[tuple[str, Any]] | None = None,
                    exchange_factory: ExchangeFactory | None = None) -> Dataflow:
    """Return the trading dataflow on live data of `instruments` (``venue:BASE/QUOTE``), writing under `run_id`.

    `source` replaces the live source (default: `LiveSource` over ccxt.pro with `live_exchange_factory`, trades
    and top of book, in `LiveBounds` without bounds: it runs until the process stops); `executor` (live mode,
    router on) sends the routed account's children to the venues; `dsn` and `sink` as in
    `flows.trading.build_flow`. Bad settings raise `ConfigError` here, before any I/O.
    """
    from flows.trading import build_flow

    instruments = tuple(instruments)
    if executor is not None and not config.router.enabled:
        raise ConfigError("router.enabled", "live trading routes children with market metadata: set "
                                            "[router] enabled = true (and router.markets)")
    src: FixedPartitionedSource[Any, Any] = source if source is not None else LiveBounds(LiveSource(
        instruments, clock=clock, exchange_factory=exchange_factory or live_exchange_factory(config),
        channels=CHANNELS), clock=clock)
    from headrace.risk_commands import Inbox, commands_path

    inbox = Inbox(commands_path(config), config.account.id) if config.risk.enabled else None  # operator commands
    return build_flow(None, config, run_id, dsn=dsn, source=src, sink=sink, executor=executor,  # type: ignore[arg-type]
                      universe=instruments, risk_inbox=inbox)  # any partitioned source of MarketSlice items takes
                                                                # the replay's place
