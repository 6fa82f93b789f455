"""The portfolio engine: covariance, factors and regime kept on the stream, a target portfolio solved per rebalance.

The cross-sectional step owns one `PortfolioEngine`. At every processed bar time it calls `observe` with the
closes of the decision keys that have a bar then (instruments, or assets with the router on); the engine turns
them into log returns and updates the streaming covariance, the factor model and the volatility-regime detector.
At a rebalance it calls `decide` with the signal's scores, the per-bar volatilities and the vol-target weights,
and gets the targets and the records of the decision (`Rebalance`, `RiskShare`, `Exposure`, `RegimeSwitch`,
`Alert`). docs/portfolio.md has the formulas.

Returns across a gap of k bars (missing bars, a coarser clock) are scaled by ``1/√k`` so every return is a
one-bar-equivalent draw of the same variance. The engine never reads the clock: the flow passes `clock` (a
monotonic ns counter) to measure the solve time, which is the only value two runs of a replay do not share.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from headrace.errors import ConfigError
from headrace.events import NS_PER_YEAR, Alert, Exposure, PortfolioRecord, Rebalance, RiskShare
from operators.base import check_version
from operators.covariance.factors import FactorModel, FactorModelSnap
from operators.covariance.streaming import (
    EwmaCovariance,
    EwmaCovarianceSnap,
    RollingCovariance,
    RollingCovarianceSnap,
    condition_number,
    condition_of,
    constant_correlation,
    ledoit_wolf,
    nearest_psd,
    shrink,
)
from operators.portfolio.correlation import correlation_scale
from operators.portfolio.regime import RegimeDetector, RegimeSnap
from operators.portfolio.risk_model import F64, RiskModel
from operators.portfolio.solution import Solution

SOLVER_TOLERANCE = 1e-6
if TYPE_CHECKING:  # the optimisers import cvxpy: only a method that solves loads them
    from operators.portfolio.optimisers import MeanVariance, RiskBudget

METHODS = ("vol_target", "mean_variance", "tier_risk_parity", "regime_tiers")
OTHER_TIER = "other"


def asset_of(key: str) -> str:
    """The asset a decision key stands for: the base of ``venue:BASE/QUOTE``, or the key itself (router on).

    >>> asset_of("huobi:BTC/USDT"), asset_of("ETH")
    ('BTC', 'ETH')
    """
    symbol = key.partition(":")[2] if ":" in key else key
    return symbol.partition("/")[0]


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """Everything the engine is told at construction (from ``[portfolio]``, ``[sizing]`` and ``[strategy]``)."""

    method: str = "vol_target"
    covariance: str = "rolling"
    window_bars: int = 720
    halflife_bars: float = 168.0
    shrinkage: str = "ledoit_wolf"
    shrinkage_intensity: float = 0.1
    min_bars: int = 48
    risk_model: str = "sample"
    n_statistical: int = 0
    benchmark: str = ""
    correlation_aware: bool = False
    alpha_ic: float = 0.05
    risk_aversion: float = 5.0
    turnover_penalty: float = 0.0
    net: tuple[float, float] = (0.0, 1.0)
    gross: float = 1.0
    max_weight: float = 0.25
    long_only: bool = True
    target_volatility: float = 0.5  # annualised
    factor_bounds: tuple[tuple[str, float, float], ...] = ()
    tiers: tuple[tuple[str, tuple[str, ...]], ...] = ()  # tier -> assets
    tier_budgets: tuple[tuple[str, float], ...] = ()
    inside_tier: str = "erc"
    regime_budgets: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] = ()
    regime: tuple[tuple[str, float], ...] = ()  # RegimeDetector keyword arguments
    timeframe_ns: int = 3_600 * 10**9
    rebalance_bars: int = 1
    account: str = "main"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError("portfolio.method", f"must be one of {', '.join(METHODS)}, was {self.method!r}")

    @property
    def tier_of(self) -> dict[str, str]:
        return {a: t for t, assets in self.tiers for a in assets}

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        """Factor -> (low, high) of the portfolio's exposure; factors not named are unbounded."""
        return {f: (lo, hi) for f, lo, hi in self.factor_bounds}

    def budgets(self, regime: str, tiers: Iterable[str]) -> dict[str, float]:
        """The tier budgets in force: the regime's (regime_tiers) or the configured ones; equal over `tiers`
        when none are configured."""
        given = dict(dict(self.regime_budgets).get(regime, ())) if self.method == "regime_tiers" else dict(
            self.tier_budgets)
        return given or dict.fromkeys(tiers, 1.0)


@dataclass(frozen=True, slots=True)
class PortfolioEngineSnap:
    version: int
    covariance: RollingCovarianceSnap | EwmaCovarianceSnap
    factors: FactorModelSnap
    regime: RegimeSnap
    last: tuple[tuple[str, int, float, str], ...]  # key, bar time, close, the instrument the close came from
    previous: tuple[tuple[str, float], ...]  # the last targets
    warm: tuple[float, ...] | None = None
    warm_assets: tuple[str, ...] = ()
    timeframe_ns: int = 0


@dataclass(frozen=True, slots=True)
class _Risk:
    """The risk side of one rebalance: the model over the assets held, its condition number, the shrinkage
    intensity, and the assets' factor exposures (names and n × m betas)."""

    model: RiskModel
    condition_number: float
    shrinkage: float
    factors: tuple[str, ...]
    exposures: F64


@dataclass(slots=True)
class _Decision:
    weights: dict[str, float]
    records: list[PortfolioRecord] = field(default_factory=list)


class PortfolioEngine:
    """Streaming risk model and per-rebalance portfolio construction (see the module docstring).

    Parameters
    ----------
    settings
        The method and its parameters.
    costs
        Per decision key, the cost of trading one unit of weight (taker fee plus half spread, a fraction);
        mean-variance charges it on the turnover.
    clock
        A monotonic ns counter used only to measure the solve time (default: none, times are 0).
    """

    VERSION = 1

    def __init__(self, settings: EngineSettings, costs: Mapping[str, float] | None = None,
                 clock: Callable[[], int] | None = None) -> None:
        self.s = settings
        self.costs = dict(costs or {})
        self.clock = clock
        self.cov: RollingCovariance | EwmaCovariance = (
            RollingCovariance(settings.window_bars) if settings.covariance == "rolling"
            else EwmaCovariance(settings.halflife_bars))
        self.factors = FactorModel(settings.halflife_bars, benchmark=settings.benchmark or None,
                                   tiers=self._tier_members(), n_statistical=settings.n_statistical)
        self.regime = RegimeDetector(**dict(settings.regime))  # type: ignore[arg-type]
        self._last: dict[str, tuple[int, float, str]] = {}
        self._previous: dict[str, float] = {}
        self._mv: MeanVariance | None = None
        self._mv_assets: tuple[str, ...] = ()  # the universe the mean-variance problem (and its warm state) is for
        self._mv_k: tuple[int, int] = (0, 0)
        self._rb: dict[int, RiskBudget] = {}
        self._warm: tuple[float, ...] | None = None
        self._asset_names: dict[str, str] = {}  # decision key -> asset, memoised
        self._tier_of = settings.tier_of
        self._tf = 0  # the finest bar length seen: the unit of every return, of ex_ante_vol and of horizon_bars

    def _tier_members(self) -> dict[str, list[str]]:
        return {t: list(assets) for t, assets in self.s.tiers}

    def _tier(self, key: str) -> str:
        return self._tier_of.get(asset_of(key), OTHER_TIER)

    # --- every bar ---------------------------------------------------------------------------------------

    @property
    def timeframe_ns(self) -> int:
        """The length of the bars returns are measured in: the finest bar seen (before any, the run's timeframe)."""
        return self._tf or self.s.timeframe_ns

    def observe(self, ts: int, closes: Mapping[str, tuple[float, str, int]]) -> list[PortfolioRecord]:
        """Take the closes at bar time `ts` (key -> (close, instrument it came from, its bar's length in ns));
        returns the regime changes it causes."""
        returns: dict[str, float | None] = {}
        for _, _, bar_tf in closes.values():
            if bar_tf > 0 and (self._tf == 0 or bar_tf < self._tf):
                self._tf = bar_tf
        tf = self.timeframe_ns
        for key in sorted(closes):
            close, source, _ = closes[key]
            if not (close > 0 and math.isfinite(close)):
                continue
            prev = self._last.get(key)
            self._last[key] = (ts, close, source)
            if prev is None or prev[2] != source or ts <= prev[0]:
                continue  # first close, or the price now comes from another instrument: no return this bar
            k = max(1, round((ts - prev[0]) / tf))
            returns[key] = math.log(close / prev[1]) / math.sqrt(k)
        if not returns:
            return []
        self.cov.update(returns)
        market = self.factors.update(self._by_asset(returns))
        change = self.regime.update(ts, market)
        return [] if change is None else [change]

    def _by_asset(self, returns: Mapping[str, float | None]) -> dict[str, float | None]:
        # the factor model speaks of assets (tiers list assets); instruments of one asset on several venues
        # (router off) average into one return
        acc: dict[str, list[float]] = {}
        names = self._asset_names
        for key, r in returns.items():
            if r is not None:
                a = names.get(key)
                if a is None:
                    a = names[key] = asset_of(key)
                acc.setdefault(a, []).append(r)
        return {a: v[0] if len(v) == 1 else sum(v) / len(v) for a, v in sorted(acc.items())}

    # --- at a rebalance ----------------------------------------------------------------------------------

    def decide(self, ts: int, live: Sequence[str], scores: Mapping[str, float], vol_bar: Mapping[str, float | None],
               vol_target: Mapping[str, float]) -> tuple[dict[str, float], list[PortfolioRecord]]:
        """Targets for the `live` keys, and the records of this decision."""
        started = self.clock() if self.clock is not None else 0
        risk = self._risk_model(live)
        decision = self._solve(ts, live, scores, vol_bar, vol_target, risk)
        elapsed = (self.clock() - started) / 1e6 if self.clock is not None else 0.0
        for i, rec in enumerate(decision.records):
            if isinstance(rec, Rebalance):
                decision.records[i] = dataclasses.replace(rec, solve_ms=elapsed)
        self._previous = {k: w for k, w in decision.weights.items() if w != 0.0}
        return decision.weights, decision.records

    def _risk_model(self, live: Sequence[str]) -> _Risk | None:
        """The risk model over the live keys with enough history, with its condition number, shrinkage and the
        assets' factor exposures."""
        est = self.cov.estimate()
        alive = set(live)
        keep = [a for a in est.assets if a in alive]
        if not keep:
            return None
        index = {a: i for i, a in enumerate(est.assets)}
        ix = [index[a] for a in keep]
        sub_counts = est.counts[np.ix_(ix, ix)]
        sub = type(est)(assets=tuple(keep), mean=est.mean[ix], cov=est.cov[np.ix_(ix, ix)], counts=sub_counts)
        sub = sub.complete(self.s.min_bars)
        if not sub.assets:
            return None
        assets = tuple(sorted(sub.assets))
        order = [sub.assets.index(a) for a in assets]
        cov = sub.cov[np.ix_(order, order)]
        intensity = self.s.shrinkage_intensity
        if isinstance(self.cov, RollingCovariance) and self.s.shrinkage != "none":
            _, rows = self.cov.window_returns(assets)
            if rows.shape[0] >= self.s.min_bars:
                shrunk = ledoit_wolf(rows) if self.s.shrinkage == "ledoit_wolf" else constant_correlation(rows)
                cov, intensity = shrunk.cov, shrunk.intensity
            else:
                shrunk = shrink(nearest_psd(cov), intensity)
                cov = shrunk.cov
        elif isinstance(self.cov, RollingCovariance):
            cov, intensity = nearest_psd(cov), 0.0
        else:
            cov = shrink(nearest_psd(cov), intensity).cov
        names = [asset_of(a) for a in assets]
        if self.s.risk_model == "factor":
            model = self.factors.risk_model(names, cov)
            model, cond = RiskModel(assets, model.loadings, model.specific), condition_number(cov)
        else:
            vals, vecs = np.linalg.eigh((cov + cov.T) / 2)  # one decomposition for the model and its condition
            model, cond = RiskModel.from_eigh(assets, vals, vecs), condition_of(vals)
        factors, exposures = self.factors.exposures(names)
        return _Risk(model, cond, intensity, factors, exposures)

    def _solve(self, ts: int, live: Sequence[str], scores: Mapping[str, float], vol_bar: Mapping[str, float | None],
               vol_target: Mapping[str, float], risk: _Risk | None) -> _Decision:
        s = self.s
        regime = self.regime.regime if s.method == "regime_tiers" else ""
        if s.method == "vol_target":
            weights = {k: vol_target.get(k, 0.0) for k in live}
            if risk is not None and s.correlation_aware:
                model = risk.model
                w = np.array([weights.get(a, 0.0) for a in model.assets])
                scaled, _ = correlation_scale(w, model)
                weights.update({a: float(x) for a, x in zip(model.assets, scaled)})
            return self._record(ts, weights, risk, regime, _closed_form(risk is not None))
        if risk is None:
            weights = {k: self._previous.get(k, 0.0) for k in live}
            sol = Solution(weights=np.zeros(0), status="no_risk_model", solver="", fallback="previous",
                           objective=None, message=f"no asset has {s.min_bars} returns in common with the others yet")
            return self._record(ts, weights, risk, regime, sol, alert=False)
        model = risk.model
        previous = np.array([self._previous.get(a, 0.0) for a in model.assets])
        if s.method == "mean_variance":
            sol = self._mean_variance(risk, scores, vol_bar, previous)
        else:
            sol = self._tier_parity(model, regime)
        w = previous if sol.fallback == "previous" or sol.weights.shape != (model.n,) else sol.weights
        weights = {k: 0.0 for k in live}
        weights.update({a: float(x) for a, x in zip(model.assets, w)})
        return self._record(ts, weights, risk, regime, sol)

    def _mean_variance(self, risk: _Risk, scores: Mapping[str, float], vol_bar: Mapping[str, float | None],
                       previous: F64) -> Solution:
        s, model, names = self.s, risk.model, risk.factors
        k = model.n if s.risk_model == "sample" else 1 + s.n_statistical
        if self._mv is None or self._mv_assets != model.assets or self._mv_k != (k, len(names)):
            lo = 0.0 if s.long_only else -s.max_weight
            from operators.portfolio.optimisers import MeanVariance

            self._mv = MeanVariance(model.n, k, len(names), gross=s.gross, net=s.net, bounds=(lo, s.max_weight))
            if self._mv_assets == model.assets:  # restored from a snapshot taken with this universe
                self._mv.set_warm_state(self._warm)
            self._mv_assets, self._mv_k = model.assets, (k, len(names))
        bounds = s.bounds
        f_lo = np.array([bounds.get(f, (-np.inf, np.inf))[0] for f in names])
        f_hi = np.array([bounds.get(f, (-np.inf, np.inf))[1] for f in names])
        mu = np.array([s.alpha_ic * scores.get(a, 0.0) * (vol_bar.get(a) or 0.0) for a in model.assets])
        # a trade's cost is paid once and its expected return earned every bar it is held: amortise it over the
        # bars to the next rebalance, so the per-bar utility compares like with like
        costs = np.array([self.costs.get(a, 0.0) + s.turnover_penalty for a in model.assets]) / s.rebalance_bars
        sol = self._mv.solve(mu=mu, model=model, exposures=risk.exposures, factor_bounds=(f_lo, f_hi),
                             previous=previous, costs=costs, risk_aversion=s.risk_aversion)
        self._warm = self._mv.warm_state()
        if sol.fallback == "previous":
            return sol
        # OSQP is accurate to about 1e-6: weights within that of a bound are put on it (no -3e-7 "shorts" on a
        # long-only book), and |w| below it is 0
        # and a gross or net exposure over its cap by the solver's tolerance is scaled back onto it
        lo = 0.0 if s.long_only else -s.max_weight
        w = np.clip(sol.weights, lo, s.max_weight)
        w[np.abs(w) < SOLVER_TOLERANCE] = 0.0
        gross, net = float(np.abs(w).sum()), float(w.sum())
        scale = min(1.0, s.gross / gross if gross > s.gross else 1.0,
                    s.net[1] / net if net > s.net[1] >= 0 else 1.0)
        return dataclasses.replace(sol, weights=w * scale)

    def _tier_parity(self, model: RiskModel, regime: str) -> Solution:
        s = self.s
        tiers: dict[str, list[str]] = {}
        for a in model.assets:
            tiers.setdefault(self._tier(a), []).append(a)
        budgets = s.budgets(regime, tiers)
        solver = self._rb.get(model.n)
        if solver is None:
            from operators.portfolio.optimisers import RiskBudget

            solver = self._rb[model.n] = RiskBudget(model.n, model.loadings.shape[1])
        from operators.portfolio.optimisers import tier_risk_parity

        sol, _ = tier_risk_parity(model, tiers, budgets, inside=s.inside_tier, solver=solver)
        if sol.fallback == "previous" or sol.weights.shape != (model.n,):
            return sol
        # fully invested weights (sum 1) scaled to the target volatility, within gross and per-asset caps
        vol = model.volatility(sol.weights)
        scale = s.gross / max(float(np.abs(sol.weights).sum()), 1e-300)
        if vol > 0:
            scale = min(scale, s.target_volatility / (vol * math.sqrt(NS_PER_YEAR / self.timeframe_ns)))
        top = float(np.abs(sol.weights).max(initial=0.0))
        if top > 0:
            scale = min(scale, s.max_weight / top)
        return dataclasses.replace(sol, weights=sol.weights * scale)

    def _record(self, ts: int, weights: dict[str, float], risk: _Risk | None, regime: str, sol: Solution, *,
                alert: bool = True) -> _Decision:
        s = self.s
        out: list[PortfolioRecord] = []
        vol, cond, intensity, n = 0.0, math.nan, math.nan, 0
        if risk is not None:
            model, cond, intensity = risk.model, risk.condition_number, risk.shrinkage
            n = model.n
            w = np.array([weights.get(a, 0.0) for a in model.assets])
            vol = model.volatility(w)
            shares = model.contributions(w)
            tiers_seen = {self._tier(a) for a in model.assets}
            parity = s.method in ("tier_risk_parity", "regime_tiers")
            budgets = s.budgets(regime, sorted(tiers_seen)) if parity else {}
            total = sum(v for t, v in budgets.items() if t in tiers_seen)
            by_tier: dict[str, list[float]] = {}
            for a, x, sh in zip(model.assets, w, shares):
                tier = self._tier(a)
                out.append(RiskShare(ts_event=ts, kind="asset", name=a, tier=tier, weight=float(x), share=float(sh),
                                     budget=math.nan))
                acc = by_tier.setdefault(tier, [0.0, 0.0])
                acc[0] += float(x)
                acc[1] += float(sh)
            for tier, (tw, tsh) in sorted(by_tier.items()):
                budget = budgets.get(tier, 0.0) / total if total > 0 and budgets else math.nan
                out.append(RiskShare(ts_event=ts, kind="tier", name=tier, tier=tier, weight=tw, share=tsh,
                                     budget=budget))
            bounds = s.bounds
            for f, e in zip(risk.factors, risk.exposures.T @ w):
                lo, hi = bounds.get(f, (-math.inf, math.inf))
                out.append(Exposure(ts_event=ts, factor=f, exposure=float(e), lower=lo, upper=hi))
            if s.risk_model == "factor":  # statistical factors: loadings after the market column, unit length
                for k in range(1, model.loadings.shape[1]):
                    col = model.loadings[:, k]
                    norm = float(np.linalg.norm(col))
                    e = float(w @ col) / norm if norm > 0 else 0.0
                    out.append(Exposure(ts_event=ts, factor=f"pc{k}", exposure=e, lower=-math.inf, upper=math.inf))
        turnover = sum(abs(weights.get(k, 0.0) - self._previous.get(k, 0.0))
                       for k in sorted(set(weights) | set(self._previous)))
        out.insert(0, Rebalance(
            ts_event=ts, method=s.method, regime=regime, assets=n, solver=sol.solver, status=sol.status,
            fallback=sol.fallback, message=sol.message, solve_ms=0.0, ex_ante_vol=vol,
            ex_ante_vol_annual=vol * math.sqrt(NS_PER_YEAR / self.timeframe_ns), horizon_bars=s.rebalance_bars,
            gross=sum(abs(x) for x in weights.values()), net=sum(weights.values()), turnover=turnover,
            condition_number=cond, shrinkage=intensity))
        if sol.fallback != "none" and alert:
            out.append(Alert(account=s.account, venue="", ts_event=ts, kind="solver_fallback",
                             message=f"{s.method}: {sol.status}, took {sol.fallback}: {sol.message}"))
        return _Decision(weights=weights, records=out)

    # --- state ---------------------------------------------------------------------------------------------

    def snapshot(self) -> PortfolioEngineSnap:
        return PortfolioEngineSnap(
            version=self.VERSION, covariance=self.cov.snapshot(), factors=self.factors.snapshot(),
            regime=self.regime.snapshot(),
            last=tuple((k, t, c, src) for k, (t, c, src) in sorted(self._last.items())),
            previous=tuple(sorted(self._previous.items())), warm=self._warm, warm_assets=self._mv_assets,
            timeframe_ns=self._tf)

    @classmethod
    def restore(cls, settings: EngineSettings, snap: PortfolioEngineSnap, costs: Mapping[str, float] | None = None,
                clock: Callable[[], int] | None = None) -> PortfolioEngine:
        check_version(snap, expected=cls.VERSION)
        core = cls(settings, costs, clock)
        if isinstance(snap.covariance, RollingCovarianceSnap):
            core.cov = RollingCovariance.restore(settings.window_bars, snap.covariance)
        else:
            core.cov = EwmaCovariance.restore(settings.halflife_bars, snap.covariance)
        core.factors = FactorModel.restore(settings.halflife_bars, snap.factors, benchmark=settings.benchmark or None,
                                           tiers=core._tier_members(), n_statistical=settings.n_statistical)
        core.regime = RegimeDetector.restore(snap.regime, **dict(settings.regime))  # type: ignore[arg-type]
        core._last = {k: (t, c, src) for k, t, c, src in snap.last}
        core._previous = dict(snap.previous)
        core._warm = snap.warm
        core._mv_assets = snap.warm_assets  # with _mv None: the next solve over these assets continues warm
        core._tf = snap.timeframe_ns
        return core


def _closed_form(with_risk: bool) -> Solution:
    return Solution(weights=np.zeros(0), status="closed_form" if with_risk else "no_risk_model", solver="",
                    fallback="none", objective=None, message="")

