"""Per-instrument features of closed bars: log return, EWMA volatility, lookback momentum."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from headrace.errors import ConfigError, InvariantError
from headrace.events import Bar, BarBatch, FeatureBatch, Features
from operators.base import check_version


class EwmaVariance:
    """Exponentially weighted mean of squared values (a zero-mean variance), one value at a time.

    Equals ``polars.Series(xs).pow(2).ewm_mean(half_life=halflife, adjust=False)`` on the same values.

    Parameters
    ----------
    halflife
        Updates after which a value's weight has halved; must be > 0.

    Examples
    --------
    >>> v = EwmaVariance(halflife=1.0)
    >>> for x in [1.0, 3.0]:
    ...     v.update(x)
    >>> v.value, v.count
    (5.0, 2)
    """

    def __init__(self, halflife: float) -> None:
        if not halflife > 0:
            raise ConfigError("features.vol_halflife_bars", f"must be > 0, was {halflife!r}")
        self.alpha = 1.0 - math.exp(math.log(0.5) / halflife)
        self.value: float | None = None
        self.count = 0

    def update(self, x: float) -> None:
        sq = x * x
        self.value = sq if self.value is None else (1.0 - self.alpha) * self.value + self.alpha * sq
        self.count += 1


@dataclass(frozen=True, slots=True)
class BarFeaturesSnap:
    version: int
    last_ts: int
    closes: tuple[float, ...]  # the last lookback + 1 closes, oldest first
    var: float | None
    var_count: int


class BarFeatures:
    """Log return, EWMA volatility and momentum of one instrument's closed bars.

    `volatility` is the EWMA standard deviation of log returns per bar (None until two returns);
    `momentum` is ``ln(close / close lookback bars ago)`` (None until that many bars). A missing bar
    is skipped over: the return spans the gap.
    """

    def __init__(self, vol_halflife_bars: float, momentum_lookback_bars: int) -> None:
        if momentum_lookback_bars < 1:
            raise ConfigError("features.momentum_lookback_bars", f"must be >= 1, was {momentum_lookback_bars!r}")
        self.halflife = vol_halflife_bars
        self.lookback = momentum_lookback_bars
        self._var = EwmaVariance(vol_halflife_bars)
        self._closes: deque[float] = deque(maxlen=momentum_lookback_bars + 1)
        self._last_ts = -1

    def update(self, item: BarBatch) -> list[FeatureBatch]:
        feats = [self.update_bar(b) for b in item.bars]
        return [FeatureBatch(instrument=item.instrument, watermark=item.watermark, bars=item.bars,
                             features=tuple(feats), quarantined=item.quarantined)]

    def update_bar(self, bar: Bar) -> Features:
        if bar.ts_event <= self._last_ts:
            raise InvariantError(f"bars of {bar.instrument} out of order: {bar.ts_event} after {self._last_ts}")
        self._last_ts = bar.ts_event
        prev = self._closes[-1] if self._closes else None
        self._closes.append(bar.close)
        ret = None
        if prev is not None:
            ret = math.log(bar.close / prev)
            self._var.update(ret)
        vol = math.sqrt(self._var.value) if self._var.value is not None and self._var.count >= 2 else None
        mom = math.log(bar.close / self._closes[0]) if len(self._closes) == self.lookback + 1 else None
        return Features(instrument=bar.instrument, ts_event=bar.ts_event, close=bar.close,
                        log_return=ret, volatility=vol, momentum=mom)

    def flush(self) -> list[FeatureBatch]:
        return []

    def snapshot(self) -> BarFeaturesSnap:
        return BarFeaturesSnap(version=1, last_ts=self._last_ts, closes=tuple(self._closes),
                               var=self._var.value, var_count=self._var.count)

    @classmethod
    def restore(cls, vol_halflife_bars: float, momentum_lookback_bars: int, snap: BarFeaturesSnap) -> BarFeatures:
        check_version(snap, expected=1)
        core = cls(vol_halflife_bars, momentum_lookback_bars)
        core._last_ts = snap.last_ts
        core._closes.extend(snap.closes)
        core._var.value, core._var.count = snap.var, snap.var_count
        return core
