"""Streaming covariance of log returns over a changing set of assets, and its shrinkage.

Two estimators take one cross-section of returns per bar (``{asset: log return}``; an asset absent, or
mapped to None or NaN, has no return that bar):

- `EwmaCovariance`: exponentially weighted mean and covariance, a rank-one update per bar;
- `RollingCovariance`: the exact sample covariance of the last ``window_bars`` bars, adding the new bar
  and removing the one that left the window (Welford co-moments).

Both are *pairwise*: the pair (i, j) is updated only on bars where both i and j have a return, and
each pair keeps its own means, so every entry equals the batch estimate over that pair's common bars.
An asset joins with its first return (a row and column are added) and leaves with `remove`.
A pairwise matrix need not be positive semi-definite; `nearest_psd` and the shrinkage functions
return matrices that are.

Shrinkage (`ledoit_wolf`, `constant_correlation`) works on a complete block of returns (rows = bars),
as `RollingCovariance.window_returns` gives; `shrink` applies a known intensity to any estimate,
for example the EWMA one.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from headrace.errors import ConfigError, InvariantError
from operators.base import check_version

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

Returns = Mapping[str, float | None]


@dataclass(frozen=True, slots=True)
class CovarianceEstimate:
    """A covariance estimate over `assets` (in join order).

    `cov[i, j]` is NaN where the pair has too few common bars (EWMA: none; rolling: fewer than 2);
    `counts[i, j]` is the number of common bars the entry is built from (in the window, for rolling);
    `mean[i]` is the mean return of asset i over its own bars.
    """

    assets: tuple[str, ...]
    mean: F64
    cov: F64
    counts: I64

    def complete(self, min_count: int = 2) -> CovarianceEstimate:
        """The sub-estimate over the assets whose every pair has at least `min_count` common bars.

        Assets are dropped greedily, the one with the fewest bars first, until every pair qualifies.
        """
        keep = list(range(len(self.assets)))
        while keep:
            sub = self.counts[np.ix_(keep, keep)]
            if (sub >= min_count).all():
                break
            keep.pop(int(np.argmin(np.diag(sub))))
        ix = np.ix_(keep, keep)
        return CovarianceEstimate(assets=tuple(self.assets[k] for k in keep), mean=self.mean[keep].copy(),
                                  cov=self.cov[ix].copy(), counts=self.counts[ix].copy())


def _present(returns: Returns, index: Mapping[str, int]) -> tuple[list[int], F64]:
    """Indices (into `index`) and values of the assets with a finite return this bar, in index order."""
    got: list[tuple[int, float]] = []
    for asset, r in returns.items():
        if r is None or math.isnan(r):
            continue
        if math.isinf(r):
            raise InvariantError(f"return of {asset} is {r!r}")
        got.append((index[asset], float(r)))
    got.sort()
    return [k for k, _ in got], np.array([v for _, v in got], dtype=np.float64)


class _PairwiseState:
    """Assets in join order and three n x n matrices: pair means, co-moments, pair counts.

    `m[i, j]` is the mean of asset i over the bars where i and j both have a return.
    """

    def __init__(self) -> None:
        self.assets: list[str] = []
        self.index: dict[str, int] = {}
        self.m: F64 = np.zeros((0, 0))
        self.c: F64 = np.zeros((0, 0))
        self.n: I64 = np.zeros((0, 0), dtype=np.int64)

    def join(self, returns: Returns) -> None:
        for asset, r in returns.items():
            if asset not in self.index and r is not None and not math.isnan(r):
                self.index[asset] = len(self.assets)
                self.assets.append(asset)
                grow = len(self.assets)
                self.m = np.pad(self.m, ((0, grow - self.m.shape[0]), (0, grow - self.m.shape[1])))
                self.c = np.pad(self.c, ((0, grow - self.c.shape[0]), (0, grow - self.c.shape[1])))
                self.n = np.pad(self.n, ((0, grow - self.n.shape[0]), (0, grow - self.n.shape[1])))

    def load(self, assets: Sequence[str], m: F64, c: F64, n: I64) -> None:
        """Set the state from a snapshot's fields (copied, so the snapshot stays unchanged)."""
        self.assets = list(assets)
        self.index = {x: i for i, x in enumerate(self.assets)}
        self.m, self.c, self.n = m.copy(), c.copy(), n.copy()

    def remove(self, asset: str) -> int:
        if asset not in self.index:
            raise InvariantError(f"cannot remove {asset}: not in the covariance")
        k = self.index[asset]
        self.assets.pop(k)
        self.index = {a: i for i, a in enumerate(self.assets)}
        self.m = np.delete(np.delete(self.m, k, 0), k, 1)
        self.c = np.delete(np.delete(self.c, k, 0), k, 1)
        self.n = np.delete(np.delete(self.n, k, 0), k, 1)
        return k


@dataclass(frozen=True, slots=True)
class EwmaCovarianceSnap:
    version: int
    assets: tuple[str, ...]
    m: F64
    c: F64
    n: I64


class EwmaCovariance:
    """Exponentially weighted covariance of returns, pairwise over a set of assets that grows and shrinks.

    With ``a = 1 - 0.5 ** (1 / halflife_bars)``, on each bar where assets i and j both have a return
    (i == j: where i has one), with ``d_i = r_i - m_ij`` and ``d_j = r_j - m_ji`` taken before the update::

        m_ij <- m_ij + a * d_i
        c_ij <- (1 - a) * (c_ij + a * d_i * d_j)

    starting from ``m_ij = r_i`` and ``c_ij = 0`` at the pair's first common bar. A bar where either
    has no return leaves the pair untouched (missing is skipped, not zero). Over the pair's k + 1
    common bars x_0 .. x_k this is exactly the weighted covariance with weights
    ``(1 - a) ** k`` for x_0 and ``a * (1 - a) ** (k - t)`` for x_t (t >= 1), summing to 1, about the
    weighted means (the ``adjust=False`` convention).

    Examples
    --------
    >>> e = EwmaCovariance(halflife_bars=1.0)
    >>> e.update({"BTC": 0.0, "ETH": 0.0})
    >>> e.update({"BTC": 0.2, "ETH": 0.4})
    >>> est = e.estimate()
    >>> est.assets, [round(float(x), 6) for x in est.cov.ravel()]
    (('BTC', 'ETH'), [0.01, 0.02, 0.02, 0.04])
    """

    VERSION = 1

    def __init__(self, halflife_bars: float) -> None:
        if not halflife_bars > 0:
            raise ConfigError("covariance.halflife_bars", f"must be > 0, was {halflife_bars!r}")
        self.halflife = halflife_bars
        self.alpha = 1.0 - 0.5 ** (1.0 / halflife_bars)
        self._s = _PairwiseState()

    @property
    def assets(self) -> tuple[str, ...]:
        return tuple(self._s.assets)

    def update(self, returns: Returns) -> None:
        """Take one bar's log returns; new assets join."""
        s, a = self._s, self.alpha
        s.join(returns)
        p, r = _present(returns, s.index)
        if not p:
            return
        ix = np.ix_(p, p)
        m, c, n = s.m[ix], s.c[ix], s.n[ix]
        ri = np.broadcast_to(r[:, None], m.shape)
        di = ri - m
        dj = di.T  # d_j at (i, j) is r_j - m_ji
        first = n == 0
        s.m[ix] = np.where(first, ri, m + a * di)
        s.c[ix] = np.where(first, 0.0, (1.0 - a) * (c + a * di * dj))
        s.n[ix] = n + 1

    def remove(self, asset: str) -> None:
        """Drop an asset's row and column; if it returns later it starts afresh."""
        self._s.remove(asset)

    def estimate(self) -> CovarianceEstimate:
        s = self._s
        cov = np.where(s.n > 0, s.c, np.nan)
        return CovarianceEstimate(assets=tuple(s.assets), mean=np.diag(s.m).copy(), cov=cov, counts=s.n.copy())

    def flush(self) -> list[CovarianceEstimate]:
        return []

    def snapshot(self) -> EwmaCovarianceSnap:
        s = self._s
        return EwmaCovarianceSnap(version=self.VERSION, assets=tuple(s.assets), m=s.m.copy(), c=s.c.copy(),
                                  n=s.n.copy())

    @classmethod
    def restore(cls, halflife_bars: float, snap: EwmaCovarianceSnap) -> EwmaCovariance:
        check_version(snap, expected=cls.VERSION)
        core = cls(halflife_bars)
        core._s.load(snap.assets, snap.m, snap.c, snap.n)
        return core


class ReturnWindow:
    """The last `size` bars of returns as a matrix (bars × assets, NaN where an asset had none).

    `RollingCovariance` keeps one beside its bars, derived from them (rebuilt on restore, never snapshotted), so
    that `window_returns` is a numpy selection instead of a walk over the bars' dicts.

    >>> w = ReturnWindow(2)
    >>> for bar in ({"a": 0.1}, {"a": 0.2, "b": 0.3}, {"a": 0.4, "b": 0.5}):
    ...     w.add(bar)
    >>> w.block(["a", "b"]).tolist()
    [[0.2, 0.3], [0.4, 0.5]]
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.cols: dict[str, int] = {}
        self.buf = np.full((size, 16), np.nan)
        self.added = 0

    def add(self, returns: Mapping[str, float | None]) -> None:
        row = self.added % self.size
        self.buf[row, :] = np.nan
        for a, r in returns.items():
            if r is None:
                continue
            j = self.cols.get(a)
            if j is None:
                j = self.cols[a] = len(self.cols)
                if j >= self.buf.shape[1]:
                    grown = np.full((self.size, 2 * self.buf.shape[1]), np.nan)
                    grown[:, : self.buf.shape[1]] = self.buf
                    self.buf = grown
            self.buf[row, j] = r
        self.added += 1

    def forget(self, asset: str) -> None:
        """The asset's returns leave the window (its column is kept, empty, for when it comes back)."""
        j = self.cols.get(asset)
        if j is not None:
            self.buf[:, j] = np.nan

    def block(self, assets: Sequence[str]) -> F64:
        """Returns of `assets` over the window, oldest bar first, only bars where every one has a return."""
        n = min(self.added, self.size)
        order = np.arange(self.added - n, self.added) % self.size
        cols = np.array([self.cols.get(a, -1) for a in assets], dtype=np.int64)
        if not n or (cols.size and cols.min() < 0):
            return np.zeros((0, len(assets)))
        m = self.buf[np.ix_(order, cols)]
        return np.asarray(m[~np.isnan(m).any(axis=1)], dtype=np.float64)


@dataclass(frozen=True, slots=True)
class RollingCovarianceSnap:
    version: int
    assets: tuple[str, ...]
    window: tuple[tuple[tuple[str, float], ...], ...]  # the window's bars, oldest first
    since_refresh: int
    m: F64
    c: F64
    n: I64


class RollingCovariance:
    """Exact sample covariance (ddof 1) of the last `window_bars` bars, pairwise, by add and remove.

    Entry (i, j) equals ``numpy.cov`` of the returns of i and j over the bars of the window where both
    have one (every bar counts towards the window, whoever has a return in it); NaN under 2 common bars.
    The co-moments are updated Welford-style as a bar enters and leaves; every `window_bars` bars they
    are rebuilt from the window itself, so rounding cannot drift over a long run.

    Examples
    --------
    >>> w = RollingCovariance(window_bars=2)
    >>> for r in [{"BTC": 1.0}, {"BTC": 2.0, "ETH": 1.0}, {"BTC": 4.0, "ETH": 5.0}]:
    ...     w.update(r)
    >>> w.estimate().cov.round(12).tolist()
    [[2.0, 4.0], [4.0, 8.0]]
    """

    VERSION = 1

    def __init__(self, window_bars: int) -> None:
        if window_bars < 2:
            raise ConfigError("covariance.window_bars", f"must be >= 2, was {window_bars!r}")
        self.window_bars = window_bars
        self._s = _PairwiseState()
        self._window: deque[dict[str, float]] = deque()
        self._matrix = ReturnWindow(window_bars)  # the same bars as a matrix, for window_returns
        self._since_refresh = 0

    @property
    def assets(self) -> tuple[str, ...]:
        return tuple(self._s.assets)

    def update(self, returns: Returns) -> None:
        """Take one bar's log returns (new assets join); the oldest bar leaves once the window is full."""
        self._s.join(returns)
        bar = {k: float(v) for k, v in returns.items() if v is not None and not math.isnan(v)}
        self._add(bar)
        self._window.append(bar)
        self._matrix.add(bar)
        if len(self._window) > self.window_bars:
            self._drop(self._window.popleft())
        self._since_refresh += 1
        if self._since_refresh >= self.window_bars:
            self._refresh()

    def _add(self, bar: Returns) -> None:
        s = self._s
        p, r = _present(bar, s.index)
        if not p:
            return
        if len(p) == s.n.shape[0]:  # every asset has a return (the common case): whole matrices, no gather
            n1 = s.n + 1
            d = r[:, None] - s.m
            s.m += d / n1
            s.c += (n1 - 1) / n1 * d * d.T
            s.n = n1
            return
        ix = np.ix_(p, p)
        n1 = s.n[ix] + 1
        d = r[:, None] - s.m[ix]
        s.m[ix] += d / n1
        s.c[ix] += (n1 - 1) / n1 * d * d.T
        s.n[ix] = n1

    def _drop(self, bar: Returns) -> None:
        s = self._s
        p, r = _present(bar, s.index)
        if not p:
            return
        if len(p) == s.n.shape[0]:  # every asset had a return: whole matrices, no gather
            n = s.n
            e = r[:, None] - s.m
            last = n == 1
            safe = np.where(last, 2, n) - 1
            s.c = np.where(last, 0.0, s.c - n / safe * e * e.T)
            s.m = np.where(last, 0.0, s.m - e / safe)
            s.n = n - 1
            return
        ix = np.ix_(p, p)
        n = s.n[ix]
        e = r[:, None] - s.m[ix]
        last = n == 1
        safe = np.where(last, 2, n) - 1
        s.c[ix] = np.where(last, 0.0, s.c[ix] - n / safe * e * e.T)
        s.m[ix] = np.where(last, 0.0, s.m[ix] - e / safe)
        s.n[ix] = n - 1

    def _refresh(self) -> None:
        s = self._s
        s.m[:], s.c[:], s.n[:] = 0.0, 0.0, 0
        for bar in self._window:
            self._add(bar)
        self._since_refresh = 0

    def remove(self, asset: str) -> None:
        """Drop an asset's row and column and its returns in the window."""
        self._s.remove(asset)
        for bar in self._window:
            bar.pop(asset, None)
        self._matrix.forget(asset)

    def estimate(self) -> CovarianceEstimate:
        s = self._s
        with np.errstate(divide="ignore", invalid="ignore"):
            cov = np.where(s.n >= 2, s.c / (s.n - 1), np.nan)
        return CovarianceEstimate(assets=tuple(s.assets), mean=np.diag(s.m).copy(), cov=cov, counts=s.n.copy())

    def window_returns(self, assets: Sequence[str] | None = None) -> tuple[tuple[str, ...], F64]:
        """The window's returns (bars x assets) of `assets` (default: all), only bars where every one has one."""
        names = tuple(self._s.assets if assets is None else assets)
        return names, self._matrix.block(names)

    def flush(self) -> list[CovarianceEstimate]:
        return []

    def snapshot(self) -> RollingCovarianceSnap:
        s = self._s
        window = tuple(tuple(bar.items()) for bar in self._window)
        return RollingCovarianceSnap(version=self.VERSION, assets=tuple(s.assets), window=window,
                                     since_refresh=self._since_refresh, m=s.m.copy(), c=s.c.copy(), n=s.n.copy())

    @classmethod
    def restore(cls, window_bars: int, snap: RollingCovarianceSnap) -> RollingCovariance:
        check_version(snap, expected=cls.VERSION)
        core = cls(window_bars)
        core._s.load(snap.assets, snap.m, snap.c, snap.n)
        core._window.extend(dict(bar) for bar in snap.window)
        for bar in core._window:
            core._matrix.add(bar)
        core._since_refresh = snap.since_refresh
        return core


# --- shrinkage -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShrunkCovariance:
    """A shrunk, positive semi-definite covariance: ``(1 - intensity) * sample + intensity * target``."""

    cov: F64
    intensity: float
    target: str  # "identity" or "constant_correlation"
    condition_number: float


def nearest_psd(cov: F64) -> F64:
    """The symmetric part of `cov` with negative eigenvalues set to 0 (the nearest PSD matrix in Frobenius norm).

    >>> nearest_psd(np.array([[1.0, 2.0], [2.0, 1.0]])).round(6).tolist()
    [[1.5, 1.5], [1.5, 1.5]]
    """
    sym = (cov + cov.T) / 2.0
    if sym.size == 0:
        return sym
    if not np.isfinite(sym).all():
        raise InvariantError("covariance has NaN or infinite entries; take CovarianceEstimate.complete() first")
    vals, vecs = np.linalg.eigh(sym)
    if vals[0] >= 0.0:
        return sym
    out: F64 = (vecs * np.clip(vals, 0.0, None)) @ vecs.T
    return (out + out.T) / 2.0


def condition_number(cov: F64) -> float:
    """Largest over smallest eigenvalue of a symmetric matrix; inf when the smallest is <= 0.

    >>> condition_number(np.diag([4.0, 1.0]))
    4.0
    """
    if cov.size == 0:
        return 1.0
    return condition_of(np.asarray(np.linalg.eigvalsh((cov + cov.T) / 2.0), dtype=np.float64))


def condition_of(eigenvalues: F64) -> float:
    """`condition_number` from a symmetric matrix's ascending eigenvalues (1 for none, inf when the smallest <= 0).

    >>> condition_of(np.array([1.0, 4.0])), condition_of(np.array([0.0, 4.0]))
    (4.0, inf)
    """
    if eigenvalues.size == 0:
        return 1.0
    return float(eigenvalues[-1] / eigenvalues[0]) if eigenvalues[0] > 0 else math.inf


def _centered(returns: F64, assume_centered: bool) -> F64:
    if returns.ndim != 2 or returns.shape[0] < 1:
        raise InvariantError(f"returns must be a bars x assets matrix with a bar, were of shape {returns.shape}")
    if not np.isfinite(returns).all():
        raise InvariantError("returns have NaN or infinite entries")
    return returns if assume_centered else returns - returns.mean(axis=0)


def ledoit_wolf_intensity(returns: F64, assume_centered: bool = False) -> float:
    """Ledoit-Wolf (2004) optimal intensity towards ``mu * I``, ``mu = trace(S) / p``, as scikit-learn computes it.

    With centered returns x_t (T bars, p assets) and ``S = X'X / T``::

        d2 = ||S - mu I||^2 / p
        b2 = min(d2, sum_t ||x_t x_t' - S||^2 / (p T^2))
        intensity = b2 / d2     (0 when b2 is 0; clipped to [0, 1] against rounding)
    """
    x = _centered(returns, assume_centered)
    t, p = x.shape
    if p == 1:
        return 0.0
    s = x.T @ x / t
    mu = float(np.trace(s)) / p
    x2 = x * x
    sum_norm4 = float(np.sum(x2.sum(axis=1) ** 2))  # sum_t ||x_t||^4
    s_norm2 = float(np.sum(s * s))
    beta = (sum_norm4 / t - s_norm2) / (p * t)
    delta = (s_norm2 - 2.0 * mu * float(np.trace(s)) + p * mu * mu) / p
    beta = min(beta, delta)
    return 0.0 if beta <= 0.0 else min(1.0, beta / delta)


def shrink(cov: F64, intensity: float, target: str = "identity") -> ShrunkCovariance:
    """``(1 - intensity) * cov + intensity * F``, made PSD; F is ``mean(diag) * I`` or constant correlation."""
    if not 0.0 <= intensity <= 1.0:
        raise InvariantError(f"shrinkage intensity must be in [0, 1], was {intensity!r}")
    sym = (cov + cov.T) / 2.0
    if target == "identity":
        f = np.eye(sym.shape[0]) * (float(np.trace(sym)) / max(sym.shape[0], 1))
    elif target == "constant_correlation":
        f = _constant_correlation_target(sym)
    else:
        raise InvariantError(f"unknown shrinkage target {target!r}")
    out = nearest_psd((1.0 - intensity) * sym + intensity * f)
    return ShrunkCovariance(cov=out, intensity=float(intensity), target=target, condition_number=condition_number(out))


def ledoit_wolf(returns: F64, assume_centered: bool = False) -> ShrunkCovariance:
    """Ledoit-Wolf shrinkage of the biased sample covariance (ddof 0) towards a scaled identity.

    Equals ``sklearn.covariance.LedoitWolf().fit(returns).covariance_`` (then clipped to PSD, which it already is).
    """
    x = _centered(returns, assume_centered)
    return shrink(x.T @ x / x.shape[0], ledoit_wolf_intensity(x, assume_centered=True), "identity")


def _constant_correlation_target(s: F64) -> F64:
    sd = np.sqrt(np.clip(np.diag(s), 0.0, None))
    p = s.shape[0]
    if p < 2:
        return s.copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = s / np.outer(sd, sd)
    off = corr[~np.eye(p, dtype=bool)]
    rbar = float(np.nanmean(off)) if np.isfinite(off).any() else 0.0
    f = rbar * np.outer(sd, sd)
    np.fill_diagonal(f, np.diag(s))
    return f


def constant_correlation_intensity(returns: F64, assume_centered: bool = False) -> float:
    """Ledoit-Wolf (2004, "Honey, I shrunk the sample covariance matrix") intensity towards constant correlation.

    With centered returns y_t, ``S = Y'Y / T``, mean off-diagonal correlation r and target F
    (``F_ii = s_ii``, ``F_ij = r sqrt(s_ii s_jj)``)::

        pi    = sum_ij  mean_t (y_ti y_tj - s_ij)^2
        theta_ii,ij = mean_t (y_ti^2 - s_ii) (y_ti y_tj - s_ij)
        rho   = sum_i pi_ii + sum_{i != j} r / 2 (sqrt(s_jj / s_ii) theta_ii,ij + sqrt(s_ii / s_jj) theta_jj,ij)
        gamma = ||F - S||^2
        intensity = clip((pi - rho) / gamma / T, 0, 1)     (0 when gamma is 0)
    """
    y = _centered(returns, assume_centered)
    t, p = y.shape
    if p == 1:
        return 0.0
    s = y.T @ y / t
    f = _constant_correlation_target(s)
    sd = np.sqrt(np.diag(s))
    if (sd == 0).any():
        return 0.0
    rbar = float(f[0, 1] / (sd[0] * sd[1]))
    y2 = y * y
    pi_mat = (y2.T @ y2) / t - s * s
    pi = float(pi_mat.sum())
    # theta[i, j] = mean_t (y_ti^2 - s_ii)(y_ti y_tj - s_ij) = mean_t y_ti^3 y_tj - s_ii s_ij
    theta = ((y2 * y).T @ y) / t - np.diag(s)[:, None] * s
    ratio = sd[None, :] / sd[:, None]  # sqrt(s_jj / s_ii)
    both = ratio * theta + ratio.T * theta.T
    np.fill_diagonal(both, 0.0)
    rho = float(np.trace(pi_mat)) + rbar / 2.0 * float(both.sum())
    gamma = float(np.sum((f - s) ** 2))
    if gamma == 0.0:
        return 0.0
    return float(min(1.0, max(0.0, (pi - rho) / gamma / t)))


def constant_correlation(returns: F64, assume_centered: bool = False) -> ShrunkCovariance:
    """Ledoit-Wolf (2004) shrinkage of the biased sample covariance towards the constant-correlation target."""
    y = _centered(returns, assume_centered)
    intensity = constant_correlation_intensity(y, assume_centered=True)
    return shrink(y.T @ y / y.shape[0], intensity, "constant_correlation")
