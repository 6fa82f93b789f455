"""The risk engine in the account step: REDUCING lets only reducing orders through (a flip is cut to the close),
HALTED sends nothing and cancels working orders, a denied order is an Order, an OrderStatus "denied" and a
RiskDenial with every code, operator commands apply from their time, the ES limit scales targets, and an account
restored midway writes exactly the records of the uninterrupted one."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from headrace.events import (
    CrossSection,
    Fill,
    Order,
    OrderStatus,
    RiskDenial,
    RiskReport,
    RiskScaling,
    Target,
    TradingStateChange,
)
from helpers import HOURLY, bar
from operators.execution.sim_venue import SimulatedVenue, VenueCosts
from operators.positions.account import Account
from operators.positions.fx import FxTable
from operators.risk.engine import Command, RiskEngine, RiskSettings
from operators.risk.pretrade import PreTradeLimits

A, B = "v:A/Q", "v:B/Q"
SIM = SimulatedVenue({"v": VenueCosts(taker_fee_bps=10.0, half_spread_bps=5.0)})
FX = FxTable.resolve("Q", [A, B], {})


def account(latency_ns: int = 0, **settings: object) -> Account:
    risk = RiskEngine(RiskSettings(account="main", **settings), [A, B])  # type: ignore[arg-type]
    return Account("main", ["v"], FX, SIM, initial_cash=1000.0, min_trade_weight=0.0, latency_ns=latency_ns,
                   risk=risk)


def section(i: int, targets: dict[str, float] | None = None, pa: float = 100.0, pb: float = 10.0,
            quotes_b: tuple[float, float] | None = None) -> CrossSection:
    """Bar i of A and B (open = close), closing at 60 (i + 1); `targets` as weights."""
    ts = 60 * i
    bid, ask = quotes_b if quotes_b is not None else (None, None)
    bars = (bar(A, ts, pa), bar(B, ts, pb, bid=bid, ask=ask))
    tg = tuple(Target(instrument=k, ts_event=ts + 60, weight=w, status="ok", volatility=0.01)
               for k, w in (targets or {}).items())
    return CrossSection(ts_event=ts + 60, bars=bars, targets=tg)


def of(kind: type, outs: list[object]) -> list:  # type: ignore[type-arg]
    return [o for o in outs if isinstance(o, kind)]


def test_reducing_lets_only_reducing_orders_through_and_cuts_a_flip_to_the_close() -> None:
    acct = account(commands=(Command(at=150, action="reduce", reason="desk review"),))
    first = acct.update(section(0, {A: 0.5, B: 0.0}))
    [buy] = of(Order, first)
    assert buy.instrument == A and buy.amount == pytest.approx(5.0)
    assert of(RiskDenial, first) == [] and of(TradingStateChange, first) == []
    [fill] = of(Fill, acct.update(section(1)))  # ts 120: before the command's time
    assert acct.risk is not None and acct.risk.state == "ACTIVE"
    held = fill.amount
    outs = acct.update(section(2, {A: -0.5, B: 0.3}))  # ts 180: the first cross-section at or after 150
    [change] = of(TradingStateChange, outs)
    assert (change.ts_event, change.previous, change.state, change.source) == (180, "ACTIVE", "REDUCING", "operator")
    assert "desk review" in change.reason
    denials = {d.instrument: d for d in of(RiskDenial, outs)}
    cut = denials[A]
    assert cut.action == "reduced" and cut.side == "sell" and cut.codes == ("reduce_only",)
    assert cut.amount > held and cut.amount_sent == held  # the order would flip: only the close goes
    assert cut.blocking == (False,)
    orders = {o.instrument: o for o in of(Order, outs)}
    assert orders[A].amount == held and orders[A].side == "sell"
    no = denials[B]
    assert (no.action, no.codes, no.amount_sent, no.trading_state) == ("denied", ("reducing",), 0.0, "REDUCING")
    assert orders[B].side == "buy" and orders[B].amount == no.amount  # the order as decided, then its denial
    [status] = of(OrderStatus, outs)
    assert (status.order_id, status.status) == (orders[B].order_id, "denied")
    assert "reducing" in status.reason
    after = acct.update(section(3))
    [close] = of(Fill, after)
    assert close.side == "sell" and close.amount == held
    assert acct.snapshot().holdings[0][1].amount == 0.0
    [report] = of(RiskReport, after)
    assert report.trading_state == "REDUCING"


def test_halted_sends_nothing_cancels_working_orders_and_resume_trades_again() -> None:
    acct = account(latency_ns=90, commands=(Command(at=120, action="halt", reason="exchange incident"),
                                            Command(at=240, action="resume", reason="incident over")))
    [order] = of(Order, acct.update(section(0, {A: 0.5})))  # due at 150: still working at 120
    outs = acct.update(section(1))
    [change] = of(TradingStateChange, outs)
    assert (change.ts_event, change.state) == (120, "HALTED")
    [status] = of(OrderStatus, outs)
    assert (status.order_id, status.status, status.reason) == (order.order_id, "cancelled", "trading halted")
    outs = acct.update(section(2, {A: 0.3, B: 0.2}))
    denials = of(RiskDenial, outs)
    assert [(d.instrument, d.codes, d.action) for d in denials] == [(A, ("halted",), "denied"),
                                                                    (B, ("halted",), "denied")]
    assert [s.status for s in of(OrderStatus, outs)] == ["denied", "denied"]
    assert of(Fill, acct.update(section(3))) == []  # the cancelled order never fills
    outs = acct.update(section(4, {A: 0.3}))  # ts 300: resumed at 240
    assert acct.risk is not None and acct.risk.state == "ACTIVE"
    assert of(RiskDenial, outs) == [] and len(of(Order, outs)) == 1
    assert acct.snapshot().holdings == ()


def test_a_denied_order_carries_every_code_with_its_actual_and_limit() -> None:
    limits = PreTradeLimits(max_order_notional=300.0, max_order_fraction=0.3, max_position_fraction=0.3,
                            max_asset_fraction=0.3, max_gross=0.3, max_net=0.3, price_band_bps=50.0, max_orders=1,
                            window_ns=10**6)
    acct = account(limits=limits)
    outs = acct.update(section(0, {A: 0.1, B: 0.9}, quotes_b=(9.9, 10.2)))
    sent = [o for o in of(Order, outs) if o.instrument == A]
    assert len(sent) == 1 and sent[0].amount == pytest.approx(1.0)  # the first order fits every limit
    [d] = of(RiskDenial, outs)
    assert (d.instrument, d.action, d.amount_sent) == (B, "denied", 0.0)
    expected = {"max_order_notional": (900.0, 300.0), "max_order_fraction": (0.9, 0.3),
                "max_position_fraction": (0.9, 0.3), "max_asset_fraction": (0.9, 0.3), "max_gross": (1.0, 0.3),
                "max_net": (1.0, 0.3), "price_band_bps": (200.0, 50.0), "max_orders": (2.0, 1.0)}
    assert d.codes == tuple(expected)
    for code, actual, limit in zip(d.codes, d.actuals, d.limits, strict=True):
        assert actual == pytest.approx(expected[code][0], rel=1e-9), code
        assert limit == expected[code][1], code
    assert d.blocking == (True,) * 8 and d.notional == pytest.approx(900.0)
    for code in expected:
        assert code in d.reason
    [status] = of(OrderStatus, outs)
    [order_b] = [o for o in of(Order, outs) if o.instrument == B]
    assert status.order_id == order_b.order_id == d.order_id and status.status == "denied"
    assert [f.instrument for f in of(Fill, acct.update(section(1)))] == [A]


def test_a_tight_order_notional_denies_with_its_code() -> None:
    acct = account(limits=PreTradeLimits(max_order_notional=150.0))
    outs = acct.update(section(0, {A: 0.1, B: 0.2}))
    [d] = of(RiskDenial, outs)
    assert (d.instrument, d.codes, d.actuals, d.limits) == (B, ("max_order_notional",), (pytest.approx(200.0),),
                                                            (150.0,))
    assert [s.status for s in of(OrderStatus, outs)] == ["denied"]


def real_sections(n: int, every: int) -> tuple[list[str], list[CrossSection]]:
    """`n` hourly bars of 4 real assets (BTC, ETH, ADA, DOT on one venue), targets every `every` bars."""
    import polars as pl

    if not HOURLY.exists():
        pytest.skip(f"needs the shared data: {HOURLY} is missing")
    names = ["BTC", "ETH", "ADA", "DOT"]
    p = pl.read_parquet(HOURLY).sort("Date").select(names).to_numpy()[:n]
    inst = [f"h:{a}/USDT" for a in names]
    w = np.array([0.6, -0.4, 0.5, 0.3])
    out = []
    for i in range(n):
        ts = 60 * i
        bars = tuple(bar(k, ts, float(p[i, j]), open_=float(p[i - 1, j]) if i else None) for j, k in enumerate(inst))
        tg = ()
        if i % every == 0:
            x = w * (1.0 + 0.7 * math.sin(i / 5.0))
            tg = tuple(Target(instrument=k, ts_event=ts + 60, weight=float(x[j]), status="ok", volatility=0.01)
                       for j, k in enumerate(inst))
        out.append(CrossSection(ts_event=ts + 60, bars=bars, targets=tg))
    return inst, out


def real_account(inst: list[str]) -> Account:
    settings = RiskSettings(account="main", window=40, min_bars=20, es_limit=0.012, es_measure="max",
                            limits=PreTradeLimits(max_position_fraction=0.8, max_orders=3, window_ns=600),
                            commands=(Command(at=60 * 70, action="reduce", reason="review"),
                                      Command(at=60 * 85, action="halt", reason="incident"),
                                      Command(at=60 * 95, action="resume", reason="over")))
    fx = FxTable.resolve("USDT", inst, {})
    sim = SimulatedVenue({"h": VenueCosts(taker_fee_bps=20.0, half_spread_bps=5.0)})
    return Account("main", ["h"], fx, sim, initial_cash=10_000.0, min_trade_weight=0.001, latency_ns=30,
                   risk=RiskEngine(settings, inst))


def test_an_account_restored_midway_writes_the_same_records() -> None:
    inst, css = real_sections(140, 4)
    whole_acct = real_account(inst)
    whole = [o for cs in css for o in whole_acct.update(cs)] + whole_acct.flush()
    kinds = {type(o).__name__ for o in whole}
    assert {"RiskReport", "RiskScaling", "RiskDenial", "TradingStateChange", "OrderStatus", "Fill"} <= kinds
    scaled = of(RiskScaling, whole)
    assert all(s.scale < 1 and s.es_after == pytest.approx(0.012, rel=1e-9) for s in scaled)
    for cut in (30, 72, 88, 100):
        first_acct = real_account(inst)
        first = [o for cs in css[:cut] for o in first_acct.update(cs)]
        snap = pickle.loads(pickle.dumps(first_acct.snapshot()))
        fresh = real_account(inst)
        restored = Account.restore("main", ["h"], fresh.fx, fresh.sim, snap, initial_cash=10_000.0,
                                   min_trade_weight=0.001, latency_ns=30, risk=fresh.risk)
        rest = [o for cs in css[cut:] for o in restored.update(cs)] + restored.flush()
        assert repr(first + rest) == repr(whole), cut  # repr: NaN measures compare equal


def test_a_historical_asset_shock_hits_the_position_in_that_asset() -> None:
    from headrace.events import StressResultRow
    from operators.risk.stress import Scenario

    acct = account(scenarios=(Scenario(name="a_crash", kind="historical", shocks=(("A", -0.5),)),))
    acct.update(section(0, {A: 0.5}))
    acct.update(section(1))
    outs = acct.update(section(2, {A: 0.5}))
    [row] = of(StressResultRow, outs)
    value = acct.snapshot().holdings[0][1].amount * 100.0
    assert row.scenario == "a_crash" and row.pnl == pytest.approx(-0.5 * value, rel=1e-12)


def test_sells_are_checked_before_buys_so_a_rotation_fits_the_gross_limit() -> None:
    # fully in B (instrument order puts A first): rotating into A needs B's sale first to stay within gross 1.0
    acct = account(limits=PreTradeLimits(max_gross=1.0))
    acct.update(section(0, {B: 0.95}))
    acct.update(section(1))  # B fills at this bar's open
    outs = acct.update(section(2, {A: 0.95, B: 0.0}))
    orders = of(Order, outs)
    assert [(o.instrument, o.side) for o in orders] == [(B, "sell"), (A, "buy")]  # the sale decided first
    assert of(RiskDenial, outs) == []  # checked against the book the sale leaves, the buy fits
