"""Conversion of quote currencies into the account currency."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from headrace.errors import ConfigError
from headrace.events import split_instrument


@dataclass(frozen=True, slots=True)
class FxTable:
    """How each currency converts into the account currency: a fixed rate, or a traded instrument's mark.

    Examples
    --------
    >>> fx = FxTable.resolve("BTC", ["binance:ETH/BTC", "binance:BTC/USDT"], fixed={})
    >>> fx.rate("BTC", {}), fx.rate("USDT", {"binance:BTC/USDT": 50_000.0})
    (1.0, 2e-05)
    """

    currency: str
    fixed: tuple[tuple[str, float], ...]
    via: tuple[tuple[str, str, bool], ...]  # currency, instrument, invert

    @classmethod
    def resolve(cls, currency: str, universe: Iterable[str], fixed: Mapping[str, float]) -> FxTable:
        """Find a rate for every quote currency in `universe`; raise `ConfigError` naming one without."""
        universe = sorted(universe)
        quotes = sorted({split_instrument(i)[3] for i in universe})
        via: list[tuple[str, str, bool]] = []
        for q in quotes:
            if q == currency or q in fixed:
                continue
            direct = [i for i in universe if split_instrument(i)[2:] == (q, currency)]
            inverse = [i for i in universe if split_instrument(i)[2:] == (currency, q)]
            if direct:
                via.append((q, direct[0], False))
            elif inverse:
                via.append((q, inverse[0], True))
            else:
                raise ConfigError(f"account.fx_rates.{q}",
                                  f"no rate from {q!r} to the account currency {currency!r}: no instrument "
                                  f"{q}/{currency} is replayed; set a fixed rate")
        return cls(currency=currency, fixed=tuple(sorted(fixed.items())), via=tuple(via))

    def rate(self, ccy: str, marks: Mapping[str, float]) -> float | None:
        """Return the value of one unit of `ccy` in the account currency, None before its mark is known."""
        if ccy == self.currency:
            return 1.0
        for c, r in self.fixed:
            if c == ccy:
                return r
        for c, inst, invert in self.via:
            if c == ccy:
                m = marks.get(inst)
                if m is None:
                    return None
                return 1.0 / m if invert else m
        raise KeyError(f"no fx rate for {ccy!r}")


def infer_currency(universe: Iterable[str], configured: str) -> str:
    """Return the account currency: the configured one, else the quote currency all instruments share."""
    if configured:
        return configured
    quotes = sorted({split_instrument(i)[3] for i in universe})
    if len(quotes) != 1:
        raise ConfigError("account.currency", f"instruments are quoted in {quotes!r}; set the account currency "
                                              "(and account.fx_rates for currencies no instrument prices)")
    return quotes[0]
