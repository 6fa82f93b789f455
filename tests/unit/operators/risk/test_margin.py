"""Margin core on real data: Binance's own position figures (ccxt's recorded fetchPositions), the XRP/USDT:USDT
perpetual's contract and mark prices, its funding rates, and Binance's margin brackets from ccxt's fixture."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.leverage_tiers import load_tiers
from helpers import SHARED_DATA
from operators.risk.margin import (
    MarginMonitor,
    MarginPosition,
    Tier,
    funding_payment,
    reduce_positions,
    tier_for,
    venue_margin,
)

FUT = SHARED_DATA / "futures" / "binance"
CCXT_BINANCE = SHARED_DATA / "ccxt-static" / "response" / "binance.json"
XRP = "binance:XRP/USDT:USDT"


def _need(*paths: Any) -> None:
    for p in paths:
        if not p.exists():
            pytest.skip(f"needs the shared data: {p} is missing")


def _ipc(name: str) -> Any:
    import polars as pl

    _need(FUT / name)
    return pl.read_ipc(FUT / name).sort("date")


def _at(df: Any, when: datetime, col: str = "close") -> float:
    import polars as pl

    row = df.filter(pl.col("date") == when)
    assert row.height == 1, f"no row at {when}"
    return float(row[col][0])


@pytest.fixture(scope="module")
def brackets() -> dict[str, tuple[Tier, ...]]:
    """Binance USDT-M margin brackets recorded in ccxt's fixture (floor, maintenance rate; leverage 20 given)."""
    _need(CCXT_BINANCE)
    return load_tiers(CCXT_BINANCE, "binance", default_max_leverage=20.0)


def binance_lp(wb: float, tmm1: float, upnl1: float, cum: float, side: int, size: float, ep: float,
               mmr: float) -> float:
    """Binance's published USDT-M cross-margin liquidation price (one-way mode, one position)."""
    return (wb - tmm1 + upnl1 + cum - side * size * ep) / (size * mmr - side * size)


def test_binance_recorded_position_matches_its_liquidation_price_and_margins() -> None:
    # ccxt's recorded Binance /fapi/v2/positionRisk reply: 0.009 BTC long, cross margin, tier 1 (rate 0.004, cum 0)
    _need(CCXT_BINANCE)
    case = json.loads(CCXT_BINANCE.read_text())["methods"]["fetchPositions"][0]
    raw, parsed = case["httpResponse"][0], case["parsedResponse"][0]
    q, ep, mark = float(raw["positionAmt"]), float(raw["entryPrice"]), float(raw["markPrice"])
    wallet = parsed["collateral"]  # the cross wallet balance ccxt recovered for this position
    leverage = float(raw["notional"]) / float(raw["initialMargin"])  # 80x
    tiers = (Tier(50_000.0, 125.0, 0.004), Tier(math.inf, 100.0, 0.005, 50.0))
    m = venue_margin("binance", wallet, [MarginPosition("binance:BTC/USDT:USDT", "binance", q, ep, mark, leverage)],
                     {}, tiers)
    p = m.positions[0]
    assert p.notional == pytest.approx(float(raw["notional"]), rel=1e-9)
    assert p.maintenance_margin == pytest.approx(float(raw["maintMargin"]), abs=1e-8)  # 8 decimals
    assert p.initial_margin == pytest.approx(float(raw["initialMargin"]), abs=1e-8)
    assert p.unrealized_pnl == pytest.approx(float(raw["unRealizedProfit"]), abs=1e-8)
    assert p.liquidation_price == pytest.approx(float(raw["liquidationPrice"]), rel=1e-9)  # 64846.98753790
    assert p.liquidation_price == pytest.approx(binance_lp(wallet, 0, 0, 0, 1, q, ep, 0.004), rel=1e-12)


def test_binance_recorded_account_margin_ratio() -> None:
    # the account endpoint's totals: margin balance = wallet + unrealized, ratio = maintenance / margin balance
    _need(CCXT_BINANCE)
    case = json.loads(CCXT_BINANCE.read_text())["methods"]["fetchPositions"][2]
    acc, pos = case["httpResponse"], case["httpResponse"]["positions"]
    btc = next(x for x in pos if x["symbol"] == "BTCUSDT")
    q, notional = float(btc["positionAmt"]), float(btc["notional"])
    mark = notional / q
    ep = mark - float(btc["unrealizedProfit"]) / q
    wallet = float(acc["totalWalletBalance"])
    m = venue_margin("binance", wallet, [MarginPosition("binance:BTC/USDT:USDT", "binance", q, ep, mark, 80.0)],
                     {}, (Tier(50_000.0, 125.0, 0.004),))
    # the reply's position row and its totals were taken 8e-5 USDT of unrealized P&L apart
    assert m.margin_balance == pytest.approx(float(acc["totalMarginBalance"]), abs=1e-4)
    assert m.maintenance_margin == pytest.approx(float(btc["maintMargin"]), abs=1e-8)
    assert m.maintenance_margin == pytest.approx(float(acc["totalMaintMargin"]), abs=1e-3)
    assert m.margin_ratio == pytest.approx(float(acc["totalMaintMargin"]) / float(acc["totalMarginBalance"]),
                                           rel=1e-4)


def test_xrp_position_on_real_prices_equals_hand_computation(brackets: dict[str, tuple[Tier, ...]]) -> None:
    # The fixture has no XRP brackets; ADA/USDT:USDT's (same Binance alt-coin table) stand in for them.
    tiers = brackets["ADA/USDT:USDT"]
    entry = _at(_ipc("XRP_USDT_USDT-5m-futures.feather"), datetime(2021, 11, 17, 0, 0, tzinfo=UTC))
    mark = _at(_ipc("XRP_USDT_USDT-1h-mark.feather"), datetime(2021, 11, 18, 8, 0, tzinfo=UTC))
    assert (entry, mark) == (1.0819, 1.10706)
    m = venue_margin("binance", 1_000.0, [MarginPosition(XRP, "binance", 10_000.0, entry, mark, 20.0)],
                     {XRP: tiers}, tiers)
    p = m.positions[0]
    # notional 10000 x 1.10706 = 11070.6 -> tier 2 (10000, 50000]: rate 0.01, cum 10000 x (0.01 - 0.0065) = 35
    assert p.notional == pytest.approx(11_070.6, rel=1e-12)
    assert p.initial_margin == pytest.approx(11_070.6 / 20, rel=1e-12)  # 553.53
    assert p.maintenance_margin == pytest.approx(11_070.6 * 0.01 - 35.0, rel=1e-12)  # 75.706
    assert p.unrealized_pnl == pytest.approx(10_000 * (1.10706 - 1.0819), rel=1e-12)  # 251.6
    assert m.margin_balance == pytest.approx(1_251.6, rel=1e-12)
    assert m.margin_ratio == pytest.approx(75.706 / 1_251.6, rel=1e-12)
    assert m.available == pytest.approx(1_251.6 - 553.53, rel=1e-12)
    # liquidation: in tier 2 the solution (1000 + 35 - 10819) / (100 - 10000) = 0.98828 has notional 9883 <= 10000,
    # so it is not in tier 2; in tier 1 (rate 0.0065, cum 0): (1000 - 10819) / (65 - 10000) = 0.988324, in tier 1
    lp = (1_000.0 - 10_000 * 1.0819) / (10_000 * 0.0065 - 10_000)
    assert 10_000 * lp <= 10_000.0
    assert p.liquidation_price == pytest.approx(lp, rel=1e-12)
    assert p.liquidation_price == pytest.approx(binance_lp(1_000.0, 0, 0, 0.0, 1, 10_000.0, 1.0819, 0.0065))
    assert p.distance_to_liquidation == pytest.approx((1.10706 - lp) / 1.10706, rel=1e-12)


def test_liquidation_price_with_another_position_held_at_its_mark(brackets: dict[str, tuple[Tier, ...]]) -> None:
    ada, btc = brackets["ADA/USDT:USDT"], brackets["BTC/USDT:USDT"]
    other = MarginPosition("binance:BTC/USDT:USDT", "binance", -0.1, 58_000.0, 60_000.0, 10.0)  # short, loss 200
    xrp = MarginPosition(XRP, "binance", 5_000.0, 1.0819, 1.10706, 20.0)
    m = venue_margin("binance", 2_000.0, [xrp, other], {XRP: ada, other.instrument: btc}, ada)
    tmm1 = 6_000.0 * 0.004  # BTC notional 6000 in its first bracket
    upnl1 = -0.1 * (60_000.0 - 58_000.0)
    lp = binance_lp(2_000.0, tmm1, upnl1, 0.0, 1, 5_000.0, 1.0819, 0.0065)
    assert m.positions[0].liquidation_price == pytest.approx(lp, rel=1e-12)
    assert m.maintenance_margin == pytest.approx(5_000 * 1.10706 * 0.0065 + tmm1, rel=1e-12)


@settings(max_examples=200, deadline=None)
@given(size=st.floats(1.0, 1e5), ep=st.floats(0.1, 100.0), wb=st.floats(10.0, 1e5), side=st.sampled_from([1, -1]))
def test_single_position_liquidation_price_is_binances_formula(size: float, ep: float, wb: float, side: int) -> None:
    tiers = (Tier(10_000.0, 50.0, 0.0065), Tier(50_000.0, 25.0, 0.01, 35.0), Tier(math.inf, 10.0, 0.02, 535.0))
    m = venue_margin("binance", wb, [MarginPosition(XRP, "binance", side * size, ep, ep, 5.0)], {}, tiers)
    lp = m.positions[0].liquidation_price
    if lp is None:
        assert side == 1 and wb >= size * ep * (1 - 0.0065)  # collateral covers the whole long
        return
    t = tier_for(tiers, size * lp)
    assert lp == pytest.approx(binance_lp(wb, 0, 0, t.maintenance_amount, side, size, ep, t.maintenance_rate),
                               rel=1e-9)
    # at the liquidation price the margin balance equals the maintenance margin
    at = venue_margin("binance", wb, [MarginPosition(XRP, "binance", side * size, ep, lp, 5.0)], {}, tiers)
    assert at.margin_balance == pytest.approx(at.maintenance_margin, rel=1e-6, abs=1e-6 * size * ep)


def test_funding_over_the_overlapping_window_equals_hand_sum() -> None:
    import polars as pl

    rates = _ipc("XRP_USDT_USDT-8h-funding_rate.feather").with_columns(pl.col("date").dt.truncate("8h"))
    marks = _ipc("XRP_USDT_USDT-8h-mark.feather")
    lo, hi = datetime(2021, 11, 18, tzinfo=UTC), datetime(2021, 11, 19, 16, tzinfo=UTC)
    j = rates.join(marks, on="date", suffix="_mark").filter(pl.col("date").is_between(lo, hi))
    assert j.height == 6  # 11-18 00, 08, 16 and 11-19 00, 08, 16
    paid = sum(funding_payment(10_000.0, m, r) for r, m in zip(j["open"], j["open_mark"], strict=True))
    # every rate is 0.0001; marks at funding: 1.0959 1.1075 1.0564 1.0411 1.0420 1.0891 (sum 6.4320)
    assert j["open"].to_list() == [0.0001] * 6
    assert paid == pytest.approx(-10_000 * 0.0001 * (1.0959 + 1.1075 + 1.0564 + 1.0411 + 1.0420 + 1.0891), rel=1e-12)
    assert sum(funding_payment(-10_000.0, m, r) for r, m in zip(j["open"], j["open_mark"], strict=True)) == \
        pytest.approx(-paid, rel=1e-12)


def test_falling_mark_alerts_warn_then_critical_once_and_reduce_restores_target(
        brackets: dict[str, tuple[Tier, ...]]) -> None:
    import polars as pl

    tiers = brackets["ADA/USDT:USDT"]
    marks = _ipc("XRP_USDT_USDT-1h-mark.feather").filter(
        pl.col("date").is_between(datetime(2021, 11, 18, 8, tzinfo=UTC), datetime(2021, 11, 18, 22, tzinfo=UTC)))
    mon = MarginMonitor(warn=0.5, critical=0.8, reduce_to=0.5)
    alerts, ratios, last = [], [], None
    for mark in marks["close"]:
        pos = [MarginPosition(XRP, "binance", 10_000.0, 1.10706, mark, 20.0)]
        last = (pos, venue_margin("binance", 760.0, pos, {XRP: tiers}, tiers))
        ratios.append(last[1].margin_ratio)
        alerts += mon.check(last[1])
    # ratios: ... 0.29, 0.75 (warn), 0.66, 0.33, 0.29, 0.41, 0.47, 0.83 (critical at 11-18 22:00, mark 1.03941)
    assert [a.level for a in alerts] == ["warn", "critical"]
    assert [a.threshold for a in alerts] == [0.5, 0.8]
    assert 0.5 <= alerts[0].margin_ratio < 0.8 <= alerts[1].margin_ratio < 1.0
    assert sum(r >= 0.5 for r in ratios) == 3  # warn was reached twice more without a second alert
    assert mon.snapshot() == (("binance", "critical"),)
    assert last is not None
    pos, vm = last
    f = mon.reduce_fraction(vm, {XRP: tiers}, tiers)
    wallet, kept = reduce_positions(pos, 760.0, f)
    after = venue_margin("binance", wallet, kept, {XRP: tiers}, tiers)
    assert 0 < f < 1
    assert after.margin_ratio == pytest.approx(0.5, rel=1e-9)
    assert after.margin_balance == pytest.approx(vm.margin_balance, rel=1e-12)  # closing at mark moves nothing
    assert mon.check(after) == []  # going down never alerts


def test_reduce_fraction_is_zero_below_critical_and_one_without_balance() -> None:
    tiers = (Tier(math.inf, 20.0, 0.01),)
    mon = MarginMonitor()
    calm = venue_margin("v", 1_000.0, [MarginPosition("v:X", "v", 100.0, 1.0, 1.0, 5.0)], {}, tiers)
    broke = venue_margin("v", 10.0, [MarginPosition("v:X", "v", 100.0, 1.0, 0.5, 5.0)], {}, tiers)
    assert mon.reduce_fraction(calm) == 0.0
    assert broke.margin_ratio == math.inf and mon.reduce_fraction(broke) == 1.0


@settings(max_examples=150, deadline=None)
@given(sizes=st.lists(st.tuples(st.floats(100.0, 2e5), st.sampled_from([1, -1])), min_size=1, max_size=4),
       ratio=st.floats(0.81, 0.99), reduce_to=st.floats(0.1, 0.7))
def test_reduce_fraction_reaches_target_across_tiers(sizes: list[tuple[float, int]], ratio: float,
                                                     reduce_to: float) -> None:
    tiers = (Tier(10_000.0, 50.0, 0.0065), Tier(50_000.0, 25.0, 0.01, 35.0), Tier(250_000.0, 10.0, 0.02, 535.0),
             Tier(math.inf, 5.0, 0.05, 8035.0))
    pos = [MarginPosition(f"v:X{i}", "v", s * n, 1.0, 1.0, 5.0) for i, (n, s) in enumerate(sizes)]
    mm = venue_margin("v", 1.0, pos, {}, tiers).maintenance_margin
    vm = venue_margin("v", mm / ratio, pos, {}, tiers)  # a wallet that puts the ratio at `ratio`
    f = MarginMonitor(reduce_to=reduce_to).reduce_fraction(vm, {}, tiers)
    wallet, kept = reduce_positions(pos, vm.wallet_balance, f)
    assert venue_margin("v", wallet, kept, {}, tiers).margin_ratio == pytest.approx(reduce_to, rel=1e-9)


def test_hysteresis_and_snapshot_restore() -> None:
    def vm(venue: str, r: float) -> Any:
        return venue_margin(venue, 100.0 / r, [MarginPosition(f"{venue}:X", venue, 1_000.0, 1.0, 1.0, 5.0)], {},
                            (Tier(math.inf, 20.0, 0.1),))

    mon = MarginMonitor(warn=0.5, critical=0.8, reduce_to=0.4, hysteresis=0.05)
    seq = [mon.check(vm("a", r)) for r in (0.51, 0.49, 0.52, 0.46, 0.51)]
    assert [len(x) for x in seq] == [1, 0, 0, 0, 0]  # hovering within the band alerts once
    assert [a.level for a in mon.check(vm("a", 0.44)) + mon.check(vm("a", 0.5))] == ["warn"]  # left, then re-crossed
    mon.check(vm("b", 1.2))
    snap = mon.snapshot()
    assert snap == (("a", "warn"), ("b", "liquidation"))
    again = MarginMonitor.restore(snap, 0.5, 0.8, 0.4)
    assert again.snapshot() == snap
    assert again.check(vm("a", 0.55)) == [] and [a.level for a in again.check(vm("a", 0.85))] == ["critical"]
    with pytest.raises(ValueError, match="unknown margin level 'boom'"):
        MarginMonitor.restore((("a", "boom"),), 0.5, 0.8, 0.4)
    with pytest.raises(ValueError, match="warn < critical"):
        MarginMonitor(warn=0.9, critical=0.8)
