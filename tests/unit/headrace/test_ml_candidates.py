"""The pure part of `headrace ml train`: reading and validating the candidates file, the overrides that run them,
and the ranking of a run's ML report rows."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headrace.config import MlModelConfig, load_config
from headrace.errors import ConfigError
from headrace.ml_train import load_candidates, overrides, rank


def _file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "candidates.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_load_reads_every_field_and_forces_shadow(tmp_path: Path) -> None:
    p = _file(tmp_path, '[[models]]\nname = "a"\n\n[[models]]\nname = "b"\nkind = "regressor"\nalgorithm = "forest"\n'
                        'pooled = false\nmode = "blended"\n')
    a, b = load_candidates(p)
    assert (a.name, a.kind, a.algorithm, a.pooled, a.mode) == ("a", "classifier", "linear", True, "shadow")
    assert (b.name, b.kind, b.algorithm, b.pooled, b.mode) == ("b", "regressor", "forest", False, "shadow")


@pytest.mark.parametrize(("text", "key", "words"), [
    ('[[models]]\nname = "a"\n[[models]]\nname = "b"\nkind = "ranker"\n', "models[1].kind", "'classifier'"),
    ('[[models]]\nname = "a"\nalgorithm = "svm"\n', "models[0].algorithm", "'forest'"),
    ('[[models]]\nname = "a"\npooled = "yes"\n', "models[0].pooled", "'yes'"),
    ('[[models]]\nname = "A b"\n', "models[0].name", "lower-case"),
    ('[[models]]\nkind = "regressor"\n', "models[0].name", "required"),
    ('[[models]]\nname = "a"\nlearning_rate = 0.1\n', "models[0].learning_rate", "unknown key"),
    ('[[models]]\nname = "a"\n[[models]]\nname = "a"\n', "models[1].name", "listed twice"),
    ('[[model]]\nname = "a"\n', "model", "known keys here: models"),
    ("models = []\n", "models", "at least one"),
    ('models = ["a"]\n', "models[0]", "must be a table"),
])
def test_load_names_the_wrong_key_and_the_file(tmp_path: Path, text: str, key: str, words: str) -> None:
    p = _file(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_candidates(p)
    assert e.value.key == key
    assert words in e.value.reason and str(p) in e.value.reason


def test_load_names_a_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as e:
        load_candidates(tmp_path / "nope.toml")
    assert e.value.key == "--models" and "nope.toml" in str(e.value)
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_candidates(_file(tmp_path, "[[models]\n"))
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_candidates(tmp_path / "bin.toml")


def test_overrides_give_a_config_with_exactly_the_candidates_in_shadow() -> None:
    cands = [MlModelConfig(name="a"), MlModelConfig(name="b_2", kind="regressor", algorithm="forest", pooled=False)]
    config = load_config(None, ["ml.enabled=false", *overrides(cands)])
    assert config.ml.enabled
    assert config.ml.models == [m.model_copy(update={"mode": "shadow"}) for m in cands]


def _row(name: str, ic: float | None, pic: float | None, mode: str = "shadow") -> dict[str, Any]:
    return {"name": name, "mode": mode, "kind": "classifier", "samples": 10, "decision_samples": 8, "ic": ic,
            "prequential_ic": pic, "hit_rate": 0.5, "log_loss": 0.69, "drift_events": 0}


def test_rank_orders_by_ic_then_prequential_ic_then_name_and_lists_rules_after() -> None:
    rows = [_row("xs_momentum", 0.3, None, "rules"), _row("ts_momentum", None, None, "rules"),
            _row("d", None, 0.9), _row("c", 0.1, 0.2), _row("b", 0.1, 0.5), _row("a", 0.1, 0.5), _row("e", 0.2, None),
            _row("f", math.nan, None)]
    cands = [MlModelConfig(name=n) for n in ("a", "b", "c", "d", "e", "f", "g")]
    out = rank(rows, cands)
    assert [(r["rank"], r["name"]) for r in out] == [
        (1, "e"), (2, "a"), (3, "b"), (4, "c"), (5, "d"), (6, "f"), (7, "g"), (None, "xs_momentum"),
        (None, "ts_momentum")]
    g = out[6]
    assert (g["samples"], g["ic"], g["mode"]) == (0, None, "shadow")  # a candidate that never predicted
    assert out[5]["ic"] is None  # NaN is None
    assert all(r["mode"] == "rules" and r["algorithm"] is None and r["pooled"] is None for r in out[7:])


def test_rank_leaves_out_models_that_are_not_candidates() -> None:
    out = rank([_row("a", 0.1, 0.1), _row("other", 0.9, 0.9)], [MlModelConfig(name="a")])
    assert [r["name"] for r in out] == ["a"]


@given(st.lists(st.tuples(st.one_of(st.none(), st.floats(-1, 1)), st.one_of(st.none(), st.floats(-1, 1))),
                min_size=1, max_size=8))
def test_rank_is_a_permutation_with_ic_descending_and_none_last(
        scores: list[tuple[float | None, float | None]]) -> None:
    names = [f"m{i}" for i in range(len(scores))]
    rows = [_row(n, ic, p) for n, (ic, p) in zip(names, scores, strict=True)]
    out = rank(rows, [MlModelConfig(name=n) for n in names])
    assert sorted(r["name"] for r in out) == names
    assert [r["rank"] for r in out] == list(range(1, len(names) + 1))
    ics = [r["ic"] for r in out]
    known = [x for x in ics if x is not None]
    assert ics[:len(known)] == known and known == sorted(known, reverse=True)
