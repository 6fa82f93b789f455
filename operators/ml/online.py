"""Online models with delayed labels (prequential test-then-train) and their prequential metrics.

`DelayedLabelModel` runs one River model (pooled over keys) or one per key. At each bar of a key, with the
bar's feature vector ``x`` (None: invalid, no prediction) and close ``price``:

1. if ``x`` is valid, the model predicts: ``P(up)`` for a classifier, the forward log return for a regressor.
   On a learning bar (every `learn_every`-th bar of the key, counted from its first bar: bar 0,
   learn_every, 2·learn_every, ...) the vector waits with its price and prediction;
2. every waiting item of the key whose `horizon` bars have passed gets its label
   ``log(price_now / price_then)`` (the forward return over `horizon` bars of that key) and the model learns
   from it (the value for a regressor, ``label > 0`` for a classifier).

So a prediction at bar t uses only what was learnt from labels known at or before bar t, and a label is
learnt only at bar ``t + horizon``, after the prediction that it labels. With the default
``learn_every = horizon`` the labels do not overlap; at most ``ceil(horizon / learn_every)`` items wait per
key. Bars are counted per key (a missing bar is not seen: the horizon is in bars observed).

`PrequentialMetrics` scores (prediction, label) pairs as they resolve: cumulative and rolling log loss,
accuracy, MAE, hit rate, the rolling information coefficient, and River's ADWIN on the absolute error.
"""

from __future__ import annotations

import math
import pickle
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from headrace.errors import ConfigError, InvariantError
from operators.base import check_version

Kind = Literal["classifier", "regressor"]
KINDS: tuple[str, ...] = ("classifier", "regressor")
POOLED = ""  # the model key of a pooled model

_EPS = 1e-15  # log-loss clip of probabilities


@dataclass(frozen=True, slots=True)
class Prediction:
    key: str
    ts_event: int
    model: str
    version: int  # updates (learn_one calls) the predicting model had made when it predicted
    value: float  # P(up) for a classifier, the predicted forward log return for a regressor
    label: float | None = None  # the realised forward log return over the horizon, once known


@dataclass(frozen=True, slots=True)
class Pending:
    bar: int  # the key's bar count at the prediction
    x: tuple[tuple[str, float], ...]
    price: float
    prediction: Prediction


@dataclass(frozen=True, slots=True)
class Step:
    prediction: Prediction | None  # made at this bar (None: invalid vector)
    resolved: tuple[Prediction, ...]  # earlier predictions whose label became known at this bar (label set)


@dataclass(frozen=True, slots=True)
class DelayedLabelSnap:
    version: int
    models: tuple[tuple[str, bytes, int], ...]  # model key (POOLED or the instrument), pickled pipeline, updates
    bars: tuple[tuple[str, int], ...]  # bars seen per key
    pending: tuple[tuple[str, tuple[Pending, ...]], ...]
    memory: tuple[tuple[str, tuple[tuple[tuple[tuple[str, float], ...], float], ...]], ...] = ()


_IDLE = Step(None, ())


def _valid(x: Mapping[str, float] | None) -> bool:
    return x is not None and all(math.isfinite(v) for v in x.values())


class DelayedLabelModel:
    """Prequential test-then-train with delayed labels, for one model over one or many keys (instruments).

    `kind` ``"classifier"``: StandardScaler | LogisticRegression (``forest=True``: ARFClassifier);
    ``"regressor"``: StandardScaler | LinearRegression (``forest=True``: ARFRegressor). The forest's seed is
    fixed (`seed`), so two runs give the same predictions. ``pooled``: one model for all keys, else one per
    key, created on the key's first bar. A vector with a non-finite value is invalid like None.

    Examples
    --------
    >>> m = DelayedLabelModel("lin", "regressor", horizon=2)
    >>> steps = [m.observe("BTC", t, {"s": float(t % 3)}, 100.0 + t) for t in range(5)]
    >>> [s.prediction.value for s in steps[:1]], [len(s.resolved) for s in steps]
    ([0.0], [0, 0, 1, 0, 1])
    >>> r = steps[2].resolved[0]
    >>> r.ts_event, r.version, round(r.label, 6)
    (0, 0, 0.019803)
    >>> m.updates(), steps[4].resolved[0].ts_event
    (2, 2)
    """

    VERSION = 2

    def __init__(self, name: str, kind: Kind, *, horizon: int, learn_every: int | None = None,
                 pooled: bool = True, forest: bool = False, seed: int = 42, config_key: str = "ml",
                 memory: int = 0) -> None:
        if not name:
            raise ConfigError(f"{config_key}.name", "a model needs a name")
        if kind not in KINDS:
            raise ConfigError(f"{config_key}.kind", f"must be one of {KINDS}, was {kind!r}")
        if horizon < 1:
            raise ConfigError(f"{config_key}.horizon_bars", f"must be >= 1 bar, was {horizon!r}")
        if learn_every is not None and learn_every < 1:
            raise ConfigError(f"{config_key}.learn_every_bars", f"must be >= 1 bar, was {learn_every!r}")
        self.name = name
        self.kind: Kind = kind
        self.horizon = int(horizon)
        self.learn_every = int(horizon if learn_every is None else learn_every)
        self.pooled = pooled
        self.forest = forest
        self.seed = seed
        self._models: dict[str, Any] = {}
        self._updates: dict[str, int] = {}
        self._bars: dict[str, int] = {}
        self._pending: dict[str, deque[Pending]] = {}
        self.memory = int(memory)  # the last labels learnt per model, kept for `reset(relearn=True)`
        self._memory: dict[str, deque[tuple[tuple[tuple[str, float], ...], float]]] = {}

    @property
    def max_pending(self) -> int:
        """The most items that wait per key."""
        return -(-self.horizon // self.learn_every)

    def _new(self) -> Any:
        from river import forest, linear_model, preprocessing

        if self.forest:
            return (forest.ARFClassifier(seed=self.seed) if self.kind == "classifier"
                    else forest.ARFRegressor(seed=self.seed))
        head = linear_model.LogisticRegression() if self.kind == "classifier" else linear_model.LinearRegression()
        return preprocessing.StandardScaler() | head

    def _model_key(self, key: str) -> str:
        return POOLED if self.pooled else key

    def total_updates(self) -> int:
        """Labels learnt over every model of this name (one pooled model, or one per key)."""
        return sum(self._updates.values())

    def updates(self, key: str = POOLED) -> int:
        """Labels learnt by the model of `key` (pooled: the one model, whatever the key)."""
        return self._updates.get(self._model_key(key), 0)

    def _predict(self, model: Any, x: Mapping[str, float]) -> float:
        if self.kind == "classifier":
            return float(model.predict_proba_one(dict(x)).get(True, 0.5))
        return float(model.predict_one(dict(x)))

    def _model(self, key: str) -> tuple[str, Any]:
        mk = self._model_key(key)
        model = self._models.get(mk)
        if model is None:
            model = self._models[mk] = self._new()
            self._updates[mk] = 0
        return mk, model

    def observe(self, key: str, ts: int, x: Mapping[str, float] | None, price: float, *,
                predict: bool = True, bar: int | None = None, value: float | None = None) -> Step:
        """One bar of `key` at `ts` (its close `price`, > 0): predict on a valid `x`, then learn the labels due.

        ``predict=False`` predicts only on a learning bar (where the prediction waits for its label). `bar` is the
        key's bar index when the caller counts bars itself and calls only on the bars where something happens
        (learning bars and those where a label is due); by default the model counts the calls. `value` is the
        prediction on `x` when the caller already has it from this model's current state (`predict_explain`)."""
        if not (math.isfinite(price) and price > 0):
            raise InvariantError(f"price of {key} at {ts} is {price!r}: a label needs a finite price > 0")
        if bar is None:
            bar = self._bars.get(key, 0)
        self._bars[key] = bar + 1
        learning = bar % self.learn_every == 0
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = deque()
        elif not (predict or learning) and (not pending or bar - pending[0].bar < self.horizon):
            return _IDLE  # nothing to predict, nothing to learn: the common bar, kept cheap
        mk, model = self._model(key)
        prediction = None
        if (predict or learning) and x is not None and _valid(x):
            prediction = Prediction(key=key, ts_event=ts, model=self.name, version=self._updates[mk],
                                    value=self._predict(model, x) if value is None else value)
            if learning:
                pending.append(Pending(bar=bar, x=tuple((k, float(v)) for k, v in x.items()), price=price,
                                       prediction=prediction))
        resolved: list[Prediction] = []
        while pending and bar - pending[0].bar >= self.horizon:
            item = pending.popleft()
            label = math.log(price / item.price)
            self._learn(mk, model, item.x, label)
            resolved.append(replace(item.prediction, label=label))
        return Step(prediction, tuple(resolved))

    def _learn(self, mk: str, model: Any, x: tuple[tuple[str, float], ...], label: float) -> None:
        model.learn_one(dict(x), label if self.kind == "regressor" else label > 0)
        self._updates[mk] += 1
        if self.memory:
            self._memory.setdefault(mk, deque(maxlen=self.memory)).append((x, label))

    def predict(self, key: str, x: Mapping[str, float]) -> tuple[float, int]:
        """The prediction for `key` on the valid vector `x` now, and the model's version (updates learnt)."""
        mk, model = self._model(key)
        return self._predict(model, x), self._updates[mk]

    def predict_explain(self, key: str, x: Mapping[str, float]
                        ) -> tuple[float, int, tuple[float, ...], float]:
        """The prediction on `x` and its explanation, the input scaled once: value, version, terms, intercept.

        For a linear model the terms are each input's term of the decision function (in the order of `x`'s keys):
        ``intercept + sum(terms)`` is the prediction (a classifier's log-odds); a forest gives ``((), nan)``. The
        value is the pipeline's own (its head applied to the scaled input), so it equals `predict`'s."""
        mk, model = self._model(key)
        if self.forest:
            return self._predict(model, x), self._updates[mk], (), math.nan
        scaler, head = model.steps.values()
        z = scaler.transform_one(dict(x))
        value = (float(head.predict_proba_one(z).get(True, 0.5)) if self.kind == "classifier"
                 else float(head.predict_one(z)))
        w = head.weights
        return value, self._updates[mk], tuple(float(w.get(k, 0.0)) * float(z.get(k, 0.0)) for k in x), \
            float(head.intercept)

    def reset(self, *, relearn: bool) -> int:
        """Start every model afresh (a drift); ``relearn``: the new model learns the last `memory` labels again,
        in order. Versions keep counting. Returns the labels relearnt."""
        n = 0
        for mk in list(self._models):
            model = self._models[mk] = self._new()
            if relearn:
                for x, label in list(self._memory.get(mk, ())):
                    model.learn_one(dict(x), label if self.kind == "regressor" else label > 0)
                    self._updates[mk] += 1
                    n += 1
        return n

    def pipelines(self) -> dict[str, tuple[Any, int]]:
        """Per model key, the River pipeline and its updates (for export)."""
        return {k: (m, self._updates[k]) for k, m in self._models.items()}

    def load(self, pipelines: Mapping[str, tuple[Any, int]]) -> None:
        """Start from exported pipelines (a warm start): per model key, the pipeline and its updates."""
        for k, (m, n) in pipelines.items():
            self._models[k] = m
            self._updates[k] = int(n)

    def pending(self, key: str) -> tuple[Pending, ...]:
        return tuple(self._pending.get(key, ()))

    def flush(self) -> list[Prediction]:
        return []

    def snapshot(self) -> DelayedLabelSnap:
        return DelayedLabelSnap(
            version=self.VERSION,
            models=tuple((k, pickle.dumps(m, protocol=pickle.HIGHEST_PROTOCOL), self._updates[k])
                         for k, m in self._models.items()),
            bars=tuple(self._bars.items()),
            pending=tuple((k, tuple(q)) for k, q in self._pending.items()),
            memory=tuple((k, tuple(q)) for k, q in self._memory.items()))

    @classmethod
    def restore(cls, snap: DelayedLabelSnap, name: str, kind: Kind, *, horizon: int, learn_every: int | None = None,
                pooled: bool = True, forest: bool = False, seed: int = 42,
                config_key: str = "ml", memory: int = 0) -> DelayedLabelModel:
        check_version(snap, expected=cls.VERSION)
        core = cls(name, kind, horizon=horizon, learn_every=learn_every, pooled=pooled, forest=forest, seed=seed,
                   config_key=config_key, memory=memory)
        core._memory = {k: deque(q, maxlen=memory or None) for k, q in snap.memory}
        for k, blob, n in snap.models:
            core._models[k] = pickle.loads(blob)  # our own snapshot
            core._updates[k] = n
        core._bars = dict(snap.bars)
        core._pending = {k: deque(q) for k, q in snap.pending}
        return core


def rank_ic(pred: npt.ArrayLike, label: npt.ArrayLike) -> float:
    """Spearman rank correlation (average ranks for ties); NaN under two pairs or with a constant side.

    >>> rank_ic([0.1, 0.2, 0.3, 0.4], [1.0, 3.0, 2.0, 4.0])
    0.8
    """
    a, b = _ranks(np.asarray(pred, dtype=np.float64)), _ranks(np.asarray(label, dtype=np.float64))
    if a.size < 2:
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / den if den > 0 else math.nan


def _ranks(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    order = np.argsort(v, kind="mergesort")
    s = v[order]
    # average rank of each run of ties
    new = np.empty(s.size, dtype=bool)
    new[:1] = True
    np.not_equal(s[1:], s[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:]
    ends[-1:] = s.size
    avg = (starts + ends - 1) / 2.0 + 1.0
    out = np.empty(v.size)
    out[order] = np.repeat(avg, ends - starts)
    return out


@dataclass(frozen=True, slots=True)
class MetricsSnap:
    version: int
    window: tuple[tuple[float, float], ...]  # the last pairs (prediction, label)
    n: int
    sum_log_loss: float
    sum_correct: int
    sum_abs_error: float
    sum_hit: int
    sum_abs_label: float
    drift_events: int
    adwin: bytes


@dataclass(frozen=True, slots=True)
class Scores:
    samples: int  # all pairs scored
    window_samples: int
    log_loss: float  # classifier; NaN for a regressor
    accuracy: float  # classifier; NaN for a regressor
    mae: float  # regressor; NaN for a classifier
    hit_rate: float  # sign agreement of the prediction (classifier: P(up) - 0.5) and the label
    ic: float  # rolling only: Spearman correlation of predictions and labels over the window
    drift_events: int


class PrequentialMetrics:
    """Prequential scores of one model's resolved predictions (one instance per model, key or regime).

    Per pair (prediction v, realised label y, a forward log return), with ``up = y > 0``:

    - classifier (v = P(up)): log loss ``-log(p)`` with p = v if up else 1 - v (clipped to [1e-15, 1 - 1e-15]),
      accuracy ``(v > 0.5) == up``, absolute error ``|v - up|``;
    - regressor: absolute error ``|v - y|`` (MAE);
    - both: hit ``(s > 0) == up`` with the score s = v - 0.5 (classifier) or v (regressor), and the information
      coefficient: Spearman correlation of v and y over the last `window` pairs (not kept cumulatively).

    Each score is given cumulatively (`cumulative`) and over the last `window` pairs (`rolling`). ADWIN
    (River, `delta`) watches the absolute error, which its bound wants in [0, 1]: a classifier's as it is, a
    regressor's as ``e / (e + m)`` with m the mean absolute label so far (0.5 when the error equals a zero
    forecast's typical error); `update` returns True when ADWIN detects a change.

    Examples
    --------
    >>> pm = PrequentialMetrics("classifier", window=3)
    >>> [pm.update(v, y) for v, y in [(0.8, 0.01), (0.3, -0.02), (0.6, -0.01), (0.9, 0.03)]]
    [False, False, False, False]
    >>> c, r = pm.cumulative(), pm.rolling()
    >>> c.samples, c.accuracy, r.window_samples, round(r.accuracy, 4), round(r.ic, 4)
    (4, 0.75, 3, 0.6667, 1.0)
    """

    VERSION = 1

    def __init__(self, kind: Kind, *, window: int = 500, delta: float = 0.002, config_key: str = "ml",
                 detect_drift: bool = True) -> None:
        if kind not in KINDS:
            raise ConfigError(f"{config_key}.kind", f"must be one of {KINDS}, was {kind!r}")
        if window < 2:
            raise ConfigError(f"{config_key}.metrics_window", f"must be >= 2 pairs, was {window!r}")
        if not 0 < delta < 1:
            raise ConfigError(f"{config_key}.drift_delta", f"must be in (0, 1), was {delta!r}")
        from river import drift

        self.kind: Kind = kind
        self.window = int(window)
        self.delta = float(delta)
        self._win: deque[tuple[float, float]] = deque(maxlen=self.window)
        self._n = 0
        self._ll = 0.0
        self._correct = 0
        self._abs = 0.0
        self._hit = 0
        self._drifts = 0
        self._abs_label = 0.0
        adwin: Any = drift.ADWIN
        self._adwin: Any = adwin(delta=self.delta) if detect_drift else None

    def _terms(self, v: float, y: float) -> tuple[float, int, float, int]:
        up = y > 0
        if self.kind == "classifier":
            p = min(max(v if up else 1.0 - v, _EPS), 1.0 - _EPS)
            return -math.log(p), int((v > 0.5) == up), abs(v - float(up)), int((v - 0.5 > 0) == up)
        return 0.0, 0, abs(v - y), int((v > 0) == up)

    def _drift_input(self, ae: float) -> float:
        if self.kind == "classifier":
            return ae  # already in [0, 1]
        scale = self._abs_label / self._n  # mean |label| so far, this pair included
        return ae / (ae + scale) if ae + scale > 0 else 0.0

    def update(self, prediction: float, label: float) -> bool:
        """Score one resolved pair; True when ADWIN detects a change in the absolute error."""
        if not (math.isfinite(prediction) and math.isfinite(label)):
            raise InvariantError(f"prediction {prediction!r} and label {label!r} must be finite")
        ll, ok, ae, hit = self._terms(prediction, label)
        self._win.append((prediction, label))
        self._n += 1
        self._ll += ll
        self._correct += ok
        self._abs += ae
        self._hit += hit
        self._abs_label += abs(label)
        if self._adwin is None:
            return False
        self._adwin.update(self._drift_input(ae))
        fired = bool(self._adwin.drift_detected)
        self._drifts += fired
        return fired

    def _scores(self, n: int, ll: float, ok: int, ae: float, hit: int) -> Scores:
        clf = self.kind == "classifier"
        nan = math.nan
        return Scores(samples=self._n, window_samples=len(self._win),
                      log_loss=ll / n if clf and n else nan, accuracy=ok / n if clf and n else nan,
                      mae=ae / n if n and not clf else nan, hit_rate=hit / n if n else nan, ic=self.ic,
                      drift_events=self._drifts)

    def cumulative(self) -> Scores:
        """Scores over every pair so far (the IC is the window's: see `ic`)."""
        return self._scores(self._n, self._ll, self._correct, self._abs, self._hit)

    def rolling(self) -> Scores:
        """Scores over the last `window` pairs."""
        terms = [self._terms(v, y) for v, y in self._win]
        return self._scores(len(terms), math.fsum(t[0] for t in terms), sum(t[1] for t in terms),
                            math.fsum(t[2] for t in terms), sum(t[3] for t in terms))

    @property
    def ic(self) -> float:
        """Spearman correlation of predictions and labels over the window (NaN under two pairs)."""
        if len(self._win) < 2:
            return math.nan
        a = np.array(self._win)
        return rank_ic(a[:, 0], a[:, 1])

    @property
    def drift_events(self) -> int:
        return self._drifts

    def snapshot(self) -> MetricsSnap:
        return MetricsSnap(version=self.VERSION, window=tuple(self._win), n=self._n, sum_log_loss=self._ll,
                           sum_correct=self._correct, sum_abs_error=self._abs, sum_hit=self._hit,
                           sum_abs_label=self._abs_label,
                           drift_events=self._drifts,
                           adwin=b"" if self._adwin is None else pickle.dumps(self._adwin,
                                                                             protocol=pickle.HIGHEST_PROTOCOL))

    @classmethod
    def restore(cls, snap: MetricsSnap, kind: Kind, *, window: int = 500, delta: float = 0.002,
                config_key: str = "ml", detect_drift: bool = True) -> PrequentialMetrics:
        check_version(snap, expected=cls.VERSION)
        core = cls(kind, window=window, delta=delta, config_key=config_key, detect_drift=detect_drift)
        core._win.extend(snap.window)
        core._n, core._ll, core._correct = snap.n, snap.sum_log_loss, snap.sum_correct
        core._abs, core._hit, core._drifts = snap.sum_abs_error, snap.sum_hit, snap.drift_events
        core._abs_label = snap.sum_abs_label
        core._adwin = pickle.loads(snap.adwin) if snap.adwin else None  # our own snapshot
        return core
