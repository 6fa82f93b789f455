"""The L2 book builder against the recorded books: tardis snapshots (sorted, uncrossed, top = first level, the
5-level file = the top of the 25-level one), Bybit ob500 snapshot + deltas (uncrossed, equal to a brute-force
dict rebuild), Binance futures snapshot + updates (the gap the recording holds); sequence rules, resync, crossed
books, snapshot/restore, and random delta streams against a brute-force dict book (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.errors import SnapshotVersionError
from helpers import SHARED_DATA
from operators.book.book_builder import (
    BookBuilder,
    BookCrossed,
    BookGap,
    BookSnapshot,
    BookUnsynced,
    BookUpdate,
)
from sources.book_files import read_book

TARDIS = SHARED_DATA / "ticks" / "tardis"
BOOK = SHARED_DATA / "book"
needs_data = pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is not beside the clone")


def _updates(path: str) -> list[BookUpdate]:
    out = [u for u in read_book(path) if isinstance(u, BookUpdate)]
    assert out, f"no updates read from {path}"
    return out


class _DictBook:
    """The brute-force reference: two dicts, sorted on every read."""

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}

    def apply(self, u: BookUpdate) -> None:
        if u.kind == "snapshot":
            self.bids, self.asks = {}, {}
        for side, levels in ((self.bids, u.bids), (self.asks, u.asks)):
            for p, a in levels:
                if a == 0:
                    side.pop(p, None)
                else:
                    side[p] = a

    def levels(self) -> tuple[tuple[tuple[float, float], ...], tuple[tuple[float, float], ...]]:
        return tuple(sorted(self.bids.items(), reverse=True)), tuple(sorted(self.asks.items()))


# ------------------------------------------------------------------------------------------------------
# against the recorded snapshots


@needs_data
@pytest.mark.parametrize("depth", [5, 25])
def test_tardis_snapshots_are_sorted_uncrossed_and_top_is_their_first_level(depth: int) -> None:
    path = TARDIS / f"binance-futures_book_snapshot_{depth}_BTCUSDT.csv"
    rows = path.read_text().splitlines()
    header, data = rows[0].split(","), [r.split(",") for r in rows[1:]]
    ups = _updates(str(path))
    assert len(ups) == len(data) == 10
    b = BookBuilder("binanceusdm:BTC/USDT")
    for u, raw in zip(ups, data, strict=True):
        assert b.apply_snapshot(u.ts_event, u.bids, u.asks, u.last_seq) == []
        rec = dict(zip(header, raw, strict=True))
        assert b.top() == (float(rec["bids[0].price"]), float(rec["bids[0].amount"]),
                           float(rec["asks[0].price"]), float(rec["asks[0].amount"]))
        bids, asks = b.levels("bid"), b.levels("ask")
        assert len(bids) == len(asks) == depth
        assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
        assert [p for p, _ in asks] == sorted(p for p, _ in asks)
        assert bids[0][0] < asks[0][0]
        assert bids == tuple((float(rec[f"bids[{i}].price"]), float(rec[f"bids[{i}].amount"])) for i in range(depth))
        assert u.ts_event == int(rec["timestamp"]) * 1000 and u.ts_recv == int(rec["local_timestamp"]) * 1000


@needs_data
def test_the_5_level_snapshots_are_the_top_of_the_25_level_ones_at_the_same_times() -> None:
    five = {u.ts_event: u for u in _updates(str(TARDIS / "binance-futures_book_snapshot_5_BTCUSDT.csv"))}
    deep = {u.ts_event: u for u in _updates(str(TARDIS / "binance-futures_book_snapshot_25_BTCUSDT.csv"))}
    common = sorted(five.keys() & deep.keys())
    assert common, "the two files share no snapshot time"
    for ts in common:
        b5, b25 = BookBuilder(), BookBuilder()
        b5.update(five[ts])
        b25.update(deep[ts])
        assert b5.levels("bid") == b25.levels("bid", 5) and b5.levels("ask") == b25.levels("ask", 5)


@needs_data
def test_bybit_ob500_snapshot_and_deltas_stay_uncrossed_and_equal_a_brute_force_rebuild() -> None:
    ups = _updates(str(BOOK / "bybit" / "xrpusdt-ob500.data.zip"))
    assert [u.kind for u in ups] == ["snapshot"] + ["delta"] * 49
    b, ref = BookBuilder("bybit:XRP/USDT:USDT"), _DictBook()
    deletes = 0
    for u in ups:
        assert b.update(u) == [], f"update {u.last_seq} was refused"
        ref.apply(u)
        deletes += sum(a == 0 for _, a in u.bids + u.asks)
        top = b.top()
        assert top is not None and top[0] < top[2]
        assert (b.levels("bid"), b.levels("ask")) == ref.levels()
    assert deletes > 0, "the recording deletes levels; the test must see some"
    assert b.seq == ups[-1].last_seq and not b.needs_resync


@needs_data
def test_bybit_dropped_delta_is_a_gap_naming_the_ids_and_the_next_snapshot_resyncs() -> None:
    ups = _updates(str(BOOK / "bybit" / "xrpusdt-ob500.data.zip"))
    snap, deltas = ups[0], ups[1:]
    b = BookBuilder("bybit:XRP/USDT:USDT")
    b.update(snap)
    for u in deltas[:9]:
        assert b.update(u) == []
    dropped, after = deltas[9], deltas[10]
    [gap] = b.update(after)
    assert isinstance(gap, BookGap)
    assert (gap.expected, gap.received, gap.field) == (dropped.last_seq, after.first_seq, "first_seq")
    assert f"expected first_seq {dropped.last_seq}, received {after.first_seq}" in gap.reason
    assert b.needs_resync and b.top() is None and b.levels("bid", 5) == ()
    for u in deltas[11:]:  # nothing, until a snapshot
        assert b.update(u) == []
    assert b.top() is None and b.skipped == len(deltas) - 11
    # resync: a snapshot of the book as it stands after the last delta (the brute-force rebuild)
    ref = _DictBook()
    for u in ups:
        ref.apply(u)
    bids, asks = ref.levels()
    assert b.apply_snapshot(deltas[-1].ts_event, bids, asks, deltas[-1].last_seq) == []
    assert not b.needs_resync and (b.levels("bid"), b.levels("ask")) == (bids, asks)


@needs_data
def test_binance_futures_updates_do_not_chain_from_the_snapshot_a_gap_then_nothing() -> None:
    [snap] = _updates(str(BOOK / "binance-futures" / "btcusdt-depth-snap.csv"))
    [upd] = _updates(str(BOOK / "binance-futures" / "btcusdt-depth-update.csv"))
    assert (snap.kind, snap.last_seq, len(snap.bids), len(snap.asks)) == ("snapshot", 2098021528332, 100, 0)
    assert (upd.first_seq, upd.last_seq, upd.prev_seq) == (2098041693435, 2098041696700, 2098041693400)
    b = BookBuilder("binanceusdm:BTC/USDT")
    assert b.update(snap) == []
    assert b.levels("bid", 1) == ((20377.0, 1.77),) and b.top() is None  # bids only in this excerpt
    [gap] = b.update(upd)
    assert isinstance(gap, BookGap) and gap.at_most
    assert (gap.expected, gap.received) == (2098021528333, 2098041693435)
    assert "expected first_seq <= 2098021528333, received 2098041693435" in gap.reason


@needs_data
def test_deribit_incremental_snapshot_rows_make_one_snapshot() -> None:
    [snap] = _updates(str(TARDIS / "deribit_incremental_book_L2_BTC-PERPETUAL.csv"))
    b = BookBuilder()
    b.update(snap)
    asks = b.levels("ask")
    assert len(asks) == 15 and asks[0] == (6421.5, 18640.0) and asks[-1] == (6428.5, 39950.0)
    assert b.top() is None  # the excerpt holds asks only


# ------------------------------------------------------------------------------------------------------
# sequence rules


def _snap(b: BookBuilder, seq: int) -> None:
    assert b.apply_snapshot(0, [(99.0, 1.0)], [(101.0, 1.0)], seq) == []


def test_binance_rules_stale_dropped_first_straddles_then_pu_chains() -> None:
    b = BookBuilder("binanceusdm:BTC/USDT")
    _snap(b, 100)
    assert b.apply_delta(1, [(99.0, 5.0)], [], 90, 99, 89) == [] and b.stale == 1  # u < lastUpdateId: dropped
    assert b.top() == (99.0, 1.0, 101.0, 1.0)
    assert b.apply_delta(2, [(99.0, 2.0)], [], 95, 105, 94) == []  # straddles 100: applied
    assert b.apply_delta(3, [(98.0, 3.0)], [], 106, 110, 105) == []  # pu = previous u
    assert b.levels("bid") == ((99.0, 2.0), (98.0, 3.0)) and b.seq == 110
    [gap] = b.apply_delta(4, [], [], 112, 115, 111)
    assert isinstance(gap, BookGap) and (gap.field, gap.expected, gap.received) == ("prev_seq", 110, 111)


def test_first_delta_past_the_snapshot_is_a_gap() -> None:
    b = BookBuilder()
    _snap(b, 100)
    [gap] = b.apply_delta(1, [], [], 102, 103)
    assert isinstance(gap, BookGap) and (gap.expected, gap.received, gap.at_most) == (101, 102, True)


def test_without_pu_each_delta_starts_after_the_last_and_duplicates_are_dropped() -> None:
    b = BookBuilder()
    _snap(b, 10)
    assert b.apply_delta(1, [], [(101.0, 0.0)], 11, 11) == []
    assert b.top() is None  # the only ask was deleted
    assert b.apply_delta(2, [], [(102.0, 4.0)], 12, 12) == []
    assert b.apply_delta(3, [], [(100.5, 4.0)], 12, 12) == [] and b.stale == 1  # a repeat: dropped
    assert b.top() == (99.0, 1.0, 102.0, 4.0)


def test_updates_without_ids_are_never_checked() -> None:
    b = BookBuilder()
    b.apply_snapshot(0, [(1.0, 1.0)], [(2.0, 1.0)])
    assert b.apply_delta(1, [(1.5, 2.0)], []) == [] and b.top() == (1.5, 2.0, 2.0, 1.0)


def test_deltas_before_any_snapshot_are_reported_once_and_skipped() -> None:
    b = BookBuilder("x:A/B")
    assert b.apply_delta(5, [(1.0, 1.0)], [(2.0, 1.0)], 1, 1) == [BookUnsynced("x:A/B", 5)]
    assert b.apply_delta(6, [(1.0, 1.0)], [(2.0, 1.0)], 2, 2) == []
    assert b.top() is None and b.skipped == 2 and len(b) == 0


def test_a_crossed_book_is_reported_and_waits_for_a_snapshot() -> None:
    b = BookBuilder("x:A/B")
    _snap(b, 1)
    [crossed] = b.apply_delta(7, [(101.0, 2.0)], [], 2, 2)
    assert crossed == BookCrossed("x:A/B", 7, 101.0, 101.0) and "best bid 101.0 >= best ask 101.0" in crossed.reason
    assert b.needs_resync and b.top() is None
    assert b.apply_delta(8, [(101.0, 0.0)], [], 3, 3) == [] and b.top() is None  # not un-crossed by a delta
    [again] = b.apply_snapshot(9, [(102.0, 1.0)], [(101.0, 1.0)], 9)  # a crossed snapshot is reported too
    assert isinstance(again, BookCrossed)
    _snap(b, 10)
    assert b.top() == (99.0, 1.0, 101.0, 1.0)


def test_snapshot_restore_round_trip_and_version_check() -> None:
    b = BookBuilder("x:A/B")
    _snap(b, 5)
    b.apply_delta(1, [(98.0, 2.0)], [(103.0, 1.0)], 6, 6)
    snap = b.snapshot()
    r = BookBuilder.restore(snap)
    assert r.snapshot() == snap and r.top() == b.top() and r.levels("ask") == b.levels("ask")
    assert r.apply_delta(2, [], [], 8, 8) != []  # the restored book still knows its ids
    old = BookSnapshot(**{**{f: getattr(snap, f) for f in snap.__slots__}, "version": 0})  # type: ignore[arg-type]
    with pytest.raises(SnapshotVersionError):
        BookBuilder.restore(old)


# ------------------------------------------------------------------------------------------------------
# random streams against the brute-force book

_price = st.integers(1, 40).map(lambda i: i / 4)
_levels = st.lists(st.tuples(_price, st.sampled_from([0.0, 0.5, 1.0, 2.5])), max_size=6)
_op = st.tuples(st.sampled_from(["snapshot", "delta", "delta", "delta"]), _levels, _levels)


@settings(max_examples=200, deadline=None)
@given(st.lists(_op, min_size=1, max_size=40))
def test_random_streams_match_a_brute_force_dict_book(ops: list[tuple[str, list, list]]) -> None:
    b, ref = BookBuilder("x:A/B"), _DictBook()
    synced = False
    for i, (kind, bids, asks) in enumerate(ops):
        u = BookUpdate("x:A/B", i, i, kind, i, i, None, tuple(bids), tuple(asks))  # type: ignore[arg-type]
        events = b.update(u)
        if kind == "snapshot":
            ref = _DictBook()
            synced = True
        if synced:
            ref.apply(u)
        rb, ra = ref.levels()
        crossed = bool(rb and ra and rb[0][0] >= ra[0][0])
        if synced and crossed:
            assert events == [BookCrossed("x:A/B", i, rb[0][0], ra[0][0])]
            synced = False
        if not synced:
            assert b.needs_resync and b.top() is None
            continue
        assert events == []
        assert (b.levels("bid"), b.levels("ask")) == (rb, ra)
        assert b.levels("bid", 2) == rb[:2]
        assert b.top() == ((rb[0][0], rb[0][1], ra[0][0], ra[0][1]) if rb and ra else None)
        assert BookBuilder.restore(b.snapshot()).snapshot() == b.snapshot()
