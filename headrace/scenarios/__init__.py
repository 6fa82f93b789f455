"""Scenarios: named configs shipped with the package, with the data files they read and their market metadata.

A scenario is a directory ``headrace/scenarios/<name>/`` holding ``config.toml`` (an ordinary config file),
``scenario.toml`` (``description`` and ``files``, paths looked up under each ``--data`` directory), and
optionally ``markets/`` (market metadata; added to ``router.markets``).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

from headrace.errors import ConfigError

SCENARIOS = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    config: Path
    files: tuple[str, ...]  # resolved data files
    overrides: tuple[str, ...]  # --set items the scenario adds (its market metadata)


def names() -> list[str]:
    """The scenarios shipped with the package."""
    return sorted(p.name for p in SCENARIOS.iterdir() if (p / "scenario.toml").is_file())


def load(name: str, data: list[str]) -> Scenario:
    """Resolve scenario `name` against the `data` directories; a missing file or scenario is named in the error.

    >>> load("usdc-depeg-2023", ["/nonexistent"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    headrace.errors.ConfigError: config key 'scenario': usdc-depeg-2023 needs 'binanceus/BTCUSD_1m_...
    """
    root = SCENARIOS / name
    if not (root / "scenario.toml").is_file():
        raise ConfigError("scenario", f"no scenario {name!r}; shipped: {', '.join(names())}")
    meta = tomllib.loads((root / "scenario.toml").read_text(encoding="utf-8"))
    files = []
    for rel in meta["files"]:
        found = next((Path(d) / rel for d in data if (Path(d) / rel).is_file()), None)
        if found is None:
            raise ConfigError("scenario", f"{name} needs {rel!r} under --data, not found in "
                                          f"{', '.join(map(repr, data)) or 'no --data given'}")
        files.append(str(found))
    overrides = []
    if (root / "markets").is_dir():
        overrides.append(f"router.markets={json.dumps([str(root / 'markets')])}")
    return Scenario(name, str(meta.get("description", "")), root / "config.toml", tuple(files), tuple(overrides))
