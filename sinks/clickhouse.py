"""The ClickHouse store: one DSN, embedded chDB by default, a server unchanged.

`Store` wraps a clickhouse-connect client (one per process and DSN; worker threads share it behind a
lock), applies the DDL in ``sql/`` idempotently, and inserts Arrow tables. `ClickHouseSink` is the
Bytewax sink: it buffers rows per table and writes large column-oriented batches, flushing before
every recovery snapshot so nothing acknowledged is held only in memory.

Passwords never appear in logs or errors: DSNs are shown through `redact`, and a server password can
come from ``HEADRACE_CLICKHOUSE_PASSWORD`` instead of the DSN.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
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
    def connect(cls, dsn: str) -> Store:
        """Return the process's store for `dsn`, opening it (and creating the database) if needed."""
        with cls._lock:
            if dsn in cls._open:
                return cls._open[dsn]
            if dsn.startswith("chdb:"):
                for other in list(cls._open.values()):  # chDB serves one path per process at a time
                    if other.dsn.startswith("chdb:"):
                        other.close()
                store = cls(dsn, _open_chdb(dsn))
            else:
                store = cls(dsn, _open_server(dsn))
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

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run `sql` and return rows as dicts keyed by column name."""
        with self.lock:
            res = self.client.query(sql, parameters=parameters)
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


def _in_use_error(path: str) -> StorageError:
    return StorageError(
        f"the embedded database at {path!r} is in use by another process (an embedded ClickHouse belongs to "
        "one process). Wait for that run to finish, or point storage.dsn at a ClickHouse server "
        "(see docs/deployment.md)")


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


def _open_chdb(dsn: str) -> Any:
    path = dsn[len("chdb://"):]
    if path.startswith("/"):
        Path(path).mkdir(parents=True, exist_ok=True)
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


def _open_server(dsn: str) -> Any:
    parts = urlsplit(dsn)
    database = parts.path.strip("/") or DATABASE
    password = unquote(parts.password) if parts.password else os.environ.get(PASSWORD_ENV, "")
    try:
        client = clickhouse_connect.get_client(
            host=parts.hostname, port=parts.port or (8443 if parts.scheme == "https" else 8123),
            username=unquote(parts.username or "default"), password=password,
            secure=parts.scheme == "https", database="default")
        client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
        client.close()
        return clickhouse_connect.get_client(
            host=parts.hostname, port=parts.port or (8443 if parts.scheme == "https" else 8123),
            username=unquote(parts.username or "default"), password=password,
            secure=parts.scheme == "https", database=database)
    except Exception as e:
        why = redact(str(e).strip().splitlines()[0] if str(e).strip() else "")
        if password:
            why = why.replace(password, "***")
        if "Authentication failed" in why or "AUTHENTICATION_FAILED" in why:
            why = (f"authentication failed for user {unquote(parts.username or 'default')!r} (the password comes "
                   f"from {PASSWORD_ENV})")
        raise StorageError(f"cannot use ClickHouse at {redact(dsn)!r}: {type(e).__name__}: {why}") from e


# ---------------------------------------------------------------------------------------------------
# The Bytewax sink


class _Partition(StatefulSinkPartition[WrittenEvent | Sequence[WrittenEvent], None]):
    def __init__(self, store: Store, run_id: str, batch_rows: int) -> None:
        self.store = store
        self.run_id = run_id
        self.batch_rows = batch_rows
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


class ClickHouseSink(FixedPartitionedSink[WrittenEvent | Sequence[WrittenEvent], None]):
    """Write events (or sequences of events) to their tables, batched; items are ``(key, event)``."""

    def __init__(self, dsn: str, run_id: str, batch_rows: int) -> None:
        self.dsn = dsn
        self.run_id = run_id
        self.batch_rows = batch_rows

    def list_parts(self) -> list[str]:
        return ["clickhouse"]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Partition:
        store = Store.connect(self.dsn)
        store.init_schema()
        return _Partition(store, self.run_id, self.batch_rows)
