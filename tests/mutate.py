"""A small mutation runner: plant one plausible bug at a time in operators/, sources/ and sinks/ and see
whether the fast tests of that package notice (`make mutate`; not part of CI).

Each mutant changes one token or one statement of one file, in a temporary copy of the repository (the
working tree is never touched), and runs that package's unit tests with ``-x -q`` under a time limit. A
mutant is *killed* when the tests fail (or time out), *survived* when they pass: a surviving mutant is a
bug the tests would let through, or an equivalent change that cannot be observed.

Mutation operators:

- ``cmp``: flip a comparison operator (``<`` to ``<=``, ``>`` to ``>=``, ``==`` to ``!=`` and back);
- ``arith``: ``+`` to ``-`` and ``-`` to ``+`` (binary operators only);
- ``side``: swap the strings ``"buy"`` and ``"sell"``;
- ``int``: an integer constant off by one (``n + 1``, and ``n - 1`` when n > 0);
- ``float``: a float constant replaced by ``0.0``;
- ``drop``: a ``raise`` or ``continue`` statement replaced by ``pass``.

Usage::

    python tests/mutate.py --max-mutants 60 --seed 1 [--timeout 120] [--package operators] [--list]
"""

from __future__ import annotations

import argparse
import ast
import io
import os
import random
import shutil
import subprocess
import sys
import tempfile
import tokenize
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("operators", "sources", "sinks")
# the fast tests of each package: its unit tests and the doctests in its modules
TESTS = {
    "operators": ("tests/unit/operators", "tests/test_no_wall_clock.py", "operators"),
    "sources": ("tests/unit/sources", "tests/test_no_wall_clock.py", "sources"),
    "sinks": ("tests/clickhouse/test_store.py", "sinks"),
}
_CMP = {"<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "!=", "!=": "=="}
_ARITH = {"+": "-", "-": "+", "+=": "-=", "-=": "+="}
_SIDE = {'"buy"': '"sell"', '"sell"': '"buy"', "'buy'": "'sell'", "'sell'": "'buy'"}
_IGNORE = shutil.ignore_patterns(".venv", ".git", "state", "__pycache__", ".pytest_cache", ".mypy_cache",
                                 ".ruff_cache", "*.egg-info")


@dataclass(frozen=True)
class Mutant:
    path: str  # relative to the repository
    line: int
    op: str
    before: str
    after: str
    source: str  # the whole mutated file

    def describe(self) -> str:
        return f"{self.path}:{self.line} {self.op}: {self.before.strip()!r} -> {self.after.strip()!r}"


def _offsets(text: str) -> list[int]:
    starts, pos = [0], 0
    for line in text.splitlines(keepends=True):
        pos += len(line)
        starts.append(pos)
    return starts


def _binary_operators(tree: ast.AST, text: str, starts: list[int]) -> list[tuple[int, int]]:
    # (line, col) of every binary + and - (unary minus is left alone): the operator sits between the operands
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub):
            left_end = starts[(node.left.end_lineno or 1) - 1] + (node.left.end_col_offset or 0)
            right_start = starts[node.right.lineno - 1] + node.right.col_offset
            gap = text[left_end:right_start]
            i = gap.find("+" if isinstance(node.op, ast.Add) else "-")
            if i >= 0:
                pos = left_end + i
                line = next(n for n in range(len(starts) - 1, -1, -1) if starts[n] <= pos)
                out.append((line + 1, pos - starts[line]))
    return out


def _docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                lines.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return lines


def mutants_of(path: Path) -> list[Mutant]:
    """Every mutant of one file, in file order."""
    text = path.read_text(encoding="utf-8")
    rel = str(path.relative_to(ROOT))
    tree = ast.parse(text)
    starts = _offsets(text)
    skip_lines = _docstring_lines(tree)
    out: list[Mutant] = []

    def swap(line: int, col: int, old: str, new: str, op: str) -> None:
        a = starts[line - 1] + col
        mutated = text[:a] + new + text[a + len(old):]
        try:
            ast.parse(mutated)
        except SyntaxError:
            return
        out.append(Mutant(rel, line, op, text.splitlines()[line - 1], mutated.splitlines()[line - 1], mutated))

    binary = {(line, col) for line, col in _binary_operators(tree, text, starts)}
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        (line, col), s = tok.start, tok.string
        if line in skip_lines:
            continue
        if tok.type == tokenize.OP and s in _CMP:
            swap(line, col, s, _CMP[s], "cmp")
        elif tok.type == tokenize.OP and s in _ARITH and (len(s) == 2 or (line, col) in binary):
            swap(line, col, s, _ARITH[s], "arith")
        elif tok.type == tokenize.STRING and s in _SIDE:
            swap(line, col, s, _SIDE[s], "side")
        elif tok.type == tokenize.NUMBER:
            try:
                value = ast.literal_eval(s)
            except ValueError:
                value = None
            if isinstance(value, bool) or value is None:
                pass
            elif isinstance(value, int):
                swap(line, col, s, str(value + 1), "int")
                if value > 0:
                    swap(line, col, s, str(value - 1), "int")
            elif isinstance(value, float) and value != 0.0:
                swap(line, col, s, "0.0", "float")
    lines = text.splitlines(keepends=True)
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise | ast.Continue):
            first, last = node.lineno, node.end_lineno or node.lineno
            head = lines[first - 1]
            if head[:node.col_offset].strip():
                continue  # shares its line with other code (`if x: raise ...`)
            indent = head[:node.col_offset]
            new = [indent + "pass\n"] + ["\n"] * (last - first)
            mutated = "".join(lines[:first - 1] + new + lines[last:])
            try:
                ast.parse(mutated)
            except SyntaxError:
                continue
            out.append(Mutant(rel, first, "drop", head, indent + "pass", mutated))
    return sorted(out, key=lambda m: (m.line, m.op, m.after))


def all_mutants(packages: tuple[str, ...]) -> list[Mutant]:
    out: list[Mutant] = []
    for pkg in packages:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if path.name != "__init__.py":
                out += mutants_of(path)
    return out


def run_tests(copy: Path, package: str, timeout: float) -> str:
    """Run `package`'s fast tests in `copy`: 'passed', 'failed' or 'timeout'."""
    env = dict(os.environ, PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *TESTS[package]]
    try:
        res = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout"
    return "passed" if res.returncode == 0 else "failed"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--max-mutants", type=int, default=60, help="run a sample of this many mutants (0: all)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the sample")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per mutant before it counts as killed")
    ap.add_argument("--package", action="append", choices=PACKAGES, help="only these packages (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the sampled mutants and stop")
    args = ap.parse_args(argv)
    packages = tuple(args.package or PACKAGES)
    every = all_mutants(packages)
    sample = every
    if args.max_mutants and len(every) > args.max_mutants:
        sample = sorted(random.Random(args.seed).sample(every, args.max_mutants), key=lambda m: (m.path, m.line))
    print(f"{len(every)} mutants in {', '.join(packages)}; running {len(sample)} (seed {args.seed})", flush=True)
    if args.list:
        for m in sample:
            print(m.describe())
        return 0
    with tempfile.TemporaryDirectory(prefix="headrace-mutate-") as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(ROOT, copy, ignore=_IGNORE)
        broken = {p for p in {m.path.split("/")[0] for m in sample} if run_tests(copy, p, args.timeout) != "passed"}
        for p in sorted(broken):
            print(f"skipping {p}: its tests fail without any mutation ({' '.join(TESTS[p])})", flush=True)
        results: dict[str, list[tuple[Mutant, str]]] = defaultdict(list)
        for i, m in enumerate(sample, 1):
            pkg = m.path.split("/")[0]
            if pkg in broken:
                continue
            target = copy / m.path
            original = target.read_text(encoding="utf-8")
            target.write_text(m.source, encoding="utf-8")
            try:
                outcome = run_tests(copy, pkg, args.timeout)
            finally:
                target.write_text(original, encoding="utf-8")
            verdict = {"failed": "killed", "timeout": "killed (timeout)", "passed": "SURVIVED"}[outcome]
            results[m.path].append((m, verdict))
            print(f"[{i}/{len(sample)}] {verdict:16} {m.describe()}", flush=True)
    print("\nper file: killed / run")
    killed = total = 0
    for path in sorted(results):
        k = sum(v != "SURVIVED" for _, v in results[path])
        killed, total = killed + k, total + len(results[path])
        print(f"  {path:48} {k:3d} / {len(results[path]):3d}")
    survivors = [m for rs in results.values() for m, v in rs if v == "SURVIVED"]
    if survivors:
        print("\nsurvived:")
        for m in survivors:
            print(f"  {m.describe()}")
    rate = killed / total if total else float("nan")
    print(f"\nkill rate: {killed} / {total} = {rate:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
