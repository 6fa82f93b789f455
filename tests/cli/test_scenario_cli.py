"""`headrace replay --scenario usdc-depeg-2023` on the real cross-venue data: children routed to both venues,
arbitrage signals in the de-peg, USDC valued at the market rate, and a SIGKILLed run resumed by the same
command ends with the same fills and no duplicate rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import FILL_COLUMNS, SUMMARY_KEYS, headrace, kill_then_resume, query

from helpers import ROOT, SHARED_DATA

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SHARED_DATA.exists(), reason="needs ../shared/data")]

CROSS = SHARED_DATA / "cross_venue"
# the de-peg week (USDC fell to 0.87 USD on 11 March 2023); a shorter warm-up so the strategy trades in it
ARGS = ["--scenario", "usdc-depeg-2023", "--data", str(CROSS), "--timerange", "2023-03-08:2023-03-15",
        "--set", "features.momentum_lookback_bars=48", "--set", "features.vol_halflife_bars=48.0",
        "--set", "strategy.rebalance_bars=30", "--set", "replay.chunk_rows=2000"]


def fills(run_id: str, state: Path) -> list[dict]:
    return query(f"SELECT {FILL_COLUMNS} FROM fills FINAL WHERE run_id = '{run_id}' ORDER BY ts_event, event_id",
                 state)


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    state = tmp_path_factory.mktemp("scenario") / "state"
    out = headrace("replay", "--quiet", "--json", "--run-id", "straight", *ARGS, state=state).stdout
    return json.loads(out), state


def test_the_scenario_routes_to_both_venues_and_signals_arbitrage_in_the_depeg(straight) -> None:
    summary, state = straight
    assert set(summary) >= SUMMARY_KEYS and {"venues", "arbitrage_signals"} <= set(summary)
    assert summary["venues"] == ["binanceus", "kraken"]
    assert summary["arbitrage_signals"] > 0 and summary["events_quarantined"] == 0
    days = {r["d"] for r in query("SELECT toString(toDate(ts_event)) AS d FROM arbitrage FINAL WHERE "
                                  "run_id = 'straight' AND status = 'open'", state)}
    assert days and days <= {"2023-03-10", "2023-03-11", "2023-03-12", "2023-03-13"}
    # USDC cash valued at the rate the market implied, not at the configured 1.0 fallback
    [low] = query("SELECT min(rate) AS r FROM balances FINAL WHERE run_id = 'straight' AND currency = 'USDC'", state)
    assert 0.85 < low["r"] < 0.95
    # every child traced to its routing decision; realised against expected cost per venue
    rows = query("SELECT r.venue AS venue, count() AS n, avg(f.price / r.expected_price - 1) AS cost FROM fills "
                 "AS f FINAL JOIN routing AS r FINAL ON f.order_id = r.child_id AND f.run_id = r.run_id WHERE "
                 "f.run_id = 'straight' GROUP BY venue ORDER BY venue", state)
    assert [r["venue"] for r in rows] == ["binanceus", "kraken"]
    assert sum(r["n"] for r in rows) == summary["fills"]
    # `headrace positions`: one row per venue and asset, and the net across venues
    pos = json.loads(headrace("positions", "--run-id", "straight", "--json", state=state).stdout)
    legs = [p for p in pos if p["venue"] != "net"]
    [net] = [p for p in pos if p["venue"] == "net"]
    assert {p["instrument"] for p in legs} <= {"binanceus:BTC", "kraken:BTC"} and net["instrument"] == "net:BTC"
    assert net["amount"] == pytest.approx(sum(p["amount"] for p in legs))
    assert net["value_account"] == pytest.approx(sum(p["value_account"] for p in legs))


def test_the_scenario_killed_with_sigkill_and_started_again_has_the_same_fills(straight, tmp_path: Path) -> None:
    summary, state = straight
    recovery = tmp_path / "recovery"
    args = ["replay", *ARGS, "--recovery-dir", str(recovery), "--snapshot-s", "0.05", "--quiet", "--json",
            "--set", f"storage.state_dir={state}"]
    run_id, resumed = kill_then_resume(args, recovery, after_slices=8)
    assert resumed["run_id"] == run_id
    assert fills(run_id, state) == fills("straight", state) != []
    assert resumed["final_equity"] == summary["final_equity"]
    [row] = query(f"SELECT (SELECT count() FROM fills WHERE run_id = '{run_id}') AS plain, "
                  f"(SELECT uniqExact(event_id) FROM fills WHERE run_id = '{run_id}') AS unique_ids, "
                  f"(SELECT count() FROM routing WHERE run_id = '{run_id}') AS routing, "
                  f"(SELECT uniqExact(event_id) FROM routing WHERE run_id = '{run_id}') AS routing_ids", state)
    assert row["plain"] == row["unique_ids"] == summary["fills"]
    assert row["routing"] == row["routing_ids"]


def test_a_scenario_file_missing_under_data_is_named(tmp_path: Path) -> None:
    res = headrace("replay", "--scenario", "usdc-depeg-2023", "--data", str(tmp_path), state=tmp_path / "s",
                   check=False)
    assert res.returncode == 2
    assert "binanceus/BTCUSD_1m_20230301_20230321.csv.gz" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = headrace("replay", "--scenario", "nope", "--data", str(tmp_path), state=tmp_path / "s", check=False)
    assert res.returncode == 2 and "usdc-depeg-2023" in res.stderr


def test_every_query_of_the_routing_page_runs_on_the_scenario_and_returns_rows(straight) -> None:
    import re

    _, state = straight
    page = (ROOT / "docs" / "routing.md").read_text(encoding="utf-8")
    examples = re.findall(r"```clickhouse\n(.*?)```", page, flags=re.DOTALL)
    assert len(examples) >= 5
    for sql in examples:
        rows = query(" ".join(sql.replace("'RUN'", "'straight'").split()), state)
        assert rows, f"no rows from:\n{sql}"
