"""Volatility regime of the market: "calm" or "stressed", from the market factor's realised volatility.

Per bar with a market factor return m (bars without one change nothing and are not counted)::

    fast <- (1 - a_f) fast + a_f m²      a_f = 1 - 0.5 ** (1 / fast_halflife_bars)
    slow <- (1 - a_s) slow + a_s m²      a_s = 1 - 0.5 ** (1 / slow_halflife_bars)
    ratio = √fast / √slow                (both start at the first bar's m²; zero-mean, not demeaned)

The fast EWMA is the current volatility, the slow one its own history. From "calm" the regime turns
"stressed" when ``ratio >= enter_ratio``; from "stressed" it returns to "calm" when ``ratio <= exit_ratio``
(``exit_ratio < enter_ratio``: between the two nothing changes, the hysteresis that keeps it from flapping).
No change happens during the first `warmup_bars` bars, nor within `min_dwell_bars` bars of the last change.

Defaults (for hourly bars, chosen on the 82-asset hourly universe, equal-weighted market factor, Jan-Jun 2021):
fast halflife 24 bars (a day), slow halflife 720 bars (30 days), enter at 1.5, exit at 1.0, dwell 72 bars
(3 days), warmup 720 bars. Over that file they give six changes: stressed on 2021-02-23, calm on 2021-03-01,
stressed on 2021-04-18, calm on 2021-04-27, stressed on 2021-05-12 23:00 (the May sell-off), calm on 2021-05-28.
For other bar lengths scale the four bar counts (e.g. daily bars: 1, 30, 3, 30).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from headrace.errors import ConfigError
from headrace.events import RegimeSwitch
from operators.base import check_version

CALM = "calm"
STRESSED = "stressed"


@dataclass(frozen=True, slots=True)
class RegimeSnap:
    version: int
    regime: str
    fast: float
    slow: float
    bars: int  # bars with a market return seen
    last_change: int | None  # the bar count at the last change


def _key(name: str) -> str:
    return f"portfolio.regime_{name}"


class RegimeDetector:
    """Calm or stressed, from the market factor's fast against slow realised volatility, with hysteresis.

    Examples
    --------
    >>> d = RegimeDetector(fast_halflife_bars=1, slow_halflife_bars=50, enter_ratio=2, exit_ratio=1.2,
    ...                    min_dwell_bars=0, warmup_bars=5)
    >>> changes = [d.update(t, 0.01) for t in range(10)] + [d.update(10, 0.05)]
    >>> [c for c in changes if c is not None][0].reason
    'fast vol 0.0361 / slow vol 0.0115 = ratio 3.13 >= enter_ratio 2'
    >>> d.regime
    'stressed'
    """

    VERSION = 1

    def __init__(self, *, fast_halflife_bars: float = 24.0, slow_halflife_bars: float = 720.0,
                 enter_ratio: float = 1.5, exit_ratio: float = 1.0, min_dwell_bars: int = 72,
                 warmup_bars: int = 720) -> None:
        if not fast_halflife_bars > 0:
            raise ConfigError(_key("fast_halflife_bars"), f"must be > 0, was {fast_halflife_bars!r}")
        if not slow_halflife_bars > fast_halflife_bars:
            raise ConfigError(_key("slow_halflife_bars"),
                              f"must be > fast_halflife_bars ({fast_halflife_bars!r}), was {slow_halflife_bars!r}")
        if not exit_ratio > 0:
            raise ConfigError(_key("exit_ratio"), f"must be > 0, was {exit_ratio!r}")
        if not enter_ratio > exit_ratio:
            raise ConfigError(_key("enter_ratio"), f"must be > exit_ratio ({exit_ratio!r}), was {enter_ratio!r}")
        if min_dwell_bars < 0:
            raise ConfigError(_key("min_dwell_bars"), f"must be >= 0, was {min_dwell_bars!r}")
        if warmup_bars < 0:
            raise ConfigError(_key("warmup_bars"), f"must be >= 0, was {warmup_bars!r}")
        self.fast_alpha = 1.0 - 0.5 ** (1.0 / fast_halflife_bars)
        self.slow_alpha = 1.0 - 0.5 ** (1.0 / slow_halflife_bars)
        self.enter_ratio = float(enter_ratio)
        self.exit_ratio = float(exit_ratio)
        self.min_dwell_bars = int(min_dwell_bars)
        self.warmup_bars = int(warmup_bars)
        self._regime = CALM
        self._fast = 0.0
        self._slow = 0.0
        self._bars = 0
        self._last_change: int | None = None

    @property
    def regime(self) -> str:
        """``"calm"`` or ``"stressed"``."""
        return self._regime

    @property
    def bars(self) -> int:
        """Bars with a market return seen."""
        return self._bars

    @property
    def ratio(self) -> float:
        """Fast over slow volatility now (NaN before the first bar or while the slow one is 0)."""
        return math.sqrt(self._fast / self._slow) if self._slow > 0 else math.nan

    def update(self, ts: int, market_return: float | None) -> RegimeSwitch | None:
        """Take one bar's market factor return (None or NaN: no return, nothing changes); return a change if any."""
        if market_return is None or math.isnan(market_return):
            return None
        x2 = float(market_return) ** 2
        if self._bars == 0:
            self._fast = self._slow = x2
        else:
            self._fast += self.fast_alpha * (x2 - self._fast)
            self._slow += self.slow_alpha * (x2 - self._slow)
        self._bars += 1
        ratio = self.ratio
        if self._bars <= self.warmup_bars or math.isnan(ratio):
            return None
        if self._last_change is not None and self._bars - self._last_change < self.min_dwell_bars:
            return None
        if self._regime == CALM and ratio >= self.enter_ratio:
            regime, crossed = STRESSED, f">= enter_ratio {self.enter_ratio:g}"
        elif self._regime == STRESSED and ratio <= self.exit_ratio:
            regime, crossed = CALM, f"<= exit_ratio {self.exit_ratio:g}"
        else:
            return None
        fast_vol, slow_vol = math.sqrt(self._fast), math.sqrt(self._slow)
        change = RegimeSwitch(ts_event=ts, previous=self._regime, regime=regime,
                              reason=f"fast vol {fast_vol:.3g} / slow vol {slow_vol:.3g} = ratio {ratio:.3g} {crossed}",
                              fast_vol=fast_vol, slow_vol=slow_vol, ratio=ratio)
        self._regime = regime
        self._last_change = self._bars
        return change

    def flush(self) -> list[RegimeSwitch]:
        return []

    def snapshot(self) -> RegimeSnap:
        return RegimeSnap(version=self.VERSION, regime=self._regime, fast=self._fast, slow=self._slow,
                          bars=self._bars, last_change=self._last_change)

    @classmethod
    def restore(cls, snap: RegimeSnap, *, fast_halflife_bars: float = 24.0, slow_halflife_bars: float = 720.0,
                enter_ratio: float = 1.5, exit_ratio: float = 1.0, min_dwell_bars: int = 72,
                warmup_bars: int = 720) -> RegimeDetector:
        check_version(snap, expected=cls.VERSION)
        core = cls(fast_halflife_bars=fast_halflife_bars, slow_halflife_bars=slow_halflife_bars,
                   enter_ratio=enter_ratio, exit_ratio=exit_ratio, min_dwell_bars=min_dwell_bars,
                   warmup_bars=warmup_bars)
        core._regime, core._fast, core._slow = snap.regime, snap.fast, snap.slow
        core._bars, core._last_change = snap.bars, snap.last_change
        return core
