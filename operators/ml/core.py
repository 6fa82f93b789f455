"""The online models inside the cross-sectional step: learn on the stream, be judged, earn a weight in the alpha.

`MlCore` sees every processed bar time's feature vectors (`observe`) and every rebalance (`decide`), in the
cross-section's deterministic order (times in order, instruments sorted), so two runs and a resumed run make
the same predictions.

Per processed time (`observe`), for each instrument with a bar now, for each model: the model predicts on a
learning bar (every ``learn_every``-th bar of the instrument) and learns the labels that became known
(`operators.ml.online.DelayedLabelModel`: prequential test-then-train); each resolved pair is scored by
`PrequentialMetrics` over all instruments (with ADWIN on the error), per volatility regime of the market
(`operators.portfolio.regime.RegimeDetector` on the equal-weighted return of the instruments) and per
instrument. A drift applies the policy (``none``: alert only; ``reset``: a fresh model; ``relearn``: a fresh
model that relearns the last labels, a shorter memory) and writes an alert.

At a rebalance (`decide`), with the rule signal's scores:

1. every model predicts for every decision key on its instrument's latest valid vector; the prediction is put
   on the rules' scale: a classifier's ``2 p - 1``, a regressor's forward return over its expected size
   ``v / (vol sqrt(h))`` clipped to [-1, 1], then (cross-sectional rules) ranked across keys onto [-1, 1];
2. each blended model's weight `w` moves (`gate`): up by `blend_step` (to `blend_max_weight`) while its
   information coefficient over the last `skill_window` resolved rebalance samples beats the rules' on the
   same samples by `blend_margin` and the difference is significant (``t >= blend_min_t``, see `gate`), after
   `blend_min_samples`; down by `blend_step` when it no longer beats them; to 0 on drift. Each change is an
   `MlWeight` row with its reason;
3. the alpha is ``(1 - Σ w) rules + Σ w model`` per key (a key a model has no prediction for keeps the rule's
   score in that model's share);
4. every model's and rule's score waits, per key, for the forward return over `horizon` bars of the key's
   instrument (`MlSkill` rows): the samples the gate and ``headrace ml report`` compare.
"""

from __future__ import annotations

import base64
import math
import pickle
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from headrace.errors import ConfigError
from headrace.events import (
    Alert,
    Bar,
    FeatureVector,
    MlDrift,
    MlMetric,
    MlModelState,
    MlOutcome,
    MlPrediction,
    MlRecord,
    MlSkill,
    MlWeight,
    split_instrument,
)
from operators.base import check_version
from operators.features.ml_features import MlFeatures, MlFeaturesSnap
from operators.ml.online import DelayedLabelModel, DelayedLabelSnap, Kind, MetricsSnap, PrequentialMetrics, rank_ic
from operators.portfolio.regime import RegimeDetector, RegimeSnap
from operators.signals.momentum import CrossSectionalMomentum, SignalModel

Mode = Literal["shadow", "blended"]
ALL = ""  # the scope "every instrument" / "every regime" of a metric
INSTRUMENT_ROWS_EVERY = 10  # per-instrument metric rows at every 10th rebalance (and at the end): each costs an IC
WARMUP = "warmup"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One configured model (``[[ml.models]]``)."""

    name: str
    kind: Kind = "classifier"
    algorithm: Literal["linear", "forest"] = "linear"
    pooled: bool = True
    mode: Mode = "shadow"


@dataclass(frozen=True, slots=True)
class MlSettings:
    """What `MlCore` needs from ``[ml]`` (and the regime keys of ``[portfolio]``)."""

    models: tuple[ModelSpec, ...]
    horizon: int
    learn_every: int = 0  # 0: the horizon
    metrics_window: int = 500
    drift_delta: float = 0.002
    drift_policy: Literal["none", "reset", "relearn"] = "relearn"
    relearn_samples: int = 200
    blend_max_weight: float = 0.5
    blend_step: float = 0.05
    blend_margin: float = 0.02
    blend_min_samples: int = 200
    blend_min_t: float = 3.0
    skill_window: int = 500
    seed: int = 42
    cross_sectional: bool = True  # the rules rank keys against each other: model scores are ranked too
    regime: tuple[tuple[str, float], ...] = ()  # RegimeDetector keyword arguments
    account: str = "main"
    features: tuple[tuple[str, Any], ...] = ()  # MlFeatures keyword arguments
    store_every: int = 0  # store every n-th feature vector of each instrument (0: none)

    def __post_init__(self) -> None:
        if self.horizon < 1:
            raise ConfigError("ml.horizon_bars", f"must be >= 1 bar, was {self.horizon}")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ConfigError("ml.models", f"model names must be unique, were {names}")
        blended = sum(m.mode == "blended" for m in self.models)
        if blended * self.blend_max_weight > 1 + 1e-12:
            raise ConfigError("ml.blend_max_weight", f"{blended} blended models x {self.blend_max_weight} exceeds 1")


@dataclass(frozen=True, slots=True)
class SkillItem:
    """Scores offered at a rebalance for one decision key, waiting for the forward return of its instrument."""

    key: str
    ts: int
    bar: int  # the instrument's bar index of the vector the scores used
    price: float
    scores: tuple[tuple[str, str, float], ...]  # (name, mode, score)


@dataclass(frozen=True, slots=True)
class MlCoreSnap:
    version: int
    models: tuple[tuple[str, DelayedLabelSnap], ...]
    features: tuple[tuple[str, MlFeaturesSnap], ...]
    due: tuple[tuple[str, int], ...]
    metrics: tuple[tuple[tuple[str, str, str], MetricsSnap], ...]
    written: tuple[tuple[tuple[str, str, str], int], ...]
    regimes: tuple[tuple[tuple[str, int], str], ...]
    regime: RegimeSnap
    skill: tuple[tuple[str, tuple[SkillItem, ...]], ...]
    windows: tuple[tuple[str, tuple[tuple[float, float, float], ...]], ...]
    weights: tuple[tuple[str, float], ...]
    drifted: tuple[tuple[str, str], ...]
    last_ts: int
    decisions: int


@dataclass(slots=True)
class _Gate:
    """A blended model's weight and the paired (model score, rule score, label) samples it is judged on."""

    weight: float = 0.0
    window: deque[tuple[float, float, float]] = field(default_factory=deque)


class MlCore:
    """Online models, their prequential evaluation, drift policy and skill-gated blend (module docstring).

    Parameters
    ----------
    settings
        Models and keys (`MlSettings`).
    rules
        The rule factors to compare with: the first is the strategy's signal (its scores come into `decide`),
        the others are scored for the report only.
    warm
        Per model name, exported pipelines to start from: model key -> (pipeline, updates).
    """

    VERSION = 1

    def __init__(self, settings: MlSettings, rules: Sequence[SignalModel], *,
                 warm: Mapping[str, Mapping[str, tuple[Any, int]]] | None = None) -> None:
        if not rules:
            raise ConfigError("strategy.name", "the ML blend needs the rule signal it blends with")
        self.settings = s = settings
        self.rules = tuple(rules)
        self.specs = {m.name: m for m in s.models}
        memory = s.relearn_samples if s.drift_policy == "relearn" else 0
        self._models = {m.name: DelayedLabelModel(m.name, m.kind, horizon=s.horizon, learn_every=s.learn_every or None,
                                                  pooled=m.pooled, forest=m.algorithm == "forest", seed=s.seed,
                                                  memory=memory)
                        for m in s.models}
        for name, pipelines in (warm or {}).items():
            if name in self._models:
                self._models[name].load(pipelines)
        self._metrics: dict[tuple[str, str, str], PrequentialMetrics] = {}
        self._written: dict[tuple[str, str, str], int] = {}
        self._features: dict[str, MlFeatures] = {}
        self._members: dict[tuple[str, str], list[str]] = {}  # (base, quote) -> its instruments (any venue)
        self._pairs = False  # some pair is quoted on two venues: compute the basis
        self._due: dict[str, int] = {}  # per instrument, the bar at which a label (model or skill) is next due
        self._regimes: dict[tuple[str, int], str] = {}  # (instrument, time) of a waiting prediction -> its regime
        self._regime = RegimeDetector(**dict(s.regime))  # type: ignore[arg-type]
        self._skill: dict[str, deque[SkillItem]] = {}
        self._gates = {m.name: _Gate(window=deque(maxlen=s.skill_window)) for m in s.models if m.mode == "blended"}
        self._drifted: dict[str, str] = {}
        self._last_ts = -1
        self._decisions = 0
        self._learn_every = s.learn_every or s.horizon

    # -- every processed time ---------------------------------------------------------------------

    def observe(self, ts: int, bars: Mapping[str, tuple[Bar, Sequence[int]]]) -> list[MlRecord]:
        """The bars closed at `ts` (with the quarantine marks that came before each): features, predictions on
        learning bars, the labels due, the scores."""
        self._last_ts = ts
        out: list[MlRecord] = []
        every, store, h = self._learn_every, self.settings.store_every, self.settings.horizon
        rets: list[float] = []
        work: list[tuple[str, Bar, MlFeatures, int]] = []
        due = self._due
        for inst in sorted(bars):  # every bar: the features' running state, cheap; the rest only where needed
            b, marks = bars[inst]
            feats = self._features.get(inst)
            if feats is None:
                feats = self._features[inst] = MlFeatures(**dict(self.settings.features))
                self._join_pair(inst)
            for m in marks:
                feats.mark_quarantined(m)
            prev = feats.last_close
            feats.advance(b)
            if prev is not None:
                rets.append(math.log(b.close / prev))
            bar = feats.count - 1
            if bar % every == 0 or (store and bar % store == 0) or due.get(inst, bar + 1) <= bar:
                work.append((inst, b, feats, bar))
        if self._pairs:
            self._basis(bars)
        self._regime.update(ts, math.fsum(rets) / len(rets) if rets else None)
        regime = self._regime.regime if self._regime.bars > self._regime.warmup_bars else WARMUP
        for inst, b, feats, bar in work:
            learning = bar % every == 0
            stored = store and bar % store == 0
            v = feats.vector() if learning or stored else None
            if stored and v is not None:
                out.append(v)
            x = v.as_dict() if learning and v is not None and v.valid else None
            if x is not None:
                self._regimes[(inst, b.ts_event)] = regime  # the regime each learning prediction was made in
            waits: list[int] = []  # bars at which this instrument's labels fall due
            resolved: set[int] = set()
            for name, model in self._models.items():
                explained = None
                if x is not None:  # predicted and explained before the model learns this bar's labels
                    explained = model.predict_explain(inst, x)
                step = model.observe(inst, b.ts_event, x, b.close, predict=False, bar=bar,
                                     value=explained[0] if explained is not None else None)
                if step.prediction is not None and explained is not None and x is not None and v is not None:
                    out.append(self._record(name, inst, v, explained, "learn", math.nan, x))
                for r in step.resolved:
                    assert r.label is not None
                    at = self._regimes.get((inst, r.ts_event), WARMUP)
                    resolved.add(r.ts_event)
                    out.append(MlOutcome(model=name, version=r.version, instrument=inst, ts_event=r.ts_event,
                                         ts_resolved=b.ts_event, value=r.value, label=r.label, regime=at))
                    if self._metric(name, ALL, ALL).update(r.value, r.label):
                        out += self._drift(ts, name)
                    self._metric(name, ALL, at).update(r.value, r.label)
                    self._metric(name, inst, ALL).update(r.value, r.label)
                pending = model.pending(inst)
                if pending:
                    waits.append(pending[0].bar + h)
            for t in resolved:
                self._regimes.pop((inst, t), None)
            out += self._resolve_skill(inst, bar, b)
            q = self._skill.get(inst)
            if q:
                waits.append(q[0].bar + h)
            due[inst] = min(waits) if waits else bar + 1 + h
        return out

    def _join_pair(self, inst: str) -> None:
        """Group instruments quoting the same pair on different venues (the cross-venue basis)."""
        _, _, base, quote = split_instrument(inst)
        members = self._members.setdefault((base, quote), [])
        members.append(inst)
        if len({split_instrument(i)[0] for i in members}) > 1:
            self._pairs = True

    def _basis(self, bars: Mapping[str, tuple[Bar, Sequence[int]]]) -> None:
        """Each instrument's ln close against the mean ln close of its pair on the other venues, those whose last
        bar closed within one bar length of this one."""
        for inst in sorted(bars):
            b = bars[inst][0]
            _, _, base, quote = split_instrument(inst)
            others = []
            for j in self._members[(base, quote)]:
                f = self._features[j]
                last, close = f.last_ts, f.last_close
                if j != inst and last is not None and close and b.ts_event - last <= b.ts_event - b.ts_open:
                    others.append(math.log(close))
            self._features[inst].set_basis(math.log(b.close) - math.fsum(others) / len(others) if others else None)

    def _metric(self, name: str, inst: str, regime: str) -> PrequentialMetrics:
        scope = (name, inst, regime)
        m = self._metrics.get(scope)
        if m is None:
            s = self.settings
            m = self._metrics[scope] = PrequentialMetrics(self.specs[name].kind, window=s.metrics_window,
                                                          delta=s.drift_delta,
                                                          detect_drift=inst == ALL and regime == ALL)
        return m

    def _drift(self, ts: int, name: str) -> list[MlRecord]:
        model = self._models[name]
        policy = self.settings.drift_policy
        version = model.total_updates()
        relearned = 0
        if policy != "none":
            relearned = model.reset(relearn=policy == "relearn")
        m = self._metric(name, ALL, ALL)
        detail = (f"ADWIN (delta {self.settings.drift_delta}) saw the error change after {m.cumulative().samples} "
                  f"labels (rolling hit rate {m.rolling().hit_rate:.3f})")
        action = {"none": "no action (drift_policy none)", "reset": "model reset",
                  "relearn": f"model reset, {relearned} recent labels relearnt"}[policy]
        if name in self._gates:
            self._drifted[name] = detail
        return [MlDrift(model=name, ts_event=ts, policy=policy, version=version, relearned=relearned, detail=detail),
                Alert(account=self.settings.account, venue="", ts_event=ts, kind="model_drift",
                      message=f"{name}: {detail}; {action}")]

    def _resolve_skill(self, inst: str, bar: int, b: Bar) -> list[MlRecord]:
        q = self._skill.get(inst)
        out: list[MlRecord] = []
        while q and bar - q[0].bar >= self.settings.horizon:
            item = q.popleft()
            label = math.log(b.close / item.price)
            scores = {n: sc for n, _, sc in item.scores}
            rule = scores.get(self.rules[0].name)
            for name, mode, score in item.scores:
                out.append(MlSkill(name=name, mode=mode, instrument=item.key, ts_event=item.ts,
                                   ts_resolved=b.ts_event, score=score, label=label))
                gate = self._gates.get(name)
                if gate is not None and rule is not None:
                    gate.window.append((score, rule, label))
        return out

    # -- rebalances --------------------------------------------------------------------------------

    def decide(self, ts: int, keys: Mapping[str, str], rule_scores: Mapping[str, float],
               momentum: Mapping[str, float], volatility: Mapping[str, float | None]
               ) -> tuple[dict[str, float], list[MlRecord]]:
        """The blended alpha per decision key at a rebalance, and the records.

        `keys` maps each live decision key to the instrument whose vectors it uses; `rule_scores` are the
        strategy signal's scores (the first rule); `momentum` and `volatility` (per bar) what the rules read.
        """
        self._last_ts = ts
        out: list[MlRecord] = []
        for name in sorted(self._gates):
            out += self.gate(ts, name)
        vectors = {}
        for key in sorted(keys):
            feats = self._features.get(keys[key])
            if feats is not None:
                v = feats.vector()
                if v.valid:
                    vectors[key] = (v, v.as_dict())
        model_scores: dict[str, dict[str, float]] = {}
        for name, model in self._models.items():
            preds = {key: model.predict_explain(keys[key], x) for key, (_, x) in vectors.items()}
            scores = self._scale(name, {k: p[0] for k, p in preds.items()}, volatility)
            model_scores[name] = scores
            for key, explained in preds.items():
                v, x = vectors[key]
                out.append(self._record(name, keys[key], v, explained, "decide", scores[key], x, ts=ts))
        vol = {k: v for k, v in volatility.items() if v is not None}
        rules = {self.rules[0].name: dict(rule_scores)}
        for r in self.rules[1:]:
            rules[r.name] = r.scores({k: m for k, m in momentum.items() if k in keys}, vol)
        self._offer(ts, keys, rules, model_scores)
        alpha: dict[str, float] = {}
        base = dict(rule_scores)
        total = sum(g.weight for g in self._gates.values())
        for key in sorted(base):
            a = (1.0 - total) * base[key]
            for name, g in sorted(self._gates.items()):
                a += g.weight * model_scores.get(name, {}).get(key, base[key])
            alpha[key] = a
        self._decisions += 1
        out += self._metric_rows(ts, instruments=self._decisions % INSTRUMENT_ROWS_EVERY == 0)
        return alpha, out

    def _scale(self, name: str, values: Mapping[str, float], volatility: Mapping[str, float | None]
               ) -> dict[str, float]:
        """Predictions on the rules' scale in [-1, 1] (module docstring, step 1)."""
        spec = self.specs[name]
        h = math.sqrt(self.settings.horizon)
        raw: dict[str, float] = {}
        for k, v in values.items():
            if spec.kind == "classifier":
                raw[k] = max(-1.0, min(1.0, 2.0 * v - 1.0))
            else:
                vol = volatility.get(k)
                raw[k] = max(-1.0, min(1.0, v / (vol * h))) if vol and vol > 0 else 0.0
        if not self.settings.cross_sectional or not raw:
            return raw
        return CrossSectionalMomentum().scores(raw)  # the rule's own rank onto [-1, 1], ties by key

    def _offer(self, ts: int, keys: Mapping[str, str], rules: Mapping[str, Mapping[str, float]],
               models: Mapping[str, Mapping[str, float]]) -> None:
        """Queue each key's scores for their forward return (one sample per key and vector)."""
        for key in sorted(keys):
            inst = keys[key]
            feats = self._features.get(inst)
            if feats is None or feats.last_close is None:
                continue
            close, bar = feats.last_close, feats.count - 1
            q = self._skill.setdefault(inst, deque())
            if q and q[-1].bar == bar:
                continue  # no new bar since the last rebalance: the same sample
            scores = [(n, "rules", float(sc[key])) for n, sc in rules.items() if key in sc]
            scores += [(n, self.specs[n].mode, float(sc[key])) for n, sc in models.items() if key in sc]
            if scores:
                q.append(SkillItem(key=key, ts=ts, bar=bar, price=close, scores=tuple(scores)))
                self._due[inst] = min(self._due.get(inst, bar + self.settings.horizon), bar + self.settings.horizon)

    def gate(self, ts: int, name: str) -> list[MlRecord]:
        """Move blended model `name`'s weight on its paired samples (module docstring, step 2).

        With n pairs, ICs ``ic_m`` (model) and ``ic_r`` (rules) and ``ρ`` the rank correlation of the two
        scores, the advantage ``d = ic_m - ic_r`` has ``t = d √n / √(2 (1 - ρ))`` (the large-sample variance of
        the difference of two correlations with a shared variable, under no skill). Up when
        ``n >= blend_min_samples``, ``d >= blend_margin`` and ``t >= blend_min_t``; down when ``d < 0``.
        """
        s = self.settings
        g = self._gates[name]
        before = g.weight
        if name in self._drifted:
            detail = self._drifted.pop(name)
            g.window.clear()
            if before > 0:
                g.weight = 0.0
                return [MlWeight(model=name, ts_event=ts, previous=before, weight=0.0, reason=f"drift: {detail}",
                                 model_ic=math.nan, rules_ic=math.nan, samples=0)]
            return []
        n = len(g.window)
        if n < max(s.blend_min_samples, 3):
            return []
        m, r, y = zip(*g.window)
        ic_m, ic_r, rho = _nz(rank_ic(m, y)), _nz(rank_ic(r, y)), _nz(rank_ic(m, r))
        d = ic_m - ic_r
        t = d * math.sqrt(n) / math.sqrt(max(2.0 * (1.0 - rho), 1e-12))
        after = before
        if d >= s.blend_margin and t >= s.blend_min_t:
            after = min(s.blend_max_weight, before + s.blend_step)
            reason = (f"skill: ic {ic_m:.4f} beats rules {ic_r:.4f} by {d:.4f} >= margin {s.blend_margin} "
                      f"(t {t:.2f} >= {s.blend_min_t}) over {n} samples")
        elif d < 0:
            after = max(0.0, before - s.blend_step)
            reason = f"decay: ic {ic_m:.4f} below rules {ic_r:.4f} over {n} samples"
        after = round(after, 12)
        if after == before:
            return []
        g.weight = after
        return [MlWeight(model=name, ts_event=ts, previous=before, weight=after, reason=reason, model_ic=ic_m,
                         rules_ic=ic_r, samples=n)]

    def weight(self, name: str) -> float:
        return self._gates[name].weight if name in self._gates else 0.0

    def _metric_rows(self, ts: int, *, instruments: bool = True) -> list[MlRecord]:
        """Rows of the scopes scored since their last row; per-instrument scopes only when `instruments`."""
        out: list[MlRecord] = []
        for scope in sorted(self._metrics):
            if scope[1] != ALL and not instruments:
                continue
            m = self._metrics[scope]
            c = m.cumulative()
            if self._written.get(scope) == c.samples:
                continue
            self._written[scope] = c.samples
            out.append(MlMetric(model=scope[0], ts_event=ts, instrument=scope[1], regime=scope[2], samples=c.samples,
                                window_samples=c.window_samples, log_loss=c.log_loss, accuracy=c.accuracy, mae=c.mae,
                                hit_rate=c.hit_rate, ic=c.ic, drift_events=c.drift_events))
        return out

    def _record(self, name: str, inst: str, v: FeatureVector, explained: tuple[float, int, tuple[float, ...], float],
                purpose: Literal["learn", "decide"], score: float, x: Mapping[str, float], *,
                ts: int | None = None) -> MlPrediction:
        """The prediction row: `explained` is the model's `predict_explain` on `x` (value, version, terms,
        intercept)."""
        value, version, contributions, intercept = explained
        return MlPrediction(model=name, version=version, instrument=inst,
                            ts_event=v.ts_event if ts is None else ts, purpose=purpose, value=value, score=score,
                            feature_ts=v.ts_event, names=tuple(x), inputs=tuple(x.values()),
                            contributions=contributions, intercept=intercept)

    # -- end of run, state ---------------------------------------------------------------------------

    def flush(self) -> list[MlRecord]:
        """At the end of input: the last metrics and every model's learnt state (for ``headrace ml export``)."""
        if self._last_ts < 0:
            return []
        out = self._metric_rows(self._last_ts)
        for name, model in self._models.items():
            spec = self.specs[name]
            pipes = model.pipelines()
            features = sorted({n for f in self._features.values() for n, _ in f.vector().values})
            blob = pickle.dumps({k: p for k, (p, _) in pipes.items()}, protocol=pickle.HIGHEST_PROTOCOL)
            out.append(MlModelState(model=name, ts_event=self._last_ts, kind=spec.kind, algorithm=spec.algorithm,
                                    pooled=spec.pooled, horizon_bars=self.settings.horizon,
                                    updates=tuple(sorted((k, n) for k, (_, n) in pipes.items())),
                                    features=tuple(features), state=base64.b64encode(blob).decode("ascii")))
        return out

    def snapshot(self) -> MlCoreSnap:
        return MlCoreSnap(
            version=self.VERSION,
            models=tuple((n, m.snapshot()) for n, m in self._models.items()),
            features=tuple((k, f.snapshot()) for k, f in sorted(self._features.items())),
            due=tuple(sorted(self._due.items())),
            metrics=tuple((k, m.snapshot()) for k, m in sorted(self._metrics.items())),
            written=tuple(sorted(self._written.items())),
            regimes=tuple(sorted(self._regimes.items())),
            regime=self._regime.snapshot(),
            skill=tuple((k, tuple(q)) for k, q in sorted(self._skill.items())),
            windows=tuple((k, tuple(g.window)) for k, g in sorted(self._gates.items())),
            weights=tuple((k, g.weight) for k, g in sorted(self._gates.items())),
            drifted=tuple(sorted(self._drifted.items())),
            last_ts=self._last_ts, decisions=self._decisions)

    @classmethod
    def restore(cls, settings: MlSettings, rules: Sequence[SignalModel], snap: MlCoreSnap) -> MlCore:
        check_version(snap, expected=cls.VERSION)
        core = cls(settings, rules)
        s = settings
        memory = s.relearn_samples if s.drift_policy == "relearn" else 0
        for name, ms in snap.models:
            spec = core.specs[name]
            core._models[name] = DelayedLabelModel.restore(
                ms, name, spec.kind, horizon=s.horizon, learn_every=s.learn_every or None, pooled=spec.pooled,
                forest=spec.algorithm == "forest", seed=s.seed, memory=memory)
        for (name, inst, regime), mets in snap.metrics:
            core._metrics[(name, inst, regime)] = PrequentialMetrics.restore(
                mets, core.specs[name].kind, window=s.metrics_window, delta=s.drift_delta,
                detect_drift=inst == ALL and regime == ALL)
        core._written = dict(snap.written)
        core._features = {k: MlFeatures.restore(f, **dict(s.features)) for k, f in snap.features}
        for k in core._features:
            core._join_pair(k)
        core._due = dict(snap.due)
        core._regimes = dict(snap.regimes)
        core._regime = RegimeDetector.restore(snap.regime, **dict(s.regime))  # type: ignore[arg-type]
        core._skill = {k: deque(q) for k, q in snap.skill}
        weights = dict(snap.weights)
        for k, w in snap.windows:
            core._gates[k] = _Gate(weight=weights[k], window=deque(w, maxlen=s.skill_window))
        core._drifted = dict(snap.drifted)
        core._last_ts, core._decisions = snap.last_ts, snap.decisions
        return core


def _nz(x: float) -> float:
    """A correlation that cannot be computed (constant scores) counts as none."""
    return x if math.isfinite(x) else 0.0
