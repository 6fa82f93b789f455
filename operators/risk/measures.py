"""Portfolio risk measures on a window of returns: historical and Cornish-Fisher VaR and Expected Shortfall,
liquidity-adjusted VaR, and a streaming window that keeps them current bar by bar.

Returns are simple portfolio returns (a loss is a negative return); every measure is returned as a positive loss
fraction. `alpha` is the confidence level (0.975 is the Basel ES level): the measures look at the worst
`1 - alpha` of the distribution.

Historical VaR and ES use skfolio's conventions exactly (`skfolio.measures.value_at_risk` and `cvar`, 1.12),
for n observations sorted ascending r_(0) <= ... <= r_(n-1) and tail mass k = (1 - alpha) n:

- VaR = -r_(i) with i = min(n - 1, floor(k + 4 eps n)), eps the float64 machine epsilon: the (i+1)-th worst
  return. For a non-integer k this is i = ceil(k) - 1; for an integer k (100 returns at 0.95: k = 5) it is
  i = k, the sixth worst return, the "lower loss at a boundary" of skfolio (the tolerance absorbs the rounding
  of k). alpha = 1 gives the worst return.
- ES = -(r_(0) + ... + r_(j-1) + (k - j) r_(j)) / k with j = max(0, ceil(k) - 1): the mean of the worst k
  observations, the partial observation r_(j) weighted by its fraction k - j (Rockafellar & Uryasev 2002).

Cornish-Fisher (modified) VaR adjusts the normal quantile for skewness and kurtosis, with population moments
(ddof 0, as PerformanceAnalytics' `VaR(method="modified")`): mu the mean, m_p = mean((r - mu)^p), sigma =
sqrt(m_2), S = m_3 / m_2^1.5, K = m_4 / m_2^2 - 3 (excess kurtosis); S = K = 0 when m_2 = 0 (or m_2^2
underflows). With z = Phi^-1(1 - alpha) (negative, the lower-tail normal quantile):

    z_cf(z) = z + (z^2 - 1) S / 6 + (z^3 - 3 z) K / 24 - (2 z^3 - 5 z) S^2 / 36,    VaR = -(mu + sigma z_cf(z)).

Cornish-Fisher ES is the tail average of that quantile function: ES = -(mu + sigma E[z_cf(Z) | Z <= z]) for Z
standard normal, i.e. the average of the Cornish-Fisher quantile over the probabilities p in (0, 1 - alpha).
It is in closed form through the Hermite integrals of the normal density phi, with a = 1 - alpha:

    ES = -mu + sigma phi(z) / a * (1 + S z / 6 + K (z^2 - 1) / 24 - S^2 (2 z^2 - 1) / 36).

This is not Boudt, Peterson & Croux's (2008) modified ES (the tail mean of the Edgeworth density, truncated at
the CF quantile); it is the ES of the distribution whose quantile function is the Cornish-Fisher expansion. For
S = K = 0 both measures are the Gaussian ones, -mu - sigma z and -mu + sigma phi(z) / a. ES >= VaR holds whenever
z_cf is increasing over the tail (moderate S and K); for extreme moments the expansion is not monotone.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from operators.base import check_version

FloatArray = npt.NDArray[np.float64]
_EPS = float(np.finfo(np.float64).eps)


def _returns(returns: npt.ArrayLike) -> FloatArray:
    """Return `returns` as a finite, non-empty 1-D float array, or raise naming what is wrong."""
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"returns must be 1-D, got shape {r.shape}")
    if r.size == 0:
        raise ValueError("returns must not be empty")
    if not np.isfinite(r).all():
        raise ValueError("returns must be finite (drop NaN before measuring)")
    return r


def _check_alpha(alpha: float, *, closed: bool) -> None:
    """Raise unless `alpha` is a confidence level: in [0, 1] when `closed`, else in (0, 1)."""
    ok = 0.0 <= alpha <= 1.0 if closed else 0.0 < alpha < 1.0
    if not ok:
        raise ValueError(f"alpha must be in {'[0, 1]' if closed else '(0, 1)'}, got {alpha}")


def historical_var(returns: npt.ArrayLike, alpha: float = 0.975) -> float:
    """Return the historical VaR at confidence `alpha` as a positive loss fraction (skfolio's `value_at_risk`).

    >>> historical_var([0.01, -0.02, 0.03, -0.05, 0.0, 0.02, -0.01, 0.01, 0.0, -0.03], alpha=0.8)
    0.02
    >>> historical_var([0.01, -0.02, 0.03, -0.05], alpha=1.0)
    0.05
    """
    r = _returns(returns)
    _check_alpha(alpha, closed=True)
    n = r.size
    if alpha == 1.0:
        return float(-r.min())
    i = min(n - 1, int(np.floor((1.0 - alpha) * n + 4 * _EPS * n)))
    return float(-np.partition(r, i)[i])


def historical_es(returns: npt.ArrayLike, alpha: float = 0.975) -> float:
    """Return the historical Expected Shortfall (CVaR) at `alpha` as a positive loss fraction (skfolio's `cvar`).

    The mean of the worst (1 - alpha) n returns, the boundary observation weighted by its fraction:

    >>> round(historical_es([0.01, -0.02, 0.03, -0.05, 0.0, 0.02, -0.01, 0.01, 0.0, -0.03], alpha=0.75), 12)
    0.036
    """
    r = _returns(returns)
    _check_alpha(alpha, closed=True)
    n = r.size
    if alpha == 1.0:
        return float(-r.min())
    k = (1.0 - alpha) * n
    j = max(0, int(np.ceil(k) - 1))
    part = np.partition(r, j)
    return float(-np.sum(part[:j]) / k + part[j] * (j / k - 1.0))


def historical_var_es(returns: npt.ArrayLike, alpha: float = 0.975) -> tuple[float, float]:
    """Return historical VaR and ES together from one sort (the streaming engine's path; the same conventions as
    `historical_var` and `historical_es`, equal to them up to the order the tail is summed in).

    >>> [round(x, 12) for x in historical_var_es([0.01, -0.02, 0.03, -0.05, 0.0, 0.02, -0.01, 0.01, 0.0, -0.03], 0.8)]
    [0.02, 0.04]
    """
    r = np.sort(_returns(returns))
    _check_alpha(alpha, closed=True)
    n = r.size
    if alpha == 1.0:
        return float(-r[0]), float(-r[0])
    k = (1.0 - alpha) * n
    i = min(n - 1, int(np.floor(k + 4 * _EPS * n)))
    j = max(0, int(np.ceil(k) - 1))
    return float(-r[i]), float(-np.sum(r[:j]) / k + r[j] * (j / k - 1.0))


@dataclass(frozen=True, slots=True)
class Moments:
    """The population moments Cornish-Fisher needs: mean, standard deviation, skewness, excess kurtosis."""

    mean: float
    std: float
    skew: float
    kurt: float


def moments(returns: npt.ArrayLike) -> Moments:
    """Return the population (ddof 0) mean, std, skewness and excess kurtosis of `returns`.

    >>> moments([-1.0, 1.0])
    Moments(mean=0.0, std=1.0, skew=0.0, kurt=-2.0)
    """
    r = _returns(returns)
    mu = float(r.mean())
    d = r - mu
    m2 = float(np.mean(d * d))
    return _from_central(mu, m2, float(np.mean(d**3)), float(np.mean(d**4)))


def _from_central(mu: float, m2: float, m3: float, m4: float) -> Moments:
    """Moments from the mean and the central moments; S = K = 0 for a constant series."""
    if m2 * m2 <= 0.0:  # constant, or so nearly that m2^2 underflows: no shape to measure
        return Moments(mu, math.sqrt(max(m2, 0.0)), 0.0, 0.0)
    return Moments(mu, math.sqrt(m2), m3 / m2**1.5, m4 / (m2 * m2) - 3.0)


@functools.lru_cache(maxsize=64)
def _norm_ppf(p: float) -> float:
    """The standard normal quantile: Acklam's rational approximation refined by three Halley steps on `math.erfc`
    (within 1e-15 of scipy's `norm.ppf` for p in (1e-10, 1 - 1e-10)); numpy-only, no scipy at run time."""
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155288572e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    q = min(p, 1.0 - p)
    if q < 0.02425:
        t = math.sqrt(-2.0 * math.log(q))
        x = (((((c[0] * t + c[1]) * t + c[2]) * t + c[3]) * t + c[4]) * t + c[5]) / \
            ((((d[0] * t + d[1]) * t + d[2]) * t + d[3]) * t + 1.0)
        x = x if p < 0.5 else -x
    else:
        u = p - 0.5
        t = u * u
        x = (((((a[0] * t + a[1]) * t + a[2]) * t + a[3]) * t + a[4]) * t + a[5]) * u / \
            (((((b[0] * t + b[1]) * t + b[2]) * t + b[3]) * t + b[4]) * t + 1.0)
    for _ in range(3):
        e = 0.5 * math.erfc(-x / math.sqrt(2.0)) - p
        f = e * math.sqrt(2.0 * math.pi) * math.exp(0.5 * x * x)
        x = x - f / (1.0 + 0.5 * x * f)
    return x


def _phi(x: float) -> float:
    """The standard normal density."""
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def cf_quantile(z: float, skew: float, kurt: float) -> float:
    """Return the Cornish-Fisher adjusted standard quantile z_cf at the normal quantile `z`.

    >>> cf_quantile(-2.0, 0.0, 0.0)
    -2.0
    >>> round(cf_quantile(-2.0, -0.5, 3.0), 6)
    -2.458333
    """
    z2, z3 = z * z, z * z * z
    return z + (z2 - 1.0) * skew / 6.0 + (z3 - 3.0 * z) * kurt / 24.0 - (2.0 * z3 - 5.0 * z) * skew * skew / 36.0


def cf_var_from(m: Moments, alpha: float = 0.975) -> float:
    """Cornish-Fisher VaR from moments (see the module docstring)."""
    _check_alpha(alpha, closed=False)
    return -(m.mean + m.std * cf_quantile(_norm_ppf(1.0 - alpha), m.skew, m.kurt))


def cf_es_from(m: Moments, alpha: float = 0.975) -> float:
    """Cornish-Fisher ES from moments: the tail average of the CF quantile, in closed form (module docstring)."""
    _check_alpha(alpha, closed=False)
    a = 1.0 - alpha
    z = _norm_ppf(a)
    s, k = m.skew, m.kurt
    tail = 1.0 + s * z / 6.0 + k * (z * z - 1.0) / 24.0 - s * s * (2.0 * z * z - 1.0) / 36.0
    return -m.mean + m.std * _phi(z) / a * tail


def cornish_fisher_var(returns: npt.ArrayLike, alpha: float = 0.975) -> float:
    """Return the Cornish-Fisher (modified) VaR of `returns` at `alpha`, a positive loss fraction.

    >>> round(cornish_fisher_var([-0.01, 0.01], alpha=0.975), 6)  # S = 0, K = -2: thinner tails than normal
    0.018225
    >>> round(cf_var_from(Moments(0.0, 0.01, 0.0, 0.0), alpha=0.975), 6)  # S = K = 0: the Gaussian -mu - sigma z
    0.0196
    """
    return cf_var_from(moments(returns), alpha)


def cornish_fisher_es(returns: npt.ArrayLike, alpha: float = 0.975) -> float:
    """Return the Cornish-Fisher ES of `returns` at `alpha`: the average CF quantile over the worst 1 - alpha.

    >>> round(cornish_fisher_es([-0.01, 0.01], alpha=0.975), 6)
    0.017842
    >>> round(cf_es_from(Moments(0.0, 0.01, 0.0, 0.0), alpha=0.975), 6)  # the Gaussian sigma phi(z) / (1 - alpha)
    0.023378
    """
    return cf_es_from(moments(returns), alpha)


@dataclass(frozen=True, slots=True)
class Impact:
    """Square-root market impact per position: cost_i = coefficient * volatility_i * sqrt(|q_i| / volume_i) * |q_i|.

    `volatility` is the per-bar return volatility of each instrument, `volume` its traded volume per bar in the
    same unit as the positions (so with positions as fractions of equity, volume / equity).
    """

    coefficient: float
    volatility: Sequence[float]
    volume: Sequence[float]


@dataclass(frozen=True, slots=True)
class LVaR:
    """Liquidity-adjusted VaR: the market VaR plus the cost of unwinding, all in the positions' unit."""

    var: float
    exogenous: float
    endogenous: float
    total: float


def liquidity_adjusted_var(var: float, positions: Iterable[float], spreads_mean: Iterable[float],
                           spreads_std: Iterable[float], k: float = 3.0, impact: Impact | None = None) -> LVaR:
    """Return the liquidity-adjusted VaR (Bangia, Diebold, Schuermann & Stroughair 1999, plus square-root impact).

    `positions` are signed values in one unit, the unit of `var` and of the result: fractions of equity (with a
    VaR that is a loss fraction of equity) or account-currency amounts (with a VaR in currency). Spreads are
    relative, (ask - bid) / mid, their mean and standard deviation per instrument. Exogenous cost =
    sum |p_i| (mean_i + k std_i) / 2; endogenous cost = sum coefficient sigma_i sqrt(|p_i| / V_i) |p_i| when
    `impact` is given, else 0 (a zero volume with a non-zero position is refused); total = var + both.

    >>> liquidity_adjusted_var(0.05, [0.5, -0.3], [0.001, 0.004], [0.0005, 0.001], k=2.0)
    LVaR(var=0.05, exogenous=0.0014, endogenous=0.0, total=0.0514)
    """
    p = np.abs(np.asarray(list(positions), dtype=np.float64))
    mean = np.asarray(list(spreads_mean), dtype=np.float64)
    std = np.asarray(list(spreads_std), dtype=np.float64)
    if not (p.shape == mean.shape == std.shape) or p.ndim != 1:
        raise ValueError(f"positions {p.shape}, spreads_mean {mean.shape} and spreads_std {std.shape} must match")
    if (mean < 0).any() or (std < 0).any():
        raise ValueError("relative spreads and their std must be non-negative")
    exo = float(np.sum(p * 0.5 * (mean + k * std)))
    endo = 0.0
    if impact is not None:
        vol = np.asarray(list(impact.volatility), dtype=np.float64)
        volume = np.asarray(list(impact.volume), dtype=np.float64)
        if vol.shape != p.shape or volume.shape != p.shape:
            raise ValueError(f"impact volatility {vol.shape} and volume {volume.shape} must match positions {p.shape}")
        held = p > 0
        if (volume[held] <= 0).any():
            raise ValueError("impact volume must be positive for every non-zero position")
        endo = float(impact.coefficient * np.sum(vol[held] * np.sqrt(p[held] / volume[held]) * p[held]))
    return LVaR(var=float(var), exogenous=exo, endogenous=endo, total=float(var) + exo + endo)


ROLLING_VERSION = 1


@dataclass(frozen=True, slots=True)
class RollingSnapshot:
    """A `RollingReturns` at one moment: the window's returns and the running power sums, exactly."""

    window: int
    returns: tuple[float, ...]
    sums: tuple[float, float, float, float]
    since_resum: int
    version: int = ROLLING_VERSION


class RollingReturns:
    """The last `window` portfolio returns, with running sums of r, r^2, r^3, r^4 for the moments.

    Historical measures sort the window on demand; Cornish-Fisher ones use the running sums, recomputed exactly
    from the window every `window` updates so that rounding never drifts.

    >>> w = RollingReturns(3)
    >>> for r in (0.01, -0.02, 0.03, -0.04):
    ...     w.update(r)
    >>> w.returns(), w.var(0.5)
    ((-0.02, 0.03, -0.04), 0.02)
    """

    def __init__(self, window: int) -> None:
        if window < 2:
            raise ValueError(f"window must be at least 2 returns, got {window}")
        self.window = window
        self._buf: deque[float] = deque()
        self._sums = [0.0, 0.0, 0.0, 0.0]
        self._since_resum = 0

    def __len__(self) -> int:
        return len(self._buf)

    def returns(self) -> tuple[float, ...]:
        """The window's returns, oldest first."""
        return tuple(self._buf)

    def update(self, r: float) -> None:
        """Append one return, dropping the oldest when the window is full."""
        if not math.isfinite(r):
            raise ValueError(f"return must be finite, got {r}")
        r = float(r)
        self._buf.append(r)
        self._add(r, 1.0)
        if len(self._buf) > self.window:
            self._add(self._buf.popleft(), -1.0)
        self._since_resum += 1
        if self._since_resum >= self.window:
            self._resum()

    def _add(self, r: float, sign: float) -> None:
        r2 = r * r
        s = self._sums
        s[0] += sign * r
        s[1] += sign * r2
        s[2] += sign * r2 * r
        s[3] += sign * r2 * r2

    def _resum(self) -> None:
        a = np.fromiter(self._buf, dtype=np.float64, count=len(self._buf))
        self._sums = [float(np.sum(a)), float(np.sum(a**2)), float(np.sum(a**3)), float(np.sum(a**4))]
        self._since_resum = 0

    def _array(self) -> FloatArray:
        if not self._buf:
            raise ValueError("no returns in the window yet")
        return np.fromiter(self._buf, dtype=np.float64, count=len(self._buf))

    def moments(self) -> Moments:
        """The window's population moments from the running sums."""
        n = len(self._buf)
        if n == 0:
            raise ValueError("no returns in the window yet")
        s1, s2, s3, s4 = (x / n for x in self._sums)
        mu = s1
        m2 = max(s2 - mu * mu, 0.0)
        m3 = s3 - 3.0 * mu * s2 + 2.0 * mu**3
        m4 = s4 - 4.0 * mu * s3 + 6.0 * mu * mu * s2 - 3.0 * mu**4
        return _from_central(mu, m2, m3, m4)

    def var(self, alpha: float = 0.975) -> float:
        """Historical VaR of the window (`historical_var`)."""
        return historical_var(self._array(), alpha)

    def es(self, alpha: float = 0.975) -> float:
        """Historical ES of the window (`historical_es`)."""
        return historical_es(self._array(), alpha)

    def cf_var(self, alpha: float = 0.975) -> float:
        """Cornish-Fisher VaR of the window from the running moments."""
        return cf_var_from(self.moments(), alpha)

    def cf_es(self, alpha: float = 0.975) -> float:
        """Cornish-Fisher ES of the window from the running moments."""
        return cf_es_from(self.moments(), alpha)

    def snapshot(self) -> RollingSnapshot:
        s = self._sums
        return RollingSnapshot(self.window, tuple(self._buf), (s[0], s[1], s[2], s[3]), self._since_resum)

    @classmethod
    def restore(cls, snap: RollingSnapshot) -> RollingReturns:
        check_version(snap, ROLLING_VERSION)
        w = cls(snap.window)
        w._buf.extend(snap.returns)
        w._sums = list(snap.sums)
        w._since_resum = snap.since_resum
        return w
