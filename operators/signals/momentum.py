"""Rule-based cross-sectional momentum: rank instruments by their lookback return."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class SignalModel(Protocol):
    """The seam later signals (ML, arbitrage, blends) plug into: features in, one score per instrument."""

    name: str

    def scores(self, momentum: Mapping[str, float]) -> dict[str, float]: ...


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

    def scores(self, momentum: Mapping[str, float]) -> dict[str, float]:
        ranked = sorted(momentum, key=lambda k: (momentum[k], k))
        n = len(ranked)
        if n == 1:
            return {ranked[0]: 0.0}
        return {k: 2.0 * i / (n - 1) - 1.0 for i, k in enumerate(ranked)}
