"""Correlation-aware sizing: positions scaled down by how much the rest of the book adds to their risk.

For weights w under a risk model with covariance Σ, asset i's stand-alone variance is ``wᵢ² σᵢ²`` and its
contribution to the portfolio's variance is ``wᵢ (Σw)ᵢ = wᵢ² σᵢ² + wᵢ Σ_{j≠i} Σᵢⱼ wⱼ``. The scale::

    cᵢ = clip(wᵢ² σᵢ² / (wᵢ (Σw)ᵢ), 0, 1)    where wᵢ (Σw)ᵢ > 0,
    cᵢ = 1                                   otherwise (a hedge, or a zero weight),

is below 1 exactly when the other positions add to i's risk (``wᵢ Σ_{j≠i} Σᵢⱼ wⱼ > 0``). N identical bets
each get 1/N (two are halved); uncorrelated bets and hedges are left alone. Signs are kept and no position
grows, so gross exposure never rises.

What holds for the portfolio's variance: when no pair offsets another (every ``wᵢ wⱼ Σᵢⱼ >= 0``, e.g. a
long-only book of non-negatively correlated assets), the scaled book's variance is at most the original's
(every term of ``Σ cᵢcⱼ wᵢwⱼΣᵢⱼ`` shrinks). With hedges it can rise: the legs that add risk are cut while the
hedge is kept whole, so the book can end up net the other way with more risk. Ten longs of 0.1 and one short
of 0.7 in the same asset (net 0.3) become ten longs of 0.1/3 and the short of 0.7 (net -0.37).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from headrace.errors import InvariantError
from operators.portfolio.risk_model import RiskModel

F64 = npt.NDArray[np.float64]


def correlation_scale(weights: F64, model: RiskModel) -> tuple[F64, F64]:
    """Scale each position by its stand-alone variance over its contribution to the portfolio's variance.

    `weights` are in `model.assets` order. Returns ``(c * weights, c)``, c as in the module docstring.

    Examples
    --------
    >>> same = RiskModel(("a", "b", "c"), np.array([[0.1], [0.1], [0.0]]), np.array([0.0, 0.0, 0.01]))
    >>> w, c = correlation_scale(np.array([0.5, 0.5, 0.5]), same)
    >>> w.tolist(), c.tolist()
    ([0.25, 0.25, 0.5], [0.5, 0.5, 1.0])
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (model.n,) or not np.isfinite(w).all():
        raise InvariantError(f"weights of shape {w.shape} with finite entries needed for {model.n} assets")
    alone = w * w * ((model.loadings**2).sum(axis=1) + model.specific)
    contribution = w * model.marginal(w)
    adds = contribution > 0
    c = np.ones_like(w)
    c[adds] = np.clip(alone[adds] / contribution[adds], 0.0, 1.0)
    return c * w, c
