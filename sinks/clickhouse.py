"""The ClickHouse store: one DSN, embedded chDB by default, a server unchanged.

`Store` wraps a clickhouse-connect client (one per process and DSN; worker threads share it behind a
lock), applies the DDL in ``sql/`` idempotently, and inserts Arrow tables. `ClickHouseSink` is the
Bytewax sink: it buffers rows per table and writes large column-oriented batches, flushing before
every recovery snapshot so nothing acknowledged is held only in memory.

Passwords never appear in logs or errors: DSNs are shown through `redact`, and a server password can
come from ``HEADRACE_CLICKHOUSE_PASSWORD`` instead of the DSN.

DSNs are ``chdb:///absolute/path`` (or ``chdb://relative/path``), ``http://`` and ``https://``; anything
else is refused, as is ``chdb://`` without a path (chDB would run in memory and keep nothing). Read
commands open a store with ``create=False`` (a missing store is an error, not a new empty one) and may
wait for a replay holding an embedded store; `Store.query` with ``readonly=True`` runs under ClickHouse's
``readonly = 2`` (reads, and settings other than ``readonly``, only).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import clickhouse_connect
import pyarrow as pa
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from headrace.errors import StorageError
from headrace.events import WrittenEvent
from sinks.rows import SCHEMAS, table_of, to_arrow

logger = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
DATABASE = "headrace"
PASSWORD_ENV = "HEADRACE_CLICKHOUSE_PASSWORD"
TABLES = tuple(SCHEMAS)


def redact(dsn: str) -> str:
    """Return `dsn` with any password replaced by ``***``.

    Examples
    --------
    >>> redact("http://bob:s3cret@host:8123/headrace")
    'http://bob:***@host:8123/headrace'
    >>> redact("chdb:///tmp/x")
    'chdb:///tmp/x'
    """
    return re.sub(r"(//[^:/@]+):[^@]*@", r"\1:***@", dsn)


def check_dsn(dsn: str) -> str:
    """Return `dsn` with a relative chDB path made absolute; raise `StorageError` for DSNs headrace cannot use.

    Examples
    --------
    >>> check_dsn("http://host:8123/headrace")
    'http://host:8123/headrace'
    >>> check_dsn("ftp://host/x")
    Traceback (most recent call last):
    ...
    headrace.errors.StorageError: DSN 'ftp://host/x': unknown scheme 'ftp' (use chdb:///path, http:// or https://)
    """
    scheme, sep, rest = dsn.partition("://")
    if not sep:
        raise StorageError(f"DSN {redact(dsn)!r} is not a DSN (use chdb:///path, http://host:8123/headrace or "
                           "https://...)")
    if scheme == "chdb":
        if not rest.strip():
            raise StorageError(f"DSN {dsn!r} names no path (chDB would keep nothing on disk): use "
                               "chdb:///absolute/path, or no --db for <state dir>/clickhouse")
        return f"chdb://{Path(rest).resolve()}" if not rest.startswith("/") else dsn
    if scheme in ("http", "https"):
        if not urlsplit(dsn).hostname:
            raise StorageError(f"DSN {redact(dsn)!r} names no host")
        return dsn
    raise StorageError(f"DSN {redact(dsn)!r}: unknown scheme {scheme!r} (use chdb:///path, http:// or https://)")


def ddl_statements() -> list[str]:
    """Return every DDL statement in ``sql/*.sql`` (comments and blanks dropped), in file order."""
    out = []
    for path in sorted(SQL_DIR.glob("*.sql")):
        text = "\n".join(line.split("--", 1)[0] for line in path.read_text(encoding="utf-8").splitlines())
        out += [s.strip() for s in text.split(";") if s.strip()]
    return out


class Store:
    """A ClickHouse database reached through one DSN (see module docstring)."""

    _lock = threading.RLock()  # connect() closes other chDB stores while holding it
    _open: dict[str, Store] = {}

    def __init__(self, dsn: str, client: Any) -> None:
        self.dsn = dsn
        self.client = client
        self.lock = threading.RLock()

    @classmethod
    def connect(cls, dsn: str, *, create: bool = True, connect_timeout_s: float = 10.0, read_timeout_s: float = 300.0,
                lock_wait_s: float = 0.0, on_wait: Callable[[str], None] | None = None) -> Store:
        """Return the process's store for `dsn`, opening it (and, with `create`, creating the database).

        Without `create`, a store that does not exist raises `StorageError` (read commands never leave an
        empty one behind). An embedded store held by another process is waited for up to `lock_wait_s`
        seconds (`on_wait` gets one message first), then refused naming the holder. Server timeouts are
        `connect_timeout_s` and `read_timeout_s`.
        """
        dsn = check_dsn(dsn)
        with cls._lock:
            if dsn in cls._open:
                return cls._open[dsn]
            if dsn.startswith("chdb:"):
                for other in list(cls._open.values()):  # chDB serves one path per process at a time
                    if other.dsn.startswith("chdb:"):
                        other.close()
                store = cls(dsn, _open_chdb(dsn, create=create, lock_wait_s=lock_wait_s, on_wait=on_wait))
            else:
                store = cls(dsn, _open_server(dsn, create=create, connect_timeout_s=connect_timeout_s,
                                              read_timeout_s=read_timeout_s))
            cls._open[dsn] = store
            return store

    def close(self) -> None:
        with Store._lock:
            Store._open.pop(self.dsn, None)
        with self.lock:
            self.client.close()

    def init_schema(self) -> None:
        """Create every table that does not exist yet (idempotent)."""
        with self.lock:
            for stmt in ddl_statements():
                self.client.command(stmt)

    def insert(self, table: str, data: pa.Table) -> None:
        with self.lock:
            self.client.insert_arrow(table, data)

    def insert_rows(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> None:
        with self.lock:
            self.client.insert(table, rows, column_names=list(columns))

    def query(self, sql: str, parameters: dict[str, Any] | None = None, *,
              readonly: bool = False) -> list[dict[str, Any]]:
        """Run `sql` and return rows as dicts keyed by column name.

        `readonly` runs it under ClickHouse's ``readonly = 2``: writes, DDL and changing ``readonly`` are
        refused by ClickHouse itself. chDB keeps that setting for the rest of its session, so an embedded
        store is closed after a read-only query (the next `connect` opens it afresh).
        """
        settings = {"readonly": 2} if readonly else None
        try:
            with self.lock:
                res = self.client.query(sql, parameters=parameters, settings=settings)
        finally:
            if readonly and self.dsn.startswith("chdb:"):
                self.close()
        return [dict(zip(res.column_names, row)) for row in res.result_rows]

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        with self.lock:
            return self.client.command(sql, parameters=parameters)

    def delete_run(self, run_id: str, tables: Iterable[str] = TABLES) -> list[str]:
        """Start deleting `run_id`'s rows from `tables` in the background; return the tables that had rows.

        The deletes are asynchronous mutations: they apply to the parts that exist now, never to rows
        inserted after them, so a run that reuses the id can start writing at once. Call
        `wait_for_mutations` before reading the run's results.
        """
        started = []
        with self.lock:
            for t in tables:
                n = self.client.command(f"SELECT count() FROM {t} WHERE run_id = {{run:String}}",
                                        parameters={"run": run_id})
                if int(n):
                    self.client.command(f"ALTER TABLE {t} DELETE WHERE run_id = {{run:String}}",
                                        parameters={"run": run_id}, settings={"mutations_sync": 0})
                    started.append(t)
        return started

    def delete_run_now(self, run_id: str) -> list[str]:
        """Delete every row of `run_id`, its ``runs`` row included, and wait until the deletes are done."""
        started = self.delete_run(run_id, (*TABLES, "runs"))
        self.wait_for_mutations()
        return started

    def wait_for_mutations(self, timeout_s: float = 300.0) -> None:
        """Block until every mutation of the database is done; raise `StorageError` after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self.lock:
                pending = int(self.client.command(
                    "SELECT count() FROM system.mutations WHERE database = currentDatabase() AND NOT is_done"))
            if pending == 0:
                return
            if time.monotonic() > deadline:
                raise StorageError(f"{pending} ClickHouse mutations (deletes of an earlier run) still pending "
                                   f"after {timeout_s:.0f} s; see system.mutations")
            time.sleep(0.05)

    def optimize(self, tables: Iterable[str] = TABLES, *, run_id: str | None = None) -> None:
        """Merge away rows written twice (a resumed run), so even a plain count() sees each once.

        With `run_id`, only the partitions holding that run's rows are merged (a server holding months of
        other runs is not rewritten for one).
        """
        with self.lock:
            for t in tables:
                if run_id is None:
                    self.client.command(f"OPTIMIZE TABLE {t} FINAL")
                    continue
                parts = self.client.query(f"SELECT DISTINCT _partition_id FROM {t} WHERE run_id = {{run:String}}",
                                          parameters={"run": run_id}).result_rows
                for (part,) in sorted(parts):
                    self.client.command(f"OPTIMIZE TABLE {t} PARTITION ID {{p:String}} FINAL",
                                        parameters={"p": part})


def holder(path: str) -> str:
    """Return which process holds the embedded database at `path`, as ``process 123 (headrace replay ...)``.

    ClickHouse writes its pid into ``<path>/status`` once it holds the lock; the command line comes from
    ``/proc`` where there is one.
    """
    try:
        m = re.search(r"PID:\s*(\d+)", (Path(path) / "status").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        m = None
    if not m:
        return "another process"
    pid = m.group(1)
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        words = [a.decode(errors="replace") for a in argv if a]
        if len(words) > 2 and words[1:3] == ["-m", "headrace.cli"]:
            words = ["headrace", *words[3:]]
        elif words and words[0].endswith("/headrace"):
            words[0] = "headrace"
        cmd = " ".join(words)
        cmd = cmd if len(cmd) <= 80 else cmd[:77] + "..."
        return f"process {pid} ({cmd})" if cmd else f"process {pid}"
    except OSError:
        return f"process {pid}"


def _in_use_error(path: str) -> StorageError:
    return StorageError(
        f"the embedded database at {path!r} is in use by {holder(path)} (an embedded ClickHouse belongs to one "
        "process): wait for it to finish, raise storage.lock_wait_s to wait, or point storage.dsn at a "
        "ClickHouse server (see docs/deployment.md)")


def held_by_another_process(path: str) -> bool:
    """Return whether another process holds the embedded database at `path` (ClickHouse's lock on `status`).

    ClickHouse takes an exclusive ``flock`` on ``<path>/status`` while it serves the directory; probing
    it first gives a clear message instead of chDB's own, which it prints straight to stderr.
    """
    status = Path(path) / "status"
    if not status.exists():
        return False
    with status.open("rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def store_exists(path: str) -> bool:
    """Return whether `path` holds an embedded headrace database."""
    return (Path(path) / "metadata" / f"{DATABASE}.sql").exists()


def _open_chdb(dsn: str, *, create: bool = True, lock_wait_s: float = 0.0,
               on_wait: Callable[[str], None] | None = None) -> Any:
    path = dsn[len("chdb://"):]
    if not create and not store_exists(path):
        raise StorageError(f"no headrace store at {path!r} (nothing has been replayed into it): run "
                           "`headrace replay` here first, or pass --db / storage.state_dir to name the store")
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
        probe = Path(path) / ".headrace-write-probe"  # root passes os.access: try a real write
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise StorageError(f"cannot use {path!r} for the embedded database: {e.strerror or e} (storage.state_dir "
                           "must be a writable directory)") from e
    if held_by_another_process(path):
        if lock_wait_s > 0:
            if on_wait is not None:
                on_wait(f"waiting up to {lock_wait_s:g} s for {holder(path)}, which holds the embedded database "
                        f"at {path!r}")
            deadline = time.monotonic() + lock_wait_s
            while held_by_another_process(path) and time.monotonic() < deadline:
                time.sleep(0.2)
        if held_by_another_process(path):
            raise _in_use_error(path)
    try:
        boot = clickhouse_connect.get_client(dsn=dsn)
        boot.command(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
        return clickhouse_connect.get_client(dsn=dsn, database=DATABASE)
    except Exception as e:
        msg = str(e)
        if "already running" in msg or "lock" in msg.lower():
            raise _in_use_error(path) from e
        raise StorageError(f"cannot open the embedded database {redact(dsn)!r}: {msg}") from e


def _open_server(dsn: str, *, create: bool = True, connect_timeout_s: float = 10.0,
                 read_timeout_s: float = 300.0) -> Any:
    parts = urlsplit(dsn)
    database = parts.path.strip("/") or DATABASE
    password = unquote(parts.password) if parts.password else os.environ.get(PASSWORD_ENV, "")
    common: dict[str, Any] = {"host": parts.hostname, "port": parts.port or (8443 if parts.scheme == "https" else 8123),
              "username": unquote(parts.username or "default"), "password": password,
              "secure": parts.scheme == "https", "connect_timeout": connect_timeout_s,
              "send_receive_timeout": read_timeout_s, "query_retries": 0}
    try:
        client = clickhouse_connect.get_client(**common, database="default")
        if create:
            client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
        elif not int(str(client.command("SELECT count() FROM system.databases WHERE name = {db:String}",
                                        parameters={"db": database}))):
            client.close()
            raise StorageError(f"no headrace database {database!r} at {redact(dsn)!r} (nothing has been replayed "
                               "into it): run `headrace replay` or `headrace db init` first")
        client.close()
        return clickhouse_connect.get_client(**common, database=database)
    except StorageError:
        raise
    except Exception as e:
        why = redact(str(e).strip().splitlines()[0] if str(e).strip() else "")
        if "timed out" in why.lower() or "timeout" in type(e).__name__.lower():
            why = (f"no answer within the timeouts (storage.connect_timeout_s = {connect_timeout_s:g}, "
                   f"storage.read_timeout_s = {read_timeout_s:g}): {why}")
        if password:
            why = why.replace(password, "***")
        if "Authentication failed" in why or "AUTHENTICATION_FAILED" in why:
            why = (f"authentication failed for user {unquote(parts.username or 'default')!r} (the password comes "
                   f"from {PASSWORD_ENV})")
        raise StorageError(f"cannot use ClickHouse at {redact(dsn)!r}: {type(e).__name__}: {why}") from e


# ---------------------------------------------------------------------------------------------------
# The Bytewax sink


class _Partition(StatefulSinkPartition[WrittenEvent | Sequence[WrittenEvent], None]):
    def __init__(self, store: Store, run_id: str, batch_rows: int,
                 on_close: Callable[[Store], None] | None = None) -> None:
        self.store = store
        self.run_id = run_id
        self.batch_rows = batch_rows
        self.on_close = on_close
        self.buffers: dict[str, list[WrittenEvent]] = defaultdict(list)
        self.rows_written = 0

    def write_batch(self, values: list[WrittenEvent | Sequence[WrittenEvent]]) -> None:
        for v in values:
            for e in v if isinstance(v, (list, tuple)) else (v,):
                self.buffers[table_of(e)].append(e)
        for table in [t for t, rows in self.buffers.items() if len(rows) >= self.batch_rows]:
            self._flush(table)

    def _flush(self, table: str) -> None:
        rows = self.buffers.pop(table, [])
        if rows:
            self.store.insert(table, to_arrow(table, self.run_id, rows))
            self.rows_written += len(rows)

    def snapshot(self) -> None:
        # called at the end of every epoch, before its snapshot is committed: write everything now
        for table in sorted(self.buffers):
            self._flush(table)

    def close(self) -> None:
        self.snapshot()
        if self.on_close is not None:  # the flow reached the end of its input: every row is written
            self.on_close(self.store)


class ClickHouseSink(FixedPartitionedSink[WrittenEvent | Sequence[WrittenEvent], None]):
    """Write events (or sequences of events) to their tables, batched; items are ``(key, event)``.

    `on_close` is called with the store once the flow has ended normally and every row is written.
    """

    def __init__(self, dsn: str, run_id: str, batch_rows: int,
                 on_close: Callable[[Store], None] | None = None) -> None:
        self.dsn = dsn
        self.run_id = run_id
        self.batch_rows = batch_rows
        self.on_close = on_close

    def list_parts(self) -> list[str]:
        return ["clickhouse"]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Partition:
        store = Store.connect(self.dsn)
        store.init_schema()
        return _Partition(store, self.run_id, self.batch_rows, self.on_close)
