"""Which venue instruments carry each asset: the router's universe, resolved from the config before the flow."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from headrace.events import split_instrument
from operators.execution.markets import Market


@dataclass(frozen=True, slots=True)
class Listing:
    """One instrument that may carry an asset: its market rules (None: no metadata, never traded) and costs.

    `fee_rate` is the taker fee as a fraction: the market's own when its metadata has one, else the venue's
    configured fee. `half_spread` (a fraction of price) prices a bar that carries no bid/ask.
    """

    instrument: str
    venue: str
    base: str
    quote: str
    market: Market | None
    fee_rate: float
    half_spread: float


def carries(instrument: str, *, venues: Sequence[str], quotes: Sequence[str],
            carriers: Mapping[str, Sequence[str]]) -> bool:
    """Return whether the router may send orders for `instrument` (``[router]`` venues, quotes, carriers).

    Examples
    --------
    >>> carries("kraken:BTC/USDC", venues=[], quotes=[], carriers={"BTC": ["kraken:USD", "binanceus:*"]})
    False
    >>> carries("binanceus:BTC/USDC", venues=[], quotes=[], carriers={"BTC": ["kraken:USD", "binanceus:*"]})
    True
    >>> carries("kraken:ETH/USD", venues=["kraken"], quotes=["USD"], carriers={"BTC": ["binanceus:*"]})
    True
    """
    venue, symbol, base, quote = split_instrument(instrument)
    if ":" in symbol:  # derivatives carry exposure, not the asset itself; the spot router leaves them out
        return False
    if base in carriers:
        return any(c in (f"{venue}:{quote}", f"{venue}:*") for c in carriers[base])
    return (not venues or venue in venues) and (not quotes or quote in quotes)


def listings_by_asset(universe: Iterable[str], markets: Mapping[str, Market], *,
                      venues: Sequence[str], quotes: Sequence[str], carriers: Mapping[str, Sequence[str]],
                      fee_rate: Mapping[str, float],
                      half_spread: Mapping[str, float]) -> dict[str, tuple[Listing, ...]]:
    """Group the instruments the router may trade by asset, sorted by instrument within each asset.

    `markets` is keyed by instrument; `fee_rate` and `half_spread` by venue (the configured fallbacks).

    >>> from operators.execution.markets import market_example
    >>> m = market_example(instrument="x:BTC/USDT", venue="x")
    >>> by = listings_by_asset(["x:BTC/USDT", "y:BTC/USD", "x:ETH/USDT"], {"x:BTC/USDT": m}, venues=[],
    ...                        quotes=[], carriers={}, fee_rate={"x": 0.001, "y": 0.002},
    ...                        half_spread={"x": 1e-4, "y": 1e-4})
    >>> [(a, [(li.instrument, li.market is not None, li.fee_rate) for li in ls]) for a, ls in by.items()]
    [('BTC', [('x:BTC/USDT', True, 0.001), ('y:BTC/USD', False, 0.002)]), ('ETH', [('x:ETH/USDT', False, 0.001)])]
    """
    out: dict[str, list[Listing]] = {}
    for inst in sorted(set(universe)):
        if not carries(inst, venues=venues, quotes=quotes, carriers=carriers):
            continue
        venue, _, base, quote = split_instrument(inst)
        market = markets.get(inst)
        fee = float(market.taker_fee) if market is not None and market.taker_fee > 0 else fee_rate[venue]
        out.setdefault(base, []).append(Listing(inst, venue, base, quote, market, fee, half_spread[venue]))
    return {a: tuple(ls) for a, ls in sorted(out.items())}
