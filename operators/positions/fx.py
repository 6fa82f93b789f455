"""Conversion of quote currencies into the account currency."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from headrace.errors import ConfigError
from headrace.events import split_instrument


@dataclass(frozen=True, slots=True)
class FxTable:
    """How each currency converts into the account currency: from the market first, fixed rates as a fallback.

    A market rate comes from an instrument quoting the currency against the account currency, directly
    (``USDC/USD``) or inversely (``USD/USDC``), or is triangulated through a common base on one venue
    (``BTC/USD`` and ``BTC/USDC`` on Kraken: one USDC is worth ``mark(BTC/USD) / mark(BTC/USDC)`` USD). A
    currency may be priced by several of these: the rate comes from the freshest (a triangle is as fresh
    as its older leg), so an instrument whose data has stopped never sets the rate while another still
    trades. Ties go to the first candidate in `via` order (direct, inverse, then triangles, each sorted),
    so the choice is deterministic. A fixed rate (``account.fx_rates``) is used only while no market rate
    is known: before the first marks, or for a currency no instrument prices.

    Examples
    --------
    >>> fx = FxTable.resolve("BTC", ["binance:ETH/BTC", "binance:BTC/USDT", "kraken:BTC/USDT"], fixed={})
    >>> fx.rate("BTC", {}), fx.rate("USDT", {"binance:BTC/USDT": 50_000.0})
    (1.0, 2e-05)
    >>> marks = {"binance:BTC/USDT": 50_000.0, "kraken:BTC/USDT": 40_000.0}
    >>> fx.rate("USDT", marks, {"binance:BTC/USDT": 60, "kraken:BTC/USDT": 120})  # kraken's mark is fresher
    2.5e-05
    >>> usd = FxTable.resolve("USD", ["kraken:BTC/USD", "kraken:BTC/USDC"], fixed={"USDC": 1.0})
    >>> usd.rate("USDC", {}), usd.rate("USDC", {"kraken:BTC/USD": 20_000.0, "kraken:BTC/USDC": 21_000.0})
    (1.0, 0.9523809523809523)
    """

    currency: str
    fixed: tuple[tuple[str, float], ...]
    via: tuple[tuple[str, str, bool], ...]  # currency, instrument, invert; several per currency possible
    tri: tuple[tuple[str, str, str], ...] = ()  # currency, BASE/currency, BASE/account currency (one venue)

    @classmethod
    def resolve(cls, currency: str, universe: Iterable[str], fixed: Mapping[str, float]) -> FxTable:
        """Find rates for every quote currency in `universe`; raise `ConfigError` naming one without."""
        universe = sorted(universe)
        parts = {i: split_instrument(i) for i in universe}
        quotes = sorted({p[3] for p in parts.values()})
        via: list[tuple[str, str, bool]] = []
        tri: list[tuple[str, str, str]] = []
        for q in quotes:
            if q == currency:
                continue
            direct = [i for i in universe if parts[i][2:] == (q, currency)]
            inverse = [i for i in universe if parts[i][2:] == (currency, q)]
            triangles = [(i, j) for i in universe for j in universe
                         if parts[i][3] == q and parts[j][3] == currency and parts[i][0] == parts[j][0]
                         and parts[i][2] == parts[j][2] and ":" not in parts[i][1] and ":" not in parts[j][1]]
            if not direct and not inverse and not triangles and q not in fixed:
                raise ConfigError(f"account.fx_rates.{q}",
                                  f"no rate from {q!r} to the account currency {currency!r}: no instrument "
                                  f"{q}/{currency} is replayed, nor a base quoted in both on one venue; set a "
                                  f"fixed rate")
            via += [(q, i, False) for i in direct] + [(q, i, True) for i in inverse]
            tri += [(q, i, j) for i, j in triangles]
        return cls(currency=currency, fixed=tuple(sorted(fixed.items())), via=tuple(via), tri=tuple(tri))

    def rate(self, ccy: str, marks: Mapping[str, float], mark_ts: Mapping[str, int] | None = None, *,
             venue: str | None = None) -> float | None:
        """Return the value of one unit of `ccy` in the account currency, None before any rate is known.

        `mark_ts` gives each mark's time; without it every mark counts as equally fresh. With `venue`, the
        market rates of that venue are preferred (the rate at which that venue's cash converts), falling
        back to any venue's.
        """
        if ccy == self.currency:
            return 1.0
        if venue is not None:
            own = self._market(ccy, marks, mark_ts, venue)
            if own is not None:
                return own
        rate = self._market(ccy, marks, mark_ts, None)
        if rate is not None:
            return rate
        for c, r in self.fixed:
            if c == ccy:
                return r
        if not self.knows(ccy):
            raise KeyError(f"no fx rate for {ccy!r}")
        return None

    def knows(self, ccy: str) -> bool:
        """Whether `ccy` can be valued at all: the account currency, a fixed rate, or a market path.

        >>> fx = FxTable.resolve("USD", ["k:BTC/USD", "k:BTC/USDC"], fixed={})
        >>> fx.knows("USDC"), fx.knows("EUR")
        (True, False)
        """
        return (ccy == self.currency or any(c == ccy for c, _ in self.fixed)
                or any(c == ccy for c, _, _ in self.via) or any(c == ccy for c, _, _ in self.tri))

    def _market(self, ccy: str, marks: Mapping[str, float], mark_ts: Mapping[str, int] | None,
                venue: str | None) -> float | None:
        best: float | None = None
        best_ts = 0

        def ts_of(inst: str) -> int:
            return mark_ts.get(inst, 0) if mark_ts is not None else 0

        def on_venue(inst: str) -> bool:
            return venue is None or inst.partition(":")[0] == venue

        for c, inst, invert in self.via:
            m = marks.get(inst)
            if c != ccy or m is None or not m > 0 or not on_venue(inst):
                continue
            if best is None or ts_of(inst) > best_ts:  # strictly fresher: ties keep the earlier candidate
                best, best_ts = (1.0 / m if invert else m), ts_of(inst)
        for c, in_ccy, in_acc in self.tri:
            m1, m2 = marks.get(in_ccy), marks.get(in_acc)
            if c != ccy or m1 is None or m2 is None or not m1 > 0 or not on_venue(in_ccy):
                continue
            ts = min(ts_of(in_ccy), ts_of(in_acc))
            if best is None or ts > best_ts:
                best, best_ts = m2 / m1, ts
        return best


def infer_currency(universe: Iterable[str], configured: str) -> str:
    """Return the account currency: the configured one, else the quote currency all instruments share."""
    if configured:
        return configured
    quotes = sorted({split_instrument(i)[3] for i in universe})
    if len(quotes) != 1:
        raise ConfigError("account.currency", f"instruments are quoted in {quotes!r}; set the account currency "
                                              "(and account.fx_rates for currencies no instrument prices)")
    return quotes[0]
