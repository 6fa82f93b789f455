"""What counts as a duplicate: exact repeats at one event time, also when the repeat opens the next chunk."""

from __future__ import annotations

from headrace.events import MarketSlice, Quarantined
from helpers import market_slice, quotes, trades
from operators.validation.market_checks import MarketValidator

INST = "x:A/B"


def split(outs: list[MarketSlice | Quarantined]) -> tuple[list[MarketSlice], list[Quarantined]]:
    return [o for o in outs if isinstance(o, MarketSlice)], [o for o in outs if isinstance(o, Quarantined)]


def test_a_trade_repeated_as_the_first_record_of_the_next_chunk_is_a_duplicate() -> None:
    core = MarketValidator()
    first = trades(INST, [10, 20], [1.0, 1.2], ids=["a", "b"])
    second = trades(INST, [20, 25], [1.2, 1.3], ids=["b", "c"], start_row=2)  # "b" again, alone at its time here
    [kept1], bad1 = split(core.update(market_slice(INST, 19, trades=first)))
    [kept2], bad2 = split(core.update(market_slice(INST, 30, trades=second)))
    assert bad1 == [] and kept1.trades is not None and kept1.trades.trade_id.tolist() == ["a", "b"]
    assert kept2.trades is not None and kept2.trades.trade_id.tolist() == ["c"]
    [dup] = bad2
    assert dup.row == 2 and dup.reason == "duplicate trade id 'b' at event time 20"


def test_a_new_trade_at_the_time_that_ended_the_previous_chunk_is_kept() -> None:
    core = MarketValidator()
    core.update(market_slice(INST, 19, trades=trades(INST, [10, 20], [1.0, 1.2], ids=["a", "b"])))
    [kept], bad = split(core.update(market_slice(INST, 30, trades=trades(INST, [20], [1.2], ids=["x"], start_row=2))))
    assert bad == [] and kept.trades is not None and kept.trades.trade_id.tolist() == ["x"]


def test_the_same_trade_id_at_another_time_is_not_a_duplicate() -> None:
    core = MarketValidator()
    core.update(market_slice(INST, 19, trades=trades(INST, [10, 20], [1.0, 1.2], ids=["a", "b"])))
    [kept], bad = split(core.update(market_slice(INST, 30, trades=trades(INST, [21], [1.2], ids=["b"], start_row=2))))
    assert bad == [] and kept.trades is not None and len(kept.trades) == 1


def test_quotes_with_equal_prices_but_other_sizes_are_not_duplicates() -> None:
    q = quotes(INST, [5, 5, 5, 5], bid=[1.0] * 4, ask=[2.0] * 4, bid_size=[3.0, 4.0, 3.0, 3.0],
               ask_size=[7.0, 7.0, 8.0, 7.0])
    [kept], bad = split(MarketValidator().update(market_slice(INST, 6, quotes=q)))
    assert kept.quotes is not None and kept.quotes.origin.row.tolist() == [0, 1, 2]  # only row 3 repeats row 0
    [dup] = bad
    assert dup.row == 3 and dup.reason.startswith("duplicate quote")


def test_a_quote_repeated_in_the_next_chunk_is_a_duplicate_unless_its_size_changed() -> None:
    core = MarketValidator()
    core.update(market_slice(INST, 4, quotes=quotes(INST, [3, 5], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [7.0, 7.0])))
    second = quotes(INST, [5, 5], [1.0, 1.0], [2.0, 2.0], [3.0, 9.0], [7.0, 7.0], start_row=2)
    [kept], bad = split(core.update(market_slice(INST, 9, quotes=second)))
    assert kept.quotes is not None and kept.quotes.origin.row.tolist() == [3]
    assert [q.row for q in bad] == [2]
