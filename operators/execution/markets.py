"""Market metadata of one venue's instrument and the exact rounding of orders to its precision and limits.

Amounts truncate toward zero; a limit price rounds to the side that does not worsen the order (a buy rounds
down, a sell rounds up). Arithmetic is in `Decimal`, so a rounded value is exactly on the venue's grid.
The precision modes are ccxt's: decimal places, tick size and significant digits.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal
from typing import Literal

PrecisionMode = Literal["DECIMAL_PLACES", "TICK_SIZE", "SIGNIFICANT_DIGITS"]
MarketType = Literal["spot", "swap", "future", "option"]
Side = Literal["buy", "sell"]
Number = Decimal | float | int | str


def dec(x: Number) -> Decimal:
    """Return `x` as a Decimal; a float goes through its shortest repr, as ccxt does.

    >>> dec(0.1), dec("1e-5"), dec(3)
    (Decimal('0.1'), Decimal('0.00001'), Decimal('3'))
    """
    return x if isinstance(x, Decimal) else Decimal(repr(x) if isinstance(x, float) else str(x))


@dataclass(frozen=True, slots=True)
class Market:
    """One instrument's rules on its venue: precision, limits, contract size and fees.

    `amount_precision` and `price_precision` are read under `precision_mode` (a number of decimals or of
    significant digits, or a step). `price_significant_digits`, when set, is a second price rule on top of
    the step (Hyperliquid: at most 5 significant digits, never fewer than the integer digits). Limits are
    None when the venue sets none; `min_cost`/`max_cost` bound the notional in the quote currency.
    """

    instrument: str  # "venue:BASE/QUOTE[:SETTLE]"
    venue: str
    symbol: str
    base: str
    quote: str
    type: MarketType
    precision_mode: PrecisionMode
    amount_precision: Decimal
    price_precision: Decimal
    contract_size: Decimal = Decimal(1)
    inverse: bool = False
    min_amount: Decimal | None = None
    max_amount: Decimal | None = None
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    min_cost: Decimal | None = None
    max_cost: Decimal | None = None
    taker_fee: Decimal = Decimal(0)
    maker_fee: Decimal = Decimal(0)
    price_significant_digits: int | None = None

    def notional(self, amount: Decimal, price: Decimal) -> Decimal:
        """Return the order's value in the quote currency (an inverse contract is worth its size in quote).

        >>> m = market_example()
        >>> m.notional(Decimal("0.5"), Decimal("100"))
        Decimal('50.0')
        """
        if self.inverse:
            return amount * self.contract_size
        return amount * self.contract_size * price


def market_example(**changes: object) -> Market:
    """A small spot market for examples: steps 0.001 of amount and 0.01 of price, min notional 5."""
    base = dict(instrument="x:BTC/USDT", venue="x", symbol="BTC/USDT", base="BTC", quote="USDT", type="spot",
                precision_mode="TICK_SIZE", amount_precision=Decimal("0.001"), price_precision=Decimal("0.01"),
                min_amount=Decimal("0.001"), max_amount=Decimal("1000"), min_cost=Decimal("5"))
    base.update(changes)
    return Market(**base)  # type: ignore[arg-type]


def _step(mode: PrecisionMode, precision: Decimal, x: Decimal) -> Decimal:
    """Return the grid step at `x` for a precision read under `mode`."""
    if mode == "TICK_SIZE":
        return precision
    if mode == "DECIMAL_PLACES":
        return Decimal(1).scaleb(-int(precision))
    return Decimal(1).scaleb(x.adjusted() - int(precision) + 1)  # significant digits


def to_grid(x: Decimal, mode: PrecisionMode, precision: Decimal, rounding: str) -> Decimal:
    """Round `x` onto the grid of `precision` under `mode`, in the direction `rounding` (a decimal constant).

    >>> to_grid(Decimal("1.2345"), "TICK_SIZE", Decimal("0.05"), ROUND_FLOOR)
    Decimal('1.20')
    >>> to_grid(Decimal("1.2345"), "DECIMAL_PLACES", Decimal(2), ROUND_CEILING)
    Decimal('1.24')
    >>> to_grid(Decimal("98765"), "SIGNIFICANT_DIGITS", Decimal(2), ROUND_DOWN)
    Decimal('9.8E+4')
    """
    if x == 0:
        return x
    step = _step(mode, precision, x)
    return (x / step).to_integral_value(rounding=rounding) * step


def round_amount(market: Market, amount: Number) -> Decimal:
    """Truncate `amount` toward zero onto the market's amount grid.

    >>> round_amount(market_example(), 0.12399)
    Decimal('0.123')
    """
    return to_grid(dec(amount), market.precision_mode, market.amount_precision, ROUND_DOWN)


def round_price(market: Market, price: Number, side: Side) -> Decimal:
    """Round a limit `price` to the side that does not worsen the order: a buy down, a sell up.

    >>> m = market_example()
    >>> round_price(m, 100.123, "buy"), round_price(m, 100.123, "sell")
    (Decimal('100.12'), Decimal('100.13'))
    >>> hl = market_example(precision_mode="TICK_SIZE", price_precision=Decimal("0.1"), price_significant_digits=5)
    >>> round_price(hl, 1234.56, "sell"), round_price(hl, 123456.7, "buy")
    (Decimal('1234.6'), Decimal('123456'))
    """
    p = dec(price)
    rounding = ROUND_FLOOR if side == "buy" else ROUND_CEILING
    if market.price_significant_digits is not None and p != 0:
        digits = max(market.price_significant_digits, p.adjusted() + 1)  # the integer part is never rounded
        p = to_grid(p, "SIGNIFICANT_DIGITS", Decimal(digits), rounding)
    return to_grid(p, market.precision_mode, market.price_precision, rounding)


@dataclass(frozen=True, slots=True)
class Rounded:
    """An order on the market's grid and within its limits."""

    amount: Decimal
    price: Decimal
    notional: Decimal


@dataclass(frozen=True, slots=True)
class Skipped:
    """An order that is not sent: `limit` names the rule it breaks (``limits.cost.min``, ``precision.amount``)."""

    limit: str
    reason: str


def check_order(market: Market, side: Side, amount: Number, price: Number) -> Rounded | Skipped:
    """Round an order to the market's precision and check it against the market's limits.

    >>> m = market_example()
    >>> check_order(m, "buy", 0.1239, 100.129)
    Rounded(amount=Decimal('0.123'), price=Decimal('100.12'), notional=Decimal('12.31476'))
    >>> check_order(m, "buy", 0.0009, 100.0).limit
    'precision.amount'
    >>> check_order(m, "sell", 0.04, 100.0).reason
    'notional 4.000 below limits.cost.min 5'
    """
    a, p = round_amount(market, amount), round_price(market, price, side)
    if a <= 0:
        step = market.amount_precision
        return Skipped("precision.amount", f"amount {amount} rounds to {a} at precision.amount {step}")
    if p <= 0:
        return Skipped("precision.price", f"price {price} rounds to {p} at precision.price {market.price_precision}")
    cost = market.notional(a, p)
    for name, value, low, high in (("amount", a, market.min_amount, market.max_amount),
                                   ("price", p, market.min_price, market.max_price),
                                   ("cost", cost, market.min_cost, market.max_cost)):
        label = "notional" if name == "cost" else name
        if low is not None and value < low:
            return Skipped(f"limits.{name}.min", f"{label} {value} below limits.{name}.min {low}")
        if high is not None and value > high:
            return Skipped(f"limits.{name}.max", f"{label} {value} above limits.{name}.max {high}")
    return Rounded(amount=a, price=p, notional=cost)
