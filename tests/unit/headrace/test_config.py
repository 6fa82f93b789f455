"""The config: every key validated, errors name the dotted key, overrides pass the same checks."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from headrace.config import (
    Config,
    Range,
    SizingConfig,
    VenueConfig,
    apply_override,
    build_config,
    describe_keys,
    format_duration,
    load_config,
    parse_date_ns,
    parse_duration,
    parse_timeframe,
    reference_markdown,
)
from headrace.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def test_the_shipped_defaults_equal_the_dataclass_defaults() -> None:
    shipped = load_config()
    assert shipped.storage == Config().storage and shipped.sizing == Config().sizing
    assert shipped.venue("bittrex").taker_fee_bps == 25.0
    assert shipped.venue("never-heard-of").taker_fee_bps == shipped.venues["default"].taker_fee_bps


def test_every_documented_key_can_be_overridden_with_its_own_default() -> None:
    for doc in describe_keys():
        key = doc.key.replace("<name>", "binance")
        got = load_config(None, [f"{key}={doc.default}"])  # raises if a documented key were not accepted
        node: Any = got
        for part in key.split("."):
            node = node[part] if isinstance(node, dict) else getattr(node, part)
        assert node == doc.value, key


@pytest.mark.parametrize("override, key, reason", [
    ("sizing.max_weight=2", "sizing.max_weight", "must be in (0, 1]"),
    ("sizing.max_weight=true", "sizing.max_weight", "must be a number"),
    ("account.latency_bars=1.5", "account.latency_bars", "must be an integer"),
    ("account.latency_bars=-2", "account.latency_bars", "must be in [-1, 10_000] (-1: not set)"),
    ("strategy.long_only=1", "strategy.long_only", "must be true or false"),
    ("strategy.name=ml", "strategy.name", "must be 'xs_momentum'"),
    ("replay.timeframe=5x", "replay.timeframe", "timeframe must look like"),
    ("venues.kraken.taker_fee_bps=-3", "venues.kraken.taker_fee_bps", "must be in [0, 10_000)"),
    ("venues.kraken.maker_fee_bps=1", "venues.kraken.maker_fee_bps", "unknown key"),
    ("account.fx_rates={USDT = 0}", "account.fx_rates", "rate for 'USDT' must be a number in (0, 1e12]"),
    ("storage.dsn=mysql://x", "storage.dsn", "must be empty"),
    ("risk.max_leverage=2", "risk.max_leverage", "unknown key"),
    ("nosuch.max_leverage=2", "nosuch", "unknown key"),
    ("sizing=1", "sizing", "must be a table"),
    ("sizing.max_weight.x=1", "sizing.max_weight", "is a value, not a table"),
    ("nonsense", "nonsense", "--set takes KEY=VALUE"),
])
def test_bad_values_name_the_key_and_say_why(override: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert info.value.key == key
    assert reason in info.value.reason
    assert str(info.value).startswith(f"config key {key!r}: ")


def test_a_config_file_merges_over_the_defaults_and_overrides_win(tmp_path: Path) -> None:
    f = tmp_path / "run.toml"
    f.write_text('[sizing]\nmax_weight = 0.5\n[venues.okx]\ntaker_fee_bps = 8.0\n')
    c = load_config(f, ["sizing.max_weight=0.4"])
    assert c.sizing.max_weight == 0.4
    assert c.sizing.max_gross_leverage == 1.0  # untouched keys keep their defaults
    assert c.venue("okx").taker_fee_bps == 8.0 and c.venue("okx").half_spread_bps == 5.0
    assert c.venue("bittrex").taker_fee_bps == 25.0  # shipped venues stay


def test_a_missing_or_broken_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[sizing\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_override_values_are_toml_else_bare_strings() -> None:
    raw: dict = {}
    apply_override(raw, "account.id=desk-1")
    apply_override(raw, "account.initial_cash=2")
    apply_override(raw, 'replay.symbol="BTC/USDT"')
    assert raw == {"account": {"id": "desk-1", "initial_cash": 2}, "replay": {"symbol": "BTC/USDT"}}
    c = build_config(raw)
    assert c.account.initial_cash == 2.0 and isinstance(c.account.initial_cash, float)


def test_dsn_defaults_to_embedded_chdb_in_the_state_dir(tmp_path: Path) -> None:
    c = load_config(None, [f"storage.state_dir={tmp_path}"])
    assert c.dsn() == f"chdb://{tmp_path / 'clickhouse'}"
    assert load_config(None, ["storage.dsn=http://bob@h:8123/x"]).dsn() == "http://bob@h:8123/x"


def test_timeframes_parse_to_ns_and_bad_ones_say_what_is_expected() -> None:
    assert [parse_timeframe(t) for t in ("30s", "1m", "1h", "1d")] == [30 * 10**9, 60 * 10**9, 3600 * 10**9,
                                                                       86400 * 10**9]
    for bad in ("0m", "5", "m5", "1w", 5):
        with pytest.raises(ValueError, match="timeframe must look like"):
            parse_timeframe(bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------
# --set values: TOML, bare words only for string keys


@pytest.mark.parametrize("override, key", [
    ("k=[1,", "k"),
    ("account.fx_rates={USDT = }", "account.fx_rates"),
    ("account.fx_rates=[1,", "account.fx_rates"),
    ('account.id="desk-1', "account.id"),
    ("storage.batch_rows=5e", "storage.batch_rows"),
    ("sizing.max_weight=0.1.2", "sizing.max_weight"),
    ("strategy.long_only=yes", "strategy.long_only"),
])
def test_malformed_toml_in_set_is_an_error_naming_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert info.value.key == key
    assert "is not valid TOML" in info.value.reason and "from --set" in info.value.reason


def test_bare_words_are_strings_only_for_keys_that_hold_strings() -> None:
    c = load_config(None, ["account.currency=USD", "account.latency=250ms", "replay.symbol=BTC/USDT",
                           "account.fill_on=next_open", "account.fx_rates.USDT=1.0"])
    assert (c.account.currency, c.account.latency, c.replay.symbol) == ("USD", "250ms", "BTC/USDT")
    assert c.account.latency_ns == 250_000_000 and c.account.fx_rates == {"USDT": 1.0}


# ---------------------------------------------------------------------------------------------------
# bounds


def _numeric_keys() -> list[tuple[str, str, Range]]:
    return [(d.key.replace("<name>", "kraken"), d.type, d.rule) for d in describe_keys() if isinstance(d.rule, Range)]


def test_every_number_key_has_bounds() -> None:
    numeric = {d.key for d in describe_keys() if d.type in ("integer", "number")}
    assert numeric == {k.replace("kraken", "<name>") for k, _, _ in _numeric_keys()}


@pytest.mark.parametrize("key, kind, rule", _numeric_keys(), ids=lambda x: x if isinstance(x, str) else "")
def test_numbers_outside_their_bounds_name_the_key(key: str, kind: str, rule: Range) -> None:
    above = rule.hi if rule.hi_open else rule.hi + 1
    below = rule.lo if rule.lo_open else rule.lo - 1
    bad = [above, below] + ([] if kind == "integer" else ["inf", "nan"])
    for value in bad:
        text = str(int(value)) if kind == "integer" else str(value)
        with pytest.raises(ConfigError) as info:
            load_config(None, [f"{key}={text}"])
        assert info.value.key == key and f"must be in {rule.allowed()}" in info.value.reason, value
    edge = rule.hi if not rule.hi_open else rule.lo if not rule.lo_open else None
    partners = CROSS_KEY_EDGES.get(key, [])
    if edge is not None and partners is not None:  # a bound itself is fine (latency_bars on a 1s clock, ...)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            load_config(None, ["replay.timeframe=1s", *partners,
                               f"{key}={int(edge) if kind == 'integer' else float(edge)}"])


# keys whose bound is only reachable with another key moved too (None: a rule between the two forbids it)
CROSS_KEY_EDGES: dict[str, list[str] | None] = {
    "portfolio.net_min": ["portfolio.net_max=100.0"],
    "portfolio.regime_exit_ratio": None,  # must stay below regime_enter_ratio, itself at most 100
    "portfolio.regime_fast_halflife_bars": None,  # must stay below regime_slow_halflife_bars
    "risk.min_bars": ["risk.window_bars=100000"],
    "risk.margin_warn": ["risk.margin_critical=1.0"],
    "risk.margin_reduce_to": None,  # must stay below margin_critical, itself at most 1
}


@pytest.mark.parametrize("override, key, reason", [
    ("portfolio.net_min=0.5", "portfolio.net_min", "is above portfolio.net_max (0.0)"),
    ("portfolio.regime_exit_ratio=2.0", "portfolio.regime_exit_ratio", "must be below portfolio.regime_enter_ratio"),
    ("portfolio.regime_fast_halflife_bars=800.0", "portfolio.regime_slow_halflife_bars", "must be above"),
    ('portfolio.tiers={a = ["BTC"], b = ["BTC", "ETH"]}', "portfolio.tiers", "BTC is in both 'a' and 'b'"),
    ('portfolio.tiers={other = ["BTC"]}', "portfolio.tiers", "'other' is the tier of the assets no tier lists"),
    ("portfolio.tier_budgets={gold = 1.0}", "portfolio.tier_budgets", "names tiers ['gold']"),
    ("portfolio.tier_budgets={major = -1.0}", "portfolio.tier_budgets", "budgets must be finite, >= 0"),
    ("portfolio.regime_budgets={panic = {major = 1.0}}", "portfolio.regime_budgets", "regimes are calm and stressed"),
    ("portfolio.factor_bounds={market = [1.0, 0.0]}", "portfolio.factor_bounds", "low <= high"),
    ("portfolio.method=min_variance", "portfolio.method", "must be 'vol_target'"),
    ("risk.min_bars=600", "risk.min_bars", "must be at most risk.window_bars (500)"),
    ("risk.margin_warn=0.9", "risk.margin_warn", "must be at most risk.margin_critical (0.8)"),
    ("risk.margin_reduce_to=0.8", "risk.margin_reduce_to", "must be below risk.margin_critical (0.8)"),
    ('risk.scenarios=[{name = "a", kind = "market", size = -0.1}, {name = "a", kind = "spread", size = 2.0}]',
     "risk.scenarios", "scenario name 'a' is listed twice"),
    ('risk.scenarios=[{name = "h", kind = "historical"}]', "risk.scenarios[0].file", "needs a shock file"),
    ('risk.scenarios=[{name = "m", kind = "market"}]', "risk.scenarios[0].size", "needs a non-zero size"),
])
def test_portfolio_settings_that_contradict_each_other_name_the_key(override: str, key: str, reason: str) -> None:
    extra = ["portfolio.net_max=0.0"] if key == "portfolio.net_min" else []
    with pytest.raises(ConfigError) as info:
        load_config(None, [*extra, override])
    assert info.value.key == key and reason in info.value.reason, info.value


@pytest.mark.parametrize("override, key, reason", [
    ("account.latency_bars=1e20", "account.latency_bars", "must be an integer"),
    ("account.latency_bars=100000000000000000000", "account.latency_bars", "must be in [-1, 10_000]"),
    ("storage.batch_rows=10000001", "storage.batch_rows", "must be in [1, 10_000_000]"),
    ("sizing.max_gross_leverage=101.0", "sizing.max_gross_leverage", "must be in (0, 100]"),
    ("account.initial_cash=1e16", "account.initial_cash", "must be in (0, 1e15]"),
    ("account.fx_rates={USDT = inf}", "account.fx_rates", "rate for 'USDT' must be a number in (0, 1e12]"),
    ("storage.read_timeout_s=86401.0", "storage.read_timeout_s", "must be in (0, 86_400]"),
    ("account.latency=2d", "account.latency", "must be a duration in [0s, 1d]"),
    ("account.latency=soon", "account.latency", "duration must look like"),
    ("strategy.stale_after=0s", "strategy.stale_after", "must be a duration in (0s, 366d]"),
    ("metrics.interval=0s", "metrics.interval", 'must be "auto" or a duration in (0s, 366d]'),
    ("metrics.interval=5x", "metrics.interval", "duration must look like"),
    ("replay.timeframe=60d", "replay.timeframe", "timeframe must be at most 30d"),
    ("replay.timestamp_unit=sec", "replay.timestamp_unit", "must be 'auto', 's', 'ms', 'us' or 'ns'"),
    ("replay.date_format=dd/mm/yyyy", "replay.date_format", "strftime format"),
    ("validation.earliest=yesterday", "validation.earliest", "must be an ISO 8601 date"),
    ("validation.earliest='2009-13-01'", "validation.earliest", "must be an ISO 8601 date"),
    ("validation.latest='3000-01-01'", "validation.latest", "must lie between 1677-09-22 and 2262-04-11"),
    ("validation.latest='2001-01-01'", "validation.latest", "must be after validation.earliest ('2009-01-03')"),
    ("validation.earliest='2100-01-01'", "validation.latest", "must be after validation.earliest"),
])
def test_bounded_keys_refuse_values_beyond_them(override: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert info.value.key == key
    assert reason in info.value.reason
    assert "docs/configuration.md" in info.value.reason


def test_dates_and_durations_parse_to_ns() -> None:
    c = load_config(None, ["validation.earliest='2018-01-01T00:00:00Z'", "validation.latest='2018-01-02'"])
    assert c.validation.earliest_ns == 1_514_764_800 * 10**9
    assert c.validation.latest_ns - c.validation.earliest_ns == 86_400 * 10**9
    assert parse_date_ns("2018-01-01T01:00:00+01:00") == c.validation.earliest_ns  # offsets are honoured
    assert [parse_duration(format_duration(n)) for n in (0, 1, 10**6, 90 * 10**9, 86_400 * 10**9)] == \
        [0, 1, 10**6, 90 * 10**9, 86_400 * 10**9]


# ---------------------------------------------------------------------------------------------------
# the environment


def test_environment_variables_set_keys() -> None:
    env = {"HEADRACE_ACCOUNT__LATENCY": "250ms", "HEADRACE_VENUES__KRAKEN__TAKER_FEE_BPS": "20",
           "HEADRACE_ACCOUNT__FX_RATES": "{USDT = 1.0}", "HEADRACE_ACCOUNT__FX_RATES__USDC": "0.99",
           "HEADRACE_venues__OKX__half_spread_bps": "2.5", "HEADRACE_STRATEGY__LONG_ONLY": "false",
           "HEADRACE_REPLAY__SYMBOL": "BTC/USDT", "HEADRACE_ACCOUNT__ID": '"desk 1"'}
    c = load_config(None, None, environ=env)
    assert c.account.latency == "250ms" and c.account.latency_ns == 250_000_000
    assert c.venue("kraken").taker_fee_bps == 20.0 and c.venue("kraken").half_spread_bps == 1.0  # merged key by key
    assert c.venue("okx").half_spread_bps == 2.5 and c.venue("okx").taker_fee_bps == 10.0
    assert c.account.fx_rates == {"USDT": 1.0, "USDC": 0.99}  # currency codes keep their case
    assert c.strategy.long_only is False and c.replay.symbol == "BTC/USDT" and c.account.id == "desk 1"


def test_os_environ_is_read_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADRACE_SIZING__MAX_WEIGHT", "0.125")
    assert load_config().sizing.max_weight == 0.125


def test_precedence_is_defaults_then_file_then_environment_then_set(tmp_path: Path) -> None:
    f = tmp_path / "run.toml"
    f.write_text("[sizing]\nmax_weight = 0.5\nmin_trade_weight = 0.05\ntarget_volatility = 0.3\n")
    env = {"HEADRACE_SIZING__MAX_WEIGHT": "0.4", "HEADRACE_SIZING__MIN_TRADE_WEIGHT": "0.04"}
    c = load_config(f, ["sizing.max_weight=0.3"], environ=env)
    assert c.sizing.max_weight == 0.3  # --set beats the environment
    assert c.sizing.min_trade_weight == 0.04  # the environment beats the file
    assert c.sizing.target_volatility == 0.3  # the file beats the defaults
    assert c.sizing.max_gross_leverage == 1.0  # the defaults fill the rest


def test_every_key_can_come_from_the_environment() -> None:
    env = {d.env.replace("<NAME>", "NEWVENUE"): d.default for d in describe_keys()}
    assert len(env) == len(describe_keys())
    got = load_config(None, None, environ=env).to_dict()
    assert got["venues"].pop("newvenue") == VenueConfig().model_dump()
    assert got == load_config().to_dict()


@pytest.mark.parametrize("name, key", [
    ("HEADRACE_ACOUNT__LATENCY", "acount.latency"),
    ("HEADRACE_ACCOUNT__LATENCYY", "account.latencyy"),
    ("HEADRACE_VENUES__KRAKEN__MAKER_FEE_BPS", "venues.kraken.maker_fee_bps"),
    ("HEADRACE_SIZING__MAX_WEIGHT__X", "sizing.max_weight.x"),
    ("HEADRACE_SIZING__", "sizing."),
])
def test_an_environment_variable_that_names_no_key_is_an_error_naming_it(name: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, None, environ={name: "1"})
    assert info.value.key == key and name in str(info.value) and "unknown key" in info.value.reason


def test_headrace_variables_without_the_double_underscore_are_not_config_keys() -> None:
    env = {"HEADRACE_RUN_ID": "r1", "HEADRACE_DATA": "/x", "HEADRACE_CONFIG": "c.toml",
           "HEADRACE_CLICKHOUSE_PASSWORD": "hunter2", "HEADRACE_GRAFANA_TOKEN": "t", "OTHER__THING": "1"}
    c = load_config(None, None, environ=env)
    assert c.to_dict() == load_config().to_dict() and "hunter2" not in repr(c.to_dict())


def test_a_bad_value_from_the_environment_names_the_key_and_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, None, environ={"HEADRACE_SIZING__MAX_WEIGHT": "2"})
    assert info.value.key == "sizing.max_weight"
    assert "must be in (0, 1], was 2 (set in environment variable HEADRACE_SIZING__MAX_WEIGHT)" in info.value.reason
    with pytest.raises(ConfigError) as info:
        load_config(None, None, environ={"HEADRACE_ACCOUNT__FX_RATES": "{USDT = "})
    assert info.value.key == "account.fx_rates" and "HEADRACE_ACCOUNT__FX_RATES is not valid TOML" in str(info.value)


def test_a_password_in_an_environment_dsn_is_refused_and_never_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, None, environ={"HEADRACE_STORAGE__DSN": "http://bob:hunter2@h:8123/x"})
    assert info.value.key == "storage.dsn" and "hunter2" not in str(info.value) and "bob:***@" in str(info.value)


def test_errors_say_which_layer_set_the_value(tmp_path: Path) -> None:
    f = tmp_path / "run.toml"
    f.write_text("[sizing]\nmax_weight = 3\n")
    with pytest.raises(ConfigError, match=r"was 3 \(set in .*run\.toml\); see docs/configuration\.md"):
        load_config(f)


# ---------------------------------------------------------------------------------------------------
# account.latency_bars (deprecated)


@pytest.mark.parametrize("sets, latency, fill_on", [
    (["account.latency_bars=0"], "0s", "decision_close"),
    (["account.latency_bars=1"], "0s", "next_open"),
    (["account.latency_bars=3"], "10m", "next_open"),
    (["account.latency_bars=3", "replay.timeframe=1h"], "2h", "next_open"),
    (["replay.timeframe=30s", "account.latency_bars=2"], "30s", "next_open"),
])
def test_latency_bars_is_folded_into_latency_and_fill_on_with_a_deprecation(
        sets: list[str], latency: str, fill_on: str) -> None:
    with pytest.warns(DeprecationWarning, match="account.latency_bars' is deprecated: use account.latency"):
        c = load_config(None, sets)
    assert (c.account.latency, c.account.fill_on, c.account.latency_bars) == (latency, fill_on, -1)
    assert len(c.deprecations) == 1 and "account.latency" in c.deprecations[0]
    again = build_config(c.to_dict())  # the folded config round-trips, without a deprecation
    assert again.to_dict() == c.to_dict() and again.deprecations == ()


def test_latency_bars_from_a_file_or_the_environment_is_folded_too(tmp_path: Path) -> None:
    f = tmp_path / "old.toml"
    f.write_text("[account]\nlatency_bars = 2\n")
    with pytest.warns(DeprecationWarning):
        assert load_config(f).account.latency == "5m"
    with pytest.warns(DeprecationWarning):
        assert load_config(None, None, environ={"HEADRACE_ACCOUNT__LATENCY_BARS": "0"}).account.fill_on == \
            "decision_close"


def test_no_deprecation_without_latency_bars(recwarn: pytest.WarningsRecorder) -> None:
    c = load_config(None, ["account.latency=1s", "account.latency_bars=-1"])
    assert c.deprecations == () and not [w for w in recwarn if w.category is DeprecationWarning]


@pytest.mark.parametrize("sets, env, named", [
    (["account.latency_bars=2", "account.latency=1s"], {}, ["account.latency"]),
    (["account.latency_bars=0", "account.fill_on=decision_close"], {}, ["account.fill_on"]),
    (["account.latency_bars=2"], {"HEADRACE_ACCOUNT__LATENCY": "0s", "HEADRACE_ACCOUNT__FILL_ON": "next_open"},
     ["account.latency", "account.fill_on"]),
])
def test_latency_bars_together_with_its_replacements_is_an_error_naming_both(
        sets: list[str], env: dict[str, str], named: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, sets, environ=env)
    assert info.value.key == "account.latency_bars"
    assert all(k in info.value.reason for k in named)


def test_latency_bars_beyond_a_day_of_latency_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["account.latency_bars=290"])
    assert info.value.key == "account.latency_bars" and "more than account.latency allows (1d)" in info.value.reason


def test_decision_close_needs_zero_latency() -> None:
    assert load_config(None, ["account.fill_on=decision_close"]).account.latency == "0s"
    with pytest.raises(ConfigError) as info:
        load_config(None, ["account.fill_on=decision_close", "account.latency=250ms"])
    assert info.value.key == "account.latency" and "'decision_close'" in info.value.reason


# ---------------------------------------------------------------------------------------------------
# models and reference


def test_models_are_frozen_and_refuse_unknown_keys() -> None:
    c = load_config()
    with pytest.raises(ValidationError):
        c.sizing.max_weight = 0.9  # type: ignore[misc]
    with pytest.raises(ValidationError):
        c.sizing = SizingConfig()  # type: ignore[misc]
    with pytest.raises(ConfigError, match="'_env_prefix': unknown key"):
        build_config({"_env_prefix": "X_"})
    assert pickle.loads(pickle.dumps(c)) == c


def test_the_reference_lists_every_key_with_default_bounds_meaning_and_variable() -> None:
    text = reference_markdown()
    for d in describe_keys():
        row = next(line for line in text.splitlines() if line.startswith(f"| `{d.key}` |"))
        assert d.default.replace("|", "&#124;") in row and d.help.replace("|", "&#124;") in row and d.env in row
        if isinstance(d.rule, Range):
            assert d.rule.allowed() in row
    assert "HEADRACE_VENUES__<NAME>__TAKER_FEE_BPS" in text and "--set` beats the environment" in text
    with pytest.raises(ConfigError) as info:
        load_config(None, ["sizing.max_weight=2"])
    assert f"`{info.value}`" in text  # the example message is the real one
    assert (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8") == text, "run `make docs`"


@pytest.mark.slow
def test_the_cli_prints_one_line_per_deprecated_key_and_stops_on_unknown_variables(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "headrace.cli", "db", "init", "--set", f"storage.state_dir={tmp_path}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADRACE_")}
    res = subprocess.run([*cli, "--set", "account.latency_bars=2"], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stderr.splitlines() if "deprecated" in line]
    assert len(lines) == 1 and "use account.latency" in lines[0] and "'5m'" in lines[0]
    res = subprocess.run(cli, capture_output=True, text=True, env={**env, "HEADRACE_ACOUNT__LATENCY": "1s"},
                         cwd=ROOT, timeout=300)
    assert res.returncode == 2 and "HEADRACE_ACOUNT__LATENCY" in " ".join(res.stderr.split())
