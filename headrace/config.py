"""One TOML configuration, validated whole at start.

Every key is declared in the dataclasses below, with its type, default, a check and a one-line help
text (rendered in docs/configuration.md). Unknown keys, wrong types and bad values raise `ConfigError`
naming the dotted key. `--set KEY=VALUE` overrides go through the same validation.

Secrets (exchange API keys, database passwords) never live here: they come from the environment.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from headrace.errors import ConfigError

Check = Callable[[Any], str | None]  # returns the reason when the value is bad


def _positive(v: Any) -> str | None:
    return None if v > 0 and math.isfinite(v) else "must be > 0"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 and math.isfinite(v) else "must be >= 0"


def _fraction(v: Any) -> str | None:
    return None if 0 < v <= 1 else "must be in (0, 1]"


def _timeframe_check(v: Any) -> str | None:
    try:
        parse_timeframe(v)
    except ValueError as e:
        return str(e)
    return None


def _dsn_check(v: Any) -> str | None:
    if re.match(r"^https?://[^/@:]+:[^@]*@", v):
        return "must not hold a password (secrets never live in config): set HEADRACE_CLICKHOUSE_PASSWORD"
    if v == "" or re.match(r"^(chdb|https?)://", v):
        return None
    return "must be empty (embedded chDB in the state dir) or a chdb://, http:// or https:// DSN"


def _currency_map(v: Any) -> str | None:
    for k, x in v.items():
        if not isinstance(x, (int, float)) or isinstance(x, bool) or not x > 0:
            return f"rate for {k!r} must be a number > 0, was {x!r}"
    return None


def _key(default: Any, help: str, check: Check | None = None) -> Any:
    return field(default=default, metadata={"help": help, "check": check})


def _key_factory(factory: Callable[[], Any], help: str, check: Check | None = None) -> Any:
    return field(default_factory=factory, metadata={"help": help, "check": check})


_TIMEFRAME = re.compile(r"^(\d+)(s|m|h|d)$")
_UNIT_NS = {"s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}


_DURATION = re.compile(r"^(\d+)(ns|us|ms|s|m|h|d)$")
_DURATION_NS = {"ns": 1, "us": 10**3, "ms": 10**6, **_UNIT_NS}


def parse_duration(text: str) -> int:
    """Return a duration such as ``"0s"``, ``"250ms"``, ``"90s"``, ``"1h"`` in ns (zero allowed).

    Examples
    --------
    >>> parse_duration("250ms"), parse_duration("0s"), parse_duration("2h")
    (250000000, 0, 7200000000000)
    """
    m = _DURATION.match(text) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"duration must look like '0s', '250ms', '90s', '5m', '1h' or '1d', was {text!r}")
    return int(m.group(1)) * _DURATION_NS[m.group(2)]


def _duration_check(v: Any) -> str | None:
    try:
        parse_duration(v)
    except ValueError as e:
        return str(e)
    return None


def parse_timeframe(tf: str) -> int:
    """Return the length of a ccxt-style timeframe (``"1m"``, ``"5m"``, ``"1h"``, ``"1d"``) in ns.

    Examples
    --------
    >>> parse_timeframe("5m")
    300000000000
    """
    m = _TIMEFRAME.match(tf) if isinstance(tf, str) else None
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"timeframe must look like '30s', '1m', '5m', '1h' or '1d', was {tf!r}")
    return int(m.group(1)) * _UNIT_NS[m.group(2)]


@dataclass(frozen=True, slots=True)
class StorageConfig:
    dsn: str = _key("", "ClickHouse DSN; empty means embedded chDB at <state_dir>/clickhouse", _dsn_check)
    state_dir: str = _key("state", "directory for the embedded database and run files (relative to the working dir)")
    batch_rows: int = _key(50_000, "rows buffered per table before an insert", _positive)
    connect_timeout_s: float = _key(10.0, "seconds to wait for a ClickHouse server to accept a connection", _positive)
    read_timeout_s: float = _key(300.0, "seconds to wait for a ClickHouse server to answer one request", _positive)
    lock_wait_s: float = _key(0.0, "seconds a read command waits while a replay holds the embedded store",
                              _non_negative)


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    venue: str = _key("", "venue for files whose path does not name one")
    symbol: str = _key("", "ccxt symbol (BASE/QUOTE) for files whose path does not name one")
    timeframe: str = _key("5m", "bar length built from trades and quotes", _timeframe_check)
    chunk_rows: int = _key(20_000, "rows of the merged stream per source slice (and per snapshot offset)", _positive)
    timestamp_unit: str = _key("auto", "unit of integer epoch timestamps: auto (from the magnitude), s, ms, us or ns",
                               lambda v: None if v in ("auto", "s", "ms", "us", "ns") else
                               "must be one of auto, s, ms, us, ns")
    date_format: str = _key("", "strftime format of text dates that are not ISO 8601 (empty: ISO 8601 only)")


@dataclass(frozen=True, slots=True)
class ValidationConfig:
    earliest: str = _key("2009-01-03", "rows stamped before this date (ISO 8601) are quarantined as out of range")
    latest: str = _key("2100-01-01", "rows stamped after this date (ISO 8601) are quarantined as out of range")
    max_jump_sigmas: float = _key(50.0, "quarantine a price whose log move from the last good one exceeds this many "
                                        "recent standard deviations (and max_jump_floor)", _positive)
    max_jump_floor: float = _key(0.5, "a log price move below this is never a jump, whatever the volatility",
                                 _positive)
    max_quarantined: float = _key(1.0, "fail the run when more than this fraction of rows is quarantined",
                                  lambda v: None if 0 <= v <= 1 else "must be in [0, 1]")


@dataclass(frozen=True, slots=True)
class VenueConfig:
    taker_fee_bps: float = _key(10.0, "taker fee, basis points of notional", _non_negative)
    half_spread_bps: float = _key(5.0, "half spread paid when bars carry no quotes, basis points", _non_negative)


@dataclass(frozen=True, slots=True)
class AccountConfig:
    id: str = _key("main", "account id written on orders, fills, positions and equity")
    currency: str = _key("", "valuation currency; empty means the quote currency all instruments share")
    initial_cash: float = _key(1.0, "starting cash in the account currency, split evenly over venues", _positive)
    latency: str = _key("0s", "time from a decision until its order reaches the venue; the fill uses the first bar "
                              "that opens at or after decision + latency", _duration_check)
    fill_on: str = _key("next_open", "next_open: at the open of the first bar at or after decision + latency; "
                                     "decision_close: at the decision bar's close (latency must be 0s)",
                        lambda v: None if v in ("next_open", "decision_close") else
                        "must be 'next_open' or 'decision_close'")
    latency_bars: int = _key(-1, "deprecated, use account.latency: 0 = fill_on decision_close, n >= 1 = latency of "
                                 "(n - 1) x replay.timeframe (-1: not set)", lambda v: None if v >= -1 else "must be >= 0")
    fx_rates: dict[str, float] = _key_factory(
        dict, "fixed rates to the account currency for quote currencies no instrument prices", _currency_map
    )


@dataclass(frozen=True, slots=True)
class FeaturesConfig:
    vol_halflife_bars: float = _key(288.0, "half-life of the EWMA volatility, in bars", _positive)
    momentum_lookback_bars: int = _key(288, "bars over which momentum is the log return", _positive)


@dataclass(frozen=True, slots=True)
class StrategyConfig:
    name: str = _key("xs_momentum", "signal: cross-sectional momentum (the only one so far)",
                     lambda v: None if v == "xs_momentum" else "must be 'xs_momentum'")
    rebalance_bars: int = _key(144, "bars between rebalances", _positive)
    long_only: bool = _key(True, "drop short targets (spot venues cannot short)")
    min_instruments: int = _key(2, "instruments with features needed before trading", _positive)
    stale_after: str = _key("1h", "an instrument without a new bar for this long leaves the cross-section (no new "
                                  "targets; its position is valued at its last price, marked stale)", _duration_check)


@dataclass(frozen=True, slots=True)
class SizingConfig:
    target_volatility: float = _key(0.5, "annualised volatility each position is sized to", _positive)
    max_gross_leverage: float = _key(1.0, "cap on the sum of |weights|", _positive)
    max_weight: float = _key(0.25, "cap on one instrument's |weight|", _fraction)
    min_trade_weight: float = _key(0.02, "skip trades smaller than this fraction of equity", _non_negative)


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    interval: str = _key("auto", "grid on which return statistics are computed: auto (the longest bar length of "
                                 "the run) or a duration such as '5m'",
                         lambda v: None if v == "auto" else _duration_check(v))


@dataclass(frozen=True, slots=True)
class Config:
    storage: StorageConfig = field(default_factory=StorageConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    venues: dict[str, VenueConfig] = field(default_factory=dict)
    account: AccountConfig = field(default_factory=AccountConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    sizing: SizingConfig = field(default_factory=SizingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    def venue(self, name: str) -> VenueConfig:
        """Return the venue's settings, falling back to ``[venues.default]``."""
        return self.venues.get(name) or self.venues.get("default") or VenueConfig()

    @property
    def timeframe_ns(self) -> int:
        return parse_timeframe(self.replay.timeframe)

    def dsn(self) -> str:
        """Return the DSN to use: the configured one, or embedded chDB inside the state dir."""
        if self.storage.dsn:
            return self.storage.dsn
        return f"chdb://{Path(self.storage.state_dir).resolve() / 'clickhouse'}"

    def to_dict(self, *, redacted: bool = False) -> dict[str, Any]:
        """Return the config as plain data; `redacted` masks any password in the DSN (for storing and logs)."""
        out = dataclasses.asdict(self)
        if redacted:
            out["storage"]["dsn"] = re.sub(r"(//[^:/@]+):[^@]*@", r"\1:***@", out["storage"]["dsn"])
        return out


# ---------------------------------------------------------------------------------------------------


def default_config_text() -> str:
    """Return the shipped, documented default config (``headrace/default.toml``)."""
    return resources.files("headrace").joinpath("default.toml").read_text(encoding="utf-8")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load and validate a config: the defaults, then `path` (if any), then ``KEY=VALUE`` overrides.

    Raises
    ------
    ConfigError
        naming the first wrong key, for unknown keys, wrong types and bad values.
    """
    raw: dict[str, Any] = tomllib.loads(default_config_text())
    if path is not None:
        p = Path(path)
        try:
            _merge(raw, tomllib.loads(p.read_text(encoding="utf-8")))
        except FileNotFoundError as e:
            raise ConfigError("--config", f"file {str(p)!r} does not exist") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError("--config", f"file {str(p)!r} is not valid TOML: {e}") from e
    for item in overrides or []:
        apply_override(raw, item)
    return build_config(raw)


def _merge(into: dict[str, Any], top: Mapping[str, Any]) -> None:
    # tables merge key by key; any other value replaces
    for k, v in top.items():
        if isinstance(v, Mapping) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``a.b.c=VALUE`` override to a raw config dict; VALUE is TOML, else a bare string."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or not re.match(r"^[A-Za-z0-9_.-]+$", key):
        raise ConfigError(key or item, f"--set takes KEY=VALUE with a dotted key, was {item!r}")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(".".join(parts[: i + 1]), f"is a value, not a table; cannot set {key!r}")
        node = nxt
    node[parts[-1]] = value


def build_config(raw: Mapping[str, Any]) -> Config:
    """Validate a raw (TOML-shaped) dict into a `Config`."""
    config: Config = _build(Config, raw, "")
    return config


def _build(cls: type[Any], raw: Any, prefix: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(prefix.rstrip(".") or "<root>", f"must be a table, was {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k in raw:
        if k not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{prefix}{k}", f"unknown key (known keys here: {known})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        key = f"{prefix}{name}"
        kwargs[name] = _value(hints[name], raw[name], key)
        check = f.metadata.get("check")
        reason = check(kwargs[name]) if check else None
        if reason:
            shown = re.sub(r"(//[^:/@]+):[^@]*@", r"\1:***@", repr(raw[name]))  # never echo a password
            raise ConfigError(key, f"{reason}, was {shown}")
    return cls(**kwargs)


def _value(tp: Any, v: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, v, f"{key}.")
    if origin is dict:
        _, vt = typing.get_args(tp)
        if not isinstance(v, Mapping):
            raise ConfigError(key, f"must be a table, was {v!r}")
        return {str(k): _value(vt, x, f"{key}.{k}") for k, x in v.items()}
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(key, "union types are not supported in config")  # pragma: no cover
    if tp is bool:
        if not isinstance(v, bool):
            raise ConfigError(key, f"must be true or false, was {v!r}")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(key, f"must be an integer, was {v!r}")
        return v
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(key, f"must be a number, was {v!r}")
        return float(v)
    if tp is str:
        if not isinstance(v, str):
            raise ConfigError(key, f"must be a string, was {v!r}")
        return v
    raise ConfigError(key, f"unsupported type {tp!r}")  # pragma: no cover


def describe(cls: type[Any] = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """Return (key, default, help) for every documented key, for docs and ``--help``."""
    out: list[tuple[str, str, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += describe(tp, f"{prefix}{f.name}.")  # type: ignore[arg-type]
        elif f.name == "venues":
            out += describe(VenueConfig, f"{prefix}venues.<name>.")
        else:
            factory: Callable[[], Any] = f.default_factory  # type: ignore[assignment]
            default = f.default if f.default is not dataclasses.MISSING else factory()
            out.append((f"{prefix}{f.name}", repr(default), str(f.metadata.get("help", ""))))
    return out


def reference_markdown() -> str:
    """Return the configuration reference (docs/configuration.md): every key, its default and its meaning."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- generated by `make docs` from headrace/config.py; do not edit by hand -->",
        "",
        "One TOML file, validated whole at start: an unknown key, a wrong type or a bad value stops the run",
        "with a message naming the dotted key (`config key 'sizing.max_weight': must be in (0, 1], was 2`).",
        "Start from the shipped defaults (`headrace/default.toml`); override one key on the command line with",
        "`--set section.key=VALUE` (VALUE is TOML: `--set account.fx_rates={USDT = 1.0}`), validated the same way.",
        "Secrets (exchange API keys, database passwords) never go in this file: they come from the environment",
        "(`HEADRACE_CLICKHOUSE_PASSWORD`, `HEADRACE_GRAFANA_TOKEN`).",
        "",
        "| key | default | meaning |",
        "|---|---|---|",
    ]
    for key, default, help_text in describe():
        lines.append(f"| `{key}` | `{default}` | {help_text.replace('|', '&#124;')} |")
    return "\n".join(lines) + "\n"
