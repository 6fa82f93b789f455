"""Only flows/, sources/ and sinks/ may import bytewax: cores and the application shell stay engine-free."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bytewax_imports(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lines = []
    for node in ast.walk(tree):
        plain = isinstance(node, ast.Import) and any(a.name.split(".")[0] == "bytewax" for a in node.names)
        from_ = isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "bytewax"
        if plain or from_:
            lines.append(node.lineno)
    return lines


def test_no_bytewax_import_in_headrace_or_operators() -> None:
    offenders = [f"{p.relative_to(ROOT)}:{line}" for pkg in ("headrace", "operators")
                 for p in sorted((ROOT / pkg).rglob("*.py")) for line in bytewax_imports(p)]
    assert offenders == [], f"bytewax imported outside flows/, sources/, sinks/: {offenders}"


def test_the_boundary_check_sees_both_import_forms(tmp_path: Path) -> None:
    f = tmp_path / "x.py"
    f.write_text("import bytewax.operators as op\nfrom bytewax.dataflow import Dataflow\nimport numpy\n")
    assert bytewax_imports(f) == [1, 2]
