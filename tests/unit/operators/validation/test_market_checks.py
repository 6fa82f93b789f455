from __future__ import annotations

import json
import pickle

from hypothesis import given
from hypothesis import strategies as st

from headrace.events import MarketSlice, Quarantined
from helpers import market_slice, quotes, trades
from operators.validation.market_checks import MarketValidator

INST = "x:A/B"


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
