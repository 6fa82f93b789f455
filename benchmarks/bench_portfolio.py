"""Per-rebalance latency of the portfolio optimisers: covariance update + risk model + solve + risk contributions.

Returns are hourly log returns of the 82-asset universe ``../shared/data/universe/huobi-pob/
cryptos_2017to2021_hourly.parquet`` over its last bars, where every asset has a close. For 100 assets, the 18
assets past the 82 real ones are synthetic: real asset ``j mod 82``'s returns times 0.8 plus seeded Gaussian
noise of 0.6 times its volatility (correlated like real coins, not copies).

One rebalance is: `EwmaCovariance.update` with one new bar (halflife 168 bars), its estimate shrunk towards the
scaled identity with intensity 0.1 (`shrink`), `RiskModel.from_cov` of that (k = n loadings), the solve, and the
risk contributions of the new weights. The covariance is first fed ``WARMUP`` bars untimed. Methods:

- ``mean_variance``: `MeanVariance` (gross 1.5, net [0, 1], per-asset [-0.05, max(0.05, 3/n)], two factor
  exposures -- market (all ones) within [-0.5, 1] and a ±1 split within [-0.2, 0.2] -- costs 10 bps, γ = 5,
  μ = the EWMA mean), previous = the last weights;
- ``tier_risk_parity``: `tier_risk_parity` over 4 tiers of consecutive assets, equal budgets, ERC inside.

Each runs ``REBALANCES`` times on the fast path (problems built once, compiled on the first rebalance, which is
not timed) and ``SCRATCH_REBALANCES`` times "from scratch": the same problem written with constants as a new
``cvxpy.Problem`` and ``.solve()``d (OSQP for mean-variance, Clarabel for risk budgeting) every rebalance.
Timings are ``time.perf_counter()`` per rebalance; the figures are p50 and p99 in milliseconds, with the fast
path's covariance, solve and contributions parts and which solver produced the weights on stderr. stdout carries
only ``name: value`` lines.

BLAS runs on one thread (``OPENBLAS_NUM_THREADS=1`` unless set): the matrices are at most 100 x 100, and on a
loaded 2-core machine BLAS threads waiting for each other made one 100-asset eigendecomposition take 100+ ms.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: see the module docstring
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cvxpy as cp
import numpy as np
import polars as pl
from _report import emit, log

from operators.covariance.streaming import EwmaCovariance, shrink
from operators.portfolio.optimisers import MeanVariance, RiskBudget, tier_risk_parity
from operators.portfolio.risk_model import RiskModel

ROOT = Path(__file__).resolve().parent.parent
HOURLY = ROOT.parent / "shared" / "data" / "universe" / "huobi-pob" / "cryptos_2017to2021_hourly.parquet"
SIZES = (20, 50, 100)
WARMUP = 200
REBALANCES = 250
SCRATCH_REBALANCES = 200
SEED = 11
_atoms: Any = cp


def returns(n: int, bars: int) -> tuple[list[str], np.ndarray]:
    df = pl.read_parquet(HOURLY).tail(bars + 1)
    cols = [c for c in df.columns[1:] if df[c].null_count() == 0 and (df[c] > 0).all()]
    real = np.diff(np.log(df.select(cols).to_numpy().astype(np.float64)), axis=0)
    names, out = list(cols[:n]), [real[:, :n]]
    rng = np.random.default_rng(SEED)
    for j in range(len(cols), n):
        base = real[:, j % len(cols)]
        out.append((0.8 * base + 0.6 * base.std() * rng.standard_normal(bars))[:, None])
        names.append(f"SYN{j}")
    if n > len(cols):
        log(f"{n} assets: {len(cols)} real, {n - len(cols)} synthetic (correlated with a real one)")
    return names, np.hstack(out)


def risk_model(cov: EwmaCovariance) -> tuple[RiskModel, np.ndarray]:
    est = cov.estimate()
    return RiskModel.from_cov(est.assets, shrink(est.cov, 0.1).cov), est.mean


class MvCase:
    def __init__(self, n: int) -> None:
        self.n = n
        self.bounds = (-0.05, max(0.05, 3.0 / n))
        self.b = np.column_stack([np.ones(n), np.where(np.arange(n) < n // 2, 1.0, -1.0)])
        self.flo, self.fhi = np.array([-0.5, -0.2]), np.array([1.0, 0.2])
        self.costs = np.full(n, 0.001)
        self.prev = np.zeros(n)
        self.opt = MeanVariance(n, n, 2, gross=1.5, net=(0.0, 1.0), bounds=self.bounds)
        self.solved_by: Counter[str] = Counter()

    def fast(self, model: RiskModel, mu: np.ndarray) -> np.ndarray:
        sol = self.opt.solve(mu=mu, model=model, exposures=self.b, factor_bounds=(self.flo, self.fhi),
                             previous=self.prev, costs=self.costs, risk_aversion=5.0)
        self.prev = sol.weights
        self.solved_by[f"{sol.solver or 'none'}/{sol.status}"] += 1
        return sol.weights

    def scratch(self, model: RiskModel, mu: np.ndarray) -> np.ndarray:
        w, t = cp.Variable(self.n), cp.Variable(self.n)
        objective = cp.Minimize(-mu @ w + 5.0 * _atoms.sum_squares(model.loadings.T @ w)
                                + 5.0 * _atoms.sum_squares(_atoms.multiply(np.sqrt(model.specific), w))
                                + self.costs @ t)
        cons = [t >= w - self.prev, t >= self.prev - w, _atoms.norm1(w) <= 1.5, _atoms.sum(w) >= 0.0,
                _atoms.sum(w) <= 1.0, w >= self.bounds[0], w <= self.bounds[1], self.b.T @ w >= self.flo,
                self.b.T @ w <= self.fhi]
        cp.Problem(objective, cons).solve(solver="OSQP")
        self.prev = np.asarray(w.value, dtype=np.float64)
        return self.prev


class TierCase:
    def __init__(self, n: int, assets: list[str]) -> None:
        self.tiers = {f"tier{j}": assets[j * n // 4:(j + 1) * n // 4] for j in range(4)}
        self.budgets = dict.fromkeys(self.tiers, 1.0)
        self.solver = RiskBudget(n, n)
        self.solved_by: Counter[str] = Counter()
        self.b = np.full(n, 1.0 / n)

    def fast(self, model: RiskModel, mu: np.ndarray) -> np.ndarray:
        sol = tier_risk_parity(model, self.tiers, self.budgets, solver=self.solver)[0]
        self.solved_by[f"{sol.solver or 'none'}/{sol.status}"] += 1
        return sol.weights

    def scratch(self, model: RiskModel, mu: np.ndarray) -> np.ndarray:
        y = cp.Variable(model.n)
        scale = float(np.trace(model.cov())) / model.n
        cp.Problem(cp.Minimize(0.5 * _atoms.sum_squares(model.loadings.T @ y) / scale
                               + 0.5 * _atoms.sum_squares(_atoms.multiply(np.sqrt(model.specific / scale), y))
                               - self.b @ _atoms.log(y))).solve(solver="CLARABEL")
        v = np.asarray(y.value, dtype=np.float64)
        return v / v.sum()


def make(method: str, names: list[str]) -> MvCase | TierCase:
    return MvCase(len(names)) if method == "mean_variance" else TierCase(len(names), names)


def run(names: list[str], rets: np.ndarray, solve: Callable[[RiskModel, np.ndarray], np.ndarray], count: int,
        ) -> tuple[np.ndarray, np.ndarray]:
    """(total ms per rebalance, parts ms [covariance+model, solve, contributions] per rebalance); first untimed."""
    cov = EwmaCovariance(halflife_bars=168)
    for row in rets[:WARMUP]:
        cov.update(dict(zip(names, row.tolist(), strict=True)))
    totals, parts = [], []
    for i, row in enumerate(rets[WARMUP:WARMUP + count + 1]):
        bar = dict(zip(names, row.tolist(), strict=True))
        t0 = time.perf_counter()
        cov.update(bar)
        model, mu = risk_model(cov)
        t1 = time.perf_counter()
        w = solve(model, mu)
        t2 = time.perf_counter()
        model.contributions(w)
        t3 = time.perf_counter()
        if i:  # the first rebalance compiles the problem
            totals.append(t3 - t0)
            parts.append((t1 - t0, t2 - t1, t3 - t2))
    return np.array(totals) * 1e3, np.array(parts) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    ap.add_argument("--rebalances", type=int, default=REBALANCES)
    ap.add_argument("--scratch-rebalances", type=int, default=SCRATCH_REBALANCES)
    args = ap.parse_args()
    log(f"load average at start: {os.getloadavg()[0]:.2f}")
    rows = []
    for n in args.sizes:
        names, rets = returns(n, WARMUP + args.rebalances + 1)
        for method in ("mean_variance", "tier_risk_parity"):
            case = make(method, names)
            fast, parts = run(names, rets, case.fast, args.rebalances)
            log(f"{method} n={n} solved by: {dict(case.solved_by)}")
            scratch, _ = run(names, rets, make(method, names).scratch, args.scratch_rebalances)
            p = np.percentile(parts, [50, 99], axis=0)
            log(f"{method} n={n} fast parts p50/p99 ms: covariance+model {p[0, 0]:.2f}/{p[1, 0]:.2f}, "
                f"solve {p[0, 1]:.2f}/{p[1, 1]:.2f}, contributions {p[0, 2]:.3f}/{p[1, 2]:.3f}")
            rows.append((method, n, np.percentile(fast, 50), np.percentile(fast, 99), len(fast),
                         np.percentile(scratch, 50), np.percentile(scratch, 99), len(scratch)))
    log(f"load average at end: {os.getloadavg()[0]:.2f}")
    log(f"{'method':<18}{'assets':>7}{'fast p50':>10}{'fast p99':>10}{'n':>6}{'scratch p50':>13}"
        f"{'scratch p99':>13}{'n':>5}   (ms per rebalance)")
    for method, n, f50, f99, fn, s50, s99, sn in rows:
        log(f"{method:<18}{n:>7}{f50:>10.2f}{f99:>10.2f}{fn:>6}{s50:>13.2f}{s99:>13.2f}{sn:>5}")
        for name, value in (("fast_p50", f50), ("fast_p99", f99), ("scratch_p50", s50), ("scratch_p99", s99)):
            emit(f"portfolio_{method}_{n}_assets_{name}_ms", float(value))


if __name__ == "__main__":
    main()
