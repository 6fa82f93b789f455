"""The cross-venue arbitrage signal against a plain loop over the same quotes, and its persistence rules."""

from __future__ import annotations

import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.events import ArbSignal, Bar
from operators.positions.fx import FxTable
from operators.router.arbitrage import ArbitrageCore
from operators.router.listings import Listing

INSTRUMENTS = ["a:BTC/USD", "a:BTC/USDC", "b:BTC/USD", "b:BTC/USDC"]
FEES = {"a": 0.001, "b": 0.0026}
LISTINGS = {"BTC": tuple(Listing(i, i[0], "BTC", i.split("/")[1], None, FEES[i[0]], 0.0) for i in INSTRUMENTS)}


def core(threshold: float = 5.0, min_duration: int = 120, max_age: int = 600) -> ArbitrageCore:
    fx = FxTable.resolve("USD", INSTRUMENTS, fixed={"USDC": 1.0})
    return ArbitrageCore(LISTINGS, fx, threshold_bps=threshold, min_duration_ns=min_duration,
                         quote_max_age_ns=max_age)


def bar(instrument: str, ts: int, bid: float, ask: float) -> Bar:
    mid = (bid + ask) / 2
    return Bar(instrument=instrument, ts_open=ts - 60, ts_event=ts, open=mid, high=ask, low=bid, close=mid,
               volume=1.0, trades=1, bid=bid, ask=ask)


def expected(steps: list[dict[str, tuple[float, float]]], threshold: float, min_duration: int) -> list[tuple]:
    """A plain loop: the same rule written out, every quote fresh (one bar per instrument per minute)."""
    out: list[tuple] = []
    first: dict[tuple[str, str], int] = {}
    confirmed: dict[tuple[str, str], float] = {}
    for n, quotes in enumerate(steps):
        ts = 60 * (n + 1)
        usdc = {v: quotes[f"{v}:BTC/USD"][1] * 0 + (quotes[f"{v}:BTC/USD"][0] + quotes[f"{v}:BTC/USD"][1]) / 2
                for v in "ab"}
        # one USDC rate for both venues: the freshest triangle; all equally fresh -> the first (venue a)
        rate = usdc["a"] / ((quotes["a:BTC/USDC"][0] + quotes["a:BTC/USDC"][1]) / 2)
        val = {i: (b * (rate if i.endswith("USDC") else 1.0), a * (rate if i.endswith("USDC") else 1.0))
               for i, (b, a) in quotes.items()}
        live = set()
        for buy in INSTRUMENTS:
            for sell in INSTRUMENTS:
                if buy[0] == sell[0]:
                    continue
                net = (val[sell][0] * (1 - FEES[sell[0]]) / (val[buy][1] * (1 + FEES[buy[0]])) - 1) * 1e4
                if net <= threshold:
                    continue
                live.add((buy, sell))
                first.setdefault((buy, sell), ts)
                if (buy, sell) not in confirmed and ts - first[(buy, sell)] >= min_duration:
                    confirmed[(buy, sell)] = net
                    out.append(("open", ts, buy, sell))
        for k in sorted(set(first) - live):
            del first[k]
            if confirmed.pop(k, None) is not None:
                out.append(("closed", ts, *k))
    return out


def run(c: ArbitrageCore, steps: list[dict[str, tuple[float, float]]], start: int = 0) -> list[ArbSignal]:
    out = []
    for n, quotes in enumerate(steps[start:], start):
        ts = 60 * (n + 1)
        out += c.update(ts, [bar(i, ts, *quotes[i]) for i in INSTRUMENTS])
    return out


price = st.floats(99.0, 101.0)
quote_st = price.flatmap(lambda mid: st.floats(0.0, 0.002).map(lambda hs: (mid * (1 - hs), mid * (1 + hs))))
steps_st = st.lists(st.fixed_dictionaries({i: quote_st for i in INSTRUMENTS}), min_size=1, max_size=25)


@settings(max_examples=80, deadline=None)
@given(steps=steps_st, min_duration=st.sampled_from([0, 60, 180]))
def test_signals_are_those_of_a_plain_loop_over_the_same_quotes(steps, min_duration) -> None:
    got = [(s.status, s.ts_event, s.buy_instrument, s.sell_instrument) for s in run(core(5.0, min_duration), steps)]
    want = expected(steps, 5.0, min_duration)
    assert sorted(got) == sorted(want)


@settings(max_examples=30, deadline=None)
@given(steps=steps_st, cut=st.integers(0, 24))
def test_a_restored_core_continues_exactly(steps, cut) -> None:
    cut = min(cut, len(steps))
    straight = run(core(), steps)
    first = core()
    before = run(first, steps[:cut])
    resumed = core().restore_state(pickle.loads(pickle.dumps(first.snapshot())))
    assert before + run(resumed, steps, start=cut) == straight


def test_a_spread_shorter_than_the_minimum_duration_is_no_signal_and_a_long_one_opens_and_closes_once() -> None:
    calm = {i: (99.99, 100.01) for i in INSTRUMENTS}
    wide = {**calm, "b:BTC/USD": (101.0, 101.02)}  # sell on b at 101 after buying on a at 100.01: 99 bps gross
    assert run(core(min_duration=120), [calm, wide, wide, calm]) == []  # 60 s of spread: not yet a signal
    signals = run(core(min_duration=120), [calm, wide, wide, wide, wide, calm])
    usd = [s for s in signals if s.buy_instrument == "a:BTC/USD"]
    assert [(s.status, s.ts_event, s.sell_instrument) for s in usd] == [("open", 240, "b:BTC/USD"),
                                                                        ("closed", 360, "b:BTC/USD")]
    # buying with USDC on a (USDC worth 1 USD there) is the same opportunity through the other quote
    assert {(s.status, s.buy_instrument) for s in signals} - {(s.status, s.buy_instrument) for s in usd} == {
        ("open", "a:BTC/USDC"), ("closed", "a:BTC/USDC")}
    signals = usd
    assert signals[1].opened_ts == signals[0].opened_ts == 120
    # net of 10 bps on a and 26 bps on b: 101 * 0.9974 / (100.01 * 1.001) - 1 = 62.67 bps
    assert 62.6 < signals[0].net_spread_bps < 62.7 and signals[0].gross_spread_bps > signals[0].net_spread_bps


def test_a_stale_leg_closes_the_signal() -> None:
    c = core(min_duration=0, max_age=120)
    calm = {i: (99.99, 100.01) for i in INSTRUMENTS}
    wide = {**calm, "b:BTC/USD": (101.0, 101.02)}
    assert {s.status for s in run(c, [wide])} == {"open"}
    # b stops sending bars: after max_age its quote no longer counts and the signal closes
    out = []
    for ts in (120, 180, 240):
        out += c.update(ts, [bar(i, ts, *calm[i]) for i in INSTRUMENTS if not i.startswith("b")])
    assert {(s.status, s.ts_event) for s in out} == {("closed", 240)}


def test_two_usdc_legs_compare_their_own_prices_whatever_usdc_is_worth() -> None:
    c = core(min_duration=0)
    # USDC at 0.9 USD on both venues; BTC/USDC quoted the same on both: no arbitrage between the USDC legs
    q = {"a:BTC/USD": (89.99, 90.01), "b:BTC/USD": (89.99, 90.01), "a:BTC/USDC": (99.99, 100.01),
         "b:BTC/USDC": (99.99, 100.01)}
    assert run(c, [q]) == []
    top = c.consolidated(60)[0]
    assert abs(top.bid - 89.99) < 0.02 and abs(top.ask - 90.01) < 0.02
