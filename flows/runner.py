"""Running a flow and recording its run: the only place that calls Bytewax's runtime and recovery store.

The run's life in the ``runs`` table is shared by ``headrace replay`` and ``python -m bytewax.run
flows.trading:flow``: `start_run` writes a ``running`` row (with the process id and host, so a row
left ``running`` by a dead process reads as stale), `RunRecord.finish`, `.fail` and `.interrupt` end it.
A fresh run reusing an id first deletes the earlier run's rows; a resumed one keeps them.

Stopping a run. Bytewax runs its workers in Rust; a Python exception inside a step becomes a Rust
panic, printed to the process's stderr with a backtrace. `run` therefore takes a `stop` flag (set by
the CLI's SIGINT/SIGTERM handlers): the source checks it before every batch and raises `Interrupted`,
which ends the run at a slice boundary, and `native_stderr_hidden` keeps what Rust prints off the
user's terminal while Python's own stderr (progress bar, logs, error lines) still reaches it.
"""

from __future__ import annotations

import gc
import io
import json
import logging
import os
import secrets
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import cli_main

from headrace.config import Config
from headrace.errors import ConfigError, HeadraceError

logger = logging.getLogger("headrace")

RUN_FILE = "headrace-run.json"  # in a recovery dir: the run id and what a resume must share with the run
RUN_COLUMNS = ("run_id", "mode", "status", "started_at", "updated_at", "config", "data", "summary", "pid", "host")


def run(flow: Dataflow, *, workers: int = 1, epoch_s: float = 10.0, recovery_dir: Path | None = None) -> None:
    """Run `flow` in this process with `workers` threads; snapshot to `recovery_dir` every epoch."""
    # bytewax ships no annotations for these three: hence the ignores
    recovery = RecoveryConfig(str(recovery_dir)) if recovery_dir is not None else None  # type: ignore[no-untyped-call]
    gc.freeze()  # the plan and everything loaded so far live all run: keep the collector from rescanning them
    try:
        cli_main(flow, workers_per_process=workers, epoch_interval=timedelta(seconds=epoch_s),  # type: ignore[no-untyped-call]
                 recovery_config=recovery)
    finally:
        gc.unfreeze()


def init_recovery(recovery_dir: Path, partitions: int = 1) -> None:
    """Create Bytewax's recovery partitions in an empty directory."""
    init_db_dir(recovery_dir, partitions)  # type: ignore[no-untyped-call]


class _StoppablePartition(StatefulSourcePartition[Any, Any]):
    def __init__(self, inner: StatefulSourcePartition[Any, Any], stop: threading.Event) -> None:
        self.inner = inner
        self.stop = stop

    def next_batch(self) -> list[Any]:
        if self.stop.is_set():
            raise Interrupted(getattr(self.stop, "signum", 0))
        return list(self.inner.next_batch())

    def next_awake(self) -> Any:
        return self.inner.next_awake()

    def snapshot(self) -> Any:
        return self.inner.snapshot()

    def close(self) -> None:
        self.inner.close()


class StoppableSource(FixedPartitionedSource[Any, Any]):
    """`inner`, ending the run with `Interrupted` at the next batch once `stop` is set.

    Stopping between batches never splits a slice; the last committed snapshot is where a resumed run
    starts, exactly as after a crash.
    """

    def __init__(self, inner: FixedPartitionedSource[Any, Any], stop: threading.Event) -> None:
        self.inner = inner
        self.stop = stop

    def list_parts(self) -> list[str]:
        return list(self.inner.list_parts())

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _StoppablePartition:
        return _StoppablePartition(self.inner.build_part(step_id, for_part, resume_state), self.stop)


@contextmanager
def native_stderr_hidden() -> Iterator[io.BytesIO]:
    """Send what native code writes to file descriptor 2 to a buffer; Python's stderr keeps the terminal.

    Yields the buffer, filled when the block ends (Bytewax's panic text, for ``--verbose``).
    """
    sys.stderr.flush()
    saved = os.dup(2)
    captured = io.BytesIO()
    old_stderr = sys.stderr
    terminal: TextIO = io.TextIOWrapper(os.fdopen(os.dup(saved), "wb", buffering=0), encoding="utf-8",
                                        errors="replace", line_buffering=True, write_through=True)
    handlers = [h for h in logging.getLogger().handlers
                if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is old_stderr]
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        sys.stderr = terminal
        for h in handlers:
            h.setStream(terminal)
        try:
            yield captured
        finally:
            terminal.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sys.stderr = old_stderr
            for h in handlers:
                h.setStream(old_stderr)
            terminal.close()
            tmp.seek(0)
            captured.write(tmp.read())


# ---------------------------------------------------------------------------------------------------
# stopping on SIGINT / SIGTERM


class Interrupted(HeadraceError):
    """The run was stopped by a signal; `exit_code` is the shell's convention (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, signum: int) -> None:
        name = signal.Signals(signum).name if signum else "a signal"
        super().__init__(f"interrupted by {name}")
        self.signum = signum
        self.exit_code = 128 + signum if signum else 130


class StopFlag(threading.Event):
    """Set by the first SIGINT or SIGTERM; `signum` says which."""

    signum: int = 0


@contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """Turn SIGINT and SIGTERM into a `StopFlag` for `StoppableSource`; a second signal raises at once."""
    stop = StopFlag()

    def handle(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():  # the flow did not reach its next batch: stop where Python runs now
            raise Interrupted(stop.signum)
        stop.signum = signum
        stop.set()

    if threading.current_thread() is not threading.main_thread():  # handlers live on the main thread only
        yield stop
        return
    old = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def interruption(e: BaseException) -> Interrupted | None:
    """Return the `Interrupted` that ended a run, if `e` is one or was caused by one (through Bytewax)."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, Interrupted):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


# ---------------------------------------------------------------------------------------------------
# the run's row in `runs`


def new_run_id() -> str:
    """Return a fresh run id: the UTC start time and 6 random hex digits."""
    return f"r{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


@dataclass
class RunRecord:
    """One run's row in ``runs``; every status change re-inserts it (ReplacingMergeTree keeps the newest)."""

    store: Any
    run_id: str
    mode: str
    config: str  # JSON, redacted
    data: str  # JSON list of paths
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def _write(self, status: str, summary: dict[str, Any]) -> None:
        row = [self.run_id, self.mode, status, self.started_at, datetime.now(UTC), self.config, self.data,
               json.dumps(summary), os.getpid(), socket.gethostname()]
        self.store.insert_rows("runs", [row], RUN_COLUMNS)

    def start(self) -> None:
        self._write("running", {})

    def finish(self, summary: dict[str, Any], *, status: str = "finished", error: str = "") -> None:
        """Record the summary; a run whose figures broke a limit (`error`) is still summarised but failed."""
        self._write(status, {**summary, "error": error} if error else summary)

    def fail(self, error: BaseException) -> None:
        cause = error.__cause__ if isinstance(error.__cause__, HeadraceError) else error
        self._write("failed", {"error": f"{type(cause).__name__}: {cause}"[:2000]})

    def interrupt(self, why: Interrupted) -> None:
        self._write("interrupted", {"error": str(why)})


def start_run(store: Any, run_id: str, *, mode: str, config: Config, data: list[str], resuming: bool) -> RunRecord:
    """Record `run_id` as running; a fresh run first deletes the rows an earlier run left under its id."""
    if not resuming:
        deleted = store.delete_run(run_id)  # in the background: they never touch rows inserted after them
        if deleted:
            logger.info("replacing earlier rows of run_id=%s tables=%s", run_id, ",".join(deleted))
    record = RunRecord(store, run_id, mode, json.dumps(config.to_dict(redacted=True)),
                       json.dumps([str(Path(p)) for p in data]))
    if resuming:  # keep the first start time of the run being resumed
        rows = store.query("SELECT started_at FROM runs FINAL WHERE run_id = {run:String}", {"run": run_id})
        if rows:
            record.started_at = rows[0]["started_at"]
    record.start()
    return record


# ---------------------------------------------------------------------------------------------------
# recovery dirs


def identity(config: Config, files: tuple[str, ...], dsn: str) -> dict[str, Any]:
    """What a resumed run must share with the run it resumes: config, files unchanged, the same database.

    A snapshot's offsets mean nothing over other data, and rows must land where the rest are.
    """
    from sinks.clickhouse import redact

    return {"config": config.to_dict(redacted=True), "db": redact(dsn),
            "files": {f: [Path(f).stat().st_size, Path(f).stat().st_mtime_ns] for f in files}}


def _first_difference(saved: Any, now: Any, key: str = "") -> str | None:
    if isinstance(saved, dict) and isinstance(now, dict):
        for k in sorted(set(saved) | set(now)):
            if (d := _first_difference(saved.get(k), now.get(k), f"{key}.{k}" if key else str(k))) is not None:
                return d
        return None
    return None if saved == now else f"{key}: was {saved!r}, now {now!r}"


def prepare_recovery(recovery_dir: Path, run_id: str | None, ident: dict[str, Any], *,
                     create: bool = True) -> tuple[str, bool]:
    """Return (run id, resuming) for a run snapshotting to `recovery_dir`.

    A dir holding a run file resumes that run (refusing other settings or data, or another run id); an
    empty one starts a new run (`create`: Bytewax's partitions are made here). Raises `ConfigError`.
    """
    run_file = recovery_dir / RUN_FILE
    shown = str(recovery_dir)
    try:
        if run_file.exists():
            saved = json.loads(run_file.read_text(encoding="utf-8"))
            if run_id and run_id != saved["run_id"]:
                raise ConfigError("--run-id", f"the recovery dir {shown!r} holds run {saved['run_id']!r}, not "
                                              f"{run_id!r}; use another --recovery-dir for a new run")
            if (diff := _first_difference(saved.get("identity"), ident)) is not None:
                raise ConfigError("--recovery-dir", f"{shown!r} holds run {saved['run_id']!r}, started with other "
                                                    f"settings or data ({diff}); resume it with the same command, "
                                                    "or start a new run with another --recovery-dir")
            return str(saved["run_id"]), True
        if create:
            recovery_dir.mkdir(parents=True, exist_ok=True)
            if any(recovery_dir.iterdir()):
                raise ConfigError("--recovery-dir", f"{shown!r} is not empty and holds no headrace run")
            init_recovery(recovery_dir)
        run_id = run_id or new_run_id()
        run_file.write_text(json.dumps({"run_id": run_id, "identity": ident}, indent=1), encoding="utf-8")
    except OSError as e:
        raise ConfigError("--recovery-dir", f"cannot use {shown!r}: {e.strerror or e}") from e
    except (ValueError, KeyError) as e:
        raise ConfigError("--recovery-dir", f"{str(run_file)!r} is not a headrace run file: {e}") from e
    return run_id, False


# ---------------------------------------------------------------------------------------------------
# `python -m bytewax.run flows.trading:flow`


def _recovery_dir_of(argv: list[str]) -> Path | None:
    # bytewax.run's own flag: -r DIR / --recovery-directory DIR / --recovery-directory=DIR
    for i, a in enumerate(argv):
        if a in ("-r", "--recovery-directory") and i + 1 < len(argv):
            return Path(argv[i + 1])
        if a.startswith("--recovery-directory="):
            return Path(a.split("=", 1)[1])
    return None


def flow_from_environment(build_flow: Callable[..., Dataflow]) -> Dataflow:
    """Build the replay flow from ``HEADRACE_DATA`` (paths separated by ``:``), ``HEADRACE_CONFIG`` and
    ``HEADRACE_RUN_ID``, and record its run as ``headrace replay`` does.

    A fresh run id unless ``HEADRACE_RUN_ID`` is set; a rerun under the same id replaces the earlier
    rows, except when bytewax.run resumes from its recovery directory (``-r``), where the run id is kept
    in the directory. The run is marked finished, with its summary, when the flow ends normally. Bad
    settings print one line and exit with status 2.
    """
    from headrace.config import load_config
    from sinks.clickhouse import ClickHouseSink, Store, redact
    from sources.formats import ReadOptions
    from sources.replay_plan import ReplayPlan

    try:
        paths = [p for p in os.environ.get("HEADRACE_DATA", "").split(":") if p]
        if not paths:
            raise HeadraceError("HEADRACE_DATA is not set: give the data files or folders to replay, separated by "
                                "':' (HEADRACE_DATA=data/demo/bittrex python -m bytewax.run flows.trading:flow)")
        config = load_config(os.environ.get("HEADRACE_CONFIG") or None)
        plan = ReplayPlan.open(paths, config.replay.chunk_rows, venue=config.replay.venue,
                               symbol=config.replay.symbol, options=ReadOptions.from_config(config))
        dsn = config.dsn()
        run_id, resuming = os.environ.get("HEADRACE_RUN_ID") or None, False
        if (recovery_dir := _recovery_dir_of(sys.argv)) is not None:
            run_id, resuming = prepare_recovery(recovery_dir, run_id, identity(config, plan.files, dsn), create=False)
        run_id = run_id or new_run_id()
        store = Store.connect(dsn, connect_timeout_s=config.storage.connect_timeout_s,
                              read_timeout_s=config.storage.read_timeout_s)
        store.init_schema()
        record = start_run(store, run_id, mode="replay", config=config, data=paths, resuming=resuming)
    except HeadraceError as e:
        sys.stderr.write(f"error: {e}\n")
        raise SystemExit(2) from None
    started = time.perf_counter()

    def finished(st: Store) -> None:
        from headrace.report import initial_equity, summarize  # reports sit above flows: imported at the end

        st.wait_for_mutations()
        summary = summarize(st, run_id, events_in=plan.total_rows, initial_equity=initial_equity(config),
                            wall_s=time.perf_counter() - started, store=redact(st.dsn), config=config)
        record.finish(summary.to_dict())

    sink = ClickHouseSink(dsn, run_id, config.storage.batch_rows, on_close=finished)
    logger.info("bytewax.run replay run_id=%s resuming=%s", run_id, resuming)
    return build_flow(plan, config, run_id, dsn=dsn, sink=sink)
