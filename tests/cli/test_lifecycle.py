"""The CLI's run lifecycle and store access, run as a user runs it (subprocesses, the repo's demo data, real chDB).

Signals, interrupted and stale runs, `runs` (quarantine, changed keys, delete), read-only `db query`, one-line
errors for files and DSNs, read commands without a store or while a replay holds it, `bytewax.run`,
`--timerange`/`--timeframe`, `data list`, `synth --duration`, `--max-quarantined`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_cli import DEMO, _source_offset, headrace, query, write_bad_bars

from helpers import ROOT, SHARED_DATA, models_off

pytestmark = pytest.mark.slow

TWO = ["--data", str(DEMO / "ETH_BTC-5m.feather"), "--data", str(DEMO / "LTC_BTC-5m.feather")]
KRAKEN = SHARED_DATA / "cross_venue" / "kraken"


_models_off = pytest.fixture(autouse=True, scope="module")(models_off)  # the run lifecycle is the subject here


def runs_of(state: Path) -> dict[str, dict[str, Any]]:
    return {r["run_id"]: r for r in json.loads(headrace("runs", "--json", state=state).stdout)}


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    return lines[0]


@pytest.fixture(scope="module")
def demo_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two demo instruments replayed once as run 'small', with one key changed from the defaults."""
    state = tmp_path_factory.mktemp("state")
    headrace("replay", "--quiet", *TWO, "--run-id", "small", "--set", "strategy.rebalance_bars=100", state=state)
    return state


# --- 12: quarantine in runs, --max-quarantined ----------------------------------------------------------


def test_runs_shows_quarantine_and_the_keys_changed_from_the_defaults(demo_state: Path) -> None:
    r = runs_of(demo_state)["small"]
    assert r["status"] == "finished"
    assert r["quarantined"] == 0 and r["quarantined_fraction"] == 0.0
    assert r["changed"] == {"storage.state_dir": str(demo_state), "strategy.rebalance_bars": 100}
    table = headrace("runs", state=demo_state).stdout
    assert "quarantined" in table and "strategy.rebalance_bars=100" in table


def test_max_quarantined_fails_a_run_that_quarantines_more(tmp_path: Path) -> None:
    data, state = tmp_path / "data", tmp_path / "state"
    n_bad = write_bad_bars(data)  # 11 bad rows among 411
    ok = headrace("replay", "--quiet", "--json", "--data", str(data), "--run-id", "lenient", state=state)
    assert json.loads(ok.stdout)["events_quarantined"] == n_bad
    res = headrace("replay", "--quiet", "--json", "--data", str(data), "--run-id", "strict", "--max-quarantined",
                   "0.01", state=state, check=False)
    assert res.returncode == 2
    line = one_line(res.stderr)
    assert f"{n_bad} of 411 rows" in line and "validation.max_quarantined = 0.01" in line
    assert json.loads(res.stdout)["events_quarantined"] == n_bad  # the summary is still printed
    runs = runs_of(state)
    assert runs["strict"]["status"] == "failed" and runs["lenient"]["status"] == "finished"
    assert runs["strict"]["quarantined"] == n_bad and runs["strict"]["quarantined_fraction"] == pytest.approx(11 / 411)
    # the config key does the same
    res = headrace("replay", "--quiet", "--data", str(data), "--run-id", "strict2",
                   "--set", "validation.max_quarantined=0.02", state=state, check=False)
    errors = [x for x in res.stderr.splitlines() if x.startswith("error:")]  # the table's warnings come first
    assert res.returncode == 2 and len(errors) == 1 and "max_quarantined = 0.02" in errors[0]


# --- 14: db query is read-only unless --write -----------------------------------------------------------


def test_db_query_refuses_drop_and_insert_and_the_data_stays(demo_state: Path) -> None:
    before = query("SELECT count() AS n FROM fills FINAL WHERE run_id = 'small'", demo_state)[0]["n"]
    assert before > 0
    for sql in ("DROP DATABASE headrace", "INSERT INTO runs (run_id) VALUES ('x')", "TRUNCATE TABLE fills",
                "SELECT 1 SETTINGS readonly = 0"):
        res = headrace("db", "query", sql, state=demo_state, check=False)
        assert res.returncode == 2, sql
        assert "read-only" in one_line(res.stderr) and "--write" in res.stderr
    assert query("SELECT count() AS n FROM fills FINAL WHERE run_id = 'small'", demo_state)[0]["n"] == before
    res = headrace("db", "query", "CREATE TABLE IF NOT EXISTS notes (t String) ENGINE = Memory", "--write",
                   state=demo_state, check=False)
    assert res.returncode == 0, res.stderr


# --- 15: signals, interrupted and stale runs, runs delete ----------------------------------------------


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_run_ends_it_with_one_line_marked_interrupted_and_the_same_command_resumes(
        tmp_path: Path, sig: signal.Signals, code: int) -> None:
    state, recovery = tmp_path / "state", tmp_path / "recovery"
    args = [sys.executable, "-m", "headrace.cli", "replay", "--data", str(DEMO), "--recovery-dir", str(recovery),
            "--snapshot-s", "0.05", "--quiet", "--json", "--set", "replay.chunk_rows=500",
            "--set", f"storage.state_dir={state}"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _source_offset(recovery) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be signalled"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code and out == ""
    assert one_line(err) == f"interrupted by {sig.name}; the same command resumes"
    run_id = json.loads((recovery / "headrace-run.json").read_text())["run_id"]
    assert runs_of(state)[run_id]["status"] == "interrupted"
    resumed = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["run_id"] == run_id and runs_of(state)[run_id]["status"] == "finished"


def test_sigint_without_a_recovery_dir_says_the_run_cannot_resume(tmp_path: Path) -> None:
    state = tmp_path / "state"
    args = [sys.executable, "-m", "headrace.cli", "replay", "--quiet", "--data", str(DEMO), "--run-id", "cut", "--set",
            "replay.chunk_rows=500", "--set", f"storage.state_dir={state}"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while b"replay" not in _peek(state) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "interrupted by SIGINT" in one_line(err) and "--recovery-dir" in err
    assert runs_of(state)["cut"]["status"] == "interrupted"


def _peek(state: Path) -> bytes:
    # a replay has started its flow once chDB has written its status file (it holds the store)
    try:
        return b"replay" if (state / "clickhouse" / "status").stat().st_size else b""
    except OSError:
        return b""


def test_a_running_row_whose_process_is_gone_is_stale(demo_state: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    for run_id, pid in (("ghost", dead.pid), ("alive", os.getpid())):
        res = headrace("db", "query", "--write",
                       f"INSERT INTO runs (run_id, mode, status, started_at, updated_at, config, data, summary, pid, "
                       f"host) VALUES ('{run_id}', 'replay', 'running', now64(3), now64(3), '{{}}', '[]', '{{}}', "
                       f"{pid}, '{host}')", state=demo_state, check=False)
        assert res.returncode == 0, res.stderr
    runs = runs_of(demo_state)
    assert runs["ghost"]["status"] == "stale" and runs["alive"]["status"] == "running"
    assert runs["small"]["pid"] > 0 and runs["small"]["host"] == host


def test_runs_delete_removes_one_run_from_every_table(tmp_path: Path) -> None:
    state = tmp_path / "state"
    for run_id in ("keep", "drop"):
        headrace("replay", "--quiet", *TWO, "--run-id", run_id, state=state)
    res = headrace("runs", "delete", "drop", state=state)
    assert "deleted run 'drop'" in res.stderr
    rows = query("SELECT run_id, count() AS n FROM (SELECT run_id FROM fills UNION ALL SELECT run_id FROM equity "
                 "UNION ALL SELECT run_id FROM bars UNION ALL SELECT run_id FROM runs) GROUP BY run_id", state)
    assert {r["run_id"] for r in rows} == {"keep"}
    res = headrace("runs", "delete", "drop", state=state, check=False)
    assert res.returncode == 2 and "no run 'drop'" in one_line(res.stderr)


# --- 16: one-line errors, exit 2 ------------------------------------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join()
    for c in held:
        c.close()
    srv.close()


def _read_only_dir(tmp_path: Path) -> str:
    if os.geteuid() == 0:  # root writes through file modes: use a read-only file system
        return "/sys/headrace-state"
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    return str(d / "state")


def test_file_and_dsn_errors_are_one_line_exit_2_naming_the_file(tmp_path: Path, silent_server: int) -> None:
    folder = tmp_path / "a folder"
    folder.mkdir()
    latin = tmp_path / "latin1.toml"
    latin.write_bytes('[account]\nid = "caf\xe9"\n'.encode("latin-1"))
    ro = _read_only_dir(tmp_path)
    long_name = tmp_path / ("a-config-file-with-a-name-long-enough-to-wrap-an-eighty-column-terminal" * 2 + ".toml")
    long_name.mkdir()
    cases = [
        (("runs", "--config", str(folder)), [str(folder), "is a directory"]),
        (("runs", "--config", str(long_name)), [str(long_name)]),
        (("runs", "--config", str(latin)), [str(latin), "not UTF-8"]),
        (("replay", *TWO, "--set", f"storage.state_dir={ro}"), [ro, "storage.state_dir"]),
        (("replay", *TWO, "--set", "storage.state_dir=/dev/null/state"), ["/dev/null/state", "Not a directory"]),
        (("replay", *TWO, "--recovery-dir", "/dev/null/rec"), ["/dev/null/rec"]),
        (("replay", *TWO, "--db", "chdb://"), ["'chdb://' names no path"]),
        (("db", "init", "--db", "ftp://example.org/x"), ["unknown scheme 'ftp'"]),
        (("db", "init", "--db", f"http://127.0.0.1:{silent_server}/headrace", "--set", "storage.connect_timeout_s=1",
          "--set", "storage.read_timeout_s=1"), [f"127.0.0.1:{silent_server}", "storage.read_timeout_s = 1"]),
    ]
    env_cols = {**os.environ, "COLUMNS": "80"}
    for args, words in cases:
        cmd = [sys.executable, "-m", "headrace.cli", *args, "--set", f"storage.state_dir={tmp_path / 'state'}"]
        if "storage.state_dir=" in " ".join(args):
            cmd = cmd[:-2]
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env_cols)
        assert res.returncode == 2, (args, res.stderr)
        line = one_line(res.stderr)
        assert line.startswith("error: ") and "Traceback" not in res.stderr
        for w in words:
            assert w in line, (args, line)
    assert not (tmp_path / "state").exists()  # no failed command left a store behind


# --- 17: which store; no store; a store held by a replay -----------------------------------------------


def test_read_commands_in_a_directory_without_a_store_say_so_and_create_none(tmp_path: Path) -> None:
    state = tmp_path / "state"
    for args in (("runs",), ("positions", "--run-id", "x"), ("db", "query", "SELECT 1")):
        res = headrace(*args, state=state, check=False)
        assert res.returncode == 2 and "no headrace store at" in one_line(res.stderr) and str(state) in res.stderr
    assert not state.exists()


def test_the_summary_names_the_store(demo_state: Path, tmp_path: Path) -> None:
    s = json.loads(headrace("replay", "--quiet", "--json", *TWO, "--run-id", "named", state=tmp_path).stdout)
    assert s["store"] == f"chdb://{tmp_path.resolve() / 'clickhouse'}"


def test_a_read_command_while_another_process_holds_the_store_waits_then_names_the_holder(demo_state: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from sinks.clickhouse import Store; "
         f"Store.connect('chdb://{demo_state / 'clickhouse'}'); print('open', flush=True); time.sleep(120)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        res = headrace("runs", state=demo_state, check=False)
        assert res.returncode == 2
        line = one_line(res.stderr)
        assert f"in use by process {holder.pid}" in line and "storage.lock_wait_s" in line
        res = headrace("runs", "--set", "storage.lock_wait_s=0.5", state=demo_state, check=False)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 2
        assert lines[0].startswith("waiting up to 0.5 s for process") and f"process {holder.pid}" in lines[1]
    finally:
        holder.kill()
        holder.wait()
    assert "small" in runs_of(demo_state)  # free again: the command works


# --- 19: bytewax.run records its run --------------------------------------------------------------------


def test_bytewax_run_records_its_run_and_a_rerun_under_the_same_id_doubles_nothing(tmp_path: Path) -> None:
    data = f"{DEMO / 'ETH_BTC-5m.feather'}:{DEMO / 'LTC_BTC-5m.feather'}"
    env = {**os.environ, "HEADRACE_DATA": data, "PYTHONPATH": str(ROOT)}
    env.pop("HEADRACE_RUN_ID", None)
    cmd = [sys.executable, "-m", "bytewax.run", "flows.trading:flow"]
    subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
    for _ in range(2):
        subprocess.run(cmd, cwd=tmp_path, env={**env, "HEADRACE_RUN_ID": "bw"}, check=True, capture_output=True,
                       timeout=300)
    state = tmp_path / "state"
    runs = runs_of(state)
    fresh = [r for r in runs if r != "bw"]
    assert len(fresh) == 1 and fresh[0].startswith("r") and runs[fresh[0]]["status"] == "finished"
    assert runs["bw"]["status"] == "finished" and runs["bw"]["fills"] > 0
    [row] = query("SELECT count() AS plain, uniqExact(event_id) AS ids FROM fills WHERE run_id = 'bw'", state)
    assert row["plain"] == row["ids"] == runs["bw"]["fills"]
    res = subprocess.run(cmd, cwd=tmp_path, env={k: v for k, v in env.items() if k != "HEADRACE_DATA"},
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "HEADRACE_DATA is not set" in one_line(res.stderr)


# --- 20: --timerange, --timeframe, data list, synth --duration ------------------------------------------


def test_timerange_replays_only_the_rows_inside_it(tmp_path: Path) -> None:
    s = json.loads(headrace("replay", "--quiet", "--json", *TWO, "--run-id", "window",
                            "--timerange", "2018-01-15:2018-01-17T12:00", state=tmp_path).stdout)
    [r] = query("SELECT count() AS n, min(ts_open) AS a, max(ts_open) AS b FROM bars FINAL WHERE run_id = 'window'",
                tmp_path)
    assert r["n"] == s["events_in"] == 2 * (2 * 288 + 144)  # 2.5 days of 5-minute bars, two instruments
    assert str(r["a"]).replace("T", " ").startswith("2018-01-15 00:00:00")
    assert str(r["b"]).replace("T", " ").startswith("2018-01-17 11:55:00")
    res = headrace("replay", *TWO, "--timerange", "2018-01-15", state=tmp_path, check=False)
    assert res.returncode == 2 and "--timerange" in one_line(res.stderr)


@pytest.mark.skipif(not KRAKEN.exists(), reason="needs ../shared/data beside the repo")
def test_timeframe_picks_one_bar_length_from_a_folder_holding_two(tmp_path: Path) -> None:
    files = ["--data", str(KRAKEN / "XBTUSDC_1.csv.gz"), "--data", str(KRAKEN / "XBTUSDC_5.csv.gz"),
             "--data", str(KRAKEN / "XBTUSDT_5.csv.gz"), "--timerange", "2023-03-01:2023-03-04",
             "--set", 'account.currency="USD"', "--set", "account.fx_rates={USDT=1.0, USDC=1.0}"]
    res = headrace("replay", "--quiet", *files, state=tmp_path, check=False)
    assert res.returncode == 2 and "several lengths" in one_line(res.stderr)
    for tf, n_usdc in (("5m", 3 * 288), ("1m", None)):
        s = json.loads(headrace("replay", "--quiet", "--json", *files, "--timeframe", tf, "--run-id", f"tf{tf}",
                                state=tmp_path).stdout)
        rows = query(f"SELECT instrument, count() AS n FROM bars FINAL WHERE run_id = 'tf{tf}' GROUP BY instrument "
                     "ORDER BY instrument", tmp_path)
        by = {r["instrument"]: r["n"] for r in rows}
        assert sum(by.values()) == s["events_in"]
        assert set(by) == {"kraken:BTC/USDC", "kraken:BTC/USDT"}
        assert by["kraken:BTC/USDT"] <= 3 * 288  # recorded at 5m only: it keeps its clock either way
        if tf == "5m":
            assert by["kraken:BTC/USDC"] <= n_usdc
        else:
            assert by["kraken:BTC/USDC"] > 3 * 288


def test_data_list_shows_what_each_file_will_be_read_as(tmp_path: Path) -> None:
    rows = json.loads(headrace("data", "list", str(DEMO), "--json", state=tmp_path).stdout)
    assert len(rows) == 10 and all(r["error"] is None for r in rows)
    eth = next(r for r in rows if r["path"].endswith("ETH_BTC-5m.feather"))
    assert (eth["venue"], eth["symbol"], eth["kind"], eth["timeframe"]) == ("bittrex", "ETH/BTC", "bar", "5m")
    assert eth["rows"] > 0 and eth["first"] < eth["last"]
    assert "ETH/BTC" in headrace("data", "list", str(DEMO), state=tmp_path).stdout
    assert not (tmp_path / "clickhouse").exists()


def test_synth_duration_sets_the_span_of_the_ticks(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "headrace.cli", "synth", "--out", str(tmp_path / "ticks"), "--events",
                    "4000", "--duration", "2h"], cwd=ROOT, check=True, capture_output=True, timeout=120)
    rows = json.loads(headrace("data", "list", str(tmp_path / "ticks"), "--json", state=tmp_path).stdout)
    assert rows and all(r["kind"] in ("trade", "quote") for r in rows)
    first, last = min(r["first"] for r in rows), max(r["last"] for r in rows)
    from datetime import datetime
    span = datetime.fromisoformat(last.replace("Z", "+00:00")) - datetime.fromisoformat(first.replace("Z", "+00:00"))
    assert 1.9 * 3600 < span.total_seconds() <= 2 * 3600
    res = subprocess.run([sys.executable, "-m", "headrace.cli", "synth", "--out", str(tmp_path / "x"), "--duration",
                          "two days"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "--duration" in one_line(res.stderr)
