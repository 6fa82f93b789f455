from __future__ import annotations

import dataclasses
import itertools
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from headrace.events import MarketSlice, Quarantined
from helpers import market_slice, quotes, trades
from operators.validation.market_checks import MarketValidator

INST = "x:A/B"
DEMO = Path(__file__).resolve().parents[4] / "data" / "demo" / "bittrex"


def run(core: MarketValidator, slices: list[MarketSlice]) -> tuple[list[int], list[Quarantined]]:
    kept: list[int] = []
    bad: list[Quarantined] = []
    for s in slices:
        for o in core.update(s):
            if isinstance(o, MarketSlice):
                kept += [] if o.trades is None else o.trades.origin.row.tolist()
            else:
                bad.append(o)
    return kept, bad


def test_validator_quarantines_a_trade_that_goes_back_in_time_and_keeps_the_rest() -> None:
    chunk = trades(INST, [10, 20, 15, 30], [1.0, 1.1, 1.2, 1.3], ids=["a", "b", "c", "d"])
    kept, bad = run(MarketValidator(), [market_slice(INST, 30, trades=chunk)])
    assert kept == [0, 1, 3]
    assert len(bad) == 1 and bad[0].row == 2 and bad[0].reason.startswith("timestamp went backwards: 15 < 20")
    assert json.loads(bad[0].raw)["price"] == 1.2


def test_validator_finds_duplicates_across_chunk_boundaries() -> None:
    core = MarketValidator()
    first = trades(INST, [10, 20], [1.0, 1.2], ids=["a", "b"])
    second = trades(INST, [20, 20, 25], [1.2, 1.25, 1.3], ids=["b", "c", "d"], start_row=2)
    kept, bad = run(core, [market_slice(INST, 19, trades=first), market_slice(INST, 30, trades=second)])
    assert kept == [0, 1, 3, 4]
    assert [q.reason for q in bad] == ["duplicate trade id 'b' at event time 20"]


def test_trades_without_ids_are_never_called_duplicates() -> None:
    chunk = trades(INST, [10, 10], [1.0, 1.0])
    kept, bad = run(MarketValidator(), [market_slice(INST, 10, trades=chunk)])
    assert kept == [0, 1] and bad == []


def test_identical_quotes_at_one_time_are_duplicates() -> None:
    q = quotes(INST, [5, 5, 6], bid=[1.0, 1.0, 1.0], ask=[2.0, 2.0, 2.0])
    [out, dup] = MarketValidator().update(market_slice(INST, 6, quotes=q))
    assert isinstance(out, MarketSlice) and out.quotes is not None and len(out.quotes) == 2
    assert isinstance(dup, Quarantined) and dup.reason.startswith("duplicate quote")


def test_rejected_records_from_the_parser_pass_through_to_quarantine() -> None:
    q = Quarantined(instrument=INST, ts_event=0, ts_recv=0, source="f.csv", row=3, reason="missing field 'close'",
                    raw="{}")
    out = MarketValidator().update(MarketSlice(instrument=INST, watermark=0, rejected=(q,)))
    assert out[1] == q and isinstance(out[0], MarketSlice) and out[0].rejected == ()


@given(ts=st.lists(st.integers(0, 30), min_size=1, max_size=80), ids=st.lists(st.integers(0, 5), min_size=80,
       max_size=80), cuts=st.lists(st.integers(1, 79), max_size=5), snap_at=st.integers(0, 5))
def test_validation_in_chunks_with_restores_equals_validation_in_one_go(ts, ids, cuts, snap_at) -> None:
    n = len(ts)
    idv = [str(i) for i in ids[:n]]
    whole = trades(INST, ts, [1.0] * n, ids=idv)
    expected = run(MarketValidator(), [market_slice(INST, max(ts), trades=whole)])
    bounds = sorted({c for c in cuts if c < n} | {n})
    core, a, kept, bad = MarketValidator(), 0, [], []
    for j, b in enumerate(bounds):
        if j == snap_at:
            core = MarketValidator.restore(pickle.loads(pickle.dumps(core.snapshot())))
        k, q = run(core, [market_slice(INST, 0, trades=trades(INST, ts[a:b], [1.0] * (b - a), ids=idv[a:b],
                                                                   start_row=a))])
        kept, bad, a = kept + k, bad + q, b
    assert (kept, [x.row for x in bad], [x.reason for x in bad]) == (
        expected[0], [x.row for x in expected[1]], [x.reason for x in expected[1]])
    # what is kept never goes back in time and never repeats an id at one time
    kept_ts = [ts[i] for i in kept]
    assert kept_ts == sorted(kept_ts)
    assert len({(ts[i], idv[i]) for i in kept}) == len(kept)


# --------------------------------------------------------------------------------------------------
# price jumps: beyond max(max_jump_sigmas x recent volatility, max_jump_floor) from the last good price


def test_a_price_spike_is_quarantined_with_the_reason_and_the_next_good_price_kept() -> None:
    prices = [100.0, 100.5, 99.8, 1e6, 100.2, 100.1]
    kept, bad = run(MarketValidator(), [market_slice(INST, 10, trades=trades(INST, list(range(6)), prices))])
    assert kept == [0, 1, 2, 4, 5]
    [q] = bad
    assert q.row == 3 and q.reason.startswith("price jump: log move 9.2") and "max(50 x recent volatility" in q.reason


def test_a_move_that_persists_becomes_the_new_level_after_three_records() -> None:
    prices = [100.0, 100.5, 100.2, 300.0, 301.0, 302.0, 303.0, 301.5]
    kept, bad = run(MarketValidator(), [market_slice(INST, 10, trades=trades(INST, list(range(8)), prices))])
    assert [q.row for q in bad] == [3, 4] and kept == [0, 1, 2, 5, 6, 7]


def test_the_jump_bound_follows_the_config_and_recent_volatility() -> None:
    calm = [100.0 * (1.001 if i % 2 else 1.0) for i in range(200)]
    move = [*calm, calm[-1] * 1.3]  # log move 0.26: below the floor 0.5, above 50 x 0.001 and the floor 0.2
    for core, kept_last in ((MarketValidator(), True), (MarketValidator(max_jump_floor=0.2), False),
                            (MarketValidator(max_jump_sigmas=1000.0, max_jump_floor=0.2), True)):
        kept, _ = run(core, [market_slice(INST, 300, trades=trades(INST, list(range(201)), move))])
        assert (200 in kept) is kept_last


def test_jumps_are_checked_on_every_price_of_a_bar_and_a_quote() -> None:
    from headrace.events import BarChunk
    from helpers import origin
    n = 4
    close = np.array([10.0, 10.1, 10.2, 10.1])
    high = close.copy()
    high[2] = 1e5  # a wild high: within [low, high] rules, but a jump
    bars = BarChunk(instrument=INST, ts_open=np.arange(n, dtype=np.int64), ts_event=np.arange(n, dtype=np.int64) + 1,
                    ts_recv=np.arange(n, dtype=np.int64) + 1, open=close.copy(), high=high, low=close.copy(),
                    close=close, volume=np.ones(n), origin=origin(n))
    out = MarketValidator().update(market_slice(INST, 5, bars=bars))
    assert [(q.row, q.reason.split(":")[0]) for q in out[1:]] == [(2, "price jump")]  # type: ignore[union-attr]
    q = quotes(INST, [0, 1, 2], bid=[1.0, 1.0, 1.0], ask=[1.01, 30.0, 1.02])
    out = MarketValidator().update(market_slice(INST, 5, quotes=q))
    assert [x.row for x in out[1:]] == [1]  # type: ignore[union-attr]


def test_jump_state_survives_a_snapshot_and_restore_with_the_new_version() -> None:
    prices = [100.0, 100.5, 300.0, 301.0, 100.7, 302.0, 303.0, 304.0, 100.1]
    whole = run(MarketValidator(), [market_slice(INST, 10, trades=trades(INST, list(range(9)), prices))])
    for cut in range(1, 9):
        first = MarketValidator()
        k1, b1 = run(first, [market_slice(INST, 0, trades=trades(INST, list(range(cut)), prices[:cut]))])
        snap = pickle.loads(pickle.dumps(first.snapshot()))
        assert snap.version == 2
        k2, b2 = run(MarketValidator.restore(snap), [market_slice(INST, 10, trades=trades(
            INST, list(range(cut, 9)), prices[cut:], start_row=cut))])
        assert (k1 + k2, [(q.row, q.reason) for q in b1 + b2]) == (whole[0], [(q.row, q.reason) for q in whole[1]])


def test_limits_come_from_the_config_section_and_bad_ones_name_the_key() -> None:
    from headrace.config import load_config
    from headrace.errors import ConfigError
    config = load_config(None, ["validation.max_jump_floor=0.1"])
    core = MarketValidator.from_config(config.validation)
    kept, _ = run(core, [market_slice(INST, 5, trades=trades(INST, [0, 1], [100.0, 120.0]))])
    assert kept == [0]
    restored = MarketValidator.from_config(config.validation, core.snapshot())
    kept, _ = run(restored, [market_slice(INST, 5, trades=trades(INST, [2], [101.0], start_row=2))])
    assert kept == [2]
    with pytest.raises(ConfigError, match=r"validation\.max_jump_sigmas"):
        MarketValidator(max_jump_sigmas=0.0)


def test_one_wild_bar_in_real_data_leaves_every_feature_finite() -> None:
    import math

    import polars as pl

    from operators.bars.bar_builder import BarBuilder
    from operators.features.bar_features import BarFeatures
    from sources.formats import read_paths
    from sources.replay_plan import ReplayPlan

    [frame] = read_paths([str(DEMO / "ETH_BTC-5m.feather")])
    wild = frame.frame.with_columns(
        *(pl.when(pl.col("row") == 100).then(pl.col(c) * 1e9).otherwise(pl.col(c)).alias(c)
          for c in ("open", "high", "low", "close")))
    plan = ReplayPlan.build([dataclasses.replace(frame, frame=wild)], 500)
    [inst] = plan.universe
    validator, builder, feats = MarketValidator(), BarBuilder(inst, plan.timeframes[inst]), BarFeatures(24.0, 24)
    quarantined, features = [], []
    for j in range(plan.n_slices):
        for item in plan.slice(j):
            for out in validator.update(item):
                if isinstance(out, Quarantined):
                    quarantined.append(out)
                    continue
                for batch in builder.update(out):
                    features += [f for fb in feats.update(batch) for f in fb.features]
    assert [(q.row, q.reason.split(":")[0]) for q in quarantined] == [(100, "price jump")]
    values = [v for f in features for v in (f.log_return, f.volatility, f.momentum) if v is not None]
    assert values and all(math.isfinite(v) for v in values)


@given(st.lists(st.floats(-0.8, 0.8), min_size=1, max_size=60), st.lists(st.integers(1, 59), max_size=4),
       st.sampled_from([0.05, 0.3, 0.5]))
def test_the_vectorised_jump_path_equals_the_record_by_record_rule(moves, cuts, floor) -> None:
    # the no-jump fast path must leave exactly the state and verdicts of the record-by-record loop
    import operators.validation.market_checks as mc

    prices = list(np.exp(np.cumsum(moves)) * 100.0)
    ts = list(range(1, len(prices) + 1))
    bounds = sorted({0, *[c for c in cuts if c < len(prices)], len(prices)})
    slices = [market_slice("x:A/B", ts[b - 1], trades=trades("x:A/B", ts[a:b], prices[a:b], start_row=a))
              for a, b in itertools.pairwise(bounds)]
    fast_core = MarketValidator(max_jump_sigmas=50.0, max_jump_floor=floor)
    fast = run(fast_core, slices)
    original = mc._no_jump
    mc._no_jump = lambda *a, **k: None  # the loop alone
    try:
        slow_core = MarketValidator(max_jump_sigmas=50.0, max_jump_floor=floor)
        slow = run(slow_core, slices)
    finally:
        mc._no_jump = original
    assert fast[0] == slow[0]
    assert [q.reason for q in fast[1]] == [q.reason for q in slow[1]]
    a, b = fast_core.snapshot().trades, slow_core.snapshot().trades
    assert a.last_log == pytest.approx(b.last_log, rel=1e-12) and a.pending == b.pending
    assert a.var == pytest.approx(b.var, rel=1e-9, abs=1e-300)
