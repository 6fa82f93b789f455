"""Rule-based momentum signals: cross-sectional (rank against each other) and time-series (each on its own trend)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol


class SignalModel(Protocol):
    """The seam later signals (ML, arbitrage, blends) plug into: features in, one score per instrument.

    `volatility` is each key's per-bar volatility, for signals that scale by it.
    """

    name: str

    def scores(self, momentum: Mapping[str, float],
               volatility: Mapping[str, float] | None = None) -> dict[str, float]: ...


class CrossSectionalMomentum:
    """Score each instrument by the rank of its momentum, mapped evenly onto [-1, 1].

    The strongest instrument scores +1, the weakest -1, the rest evenly between; ties are broken by
    instrument name so scores never depend on dict order. One instrument alone scores 0.

    Examples
    --------
    >>> CrossSectionalMomentum().scores({"a:X/B": 0.1, "a:Y/B": -0.2, "a:Z/B": 0.0})
    {'a:Y/B': -1.0, 'a:Z/B': 0.0, 'a:X/B': 1.0}
    """

    name = "xs_momentum"

    def scores(self, momentum: Mapping[str, float],
               volatility: Mapping[str, float] | None = None) -> dict[str, float]:
        ranked = sorted(momentum, key=lambda k: (momentum[k], k))
        n = len(ranked)
        if n == 1:
            return {ranked[0]: 0.0}
        return {k: 2.0 * i / (n - 1) - 1.0 for i, k in enumerate(ranked)}


class TimeSeriesMomentum:
    """Score each key on its own trend: momentum over its expected size, ``m / (vol * sqrt(lookback))``, in [-1, 1].

    The score is the lookback log return in units of the per-bar volatility scaled to the lookback, clipped
    to [-1, 1]: a one-sigma rise is a full long score. Unlike the cross-sectional rank it means something
    for a single asset. A key without a positive volatility scores 0.

    Examples
    --------
    >>> s = TimeSeriesMomentum(lookback_bars=4)
    >>> s.scores({"BTC": 0.01, "ETH": -0.1, "XRP": 0.05}, {"BTC": 0.01, "ETH": 0.01, "XRP": 0.0})
    {'BTC': 0.5, 'ETH': -1.0, 'XRP': 0.0}
    """

    name = "ts_momentum"

    def __init__(self, lookback_bars: int) -> None:
        self.lookback_bars = lookback_bars

    def scores(self, momentum: Mapping[str, float],
               volatility: Mapping[str, float] | None = None) -> dict[str, float]:
        out: dict[str, float] = {}
        for k in sorted(momentum):
            vol = (volatility or {}).get(k)
            if vol is None or not vol > 0:
                out[k] = 0.0
                continue
            out[k] = max(-1.0, min(1.0, momentum[k] / (vol * math.sqrt(self.lookback_bars))))
        return out
