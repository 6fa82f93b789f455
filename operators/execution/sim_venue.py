"""The simulated venue of replay and paper modes: market orders fill at a bar price plus costs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from headrace.events import Bar, Fill, Order, split_instrument, stable_id


@dataclass(frozen=True, slots=True)
class VenueCosts:
    """Costs of trading on one venue: taker fee and the half spread used when bars carry no quotes."""

    taker_fee_bps: float
    half_spread_bps: float


Quote = tuple[float, float]  # best bid, best ask


class SimulatedVenue:
    """Fill market orders against bars: price ± half spread, taker fee on the notional.

    The half spread comes from the quote known at the fill's time when there is one (``(ask - bid) /
    (ask + bid)`` of the price), else from the venue's configured ``half_spread_bps``. A fill at a bar's
    close knows the bar's own closing bid/ask; a fill at a bar's open does not (they are stamped up to one
    bar later), so the caller passes the quote known then (the last one stamped at or before the open).

    Examples
    --------
    >>> venue = SimulatedVenue({"x": VenueCosts(taker_fee_bps=10.0, half_spread_bps=5.0)})
    >>> bar = Bar(instrument="x:A/B", ts_open=0, ts_event=60, open=100.0, high=101.0, low=99.0,
    ...           close=100.0, volume=1.0, trades=1, bid=99.0, ask=101.0)
    >>> order = Order(order_id="o1", account="main", instrument="x:A/B", ts_event=0, side="buy",
    ...               amount=2.0, reason="rebalance", target_weight=0.1)
    >>> fill = venue.execute(order, bar, at="open")  # the bar's closing quote is not known at its open
    >>> round(fill.price, 6), round(fill.fee, 6), fill.slippage_bps
    (100.05, 0.2001, 5.0)
    >>> round(venue.execute(order, bar, at="open", quote=(99.9, 100.1)).price, 6)
    100.1
    """

    def __init__(self, costs: Mapping[str, VenueCosts]) -> None:
        self.costs = dict(costs)

    def half_spread(self, instrument: str, quote: Quote | None) -> float:
        """Return the half spread as a fraction of price: from `quote` when it is usable, else configured."""
        if quote is not None and 0 < quote[0] <= quote[1]:
            return (quote[1] - quote[0]) / (quote[1] + quote[0])
        venue = split_instrument(instrument)[0]
        return self.costs[venue].half_spread_bps / 1e4

    def execute(self, order: Order, bar: Bar, at: Literal["open", "close"], quote: Quote | None = None) -> Fill:
        """Fill `order` completely at `bar`'s open or close, paying half the spread and the taker fee.

        `quote` is the bid/ask known at the fill's time. Without it, a fill at the close takes the bar's own
        closing quote (when the bar has one) and a fill at the open the configured half spread.
        """
        venue, _, _, ccy = split_instrument(order.instrument)
        if quote is None and at == "close" and bar.bid is not None and bar.ask is not None:
            quote = (bar.bid, bar.ask)
        hs = self.half_spread(order.instrument, quote)
        ref = bar.open if at == "open" else bar.close
        price = ref * (1.0 + hs) if order.side == "buy" else ref * (1.0 - hs)
        fee = price * order.amount * self.costs[venue].taker_fee_bps / 1e4
        return Fill(fill_id=stable_id("fill", order.order_id), order_id=order.order_id, account=order.account,
                    instrument=order.instrument, ts_event=bar.ts_open if at == "open" else bar.ts_event,
                    side=order.side, price=price, amount=order.amount, fee=fee, fee_currency=ccy,
                    liquidity="taker", slippage_bps=hs * 1e4)
