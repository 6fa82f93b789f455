"""The simulated venue's matching of an IOC limit order against the visible levels of one book side."""

from __future__ import annotations

from collections.abc import Sequence

from operators.router.sor import Level


def match_ioc(side: str, amount: float, limit_price: float,
              levels: Sequence[Level]) -> tuple[tuple[float, float], ...]:
    """Fill an immediate-or-cancel limit order: ``(price, amount)`` pairs taken from the levels that cross.

    `levels` is the side the order takes (asks for a buy, bids for a sell), best first. A level crosses when
    its price is at or better than `limit_price` (a buy: at or below; a sell: at or above); crossing levels
    are taken in level order until `amount` is filled. The fill is partial when depth runs out and empty
    when nothing crosses; whatever is left is cancelled, never rests.

    >>> asks = [Level(100.0, 1.0), Level(100.5, 2.0), Level(101.0, 5.0)]
    >>> match_ioc("buy", 2.5, 100.5, asks)
    ((100.0, 1.0), (100.5, 1.5))
    >>> match_ioc("buy", 9.0, 100.5, asks)
    ((100.0, 1.0), (100.5, 2.0))
    >>> match_ioc("sell", 1.0, 99.0, [Level(98.0, 3.0)])
    ()
    """
    if side not in ("buy", "sell"):
        raise ValueError(f"side must be 'buy' or 'sell', got {side!r}")
    fills: list[tuple[float, float]] = []
    left = amount
    for lv in levels:
        if left <= 0:
            break
        crosses = lv.price <= limit_price if side == "buy" else lv.price >= limit_price
        if not crosses or lv.amount <= 0:
            continue
        take = min(lv.amount, left)
        fills.append((lv.price, take))
        left -= take
    return tuple(fills)
