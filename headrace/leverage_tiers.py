"""Leverage tiers (margin brackets) of derivative instruments, read from market metadata files.

Three shapes are read, told apart by their content (plain JSON or ``.json.gz``):

1. ccxt ``fetchLeverageTiers`` results: ``{symbol: [{"minNotional", "maxNotional", "maxLeverage",
   "maintenanceMarginRate", "info": {...}}, ...]}``. The maintenance amount is Binance's ``info.cum`` or
   Bybit's ``info.mmDeduction`` when present; otherwise Binance's continuity rule below.
2. ccxt's ``leverageBrackets`` option (Binance; in ccxt's recorded fixtures under ``options.leverageBrackets``):
   ``{symbol: [[notional floor, maintenance rate], ...]}``. It carries no leverage, so every tier gets
   `default_max_leverage`; the maintenance amount follows Binance's rule that keeps maintenance margin continuous:
   ``cum_k = cum_(k-1) + floor_k x (rate_k - rate_(k-1))``, ``cum_0 = 0``.
3. A ccxt markets dump or snapshot (``{symbol: market}`` or ``{"venue", "markets": {...}}``): every swap or future
   with ``limits.leverage.max`` gets one tier of that leverage and `default_maintenance_rate`.

Paths are read in order and the first file that gives a symbol its tiers wins: list real tier files before a
markets dump. Keys are ccxt symbols (``"XRP/USDT:USDT"``); `by_instrument` keys them as the margin core does.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from headrace.errors import DataSourceError
from operators.risk.margin import Tier, check_tiers

_AMOUNT_KEYS = ("cum", "mmDeduction")  # Binance, Bybit


def _read(path: Path) -> Any:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise DataSourceError(str(path), f"cannot read JSON: {e}") from e


def _float(path: Path, key: str, v: Any) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise DataSourceError(str(path), f"{key}: expected a number, got {v!r}") from None
    if math.isnan(x):
        raise DataSourceError(str(path), f"{key}: expected a number, got NaN")
    return x


def _checked(path: Path, key: str, tiers: list[Tier]) -> tuple[Tier, ...]:
    try:
        check_tiers(tiers)
    except ValueError as e:
        raise DataSourceError(str(path), f"{key}: {e}") from None
    return tuple(tiers)


def _from_brackets(path: Path, key: str, rows: Any, max_leverage: float | None) -> tuple[Tier, ...]:
    """Binance brackets ``[[floor, rate], ...]`` -> tiers with cum from the continuity rule."""
    if max_leverage is None:
        raise DataSourceError(str(path), f"{key}: brackets carry no leverage; give default_max_leverage")
    if not isinstance(rows, list) or not rows:
        raise DataSourceError(str(path), f"{key}: expected a list of [floor, rate] pairs")
    floors, rates = [], []
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != 2:
            raise DataSourceError(str(path), f"{key}[{i}]: expected [floor, rate], got {row!r}")
        floors.append(_float(path, f"{key}[{i}][0]", row[0]))
        rates.append(_float(path, f"{key}[{i}][1]", row[1]))
    tiers, cum = [], 0.0
    for i, (floor, rate) in enumerate(zip(floors, rates, strict=True)):
        if i:
            cum += floor * (rate - rates[i - 1])
        cap = floors[i + 1] if i + 1 < len(floors) else math.inf
        tiers.append(Tier(cap, float(max_leverage), rate, cum))
    return _checked(path, key, tiers)


def _from_ccxt_tiers(path: Path, key: str, rows: list[Any]) -> tuple[Tier, ...]:
    """ccxt ``fetchLeverageTiers`` entries -> tiers (maintenance amount from info, else continuity)."""
    tiers: list[Tier] = []
    prev_rate, cum = 0.0, 0.0
    for i, row in enumerate(rows):
        k = f"{key}[{i}]"
        if not isinstance(row, dict):
            raise DataSourceError(str(path), f"{k}: expected a tier object, got {row!r}")
        for field in ("maxNotional", "maxLeverage", "maintenanceMarginRate"):
            if row.get(field) is None:
                raise DataSourceError(str(path), f"{k}.{field} is missing")
        cap = _float(path, f"{k}.maxNotional", row["maxNotional"])
        rate = _float(path, f"{k}.maintenanceMarginRate", row["maintenanceMarginRate"])
        floor = _float(path, f"{k}.minNotional", row.get("minNotional") or 0)
        cum += floor * (rate - prev_rate) if i else 0.0
        info = row.get("info") or {}
        given = next((info[a] for a in _AMOUNT_KEYS if info.get(a) not in (None, "")), None)
        amount = cum if given is None else _float(path, f"{k}.info.cum", given)
        tiers.append(Tier(cap, _float(path, f"{k}.maxLeverage", row["maxLeverage"]), rate, amount))
        prev_rate = rate
    if tiers:
        last = tiers[-1]
        tiers[-1] = Tier(math.inf, last.max_leverage, last.maintenance_rate, last.maintenance_amount)
    return _checked(path, key, tiers)


def _from_market(path: Path, key: str, m: dict[str, Any], rate: float | None) -> tuple[Tier, ...] | None:
    """One tier from a contract market's ``limits.leverage.max``; None for spot or no leverage limit."""
    if not (m.get("swap") or m.get("future") or m.get("type") in ("swap", "future")):
        return None
    lev = ((m.get("limits") or {}).get("leverage") or {}).get("max")
    if lev is None:
        return None
    if rate is None:
        raise DataSourceError(str(path), f"{key}: a market's leverage gives no maintenance rate; "
                              "give default_maintenance_rate")
    return _checked(path, key, [Tier(math.inf, _float(path, f"{key}.limits.leverage.max", lev), rate)])


def _load_one(path: Path, venue: str, default_maintenance_rate: float | None,
              default_max_leverage: float | None) -> dict[str, tuple[Tier, ...]]:
    doc = _read(path)
    if not isinstance(doc, dict):
        raise DataSourceError(str(path), "expected a JSON object at the top level")
    if doc.get("venue") not in (None, venue) or doc.get("exchange") not in (None, venue):
        found = doc.get("venue") or doc.get("exchange")
        raise DataSourceError(str(path), f"is for venue {found!r}, not {venue!r}")
    brackets = (doc.get("options") or {}).get("leverageBrackets") or doc.get("leverageBrackets")
    if isinstance(brackets, dict):
        return {s: _from_brackets(path, f"leverageBrackets.{s}", rows, default_max_leverage)
                for s, rows in brackets.items()}
    if "exchange" in doc and "methods" in doc:
        raise DataSourceError(str(path), "key options.leverageBrackets is missing (no tiers in this fixture)")
    markets = doc["markets"] if isinstance(doc.get("markets"), dict) else doc
    out: dict[str, tuple[Tier, ...]] = {}
    for s, v in markets.items():
        if isinstance(v, list):
            out[s] = _from_ccxt_tiers(path, s, v)
        elif isinstance(v, dict):
            t = _from_market(path, s, v, default_maintenance_rate)
            if t is not None:
                out[s] = t
        else:
            raise DataSourceError(str(path), f"{s}: expected a list of tiers or a market object")
    return out


def load_tiers(path_or_paths: str | Path | Sequence[str | Path], venue: str, *,
               default_maintenance_rate: float | None = None,
               default_max_leverage: float | None = None) -> dict[str, tuple[Tier, ...]]:
    """Return ``{ccxt symbol: tiers}`` of `venue` from one or more files (module docstring for the shapes).

    `default_maintenance_rate` completes the one-tier fallback of a markets file, `default_max_leverage` the
    leverage of bracket tables that have none (each is required only when such data is read).
    """
    paths = [path_or_paths] if isinstance(path_or_paths, (str, Path)) else list(path_or_paths)
    out: dict[str, tuple[Tier, ...]] = {}
    for p in paths:
        for s, tiers in _load_one(Path(p), venue, default_maintenance_rate, default_max_leverage).items():
            out.setdefault(s, tiers)
    return out


def by_instrument(venue: str, tiers: Mapping[str, Sequence[Tier]]) -> dict[str, tuple[Tier, ...]]:
    """Key tiers by instrument (``"binance:XRP/USDT:USDT"``), as `operators.risk.margin.venue_margin` wants.

    >>> list(by_instrument("binance", {"XRP/USDT:USDT": (Tier(math.inf, 20.0, 0.025),)}))
    ['binance:XRP/USDT:USDT']
    """
    return {f"{venue}:{s}": tuple(t) for s, t in tiers.items()}
