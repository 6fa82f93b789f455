"""Learnt model state out of a run and into another: the export file and the warm-start key.

`export_models` turns a run's ``ml_models`` rows (`headrace.report.ml_models`) into one gzip-compressed
JSON document::

    {"format": "headrace-ml-models", "version": 1, "run_id": "...",
     "models": [{"model", "kind", "algorithm", "pooled", "horizon_bars", "updates": {key: n},
                 "features": [...], "state": "<base64>"}]}

`load_models` reads and checks one (`ModelFile`); `import_models` copies a checked file to
``<state_dir>/models/<stem>.json.gz``; `resolve_warm_start` turns the ``ml.warm_start`` key (a path, or the
name of an imported file) into a path.

Security: each model's `state` is the base64 of Python pickles (River pipelines), and unpickling runs
code chosen by whoever wrote the file. Load and import only files you made or trust, as you would a
Python script.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headrace.errors import ConfigError

FORMAT = "headrace-ml-models"
VERSION = 1
KEY = "ml.warm_start"
SUFFIX = ".json.gz"
MODEL_KEYS = ("model", "kind", "algorithm", "pooled", "horizon_bars", "updates", "features", "state")


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportedModel:
    """One model of an export file; `state` is base64 of pickles (see the module docstring)."""

    model: str
    kind: str
    algorithm: str
    pooled: bool
    horizon_bars: int
    updates: tuple[tuple[str, int], ...]
    features: tuple[str, ...]
    state: str

    def state_bytes(self) -> bytes:
        return base64.b64decode(self.state)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelFile:
    """A checked export file: the run it came from and its models, by name."""

    path: Path
    run_id: str
    models: tuple[ExportedModel, ...]

    def model(self, name: str) -> ExportedModel | None:
        return next((m for m in self.models if m.model == name), None)


def export_models(rows: list[dict[str, Any]], run_id: str) -> bytes:
    """Return the export file (gzip of JSON) for the `rows` of `headrace.report.ml_models`.

    Examples
    --------
    >>> row = {"model": "m", "kind": "classifier", "algorithm": "linear", "pooled": True, "horizon_bars": 4,
    ...        "updates": {"": 7}, "features": ["r1"], "state": "AA==", "ts_event": 1}
    >>> json.loads(gzip.decompress(export_models([row], "r")))["models"][0]["updates"]
    {'': 7}
    """
    doc = {"format": FORMAT, "version": VERSION, "run_id": run_id,
           "models": [{k: r[k] for k in MODEL_KEYS} for r in rows]}
    return gzip.compress(json.dumps(doc, sort_keys=True).encode(), mtime=0)


def _model(i: int, m: Any, shown: str) -> ExportedModel:
    where = f"{shown}: model {i}"
    if not isinstance(m, dict):
        raise ConfigError(KEY, f"{where} is not an object")
    missing = [k for k in MODEL_KEYS if k not in m]
    if missing:
        raise ConfigError(KEY, f"{where} lacks {', '.join(missing)}")
    updates = m["updates"]
    if not isinstance(updates, dict) or not all(isinstance(n, int) for n in updates.values()):
        raise ConfigError(KEY, f"{where} ({m['model']!r}): updates must map keys to counts")
    if not isinstance(m["features"], list) or not isinstance(m["state"], str):
        raise ConfigError(KEY, f"{where} ({m['model']!r}): features must be a list and state a string")
    try:
        base64.b64decode(m["state"], validate=True)
    except (binascii.Error, ValueError) as e:
        raise ConfigError(KEY, f"{where} ({m['model']!r}): state is not base64: {e}") from e
    return ExportedModel(model=str(m["model"]), kind=str(m["kind"]), algorithm=str(m["algorithm"]),
                         pooled=bool(m["pooled"]), horizon_bars=int(m["horizon_bars"]),
                         updates=tuple((str(k), int(n)) for k, n in updates.items()),
                         features=tuple(str(f) for f in m["features"]), state=m["state"])


def load_models(path: Path | str) -> ModelFile:
    """Read and check an export file; a `ConfigError` on ``ml.warm_start`` says what is wrong with it.

    Only the file's shape is checked: the pickled state is not loaded here (see the module docstring).
    """
    path = Path(path)
    shown = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(KEY, f"no model file {shown!r}") from None
    except IsADirectoryError:
        raise ConfigError(KEY, f"{shown!r} is a directory, not a model file") from None
    except OSError as e:
        raise ConfigError(KEY, f"cannot read {shown!r}: {e.strerror or e}") from e
    try:
        text = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error):
        raise ConfigError(KEY, f"{shown!r} is not gzip-compressed (not written by `headrace ml export`)") from None
    try:
        doc = json.loads(text)
    except (UnicodeDecodeError, ValueError) as e:
        raise ConfigError(KEY, f"{shown!r} does not hold JSON: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ConfigError(KEY, f"{shown!r} has format {found!r}, expected {FORMAT!r}")
    if doc.get("version") != VERSION:
        raise ConfigError(KEY, f"{shown!r} has version {doc.get('version')!r}, this headrace reads {VERSION}")
    models = doc.get("models")
    if not isinstance(models, list) or not models:
        raise ConfigError(KEY, f"{shown!r} holds no models")
    return ModelFile(path=path, run_id=str(doc.get("run_id", "")),
                     models=tuple(_model(i, m, shown) for i, m in enumerate(models)))


def models_dir(state_dir: Path | str) -> Path:
    return Path(state_dir) / "models"


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (SUFFIX, ".gz", ".json"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def import_models(path: Path | str, state_dir: Path | str) -> Path:
    """Check the export file at `path` and copy it to ``<state_dir>/models/<stem>.json.gz``; return the copy.

    ``ml.warm_start = "<stem>"`` then names it. An existing copy of that name is replaced.
    """
    src = Path(path)
    load_models(src)
    dest = models_dir(state_dir) / f"{_stem(src)}{SUFFIX}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.resolve() != dest.resolve():
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.write_bytes(src.read_bytes())
        tmp.replace(dest)
    return dest


def resolve_warm_start(value: str, state_dir: Path | str) -> Path | None:
    """The model file the ``ml.warm_start`` key names: None for ``""``, an existing path as is, else the
    imported file of that name under ``<state_dir>/models/``.

    Examples
    --------
    >>> resolve_warm_start("", "state") is None
    True
    """
    if not value:
        return None
    given = Path(value)
    if given.is_file():
        return given
    under = models_dir(state_dir)
    for candidate in (under / value, under / f"{value}{SUFFIX}"):
        if candidate.is_file():
            return candidate
    imported = sorted(_stem(p) for p in under.glob(f"*{SUFFIX}")) if under.is_dir() else []
    known = f"imported: {', '.join(imported)}" if imported else f"none imported into {str(under)!r}"
    raise ConfigError(KEY, f"{value!r} is neither a model file nor the name of an imported one ({known}; "
                           "`headrace ml import FILE` imports one)")
