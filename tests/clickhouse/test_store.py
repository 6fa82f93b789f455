"""The ClickHouse store on a real embedded ClickHouse (chDB): schema, round trip, deduplication."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ReplayedRun
from headrace.errors import StorageError
from headrace.events import Fill, Quarantined
from sinks.clickhouse import TABLES, Store, ddl_statements, held_by_another_process
from sinks.rows import to_arrow


def _fill(i: int, price: float = 100.0) -> Fill:
    return Fill(fill_id=f"f{i}", order_id=f"o{i}", account="main", instrument="binance:BTC/USDT",
                ts_event=1_700_000_000_123_456_789 + i, side="buy" if i % 2 else "sell", price=price, amount=0.5,
                fee=0.05, fee_currency="USDT", liquidity="taker", slippage_bps=1.5)


def test_replayed_run_wrote_every_table(replayed_run: ReplayedRun) -> None:
    store = Store.connect(replayed_run.dsn)
    counts = {t: store.query(f"SELECT count() AS n FROM {t} FINAL WHERE run_id = {{r:String}}",
                             {"r": replayed_run.run_id})[0]["n"] for t in TABLES
              # clean data, no instrument's data stops, the router (its own tables) is off, 600 bars are
              # fewer than the regime detector's warm-up, too few for a model to earn a blend weight or drift, and
              # feature vectors are stored only when ml.store_features_every asks; no risk limit is breached under the
              # default limits and nothing holds derivatives (docs/risk.md)
              if t not in ("quarantine", "instrument_status", "routing", "arbitrage", "balances", "alerts",
                           "reconciliation", "regime_changes", "ml_weights", "ml_drift", "ml_features",
                           "risk_denials", "trading_states", "risk_scalings", "margin_snapshots")}
    assert all(n > 0 for n in counts.values()), counts
    assert counts["bars"] == 6000  # 600 real bars of each of 10 instruments


def test_schema_is_applied_idempotently(replayed_run: ReplayedRun) -> None:
    store = Store.connect(replayed_run.dsn)
    before = store.query("SELECT count() AS n FROM fills FINAL")[0]["n"]
    store.init_schema()
    store.init_schema()
    assert store.query("SELECT count() AS n FROM fills FINAL")[0]["n"] == before
    creates = [s for s in ddl_statements() if s.startswith("CREATE TABLE")]
    assert len(creates) == len(TABLES) + 1  # every written table, and runs


def test_fills_round_trip_exactly_through_chdb(replayed_run: ReplayedRun) -> None:
    store = Store.connect(replayed_run.dsn)
    fills = [_fill(i, price=100.0 + i / 3) for i in range(5)]
    store.insert("fills", to_arrow("fills", "round-trip", fills))
    rows = store.query("SELECT event_id, toUnixTimestamp64Nano(ts_event) AS ts, side, price, amount, notional "
                       "FROM fills FINAL WHERE run_id = 'round-trip' ORDER BY ts_event")
    assert [r["event_id"] for r in rows] == [f.fill_id for f in fills]
    assert [r["ts"] for r in rows] == [f.ts_event for f in fills]  # nanoseconds survive exactly
    assert [r["price"] for r in rows] == [f.price for f in fills]  # Float64 survives bit for bit
    assert [r["side"] for r in rows] == [f.side for f in fills]
    assert all(math.isclose(r["notional"], f.notional) for r, f in zip(rows, fills))


def test_a_row_written_twice_is_counted_once(replayed_run: ReplayedRun) -> None:
    store = Store.connect(replayed_run.dsn)
    fills = [_fill(i) for i in range(3)]
    store.insert("fills", to_arrow("fills", "twice", fills))
    store.insert("fills", to_arrow("fills", "twice", fills[1:]))  # a resumed run re-sends a batch
    final = store.query("SELECT count() AS n FROM fills FINAL WHERE run_id = 'twice'")[0]["n"]
    assert final == 3
    store.optimize(["fills"])
    plain = store.query("SELECT count() AS n FROM fills WHERE run_id = 'twice'")[0]["n"]
    assert plain == 3  # after the end-of-run OPTIMIZE, even a plain count() sees each row once


def test_same_event_id_in_two_runs_is_two_rows(replayed_run: ReplayedRun) -> None:
    store = Store.connect(replayed_run.dsn)
    for run in ("run-a", "run-b"):
        store.insert("fills", to_arrow("fills", run, [_fill(7)]))
    rows = store.query("SELECT run_id FROM fills FINAL WHERE event_id = 'f7' AND run_id IN ('run-a', 'run-b') "
                       "ORDER BY run_id")
    assert [r["run_id"] for r in rows] == ["run-a", "run-b"]


def test_quarantine_rows_keep_reason_and_raw_record(replayed_run: ReplayedRun) -> None:
    store = Store.connect(replayed_run.dsn)
    q = Quarantined(instrument="bittrex:ETH/BTC", ts_event=5, ts_recv=5, source="x.csv", row=3,
                    reason="non-finite close: NaN", raw=Quarantined.raw_json({"close": float("nan"), "n": np.int64(1)}))
    store.insert("quarantine", to_arrow("quarantine", "q-run", [q]))
    row = store.query("SELECT reason, raw, row, source FROM quarantine FINAL WHERE run_id = 'q-run'")[0]
    assert row == {"reason": q.reason, "raw": '{"close": "nan", "n": 1}', "row": 3, "source": "x.csv"}


def test_equity_of_the_replay_starts_at_the_initial_cash(replayed_run: ReplayedRun) -> None:
    store = Store.connect(replayed_run.dsn)
    eq = store.query("SELECT equity, cash FROM equity FINAL WHERE run_id = {r:String} ORDER BY ts_event LIMIT 1",
                     {"r": replayed_run.run_id})[0]
    assert eq["equity"] == 1.0 and eq["cash"] == 1.0


def test_deleting_a_run_spares_rows_written_after_the_delete_started(replayed_run: ReplayedRun) -> None:
    store = Store.connect(replayed_run.dsn)
    store.insert("fills", to_arrow("fills", "reused", [_fill(i) for i in range(4)]))  # the earlier run
    assert store.delete_run("reused") == ["fills"]
    store.insert("fills", to_arrow("fills", "reused", [_fill(10), _fill(11)]))  # the new run, at once
    store.wait_for_mutations()
    rows = store.query("SELECT event_id FROM fills WHERE run_id = 'reused' ORDER BY event_id")
    assert [r["event_id"] for r in rows] == ["f10", "f11"]
    assert store.delete_run("no-such-run") == []


def test_an_embedded_database_held_by_another_process_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "held"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from sinks.clickhouse import Store; "
         f"Store.connect('chdb://{path}'); print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        assert held_by_another_process(str(path))
        with pytest.raises(StorageError, match=rf"in use by process {holder.pid} \(") as info:
            Store.connect(f"chdb://{path}")
        assert "ClickHouse server" in str(info.value) and "storage.lock_wait_s" in str(info.value)
    finally:
        holder.communicate("")  # closes its stdin: the holder exits and lets go
    assert not held_by_another_process(str(path))


def test_one_process_can_switch_between_embedded_databases(tmp_path: Path, replayed_run: ReplayedRun) -> None:
    other = Store.connect(f"chdb://{tmp_path / 'other'}")  # closes the fixture's database: one path at a time
    other.init_schema()
    other.insert("fills", to_arrow("fills", "elsewhere", [_fill(1)]))
    back = Store.connect(replayed_run.dsn)
    assert back.query("SELECT count() AS n FROM fills WHERE run_id = 'elsewhere'")[0]["n"] == 0
    again = Store.connect(f"chdb://{tmp_path / 'other'}")
    assert again.query("SELECT count() AS n FROM fills WHERE run_id = 'elsewhere'")[0]["n"] == 1
    Store.connect(replayed_run.dsn)
