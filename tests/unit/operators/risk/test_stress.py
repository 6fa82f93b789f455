"""Stress P&L: every scenario on a hand-checked four-position book across two venues and two quote currencies
(with USDC and USDT cash), the venue freeze per venue, the historical defaults and currency rules, errors that name
the scenario, and properties (P&L scales with the book; a freeze of the only venue is the market scenario)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.risk.stress import CashBalance, Scenario, StressPosition, StressResult, stress_pnl, worst

BOOK = [
    StressPosition("binance:BTC/USDT", "binance", "BTC", "USDT", 10_000.0, 1.1, 0.02, 0.0004),
    StressPosition("binance:ETH/USDT", "binance", "ETH", "USDT", -4_000.0, 1.3, 0.03, 0.0006),
    StressPosition("kraken:BTC/USDC", "kraken", "BTC", "USDC", 6_000.0, 1.1, 0.021, 0.0005),
    StressPosition("kraken:SOL/USDC", "kraken", "SOL", "USDC", 2_000.0, 1.8, 0.05, 0.0025),
]
CASH = [CashBalance("kraken", "USDC", 3_000.0), CashBalance("binance", "USDT", 1_000.0)]
EQUITY = 18_000.0  # 10000 - 4000 + 6000 + 2000 + 3000 + 1000


def run(*scenarios: Scenario, book: list[StressPosition] = BOOK, cash: list[CashBalance] = CASH) -> list[StressResult]:
    return stress_pnl(book, cash, EQUITY, scenarios, "USD")


def test_historical_by_hand() -> None:
    s = Scenario("crash", "historical", shocks=(("BTC", -0.4), ("ETH", -0.5), ("*", -0.45)),
                 currency_shocks=(("USDC", -0.125),))
    (r,) = run(s)
    # BTC on both venues -0.4, the short ETH gains, SOL takes '*', the USDC cash loses 12.5 %, the USDT cash (the
    # file's reference) does not move, and the positions quoted in USDC are not shocked twice
    by_hand = 10_000 * -0.4 + -4_000 * -0.5 + 6_000 * -0.4 + 2_000 * -0.45 + 3_000 * -0.125
    assert by_hand == pytest.approx(-5_675.0)
    assert r.pnl == pytest.approx(by_hand, abs=1e-9)
    assert r.pnl_fraction == pytest.approx(by_hand / EQUITY)
    assert (r.scenario, r.kind, r.worst_key) == ("crash", "historical", "binance:BTC/USDT")
    assert "'*' -45%" in r.detail and "USDC -12.5%" in r.detail and "rebased" not in r.detail


def test_historical_moves_are_rebased_on_the_account_currencys_own_move() -> None:
    # the account is kept in USD and the file says USD itself rose 10 % against its reference: every other move is
    # measured against USD, (1 + r) / 1.1 - 1, so USD never moves and the reference's own cash (USDT) loses
    s = Scenario("crash", "historical", shocks=(("BTC", -0.4), ("ETH", -0.5), ("*", -0.45)),
                 currency_shocks=(("USDC", -0.125), ("USD", 0.1)))
    (r,) = run(s)
    by_hand = (10_000 * (0.6 / 1.1 - 1) + -4_000 * (0.5 / 1.1 - 1) + 6_000 * (0.6 / 1.1 - 1)
               + 2_000 * (0.55 / 1.1 - 1) + 3_000 * (0.875 / 1.1 - 1) + 1_000 * (1 / 1.1 - 1))
    assert r.pnl == pytest.approx(by_hand, abs=1e-9)
    assert "rebased on the account currency USD" in r.detail
    # a BTC account holding ETH loses only ETH's move against BTC
    eth = [StressPosition("binance:ETH/BTC", "binance", "ETH", "BTC", 1.0, 1.0, 0.02, 0.0005)]
    (b,) = stress_pnl(eth, [], 1.0, [Scenario("x", "historical", shocks=(("BTC", -0.4), ("ETH", -0.5)))], "BTC")
    assert b.pnl == pytest.approx(0.5 / 0.6 - 1)


def test_historical_without_default_leaves_unlisted_assets_and_says_so() -> None:
    (r,) = run(Scenario("crash", "historical", shocks=(("BTC", -0.4), ("ETH", -0.5))))
    assert r.pnl == pytest.approx(10_000 * -0.4 + -4_000 * -0.5 + 6_000 * -0.4)
    assert "1 positions in unlisted assets not shocked" in r.detail


def test_historical_currency_hits_cash_and_stablecoin_positions() -> None:
    book = [StressPosition("kraken:USDC/USD", "kraken", "USDC", "USD", 500.0, 0.0, 0.001, 0.0001),
            StressPosition("kraken:USD/USDT", "kraken", "USD", "USDT", 300.0, 0.0, 0.001, 0.0001)]
    (r,) = run(Scenario("depeg", "historical", shocks=(("*", -0.2),), currency_shocks=(("USDC", -0.125),)), book=book)
    # the USDC position takes USDC's move (not '*'), the account currency's own position does not move,
    # the USDC cash loses, the USDT cash does not
    assert r.pnl == pytest.approx(500 * -0.125 + 3_000 * -0.125)
    assert r.worst_key == "USDC"


def test_market_through_betas_by_hand() -> None:
    (r,) = run(Scenario("beta", "market", size=-0.3))
    assert r.pnl == pytest.approx((10_000 * 1.1 - 4_000 * 1.3 + 6_000 * 1.1 + 2_000 * 1.8) * -0.3)
    assert r.pnl == pytest.approx(-4_800.0)
    assert r.worst_key == "binance:BTC/USDT"
    assert r.detail == "market -30% through betas on 4 positions"


def test_correlation_one_by_hand() -> None:
    (r,) = run(Scenario("corr", "correlation", size=2.326, horizon_bars=4))
    exposure = 10_000 * 0.02 - 4_000 * 0.03 + 6_000 * 0.021 + 2_000 * 0.05
    assert exposure == pytest.approx(306.0)
    assert r.pnl == pytest.approx(-2.326 * 2 * 306.0)
    assert r.worst_key == "binance:BTC/USDT"  # the largest long value x vol; the short ETH gains


def test_correlation_short_book_loses_on_a_rise() -> None:
    book = [StressPosition("a", "v", "A", "USD", -1_000.0, 1.0, 0.02, 0.0),
            StressPosition("b", "v", "B", "USD", 500.0, 1.0, 0.01, 0.0)]
    (r,) = run(Scenario("corr", "correlation", size=3.0), book=book, cash=[])
    assert r.pnl == pytest.approx(-3.0 * abs(-20.0 + 5.0))
    assert r.worst_key == "a"


def test_spread_times_ten_by_hand() -> None:
    (r,) = run(Scenario("wide", "spread", size=10.0))
    assert r.pnl == pytest.approx(-10 * (10_000 * 0.0004 + 4_000 * 0.0006 + 6_000 * 0.0005 + 2_000 * 0.0025))
    assert r.pnl == pytest.approx(-144.0)
    assert r.worst_key == "kraken:SOL/USDC"


def test_venue_freeze_uses_per_venue_positions() -> None:
    kraken, binance = run(Scenario("freeze", "venue_freeze", size=-0.3, venue="kraken"),
                          Scenario("freeze", "venue_freeze", size=-0.3, venue="binance"))
    # kraken frozen: its BTC and SOL take the market move through betas, binance's are closed at today's spread;
    # the 3000 USDC on kraken is not lost
    assert kraken.pnl == pytest.approx((6_000 * 1.1 + 2_000 * 1.8) * -0.3 - (10_000 * 0.0004 + 4_000 * 0.0006))
    assert kraken.pnl == pytest.approx(-3_066.4)
    assert kraken.worst_key == "kraken:BTC/USDC"
    assert binance.pnl == pytest.approx((10_000 * 1.1 - 4_000 * 1.3) * -0.3 - (6_000 * 0.0005 + 2_000 * 0.0025))
    assert binance.pnl == pytest.approx(-1_748.0)
    assert "cash on kraken kept" in kraken.detail


def test_venue_freeze_star_gives_one_result_per_venue_with_positions_or_cash() -> None:
    cash = [*CASH, CashBalance("okx", "USDT", 50.0)]
    results = run(Scenario("freeze", "venue_freeze", size=-0.3, venue="*"), cash=cash)
    assert [r.scenario for r in results] == ["freeze:binance", "freeze:kraken", "freeze:okx"]
    assert [r.pnl for r in results] == pytest.approx([-1_748.0, -3_066.4, -(4 + 2.4 + 3 + 5)])
    assert worst(results) is results[1]
    assert run(Scenario("freeze", "venue_freeze", size=-0.3, venue="*"), book=[], cash=[]) == []


def test_worst_and_order_of_results() -> None:
    results = run(Scenario("beta", "market", size=-0.3), Scenario("wide", "spread", size=10.0),
                  Scenario("crash", "historical", shocks=(("*", -0.45),)))
    assert [r.scenario for r in results] == ["beta", "wide", "crash"]
    w = worst(results)
    assert w is not None and w.scenario == "crash"
    assert worst([]) is None


def test_empty_book_and_non_positive_equity() -> None:
    (r,) = stress_pnl([], [], 0.0, [Scenario("beta", "market", size=-0.3)], "USD")
    assert r.pnl == 0.0 and math.isnan(r.pnl_fraction) and r.worst_key == ""


@pytest.mark.parametrize(("scenario", "message"), [
    (Scenario("x1", "meltdown"), "'x1': unknown kind 'meltdown'"),
    (Scenario("x2", "market"), "'x2' (market): size"),
    (Scenario("x3", "historical"), "'x3' (historical): has no shocks"),
    (Scenario("x4", "historical", shocks=(("BTC", -1.5),)), "'x4' (historical): shock of 'BTC'"),
    (Scenario("x5", "correlation", size=0.0), "'x5' (correlation): size"),
    (Scenario("x6", "correlation", size=2.0, horizon_bars=0), "'x6' (correlation): horizon_bars"),
    (Scenario("x7", "spread", size=0.0), "'x7' (spread): size"),
    (Scenario("x8", "venue_freeze", size=-0.3), "'x8' (venue_freeze): needs a venue"),
    (Scenario("x9", "market", size=math.nan), "'x9' (market): size must be finite"),
])
def test_errors_name_the_scenario(scenario: Scenario, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(scenario)


def test_non_finite_position_is_named() -> None:
    bad = [StressPosition("binance:BTC/USDT", "binance", "BTC", "USDT", math.inf, 1.0, 0.01, 0.0)]
    with pytest.raises(ValueError, match="'binance:BTC/USDT': value is not finite"):
        run(Scenario("beta", "market", size=-0.3), book=bad)


SCENARIOS = (Scenario("h", "historical", shocks=(("BTC", -0.4), ("*", -0.3)), currency_shocks=(("USDC", -0.1),)),
             Scenario("m", "market", size=-0.3), Scenario("c", "correlation", size=2.0, horizon_bars=3),
             Scenario("s", "spread", size=10.0), Scenario("f", "venue_freeze", size=-0.3, venue="*"))


@given(st.floats(0.01, 100.0))
def test_pnl_scales_with_the_book(k: float) -> None:
    scaled = [StressPosition(p.key, p.venue, p.asset, p.quote, k * p.value, p.beta, p.vol, p.half_spread)
              for p in BOOK]
    cash = [CashBalance(c.venue, c.currency, k * c.value) for c in CASH]
    base, big = run(*SCENARIOS), run(*SCENARIOS, book=scaled, cash=cash)
    assert [b.pnl for b in big] == pytest.approx([k * b.pnl for b in base], rel=1e-9, abs=1e-9)
    assert [b.worst_key for b in big] == [b.worst_key for b in base]


@given(st.lists(st.tuples(st.floats(-1e6, 1e6), st.floats(-3, 3)), min_size=1, max_size=6), st.floats(-1, 1))
def test_freezing_the_only_venue_is_the_market_move(rows: list[tuple[float, float]], size: float) -> None:
    book = [StressPosition(f"k{i}", "v", f"A{i}", "USD", v, b, 0.01, 0.001) for i, (v, b) in enumerate(rows)]
    freeze, market = stress_pnl(book, [], 1.0, [Scenario("f", "venue_freeze", size=size, venue="v"),
                                                Scenario("m", "market", size=size or 0.1)], "USD")
    assert freeze.pnl == pytest.approx(sum(v * b * size for v, b in rows), abs=1e-6)
    if size:
        assert freeze.pnl == pytest.approx(market.pnl, abs=1e-6)
