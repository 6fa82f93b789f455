"""Training by replay: several model configurations learn side by side over the same history and are ranked.

A candidates file lists model configurations as ``[[models]]`` tables with the keys of ``[[ml.models]]``
(``name``, ``kind``, ``algorithm``, ``pooled``)::

    [[models]]
    name = "logit"
    kind = "classifier"

    [[models]]
    name = "forest_each"
    algorithm = "forest"
    pooled = false

Every candidate runs in *shadow* (a ``mode`` key is read and then ignored): a shadow model has no weight in
the alpha, so the trades are those of the rules alone, and each model learns only from its own predictions.
One replay with all candidates in shadow is therefore N replays with one candidate each, run at the cost of
one. `rank` orders the models of that run by their decision-time information coefficient (the rank
correlation of the score offered at each rebalance with the forward return that followed), ties by their
prequential IC, then by name; the rule factors follow, unranked, for comparison.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from headrace.config import MlModelConfig
from headrace.errors import ConfigError

FILE_KEY = "models"
# the keys of one ranked row, in the order the table shows them
COLUMNS = ("rank", "name", "mode", "kind", "algorithm", "pooled", "samples", "decision_samples", "ic",
           "prequential_ic", "hit_rate", "log_loss", "drift_events")


def _reason(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown key (known keys here: {', '.join(MlModelConfig.model_fields)})"
    if kind == "literal_error":
        return f"must be {err['ctx']['expected']}, was {err['input']!r}"
    if kind == "value_error":
        return f"{err['ctx']['error']}, was {err['input']!r}"
    if kind == "missing":
        return "is required"
    return f"{err['msg']}, was {err['input']!r}"


def parse_candidates(raw: Any, origin: str = "<candidates>") -> list[MlModelConfig]:
    """Validate a parsed candidates document into model configurations, every one in shadow.

    Errors name the entry and key (``models[1].kind``) and `origin` (the file).

    Examples
    --------
    >>> [(m.name, m.kind, m.mode) for m in parse_candidates({"models": [{"name": "a", "mode": "blended"}]})]
    [('a', 'classifier', 'shadow')]
    >>> parse_candidates({"models": [{"name": "a", "kind": "ranker"}]}, "c.toml")
    Traceback (most recent call last):
    ...
    headrace.errors.ConfigError: config key 'models[0].kind': must be 'classifier' or 'regressor', was 'ranker' \
(in c.toml)
    """
    where = f"(in {origin})"
    if not isinstance(raw, dict):
        raise ConfigError("<root>", f"must be a table {where}")
    extra = sorted(k for k in raw if k != FILE_KEY)
    if extra:
        raise ConfigError(str(extra[0]), f"unknown key (known keys here: {FILE_KEY}) {where}")
    entries = raw.get(FILE_KEY)
    if not isinstance(entries, list) or not entries:
        raise ConfigError(FILE_KEY, f"list at least one model as a [[{FILE_KEY}]] table {where}")
    out: list[MlModelConfig] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigError(f"{FILE_KEY}[{i}]", f"must be a table, was {entry!r} {where}")
        try:
            model = MlModelConfig(**entry)
        except ValidationError as e:
            err = e.errors(include_url=False)[0]
            key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
            raise ConfigError(f"{FILE_KEY}[{i}]{key}", f"{_reason(err)} {where}") from None
        if model.name in seen:
            raise ConfigError(f"{FILE_KEY}[{i}].name", f"model name {model.name!r} is listed twice "
                                                       f"({FILE_KEY}[{seen[model.name]}] and {FILE_KEY}[{i}]) {where}")
        seen[model.name] = i
        out.append(model.model_copy(update={"mode": "shadow"}))
    return out


def load_candidates(path: str | Path) -> list[MlModelConfig]:
    """Read and validate a candidates file (``[[models]]`` tables); every model comes back in shadow.

    Raises
    ------
    ConfigError
        when the file is missing or not TOML, or names the first wrong key (``models[1].kind``) and the file.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("--models", f"file {str(p)!r} does not exist") from None
    except UnicodeDecodeError as e:
        raise ConfigError("--models", f"file {str(p)!r} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ConfigError("--models", f"cannot read {str(p)!r}: {e.strerror or e}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("--models", f"file {str(p)!r} is not valid TOML: {e}") from None
    return parse_candidates(raw, str(p))


def overrides(candidates: Sequence[MlModelConfig]) -> list[str]:
    """The ``--set`` overrides that run `candidates` (and nothing else) in shadow, ML on.

    Examples
    --------
    >>> overrides([MlModelConfig(name="a", kind="regressor", pooled=False)])
    ['ml.enabled=true', 'ml.models=[{name = "a", kind = "regressor", algorithm = "linear", pooled = false, \
mode = "shadow"}]']
    """
    tables = ", ".join(
        f"{{name = {json.dumps(m.name)}, kind = {json.dumps(m.kind)}, algorithm = {json.dumps(m.algorithm)}, "
        f"pooled = {'true' if m.pooled else 'false'}, mode = \"shadow\"}}" for m in candidates)
    return ["ml.enabled=true", f"ml.models=[{tables}]"]


def _num(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def rank(rows: Sequence[dict[str, Any]], candidates: Sequence[MlModelConfig]) -> list[dict[str, Any]]:
    """Rank the candidates by the rows of `report.ml_report` of their run; the rule factors follow, unranked.

    Models: by decision-time ``ic`` (descending, None last), ties by ``prequential_ic`` (the same), then name;
    ``rank`` counts from 1. A candidate without a row (it never predicted) ranks by None. The rule factors keep
    the report's order, with ``rank``, ``algorithm`` and ``pooled`` None. Rows of models that are not
    candidates (none in a training run) are left out.

    Examples
    --------
    >>> rows = [{"name": "xs", "mode": "rules", "ic": 0.01, "samples": 9},
    ...         {"name": "a", "mode": "shadow", "kind": "regressor", "ic": 0.02, "prequential_ic": 0.1},
    ...         {"name": "b", "mode": "shadow", "kind": "classifier", "ic": 0.05, "prequential_ic": 0.0}]
    >>> cands = [MlModelConfig(name="a", kind="regressor"), MlModelConfig(name="b"), MlModelConfig(name="c")]
    >>> [(r["rank"], r["name"], r["mode"]) for r in rank(rows, cands)]
    [(1, 'b', 'shadow'), (2, 'a', 'shadow'), (3, 'c', 'shadow'), (None, 'xs', 'rules')]
    """
    by_name = {str(r["name"]): r for r in rows if r.get("mode") != "rules"}
    models = []
    for m in candidates:
        r = by_name.get(m.name, {})
        models.append({
            "rank": None, "name": m.name, "mode": "shadow", "kind": m.kind, "algorithm": m.algorithm,
            "pooled": m.pooled, "samples": int(r.get("samples") or 0),
            "decision_samples": int(r.get("decision_samples") or 0), "ic": _num(r.get("ic")),
            "prequential_ic": _num(r.get("prequential_ic")), "hit_rate": _num(r.get("hit_rate")),
            "log_loss": _num(r.get("log_loss")), "drift_events": int(r.get("drift_events") or 0),
        })

    def key(r: dict[str, Any]) -> tuple[bool, float, bool, float, str]:
        ic, pic = r["ic"], r["prequential_ic"]
        return ic is None, -(ic or 0.0), pic is None, -(pic or 0.0), r["name"]

    models.sort(key=key)
    for i, r in enumerate(models, 1):
        r["rank"] = i
    rules = [{
        "rank": None, "name": str(r["name"]), "mode": "rules", "kind": None, "algorithm": None, "pooled": None,
        "samples": int(r.get("samples") or 0), "decision_samples": int(r.get("decision_samples") or 0),
        "ic": _num(r.get("ic")), "prequential_ic": None, "hit_rate": _num(r.get("hit_rate")), "log_loss": None,
        "drift_events": 0,
    } for r in rows if r.get("mode") == "rules"]
    return models + rules
