"""Conversion of quote currencies into the account currency."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from headrace.errors import ConfigError
from headrace.events import split_instrument


@dataclass(frozen=True, slots=True)
class FxTable:
    """How each currency converts into the account currency: a fixed rate, or traded instruments' marks.

    A currency may be priced by several instruments (``BTC/USDT`` on two venues, or ``USDT/BTC``): the
    rate comes from the one with the freshest mark (the latest mark time), so an instrument whose data has
    stopped never sets the rate while another still trades. Ties go to the first candidate in `via`
    order (direct quotes before inverse ones, each in sorted order), so the choice is deterministic.

    Examples
    --------
    >>> fx = FxTable.resolve("BTC", ["binance:ETH/BTC", "binance:BTC/USDT", "kraken:BTC/USDT"], fixed={})
    >>> fx.rate("BTC", {}), fx.rate("USDT", {"binance:BTC/USDT": 50_000.0})
    (1.0, 2e-05)
    >>> marks = {"binance:BTC/USDT": 50_000.0, "kraken:BTC/USDT": 40_000.0}
    >>> fx.rate("USDT", marks, {"binance:BTC/USDT": 60, "kraken:BTC/USDT": 120})  # kraken's mark is fresher
    2.5e-05
    """

    currency: str
    fixed: tuple[tuple[str, float], ...]
    via: tuple[tuple[str, str, bool], ...]  # currency, instrument, invert; several per currency possible

    @classmethod
    def resolve(cls, currency: str, universe: Iterable[str], fixed: Mapping[str, float]) -> FxTable:
        """Find rates for every quote currency in `universe`; raise `ConfigError` naming one without."""
        universe = sorted(universe)
        quotes = sorted({split_instrument(i)[3] for i in universe})
        via: list[tuple[str, str, bool]] = []
        for q in quotes:
            if q == currency or q in fixed:
                continue
            direct = [i for i in universe if split_instrument(i)[2:] == (q, currency)]
            inverse = [i for i in universe if split_instrument(i)[2:] == (currency, q)]
            if not direct and not inverse:
                raise ConfigError(f"account.fx_rates.{q}",
                                  f"no rate from {q!r} to the account currency {currency!r}: no instrument "
                                  f"{q}/{currency} is replayed; set a fixed rate")
            via += [(q, i, False) for i in direct] + [(q, i, True) for i in inverse]
        return cls(currency=currency, fixed=tuple(sorted(fixed.items())), via=tuple(via))

    def rate(self, ccy: str, marks: Mapping[str, float], mark_ts: Mapping[str, int] | None = None) -> float | None:
        """Return the value of one unit of `ccy` in the account currency, None before any mark is known.

        `mark_ts` gives each mark's time; without it every mark counts as equally fresh.
        """
        if ccy == self.currency:
            return 1.0
        for c, r in self.fixed:
            if c == ccy:
                return r
        best: tuple[float, bool] | None = None
        best_ts = 0
        found = False
        for c, inst, invert in self.via:
            if c != ccy:
                continue
            found = True
            m = marks.get(inst)
            if m is None:
                continue
            ts = mark_ts.get(inst, 0) if mark_ts is not None else 0
            if best is None or ts > best_ts:  # strictly fresher: ties keep the earlier candidate
                best, best_ts = (m, invert), ts
        if not found:
            raise KeyError(f"no fx rate for {ccy!r}")
        if best is None:
            return None
        return 1.0 / best[0] if best[1] else best[0]


def infer_currency(universe: Iterable[str], configured: str) -> str:
    """Return the account currency: the configured one, else the quote currency all instruments share."""
    if configured:
        return configured
    quotes = sorted({split_instrument(i)[3] for i in universe})
    if len(quotes) != 1:
        raise ConfigError("account.currency", f"instruments are quoted in {quotes!r}; set the account currency "
                                              "(and account.fx_rates for currencies no instrument prices)")
    return quotes[0]
