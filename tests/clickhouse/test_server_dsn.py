"""The server DSN (`http://user@host:port/db`) end to end, against a chDB-backed stand-in for a ClickHouse server.

A ClickHouse server cannot run on the test machines, so `http_stand_in.py` (the real engine, chDB, behind
ClickHouse's HTTP interface) takes its place and logs every request; the tests check the exact requests we
send (authentication, database, DDL, one batched insert per table) and that a replay written over HTTP
equals one written to the embedded database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers import ROOT
from sinks.clickhouse import ddl_statements

DEMO = ROOT / "data" / "demo" / "bittrex"
PASSWORD = "stand-in-only-pw-7f3a"  # a test value; what the tests check is that it never leaks


@dataclass
class StandIn:
    port: int
    log: Path

    @property
    def dsn(self) -> str:
        return f"http://bob@127.0.0.1:{self.port}/headrace"

    def requests(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture
def stand_in(tmp_path: Path) -> Iterator[StandIn]:
    log = tmp_path / "requests.jsonl"
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "http_stand_in.py"), str(tmp_path / "db"),
                             str(log)], stdout=subprocess.PIPE, text=True, env={**os.environ,
                                                                                "STAND_IN_PASSWORD": PASSWORD})
    try:
        assert proc.stdout is not None
        yield StandIn(port=int(proc.stdout.readline()), log=log)
    finally:
        proc.kill()
        proc.wait()


def cli(*args: str, state: Path, password: str | None = PASSWORD) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HEADRACE_CLICKHOUSE_PASSWORD"}
    if password is not None:
        env["HEADRACE_CLICKHOUSE_PASSWORD"] = password
    return subprocess.run([sys.executable, "-m", "headrace.cli", *args, "--set", f"storage.state_dir={state}"],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


def test_replay_to_a_chdb_stand_in_server_sends_the_expected_requests_and_equals_embedded(
        stand_in: StandIn, tmp_path: Path) -> None:
    data = ["--data", str(DEMO / "ETH_BTC-5m.feather"), "--data", str(DEMO / "LTC_BTC-5m.feather")]
    served = cli("replay", *data, "--db", stand_in.dsn, "--run-id", "srv", "--json", "--quiet", state=tmp_path)
    assert served.returncode == 0, served.stderr
    embedded = cli("replay", *data, "--run-id", "srv", "--json", "--quiet", state=tmp_path)
    s, e = json.loads(served.stdout), json.loads(embedded.stdout)
    assert s["fills"] > 0
    assert s["store"].startswith("http://bob@127.0.0.1:") and e["store"].startswith("chdb://")
    volatile = ("wall_s", "events_per_s", "store")
    assert {k: v for k, v in s.items() if k not in volatile} == {k: v for k, v in e.items() if k not in volatile}

    reqs = stand_in.requests()
    assert all(r["user"] == "bob" and r["password_ok"] for r in reqs)
    leaked = [r for r in reqs if PASSWORD in json.dumps(r)]
    leaked += [x for x in (served.stdout, served.stderr) if PASSWORD in x]
    assert leaked == []  # only in the Authorization header: never in the URL, a parameter or a statement
    sql = [r["sql"] for r in reqs]
    assert "CREATE DATABASE IF NOT EXISTS headrace" in sql
    ddl = [q for q in sql if q.startswith("CREATE TABLE")]
    creates = [d for d in ddl_statements() if d.startswith("CREATE TABLE")]
    assert ddl[: len(creates)] == creates
    table_requests = [r for r in reqs if r["sql"].startswith(("CREATE TABLE", "INSERT", "SELECT count() FROM"))]
    assert all(r["params"].get("database") == "headrace" for r in table_requests)
    inserts = [q.split("`")[1] for q in sql if q.startswith("INSERT")]
    # the runs row twice (running, finished); every event table once: 11,520 bars go as one batch
    # (ML: predictions, outcomes, metrics, decision-time skill and the models' state; no model
    # earns a weight or drifts on two instruments; risk: reports, limits and stress results, no limit breached)
    assert sorted(inserts) == sorted(["runs", "runs", "bars", "features", "signals", "targets", "orders", "fills",
                                      "positions", "equity", "ml_predictions", "ml_outcomes",
                                      "ml_metrics", "ml_skill", "ml_models", "risk_reports", "risk_limits",
                                      "stress_results"])

    fills = "SELECT event_id, price, amount FROM fills FINAL WHERE run_id = 'srv' ORDER BY ts_event, event_id"
    over_http = json.loads(cli("db", "query", fills, "--db", stand_in.dsn, "--json", state=tmp_path).stdout)
    local = json.loads(cli("db", "query", fills, "--json", state=tmp_path).stdout)
    assert over_http == local and len(local) == s["fills"]


def test_a_wrong_password_to_the_stand_in_server_fails_clearly_without_showing_it(stand_in: StandIn,
                                                                                  tmp_path: Path) -> None:
    res = cli("db", "init", "--db", stand_in.dsn, state=tmp_path, password="not-the-password")
    assert res.returncode == 2
    assert "cannot use ClickHouse at 'http://bob@127.0.0.1" in res.stderr
    assert "authentication failed for user 'bob'" in res.stderr and "HEADRACE_CLICKHOUSE_PASSWORD" in res.stderr
    assert "not-the-password" not in res.stderr + res.stdout and PASSWORD not in res.stderr + res.stdout
    assert [r["password_ok"] for r in stand_in.requests()] == [False] * len(stand_in.requests()) != []


def test_a_password_in_the_db_option_reaches_the_stand_in_server_only_as_authentication(
        stand_in: StandIn, tmp_path: Path) -> None:
    dsn = stand_in.dsn.replace("bob@", f"bob:{PASSWORD}@")
    init = cli("db", "init", "--db", dsn, state=tmp_path, password=None)  # read commands never create a store
    assert init.returncode == 0, init.stderr
    res = cli("db", "query", "SELECT 1 AS one", "--db", dsn, "--json", state=tmp_path, password=None)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [{"one": 1}]
    reqs = stand_in.requests()
    assert reqs and all(r["password_ok"] for r in reqs)
    assert PASSWORD not in stand_in.log.read_text() + res.stdout + res.stderr
