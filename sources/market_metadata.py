"""Market metadata offline: ccxt market dumps and snapshots loaded into ccxt's exchange classes and `Market`s.

A dump is a JSON object ``symbol -> ccxt market`` (what ``exchange.load_markets()`` returns), plain or
gzipped. A snapshot is the same markets wrapped with where they came from::

    {"venue": "binance", "source": "venue" | "<path of the dump>", "precision_mode": "TICK_SIZE",
     "markets": {symbol: ccxt market, ...}}

Markets without precision (some dated futures and options in the ccxt fixtures) are left out: an
instrument without metadata is never traded. No network is used: ccxt's exchange object gets the markets
through ``set_markets``.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt

from headrace.errors import ConfigError
from operators.execution.markets import Market, PrecisionMode, dec

MODES: dict[int, PrecisionMode] = {ccxt.DECIMAL_PLACES: "DECIMAL_PLACES", ccxt.TICK_SIZE: "TICK_SIZE",
                                   ccxt.SIGNIFICANT_DIGITS: "SIGNIFICANT_DIGITS"}
CCXT_MODE = {name: code for code, name in MODES.items()}
HYPERLIQUID_SIGNIFICANT_DIGITS = 5  # ccxt's hyperliquid price_to_precision: 5 significant digits, capped decimals


@dataclass(frozen=True, slots=True)
class VenueMarkets:
    """One venue's markets: raw ccxt dicts, their `Market` records, and where the metadata came from."""

    venue: str
    source: str  # a snapshot or dump path, or "venue" when loaded online
    precision_mode: PrecisionMode
    raw: dict[str, dict[str, Any]]
    markets: dict[str, Market]
    incomplete: tuple[str, ...]  # symbols left out for lack of precision


def read_dump(path: Path) -> dict[str, dict[str, Any]]:
    """Read a ccxt markets dump (``.json`` or ``.json.gz``)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        data: dict[str, dict[str, Any]] = json.load(f)
    return data


def guess_mode(raw: dict[str, dict[str, Any]]) -> PrecisionMode:
    """Return the precision mode a dump was written in: tick size when any step is a fraction, else decimals.

    >>> guess_mode({"A/B": {"precision": {"amount": 5, "price": 2}}})
    'DECIMAL_PLACES'
    >>> guess_mode({"A/B": {"precision": {"amount": 1.0, "price": 0.01}}})
    'TICK_SIZE'
    """
    for m in raw.values():
        for key in ("amount", "price"):
            v = (m.get("precision") or {}).get(key)
            if v is not None and 0 < float(v) < 1:
                return "TICK_SIZE"
    return "DECIMAL_PLACES"


def _limit(m: dict[str, Any], name: str, bound: str) -> Decimal | None:
    v = ((m.get("limits") or {}).get(name) or {}).get(bound)
    return None if v is None else dec(v)


def _decimals(step: Decimal) -> int:
    """Digits after the point of a step, as ccxt's ``precision_from_string``: 0.00001 -> 5, 1.0 -> 0."""
    return max(0, -step.normalize().as_tuple().exponent)  # type: ignore[operator]


def to_market(venue: str, m: dict[str, Any], mode: PrecisionMode) -> Market:
    """Turn one ccxt market dict into a `Market` (Hyperliquid's price rule: significant digits and decimals)."""
    amount_p, price_p = dec(m["precision"]["amount"]), dec(m["precision"]["price"])
    sig: int | None = None
    if venue == "hyperliquid":
        sig = HYPERLIQUID_SIGNIFICANT_DIGITS
        max_decimals = 8 if m.get("spot") else 6
        price_p = Decimal(1).scaleb(-(max_decimals - _decimals(amount_p)))
    return Market(instrument=f"{venue}:{m['symbol']}", venue=venue, symbol=m["symbol"], base=m["base"],
                  quote=m["quote"], type=m["type"], precision_mode=mode, amount_precision=amount_p,
                  price_precision=price_p, contract_size=dec(m.get("contractSize") or 1),
                  inverse=bool(m.get("inverse")), min_amount=_limit(m, "amount", "min"),
                  max_amount=_limit(m, "amount", "max"), min_price=_limit(m, "price", "min"),
                  max_price=_limit(m, "price", "max"), min_cost=_limit(m, "cost", "min"),
                  max_cost=_limit(m, "cost", "max"), taker_fee=dec(m.get("taker") or 0),
                  maker_fee=dec(m.get("maker") or 0), price_significant_digits=sig)


def _complete(m: dict[str, Any]) -> bool:
    p = m.get("precision") or {}
    return p.get("amount") is not None and p.get("price") is not None


def venue_markets(venue: str, raw: dict[str, dict[str, Any]], source: str,
                  mode: PrecisionMode | None = None) -> VenueMarkets:
    """Build a venue's `Market`s from ccxt market dicts, leaving out the markets without precision."""
    mode = mode or guess_mode(raw)
    ok = {s: m for s, m in raw.items() if _complete(m)}
    return VenueMarkets(venue=venue, source=source, precision_mode=mode, raw=ok,
                        markets={s: to_market(venue, m, mode) for s, m in ok.items()},
                        incomplete=tuple(sorted(set(raw) - set(ok))))


def load_dump(path: Path, venue: str | None = None) -> VenueMarkets:
    """Load a ccxt dump; the venue defaults to the file name before its first ``.`` or ``_``.

    ``markets/ccxt/binance.json`` -> binance; ``markets/ccxt-dumps/bitget_mkt_meta.json.gz`` -> bitget.
    """
    venue = venue or path.name.split(".")[0].split("_")[0]
    return venue_markets(venue, read_dump(path), source=str(path))


def write_snapshot(path: Path, venue: str, markets: dict[str, dict[str, Any]], source: str = "venue",
                   precision_mode: PrecisionMode | None = None) -> None:
    """Write a venue's ccxt markets to a JSON snapshot, with their source and precision mode."""
    doc = {"venue": venue, "source": source, "precision_mode": precision_mode or guess_mode(markets),
           "markets": markets}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, sort_keys=True, default=str), encoding="utf-8")
    tmp.replace(path)


def load_snapshot(path: Path) -> VenueMarkets:
    """Read a snapshot written by `write_snapshot`; its metadata's source is the snapshot's path.

    The source the snapshot itself recorded is kept after a ``<-``: ``snap.json <- venue``.
    """
    doc = json.loads(path.read_text(encoding="utf-8"))
    return venue_markets(doc["venue"], doc["markets"], source=f"{path} <- {doc['source']}",
                         mode=doc["precision_mode"])


def ccxt_exchange(vm: VenueMarkets) -> Any:
    """Return ccxt's own exchange class for the venue, with the markets set and no network used.

    Each market is completed with ccxt's own defaults (`safe_market_structure`): recorded dumps leave out
    keys such as ``inverse`` that ccxt's order methods read.
    """
    ex = getattr(ccxt, vm.venue)()
    ex.precisionMode = CCXT_MODE[vm.precision_mode]
    ex.set_markets({s: ex.safe_market_structure(m) for s, m in vm.raw.items()})
    return ex


def load_venue_file(path: Path) -> VenueMarkets:
    """Load a snapshot (a JSON object with ``venue`` and ``markets``) or a ccxt dump, telling them apart."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, EOFError) as e:
        raise ConfigError("router.markets", f"market metadata {str(path)!r} cannot be read: {e}"[:300]) from None
    if not isinstance(doc, dict):
        raise ConfigError("router.markets", f"market metadata {str(path)!r} is not a JSON object")
    try:
        if isinstance(doc.get("markets"), dict) and isinstance(doc.get("venue"), str):
            return venue_markets(doc["venue"], doc["markets"], source=f"{path} <- {doc.get('source', '?')}",
                                 mode=doc.get("precision_mode"))
        venue = path.name.split(".")[0].split("_")[0]
        return venue_markets(venue, doc, source=str(path))
    except (KeyError, TypeError, ValueError, ArithmeticError) as e:
        raise ConfigError("router.markets", f"market metadata {str(path)!r} is malformed: "
                                            f"{type(e).__name__}: {e}"[:300]) from None


def load_markets(paths: Sequence[str | Path]) -> dict[str, Market]:
    """Load every venue's markets from `paths` (files, or directories of ``*.json``/``*.json.gz``), by instrument.

    A later file's market replaces an earlier one for the same instrument. A missing path is a `ConfigError`
    naming it (``router.markets``).
    """
    out: dict[str, Market] = {}
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted([*p.glob("*.json"), *p.glob("*.json.gz")])
        elif p.is_file():
            files = [p]
        else:
            raise ConfigError("router.markets", f"{str(p)!r} does not exist")
        for f in files:
            vm = load_venue_file(f)
            out.update({m.instrument: m for m in vm.markets.values()})
    return out
