"""One TOML configuration, validated whole at start (pydantic v2 models, a pydantic-settings environment source).

Every key is declared in the models below with its type, default, allowed values and a one-line help text
(rendered in docs/configuration.md). A config is assembled in layers, each overriding the one before:

    built-in defaults (headrace/default.toml) < --config FILE < HEADRACE_<SECTION>__<KEY> variables < --set KEY=VALUE

and then validated as a whole. Unknown keys, wrong types and bad values raise `ConfigError` naming the dotted
key (and where the value came from). Secrets (exchange API keys, database passwords) never live here: they
come from their own environment variables.
"""

from __future__ import annotations

import copy
import math
import os
import re
import tomllib
import typing
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, PrivateAttr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import CoreSchema, core_schema
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from headrace.errors import ConfigError

DOCS = "docs/configuration.md"
ENV_PREFIX = "HEADRACE_"
ENV_DELIMITER = "__"

# ---------------------------------------------------------------------------------------------------
# durations and timeframes

_TIMEFRAME = re.compile(r"^(\d+)(s|m|h|d)$")
_UNIT_NS = {"s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}
_DURATION = re.compile(r"^(\d+)(ns|us|ms|s|m|h|d)$")
_DURATION_NS = {"ns": 1, "us": 10**3, "ms": 10**6, **_UNIT_NS}
DAY_NS = _UNIT_NS["d"]


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


def format_duration(ns: int) -> str:
    """Return `ns` in the largest unit that divides it (the inverse of `parse_duration`).

    Examples
    --------
    >>> format_duration(600 * 10**9), format_duration(0), format_duration(1500 * 10**6)
    ('10m', '0s', '1500ms')
    """
    if ns == 0:
        return "0s"
    for unit in ("d", "h", "m", "s", "ms", "us", "ns"):
        if ns % _DURATION_NS[unit] == 0:
            return f"{ns // _DURATION_NS[unit]}{unit}"
    raise AssertionError("unreachable: every integer is a whole number of ns")  # pragma: no cover


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


_NS_MIN, _NS_MAX = datetime(1677, 9, 22, tzinfo=UTC), datetime(2262, 4, 11, tzinfo=UTC)


def parse_date_ns(text: str) -> int:
    """Return an ISO 8601 date or date-time as UTC epoch ns (a time without an offset is UTC).

    Examples
    --------
    >>> parse_date_ns("1970-01-02"), parse_date_ns("1970-01-01T00:00:01+00:00")
    (86400000000000, 1000000000)
    """
    try:
        t = datetime.fromisoformat(text) if isinstance(text, str) and text[:4].isdigit() else None
    except ValueError:
        t = None
    if t is None:
        raise ValueError(f"must be an ISO 8601 date such as '2009-01-03' or '2009-01-03T00:00:00Z', was {text!r}")
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    if not _NS_MIN <= t < _NS_MAX:
        raise ValueError("must lie between 1677-09-22 and 2262-04-11 (epoch nanoseconds in 64 bits)")
    delta = t - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000


# ---------------------------------------------------------------------------------------------------
# rules: checks that run after pydantic's (strict) type check, and say in docs what they allow


def _num(x: float) -> str:
    """Format a bound for messages and docs: ``10_000_000``, ``1e15``, ``0.5``."""
    if float(x).is_integer():
        digits = str(abs(int(x)))
        if len(digits) >= 10 and digits.strip("0") == "1":
            return f"{'-' if x < 0 else ''}1e{len(digits) - 1}"
        return f"{int(x):_}"
    return repr(float(x))


class Rule:
    """A check on a validated value: `allowed` describes the accepted values (for docs and messages)."""

    def allowed(self) -> str:
        return ""

    def check(self, v: Any) -> Any:
        raise NotImplementedError  # pragma: no cover

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))


@dataclass(frozen=True, slots=True)
class Range(Rule):
    """A finite number within bounds; `lo_open`/`hi_open` exclude the bound itself."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False
    note: str = ""

    def allowed(self) -> str:
        text = f"{'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"
        return f"{text} ({self.note})" if self.note else text

    def check(self, v: Any) -> Any:
        ok = math.isfinite(v) and (v > self.lo if self.lo_open else v >= self.lo) and (
            v < self.hi if self.hi_open else v <= self.hi)
        if not ok:
            raise ValueError(f"must be in {self.allowed()}")
        return v


@dataclass(frozen=True, slots=True)
class Duration(Rule):
    """A duration string (``"250ms"``, ``"5m"``) within bounds, or one of `words` (such as ``"auto"``)."""

    lo_ns: int
    hi_ns: int
    lo_open: bool = False
    words: tuple[str, ...] = ()

    def allowed(self) -> str:
        lo, hi = format_duration(self.lo_ns), format_duration(self.hi_ns)
        text = f"a duration in {'(' if self.lo_open else '['}{lo}, {hi}]"
        return " or ".join([*(f'"{w}"' for w in self.words), text])

    def check(self, v: Any) -> Any:
        if v in self.words:
            return v
        ns = parse_duration(v)
        if not ((ns > self.lo_ns if self.lo_open else ns >= self.lo_ns) and ns <= self.hi_ns):
            raise ValueError(f"must be {self.allowed()}")
        return v


class Timeframe(Rule):
    def allowed(self) -> str:
        return '"30s", "1m", "5m", "1h", "1d" ... up to 30d'

    def check(self, v: Any) -> Any:
        if parse_timeframe(v) > 30 * DAY_NS:
            raise ValueError("timeframe must be at most 30d")
        return v


class IsoDate(Rule):
    def allowed(self) -> str:
        return "ISO 8601 date, 1677-09-22 to 2262-04-11"

    def check(self, v: Any) -> Any:
        parse_date_ns(v)
        return v


class DateFormat(Rule):
    def allowed(self) -> str:
        return '"" or a strftime format with % directives'

    def check(self, v: Any) -> Any:
        if v and "%" not in v:
            raise ValueError("must be empty (ISO 8601 only) or a strftime format such as '%d/%m/%Y %H:%M'")
        return v


class Dsn(Rule):
    def allowed(self) -> str:
        return '"", chdb://PATH, http:// or https:// (no password)'

    def check(self, v: Any) -> Any:
        if re.match(r"^https?://[^/@:]+:[^@]*@", v):
            raise ValueError("must not hold a password (secrets never live in config): "
                             "set HEADRACE_CLICKHOUSE_PASSWORD")
        if v == "" or re.match(r"^(chdb|https?)://", v):
            return v
        raise ValueError("must be empty (embedded chDB in the state dir) or a chdb://, http:// or https:// DSN")


@dataclass(frozen=True, slots=True)
class Rates(Rule):
    """A table of currency -> positive finite rate; checked before the type, to name the currency."""

    hi: float

    def allowed(self) -> str:
        return f"table of CURRENCY = rate in (0, {_num(self.hi)}]"

    def check(self, v: Any) -> Any:
        if isinstance(v, Mapping):
            for k, x in v.items():
                if isinstance(x, bool) or not isinstance(x, (int, float)) or not (
                        math.isfinite(x) and 0 < x <= self.hi):
                    raise ValueError(f"rate for {k!r} must be a number in (0, {_num(self.hi)}], was {x!r}")
        return v

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_before_validator_function(self.check, handler(source))


@dataclass(frozen=True, slots=True)
class Balances(Rule):
    """A table of ``"venue:CURRENCY" = amount``, each amount finite and >= 0; checked before the type."""

    hi: float

    def allowed(self) -> str:
        return f'table of "venue:CURRENCY" = amount in [0, {_num(self.hi)}]'

    def check(self, v: Any) -> Any:
        if isinstance(v, Mapping):
            for k, x in v.items():
                venue, _, ccy = str(k).partition(":")
                if not venue or not ccy or ":" in ccy:
                    raise ValueError(f"key {k!r} must be 'venue:CURRENCY', e.g. 'kraken:USD'")
                if isinstance(x, bool) or not isinstance(x, (int, float)) or not (
                        math.isfinite(x) and 0 <= x <= self.hi):
                    raise ValueError(f"amount for {k!r} must be a number in [0, {_num(self.hi)}], was {x!r}")
        return v

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_before_validator_function(self.check, handler(source))


class Carriers(Rule):
    """A table of ASSET -> list of ``"venue:QUOTE"`` (``"venue:*"``: any quote on that venue)."""

    def allowed(self) -> str:
        return 'table of ASSET = ["venue:QUOTE", "venue:*", ...]'

    def check(self, v: Any) -> Any:
        if isinstance(v, Mapping):
            for asset, items in v.items():
                if not isinstance(items, list) or not items:
                    raise ValueError(f"carriers of {asset!r} must be a non-empty list such as ['kraken:USD'], "
                                     f"was {items!r}")
                for x in items:
                    venue, _, quote = str(x).partition(":")
                    if not isinstance(x, str) or not venue or not quote:
                        raise ValueError(f"carrier {x!r} of {asset!r} must be 'venue:QUOTE' or 'venue:*'")
        return v

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_before_validator_function(self.check, handler(source))


class FactorBounds(Rule):
    """A table of FACTOR -> [low, high] with low <= high, both finite; checked before the type."""

    def allowed(self) -> str:
        return "table of FACTOR = [low, high]"

    def check(self, v: Any) -> Any:
        if isinstance(v, Mapping):
            for k, x in v.items():
                ok = (isinstance(x, list) and len(x) == 2
                      and all(isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) for b in x))
                if not ok or x[0] > x[1]:
                    raise ValueError(f"bounds of factor {k!r} must be [low, high] with low <= high, was {x!r}")
                v = {**v, k: [float(x[0]), float(x[1])]}
        return v

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_before_validator_function(self.check, handler(source))


@dataclass(frozen=True, slots=True)
class Pattern(Rule):
    """A string matching `regex`; `what` says in words what that allows (for messages and docs)."""

    regex: str
    what: str

    def allowed(self) -> str:
        return f"{self.regex} ({self.what})"

    def check(self, v: Any) -> Any:
        if not re.fullmatch(self.regex, v):
            raise ValueError(f"must match {self.allowed()}")
        return v


@dataclass(frozen=True, slots=True)
class IntList(Rule):
    """A non-empty list of integers, each within [lo, hi]."""

    lo: int
    hi: int

    def allowed(self) -> str:
        return f"non-empty list of integers in [{_num(self.lo)}, {_num(self.hi)}]"

    def check(self, v: Any) -> Any:
        if not v or any(not self.lo <= x <= self.hi for x in v):
            raise ValueError(f"must be a {self.allowed()}")
        return v


# shared bounds
MAX_ROWS = 10_000_000
MAX_BARS = 10_000_000
Rows = Annotated[int, Range(1, MAX_ROWS)]
Bars = Annotated[int, Range(1, MAX_BARS)]
Bps = Annotated[float, Range(0, 10_000, hi_open=True)]
Timeout = Annotated[float, Range(0, 86_400, lo_open=True)]
Wait = Annotated[float, Range(0, 86_400)]
Fraction = Annotated[float, Range(0, 1, lo_open=True)]
Share = Annotated[float, Range(0, 1)]


def _key(default: Any, help: str) -> Any:
    if isinstance(default, dict):
        return Field(default_factory=lambda: copy.deepcopy(default), description=help)
    return Field(default=default, description=help)


_SECTION = ConfigDict(frozen=True, extra="forbid", strict=True)


def _unique_names(key: str, what: str, names: Sequence[str], docs: str) -> None:
    """Raise `ConfigError` on `key` when a name of its tables is listed twice, naming both places."""
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in seen:
            raise ConfigError(key, f"{what} name {n!r} is listed twice ({key}[{seen[n]}] and {key}[{i}]): names "
                                   f"must be unique; see {docs}")
        seen[n] = i


# ---------------------------------------------------------------------------------------------------
# the sections


class StorageConfig(BaseModel):
    model_config = _SECTION

    dsn: Annotated[str, Dsn()] = _key("", "ClickHouse DSN; empty means embedded chDB at <state_dir>/clickhouse")
    state_dir: str = _key("state", "directory for the embedded database and run files (relative to the working dir)")
    batch_rows: Rows = _key(50_000, "rows buffered per table before an insert")
    connect_timeout_s: Timeout = _key(10.0, "seconds to wait for a ClickHouse server to accept a connection")
    read_timeout_s: Timeout = _key(300.0, "seconds to wait for a ClickHouse server to answer one request")
    lock_wait_s: Wait = _key(0.0, "seconds a read command waits while a replay holds the embedded store")


class ReplayConfig(BaseModel):
    model_config = _SECTION

    venue: str = _key("", "venue for files whose path does not name one")
    symbol: str = _key("", "ccxt symbol (BASE/QUOTE) for files whose path does not name one")
    quote: str = _key("", "quote currency of wide price tables (one close-price column per base asset)")
    timeframe: Annotated[str, Timeframe()] = _key("5m", "bar length built from trades and quotes")
    chunk_rows: Rows = _key(20_000, "rows of the merged stream per source slice (and per snapshot offset)")
    timestamp_unit: Literal["auto", "s", "ms", "us", "ns"] = _key(
        "auto", "unit of integer epoch timestamps: auto (from the magnitude), s, ms, us or ns")
    date_format: Annotated[str, DateFormat()] = _key(
        "", "strftime format of text dates that are not ISO 8601 (empty: ISO 8601 only)")


class ValidationConfig(BaseModel):
    model_config = _SECTION

    earliest: Annotated[str, IsoDate()] = _key(
        "2009-01-03", "rows stamped before this date (ISO 8601) are quarantined as out of range")
    latest: Annotated[str, IsoDate()] = _key(
        "2100-01-01", "rows stamped after this date (ISO 8601) are quarantined as out of range")
    max_jump_sigmas: Annotated[float, Range(0, 10_000, lo_open=True)] = _key(
        50.0, "quarantine a price whose log move from the last good one exceeds this many recent standard "
              "deviations (and max_jump_floor)")
    max_jump_floor: Annotated[float, Range(0, 100, lo_open=True)] = _key(
        0.5, "a log price move below this is never a jump, whatever the volatility")
    max_quarantined: Share = _key(1.0, "fail the run when more than this fraction of rows is quarantined")

    @model_validator(mode="after")
    def _window(self) -> ValidationConfig:
        if parse_date_ns(self.earliest) >= parse_date_ns(self.latest):
            raise ConfigError("validation.latest", f"must be after validation.earliest ({self.earliest!r}), "
                                                   f"was {self.latest!r}; see {DOCS}")
        return self

    @property
    def earliest_ns(self) -> int:
        return parse_date_ns(self.earliest)

    @property
    def latest_ns(self) -> int:
        return parse_date_ns(self.latest)


class VenueConfig(BaseModel):
    model_config = _SECTION

    taker_fee_bps: Bps = _key(10.0, "taker fee, basis points of notional")
    half_spread_bps: Bps = _key(5.0, "half spread paid when bars carry no quotes, basis points")


MAX_LATENCY_NS = DAY_NS


class AccountConfig(BaseModel):
    model_config = _SECTION

    id: str = _key("main", "account id written on orders, fills, positions and equity")
    currency: str = _key("", "valuation currency; empty means the quote currency all instruments share")
    initial_cash: Annotated[float, Range(0, 1e15, lo_open=True)] = _key(
        1.0, "starting cash in the account currency, split evenly over venues")
    latency: Annotated[str, Duration(0, MAX_LATENCY_NS)] = _key(
        "0s", "time from a decision until its order reaches the venue; the fill uses the first bar that opens at "
              "or after decision + latency")
    fill_on: Literal["next_open", "decision_close"] = _key(
        "next_open", "next_open: at the open of the first bar at or after decision + latency; decision_close: at "
                     "the decision bar's close (latency must be 0s)")
    latency_bars: Annotated[int, Range(-1, 10_000, note="-1: not set")] = _key(
        -1, "deprecated, use account.latency: 0 = fill_on decision_close, n >= 1 = latency of (n - 1) x "
            "replay.timeframe (-1: not set)")
    fx_rates: Annotated[dict[str, float], Rates(1e12)] = _key(
        {}, "fallback rates to the account currency, used while no market rate is known (no instrument prices "
            "the currency, directly or through a base quoted in both on one venue)")
    balances: Annotated[dict[str, float], Balances(1e15)] = _key(
        {}, "starting cash per venue and currency (\"kraken:USDC\" = 25000.0); empty: initial_cash in the "
            "account currency, split evenly over the venues")

    @model_validator(mode="after")
    def _fill_rule(self) -> AccountConfig:
        if self.fill_on == "decision_close" and parse_duration(self.latency) != 0:
            raise ConfigError("account.latency", f"must be '0s' when account.fill_on is 'decision_close' (a fill "
                                                 f"at the decision bar's own close), was {self.latency!r}; "
                                                 f"see {DOCS}")
        return self

    @property
    def latency_ns(self) -> int:
        return parse_duration(self.latency)


class FeaturesConfig(BaseModel):
    model_config = _SECTION

    vol_halflife_bars: Annotated[float, Range(0, MAX_BARS, lo_open=True)] = _key(
        288.0, "half-life of the EWMA volatility, in bars")
    momentum_lookback_bars: Bars = _key(288, "bars over which momentum is the log return")


class StrategyConfig(BaseModel):
    model_config = _SECTION

    name: Literal["xs_momentum", "ts_momentum"] = _key(
        "xs_momentum", "signal: xs_momentum ranks instruments (or assets) against each other; ts_momentum scores "
                       "each on its own trend (momentum over its volatility), for one asset or few")
    rebalance_bars: Bars = _key(144, "bars between rebalances")
    long_only: bool = _key(True, "drop short targets (spot venues cannot short)")
    min_instruments: Annotated[int, Range(1, 100_000)] = _key(2, "instruments with features needed before trading")
    stale_after: Annotated[str, Duration(0, 366 * DAY_NS, lo_open=True)] = _key(
        "1h", "an instrument without a new bar for this long leaves the cross-section (no new targets; its "
              "position is valued at its last price, marked stale)")


class SizingConfig(BaseModel):
    model_config = _SECTION

    target_volatility: Annotated[float, Range(0, 100, lo_open=True)] = _key(
        0.5, "annualised volatility each position is sized to")
    max_gross_leverage: Annotated[float, Range(0, 100, lo_open=True)] = _key(1.0, "cap on the sum of |weights|")
    max_weight: Fraction = _key(0.25, "cap on one instrument's |weight|")
    min_trade_weight: Share = _key(0.02, "skip trades smaller than this fraction of equity")


class RouterConfig(BaseModel):
    model_config = _SECTION

    enabled: bool = _key(False, "decide targets per asset and route each order across the venues that carry it; "
                                "off: every instrument is traded on its own venue")
    venues: list[str] = _key([], "venues that may carry orders (empty: every venue replayed)")
    quotes: list[str] = _key([], "quote currencies that may carry orders (empty: all)")
    carriers: Annotated[dict[str, list[str]], Carriers()] = _key(
        {}, "per asset, the venue:QUOTE pairs that may carry it; assets not listed use venues and quotes")
    markets: list[str] = _key([], "market metadata files (snapshots or ccxt dumps) or directories of them; an "
                                  "instrument without metadata is never traded")
    band_bps: Annotated[float, Range(0, 10_000, lo_open=True)] = _key(
        50.0, "price-protection band: children are IOC limits at most this far from the best price")
    max_volume_share: Fraction = _key(
        0.1, "depth from bars: a child may take at most this share of a bar's volume")
    arbitrage_threshold_bps: Annotated[float, Range(0, 10_000)] = _key(
        5.0, "cross-venue spread after both legs' fees that counts as an arbitrage opportunity")
    arbitrage_min_duration: Annotated[str, Duration(0, 30 * DAY_NS)] = _key(
        "5m", "an opportunity becomes a signal when it persists this long")
    quote_max_age: Annotated[str, Duration(0, 30 * DAY_NS, lo_open=True)] = _key(
        "15m", "a venue's last price older than this is not consolidated (arbitrage) nor routed to")


# tiers by size of market (2021); assets no tier lists are in "other"
DEFAULT_TIERS = {"major": ["BTC", "ETH"],
                 "large": ["ADA", "BCH", "BNB", "DOGE", "DOT", "EOS", "ETC", "FIL", "LINK", "LTC", "SOL", "TRX",
                           "UNI", "XLM", "XMR", "XRP"]}
DEFAULT_REGIME_BUDGETS = {"calm": {"major": 0.4, "large": 0.35, "other": 0.25},
                          "stressed": {"major": 0.7, "large": 0.2, "other": 0.1}}


class PortfolioConfig(BaseModel):
    model_config = _SECTION

    method: Literal["vol_target", "mean_variance", "tier_risk_parity", "regime_tiers"] = _key(
        "vol_target", "vol_target: each position on its own (score x target vol / vol); mean_variance: "
                      "max alpha - risk_aversion x variance - costs under the constraints; tier_risk_parity: a "
                      "risk budget per tier; regime_tiers: tier budgets switched by the volatility regime")
    covariance: Literal["rolling", "ewma"] = _key(
        "rolling", "rolling: exact covariance of the last window_bars returns, shrunk by Ledoit-Wolf; ewma: "
                   "exponentially weighted (halflife_bars), shrunk with shrinkage_intensity")
    window_bars: Annotated[int, Range(3, 100_000)] = _key(720, "rolling covariance window, bars")
    halflife_bars: Annotated[float, Range(0, MAX_BARS, lo_open=True)] = _key(
        168.0, "halflife of the EWMA covariance and of the factor betas, bars")
    shrinkage: Literal["ledoit_wolf", "constant_correlation", "none"] = _key(
        "ledoit_wolf", "shrinkage target of the rolling covariance; its intensity is estimated from the window")
    shrinkage_intensity: Share = _key(0.1, "ewma covariance: fixed shrinkage towards the scaled identity")
    min_bars: Annotated[int, Range(2, 100_000)] = _key(
        48, "returns an asset needs, in common with every other, before the optimiser holds it")
    risk_model: Literal["sample", "factor"] = _key(
        "sample", "sample: the shrunk covariance itself; factor: market beta + n_statistical leading components "
                  "+ specific variance")
    n_statistical: Annotated[int, Range(0, 20)] = _key(0, "statistical factors (principal components)")
    benchmark: str = _key("", "market factor: empty = equal-weighted universe, else an asset (e.g. BTC)")
    record_risk: bool = _key(
        False, "vol_target: keep the covariance anyway and record ex-ante risk, risk shares and exposures, without "
               "changing the weights (costs about 0.2 ms per bar time at 10 assets)")
    correlation_aware: bool = _key(
        False, "vol_target: scale each position by its stand-alone over its portfolio variance contribution")
    alpha_ic: Annotated[float, Range(0, 1)] = _key(
        0.05, "mean_variance: expected per-bar return = alpha_ic x score x volatility")
    risk_aversion: Annotated[float, Range(0, 1e9, lo_open=True)] = _key(
        5.0, "mean_variance: weight of the variance against the expected return")
    turnover_penalty_bps: Bps = _key(0.0, "mean_variance: penalty per unit of weight traded, beyond fees")
    net_min: Annotated[float, Range(-100, 100)] = _key(0.0, "mean_variance: lower bound of the net exposure")
    net_max: Annotated[float, Range(-100, 100)] = _key(1.0, "mean_variance: upper bound of the net exposure")
    factor_bounds: Annotated[dict[str, list[float]], FactorBounds()] = _key(
        {}, "mean_variance: [low, high] of the portfolio's exposure per factor (market, tier:NAME, pcK)")
    tiers: dict[str, list[str]] = _key(
        DEFAULT_TIERS, "tier name -> assets (base currencies); an asset in no tier belongs to the tier 'other'")
    tier_budgets: dict[str, float] = _key(
        {}, "tier_risk_parity: risk budget per tier (normalised to sum to 1; empty = equal)")
    inside_tier: Literal["erc", "inverse_vol"] = _key(
        "erc", "inside a tier: equal risk contribution, or inverse volatility")
    regime_budgets: dict[str, dict[str, float]] = _key(
        DEFAULT_REGIME_BUDGETS, "regime_tiers: per regime (calm, stressed) the tier budgets")
    regime_fast_halflife_bars: Annotated[float, Range(0, MAX_BARS, lo_open=True)] = _key(
        24.0, "regime: halflife of the market factor's recent volatility, bars")
    regime_slow_halflife_bars: Annotated[float, Range(0, MAX_BARS, lo_open=True)] = _key(
        720.0, "regime: halflife of the volatility history it is compared with, bars")
    regime_enter_ratio: Annotated[float, Range(1, 100, lo_open=True)] = _key(
        1.5, "regime: recent over historic volatility at or above which the regime is stressed")
    regime_exit_ratio: Annotated[float, Range(0, 100, lo_open=True)] = _key(
        1.0, "regime: ratio at or below which it is calm again (below enter_ratio: hysteresis)")
    regime_min_dwell_bars: Annotated[int, Range(0, MAX_BARS)] = _key(72, "regime: bars between two changes")
    regime_warmup_bars: Annotated[int, Range(0, MAX_BARS)] = _key(720, "regime: bars before the first change")

    @model_validator(mode="after")
    def _consistent(self) -> PortfolioConfig:
        def fail(key: str, reason: str) -> ConfigError:
            return ConfigError(f"portfolio.{key}", f"{reason}; see {DOCS}")
        if self.net_min > self.net_max:
            raise fail("net_min", f"is above portfolio.net_max ({self.net_max}), was {self.net_min}")
        if self.regime_exit_ratio >= self.regime_enter_ratio:
            raise fail("regime_exit_ratio", f"must be below portfolio.regime_enter_ratio ({self.regime_enter_ratio})"
                                            f", was {self.regime_exit_ratio}")
        if self.regime_slow_halflife_bars <= self.regime_fast_halflife_bars:
            raise fail("regime_slow_halflife_bars", f"must be above portfolio.regime_fast_halflife_bars "
                                                    f"({self.regime_fast_halflife_bars}), was "
                                                    f"{self.regime_slow_halflife_bars}")
        owner: dict[str, str] = {}
        for tier, assets in sorted(self.tiers.items()):
            if not assets:
                raise fail(f"tiers.{tier}", "a tier needs at least one asset")
            if tier == "other":
                raise fail("tiers", "'other' is the tier of the assets no tier lists; give yours another name")
            for a in assets:
                if a in owner:
                    raise fail("tiers", f"{a} is in both {owner[a]!r} and {tier!r}")
                owner[a] = tier
        known = set(self.tiers) | {"other"}
        for where, budgets in [("tier_budgets", self.tier_budgets),
                               *((f"regime_budgets.{r}", b) for r, b in sorted(self.regime_budgets.items()))]:
            unknown = sorted(set(budgets) - known)
            if unknown:
                raise fail(where, f"names tiers {unknown} that portfolio.tiers does not define")
            if any(not (math.isfinite(v) and v >= 0) for v in budgets.values()) or (
                    budgets and sum(budgets.values()) <= 0):
                raise fail(where, f"budgets must be finite, >= 0, with a positive sum; were {budgets}")
        bad = sorted(set(self.regime_budgets) - {"calm", "stressed"})
        if bad:
            raise fail("regime_budgets", f"regimes are calm and stressed, not {bad}")
        return self


class LiveConfig(BaseModel):
    model_config = _SECTION

    reconcile_every: Annotated[str, Duration(0, 30 * DAY_NS, lo_open=True)] = _key(
        "5m", "paper and live: reconcile cash, open orders and fills with the venues this often (and at start)")
    balance_tolerance: Annotated[float, Range(0, 1e15)] = _key(
        0.0, "a balance may differ from the venue's by this much (units of its currency) and trading go on")
    balance_tolerance_rel: Annotated[float, Range(0, 1)] = _key(
        0.0001, "... or by this fraction of the venue's balance")
    fills_window: Annotated[str, Duration(0, 30 * DAY_NS, lo_open=True)] = _key(
        "1h", "reconciliation compares the fills of this window before the check")
    rest_urls: dict[str, str] = _key(
        {}, "per venue, a REST base URL in place of the venue's own (a proxy or a stand-in); empty: the venue's")
    ws_urls: dict[str, str] = _key(
        {}, "per venue, a websocket URL in place of the venue's own; empty: the venue's")
    throttle_alert_s: Annotated[float, Range(0, 86_400, lo_open=True)] = _key(
        60.0, "raise an alert when a venue stays throttled this many seconds")


class MetricsConfig(BaseModel):
    model_config = _SECTION

    interval: Annotated[str, Duration(0, 366 * DAY_NS, lo_open=True, words=("auto",))] = _key(
        "auto", "grid on which return statistics are computed: auto (the longest bar length of the run) or a "
                "duration such as '5m'")



ML_DOCS = "docs/ml.md"
MAX_ML_BARS = 100_000


class MlModelConfig(BaseModel):
    """One online model (one ``[[ml.models]]`` table)."""

    model_config = _SECTION

    name: Annotated[str, Pattern(r"^[a-z][a-z0-9_]{0,63}$", "a lower-case letter, then up to 63 of a-z, 0-9, _")] = (
        Field(description="unique name of the model (in events, metrics and model files)"))
    kind: Literal["classifier", "regressor"] = _key(
        "classifier", "classifier: predicts P(up) over the horizon; regressor: the forward log return")
    algorithm: Literal["linear", "forest"] = _key(
        "linear", "linear: standard scaler + logistic (classifier) or linear (regressor) regression; forest: "
                  "adaptive random forest")
    pooled: bool = _key(True, "one model for all instruments, else one per instrument")
    mode: Literal["shadow", "blended"] = _key(
        "shadow", "shadow: predicted and scored with zero weight; blended: earns a weight in the alpha")


DEFAULT_ML_MODELS = [
    MlModelConfig(name="linear_shadow", kind="regressor", algorithm="linear", pooled=True, mode="shadow"),
    MlModelConfig(name="logistic_blended", kind="classifier", algorithm="linear", pooled=True, mode="blended"),
]


class MlConfig(BaseModel):
    model_config = _SECTION

    enabled: bool = _key(True, "learn and predict online with the models listed under [[ml.models]]")
    horizon_bars: Annotated[int, Range(0, MAX_ML_BARS, note="0: strategy.rebalance_bars")] = _key(
        0, "label: forward log return over this many bars of each instrument (0: strategy.rebalance_bars)")
    learn_every_bars: Annotated[int, Range(0, MAX_ML_BARS, note="0: the horizon")] = _key(
        0, "learn on every n-th bar of each instrument (0: the horizon, so labels do not overlap)")
    feature_horizons: Annotated[list[int], IntList(1, MAX_ML_BARS)] = _key(
        [1, 12, 48], "horizons of the log returns in the feature vector, bars")
    vol_halflife_bars: Annotated[float, Range(0, MAX_BARS, lo_open=True)] = _key(
        48.0, "half-life of the EWMA volatility that scales the features, bars")
    zscore_halflife_bars: Annotated[float, Range(0, MAX_BARS, lo_open=True)] = _key(
        48.0, "half-life of the EWMA the price z-score is taken against, bars")
    volume_halflife_bars: Annotated[float, Range(0, MAX_BARS, lo_open=True)] = _key(
        48.0, "half-life of the EWMA of volume the volume surprise is measured against, bars")
    min_vol_bars: Annotated[int, Range(1, MAX_BARS)] = _key(
        10, "returns before the volatility (and so the feature vector) is valid")
    store_features_every: Annotated[int, Range(0, MAX_BARS, note="0: none")] = _key(
        0, "store every n-th feature vector of each instrument in ml_features (0: none; 1: every one); the "
           "vectors the models use are stored with each prediction (ml_predictions) whatever this is")
    metrics_window: Annotated[int, Range(2, MAX_ROWS)] = _key(
        500, "prediction-outcome pairs in the rolling information coefficient")
    drift_delta: Annotated[float, Range(0, 1, lo_open=True, hi_open=True)] = _key(
        0.002, "confidence of the ADWIN drift detector (smaller: fewer, surer alarms)")
    drift_policy: Literal["none", "reset", "relearn"] = _key(
        "relearn", "on drift: none alerts only; reset starts a fresh model; relearn starts a fresh model that "
                   "relearns the last relearn_samples labels")
    relearn_samples: Annotated[int, Range(1, MAX_ROWS)] = _key(
        200, "labels a relearned model learns again after a drift")
    blend_max_weight: Share = _key(
        0.5, "cap of each blended model's weight in the alpha (the caps of all blended models sum to at most 1)")
    blend_step: Fraction = _key(0.05, "a blended model's weight moves by this per rebalance")
    blend_margin: Share = _key(0.02, "a model's IC must beat the rules' IC by this before its weight rises")
    blend_min_t: Annotated[float, Range(0, 100)] = _key(
        3.0, "and the advantage must be this many standard errors above 0 (t statistic; docs/ml.md)")
    blend_min_samples: Annotated[int, Range(1, MAX_ROWS)] = _key(
        200, "resolved decision-time samples before a blended model's weight may rise")
    skill_window: Annotated[int, Range(2, MAX_ROWS)] = _key(
        500, "decision-time prediction-outcome pairs in the ICs the blend gate compares")
    warm_start: str = _key(
        "", "a model file written by `headrace ml export` (or a name imported by `headrace ml import`); its "
            "models start from the exported state (empty: fresh models)")
    seed: Annotated[int, Range(0, 2**32 - 1)] = _key(42, "random seed of the forests")
    models: list[MlModelConfig] = _key(
        DEFAULT_ML_MODELS, "the online models, one [[ml.models]] table each; a config that lists [[ml.models]] "
                           "replaces this list")

    @model_validator(mode="after")
    def _consistent(self) -> MlConfig:
        def fail(key: str, reason: str) -> ConfigError:
            return ConfigError(f"ml.{key}", f"{reason}; see {ML_DOCS}")
        _unique_names("ml.models", "model", [m.name for m in self.models], ML_DOCS)
        if self.enabled and not self.models:
            raise fail("models", "ml.enabled is true but no model is listed: list one under [[ml.models]] or set "
                                 "ml.enabled = false")
        blended = [m.name for m in self.models if m.mode == "blended"]
        if self.blend_max_weight * len(blended) > 1:
            raise fail("blend_max_weight", f"x {len(blended)} blended models ({', '.join(blended)}) must be at most "
                                           f"1 (their weights sum to at most 1), was {self.blend_max_weight}")
        return self

RISK_DOCS = "docs/risk.md"


class RiskScenarioConfig(BaseModel):
    """One stress scenario (one ``[[risk.scenarios]]`` table)."""

    model_config = _SECTION

    name: Annotated[str, Pattern(r"^[a-z][a-z0-9_]{0,63}$", "a lower-case letter, then up to 63 of a-z, 0-9, _")] = (
        Field(description="unique name of the scenario (in stress_results and reports)"))
    kind: Literal["historical", "market", "correlation", "spread", "venue_freeze"] = Field(
        description="historical: per-asset and per-currency shocks from a file; market: the market factor moves by "
                    "size through each position's beta; correlation: all correlations 1, a size-sigma move over "
                    "horizon_bars; spread: closing every position at size times its spread; venue_freeze: the "
                    "venue's positions cannot be traded and take the market move size")
    file: str = _key("", "historical: the shock file (CSV: kind, name, shock; data/stress/README.md), relative to "
                         "the working directory or to the package's data/stress")
    size: float = _key(0.0, "market and venue_freeze: the market move (-0.3 = down 30 %); spread: the multiplier; "
                            "correlation: the normal quantile of the move (2.326 = 99 %)")
    horizon_bars: Annotated[int, Range(1, MAX_BARS)] = _key(
        24, "correlation: the move is over this many bars (volatility times its square root)")
    venue: str = _key("*", "venue_freeze: the frozen venue; * = one scenario per venue holding positions")


DEFAULT_SCENARIOS = [
    RiskScenarioConfig(name="may_2021_selloff", kind="historical", file="may_2021_selloff.csv"),
    RiskScenarioConfig(name="usdc_depeg_2023", kind="historical", file="usdc_depeg_2023.csv"),
    RiskScenarioConfig(name="covid_2020", kind="historical", file="covid_2020.csv"),
    RiskScenarioConfig(name="market_down_30", kind="market", size=-0.30),
    RiskScenarioConfig(name="correlations_to_one", kind="correlation", size=2.326, horizon_bars=24),
    RiskScenarioConfig(name="spreads_x10", kind="spread", size=10.0),
    RiskScenarioConfig(name="venue_freeze", kind="venue_freeze", size=-0.30, venue="*"),
]


class RiskConfig(BaseModel):
    model_config = _SECTION

    enabled: bool = _key(True, "measure risk every bar, check every order before it leaves and act on the limits "
                               "(docs/risk.md); false: no risk engine")
    alpha: Annotated[float, Range(0.5, 1, hi_open=True)] = _key(
        0.975, "confidence of VaR and Expected Shortfall (0.975: the Basel ES level)")
    window_bars: Annotated[int, Range(10, 100_000)] = _key(
        500, "bars of returns in the historical simulation (each position's returns over the window, applied to "
             "today's positions)")
    min_bars: Annotated[int, Range(2, 100_000)] = _key(
        50, "bars of returns before the measures are reported and the ES limit acts")
    report_every_bars: Annotated[int, Range(1, MAX_BARS)] = _key(
        1, "write a risk_reports row every n-th bar time (the measures are updated every bar whatever this is)")
    es_limit: Annotated[float, Range(0, 10)] = _key(
        0.08, "the largest one-bar Expected Shortfall, a fraction of equity (0: no limit)")
    es_measure: Literal["historical", "cornish_fisher", "max"] = _key(
        "max", "the ES the limit compares: historical simulation, Cornish-Fisher, or the larger of the two")
    es_action: Literal["scale", "reduce"] = _key(
        "scale", "on a breach: scale scales a rebalance's targets down to fit the limit; reduce moves the account to "
                 "REDUCING until the ES is back under es_resume of the limit")
    es_resume: Fraction = _key(0.8, "a limit's REDUCING ends when its utilisation falls to this")
    lvar_spread_k: Annotated[float, Range(0, 100)] = _key(
        3.0, "liquidity-adjusted VaR: the spread cost is half of (mean + k * std) of the relative spread")
    impact_coefficient: Annotated[float, Range(0, 100)] = _key(
        1.0, "liquidity-adjusted VaR: square-root impact cost coefficient * sigma * sqrt(|position| / bar volume) "
             "* |position| (0: none)")
    spread_halflife_bars: Annotated[float, Range(0, MAX_BARS, lo_open=True)] = _key(
        48.0, "half-life of the EWMA mean and variance of each instrument's relative spread and bar volume")
    max_order_notional: Annotated[float, Range(0, 1e15)] = _key(
        0.0, "pre-trade: the largest order, account currency (0: no limit)")
    max_order_fraction: Annotated[float, Range(0, 100)] = _key(
        1.0, "pre-trade: the largest order, a fraction of equity (0: no limit)")
    max_position_fraction: Annotated[float, Range(0, 100)] = _key(
        1.0, "pre-trade: the largest position per instrument after the order, a fraction of equity (0: none)")
    max_asset_fraction: Annotated[float, Range(0, 100)] = _key(
        1.0, "pre-trade: the largest position per asset across venues after the order, a fraction of equity "
             "(0: none)")
    max_gross: Annotated[float, Range(0, 100)] = _key(
        3.0, "pre-trade: the largest gross exposure after the order, a multiple of equity (0: none)")
    max_net: Annotated[float, Range(0, 100)] = _key(
        2.0, "pre-trade: the largest absolute net exposure after the order, a multiple of equity (0: none)")
    price_band_bps: Annotated[float, Range(0, 100_000)] = _key(
        500.0, "pre-trade: an order's price (its limit, else the quote it would take) at most this far from the "
               "mark, bps (fat-finger check; 0: none)")
    max_orders: Annotated[int, Range(0, 1_000_000)] = _key(
        1000, "pre-trade: orders allowed per rate_window (0: no throttle)")
    rate_window: Annotated[str, Duration(1, DAY_NS)] = _key(
        "1m", "the order-rate throttle's window")
    stress_limit: Annotated[float, Range(0, 10)] = _key(
        0.6, "the largest loss of the worst stress scenario, a fraction of equity (0: no limit)")
    stress_action: Literal["alert", "reduce"] = _key(
        "alert", "on a stress breach: alert records it; reduce also moves the account to REDUCING")
    scenarios: list[RiskScenarioConfig] = _key(
        DEFAULT_SCENARIOS, "the stress scenarios, one [[risk.scenarios]] table each; a config that lists "
                           "[[risk.scenarios]] replaces this list")
    margin_warn: Fraction = _key(0.5, "margin ratio (maintenance / margin balance) that raises a warning alert")
    margin_critical: Fraction = _key(0.8, "margin ratio that raises a critical alert and triggers margin_action")
    margin_reduce_to: Fraction = _key(0.5, "auto-reduce: close this much of the venue's positions that its margin "
                                           "ratio falls back to this")
    margin_action: Literal["alert", "reduce"] = _key(
        "reduce", "at margin_critical: alert only, or reduce the venue's derivative positions to margin_reduce_to")
    leverage: Annotated[float, Range(1, 1000)] = _key(
        5.0, "leverage derivative positions are opened with (initial margin = notional / leverage, capped by the "
             "tier's maximum)")
    leverage_tiers: str = _key("", "a leverage-tier file (ccxt fetchLeverageTiers JSON; docs/risk.md); empty: one "
                                   "tier from the market metadata's maximum leverage and maintenance_rate")
    maintenance_rate: Fraction = _key(0.01, "maintenance margin rate where no tier file says otherwise")
    commands_file: str = _key(
        "", "operator commands (`headrace risk halt|reduce|resume`), one JSON line each; empty: "
            "<storage.state_dir>/risk-commands.jsonl")

    @model_validator(mode="after")
    def _consistent(self) -> RiskConfig:
        def fail(key: str, reason: str) -> ConfigError:
            return ConfigError(f"risk.{key}", f"{reason}; see {RISK_DOCS}")
        _unique_names("risk.scenarios", "scenario", [sc.name for sc in self.scenarios], RISK_DOCS)
        for i, sc in enumerate(self.scenarios):
            if sc.kind == "historical" and not sc.file:
                raise fail(f"scenarios[{i}].file", f"historical scenario {sc.name!r} needs a shock file")
            if sc.kind != "historical" and sc.size == 0:
                raise fail(f"scenarios[{i}].size", f"{sc.kind} scenario {sc.name!r} needs a non-zero size")
        if self.min_bars > self.window_bars:
            raise fail("min_bars", f"must be at most risk.window_bars ({self.window_bars}), was {self.min_bars}")
        if self.margin_warn > self.margin_critical:
            raise fail("margin_warn", f"must be at most risk.margin_critical ({self.margin_critical}), was "
                                      f"{self.margin_warn}")
        if self.margin_reduce_to >= self.margin_critical:
            raise fail("margin_reduce_to", f"must be below risk.margin_critical ({self.margin_critical}), was "
                                           f"{self.margin_reduce_to}")
        return self


class Config(BaseSettings):
    """The whole validated config; sections are attributes (``config.account.latency``).

    A pydantic-settings model: ``Config(**raw)`` validates exactly `raw` (on top of the defaults), while
    `load_config` adds the layers (file, `EnvironmentSource`, ``--set``) in the documented order.
    """

    model_config = SettingsConfigDict(frozen=True, extra="forbid", strict=True, env_prefix=ENV_PREFIX,
                                      env_nested_delimiter=ENV_DELIMITER, case_sensitive=False)

    storage: StorageConfig = Field(default_factory=StorageConfig)
    replay: ReplayConfig = Field(default_factory=ReplayConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    venues: dict[str, VenueConfig] = Field(default_factory=dict)
    account: AccountConfig = Field(default_factory=AccountConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    sizing: SizingConfig = Field(default_factory=SizingConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    router: RouterConfig = Field(default_factory=RouterConfig)
    live: LiveConfig = Field(default_factory=LiveConfig)
    portfolio: PortfolioConfig = Field(default_factory=PortfolioConfig)
    ml: MlConfig = Field(default_factory=MlConfig)
    risk: RiskConfig = Field(default_factory=RiskConfig)

    _deprecations: tuple[str, ...] = PrivateAttr(default=())

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only the given data: the environment is one layer of `load_config`, between the file and --set.
        return (init_settings,)

    @property
    def deprecations(self) -> tuple[str, ...]:
        """Messages about deprecated keys this config used (each names the key to use instead)."""
        return self._deprecations

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
        out = self.model_dump()
        if redacted:
            out["storage"]["dsn"] = _redact(out["storage"]["dsn"])
        return out


def _redact(text: str) -> str:
    return re.sub(r"(//[^:/@]+):[^@]*@", r"\1:***@", text)


# ---------------------------------------------------------------------------------------------------
# the key tree: where a dotted key leads


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _node(parts: Sequence[str]) -> Any:
    """Return what the dotted key `parts` names: a model class, a ``dict[...]`` type, a leaf type, or None."""
    node: Any = Config
    for part in parts:
        node = _unwrap(node)
        if _is_model(node):
            field = node.model_fields.get(part)
            if field is None:
                return None
            node = field.annotation
        elif typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]
        elif typing.get_origin(node) is list and part.isdigit():
            node = typing.get_args(node)[0]  # one entry of a list (``ml.models.1``, as validation errors name it)
        else:
            return None  # below a value
    return _unwrap(node)


def _is_string_key(parts: Sequence[str]) -> bool:
    node = _node(parts)
    return node is str or (typing.get_origin(node) is Literal and all(isinstance(a, str) for a in
                                                                      typing.get_args(node)))


def _known_here(parts: Sequence[str]) -> list[str]:
    node = _node(parts)
    return sorted(node.model_fields) if _is_model(node) else []


# ---------------------------------------------------------------------------------------------------
# layers: defaults, file, environment, --set


def default_config_text() -> str:
    """Return the shipped, documented default config (``headrace/default.toml``)."""
    return resources.files("headrace").joinpath("default.toml").read_text(encoding="utf-8")


_TOML_START = tuple('[{"\'')


def parse_value(key: str, text: str, origin: str = "--set") -> Any:
    """Parse one value given as text (``--set`` or the environment) for the dotted `key`.

    The text is TOML (``0.5``, ``true``, ``"5m"``, ``[1, 2]``, ``{USDT = 1.0}``). A bare word that is not
    TOML (``USD``, ``250ms``, ``BTC/USDT``) is taken as a string for keys that hold strings (and for unknown
    keys, which validation then reports); anything else that does not parse is an error naming the key.
    """
    text = text.strip()
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError as e:
        parts = key.split(".")
        if not text.startswith(_TOML_START) and (_is_string_key(parts) or _node(parts) is None):
            return text
        raise ConfigError(key, f"value {text!r} from {origin} is not valid TOML ({e}); see {DOCS}") from e


def _set(raw: dict[str, Any], parts: Sequence[str], value: Any, key: str) -> None:
    node = raw
    for i, part in enumerate(parts[:-1]):
        kind = _node(parts[: i + 1])  # None for unknown keys, which validation reports
        is_value = kind is not None and not _is_model(kind) and typing.get_origin(kind) is not dict
        nxt = node.setdefault(part, {})
        if is_value or not isinstance(nxt, dict):
            raise ConfigError(".".join(parts[: i + 1]), f"is a value, not a table; cannot set {key!r}")
        node = nxt
    node[parts[-1]] = value


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``a.b.c=VALUE`` override to a raw config dict (VALUE as `parse_value` reads it)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or not re.match(r"^[A-Za-z0-9_.-]+$", key) or "" in key.split("."):
        raise ConfigError(key or item, f"--set takes KEY=VALUE with a dotted key, was {item!r}")
    _set(raw, key.split("."), parse_value(key, text), key)


class EnvironmentSource(PydanticBaseSettingsSource):
    """Config keys from ``HEADRACE_<SECTION>__<KEY>`` variables (``HEADRACE_VENUES__KRAKEN__TAKER_FEE_BPS=20``).

    Only names with the double underscore after the prefix are config keys; ``HEADRACE_RUN_ID``,
    ``HEADRACE_DATA`` or ``HEADRACE_CLICKHOUSE_PASSWORD`` are other settings and left alone. Key names match
    case-insensitively; venue names are lower-cased, currency codes (``account.fx_rates``) kept as written.
    A variable that names no key is an error naming the variable.
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str] | None = None) -> None:
        super().__init__(settings_cls)
        self.environ = os.environ if environ is None else environ
        self.prefix = str(self.config.get("env_prefix", ENV_PREFIX))
        self.delimiter = str(self.config.get("env_nested_delimiter", ENV_DELIMITER))

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError("EnvironmentSource reads all variables at once: call it")  # pragma: no cover

    def items(self) -> Iterator[tuple[str, str, str]]:
        """Yield (variable, dotted key, text) for every config variable, in sorted order of the variables."""
        for name in sorted(self.environ):
            if not name.upper().startswith(self.prefix) or self.delimiter not in name[len(self.prefix):]:
                continue
            yield name, self._key(name), self.environ[name]

    def _key(self, name: str) -> str:
        parts: list[str] = []
        for word in name[len(self.prefix):].split(self.delimiter):
            node = _node(parts)
            keep = typing.get_origin(node) is dict and not _is_table(node)  # currency codes keep their case
            parts.append(word if keep else word.lower())
        key = ".".join(parts)
        if "" in parts or _node(parts) is None:
            raise ConfigError(key, f"unknown key, from environment variable {name} (config variables are "
                                   f"{self.prefix}<SECTION>{self.delimiter}<KEY>, such as "
                                   f"{self.prefix}ACCOUNT{self.delimiter}LATENCY); see {DOCS}")
        return key

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, key, text in self.items():
            _set(out, key.split("."), parse_value(key, text, f"environment variable {name}"), key)
        return out


def _merge(into: dict[str, Any], top: Mapping[str, Any]) -> None:
    # tables merge key by key; any other value replaces
    for k, v in top.items():
        if isinstance(v, Mapping) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = copy.deepcopy(v)


def _is_table(node: Any) -> bool:
    """A section or a table of sections (``venues``), as opposed to a value (a number, ``account.fx_rates``)."""
    return _is_model(node) or (typing.get_origin(node) is dict and _is_model(_unwrap(typing.get_args(node)[1])))


def _leaves(raw: Mapping[str, Any], parts: Sequence[str] = ()) -> Iterator[str]:
    """Yield the dotted keys of the values in `raw` (tables of values such as fx_rates count as one value)."""
    for k, v in raw.items():
        here = [*parts, str(k)]
        if isinstance(v, Mapping) and v and _is_table(_node(here)):
            yield from _leaves(v, here)
        else:
            yield ".".join(here)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                environ: Mapping[str, str] | None = None) -> Config:
    """Load and validate a config: defaults < file `path` < ``HEADRACE_<SECTION>__<KEY>`` variables < overrides.

    `environ` defaults to ``os.environ``. Deprecated keys are folded into their replacements; each use is
    reported with ``warnings.warn(..., DeprecationWarning)`` and kept in ``config.deprecations``.

    Raises
    ------
    ConfigError
        naming the first wrong key (and where it was set), for unknown keys, wrong types and bad values.
    """
    sources: dict[str, str] = {}
    user: dict[str, Any] = {}

    def layer(data: Mapping[str, Any], origin: str) -> None:
        sources.update(dict.fromkeys(_leaves(data), origin))
        _merge(user, data)

    if path is not None:
        p = Path(path)
        try:
            layer(tomllib.loads(p.read_text(encoding="utf-8")), str(p))
        except FileNotFoundError as e:
            raise ConfigError("--config", f"file {str(p)!r} does not exist") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError("--config", f"file {str(p)!r} is not valid TOML: {e}") from e
    env = EnvironmentSource(Config, environ)
    for name, key, text in env.items():
        one: dict[str, Any] = {}
        _set(one, key.split("."), parse_value(key, text, f"environment variable {name}"), key)
        layer(one, f"environment variable {name}")
    for item in overrides or []:
        one = {}
        apply_override(one, item)
        layer(one, "--set")
    raw: dict[str, Any] = tomllib.loads(default_config_text())
    _merge(raw, user)
    config = build_config(raw, sources=sources)
    for message in config.deprecations:
        # attributed to this module, so Python's default filters do not print it a second time under
        # `python -m headrace.cli` (the CLI prints each message as one line of its own)
        warnings.warn(message, DeprecationWarning, stacklevel=1)
    return config


# ---------------------------------------------------------------------------------------------------
# validation


def build_config(raw: Mapping[str, Any], *, sources: Mapping[str, str] | None = None) -> Config:
    """Validate a raw (TOML-shaped) dict into a `Config`.

    `sources` maps the dotted keys that were set explicitly to where they were set (a file, a variable,
    ``--set``); by default every key present in `raw` counts as set, from nowhere in particular.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError("<root>", f"must be a table, was {raw!r}")
    hidden = sorted(k for k in raw if str(k).startswith("_"))  # not keys; BaseSettings would read them as options
    if hidden:
        raise ConfigError(str(hidden[0]), f"unknown key (known keys here: {', '.join(_known_here([]))}); see {DOCS}")
    if sources is None:
        sources = dict.fromkeys(_leaves(raw), "")
    raw, deprecations = _fold_deprecated(raw, sources)
    try:
        config = Config(**raw)
    except ValidationError as e:
        raise _config_error(e, sources) from None
    config._deprecations = deprecations
    return config


def _get(raw: Mapping[str, Any], key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _fold_deprecated(raw: Mapping[str, Any], sources: Mapping[str, str]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Rewrite ``account.latency_bars`` (deprecated) into ``account.latency`` and ``account.fill_on``."""
    out = copy.deepcopy(dict(raw))
    n = _get(out, "account.latency_bars")
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 10_000:
        return out, ()  # unset (-1), or a bad value that validation reports
    both = [k for k in ("account.latency", "account.fill_on") if k in sources]
    if both:
        raise ConfigError("account.latency_bars", f"is deprecated and cannot be set together with "
                                                  f"{' and '.join(both)}: set only {both[0]}; see {DOCS}")
    if n == 0:
        latency, fill_on = "0s", "decision_close"
    else:
        timeframe = _get(out, "replay.timeframe")
        timeframe = ReplayConfig().timeframe if timeframe is None else timeframe
        try:
            ns = (n - 1) * parse_timeframe(timeframe)
        except ValueError:
            return out, ()  # validation names replay.timeframe
        if ns > MAX_LATENCY_NS:
            raise ConfigError("account.latency_bars", f"means a latency of {format_duration(ns)} ({n} - 1 bars of "
                                                      f"{timeframe}), more than account.latency allows (1d), was "
                                                      f"{n}; see {DOCS}")
        latency, fill_on = format_duration(ns), "next_open"
    account = out["account"]
    account.update(latency=latency, fill_on=fill_on)
    del account["latency_bars"]
    message = (f"config key 'account.latency_bars' is deprecated: use account.latency (and account.fill_on); "
               f"latency_bars = {n} was read as account.latency = {latency!r}, account.fill_on = {fill_on!r}")
    return out, (message,)


_REASONS = {
    "bool_type": "must be true or false",
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "string_type": "must be a string",
    "model_type": "must be a table",
    "dict_type": "must be a table",
    "list_type": "must be a list",
    "missing": "is required",
}


def _dotted(loc: Sequence[Any]) -> str:
    """Return a validation error's location as a key: ``ml.models[1].kind`` (list positions in brackets)."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def _config_error(e: ValidationError, sources: Mapping[str, str]) -> ConfigError:
    err = e.errors(include_url=False)[0]
    parts = [str(p) for p in err["loc"]]
    key = _dotted(err["loc"]) or "<root>"
    if err["type"] == "extra_forbidden":
        known = ", ".join(_known_here(parts[:-1]))
        reason = f"unknown key (known keys here: {known})"
    else:
        if err["type"] == "value_error":
            reason = str(err["ctx"]["error"])
        elif err["type"] == "literal_error":
            reason = f"must be {err['ctx']['expected']}"
        else:
            reason = _REASONS.get(err["type"], err["msg"])
        shown = _redact(repr(err["input"]))
        reason = reason if ", was " in reason else f"{reason}, was {shown}"
    origin = next((o for k, o in sources.items() if o and (k == key or k.startswith(f"{key}.") or
                                                           key.startswith((f"{k}.", f"{k}[")))), "")
    where = f" (set by {origin})" if origin == "--set" else f" (set in {origin})" if origin else ""
    return ConfigError(key, f"{reason}{where}; see {DOCS}")


# ---------------------------------------------------------------------------------------------------
# reference


@dataclass(frozen=True, slots=True)
class KeyDoc:
    """One documented key: dotted name, type, default (as TOML), allowed values, environment variable, help."""

    key: str
    type: str
    default: str
    allowed: str
    env: str
    help: str
    value: Any  # the default itself
    rule: Rule | None  # the check after the type check, if any


def _type_name(tp: Any) -> str:
    tp = _unwrap(tp)
    if typing.get_origin(tp) is Literal:
        return "string"
    if typing.get_origin(tp) is dict:
        return f"table of {_type_name(typing.get_args(tp)[1])}s"
    if typing.get_origin(tp) is list and _is_model(_unwrap(typing.get_args(tp)[0])):
        return "list of tables"
    return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(tp, str(tp))


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, BaseModel):
        return _toml(v.model_dump())
    if isinstance(v, dict):
        return "{}" if not v else "{ " + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return repr(v)


def _rule(field: FieldInfo) -> Rule | None:
    return next((m for m in field.metadata if isinstance(m, Rule)), None)


def _allowed(field: FieldInfo) -> str:
    tp = _unwrap(field.annotation)
    if typing.get_origin(tp) is Literal:
        return ", ".join(_toml(a) for a in typing.get_args(tp))
    rule = _rule(field)
    if rule is not None:
        return rule.allowed()
    return "true or false" if tp is bool else "any string" if tp is str else ""


def _entry_model(tp: Any) -> type[BaseModel] | None:
    """The model of one entry when `tp` is a list of tables (``ml.models``), else None."""
    tp = _unwrap(tp)
    if typing.get_origin(tp) is list and _is_model(_unwrap(typing.get_args(tp)[0])):
        entry: type[BaseModel] = _unwrap(typing.get_args(tp)[0])
        return entry
    return None


def describe_entries(key: str) -> list[KeyDoc]:
    """Return the keys of one entry of the list of tables `key` (``ml.models`` -> ``ml.models[].name``, ...).

    A list of tables is set whole (a file's ``[[ml.models]]`` tables, or an inline array from ``--set`` or
    the environment), so its entries' keys have no variable of their own; a required key's default is
    ``(required)``.
    """
    entry = _entry_model(_node(key.split(".")))
    if entry is None:
        raise ValueError(f"{key!r} is not a list of tables")
    return [KeyDoc(d.key, d.type, d.default, d.allowed, "", d.help, d.value, d.rule)
            for d in describe_keys(entry, f"{key}[].")]


def describe_keys(cls: type[BaseModel] = Config, prefix: str = "") -> list[KeyDoc]:
    """Return every documented key with its type, default, allowed values and environment variable.

    A list of tables (``ml.models``) is one key, set whole; `describe_entries` documents its entries' keys.
    """
    out: list[KeyDoc] = []
    for name, field in cls.model_fields.items():
        tp = _unwrap(field.annotation)
        if _is_model(tp):
            out += describe_keys(tp, f"{prefix}{name}.")
        elif typing.get_origin(tp) is dict and _is_model(_unwrap(typing.get_args(tp)[1])):
            out += describe_keys(_unwrap(typing.get_args(tp)[1]), f"{prefix}{name}.<name>.")
        else:
            key = f"{prefix}{name}"
            default = None if field.is_required() else field.get_default(call_default_factory=True)
            env = ENV_PREFIX + key.replace("<name>", "<NAME>").upper().replace(".", ENV_DELIMITER)
            entry = _entry_model(tp)
            allowed = (f"[[{key}]] tables of {', '.join(entry.model_fields)}" if entry is not None
                       else _allowed(field))
            out.append(KeyDoc(key, _type_name(tp), "(required)" if field.is_required() else _toml(default), allowed,
                              env, field.description or "", default, _rule(field)))
    return out


def describe(cls: type[BaseModel] = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """Return (key, default, help) for every documented key, for docs and ``--help``."""
    return [(d.key, repr(d.value), d.help) for d in describe_keys(cls, prefix)]


def reference_markdown() -> str:
    """Return the configuration reference (docs/configuration.md): every key, its default, bounds and meaning."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- generated by `make docs` from headrace/config.py; do not edit by hand -->",
        "",
        "One TOML configuration, validated whole at start: an unknown key, a wrong type or a bad value stops",
        "the run with one line naming the dotted key, the value and where it was set",
        "(`config key 'sizing.max_weight': must be in (0, 1], was 2 (set by --set); see docs/configuration.md`).",
        "",
        "## Where values come from",
        "",
        "A config is built in layers; each layer overrides the keys it sets, and tables merge key by key:",
        "",
        "1. the shipped defaults (`headrace/default.toml`, the values in the table below);",
        "2. the file given with `--config FILE`;",
        "3. environment variables `HEADRACE_<SECTION>__<KEY>`;",
        "4. `--set section.key=VALUE` on the command line (repeatable; the last one wins).",
        "",
        "So a `--set` beats the environment, which beats the file, which beats the defaults.",
        "",
        "**Values** given as text (`--set`, environment) are TOML: `0.5`, `true`, `\"5m\"`, `[1, 2]`,",
        "`{USDT = 1.0}`. A bare word that is not TOML (`USD`, `250ms`, `BTC/USDT`) is read as a string when the",
        "key holds a string; anything else that does not parse (`[1,`, `{USDT = }`, `\"open`, `1.2.3` for a",
        "number) is an error naming the key.",
        "",
        "**Environment variables.** Every key below can be set as `HEADRACE_` + section + `__` + key, upper",
        "case, with `__` between the parts: `HEADRACE_ACCOUNT__LATENCY=250ms`,",
        "`HEADRACE_VENUES__KRAKEN__TAKER_FEE_BPS=20`, `HEADRACE_ACCOUNT__FX_RATES='{USDT = 1.0}'`. Key and",
        "venue names match in any case (venue names are read lower case); currency codes in",
        "`HEADRACE_ACCOUNT__FX_RATES__<CODE>` are kept as written. A `HEADRACE_…__…` variable that names no",
        "key stops the run, naming the variable. Names without the double underscore (`HEADRACE_RUN_ID`,",
        "`HEADRACE_DATA`, `HEADRACE_CONFIG`, `HEADRACE_CLICKHOUSE_PASSWORD`, `HEADRACE_GRAFANA_TOKEN`) are",
        "other settings, not config keys.",
        "",
        "**Secrets** (exchange API keys, database passwords) never go in the config, in any layer: they come",
        "from their own environment variables (`HEADRACE_CLICKHOUSE_PASSWORD`, `HEADRACE_GRAFANA_TOKEN`), and a",
        "DSN holding a password is refused.",
        "",
        "**Deprecated keys.** `account.latency_bars` (a count of bars) is still read and converted at start:",
        "`0` becomes `account.fill_on = \"decision_close\"` with `account.latency = \"0s\"`; `n >= 1` becomes",
        "`account.fill_on = \"next_open\"` with `account.latency` = (n - 1) x `replay.timeframe`. The run",
        "prints a deprecation line naming `account.latency`; setting `latency_bars` together with",
        "`account.latency` or `account.fill_on` is an error.",
        "",
        "**Lists of tables** (`[[ml.models]]`) are set whole: a config file that lists `[[ml.models]]` tables",
        "replaces the default list, and from `--set` or the environment the value is a TOML inline array of",
        "tables (`--set 'ml.models=[{name = \"a\", kind = \"regressor\"}]'`); keys left out of an entry take",
        "the defaults in the `ml.models[].…` rows. An error in one entry names it by position",
        "(`ml.models[1].kind`, counting from 0).",
        "",
        "Durations are a whole number and a unit: `ns`, `us`, `ms`, `s`, `m`, `h`, `d` (`250ms`, `90s`, `1h`).",
        "Ranges are written `[a, b]` (both ends allowed) or `(a, b]` (a itself excluded).",
        "",
        "## Keys",
        "",
        "| key | type | default | allowed | meaning | environment variable |",
        "|---|---|---|---|---|---|",
    ]

    def cell(text: str) -> str:
        return text.replace("|", "&#124;")

    for d in describe_keys():
        allowed = f"`{cell(d.allowed)}`" if d.allowed else ""
        lines.append(f"| `{d.key}` | {d.type} | `{cell(d.default)}` | {allowed} | {cell(d.help)} | `{d.env}` |")
        if d.type == "list of tables":
            for e in describe_entries(d.key):
                allowed = f"`{cell(e.allowed)}`" if e.allowed else ""
                lines.append(f"| `{e.key}` | {e.type} | `{cell(e.default)}` | {allowed} | {cell(e.help)} | "
                             f"(in `{d.env}`) |")
    return "\n".join(lines) + "\n"


__all__ = [
    "AccountConfig", "Config", "EnvironmentSource", "FeaturesConfig", "MetricsConfig", "MlConfig", "MlModelConfig",
    "ReplayConfig", "RiskConfig", "RiskScenarioConfig", "SizingConfig", "StorageConfig", "StrategyConfig",
    "ValidationConfig", "VenueConfig", "apply_override", "build_config", "default_config_text", "describe",
    "describe_entries", "describe_keys", "format_duration", "load_config", "parse_date_ns", "parse_duration",
    "parse_timeframe", "parse_value", "reference_markdown",
]
