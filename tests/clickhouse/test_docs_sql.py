"""Every ```sql example in the docs runs on a real replay in chDB (the run ids they name stand for the fixture's)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import ReplayedRun
from helpers import ROOT
from sinks.clickhouse import Store

EXAMPLES = [(page.name, i, sql.strip()) for page in sorted((ROOT / "docs").glob("*.md"))
            for i, sql in enumerate(re.findall(r"```sql\n(.*?)```", page.read_text(), flags=re.DOTALL))]


def test_the_docs_have_sql_examples() -> None:
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("page, index, sql", EXAMPLES, ids=[f"{p}#{i}" for p, i, _ in EXAMPLES])
def test_docs_sql_example_runs(page: str, index: int, sql: str, replayed_run: ReplayedRun) -> None:
    runs = list(dict.fromkeys(re.findall(r"run_id = '([^']+)'", sql)))
    assert runs, f"{page} example {index} names no run"
    # the first run named is the fixture's; a second one (a comparison) is a run that wrote nothing
    for r, stand_for in zip(runs, [replayed_run.run_id, "no-such-run"], strict=False):
        sql = sql.replace(f"run_id = '{r}'", f"run_id = '{stand_for}'")
    rows = Store.connect(replayed_run.dsn).query(sql)
    assert isinstance(rows, list)
    if "quarantine" not in sql:  # the fixture run is clean; the others read rows it wrote
        assert rows, f"{page} example {index} returned no rows"


def test_examples_are_found_in_every_page_that_has_them() -> None:
    assert {p for p, _, _ in EXAMPLES} >= {"data.md", "onboarding.md", "runbook.md"}
    assert all(Path(ROOT / "docs" / p).exists() for p, _, _ in EXAMPLES)
