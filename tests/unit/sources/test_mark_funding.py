"""Futures mark-price candles and funding rates replayed with their contract's bars (real freqtrade files)."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from headrace.errors import DataSourceError
from headrace.events import Bar, FundingChunk, MarkChunk, MarketSlice, Quarantined
from helpers import SHARED_DATA, origin
from operators.bars.bar_builder import BarBuilder
from operators.validation.market_checks import MarketValidator
from sources import formats
from sources.replay_plan import ReplayPlan

FUT = SHARED_DATA / "futures" / "binance"
BARS = FUT / "XRP_USDT_USDT-5m-futures.feather"
MARK = FUT / "XRP_USDT_USDT-1h-mark.feather"
MARK8 = FUT / "XRP_USDT_USDT-8h-mark.feather"
FUNDING = FUT / "XRP_USDT_USDT-8h-funding_rate.feather"
INST = "binance:XRP/USDT:USDT"
HOUR, FIVE = 3600 * 10**9, 300 * 10**9

pytestmark = pytest.mark.skipif(not FUNDING.exists(), reason=f"real futures data missing: {FUT}")


def _ns(path: Path) -> pl.DataFrame:
    # the file as freqtrade wrote it, times as epoch ns
    df = pl.read_ipc(path)
    return df.with_columns(pl.col("date").dt.epoch("ns").alias("ns"))


def replay(paths: list[Path], chunk_rows: int = 500, batch_rows: int = 256,
           snapshot_at: int | None = None) -> tuple[list[Bar], list[Quarantined], tuple[str, ...]]:
    """Replay `paths` through the validator and the bar builder (restored from a pickled snapshot after slice
    `snapshot_at`, when given); return the closed bars, the quarantined records and the universe."""
    plan = ReplayPlan.open([str(p) for p in paths], chunk_rows, batch_rows=batch_rows)
    validator = MarketValidator()
    builders = {i: BarBuilder(i, FIVE) for i in plan.universe}
    bars: list[Bar] = []
    bad: list[Quarantined] = []
    cur = plan.cursor()
    j = 0
    while (got := cur.next_slice()) is not None:
        for s in got[0]:
            for o in validator.update(s):
                if isinstance(o, Quarantined):
                    bad.append(o)
                for b in builders[s.instrument].update(o):
                    bars += b.bars
        if j == snapshot_at:
            builders = {i: BarBuilder.restore(FIVE, pickle.loads(pickle.dumps(c.snapshot())))
                        for i, c in builders.items()}
        j += 1
    for c in builders.values():
        for b in c.flush():
            bars += b.bars
    return bars, bad, plan.universe


def expected_marks(mark: pl.DataFrame, closes: np.ndarray) -> tuple[list[float | None], list[int | None]]:
    # per bar close: the close of the last mark candle whose close (open + 1 h) is at or before it
    mark_close = mark["ns"].to_numpy() + HOUR
    idx = np.searchsorted(mark_close, closes, side="right") - 1
    prices = mark["close"].to_numpy()
    return ([None if i < 0 else float(prices[i]) for i in idx], [None if i < 0 else int(mark_close[i]) for i in idx])


def test_identify_tells_mark_candles_and_funding_rates_of_the_contract() -> None:
    m, m8, f, b = (formats.identify(str(p)) for p in (MARK, MARK8, FUNDING, BARS))
    assert (m.kind, m.format, m.venue, m.symbol, m.timeframe_ns) == ("mark", "mark_frame", "binance", "XRP/USDT:USDT",
                                                                     HOUR)
    assert (m8.kind, m8.timeframe_ns) == ("mark", 8 * HOUR)
    assert (f.kind, f.format, f.symbol, f.timeframe_ns) == ("funding", "funding_frame", "XRP/USDT:USDT", 0)
    assert (b.kind, b.symbol) == ("bar", "XRP/USDT:USDT")


def test_mark_rows_are_stamped_at_the_candle_close_and_funding_rows_at_the_funding_time() -> None:
    mark = formats.read_file(formats.identify(str(MARK)))[0]
    raw = _ns(MARK)
    assert mark.instrument == INST and mark.kind == "mark"
    assert mark.frame["ts_event"].to_list() == (raw["ns"] + HOUR).to_list()
    assert mark.frame["price"].to_list() == raw["close"].to_list()
    fund = formats.read_file(formats.identify(str(FUNDING)))[0]
    raw_f = _ns(FUNDING)
    assert fund.frame["ts_event"].to_list() == raw_f["ns"].to_list()
    assert fund.frame["rate"].to_list() == raw_f["open"].to_list()
    assert fund.frame["problem"].null_count() == fund.frame.height


def test_replay_of_contract_mark_and_funding_gives_one_instrument_whose_bars_carry_them() -> None:
    bars, bad, universe = replay([BARS, MARK, FUNDING])
    assert universe == (INST,) and not bad
    closes = np.array([b.ts_event for b in bars])
    assert len(bars) == pl.read_ipc(BARS).height and (np.diff(closes) > 0).all()
    want_price, want_ts = expected_marks(_ns(MARK), closes)
    assert [b.mark_price for b in bars] == want_price
    assert [b.mark_ts for b in bars] == want_ts
    assert want_price[0] is None and want_price[-1] is not None  # the marks start after the bars, end before them
    fund = _ns(FUNDING)
    t, r = fund["ns"].to_numpy(), fund["open"].to_numpy()
    prev = bars[0].ts_open
    for b in bars:
        inside = (t > prev) & (t <= b.ts_event)
        assert b.funding == tuple(zip(t[inside].tolist(), r[inside].tolist()))
        prev = b.ts_event
    carried = [f for b in bars for f in b.funding]
    assert len(carried) == int((t <= closes[-1]).sum()) > 0  # every event within the bars lands on exactly one bar
    assert carried[0] == (int(t[0]), float(r[0]))  # 2021-11-18 00:00:00.017: on the bar closing 00:05


def test_other_slices_and_a_snapshot_restored_mid_replay_give_the_same_bars() -> None:
    whole, _, _ = replay([BARS, MARK, FUNDING], chunk_rows=300)
    assert replay([BARS, MARK, FUNDING], chunk_rows=37, batch_rows=64)[0] == whole
    for at in (0, 3):
        resumed, _, _ = replay([BARS, MARK, FUNDING], chunk_rows=300, snapshot_at=at)
        assert resumed == whole


def test_eight_hour_marks_beside_hourly_ones_take_the_last_known_at_each_close(tmp_path: Path) -> None:
    bars, bad, universe = replay([BARS, MARK, MARK8])
    assert universe == (INST,) and not bad
    both = pl.concat([_ns(MARK).with_columns(pl.col("ns") + HOUR), _ns(MARK8).with_columns(pl.col("ns") + 8 * HOUR)])
    both = both.with_columns(pl.int_range(pl.len()).alias("order")).sort("ns", "order", maintain_order=True)
    for b in bars[::37]:
        known = both.filter(pl.col("ns") <= b.ts_event)
        assert b.mark_price == (known["close"][-1] if known.height else None)


def test_a_negative_mark_is_quarantined_with_its_reason_and_the_replay_goes_on(tmp_path: Path) -> None:
    folder = tmp_path / "binance"
    folder.mkdir()
    shutil.copy(BARS, folder / BARS.name)
    raw = pl.read_ipc(MARK)
    bad_row = 10
    raw.with_columns(pl.when(pl.int_range(pl.len()) == bad_row).then(-1.0).otherwise(pl.col("close")).alias("close")
                     ).write_ipc(folder / MARK.name)
    bars, bad, universe = replay([folder])
    assert universe == (INST,)
    assert [(q.row, q.instrument, Path(q.source).name) for q in bad] == [(bad_row, INST, MARK.name)]
    assert "non-positive price: -1" in bad[0].reason
    assert json.loads(bad[0].raw)["close"] == "-1.0"
    kept = _ns(MARK).filter(pl.int_range(pl.len()) != bad_row)
    closes = np.array([b.ts_event for b in bars])
    assert [b.mark_price for b in bars] == expected_marks(kept, closes)[0]  # the bar at its close keeps the mark before
    assert all(b.mark_price is None or b.mark_price > 0 for b in bars)


def test_only_marks_or_funding_without_the_contract_bars_fails_with_a_clear_error() -> None:
    with pytest.raises(DataSourceError, match=r"mark prices of 'binance:XRP/USDT:USDT' need the contract's bars"):
        ReplayPlan.open([str(MARK)], 100)
    with pytest.raises(DataSourceError, match=r"mark prices and funding rates of .* need the contract's bars"):
        ReplayPlan.open([str(MARK), str(FUNDING)], 100)
    frames = formats.read_file(formats.identify(str(FUNDING)))
    with pytest.raises(DataSourceError, match=r"funding rates of .* need the contract's bars"):
        ReplayPlan.build(frames, 100)


def test_in_memory_plan_gives_the_same_slices_as_the_lazy_one() -> None:
    frames = [f for p in (BARS, MARK, FUNDING) for f in formats.read_file(formats.identify(str(p)))]
    mem = ReplayPlan.build(frames, 400)
    lazy = ReplayPlan.open([str(p) for p in (BARS, MARK, FUNDING)], 400, batch_rows=128)
    assert mem.universe == lazy.universe == (INST,) and mem.timeframes == lazy.timeframes == {INST: FIVE}
    assert mem.n_slices == lazy.n_slices
    for j in range(mem.n_slices):
        (a,), (b,) = mem.slice(j), lazy.slice(j)
        assert a.watermark == b.watermark
        for kind in ("marks", "funding"):
            ca, cb = getattr(a, kind), getattr(b, kind)
            assert (ca is None) == (cb is None)
            if ca is not None:
                assert ca.ts_event.tolist() == cb.ts_event.tolist() and ca.origin.row.tolist() == cb.origin.row.tolist()


def _slice(marks: MarkChunk | None = None, funding: FundingChunk | None = None) -> MarketSlice:
    return MarketSlice(instrument=INST, watermark=100, marks=marks, funding=funding)


def test_validator_quarantines_bad_marks_and_implausible_funding_and_keeps_the_rest() -> None:
    ts = np.array([10, 20, 15, 30, 40, 40], np.int64)
    marks = MarkChunk(instrument=INST, ts_event=ts, ts_recv=ts, price=np.array([1.0, -2.0, 1.1, np.nan, 1.2, 1.2]),
                      origin=origin(6))
    funding = FundingChunk(instrument=INST, ts_event=ts, ts_recv=ts,
                           rate=np.array([1e-4, -0.06, 2e-4, np.inf, -3e-4, -3e-4]), origin=origin(6))
    out = MarketValidator().update(_slice(marks, funding))
    kept = out[0]
    assert isinstance(kept, MarketSlice) and kept.marks is not None and kept.funding is not None
    assert kept.marks.origin.row.tolist() == [0, 2, 4] and kept.funding.origin.row.tolist() == [0, 2, 4]
    reasons = [(q.row, q.reason.split(":")[0]) for q in out[1:] if isinstance(q, Quarantined)]
    assert reasons == [(1, "mark price not finite and positive"), (3, "mark price not finite and positive"),
                       (5, "duplicate mark price 1.2 at event time 40"),
                       (1, "implausible funding rate"), (3, "implausible funding rate"),
                       (5, "duplicate funding rate -0.0003 at event time 40")]


def test_validator_quarantines_a_mark_that_goes_back_in_time_across_slices() -> None:
    v = MarketValidator()
    first = MarkChunk(instrument=INST, ts_event=np.array([50], np.int64), ts_recv=np.array([50], np.int64),
                      price=np.array([1.0]), origin=origin(1))
    v.update(_slice(first))
    v = MarketValidator.restore(pickle.loads(pickle.dumps(v.snapshot())))
    late = MarkChunk(instrument=INST, ts_event=np.array([40, 60], np.int64), ts_recv=np.array([40, 60], np.int64),
                     price=np.array([1.0, 1.1]), origin=origin(2, start_row=1))
    out = v.update(_slice(late))
    assert isinstance(out[0], MarketSlice) and out[0].marks is not None and out[0].marks.origin.row.tolist() == [2]
    assert [(q.row, q.reason) for q in out[1:] if isinstance(q, Quarantined)] == [
        (1, "timestamp went backwards: 40 < 50 already seen for this instrument's mark prices")]
