"""The config: every key validated, errors name the dotted key, overrides pass the same checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from headrace.config import Config, apply_override, build_config, describe, load_config, parse_timeframe
from headrace.errors import ConfigError


def test_the_shipped_defaults_equal_the_dataclass_defaults() -> None:
    shipped = load_config()
    assert shipped.storage == Config().storage and shipped.sizing == Config().sizing
    assert shipped.venue("bittrex").taker_fee_bps == 25.0
    assert shipped.venue("never-heard-of").taker_fee_bps == shipped.venues["default"].taker_fee_bps


def test_every_documented_key_can_be_overridden_with_its_own_default() -> None:
    for key, default, _ in describe():
        if "<name>" in key:
            key = key.replace("<name>", "binance")
        value = {"True": "true", "False": "false", "{}": "{}"}.get(default, default)
        load_config(None, [f"{key}={value}"])  # raises if a documented key were not accepted


@pytest.mark.parametrize("override, key, reason", [
    ("sizing.max_weight=2", "sizing.max_weight", "must be in (0, 1]"),
    ("sizing.max_weight=true", "sizing.max_weight", "must be a number"),
    ("account.latency_bars=1.5", "account.latency_bars", "must be an integer"),
    ("account.latency_bars=-1", "account.latency_bars", "must be >= 0"),
    ("strategy.long_only=1", "strategy.long_only", "must be true or false"),
    ("strategy.name=ml", "strategy.name", "must be 'xs_momentum'"),
    ("replay.timeframe=5x", "replay.timeframe", "timeframe must look like"),
    ("venues.kraken.taker_fee_bps=-3", "venues.kraken.taker_fee_bps", "must be >= 0"),
    ("venues.kraken.maker_fee_bps=1", "venues.kraken.maker_fee_bps", "unknown key"),
    ("account.fx_rates={USDT = 0}", "account.fx_rates", "rate for 'USDT' must be a number > 0"),
    ("storage.dsn=mysql://x", "storage.dsn", "must be empty"),
    ("risk.max_leverage=2", "risk", "unknown key"),
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
