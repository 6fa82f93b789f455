"""Quote currencies into the account currency: fixed rates, traded instruments, and a clear error without either."""

from __future__ import annotations

import pytest

from headrace.errors import ConfigError
from operators.positions.fx import FxTable, infer_currency


def test_rates_come_from_traded_instruments_direct_or_inverse_and_from_fixed_rates() -> None:
    fx = FxTable.resolve("USDT", ["binance:ETH/BTC", "binance:BTC/USDT", "kraken:USDT/EUR", "kraken:BCH/USD"],
                         fixed={"USD": 1.0})
    marks = {"binance:BTC/USDT": 40_000.0, "kraken:USDT/EUR": 0.9}
    assert fx.rate("USDT", marks) == 1.0
    assert fx.rate("BTC", marks) == 40_000.0  # BTC/USDT: one BTC is worth the mark
    assert fx.rate("EUR", marks) == pytest.approx(1 / 0.9)  # USDT/EUR: inverted
    assert fx.rate("USD", marks) == 1.0
    assert fx.rate("BTC", {}) is None  # before the first mark


def test_a_quote_currency_without_any_rate_names_the_key_to_set() -> None:
    with pytest.raises(ConfigError) as info:
        FxTable.resolve("BTC", ["binance:BTC/USDT", "kraken:BCH/EUR"], fixed={})
    assert info.value.key == "account.fx_rates.EUR"


def test_account_currency_is_the_shared_quote_or_must_be_set() -> None:
    assert infer_currency(["bittrex:ETH/BTC", "bittrex:LTC/BTC"], "") == "BTC"
    assert infer_currency(["a:X/USD", "b:Y/EUR"], "USD") == "USD"
    with pytest.raises(ConfigError, match="set the account currency") as info:
        infer_currency(["a:X/USD", "b:Y/EUR"], "")
    assert info.value.key == "account.currency"


def test_a_currency_priced_by_several_instruments_takes_the_freshest_mark() -> None:
    fx = FxTable.resolve("USD", ["binanceus:BTC/USD", "kraken:BTC/USD", "kraken:USD/BTC", "kraken:ETH/BTC"], fixed={})
    marks = {"binanceus:BTC/USD": 30_000.0, "kraken:BTC/USD": 31_000.0, "kraken:USD/BTC": 1 / 32_000.0}
    # binanceus stopped at t=100 while kraken goes on: the rate never comes from the stopped one
    assert fx.rate("BTC", marks, {"binanceus:BTC/USD": 100, "kraken:BTC/USD": 400, "kraken:USD/BTC": 300}) == 31_000.0
    assert fx.rate("BTC", marks, {"binanceus:BTC/USD": 500, "kraken:BTC/USD": 400, "kraken:USD/BTC": 300}) == 30_000.0
    inverse = fx.rate("BTC", marks, {"binanceus:BTC/USD": 100, "kraken:BTC/USD": 200, "kraken:USD/BTC": 300})
    assert inverse == pytest.approx(32_000.0)
    # equally fresh: the first candidate in a fixed order (direct quotes, sorted), whatever the dict order
    same = {"kraken:USD/BTC": 400, "kraken:BTC/USD": 400, "binanceus:BTC/USD": 400}
    assert fx.rate("BTC", dict(reversed(list(marks.items()))), same) == 30_000.0
    # a candidate without any mark yet is passed over
    assert fx.rate("BTC", {"kraken:BTC/USD": 31_000.0}, {"kraken:BTC/USD": 5}) == 31_000.0


def test_a_router_balance_in_a_currency_nothing_prices_is_a_config_error_naming_the_rate_to_set() -> None:
    from flows.trading import wiring
    from headrace.config import load_config

    config = load_config(None, ["router.enabled=true", 'account.currency="USD"',
                                'account.balances={"kraken:EUR" = 5.0, "kraken:USD" = 5.0}'])
    with pytest.raises(ConfigError) as info:
        wiring(config, ["kraken:BTC/USD"])
    assert info.value.key == "account.fx_rates.EUR"
