"""Checked-in generated docs equal what the code generates now (diagram from the real flow, config reference)."""

from __future__ import annotations

import re

import pytest

from headrace.docgen import ROOT, rendered


@pytest.mark.parametrize("path, expected", sorted(rendered().items()), ids=lambda x: getattr(x, "name", ""))
def test_generated_doc_is_current(path, expected: str) -> None:  # type: ignore[no-untyped-def]
    assert path.exists(), f"{path} is missing: run `make docs`"
    assert path.read_text(encoding="utf-8") == expected, f"{path.relative_to(ROOT)} is stale: run `make docs`"


def test_the_diagram_names_every_stateful_step_of_the_flow() -> None:
    text = (ROOT / "docs" / "flow.mmd").read_text()
    for step in ("validate", "bars", "features", "cross_section", "account", "clickhouse", "market"):
        assert re.search(rf"headrace\.{step}\[", text), step


def test_readme_quick_start_is_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("##", 1)[0]
    assert re.findall(r"^make \w+", quick, flags=re.M) == ["make demo", "make test"]


def test_every_docs_link_in_the_readme_and_docs_resolves() -> None:
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#]+?\.md)(?:#[^)]*)?\)", page.read_text()):
            if target.startswith("http"):
                continue
            assert (page.parent / target).resolve().exists(), f"{page.name} links to missing {target}"
