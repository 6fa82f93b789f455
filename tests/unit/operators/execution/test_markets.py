"""Rounding and limits of every market in the real ccxt dumps, checked against ccxt's own precision helpers."""

from __future__ import annotations

import random
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import ccxt
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from helpers import SHARED_DATA
from operators.execution.markets import Market, Rounded, Skipped, check_order, round_amount, round_price
from sources.market_metadata import (
    CCXT_MODE,
    VenueMarkets,
    ccxt_exchange,
    load_dump,
    load_snapshot,
    write_snapshot,
)

MARKETS = SHARED_DATA / "markets"
DUMPS = {"binance": "ccxt/binance.json", "okx": "ccxt/okx.json", "bybit": "ccxt/bybit.json",
         "kraken": "ccxt/kraken.json", "bitget": "ccxt-dumps/bitget_mkt_meta.json.gz",
         "hyperliquid": "ccxt-dumps/hyperliquid_mkt_meta.json.gz"}
pytestmark = pytest.mark.skipif(not MARKETS.exists(), reason=f"real market dumps not found at {MARKETS}")


@cache
def loaded(venue: str) -> tuple[VenueMarkets, Any]:
    vm = load_dump(MARKETS / DUMPS[venue])
    return vm, ccxt_exchange(vm)


def exponent(m: Market, step: Decimal) -> int:
    """Decimal exponent of a market's grid step (decimal places count as a negative exponent)."""
    return -int(step) if m.precision_mode == "DECIMAL_PLACES" else step.adjusted()


def number(rng: random.Random, around: int) -> Decimal:
    """A positive decimal with up to 7 digits, from 100 times finer than `10**around` to 10**7 times coarser."""
    return Decimal(rng.randint(1, 9_999_999)).scaleb(rng.randint(around - 8, around + 1))


def text(x: Decimal) -> str:
    return format(x, "f")


def ccxt_or_zero(fn: Any, symbol: str, x: Decimal) -> Decimal:
    """ccxt's helper result, or 0 where ccxt refuses a value that rounds to zero."""
    try:
        return Decimal(fn(symbol, text(x)))
    except ccxt.InvalidOrder:
        return Decimal(0)


def broken(m: Market, r: Skipped, amount: Decimal, price: Decimal) -> bool:
    """Whether the rule a skip names is really broken by the rounded order."""
    a, p = round_amount(m, amount), price
    values = {"amount": a, "price": p, "cost": m.notional(a, p)}
    if r.limit == "precision.amount":
        return a == 0
    if r.limit == "precision.price":
        return p == 0
    _, name, bound = r.limit.split(".")
    limit = getattr(m, f"{bound}_{'amount' if name == 'amount' else name}")
    return values[name] < limit if bound == "min" else values[name] > limit


@pytest.mark.parametrize("venue", sorted(DUMPS))
@settings(max_examples=20, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.generate])
@given(seed=st.integers(0, 2**32 - 1))
def test_every_market_rounds_like_ccxt_and_respects_its_limits(venue: str, seed: int) -> None:
    """Each example draws one amount, price and side per market (thousands of markets: from a seeded rng)."""
    vm, ex = loaded(venue)
    rng = random.Random(seed)
    mode = CCXT_MODE[vm.precision_mode]
    for symbol, m in vm.markets.items():
        amount = number(rng, exponent(m, m.amount_precision) + 2)
        price = number(rng, exponent(m, m.price_precision) + 4)
        side = rng.choice(["buy", "sell"])
        a = round_amount(m, amount)
        assert 0 <= a <= amount, (symbol, amount, a)
        truncated = ex.decimal_to_precision(text(amount), ccxt.TRUNCATE, vm.raw[symbol]["precision"]["amount"],
                                            mode, ccxt.NO_PADDING)
        assert a == Decimal(truncated), (symbol, amount, a, truncated)
        ccxt_amount = ccxt_or_zero(ex.amount_to_precision, symbol, amount)
        if venue == "hyperliquid":  # ccxt rounds Hyperliquid sizes to nearest; we never round up
            assert a <= ccxt_amount, (symbol, amount, a, ccxt_amount)
        else:
            assert a == ccxt_amount, (symbol, amount, a, ccxt_amount)
        down, up = round_price(m, price, "buy"), round_price(m, price, "sell")
        assert down <= price <= up, (symbol, price, down, up)
        assert ccxt_or_zero(ex.price_to_precision, symbol, price) in (down, up), (symbol, price, down, up)
        for p in (down, up):  # on ccxt's grid: its own rounding leaves them unchanged
            assert p == 0 or ccxt_or_zero(ex.price_to_precision, symbol, p) == p, (symbol, price, p)
        result = check_order(m, side, amount, price)
        p = down if side == "buy" else up
        if isinstance(result, Rounded):
            assert (result.amount, result.price) == (a, p)
            assert 0 < result.amount <= amount and result.notional == m.notional(a, p)
            for value, low, high in ((a, m.min_amount, m.max_amount), (p, m.min_price, m.max_price),
                                     (result.notional, m.min_cost, m.max_cost)):
                assert low is None or value >= low, (symbol, result)
                assert high is None or value <= high, (symbol, result)
        else:
            assert result.limit in result.reason, result
            assert broken(m, result, amount, p), (symbol, amount, price, result)


def test_a_skip_names_each_limit() -> None:
    vm, _ = loaded("binance")
    m = vm.markets["BTC/USDT"]  # amount step 0.00001, min amount 0.00001, max 9000, min notional 5
    assert check_order(m, "buy", "0.000009", 30000).limit == "precision.amount"  # type: ignore[union-attr]
    assert check_order(m, "buy", "0.0001", 30000).limit == "limits.cost.min"  # type: ignore[union-attr]
    assert check_order(m, "buy", "9001", 30000).limit == "limits.amount.max"  # type: ignore[union-attr]
    assert check_order(m, "buy", "0.001", "0.001").limit == "precision.price"  # type: ignore[union-attr]
    assert check_order(m, "buy", "0.001", "2000000").limit == "limits.price.max"  # type: ignore[union-attr]
    ok = check_order(m, "buy", "0.0012345", "30000.019")
    assert ok == Rounded(amount=Decimal("0.00123"), price=Decimal("30000.01"), notional=Decimal("36.9000123"))


def test_the_binance_fixture_is_read_in_decimal_places_and_the_others_in_tick_size() -> None:
    modes = {venue: loaded(venue)[0].precision_mode for venue in DUMPS}
    assert modes == {v: "DECIMAL_PLACES" if v == "binance" else "TICK_SIZE" for v in DUMPS}
    assert loaded("binance")[0].markets["BTC/USDT"].amount_precision == 5  # step 0.00001 in Binance's filters


def test_markets_without_precision_are_left_out() -> None:
    vm, ex = loaded("binance")
    assert vm.incomplete == ("BTC/USDT:USDT-231229", "ETH/USDT:USDT-231229-800-C")
    assert set(vm.markets) == set(ex.markets) and not set(vm.incomplete) & set(vm.markets)


def test_inverse_contracts_count_their_notional_in_contracts() -> None:
    m = loaded("binance")[0].markets["BTC/USD:BTC"]
    assert m.inverse and m.contract_size == 100 and m.notional(Decimal(3), Decimal(50000)) == 300


@pytest.mark.parametrize("venue", sorted(DUMPS))
def test_a_snapshot_gives_back_the_same_markets_and_says_where_they_came_from(venue: str, tmp_path: Path) -> None:
    vm, _ = loaded(venue)
    path = tmp_path / "snap" / f"{venue}.json"
    write_snapshot(path, venue, vm.raw, source=vm.source, precision_mode=vm.precision_mode)
    again = load_snapshot(path)
    assert again.markets == vm.markets and again.precision_mode == vm.precision_mode
    assert again.source == f"{path} <- {MARKETS / DUMPS[venue]}"
    write_snapshot(path, venue, vm.raw)  # online: the venue itself is the source
    assert load_snapshot(path).source == f"{path} <- venue"
