"""Order-book files: names told apart, every recorded layout read into BookUpdates, replayed into top-of-book
quotes that match a brute-force book, malformed rows and lines quarantined with a reason (never a crash), and
the files listed and replayed by the ordinary readers as quote files (lazy plan, resumed mid-way)."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from headrace.errors import DataSourceError
from helpers import SHARED_DATA
from operators.book.book_builder import BookCrossed, BookGap, BookUpdate
from sources import formats
from sources.book_files import (
    BOOK_DEPTH,
    BadRecord,
    BookIssue,
    BookQuote,
    identify_book,
    level_tuples,
    read_book,
    replay_book,
    replay_file,
)
from sources.replay_plan import LazyPlan, ReplayPlan
from sources.select import describe

TARDIS = SHARED_DATA / "ticks" / "tardis"
BOOK = SHARED_DATA / "book"
BYBIT = BOOK / "bybit" / "xrpusdt-ob500.data.zip"
pytestmark = pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is not beside the clone")


def _bybit_lines() -> list[str]:
    with zipfile.ZipFile(BYBIT) as z:
        return z.read(z.namelist()[0]).decode().splitlines()


def _write_bybit(tmp_path: Path, lines: list[str], name: str = "xrpusdt-ob500.data.zip") -> str:
    d = tmp_path / "bybit"
    d.mkdir(exist_ok=True)
    with zipfile.ZipFile(d / name, "w") as z:
        z.writestr("2024-12-01_XRPUSDT_ob500.data", "\n".join(lines) + "\n")
    return str(d / name)


@pytest.mark.parametrize("rel, fmt, instrument", [
    ("book/binance-futures/btcusdt-depth-snap.csv", "book_binance_depth", "binanceusdm:BTC/USDT"),
    ("book/binance-futures/btcusdt-depth-update.csv", "book_binance_depth", "binanceusdm:BTC/USDT"),
    ("book/bybit/xrpusdt-ob500.data.zip", "book_bybit", "bybit:XRP/USDT:USDT"),
    ("ticks/tardis/binance-futures_book_snapshot_5_BTCUSDT.csv", "book_tardis_snapshot", "binanceusdm:BTC/USDT"),
    ("ticks/tardis/binance-futures_book_snapshot_25_BTCUSDT.csv", "book_tardis_snapshot", "binanceusdm:BTC/USDT"),
    ("ticks/tardis/deribit_incremental_book_L2_BTC-PERPETUAL.csv", "book_tardis_incremental", "deribit:BTC/USD:BTC"),
])
def test_every_recorded_book_is_identified_as_a_quote_file(rel: str, fmt: str, instrument: str) -> None:
    spec = formats.identify(str(SHARED_DATA / rel))
    assert (spec.format, spec.kind, f"{spec.venue}:{spec.symbol}") == (fmt, "quote", instrument)
    assert str(SHARED_DATA / rel) in formats.discover([str(SHARED_DATA / rel.rsplit("/", 1)[0])])


def test_names_that_are_no_book_layout() -> None:
    assert identify_book("BTC_USDT-book.csv") is None and identify_book("btcusdt-trades.parquet") is None
    with pytest.raises(DataSourceError, match="unknown order-book file layout"):
        formats.identify("bittrex/BTC_USDT-book.csv")


def test_binance_depth_rows_group_into_one_message_per_update_ids() -> None:
    [snap] = read_book(str(BOOK / "binance-futures" / "btcusdt-depth-snap.csv"))
    [upd] = read_book(str(BOOK / "binance-futures" / "btcusdt-depth-update.csv"))
    assert isinstance(snap, BookUpdate) and isinstance(upd, BookUpdate)
    assert snap.ts_event == 1667346579146 * 10**6 and snap.row == 99
    assert (upd.kind, len(upd.bids), len(upd.asks)) == ("delta", 23, 77)
    assert upd.asks[0] == (20472.8, 0.0)  # qty 0: a delete


def test_bybit_messages_number_consecutively_and_carry_both_times() -> None:
    ups = list(read_book(str(BYBIT)))
    assert all(isinstance(u, BookUpdate) for u in ups) and len(ups) == 50
    ids = [u.last_seq for u in ups if isinstance(u, BookUpdate)]
    assert ids == list(range(ids[0], ids[0] + 50))
    first = json.loads(_bybit_lines()[0])
    u0 = ups[0]
    assert isinstance(u0, BookUpdate)
    assert (u0.ts_event, u0.ts_recv) == (first["cts"] * 10**6, first["ts"] * 10**6)
    assert len(u0.bids) == len(u0.asks) == 500


def test_bybit_quotes_follow_a_brute_force_top_of_book() -> None:
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    expected = []
    for line in _bybit_lines():
        m = json.loads(line)
        if m["type"] == "snapshot":
            bids, asks = {}, {}
        for side, key in ((bids, "b"), (asks, "a")):
            for p, a in m["data"][key]:
                if float(a) == 0:
                    side.pop(float(p), None)
                else:
                    side[float(p)] = float(a)
        b, a = max(bids), min(asks)
        top = (b, a, bids[b], asks[a])
        if not expected or expected[-1] != top:
            expected.append(top)
    got = [(q.bid, q.ask, q.bid_size, q.ask_size) for q in replay_file(str(BYBIT)) if isinstance(q, BookQuote)]
    assert got == expected and len(got) > 10
    deep = [q for q in replay_file(str(BYBIT), depth=3) if isinstance(q, BookQuote)]
    assert len(deep) >= len(got) and all(len(q.bids) == len(q.asks) == 3 for q in deep)
    assert deep[0].bids[0] == (deep[0].bid, deep[0].bid_size)


def test_a_lost_bybit_line_is_quarantined_and_then_seen_as_a_gap(tmp_path: Path) -> None:
    lines = _bybit_lines()
    lines[5] = lines[5][:40]  # a truncated message
    out = list(replay_file(_write_bybit(tmp_path, lines)))
    bad = [o for o in out if isinstance(o, BadRecord)]
    issues = [o for o in out if isinstance(o, BookIssue)]
    assert len(bad) == 1 and bad[0].row == 5 and bad[0].reason.startswith("JSONDecodeError")
    assert len(issues) == 1 and isinstance(issues[0].event, BookGap) and issues[0].row == 6
    assert not [o for o in out[out.index(issues[0]):] if isinstance(o, BookQuote)]  # nothing until a snapshot


@pytest.mark.parametrize("mutate, reason", [
    (lambda m: {**m, "type": "weird"}, "type is 'weird', not snapshot or delta"),
    (lambda m: {**m, "data": {**m["data"], "b": [["x", "1"]]}}, "unparseable price: 'x'"),
    (lambda m: {**m, "data": {**m["data"], "a": [["1.95", "-3"]]}}, "negative amount: -3.0"),
    (lambda m: {**m, "data": {**m["data"], "a": [["nan", "3"]]}}, "non-finite price: 'nan'"),
    (lambda m: {**m, "data": {**m["data"], "b": "oops"}}, "'b' is not a list of [price, size]"),
    (lambda m: {k: v for k, v in m.items() if k != "data"}, "no 'data' object"),
    (lambda m: {**m, "data": {**m["data"], "u": "z" * 500}}, "unparseable u"),
])
def test_malformed_bybit_messages_are_quarantined_with_a_short_reason(tmp_path: Path, mutate, reason: str) -> None:
    lines = _bybit_lines()
    lines[3] = json.dumps(mutate(json.loads(lines[3])))
    items = list(read_book(_write_bybit(tmp_path, lines)))
    [bad] = [i for i in items if isinstance(i, BadRecord)]
    assert reason in bad.reason and bad.row == 3 and len(bad.reason) <= 200 and len(bad.raw) <= 200
    assert len(items) == 50


def _copy(tmp_path: Path, src: Path, sub: str) -> Path:
    d = tmp_path / sub
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, d / src.name)
    return d / src.name


def _edit(path: Path, row: int, fn) -> None:
    lines = path.read_text().splitlines()
    lines[row + 1] = fn(lines[row + 1])
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("src, sub, row, fn, reason", [
    (BOOK / "binance-futures" / "btcusdt-depth-update.csv", "binance-futures", 4,
     lambda s: s.replace(",a,set,", ",x,set,"), "unknown side 'x'"),
    (BOOK / "binance-futures" / "btcusdt-depth-update.csv", "binance-futures", 7,
     lambda s: s.rsplit(",", 3)[0], "fields, the header names 9"),
    (BOOK / "binance-futures" / "btcusdt-depth-snap.csv", "binance-futures", 0,
     lambda s: s.replace(",snap,", ",bogus,"), "unknown update_type 'bogus'"),
    (TARDIS / "binance-futures_book_snapshot_5_BTCUSDT.csv", "tardis", 2,
     lambda s: s.replace("11657.08", "abc", 1), "unparseable price: 'abc'"),
    (TARDIS / "deribit_incremental_book_L2_BTC-PERPETUAL.csv", "tardis", 3,
     lambda s: s.replace(",true,", ",maybe,"), "is_snapshot is 'maybe'"),
    (TARDIS / "deribit_incremental_book_L2_BTC-PERPETUAL.csv", "tardis", 4,
     lambda s: s.replace(",ask,", ",middle,"), "unknown side 'middle'"),
])
def test_malformed_csv_rows_are_quarantined_and_the_rest_is_read(tmp_path: Path, src: Path, sub: str, row: int, fn,
                                                                  reason: str) -> None:
    path = _copy(tmp_path, src, sub)
    good = list(read_book(str(src)))
    _edit(path, row, fn)
    items = list(read_book(str(path), instrument="x:A/B"))
    [bad] = [i for i in items if isinstance(i, BadRecord)]
    assert reason in bad.reason and bad.row == row and len(bad.reason) <= 200
    ups = [i for i in items if isinstance(i, BookUpdate)]
    levels = sum(len(u.bids) + len(u.asks) for u in ups)
    good_levels = sum(len(u.bids) + len(u.asks) for u in good if isinstance(u, BookUpdate))
    per_row = 1 if "tardis_snapshot" not in str(formats.identify(str(src)).format) else 10
    assert levels == good_levels - per_row  # only the bad row is left out


def test_a_zip_with_two_files_and_a_missing_column_name_the_file(tmp_path: Path) -> None:
    p = tmp_path / "bybit" / "xrpusdt-ob500.data.zip"
    p.parent.mkdir()
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("a.data", "{}\n")
        z.writestr("b.data", "{}\n")
    with pytest.raises(DataSourceError, match="holds one file, this one 2"):
        formats.read_file(formats.identify(str(p)))
    q = tmp_path / "deribit" / "deribit_incremental_book_L2_BTC-PERPETUAL.csv"
    q.parent.mkdir()
    q.write_text("exchange,symbol,timestamp,side,price,amount\n")
    with pytest.raises(DataSourceError, match="missing") as info:
        formats.read_file(formats.identify(str(q)))
    assert q.name in str(info.value)


def test_replay_book_reports_crossed_books_with_their_row() -> None:
    ups = [BookUpdate("x:A/B", 1, 1, "snapshot", 1, 1, None, ((1.0, 1.0),), ((2.0, 1.0),), row=0),
           BookUpdate("x:A/B", 2, 2, "delta", 2, 2, None, ((2.5, 1.0),), (), row=3),
           BookUpdate("x:A/B", 3, 3, "snapshot", 3, 3, None, ((1.0, 1.0),), ((2.0, 1.0),), row=4)]
    out = list(replay_book(ups))
    assert [type(o).__name__ for o in out] == ["BookQuote", "BookIssue", "BookQuote"]  # same top: emitted again
    assert isinstance(out[1], BookIssue) and isinstance(out[1].event, BookCrossed) and out[1].row == 3


def test_read_file_gives_quote_frames_with_problems_for_gaps_and_bad_lines(tmp_path: Path) -> None:
    lines = _bybit_lines()
    lines[5] = "not json"
    [frame] = formats.read_file(formats.identify(_write_bybit(tmp_path, lines)))
    df = frame.frame
    assert frame.kind == "quote" and frame.instrument == "bybit:XRP/USDT:USDT"
    assert df.columns == ["ts_event", "ts_recv", "bid", "ask", "bid_size", "ask_size", "row", "problem", "raw",
                          "bid_levels", "ask_levels"]
    assert df.schema["bid_levels"] == pl.Array(pl.Float64, (BOOK_DEPTH, 2))
    bad = df.filter(df["problem"].is_not_null())
    assert bad["row"].to_list() == [5, 6]
    assert bad["problem"][1].startswith("sequence gap: expected first_seq")
    assert df["row"].is_sorted()
    assert (df.filter(df["problem"].is_null())["bid"] < df.filter(df["problem"].is_null())["ask"]).all()
    batches = list(formats.iter_file(formats.identify(_write_bybit(tmp_path, lines)), batch_rows=2, start_row=1))
    assert sum(b.frame.height for b in batches) == df.height - 1 and batches[0].frame["row"][0] == df["row"][1]


def test_data_list_shows_the_books_and_the_replay_plan_gives_quote_chunks_resumable() -> None:
    rows = {Path(str(r["path"])).name: r for r in describe([str(BOOK), str(TARDIS)])}
    assert rows["xrpusdt-ob500.data.zip"]["kind"] == "quote" and rows["xrpusdt-ob500.data.zip"]["rows"] == 50
    assert rows["btcusdt-depth-update.csv"]["quarantined"] == 1  # a delta without its snapshot
    assert all(rows[n]["error"] is None for n in rows if "book" in n or "depth" in n or "ob500" in n)
    paths = [str(BYBIT), str(TARDIS / "binance-futures_book_snapshot_5_BTCUSDT.csv")]
    plan = ReplayPlan.open(paths, 7, batch_rows=5)

    def walk(state: object = None) -> list[tuple[str, list[float], list[int]]]:
        cur, out = plan.cursor(state), []
        while (got := cur.next_slice()) is not None:
            out += [(s.instrument, s.quotes.bid.tolist(), s.quotes.origin.row.tolist()) for s in got[0]
                    if s.quotes is not None]
        return out

    whole = walk()
    n_quotes = sum(len(b) for _, b, _ in whole)
    assert n_quotes == 50 + 10  # a quote per change of the top BOOK_DEPTH levels (48 + 8 changes of the top)
    cur = plan.cursor()
    for _ in range(3):
        cur.next_slice()
    state = cur.state()
    rest = walk(state)
    assert rest and whole[-len(rest):] == rest
    last = plan.slice(plan.n_slices - 1)
    q = next(s.quotes for s in last if s.instrument == "bybit:XRP/USDT:USDT")
    assert q is not None and len(q) and np.all(q.bid < q.ask) and q.origin.row[-1] == 49


def test_plan_quotes_of_a_book_carry_its_top_levels_and_other_quotes_none() -> None:
    quotes = SHARED_DATA / "ticks" / "binance" / "btcusdt-quotes.parquet"
    if not quotes.exists():
        pytest.skip(f"{quotes} is missing")
    expect = [(q.bids, q.asks) for q in replay_file(str(BYBIT), depth=BOOK_DEPTH) if isinstance(q, BookQuote)]
    plan = ReplayPlan.open([str(BYBIT), str(quotes)], 9, batch_rows=4)
    got: list[tuple[object, object]] = []
    cur = plan.cursor()
    while (out := cur.next_slice()) is not None:
        for s in out[0]:
            if s.quotes is None:
                continue
            if s.instrument.startswith("bybit"):
                q = s.quotes
                assert q.bid_levels is not None and q.ask_levels is not None
                assert q.bid_levels["price"].shape == (len(q), BOOK_DEPTH)
                assert np.array_equal(q.bid_levels["price"][:, 0], q.bid)
                assert np.array_equal(q.ask_levels["amount"][:, 0], q.ask_size)
                got += [(level_tuples(b), level_tuples(a)) for b, a in zip(q.bid_levels, q.ask_levels)]
            else:
                assert s.quotes.bid_levels is None and s.quotes.ask_levels is None
    assert got == expect and len(expect) == 50


def test_a_book_and_a_quote_file_of_one_instrument_merge_with_nan_levels_for_the_quote_rows(tmp_path: Path) -> None:
    book = formats.read_file(formats.identify(str(BYBIT)))[0]
    plain = formats.ParsedFrame(instrument=book.instrument, kind="quote", timeframe_ns=0, path=str(tmp_path / "q.csv"),
                                frame=book.frame.drop("bid_levels", "ask_levels").head(5).with_columns(
                                    pl.col("ts_event") + 1, pl.col("ts_recv") + 1))
    for plan in (ReplayPlan.build([book, plain], 1000), LazyPlan.of_frames([book, plain], 1000, batch_rows=7)):
        cur = plan.cursor()
        chunks = []
        while (out := cur.next_slice()) is not None:
            chunks += [s.quotes for s in out[0] if s.quotes is not None]
        rows = sum(len(c) for c in chunks)
        levels = np.concatenate([c.bid_levels for c in chunks if c.bid_levels is not None])
        assert rows == len(levels) == 55
        assert int(np.isnan(levels["price"][:, 0]).sum()) == 5  # the quote file's rows
