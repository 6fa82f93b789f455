"""Volatility-targeted sizing with per-instrument and gross-leverage caps."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from headrace.events import NS_PER_YEAR


def annualise(vol_per_bar: float, timeframe_ns: int) -> float:
    """Scale a per-bar volatility to a year of 24/7 trading (crypto never closes).

    Examples
    --------
    >>> round(annualise(0.01, 86_400 * 10**9), 4)
    0.191
    """
    return vol_per_bar * math.sqrt(NS_PER_YEAR / timeframe_ns)


@dataclass(frozen=True, slots=True)
class VolTargetSizer:
    """Turn scores into target weights: ``w = score * target_vol / vol``, capped, gross-scaled.

    Parameters
    ----------
    target_volatility
        Annualised volatility each full-score position is sized to (0.5 = 50 %/year).
    max_weight
        Cap on one instrument's |weight|.
    max_gross_leverage
        Cap on the sum of |weights|; weights are scaled down together when exceeded.
    long_only
        Negative weights become 0 (spot venues cannot short).

    Examples
    --------
    >>> s = VolTargetSizer(target_volatility=0.5, max_weight=1.0, max_gross_leverage=1.0, long_only=False)
    >>> w = s.weights({"a": 1.0, "b": -1.0}, {"a": 0.5, "b": 1.0})
    >>> {k: round(v, 6) for k, v in w.items()}
    {'a': 0.666667, 'b': -0.333333}
    """

    target_volatility: float
    max_weight: float
    max_gross_leverage: float
    long_only: bool

    def weights(self, scores: Mapping[str, float], vol_annual: Mapping[str, float | None]) -> dict[str, float]:
        """Return a weight for every scored instrument (0 where volatility is unknown or zero)."""
        out: dict[str, float] = {}
        for k in sorted(scores):
            vol = vol_annual.get(k)
            w = 0.0 if vol is None or not vol > 0 else scores[k] * self.target_volatility / vol
            if self.long_only:
                w = max(w, 0.0)
            out[k] = max(-self.max_weight, min(self.max_weight, w))
        gross = sum(abs(w) for w in out.values())
        if gross > self.max_gross_leverage:
            scale = self.max_gross_leverage / gross
            out = {k: w * scale for k, w in out.items()}
        return out
