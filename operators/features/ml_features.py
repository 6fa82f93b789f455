"""Feature vectors for online models: one per closed bar of an instrument, with validity flags.

Per bar (all from the instrument's own closed bars, so identical in replay, paper and live):

- ``ret_<h>``: ``ln(close / close h bars ago)`` for each horizon h in `horizons`;
- ``vol``: EWMA standard deviation of one-bar log returns (halflife `vol_halflife`), zero-mean;
- ``zscore``: ``(ln close - m) / vol`` with m the EWMA of ln close (halflife `z_halflife`);
- ``volume_surprise``: ``ln(volume / v)`` with v the EWMA of volume before this bar (None for a bar without
  volume);
- where the data has quotes: ``spread`` = (ask - bid) / mid and ``microprice`` = (microprice - mid) / mid, the
  microprice weighting each side by the other side's size (`Bar.bid`, `Bar.ask`, `Bar.bid_size`,
  `Bar.ask_size`);
- where the bar was built from trades with aggressor sides: ``order_flow`` = (buy volume - sell volume) /
  (buy volume + sell volume), the signed-volume imbalance in [-1, 1];
- where several venues quote the same pair: ``basis`` = ln close minus the mean ln close of the pair on the
  other venues (set by `operators.ml.core.MlCore`, which sees every venue; `set_basis`).

A vector is **valid** only when no flag is set; a model neither learns from nor trades on an invalid one:

- ``warmup``: fewer bars than the longest horizon needs, or the volatility has fewer than `min_vol_bars` returns;
- ``gap``: a bar is missing (two consecutive bars more than one bar length apart) within the longest horizon;
- ``quarantine``: a record of this instrument was quarantined within the longest horizon (`mark_quarantined`).

Returns across a missing bar span the gap (as `BarFeatures` does); the flag says so.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from headrace.errors import ConfigError, InvariantError
from headrace.events import Bar, FeatureVector
from operators.base import check_version


@dataclass(frozen=True, slots=True)
class MlFeaturesSnap:
    version: int
    closes: tuple[float, ...]
    times: tuple[int, ...]
    var: float | None
    var_count: int
    log_level: float | None
    volume: float | None
    last_quarantine: int | None
    timeframe_ns: int = 0  # of the last bar
    z_num: float = 0.0
    surprise: float | None = None
    bar: Bar | None = None
    count: int = 0
    flow: float | None = None
    basis: float | None = None


def _alpha(halflife: float, key: str) -> float:
    if not halflife > 0:
        raise ConfigError(key, f"must be > 0, was {halflife!r}")
    return float(1.0 - 0.5 ** (1.0 / halflife))


class MlFeatures:
    """Feature vectors of one instrument's closed bars (see the module docstring).

    Examples
    --------
    >>> from headrace.events import Bar, FeatureVector
    >>> f = MlFeatures(horizons=(1, 2), vol_halflife=2.0, z_halflife=2.0, min_vol_bars=1)
    >>> bars = [Bar(instrument="x:A/B", ts_open=t, ts_event=t + 1, open=p, high=p, low=p, close=p, volume=1.0,
    ...             trades=1) for t, p in enumerate([100.0, 101.0, 99.0, 100.0])]
    >>> [f.update(b).flags for b in bars]
    [('warmup',), ('warmup',), (), ()]
    >>> round(f.update(Bar(instrument="x:A/B", ts_open=4, ts_event=5, open=1, high=1, low=1, close=102.0,
    ...                    volume=2.0, trades=1)).as_dict()["ret_2"], 6)
    0.029853
    """

    VERSION = 1

    def __init__(self, horizons: Sequence[int] = (1, 4, 24), vol_halflife: float = 24.0, z_halflife: float = 24.0,
                 volume_halflife: float = 24.0, min_vol_bars: int = 10) -> None:
        if not horizons or any(h < 1 for h in horizons):
            raise ConfigError("ml.feature_horizons",
                              f"must be a non-empty list of bar counts >= 1, was {list(horizons)!r}")
        if min_vol_bars < 1:
            raise ConfigError("ml.min_vol_bars", f"must be >= 1, was {min_vol_bars!r}")
        self.horizons = tuple(sorted(set(horizons)))
        self.vol_halflife, self.z_halflife, self.volume_halflife = vol_halflife, z_halflife, volume_halflife
        self.longest = self.horizons[-1]
        self.vol_alpha = _alpha(vol_halflife, "ml.vol_halflife_bars")
        self.z_alpha = _alpha(z_halflife, "ml.zscore_halflife_bars")
        self.volume_alpha = _alpha(volume_halflife, "ml.volume_halflife_bars")
        self.min_vol_bars = min_vol_bars
        self._closes: deque[float] = deque(maxlen=self.longest + 1)
        self._times: deque[int] = deque(maxlen=self.longest + 1)  # (close time) of those bars
        self._var: float | None = None
        self._var_count = 0
        self._level: float | None = None  # EWMA of ln close
        self._volume: float | None = None  # EWMA of volume
        self._last_quarantine: int | None = None
        self._gap_start: int | None = None  # close time of the last bar before the latest gap
        self._tf = 0
        self._names = tuple(f"ret_{h}" for h in self.horizons)
        self._z_num = 0.0  # ln close - its EWMA, at the last bar
        self._surprise: float | None = None  # the last bar's volume surprise
        self._bar: Bar | None = None
        self.count = 0  # bars taken
        self._flow: float | None = None  # the last bar's signed-volume imbalance
        self._basis: float | None = None

    def mark_quarantined(self, ts_event: int) -> None:
        """A record of this instrument stamped `ts_event` was quarantined: vectors near it are invalid."""
        self._last_quarantine = ts_event if self._last_quarantine is None else max(self._last_quarantine, ts_event)

    def update(self, bar: Bar) -> FeatureVector:
        """Take the next bar and return its feature vector (`advance` then `vector`)."""
        self.advance(bar)
        return self.vector()

    def advance(self, bar: Bar) -> None:
        """Take the next bar: the running state only (a few float operations); `vector` builds the vector."""
        times, closes = self._times, self._closes
        ts, close = bar.ts_event, bar.close
        if times and ts <= times[-1]:
            raise InvariantError(f"bar of {bar.instrument} at {ts} is not after the last ({times[-1]})")
        if not (close > 0 and math.isfinite(close)):
            raise InvariantError(f"bar of {bar.instrument} at {ts} has close {close!r}")
        tf = self._tf = ts - bar.ts_open
        if closes:
            r = math.log(close / closes[-1])
            var = self._var
            self._var = r * r if var is None else var + self.vol_alpha * (r * r - var)
            self._var_count += 1
            if tf > 0 and ts - times[-1] > tf:
                self._gap_start = times[-1]
        closes.append(close)
        times.append(ts)
        level, mean = math.log(close), self._level
        self._level = mean = level if mean is None else mean + self.z_alpha * (level - mean)
        self._z_num = level - mean
        volume, v = bar.volume, self._volume
        if volume > 0 and math.isfinite(volume):
            self._surprise = math.log(volume / v) if v else None
            self._volume = volume if v is None else v + self.volume_alpha * (volume - v)
        else:
            self._surprise = None
        buy, sell = bar.buy_volume, bar.sell_volume
        self._flow = (buy - sell) / (buy + sell) if buy is not None and sell is not None and buy + sell > 0 else None
        self._basis = None
        self._bar = bar
        self.count += 1

    def set_basis(self, basis: float | None) -> None:
        """The last bar's cross-venue basis (see `operators.ml.core`): ``ln close`` minus the mean ``ln close``
        of the same pair on the other venues; kept until the next bar."""
        self._basis = basis

    @property
    def last_close(self) -> float | None:
        return self._closes[-1] if self._closes else None

    @property
    def last_ts(self) -> int | None:
        return self._times[-1] if self._times else None

    def vector(self) -> FeatureVector:
        """The feature vector of the last bar taken (see the module docstring)."""
        bar = self._bar
        if bar is None:
            raise InvariantError("no bar yet: a feature vector needs one")
        closes, close = self._closes, bar.close
        n = len(closes)
        values = [(name, math.log(close / closes[-1 - h])) for h, name in zip(self.horizons, self._names) if n > h]
        vol = math.sqrt(self._var) if self._var is not None else None
        if vol is not None:
            values.append(("vol", vol))
            if vol:
                values.append(("zscore", self._z_num / vol))
        if self._surprise is not None:
            values.append(("volume_surprise", self._surprise))
        if self._flow is not None:
            values.append(("order_flow", self._flow))
        if self._basis is not None:
            values.append(("basis", self._basis))
        if bar.bid is not None and bar.ask is not None and 0 < bar.bid <= bar.ask:
            mid = (bar.bid + bar.ask) / 2
            values.append(("spread", (bar.ask - bar.bid) / mid))
            if bar.bid_size and bar.ask_size and bar.bid_size > 0 and bar.ask_size > 0:
                micro = (bar.bid * bar.ask_size + bar.ask * bar.bid_size) / (bar.bid_size + bar.ask_size)
                values.append(("microprice", (micro - mid) / mid))
        flags = []
        if n <= self.longest or self._var_count < self.min_vol_bars:
            flags.append("warmup")
        first = self._times[0]
        if self._gap_start is not None and self._gap_start >= first:
            flags.append("gap")
        if self._last_quarantine is not None and self._last_quarantine >= first - max(self._tf, 0):
            flags.append("quarantine")
        return FeatureVector(instrument=bar.instrument, ts_event=bar.ts_event, values=tuple(values),
                             flags=tuple(flags), close=close)

    def snapshot(self) -> MlFeaturesSnap:
        return MlFeaturesSnap(version=self.VERSION, closes=tuple(self._closes), times=tuple(self._times),
                              var=self._var, var_count=self._var_count, log_level=self._level, volume=self._volume,
                              last_quarantine=self._last_quarantine, timeframe_ns=self._tf,
                              z_num=self._z_num, surprise=self._surprise, bar=self._bar,
                              count=self.count, flow=self._flow, basis=self._basis)

    @classmethod
    def restore(cls, snap: MlFeaturesSnap, horizons: Sequence[int] = (1, 4, 24), vol_halflife: float = 24.0,
                z_halflife: float = 24.0, volume_halflife: float = 24.0, min_vol_bars: int = 10) -> MlFeatures:
        check_version(snap, expected=cls.VERSION)
        core = cls(horizons, vol_halflife, z_halflife, volume_halflife, min_vol_bars)
        core._closes.extend(snap.closes)
        core._times.extend(snap.times)
        core._var, core._var_count = snap.var, snap.var_count
        core._level, core._volume, core._last_quarantine = snap.log_level, snap.volume, snap.last_quarantine
        core._z_num, core._surprise, core._bar, core.count = snap.z_num, snap.surprise, snap.bar, snap.count
        core._flow, core._basis = snap.flow, snap.basis
        tf = core._tf = snap.timeframe_ns
        core._gap_start = next((a for a, b in reversed(list(itertools.pairwise(snap.times))) if tf > 0 and b - a > tf),
                               None)
        return core
