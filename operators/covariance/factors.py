"""Factor exposures maintained bar by bar: a market factor, tier factors, and the factor form of a covariance.

Per bar (one cross-section of log returns, ``{asset: return}``; None or NaN means no return that bar):

- the **market factor** return ``m`` is the equal-weighted mean of the present assets' returns
  (``benchmark=None``), or the benchmark asset's return (``benchmark="BTC"``: no market return on a bar
  where BTC has none);
- the **tier factor** ``f_T`` of each configured tier is the equal-weighted mean return of the tier's
  assets present that bar (none present: no tier return that bar).

An asset's **exposure** (beta) to a factor f is the slope of the exponentially weighted regression of its
returns on f, over the bars where both have a return (pairwise, as in `operators.covariance.streaming`)::

    beta_if = cov_ew(r_i, f) / var_ew(f)

where both moments are the ``adjust=False`` EWMA moments (halflife in bars, ``a = 1 - 0.5 ** (1 / halflife)``)
over the pair's common bars x_0 .. x_k: weights ``(1 - a) ** k`` for x_0 and ``a (1 - a) ** (k - t)`` for
x_t, about the weighted means. A beta is 0 while unknown (``var_ew(f)`` is 0: fewer than two common bars
or a constant factor).

`FactorModel.risk_model` turns a full covariance into the factor form ``Σ = L Lᵀ + diag(d)`` that the
optimisers take (see there for what is kept and what is lost). Tier exposures are for exposure bounds;
they are not loadings of the risk model (tier factors overlap the market factor).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from headrace.errors import ConfigError, InvariantError
from operators.base import check_version
from operators.portfolio.risk_model import RiskModel

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

Returns = Mapping[str, float | None]

MARKET = "market"

# the five per-(factor, asset) moments, in the order of the `_st` array's first axis
_MR, _MF, _CRF, _CFF, _N = range(5)


def _finite(asset: str, r: float) -> bool:
    if math.isnan(r):
        return False
    if math.isinf(r):
        raise InvariantError(f"return of {asset} is {r!r}")
    return True


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


@dataclass(frozen=True, slots=True)
class FactorModelSnap:
    version: int
    factors: tuple[str, ...]
    assets: tuple[str, ...]
    state: F64  # 5 x factors x assets: mean_r, mean_f, cov_rf, var_f, count (pairwise over common bars)
    market: tuple[float, float, int]  # the market factor's own EWMA mean, variance and bar count


class FactorModel:
    """Incremental factor exposures: market beta and tier betas of every asset, EWMA-weighted.

    Assets join with their first return; `remove` drops one (if it returns it starts afresh).
    `update` returns the bar's market factor return (None if it has none).

    Examples
    --------
    >>> fm = FactorModel(halflife_bars=10.0, tiers={"majors": ["BTC", "ETH"]})
    >>> for r in [{"BTC": 0.01, "ETH": 0.03, "DOGE": -0.01}, {"BTC": -0.02, "ETH": -0.03, "DOGE": 0.02}]:
    ...     m = fm.update(r)
    >>> round(m, 6)
    -0.01
    >>> names, beta = fm.exposures(["BTC", "ETH", "XRP"])
    >>> names
    ('market', 'tier:majors')
    >>> beta.round(4).tolist()
    [[1.5, 0.6667], [3.0, 1.3333], [0.0, 0.0]]
    """

    VERSION = 1

    def __init__(self, halflife_bars: float, *, benchmark: str | None = None,
                 tiers: Mapping[str, Sequence[str]] | None = None, n_statistical: int = 0) -> None:
        if not halflife_bars > 0:
            raise ConfigError("portfolio.halflife_bars", f"must be > 0, was {halflife_bars!r}")
        if n_statistical < 0:
            raise ConfigError("portfolio.n_statistical", f"must be >= 0, was {n_statistical!r}")
        if benchmark is not None and not benchmark:
            raise ConfigError("portfolio.benchmark", "must be an asset name or empty for the universe")
        tiers = dict(tiers or {})
        for name, members in tiers.items():
            if not members:
                raise ConfigError(f"portfolio.tiers.{name}", "a tier needs at least one asset")
        self.halflife = halflife_bars
        self.alpha = 1.0 - 0.5 ** (1.0 / halflife_bars)
        self.benchmark = benchmark
        self.tiers: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in tiers.items()}
        self.n_statistical = n_statistical
        self.factors: tuple[str, ...] = (MARKET, *(f"tier:{k}" for k in self.tiers))
        self._assets: list[str] = []
        self._index: dict[str, int] = {}
        self._st: F64 = np.zeros((5, len(self.factors), 0))
        self._market = (0.0, 0.0, 0)

    @property
    def assets(self) -> tuple[str, ...]:
        return tuple(self._assets)

    @property
    def market_variance(self) -> float:
        """EWMA variance (same halflife and convention) of the market factor over all its bars; 0 before two."""
        return self._market[1]

    def update(self, returns: Returns) -> float | None:
        """Take one bar's log returns (new assets join); return the bar's market factor return."""
        present = {a: float(r) for a, r in returns.items() if r is not None and _finite(a, r)}
        for asset in present:
            if asset not in self._index:
                self._index[asset] = len(self._assets)
                self._assets.append(asset)
        if self._st.shape[2] < len(self._assets):
            self._st = np.pad(self._st, ((0, 0), (0, 0), (0, len(self._assets) - self._st.shape[2])))
        market = _mean(list(present.values())) if self.benchmark is None else present.get(self.benchmark)
        values = [market] + [_mean([present[a] for a in members if a in present]) for members in self.tiers.values()]
        if not present:
            return market
        names = sorted(present, key=self._index.__getitem__)
        ix = np.array([self._index[a] for a in names], dtype=np.int64)
        r = np.array([present[a] for a in names], dtype=np.float64)
        a = self.alpha
        kk = np.array([k for k, f in enumerate(values) if f is not None], dtype=np.int64)
        if kk.size:  # every factor with a value this bar at once: (factors × assets) arrays
            f = np.array([values[k] for k in kk], dtype=np.float64)[:, None]
            where = np.ix_(kk, ix)
            st = self._st[:, where[0], where[1]]
            mr, mf, crf, cff, n = st
            dr, df = r[None, :] - mr, f - mf
            first = n == 0
            st[_MR] = np.where(first, r[None, :], mr + a * dr)
            st[_MF] = np.where(first, f, mf + a * df)
            st[_CRF] = np.where(first, 0.0, (1.0 - a) * (crf + a * dr * df))
            st[_CFF] = np.where(first, 0.0, (1.0 - a) * (cff + a * df * df))
            st[_N] = n + 1
            self._st[:, where[0], where[1]] = st
        if market is not None:
            m, v, n_m = self._market
            self._market = (market, 0.0, 1) if n_m == 0 else (
                m + a * (market - m), (1.0 - a) * (v + a * (market - m) ** 2), n_m + 1)
        return market

    def exposures(self, assets: Sequence[str]) -> tuple[tuple[str, ...], F64]:
        """Factor names (``"market"``, ``"tier:<name>"`` in config order) and the n × m matrix of betas.

        A beta is 0 where unknown (asset never seen, or ``var_ew(f)`` still 0).
        """
        out = np.zeros((len(assets), len(self.factors)))
        for i, asset in enumerate(assets):
            k = self._index.get(asset)
            if k is None:
                continue
            crf, cff = self._st[_CRF, :, k], self._st[_CFF, :, k]
            out[i] = np.divide(crf, cff, out=np.zeros_like(crf), where=cff > 0)
        return self.factors, out

    def risk_model(self, assets: Sequence[str], cov: F64) -> RiskModel:
        """Factor form of a full PSD covariance `cov` over `assets` (rows and columns in that order).

        With ``β`` the market betas (`exposures`) and ``v = market_variance``::

            L = [ √v·β ,  U_k √λ_k ]      R = cov − v ββᵀ,  (λ_k, U_k) its k = n_statistical largest
                                                               positive eigenpairs
            d = max(diag(R − U_k λ_k U_kᵀ), 0)

        Kept exactly: the market part ``v ββᵀ`` (first column of L), the leading k components of the
        residual R, and every asset's variance wherever ``R − U_k λ_k U_kᵀ`` has a non-negative diagonal
        (always when R is PSD), so that ``diag(Σ) = max(diag(cov), diag(v ββᵀ + U_k λ_k U_kᵀ))``.
        Lost: the residual's off-diagonal covariances outside the k components (treated as 0) and, where an
        asset's market part exceeds its variance in `cov`, the excess (its variance is then over-stated).
        The result is PSD by construction. With ``n_statistical = 0``: market plus specific variances only.
        """
        cov = np.asarray(cov, dtype=np.float64)
        n = len(assets)
        if cov.shape != (n, n) or not np.isfinite(cov).all():
            raise InvariantError(f"covariance of shape {cov.shape} with finite entries needed for {n} assets")
        _, expo = self.exposures(assets)
        beta = expo[:, 0]
        market = math.sqrt(max(self.market_variance, 0.0)) * beta
        resid = (cov + cov.T) / 2.0 - np.outer(market, market)
        cols = [market[:, None]]
        if self.n_statistical and n:
            vals, vecs = np.linalg.eigh(resid)
            order = np.argsort(vals)[::-1][: self.n_statistical]
            order = order[vals[order] > 0]
            pcs = vecs[:, order] * np.sqrt(vals[order])
            cols.append(pcs)
            resid = resid - pcs @ pcs.T
        loadings = np.ascontiguousarray(np.hstack(cols))
        return RiskModel(tuple(assets), loadings, np.clip(np.diag(resid), 0.0, None).copy())

    def remove(self, asset: str) -> None:
        """Drop an asset's exposures; if it returns later it starts afresh."""
        k = self._index.get(asset)
        if k is None:
            raise InvariantError(f"cannot remove {asset}: not in the factor model")
        self._assets.pop(k)
        self._index = {a: i for i, a in enumerate(self._assets)}
        self._st = np.delete(self._st, k, axis=2)

    def flush(self) -> list[float]:
        return []

    def snapshot(self) -> FactorModelSnap:
        return FactorModelSnap(version=self.VERSION, factors=self.factors, assets=tuple(self._assets),
                               state=self._st.copy(), market=self._market)

    @classmethod
    def restore(cls, halflife_bars: float, snap: FactorModelSnap, *, benchmark: str | None = None,
                tiers: Mapping[str, Sequence[str]] | None = None, n_statistical: int = 0) -> FactorModel:
        check_version(snap, expected=cls.VERSION)
        core = cls(halflife_bars, benchmark=benchmark, tiers=tiers, n_statistical=n_statistical)
        if snap.factors != core.factors:
            raise InvariantError(f"snapshot has factors {snap.factors}, the config gives {core.factors}")
        core._assets = list(snap.assets)
        core._index = {a: i for i, a in enumerate(core._assets)}
        core._st = snap.state.copy()
        core._market = snap.market
        return core
