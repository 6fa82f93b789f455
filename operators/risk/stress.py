"""Stress testing: the portfolio P&L of historical and hypothetical scenarios, in the account currency.

A portfolio is a list of `StressPosition` (signed value in the account currency per risk key, with the key's beta
to the market factor, its per-bar return volatility and its relative half spread) and a list of `CashBalance`
(per venue and currency). `stress_pnl` gives one `StressResult` per scenario: the P&L (negative = loss), the P&L
as a fraction of equity, the key that lost most and one line saying how it was computed. Nothing here reads files
or a clock; the historical shock files are built and loaded by `headrace.stress_data`.

Formulas, for positions i with value v_i, base asset a_i, venue u_i, beta b_i, volatility s_i, half spread h_i:

- ``historical``: every position moves by its base asset's shock, cash by its currency's shock:
  ``pnl = sum_i v_i * r(a_i) + sum_cash c_k * q(ccy_k)``. The asset shock r(a) is the listed shock of `a`; for an
  asset that is itself a shocked currency (a USDC/USDT position) its currency shock; else the ``"*"`` default;
  else 0, and the detail line counts those unshocked positions. The currency shock q(c) is the move of `c` against
  the file's reference, the data's USD or USDT price (USDC -0.125 in the March 2023 de-peg); an unlisted cash
  currency is that reference and moves by 0. When the file lists the account currency itself (BTC in the May 2021
  file, for an account kept in BTC), every move is rebased on it, ``(1 + r) / (1 + r(account)) - 1``, so the
  account currency never moves and a BTC account holding ETH loses only ETH's move against BTC. Asset shocks are
  moves against the reference, so a
  position's quote currency does not enter its own P&L: in the de-peg BTC/USDC rose 12.8 % while USDC fell 12.5 %
  against USD, and the BTC/USDC position's value in USD moved by BTC's own USD move (-1.3 %). Compounding the
  quote's shock on top, ``v (1 + r)(1 + q) - v``, would count the de-peg twice. A book that bought BTC with USDC
  loses through its USDC *cash* (negative when borrowed, so it gains).
- ``market``: the market factor (the equal-weighted mean return of all keys) moves by `size`:
  ``pnl = sum_i v_i * b_i * size``.
- ``correlation``: all correlations go to 1, so every key moves `z` standard deviations (over `horizon_bars`
  bars) in the same direction, the one that hurts: ``pnl = -z * sqrt(horizon_bars) * |sum_i v_i * s_i|``. With
  correlation 1 a long-short book's hedges cancel only as far as their volatilities allow: a long and a short of
  equal value cancel exactly only when their volatilities are equal.
- ``spread``: the cost of closing every position at `size` times today's spread:
  ``pnl = -size * sum_i |v_i| * h_i``.
- ``venue_freeze``: the frozen venue's positions cannot be traded and take the market move through their betas,
  the others are closed at today's spread: ``pnl = sum_{u_i = venue} v_i * b_i * size - sum_{u_i != venue}
  |v_i| * h_i``. Cash on the frozen venue is not lost (a venue default, losing it, is a separate scenario not
  modelled here). With venue ``"*"`` there is one result per venue holding positions or cash, named
  ``"name:venue"`` (none when the book is empty).

``pnl_fraction = pnl / equity`` (NaN when equity is not positive). ``worst_key`` is the key (or, for cash, the
currency) with the most negative contribution, "" when nothing loses.

>>> pos = [StressPosition("binance:BTC/USDT", "binance", "BTC", "USDT", 1000.0, 1.2, 0.01, 0.0005),
...        StressPosition("kraken:ETH/USDC", "kraken", "ETH", "USDC", -500.0, 0.8, 0.015, 0.001)]
>>> cash = [CashBalance("kraken", "USDC", 2000.0)]
>>> scenarios = [Scenario("crash", "historical", shocks=(("BTC", -0.3), ("*", -0.4)),
...                       currency_shocks=(("USDC", -0.1),)),
...              Scenario("beta", "market", size=-0.3), Scenario("corr", "correlation", size=2.0, horizon_bars=4),
...              Scenario("spread", "spread", size=10.0), Scenario("frozen", "venue_freeze", size=-0.3, venue="kraken")]
>>> [(r.scenario, round(r.pnl, 6), r.worst_key) for r in stress_pnl(pos, cash, 10_000.0, scenarios, "USDT")]
... # doctest: +NORMALIZE_WHITESPACE
[('crash', -300.0, 'binance:BTC/USDT'), ('beta', -240.0, 'binance:BTC/USDT'), ('corr', -10.0, 'binance:BTC/USDT'),
 ('spread', -10.0, 'binance:BTC/USDT'), ('frozen', 119.5, 'binance:BTC/USDT')]

(crash: 1000 * -0.3 - 500 * -0.4 + 2000 * -0.1 = -300; beta: (1000 * 1.2 - 500 * 0.8) * -0.3 = -240;
corr: -2 * sqrt(4) * |1000 * 0.01 - 500 * 0.015| = -10, the short ETH hedges three quarters of it; spread:
10 * (1000 * 0.0005 + 500 * 0.001) = 10; frozen: the short ETH on kraken gains -500 * 0.8 * -0.3 = 120,
closing BTC on binance costs 0.5.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

KINDS = ("historical", "market", "correlation", "spread", "venue_freeze")


@dataclass(frozen=True, slots=True)
class StressPosition:
    """One risk key's position: `value` is signed, in the account currency."""

    key: str  # the risk key: an instrument "venue:BASE/QUOTE" (plain account) or an asset "BTC" (router)
    venue: str
    asset: str  # base asset, e.g. "BTC"
    quote: str  # quote currency of the instrument holding it (router: the listing's quote)
    value: float  # signed position value in the account currency
    beta: float  # beta of the key's returns to the market factor (equal-weighted mean return of all keys)
    vol: float  # per-bar return volatility of the key
    half_spread: float  # relative half spread (fraction, e.g. 0.0005)


@dataclass(frozen=True, slots=True)
class CashBalance:
    """Cash held on one venue in one currency; `value` is in the account currency."""

    venue: str
    currency: str
    value: float


@dataclass(frozen=True, slots=True)
class Scenario:
    """One stress scenario; which fields matter depends on `kind` (see the module docstring)."""

    name: str
    kind: str  # "historical" | "market" | "correlation" | "spread" | "venue_freeze"
    shocks: tuple[tuple[str, float], ...] = ()  # historical: per base asset simple return; "*" = unlisted assets
    currency_shocks: tuple[tuple[str, float], ...] = ()  # historical: per currency its move vs the account currency
    size: float = 0.0  # market: factor move; spread: multiplier; correlation: z; venue_freeze: the frozen move
    horizon_bars: int = 1  # correlation: vol scaled by sqrt(horizon_bars)
    venue: str = ""  # venue_freeze: the frozen venue; "*" = one result per venue holding positions or cash


@dataclass(frozen=True, slots=True)
class StressResult:
    """The P&L of one scenario (negative = loss) and how it came about."""

    scenario: str  # the scenario name; venue_freeze with "*" -> "name:venue"
    kind: str
    pnl: float  # account currency, negative = loss
    pnl_fraction: float  # pnl / equity (NaN when equity is not positive)
    worst_key: str  # the key (or currency) that lost most in it, "" when none
    detail: str  # one line: how it was computed


def _pct(x: float) -> str:
    return f"{x * 100:+g}%"


def _worst(contributions: dict[str, float]) -> str:
    """The key with the most negative contribution (first in order on ties), "" when none is negative."""
    key, low = "", 0.0
    for k, c in contributions.items():
        if c < low:
            key, low = k, c
    return key


def _add(contributions: dict[str, float], key: str, pnl: float) -> None:
    contributions[key] = contributions.get(key, 0.0) + pnl


def _check(scenario: Scenario) -> None:
    """Raise a ValueError naming the scenario when its fields do not fit its kind."""
    s = scenario
    where = f"stress scenario {s.name!r} ({s.kind})"
    if s.kind not in KINDS:
        raise ValueError(f"stress scenario {s.name!r}: unknown kind {s.kind!r}, expected one of {', '.join(KINDS)}")
    if not math.isfinite(s.size):
        raise ValueError(f"{where}: size must be finite, got {s.size}")
    for name, shock in (*s.shocks, *s.currency_shocks):
        if not (math.isfinite(shock) and shock >= -1.0):
            raise ValueError(f"{where}: shock of {name!r} must be a finite return >= -1, got {shock}")
    if s.kind == "historical" and not (s.shocks or s.currency_shocks):
        raise ValueError(f"{where}: has no shocks and no currency shocks")
    if s.kind == "market" and s.size == 0.0:
        raise ValueError(f"{where}: size (the market factor move, e.g. -0.3) must not be 0")
    if s.kind == "market" and s.size < -1.0:
        raise ValueError(f"{where}: size {s.size} is a market move below -100%")
    if s.kind == "correlation" and not s.size > 0:
        raise ValueError(f"{where}: size (the normal quantile z, e.g. 2.326) must be > 0, got {s.size}")
    if s.kind == "correlation" and s.horizon_bars < 1:
        raise ValueError(f"{where}: horizon_bars must be >= 1, got {s.horizon_bars}")
    if s.kind == "spread" and not s.size > 0:
        raise ValueError(f"{where}: size (the spread multiplier, e.g. 10) must be > 0, got {s.size}")
    if s.kind == "venue_freeze" and not s.venue:
        raise ValueError(f"{where}: needs a venue (or '*' for every venue)")
    if s.kind == "venue_freeze" and s.size < -1.0:
        raise ValueError(f"{where}: size {s.size} is a market move below -100%")


def _historical(s: Scenario, positions: Sequence[StressPosition], cash: Sequence[CashBalance],
                account_currency: str) -> tuple[float, dict[str, float], str]:
    shocks = {a: x for a, x in s.shocks if a != "*"}
    currency = dict(s.currency_shocks)
    default = dict(s.shocks).get("*")

    def move(x: str) -> float | None:  # against the file's reference (the data's USD or USDT price)
        return shocks[x] if x in shocks else currency.get(x)

    base = move(account_currency) or 0.0  # the account currency's own move: every other move is rebased on it

    def rebase(r: float) -> float:
        return (1.0 + r) / (1.0 + base) - 1.0

    contributions: dict[str, float] = {}
    unshocked = 0
    for p in positions:
        r = base if p.asset == account_currency else move(p.asset)
        if r is None and default is not None:
            r = default
        elif r is None:
            r, unshocked = base, unshocked + 1  # not shocked: no move against the account currency
        _add(contributions, p.key, p.value * rebase(r))
    for c in cash:  # an unlisted currency is the reference itself (a stable coin or USD): it moves by 0
        _add(contributions, c.currency, c.value * rebase(move(c.currency) or 0.0))
    listed = len(shocks)
    parts = [f"historical: {listed} asset shocks on {len(positions)} positions"]
    if default is not None:
        parts.append(f"'*' {_pct(default)} for unlisted assets")
    if unshocked:
        parts.append(f"{unshocked} positions in unlisted assets not shocked (no '*')")
    shown = {c: q for c, q in currency.items() if c != account_currency}
    if shown:
        parts.append("currencies " + " ".join(f"{c} {_pct(q)}" for c, q in sorted(shown.items())))
    if base:
        parts.append(f"moves rebased on the account currency {account_currency}'s own {_pct(base)}")
    return sum(contributions.values()), contributions, "; ".join(parts)


def _one(s: Scenario, positions: Sequence[StressPosition], cash: Sequence[CashBalance], account_currency: str,
         venue: str) -> tuple[float, dict[str, float], str]:
    """The P&L, per-key contributions and detail line of one (checked) scenario; `venue` for venue_freeze."""
    contributions: dict[str, float] = {}
    n = len(positions)
    if s.kind == "historical":
        return _historical(s, positions, cash, account_currency)
    if s.kind == "market":
        for p in positions:
            _add(contributions, p.key, p.value * p.beta * s.size)
        return sum(contributions.values()), contributions, f"market {_pct(s.size)} through betas on {n} positions"
    if s.kind == "correlation":
        scale = s.size * math.sqrt(s.horizon_bars)
        exposure = sum(p.value * p.vol for p in positions)
        direction = 1.0 if exposure >= 0 else -1.0  # every key moves the way that hurts the book
        for p in positions:
            _add(contributions, p.key, -scale * direction * p.value * p.vol)
        detail = (f"correlation 1: -{s.size:g} sd x sqrt({s.horizon_bars}) x |sum value*vol| = {exposure:.6g} "
                  f"on {n} positions")
        return -scale * abs(exposure), contributions, detail
    if s.kind == "spread":
        for p in positions:
            _add(contributions, p.key, -s.size * abs(p.value) * p.half_spread)
        return sum(contributions.values()), contributions, f"close {n} positions at {s.size:g}x today's spread"
    frozen = 0
    for p in positions:
        if p.venue == venue:
            frozen += 1
            _add(contributions, p.key, p.value * p.beta * s.size)
        else:
            _add(contributions, p.key, -abs(p.value) * p.half_spread)
    detail = (f"venue {venue} frozen: {frozen} positions take market {_pct(s.size)} through betas, {n - frozen} "
              f"elsewhere closed at today's spread; cash on {venue} kept")
    return sum(contributions.values()), contributions, detail


def stress_pnl(positions: Sequence[StressPosition], cash: Sequence[CashBalance], equity: float,
               scenarios: Sequence[Scenario], account_currency: str) -> list[StressResult]:
    """The P&L of every scenario on the book, in scenario order (venue_freeze ``"*"`` expands per venue, sorted).

    Raises ValueError naming the scenario when one is malformed, or naming the position when a value is not
    finite.
    """
    for p in positions:
        for field in ("value", "beta", "vol", "half_spread"):
            if not math.isfinite(getattr(p, field)):
                raise ValueError(f"stress position {p.key!r}: {field} is not finite ({getattr(p, field)})")
    for c in cash:
        if not math.isfinite(c.value):
            raise ValueError(f"stress cash {c.venue}:{c.currency}: value is not finite ({c.value})")
    if not math.isfinite(equity):
        raise ValueError(f"stress: equity is not finite ({equity})")
    results: list[StressResult] = []
    for s in scenarios:
        _check(s)
        if s.kind == "venue_freeze" and s.venue == "*":
            venues = sorted({p.venue for p in positions} | {c.venue for c in cash})
            runs = [(f"{s.name}:{v}", v) for v in venues]
        else:
            runs = [(s.name, s.venue)]
        for name, venue in runs:
            pnl, contributions, detail = _one(s, positions, cash, account_currency, venue)
            fraction = pnl / equity if equity > 0 else math.nan
            results.append(StressResult(name, s.kind, pnl, fraction, _worst(contributions), detail))
    return results


def worst(results: Sequence[StressResult]) -> StressResult | None:
    """The result with the most negative P&L (the first on ties), None for no results.

    >>> a, b = StressResult("a", "market", -5.0, -0.05, "", ""), StressResult("b", "spread", -7.0, -0.07, "", "")
    >>> worst([a, b]).scenario
    'b'
    """
    return min(results, key=lambda r: r.pnl, default=None)
