"""The [ml] section: defaults, the list of [[ml.models]] tables through every layer, errors naming the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from headrace.config import (
    MlConfig,
    MlModelConfig,
    default_config_text,
    describe_entries,
    describe_keys,
    load_config,
    reference_markdown,
)
from headrace.errors import ConfigError


def test_the_defaults_are_one_shadow_regressor_and_one_blended_classifier() -> None:
    ml = load_config().ml
    assert ml == MlConfig() and ml.enabled
    assert [(m.name, m.kind, m.algorithm, m.pooled, m.mode) for m in ml.models] == [
        ("linear_shadow", "regressor", "linear", True, "shadow"),
        ("logistic_blended", "classifier", "linear", True, "blended"),
    ]
    assert (ml.horizon_bars, ml.learn_every_bars, ml.feature_horizons, ml.drift_policy) == (0, 0, [1, 12, 48],
                                                                                         "relearn")
    assert ml.blend_max_weight * sum(m.mode == "blended" for m in ml.models) <= 1


def test_the_shipped_default_toml_lists_every_ml_key_and_both_models() -> None:
    shipped = tomllib.loads(default_config_text())["ml"]
    assert set(shipped) == set(MlConfig.model_fields)
    assert [set(m) for m in shipped["models"]] == [set(MlModelConfig.model_fields)] * 2
    assert MlConfig(**shipped) == MlConfig()


def test_a_models_omitted_keys_take_their_defaults() -> None:
    m = MlModelConfig(name="m")
    assert (m.kind, m.algorithm, m.pooled, m.mode) == ("classifier", "linear", True, "shadow")


def test_set_replaces_the_list_of_models_with_an_inline_array_of_tables() -> None:
    c = load_config(None, ['ml.models=[{name="a", kind="regressor"}, {name = "b", algorithm = "forest", '
                           'pooled = false, mode = "blended"}]', "ml.enabled=false", "ml.feature_horizons=[3]"])
    assert c.ml.models == [MlModelConfig(name="a", kind="regressor"),
                           MlModelConfig(name="b", algorithm="forest", pooled=False, mode="blended")]
    assert not c.ml.enabled and c.ml.feature_horizons == [3]
    assert c.to_dict()["ml"]["models"][1] == {"name": "b", "kind": "classifier", "algorithm": "forest",
                                              "pooled": False, "mode": "blended"}


def test_environment_variables_set_ml_keys_and_the_list_of_models() -> None:
    c = load_config(None, None, environ={"HEADRACE_ML__ENABLED": "false", "HEADRACE_ML__DRIFT_POLICY": "reset",
                                         "HEADRACE_ML__MODELS": '[{name = "only", algorithm = "forest"}]'})
    assert not c.ml.enabled and c.ml.drift_policy == "reset"
    assert c.ml.models == [MlModelConfig(name="only", algorithm="forest")]
    # --set beats the environment
    assert load_config(None, ["ml.enabled=true"], environ={"HEADRACE_ML__ENABLED": "false"}).ml.enabled


def test_a_config_file_with_model_tables_replaces_the_default_models(tmp_path: Path) -> None:
    path = tmp_path / "ml.toml"
    path.write_text('[ml]\nseed = 7\n\n[[ml.models]]\nname = "forest_shadow"\nalgorithm = "forest"\n')
    c = load_config(path)
    assert c.ml.seed == 7 and [m.name for m in c.ml.models] == ["forest_shadow"]
    assert c.ml.blend_step == MlConfig().blend_step  # the defaults fill the rest of the section
    path.write_text('[[ml.models]]\nname = "a"\n\n[[ml.models]]\nname = "b"\nkind = "ranker"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "ml.models[1].kind" and str(path) in info.value.reason


@pytest.mark.parametrize("override, key, reason", [
    ('ml.models=[{name = "a"}, {name = "b"}, {name = "a"}]', "ml.models",
     "model name 'a' is listed twice (ml.models[0] and ml.models[2])"),
    ("ml.models=[]", "ml.models", "ml.enabled is true but no model is listed: list one under [[ml.models]] or "
                                  "set ml.enabled = false"),
    ('ml.models=[{name = "a", mode = "blended"}, {name = "b"}, {name = "c", mode = "blended"}, {name = "d", '
     'mode = "blended"}]', "ml.blend_max_weight",
     "x 3 blended models (a, c, d) must be at most 1 (their weights sum to at most 1), was 0.5"),
    ("ml.feature_horizons=[]", "ml.feature_horizons", "must be a non-empty list of integers in [1, 100_000], was []"),
    ("ml.feature_horizons=[1, 0, 48]", "ml.feature_horizons", "was [1, 0, 48]"),
    ("ml.feature_horizons=[1, 100001]", "ml.feature_horizons", "in [1, 100_000]"),
    ('ml.feature_horizons=["1"]', "ml.feature_horizons[0]", "must be an integer"),
    ('ml.models=[{name = "a"}, {name = "b", kind = "ranker"}]', "ml.models[1].kind",
     "must be 'classifier' or 'regressor', was 'ranker'"),
    ('ml.models=[{name = "a", algorithm = "boosting"}]', "ml.models[0].algorithm", "must be 'linear' or 'forest'"),
    ('ml.models=[{name = "a", mode = "live"}]', "ml.models[0].mode", "must be 'shadow' or 'blended'"),
    ('ml.models=[{name = "a", pooled = 1}]', "ml.models[0].pooled", "must be true or false"),
    ('ml.models=[{name = "Bad-Name"}]', "ml.models[0].name", "must match ^[a-z][a-z0-9_]{0,63}$"),
    (f'ml.models=[{{name = "{"a" * 65}"}}]', "ml.models[0].name", "must match"),
    ('ml.models=[{kind = "regressor"}]', "ml.models[0].name", "is required"),
    ('ml.models=[{name = "a", depth = 3}]', "ml.models[0].depth",
     "unknown key (known keys here: algorithm, kind, mode, name, pooled)"),
    ("ml.models=[1]", "ml.models[0]", "must be a table"),
    ('ml.models={name = "a"}', "ml.models", "must be a list"),
    ("ml.models.0.name=a", "ml.models", "is a value, not a table"),
    ("ml.drift_policy=retrain", "ml.drift_policy", "must be 'none', 'reset' or 'relearn'"),
    ("ml.drift_delta=1", "ml.drift_delta", "must be in (0, 1)"),
    ("ml.blend_step=0", "ml.blend_step", "must be in (0, 1]"),
    ("ml.metrics_window=1", "ml.metrics_window", "must be in [2, 10_000_000]"),
    ("ml.horizon_bars=-1", "ml.horizon_bars", "must be in [0, 100_000]"),
    ("ml.learning_rate=0.1", "ml.learning_rate", "unknown key"),
])
def test_bad_ml_values_name_the_key_and_say_why(override: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert info.value.key == key and reason in info.value.reason


def test_a_disabled_section_may_list_no_model_and_one_blended_model_may_take_all_weight() -> None:
    assert load_config(None, ["ml.enabled=false", "ml.models=[]"]).ml.models == []
    c = load_config(None, ['ml.models=[{name = "a", mode = "blended"}]', "ml.blend_max_weight=1"])
    assert c.ml.blend_max_weight == 1.0
    c = load_config(None, ['ml.models=[{name = "a", mode = "blended"}, {name = "b", mode = "blended"}]',
                           "ml.blend_max_weight=0.5"])
    assert len(c.ml.models) == 2  # 0.5 x 2 = 1 is allowed
    with pytest.raises(ConfigError) as info:
        load_config(None, ['ml.models=[{name = "a", mode = "blended"}, {name = "b", mode = "blended"}]',
                           "ml.blend_max_weight=0.51"])
    assert info.value.key == "ml.blend_max_weight" and "was 0.51" in info.value.reason


def test_an_unknown_key_in_a_model_table_from_the_environment_names_the_entry_and_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, None, environ={"HEADRACE_ML__MODELS": '[{name = "a", lr = 0.1}]'})
    assert info.value.key == "ml.models[0].lr" and "HEADRACE_ML__MODELS" in info.value.reason


def test_the_reference_lists_the_list_of_tables_and_each_entry_key() -> None:
    keys = {d.key: d for d in describe_keys()}
    assert keys["ml.models"].type == "list of tables" and keys["ml.models"].env == "HEADRACE_ML__MODELS"
    assert load_config(None, [f"ml.models={keys['ml.models'].default}"]).ml.models == MlConfig().models
    entries = describe_entries("ml.models")
    assert [e.key for e in entries] == [f"ml.models[].{k}" for k in MlModelConfig.model_fields]
    assert entries[0].default == "(required)" and entries[1].default == '"classifier"'
    text = reference_markdown()
    for e in entries:
        row = next(line for line in text.splitlines() if line.startswith(f"| `{e.key}` |"))
        assert e.default in row and e.help in row and "HEADRACE_ML__MODELS" in row
    with pytest.raises(ValueError, match="not a list of tables"):
        describe_entries("ml.feature_horizons")
