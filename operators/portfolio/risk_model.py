"""A risk model in factor form, and the risk measures of a portfolio under it.

Every optimiser takes the covariance as ``Σ = L Lᵀ + diag(d)``: `loadings` L (n × k) and `specific`
variances d (n). A factor model gives a small k (market, tiers, leading components) and the residual
variances; a full sample covariance is the case k = n, d = 0 (`RiskModel.from_cov`). The optimisers'
problems are then linear in parameters (``Lᵀw``), never a quadratic form of an n × n parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from headrace.errors import InvariantError

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class RiskModel:
    """Covariance of per-bar returns of `assets`, as ``loadings @ loadings.T + diag(specific)``.

    Examples
    --------
    >>> m = RiskModel.from_cov(("a", "b"), np.array([[4.0, 1.0], [1.0, 9.0]]))
    >>> bool(np.allclose(m.cov(), [[4.0, 1.0], [1.0, 9.0]]))
    True
    >>> round(m.volatility(np.array([0.5, 0.5])), 6)
    1.936492
    """

    assets: tuple[str, ...]
    loadings: F64  # n x k
    specific: F64  # n, >= 0

    def __post_init__(self) -> None:
        n = len(self.assets)
        if self.loadings.ndim != 2 or self.loadings.shape[0] != n or self.specific.shape != (n,):
            raise InvariantError(f"risk model shapes do not fit {n} assets: loadings {self.loadings.shape}, "
                                 f"specific {self.specific.shape}")
        if not (np.isfinite(self.loadings).all() and np.isfinite(self.specific).all()):
            raise InvariantError("risk model holds a NaN or infinite value")
        if (self.specific < 0).any():
            raise InvariantError("risk model has a negative specific variance")

    @classmethod
    def from_cov(cls, assets: Sequence[str], cov: F64, *, tol: float = 0.0) -> RiskModel:
        """The exact factor form of a symmetric PSD `cov` (eigenvectors scaled by √eigenvalue).

        Eigenvalues below `tol` (and negative round-off) are dropped; k is the number kept.
        """
        cov = np.asarray(cov, dtype=np.float64)
        vals, vecs = np.linalg.eigh((cov + cov.T) / 2)
        return cls.from_eigh(assets, vals, vecs, tol=tol)

    @classmethod
    def from_eigh(cls, assets: Sequence[str], vals: F64, vecs: F64, *, tol: float = 0.0) -> RiskModel:
        """`from_cov` given the eigen-decomposition (`numpy.linalg.eigh`'s ascending values and their vectors)."""
        keep = vals > max(tol, 0.0)
        loadings = vecs[:, keep] * np.sqrt(vals[keep])
        return cls(tuple(assets), np.ascontiguousarray(loadings[:, ::-1]), np.zeros(len(assets)))

    @property
    def n(self) -> int:
        return len(self.assets)

    def cov(self) -> F64:
        """The n × n covariance."""
        return np.asarray(self.loadings @ self.loadings.T + np.diag(self.specific), dtype=np.float64)

    def volatility(self, w: F64) -> float:
        """Per-bar volatility of the portfolio `w` (weights in `assets` order)."""
        return float(np.sqrt(max(self.variance(w), 0.0)))

    def variance(self, w: F64) -> float:
        lw = self.loadings.T @ w
        return float(lw @ lw + (self.specific * w) @ w)

    def marginal(self, w: F64) -> F64:
        """``Σw``: each asset's covariance with the portfolio."""
        return np.asarray(self.loadings @ (self.loadings.T @ w) + self.specific * w, dtype=np.float64)

    def contributions(self, w: F64) -> F64:
        """Each asset's share of the portfolio's variance, ``wᵢ(Σw)ᵢ / wᵀΣw`` (sums to 1; zeros if no risk)."""
        m = w * self.marginal(w)
        total = float(m.sum())
        return np.zeros_like(w) if total <= 0 else np.asarray(m / total, dtype=np.float64)

    def subset(self, assets: Sequence[str]) -> RiskModel:
        """The model restricted to `assets` (each must be in this one)."""
        index = {a: i for i, a in enumerate(self.assets)}
        missing = [a for a in assets if a not in index]
        if missing:
            raise InvariantError(f"assets {missing!r} are not in the risk model")
        ix = [index[a] for a in assets]
        return RiskModel(tuple(assets), self.loadings[ix], self.specific[ix])
