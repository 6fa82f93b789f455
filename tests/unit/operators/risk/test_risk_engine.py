"""The risk engine fed bar by bar: its VaR and ES equal the batch measures of the window of returns computed here
from the real price matrix (including keys without a bar at a time), the ES limit scales targets exactly to the
limit or moves to REDUCING and back with one record each, LVaR is VaR plus the hand-computed spread and impact
costs, and a restored engine writes the same records as the uninterrupted one."""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable

import numpy as np
import pytest

from headrace.events import Alert, RiskDenial, RiskLimit, RiskReport, RiskScaling, TradingStateChange
from helpers import HOURLY, SHARED_DATA
from operators.risk.engine import Book, Command, Holding, RiskEngine, RiskSettings
from operators.risk.measures import cornish_fisher_es, cornish_fisher_var, historical_es, historical_var
from operators.risk.pretrade import OrderCheck, PreTradeLimits
from operators.risk.stress import Scenario

DAILY = SHARED_DATA / "universe" / "huobi-pob" / "cryptos_2017to2021_daily.parquet"
HOUR = 3_600 * 10**9


def prices(path: object, n_assets: int, rows: int) -> tuple[tuple[str, ...], np.ndarray]:
    """The first `rows` closes of the first `n_assets` assets of a real universe (NaN: no bar)."""
    import polars as pl

    if not path.exists():  # type: ignore[attr-defined]
        pytest.skip(f"needs the shared data: {path} is missing")
    df = pl.read_parquet(path).sort("Date")
    names = tuple(c for c in df.columns if c != "Date")[:n_assets]
    return names, df.select(names).to_numpy().astype(np.float64)[:rows]


def return_rows(p: np.ndarray) -> np.ndarray:
    """One row per bar: each key's simple return since its last price, 0 when it has no price now or none before."""
    last = np.full(p.shape[1], np.nan)
    out = np.zeros_like(p)
    for t in range(p.shape[0]):
        now = np.isfinite(p[t])
        both = now & np.isfinite(last)
        out[t, both] = p[t, both] / last[both] - 1.0
        last = np.where(now, p[t], last)
    return out


def book(keys: tuple[str, ...], w: np.ndarray, equity: float = 1.0) -> Book:
    return Book(equity=equity, holdings=tuple(Holding(key=k, venue="v", asset=k, quote="USDT", value=x * equity)
                                              for k, x in zip(keys, w, strict=True) if x != 0))


def feed(engine: RiskEngine, keys: tuple[str, ...], row: np.ndarray) -> None:
    engine.observe({k: float(x) for k, x in zip(keys, row, strict=True) if math.isfinite(x)})


W10 = np.array([0.3, -0.2, 0.15, 0.1, -0.05, 0.25, 0.05, -0.1, 0.2, 0.1])


@pytest.mark.parametrize("which", ["hourly", "daily"])
def test_var_and_es_equal_the_batch_measures_of_the_window(which: str) -> None:
    keys, p = prices(HOURLY if which == "hourly" else DAILY, 10, 320)
    if which == "daily":
        assert np.isnan(p).any()  # assets listing later: keys without a bar at a time
    r = return_rows(p)
    w = W10[:len(keys)]  # the daily universe holds 9 assets
    e = RiskEngine(RiskSettings(account="a", window=100, min_bars=50), keys)
    b = book(keys, w)
    checked = 0
    for t in range(p.shape[0]):
        feed(e, keys, p[t])
        rep = [x for x in e.assess(t, b) if isinstance(x, RiskReport)]
        assert len(rep) == 1
        m = rep[0]
        assert m.samples == min(t + 1, 100)
        if t + 1 < 50:
            assert math.isnan(m.var_historical) and math.isnan(m.es_historical) and math.isnan(m.es_cornish_fisher)
            continue
        if t not in (49, 50, 99, 100, 101, 180, 250, 319):
            continue
        pnl = r[max(0, t - 99):t + 1] @ w
        assert m.var_historical == pytest.approx(historical_var(pnl, 0.975), abs=1e-12)
        assert m.es_historical == pytest.approx(historical_es(pnl, 0.975), abs=1e-12)
        assert m.var_cornish_fisher == pytest.approx(cornish_fisher_var(pnl, 0.975), abs=1e-12)
        assert m.es_cornish_fisher == pytest.approx(cornish_fisher_es(pnl, 0.975), abs=1e-12)
        assert m.es_historical >= m.var_historical > 0
        assert m.gross == pytest.approx(float(np.abs(w).sum()), abs=1e-15)
        assert m.net == pytest.approx(float(w.sum()), abs=1e-15)
        checked += 1
    assert checked == 8


def test_a_key_without_a_bar_gets_a_zero_return_and_its_next_return_spans_the_gap() -> None:
    keys = ("A", "B")
    e = RiskEngine(RiskSettings(account="a", window=10, min_bars=1), keys)
    e.observe({"A": 100.0, "B": 10.0})
    e.observe({"A": 110.0})  # B has no bar: 0
    e.observe({"B": 12.0})  # A has no bar; B moved 20 % since its last bar two rows ago
    e.observe({"A": 99.0, "B": float("nan")})  # a bad price counts as no bar
    rows = e._rows[:e._samples]  # the window as the engine holds it
    ra, rb, ra2 = 110.0 / 100.0 - 1.0, 12.0 / 10.0 - 1.0, 99.0 / 110.0 - 1.0
    np.testing.assert_array_equal(rows, [[0.0, 0.0], [ra, 0.0], [0.0, rb], [ra2, 0.0]])
    e.assess(0, book(keys, np.array([1.0, 0.0])))
    assert e.measures.var_historical == pytest.approx(historical_var([0.0, ra, 0.0, ra2]), abs=1e-15)


def test_mixed_clocks_on_real_hourly_data_equal_the_batch_window() -> None:
    keys, p = prices(HOURLY, 6, 200)
    rng = np.random.default_rng(7)
    p = np.where(rng.random(p.shape) < 0.3, np.nan, p)  # 30 % of the bars missing: keys on other clocks
    r = return_rows(p)
    w = W10[:6]
    e = RiskEngine(RiskSettings(account="a", window=60, min_bars=20), keys)
    for t in range(p.shape[0]):
        feed(e, keys, p[t])
        e.assess(t, book(keys, w))
    pnl = r[-60:] @ w
    assert e.measures.es_historical == pytest.approx(historical_es(pnl), abs=1e-12)
    assert e.measures.es_cornish_fisher == pytest.approx(cornish_fisher_es(pnl), abs=1e-12)


def fed(window: int = 100, rows: int = 220, n: int = 10,
        **kw: object) -> tuple[RiskEngine, tuple[str, ...], np.ndarray]:
    keys, p = prices(HOURLY, n, rows)
    e = RiskEngine(RiskSettings(account="a", window=window, min_bars=50, **kw), keys)  # type: ignore[arg-type]
    for t in range(rows):
        feed(e, keys, p[t])
    return e, keys, return_rows(p)[-window:]


@pytest.mark.parametrize("measure", ["historical", "cornish_fisher", "max"])
def test_scale_puts_the_targets_es_exactly_on_the_limit(measure: str) -> None:
    def es(w: np.ndarray) -> float:
        x = window @ w
        h, c = historical_es(x), cornish_fisher_es(x)
        return h if measure == "historical" else c if measure == "cornish_fisher" else max(h, c)

    probe, keys, window = fed(es_measure=measure)
    limit = 0.4 * es(W10)
    e, *_ = fed(es_measure=measure, es_limit=limit)
    targets = dict(zip(keys, W10.tolist(), strict=True))
    k, recs = e.scale(7, targets)
    assert 0 < k < 1
    assert k == pytest.approx(limit / es(W10), rel=1e-12)
    assert es(k * W10) == pytest.approx(limit, rel=1e-12)
    scaling = [x for x in recs if isinstance(x, RiskScaling)]
    assert len(scaling) == 1
    s = scaling[0]
    assert (s.ts_event, s.measure, s.limit, s.scale) == (7, measure, limit, k)
    assert s.es_before == pytest.approx(es(W10), rel=1e-12)
    assert s.es_after == pytest.approx(limit, rel=1e-12)
    rows = [x for x in recs if isinstance(x, RiskLimit)]
    assert [(x.name, x.breached) for x in rows] == [("es_targets", True)]
    assert e.state == "ACTIVE"  # scaling never changes the trading state
    # under the limit, with the limit off, under the reduce action, and before min_bars: no scaling
    assert fed(es_measure=measure, es_limit=1.01 * es(W10))[0].scale(7, targets) == (1.0, [])
    assert probe.scale(7, targets) == (1.0, [])
    assert fed(es_measure=measure, es_limit=limit, es_action="reduce")[0].scale(7, targets) == (1.0, [])
    assert fed(rows=40, es_measure=measure, es_limit=limit)[0].scale(7, targets) == (1.0, [])


def test_es_reduce_action_moves_to_reducing_and_back_once_each() -> None:
    _, keys, window = fed()
    es1 = historical_es(window @ W10)
    limit = 0.5 * es1  # weights x 1: ES at twice the limit
    e, *_ = fed(es_limit=limit, es_measure="historical", es_action="reduce", es_resume=0.8)
    out: list[object] = []
    for ts, scale in enumerate([0.3, 1.0, 1.0, 0.45, 0.41, 0.39, 0.3, 1.0]):
        out += [(ts, x) for x in e.assess(ts, book(keys, scale * W10)) if not isinstance(x, RiskReport)]
        # 0.45 and 0.41 x: ES at 0.9 and 0.82 of the limit, still REDUCING; 0.39: below 0.8, ACTIVE
        assert e.state == ("REDUCING" if 1 <= ts <= 4 or ts == 7 else "ACTIVE"), ts
    changes = [(ts, x) for ts, x in out if isinstance(x, TradingStateChange)]
    assert [(ts, x.previous, x.state, x.source) for ts, x in changes] == [
        (1, "ACTIVE", "REDUCING", "limit:es"), (5, "REDUCING", "ACTIVE", "limit:es"),
        (7, "ACTIVE", "REDUCING", "limit:es")]
    limits = [(ts, x) for ts, x in out if isinstance(x, RiskLimit)]
    assert [(ts, x.name, x.breached) for ts, x in limits] == [(1, "es", True), (5, "es", False), (7, "es", True)]
    assert limits[0][1].value == pytest.approx(es1, rel=1e-12)
    assert limits[0][1].utilisation == pytest.approx(2.0, rel=1e-12)
    alerts = [(ts, x.kind) for ts, x in out if isinstance(x, Alert)]
    assert alerts == [(1, "risk_limit"), (1, "trading_state"), (5, "trading_state"), (7, "risk_limit"),
                      (7, "trading_state")]


def test_the_operators_reduce_outlives_the_es_limit() -> None:
    _, keys, window = fed()
    limit = 0.5 * historical_es(window @ W10)
    cmds = (Command(at=2, action="reduce", reason="desk review"), Command(at=4, action="resume", reason="done"))
    e, *_ = fed(es_limit=limit, es_measure="historical", es_action="reduce", commands=cmds)
    states = []
    for ts, scale in enumerate([1.0, 1.0, 1.0, 0.1, 0.1, 0.1]):
        changes = [x for x in e.commands(ts) + e.assess(ts, book(keys, scale * W10))
                   if isinstance(x, TradingStateChange)]
        states.append((e.state, [(c.source, c.state) for c in changes]))
    assert states == [("REDUCING", [("limit:es", "REDUCING")]), ("REDUCING", []), ("REDUCING", []),
                      ("REDUCING", []),  # the limit released, the operator's REDUCING holds
                      ("ACTIVE", [("operator", "ACTIVE")]), ("ACTIVE", [])]


def test_lvar_adds_the_hand_computed_spread_and_impact_costs() -> None:
    keys = ("v:A/Q", "w:B/Q")
    s = RiskSettings(account="a", window=10, min_bars=4, spread_k=3.0, spread_halflife=2.0, impact_coefficient=0.7,
                     half_spreads=(("w", 0.0007),))
    e = RiskEngine(s, keys)
    pa, pb = [100.0, 102.0, 99.0, 101.0], [10.0, 10.1, 10.0, 9.9]
    spreads_a = [0.002, 0.004, 0.003, 0.005]
    volumes_a = [10_000.0, 20_000.0, 15_000.0, 10_000.0]
    for t in range(4):
        e.observe({"v:A/Q": pa[t], "w:B/Q": pb[t]}, {"v:A/Q": spreads_a[t]}, {"v:A/Q": volumes_a[t]})
    b = Book(equity=1_000.0, holdings=(Holding("v:A/Q", "v", "A", "Q", 500.0), Holding("w:B/Q", "w", "B", "Q", -200.0)))
    rep = next(x for x in e.assess(0, b) if isinstance(x, RiskReport))
    lam = 1.0 - 0.5 ** (1.0 / 2.0)
    m, v = 0.002, 0.0  # EWMA of the relative spread and of its variance, from the first value
    for x in spreads_a[1:]:
        d = x - m
        m, v = m + lam * d, (1.0 - lam) * (v + lam * d * d)
    vol_ewma = 10_000.0
    for x in volumes_a[1:]:
        vol_ewma += lam * (x - vol_ewma)
    spread_cost = 0.5 * 0.5 * (m + 3.0 * math.sqrt(v)) + 0.2 * 0.0007  # B: no quotes, the venue's half spread
    ra = [0.0, 102.0 / 100.0 - 1.0, 99.0 / 102.0 - 1.0, 101.0 / 99.0 - 1.0]
    impact = 0.7 * float(np.std(ra)) * math.sqrt(0.5 / (vol_ewma / 1_000.0)) * 0.5  # B: no volume, no impact
    assert rep.lvar_exogenous == pytest.approx(spread_cost, rel=1e-12)
    assert rep.lvar_endogenous == pytest.approx(impact, rel=1e-12)
    assert rep.lvar - rep.var_historical == pytest.approx(spread_cost + impact, rel=1e-12)
    rb = [0.0, 0.01, 10.0 / 10.1 - 1.0, 9.9 / 10.0 - 1.0]
    assert rep.var_historical == pytest.approx(historical_var(0.5 * np.array(ra) - 0.2 * np.array(rb)), abs=1e-15)


def make(side: str, notional: float) -> Callable[[float], OrderCheck]:
    sign = 1.0 if side == "buy" else -1.0

    def build(amount: float) -> OrderCheck:
        d = sign * amount * 100.0
        return OrderCheck(instrument="v:A/Q", asset="A", notional=amount * 100.0, price=100.0, mark=100.0,
                          position_before=notional, position_after=notional + d, asset_before=notional,
                          asset_after=notional + d, gross_before=abs(notional),
                          gross_after=abs(notional + d), net_before=notional, net_after=notional + d,
                          equity=10_000.0)
    return build


def run(engine: RiskEngine, keys: tuple[str, ...], p: np.ndarray, start: int, stop: int,
        snap_at: int | None = None) -> tuple[list[object], object]:
    """Drive `engine` over bars [start, stop): observe, commands, assess; every 7th bar a rebalance (scale, four
    orders, stress, limit rows). Return every record and the snapshot taken after bar `snap_at`."""
    out: list[object] = []
    snap = None
    for t in range(start, stop):
        ts = t * HOUR
        feed(engine, keys, p[t])
        out += engine.commands(ts)
        w = W10[:len(keys)] * (1.0 + 0.8 * math.sin(t / 9.0))
        b = book(keys, w, equity=10_000.0)
        out += engine.assess(ts, b)
        if t % 7 == 0:
            out += engine.scale(ts, dict(zip(keys, w.tolist(), strict=True)))[1]
            pos = float(w[0]) * 10_000.0
            for i, side in enumerate(("buy", "sell", "sell", "sell")):
                v = engine.check(ts + i, f"o{t}-{i}", side, 30.0, pos / 100.0, make(side, pos))
                out.append((v.amount, v.denial))
            out += engine.stress(ts, b, "USDT")[1]
            out += engine.limit_rows(ts, b)
        if t == snap_at:
            snap = pickle.loads(pickle.dumps(engine.snapshot()))
    return out, snap


def test_a_restored_engine_writes_the_same_records_as_the_uninterrupted_one() -> None:
    keys, p = prices(HOURLY, 8, 260)
    p = np.where(np.random.default_rng(3).random(p.shape) < 0.1, np.nan, p)
    _, _, window = fed(window=60, rows=120, n=8)
    es = historical_es(window @ W10[:8])
    settings = RiskSettings(
        account="a", window=60, min_bars=30, es_limit=0.8 * es, es_measure="max", es_action="reduce",
        limits=PreTradeLimits(max_orders=2, window_ns=5 * HOUR, max_position_fraction=0.35, price_band_bps=500.0),
        commands=(Command(at=90 * HOUR, action="halt", reason="incident"),
                  Command(at=95 * HOUR, action="resume", reason="over"),
                  Command(at=150 * HOUR, action="reduce", reason="review"),
                  Command(at=170 * HOUR, action="resume", reason="done")),
        stress_limit=0.05, stress_action="reduce",
        scenarios=(Scenario(name="crash", kind="market", size=-0.3),))
    whole, _ = run(RiskEngine(settings, keys), keys, p, 0, 260)
    kinds = {type(x).__name__ for x in whole}
    assert {"RiskReport", "TradingStateChange", "RiskLimit", "StressResultRow", "Alert"} <= kinds
    denials = [x[1] for x in whole if isinstance(x, tuple) and isinstance(x[1], RiskDenial)]
    assert {c for d in denials for c in d.codes} >= {"halted", "max_orders", "reducing"}
    for cut in (40, 59, 61, 130, 200):
        first, snap = run(RiskEngine(settings, keys), keys, p, 0, cut + 1, snap_at=cut)
        restored = RiskEngine.restore(settings, keys, snap)  # type: ignore[arg-type]
        rest, _ = run(restored, keys, p, cut + 1, 260)
        assert repr(first + rest) == repr(whole), cut  # repr: NaN fields compare equal


def test_restore_refuses_other_keys() -> None:
    e = RiskEngine(RiskSettings(account="a", window=5), ("A", "B"))
    e.observe({"A": 1.0, "B": 2.0})
    with pytest.raises(ValueError, match="keys"):
        RiskEngine.restore(RiskSettings(account="a", window=5), ("A", "C"), e.snapshot())


def test_check_in_each_state() -> None:
    keys = ("v:A/Q",)
    cmds = (Command(at=1, action="reduce", reason="r"), Command(at=2, action="halt", reason="h"))
    e = RiskEngine(RiskSettings(account="a", commands=cmds), keys)
    ok = e.check(0, "o1", "buy", 5.0, 10.0, make("buy", 1_000.0))
    assert (ok.amount, ok.denial) == (5.0, None)
    e.commands(1)
    assert e.state == "REDUCING"
    adds = e.check(1, "o2", "buy", 5.0, 10.0, make("buy", 1_000.0))
    assert adds.amount == 0.0 and adds.denial is not None
    assert (adds.denial.action, adds.denial.codes, adds.denial.actuals, adds.denial.limits) == (
        "denied", ("reducing",), (15.0,), (10.0,))
    cut = e.check(1, "o3", "sell", 25.0, 10.0, make("sell", 1_000.0))
    assert cut.amount == 10.0 and cut.denial is not None
    assert (cut.denial.action, cut.denial.amount, cut.denial.amount_sent, cut.denial.codes, cut.denial.blocking) == (
        "reduced", 25.0, 10.0, ("reduce_only",), (False,))
    part = e.check(1, "o4", "sell", 4.0, 10.0, make("sell", 1_000.0))
    assert (part.amount, part.denial) == (4.0, None)
    e.commands(2)
    halted = e.check(2, "o5", "sell", 4.0, 10.0, make("sell", 1_000.0))
    assert halted.amount == 0.0 and halted.denial is not None
    assert (halted.denial.codes, halted.denial.trading_state, halted.denial.amount_sent) == (("halted",), "HALTED", 0.0)


def test_limit_rows_of_one_time_have_distinct_ids_and_keep_the_breach_action() -> None:
    """risk_limits is a ReplacingMergeTree keyed by event_id (account, time, name): a breach row and the limit's
    utilisation row at the same rebalance would collapse into one, losing what the breach did."""
    _, keys, window = fed()
    limit = 0.5 * historical_es(window @ W10)
    e, *_ = fed(es_limit=limit, es_measure="historical", es_action="reduce", stress_limit=0.01,
                stress_action="reduce", scenarios=(Scenario(name="crash", kind="market", size=-0.3),))
    b = book(keys, W10, equity=10_000.0)
    out = e.assess(5, b) + e.stress(5, b, "USDT")[1] + e.limit_rows(5, b)
    rows = [x for x in out if isinstance(x, RiskLimit)]
    ids = [x.event_id for x in rows]
    assert len(ids) == len(set(ids))
    by_name = {x.name: x for x in rows}
    assert by_name["es"].breached and by_name["es"].action.startswith("REDUCING")
    assert by_name["stress"].breached and by_name["stress"].action == "REDUCING"
    later = e.limit_rows(6, b)  # the next rebalance: the plain utilisation rows again
    assert {x.name: x.action for x in later if isinstance(x, RiskLimit)} == {"es": "", "stress": ""}
