"""The cross-sectional step: aligns every instrument's bars on bar time, then decides targets.

Bars of different instruments reach this single-key step in whatever order workers deliver them.
To stay deterministic it buffers them by bar close time and processes a time only when every
instrument's watermark has passed it (each instrument promises, with its watermark, that no bar at
or before it is still to come). Times are processed in order, instruments in sorted order, so the
output does not depend on scheduling or on the number of workers.

Instruments run on different clocks, and their data may stop (a venue's file ends, a feed dies). At each
processed time, an instrument whose last bar closed more than `stale_after_ns` before that time is
stale: it leaves the cross-section (not ranked, no targets; sizing spreads over the live instruments)
and an `InstrumentStatus` "stale" is emitted; its next bar brings it back with a "live" status.

With the router on, decisions are per *asset*: `assets` maps each asset to the instruments that carry it,
in order of preference, and the asset's features are those of its first live instrument with features
(so a venue whose data stops hands the asset over to the next). Targets then name the asset (``BTC``), and
the account routes them. An `ArbitrageCore`, when given, sees every processed time's bars and its signals
travel in the `CrossSection`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from headrace.errors import ConfigError, InvariantError
from headrace.events import (
    Bar,
    CrossSection,
    FeatureBatch,
    Features,
    InstrumentStatus,
    MlRecord,
    PortfolioRecord,
    Rebalance,
    Signal,
    Target,
    TargetStatus,
)
from operators.base import check_version
from operators.ml.core import MlCore, MlCoreSnap
from operators.portfolio.engine import PortfolioEngine, PortfolioEngineSnap
from operators.portfolio.sizing import VolTargetSizer, annualise
from operators.router.arbitrage import ArbitrageCore, ArbitrageSnap
from operators.signals.momentum import SignalModel

_MIN = int(np.iinfo(np.int64).min)
NEVER_STALE = int(np.iinfo(np.int64).max)


@dataclass(frozen=True, slots=True)
class CrossSectionSnap:
    version: int
    watermarks: tuple[tuple[str, int], ...]
    pending: tuple[tuple[int, tuple[tuple[Bar, Features, tuple[int, ...]], ...]], ...]
    latest: tuple[tuple[str, Features, int], ...]  # features and the bar's timeframe, per instrument
    count: int
    last_ts: int
    last_bar: tuple[tuple[str, int], ...]  # close time of each instrument's last bar
    stale: tuple[str, ...]
    arbitrage: ArbitrageSnap | None = None
    portfolio: PortfolioEngineSnap | None = None
    ml: MlCoreSnap | None = None
    marks: tuple[tuple[str, tuple[int, ...]], ...] = ()


class CrossSectionCore:
    """Align bars across `universe` by close time; on rebalance times emit signals and targets.

    Parameters
    ----------
    universe
        Every instrument that will send bars; a time is processed once all have passed it.
    signal, sizer
        The seams: scores from features, weights from scores.
    rebalance_bars
        Decide targets on every n-th processed bar time.
    min_instruments
        Instruments with momentum and volatility needed to decide at all (live ones only).
    stale_after_ns
        An instrument whose last bar closed more than this before the processed time is stale
        (``strategy.stale_after``); the default never makes one stale.
    assets
        Router on: asset -> its instruments in order of preference; targets are then per asset.
    arbitrage
        Router on: the cross-venue arbitrage core fed with every processed time's bars.
    engine
        The portfolio engine (``[portfolio]``): sees every processed time's closes, and at a rebalance turns
        the scores and vol-target weights into the method's targets, with its records.
    ml
        The online models (``[ml]``): see every processed time's feature vectors and, at a rebalance, blend
        their predictions with the rule scores (`operators.ml.core`).
    """

    def __init__(self, universe: Sequence[str], signal: SignalModel, sizer: VolTargetSizer,
                 rebalance_bars: int, min_instruments: int, *, stale_after_ns: int = NEVER_STALE,
                 assets: Mapping[str, Sequence[str]] | None = None, arbitrage: ArbitrageCore | None = None,
                 engine: PortfolioEngine | None = None, ml: MlCore | None = None) -> None:
        if not universe:
            raise ConfigError("replay", "no instruments to trade: the universe is empty")
        if stale_after_ns <= 0:
            raise ConfigError("strategy.stale_after", f"must be > 0, was {stale_after_ns} ns")
        self.universe = tuple(sorted(set(universe)))
        self.signal = signal
        self.sizer = sizer
        self.rebalance_bars = rebalance_bars
        self.min_instruments = min_instruments
        self.stale_after_ns = stale_after_ns
        self.assets = None if assets is None else {a: tuple(ks) for a, ks in sorted(assets.items())}
        self.arbitrage = arbitrage
        self.engine = engine
        self.ml = ml
        self._watermarks = {k: _MIN for k in self.universe}
        self._pending: dict[int, dict[str, tuple[Bar, Features, tuple[int, ...]]]] = {}
        self._latest: dict[str, tuple[Features, int]] = {}
        self._count = 0
        self._last_ts = _MIN
        self._last_bar: dict[str, int] = {}
        self._stale: set[str] = set()
        self._next_check = _MIN  # derived, not snapshotted: a restored core scans at its first time
        self._marks: dict[str, list[int]] = {}  # quarantine marks waiting for their instrument's next bar

    def update(self, item: FeatureBatch) -> list[CrossSection]:
        if item.instrument not in self._watermarks:
            raise InvariantError(f"instrument {item.instrument!r} is not in the universe {self.universe!r}")
        if item.quarantined:  # they come before this batch's bars: the first bar carries them
            self._marks.setdefault(item.instrument, []).extend(item.quarantined)
        for bar, feat in zip(item.bars, item.features):
            if bar.ts_event <= self._last_ts:
                raise InvariantError(f"bar of {bar.instrument} at {bar.ts_event} arrived after that time was "
                                     f"processed ({self._last_ts}); its watermark lied")
            marks = tuple(self._marks.pop(bar.instrument, ()))
            self._pending.setdefault(bar.ts_event, {})[bar.instrument] = (bar, feat, marks)
        self._watermarks[item.instrument] = max(self._watermarks[item.instrument], item.watermark)
        return self._drain(min(self._watermarks.values()))

    def flush(self) -> list[CrossSection]:
        """The times still pending; then, with ML on, a last cross-section without bars carrying the models'
        final metrics and learnt state (the account step does not see it)."""
        out = self._drain(int(np.iinfo(np.int64).max))
        if self.ml is not None:
            final = self.ml.flush()
            if final:
                out.append(CrossSection(ts_event=self._last_ts, bars=(), ml=tuple(final)))
        return out

    def _drain(self, ready: int) -> list[CrossSection]:
        out = []
        for ts in sorted(t for t in self._pending if t <= ready):
            out.append(self._process(ts, self._pending.pop(ts)))
        return out

    def _process(self, ts: int, slot: dict[str, tuple[Bar, Features, tuple[int, ...]]]) -> CrossSection:
        self._last_ts = ts
        bars = tuple(slot[k][0] for k in sorted(slot))
        for k in sorted(slot):
            bar, feat, _ = slot[k]
            self._latest[k] = (feat, bar.timeframe_ns)
            self._last_bar[k] = bar.ts_event
        statuses = self._statuses(ts, slot)
        arbitrage = tuple(self.arbitrage.update(ts, bars)) if self.arbitrage is not None else ()
        records: list[PortfolioRecord] = []
        ml: list[MlRecord] = []
        if self.engine is not None:
            records += self.engine.observe(ts, self._closes(slot))
        if self.ml is not None:
            ml += self.ml.observe(ts, {k: (bar, marks) for k, (bar, _, marks) in slot.items()})
        self._count += 1
        if self._count % self.rebalance_bars != 0:
            return CrossSection(ts_event=ts, bars=bars, statuses=statuses, arbitrage=arbitrage,
                                portfolio=tuple(records), ml=tuple(ml))
        signals, targets, decided, blended = self._decide(ts)
        return CrossSection(ts_event=ts, bars=bars, signals=signals, targets=targets, statuses=statuses,
                            arbitrage=arbitrage, portfolio=(*records, *decided), ml=(*ml, *blended))

    def _closes(self, slot: dict[str, tuple[Bar, Features, tuple[int, ...]]]
                ) -> dict[str, tuple[float, str, int]]:
        """Per decision key with a bar now, its close, the instrument it came from and the bar's length."""
        if self.assets is None:
            return {k: (bar.close, k, bar.timeframe_ns) for k, (bar, _, _) in slot.items()}
        out = {}
        for asset, instruments in self.assets.items():
            k = next((k for k in instruments if k in slot and k not in self._stale), None)
            if k is not None:
                bar = slot[k][0]
                out[asset] = (bar.close, k, bar.timeframe_ns)
        return out

    def _statuses(self, ts: int, slot: Mapping[str, object]) -> tuple[InstrumentStatus, ...]:
        # scan only when some instrument may have gone stale (its last bar + stale_after passed) or a stale
        # one sent a bar; `_next_check` never exceeds the earliest such time, so no change is missed
        if ts <= self._next_check and not (self._stale and not self._stale.isdisjoint(slot)):
            return ()
        out = []
        next_check = NEVER_STALE
        for k in self.universe:
            last = self._last_bar.get(k)
            if last is None:
                continue
            if k in self._stale and k in slot:
                self._stale.discard(k)
                out.append(InstrumentStatus(instrument=k, ts_event=ts, status="live", last_bar_ts=last))
            elif k not in self._stale and ts - last > self.stale_after_ns:
                self._stale.add(k)
                out.append(InstrumentStatus(instrument=k, ts_event=ts, status="stale", last_bar_ts=last))
            if k not in self._stale:
                next_check = min(next_check, last + self.stale_after_ns)
        self._next_check = next_check
        return tuple(out)

    def _decide(self, ts: int) -> tuple[tuple[Signal, ...], tuple[Target, ...], list[PortfolioRecord],
                                        list[MlRecord]]:
        momentum: dict[str, float] = {}
        vol_annual: dict[str, float | None] = {}
        vol_bar: dict[str, float | None] = {}
        live = [k for k in self.universe if k not in self._stale]
        keys: dict[str, str] = {k: k for k in live}  # decision key -> the instrument whose features it uses
        if self.assets is not None:
            keys = {}
            for asset, instruments in self.assets.items():
                ref = next((k for k in instruments if k not in self._stale and k in self._latest
                            and self._latest[k][0].momentum is not None
                            and self._latest[k][0].volatility is not None), None)
                if ref is not None:
                    keys[asset] = ref
            live = sorted(a for a, ks in self.assets.items() if any(k not in self._stale for k in ks))
        for key, k in keys.items():
            if k not in self._latest:
                continue
            feat, tf = self._latest[k]
            if feat.momentum is not None and feat.volatility is not None:
                momentum[key] = feat.momentum
                vol_bar[key] = feat.volatility
                vol_annual[key] = annualise(feat.volatility, tf)
        if len(momentum) < self.min_instruments:
            return (), (), [], []
        scores = self.signal.scores(momentum, {k: v for k, v in vol_bar.items() if v is not None})
        alpha, ml = scores, list[MlRecord]()
        if self.ml is not None:
            alpha, ml = self.ml.decide(ts, {k: keys[k] for k in sorted(scores)}, scores, momentum, vol_bar)
        weights = self.sizer.weights(alpha, vol_annual)
        records: list[PortfolioRecord] = []
        status: TargetStatus = "ok"
        if self.engine is not None:
            weights, records = self.engine.decide(ts, live, alpha, vol_bar, weights)
            if any(isinstance(r, Rebalance) and r.fallback == "previous" for r in records):
                status = "fallback_previous"
        signals = tuple(Signal(instrument=k, ts_event=ts, strategy=self.signal.name, score=scores[k])
                        for k in sorted(scores))
        if alpha != scores:  # a blended model holds weight: the alpha traded is not the rules' alone
            signals += tuple(Signal(instrument=k, ts_event=ts, strategy="blend", score=alpha[k]) for k in sorted(alpha))
        targets = tuple(Target(instrument=k, ts_event=ts, weight=weights.get(k, 0.0), status=status,
                               volatility=vol_bar.get(k)) for k in live)
        return signals, targets, records, ml

    def snapshot(self) -> CrossSectionSnap:
        return CrossSectionSnap(
            version=5,
            watermarks=tuple(sorted(self._watermarks.items())),
            pending=tuple((t, tuple(self._pending[t][k] for k in sorted(self._pending[t])))
                          for t in sorted(self._pending)),
            latest=tuple((k, f, tf) for k, (f, tf) in sorted(self._latest.items())),
            count=self._count,
            last_ts=self._last_ts,
            last_bar=tuple(sorted(self._last_bar.items())),
            stale=tuple(sorted(self._stale)),
            arbitrage=self.arbitrage.snapshot() if self.arbitrage is not None else None,
            portfolio=self.engine.snapshot() if self.engine is not None else None,
            ml=self.ml.snapshot() if self.ml is not None else None,
            marks=tuple((k, tuple(v)) for k, v in sorted(self._marks.items())),
        )

    @classmethod
    def restore(cls, universe: Sequence[str], signal: SignalModel, sizer: VolTargetSizer, rebalance_bars: int,
                min_instruments: int, snap: CrossSectionSnap, *, stale_after_ns: int = NEVER_STALE,
                assets: Mapping[str, Sequence[str]] | None = None,
                arbitrage: ArbitrageCore | None = None,
                engine: Callable[[PortfolioEngineSnap | None], PortfolioEngine | None] | None = None,
                ml: Callable[[MlCoreSnap | None], MlCore | None] | None = None,
                ) -> CrossSectionCore:
        """Restore from `snap`; `engine` and `ml` build the portfolio engine and the models from their
        snapshots (None: fresh ones)."""
        check_version(snap, expected=5)
        core = cls(universe, signal, sizer, rebalance_bars, min_instruments, stale_after_ns=stale_after_ns,
                   assets=assets, arbitrage=arbitrage,
                   engine=engine(snap.portfolio) if engine is not None else None,
                   ml=ml(snap.ml) if ml is not None else None)
        if arbitrage is not None and snap.arbitrage is not None:
            arbitrage.restore_state(snap.arbitrage)
        core._watermarks.update(dict(snap.watermarks))
        core._pending = {t: {b.instrument: (b, f, v) for b, f, v in pairs} for t, pairs in snap.pending}
        core._latest = {k: (f, tf) for k, f, tf in snap.latest}
        core._count, core._last_ts = snap.count, snap.last_ts
        core._last_bar = dict(snap.last_bar)
        core._stale = set(snap.stale)
        core._marks = {k: list(v) for k, v in snap.marks}
        return core
