"""A bar whose records arrive in two market slices: what the second slice brings must win where it is later."""

from __future__ import annotations

from headrace.events import Bar
from helpers import market_slice, quotes, trades
from operators.bars.bar_builder import BarBuilder

TF = 10
INST = "x:A/B"


def bars_of(core: BarBuilder, *slices: object) -> list[Bar]:
    return [b for s in slices for batch in core.update(s) for b in batch.bars]  # type: ignore[arg-type]


def test_a_bar_spanning_two_slices_carries_the_last_quote_of_the_second() -> None:
    core = BarBuilder(INST, TF)
    first = market_slice(INST, 4, trades=trades(INST, [1, 3], [10.0, 11.0]),
                         quotes=quotes(INST, [2, 4], [9.0, 9.5], [10.5, 11.0]))
    second = market_slice(INST, 20, trades=trades(INST, [6], [12.0]),
                          quotes=quotes(INST, [5, 8], [10.0, 11.8], [12.0, 12.2]))
    assert bars_of(core, first) == []  # the bar [0, 10) is still open at watermark 4
    [b] = bars_of(core, second)
    assert (b.ts_open, b.ts_event) == (0, TF)
    assert (b.bid, b.ask) == (11.8, 12.2)  # the quote at 8, not the one at 4 that ended the first slice
    assert (b.open, b.high, b.low, b.close, b.trades) == (10.0, 12.0, 10.0, 12.0, 3)


def test_a_quote_only_bar_spanning_two_slices_takes_open_from_the_first_and_close_from_the_second() -> None:
    core = BarBuilder(INST, TF)
    first = market_slice(INST, 3, quotes=quotes(INST, [1, 3], [9.0, 10.0], [11.0, 12.0]))
    second = market_slice(INST, 20, quotes=quotes(INST, [7], [13.0], [15.0]))
    bars_of(core, first)
    [b] = bars_of(core, second)
    assert (b.open, b.high, b.low, b.close) == (10.0, 14.0, 10.0, 14.0)  # mids 10, 11, 14
    assert (b.bid, b.ask, b.volume, b.trades) == (13.0, 15.0, 0.0, 0)


def test_the_next_bar_without_quotes_keeps_the_last_quote_known() -> None:
    core = BarBuilder(INST, TF)
    bars = bars_of(core, market_slice(INST, 4, quotes=quotes(INST, [2, 4], [9.0, 9.5], [10.5, 11.0])),
                   market_slice(INST, 9, quotes=quotes(INST, [9], [9.9], [10.1])),
                   market_slice(INST, 30, trades=trades(INST, [15], [10.0])))
    assert [(b.ts_open, b.bid, b.ask) for b in bars] == [(0, 9.9, 10.1), (10, 9.9, 10.1)]
