"""Cores and sources run on event time only: no read of the wall clock anywhere in operators/ or sources/.

A replay must give the same rows whenever it runs; one `datetime.now()` in a core breaks that silently,
so the rule is checked on the source text (every import form), not left to chance.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("operators", "sources")

_CLOCK_MODULES = {"time", "datetime", "date", "Timestamp", "pd", "pandas", "arrow", "pendulum"}
_CLOCK_CALLS = {"time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns", "process_time",
                "process_time_ns", "localtime", "gmtime", "ctime", "asctime", "now", "utcnow", "today"}
_CLOCK_STRINGS = {"now", "today"}  # np.datetime64("now"), pl.lit("now").str.to_datetime(), ...


def _root_name(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def wall_clock_reads(source: str) -> list[int]:
    """Line numbers of every wall-clock read in `source`."""
    tree = ast.parse(source)
    aliases: set[str] = set()  # names bound to a clock function by `from time import time as t`
    modules = set(_CLOCK_MODULES)  # and names bound to a clock module by `import time as t`
    lines: list[int] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.asname for a in node.names if a.asname and a.name.split(".")[0] in _CLOCK_MODULES}
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in {"time", "datetime"}:
            for a in node.names:
                if a.name in _CLOCK_CALLS:
                    aliases.add(a.asname or a.name)
                    lines.append(node.lineno)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in _CLOCK_CALLS:
            parts = []
            inner: ast.expr = node.value
            while isinstance(inner, ast.Attribute):
                parts.append(inner.attr)
                inner = inner.value
            names = {*parts, _root_name(node.value) or ""}
            if names & modules:
                lines.append(node.lineno)
        elif isinstance(node, ast.Call):
            aliased = isinstance(node.func, ast.Name) and node.func.id in aliases
            if aliased or any(isinstance(a, ast.Constant) and a.value in _CLOCK_STRINGS for a in node.args):
                lines.append(node.lineno)
    return sorted(set(lines))


def test_no_wall_clock_read_in_operators_or_sources() -> None:
    offenders = [f"{p.relative_to(ROOT)}:{line}" for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))
                 for line in wall_clock_reads(p.read_text(encoding="utf-8"))]
    assert offenders == [], f"the wall clock is read in a core or source (use event time): {offenders}"


def test_the_check_sees_every_form_of_a_clock_read() -> None:
    src = "\n".join([
        "import time",                                   # 1: fine by itself
        "from datetime import datetime, timezone",       # 2: fine (datetime the class is not a read)
        "a = datetime.now(timezone.utc)",                # 3
        "b = time.time()",                               # 4
        "import datetime as dt",                         # 5
        "c = dt.datetime.utcnow()",                      # 6
        "from time import perf_counter as pc",           # 7
        "d = pc()",                                      # 8
        "e = np.datetime64('now')",                      # 9
        "f = time.monotonic_ns()",                       # 10
        "g = pd.Timestamp.now()",                        # 11
        "h = dt.date.today()",                           # 12
        "import time as _t",                             # 13
        "i = _t.perf_counter_ns()",                      # 14
    ])
    assert wall_clock_reads(src) == [3, 4, 6, 7, 8, 9, 10, 11, 12, 14]


def test_event_time_arithmetic_is_not_a_clock_read() -> None:
    src = ("from datetime import timedelta\n"
           "x = bar.ts_event + timedelta(minutes=1).total_seconds()\n"
           "y = self.time_ns_of(bar)\nz = ts.now_or_later\n")
    assert wall_clock_reads(src) == []
