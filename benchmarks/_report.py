"""What every benchmark prints: one ``name: value`` figure per line on stdout, progress on stderr."""

from __future__ import annotations

import sys


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def emit(name: str, value: float | int) -> None:
    text = f"{value:.0f}" if isinstance(value, float) and value >= 100 else (
        f"{value:.3g}" if isinstance(value, float) else str(value))
    print(f"{name}: {text}", flush=True)
