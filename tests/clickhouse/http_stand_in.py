"""A stand-in for a ClickHouse server's HTTP interface, backed by chDB: the real engine behind a thin handler.

No ClickHouse server can run on the test machines (Debian's is too old for clickhouse-connect), so the
tests of the server DSN talk HTTP to this instead: every statement runs on chDB, the same engine as a
server, and every request is written to a log (one JSON line each) so the tests can check exactly what we
send. It implements only what clickhouse-connect uses: the query in the body or in ``query=``, query
parameters (``param_<name>``), ``database=``, the output format from a trailing ``FORMAT``, and inserts
whose body is data in the format the ``INSERT ... FORMAT`` names.

Run: ``STAND_IN_PASSWORD=... python tests/clickhouse/http_stand_in.py DB_DIR LOG_FILE``; prints the port it
listens on. Requests must authenticate (HTTP basic) with that password; the log records the user and
whether the password matched, never the password.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import tempfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from chdb import session as chdb_session

_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.I)
_INSERT_PREFIX = re.compile(rb"^\s*INSERT\s+INTO\s[^\n]*?\bFORMAT\s+\w+[ \t]*\r?\n", re.I)
_INSERT = re.compile(r"^\s*INSERT\s+INTO\s+(.+?)\s+FORMAT\s+(\w+)\s*$", re.I | re.S)


def _decode(body: bytes, encoding: str | None) -> bytes:
    if not encoding or encoding == "identity":
        return body
    if encoding == "gzip":
        import gzip

        return gzip.decompress(body)
    if encoding == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    if encoding == "lz4":
        import lz4.frame

        return bytes(lz4.frame.decompress(body))
    raise ValueError(f"content encoding {encoding!r} not supported by the stand-in")


def serve(db_dir: str, log_path: str) -> None:
    expected_password = os.environ["STAND_IN_PASSWORD"]
    sess = chdb_session.Session(db_dir)
    lock = threading.Lock()
    log = open(log_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - open for the server's life
    spool = Path(tempfile.mkdtemp(prefix="ch-stand-in-"))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # the health check: GET /ping
            self._reply(200, b"Ok.\n", "TabSeparated")

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            q = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            body = _decode(self._body(), self.headers.get("Content-Encoding"))
            if "query" in q:
                sql, data = q["query"], body
            elif m := _INSERT_PREFIX.match(body):  # an insert: the statement, a newline, then the data
                sql, data = m.group(0).decode("utf-8").strip(), body[m.end():]
            else:
                sql, data = body.decode("utf-8"), b""
            params = {k[len("param_"):]: v for k, v in q.items() if k.startswith("param_")}
            auth = self.headers.get("Authorization", "")
            basic = base64.b64decode(auth[6:]).decode() if auth.startswith("Basic ") else ""
            user, _, password = basic.partition(":")
            ok = bool(user) and password == expected_password
            # the log says whether the password matched, never what it was
            log.write(json.dumps({"path": url.path, "params": q, "sql": sql, "data_bytes": len(data), "user": user,
                                  "password_ok": ok,
                                  "headers": {k: v for k, v in self.headers.items() if k != "Authorization"}})
                      + "\n")
            if not ok:
                self._reply(516, f"Code: 516. DB::Exception: {user}: Authentication failed. "
                                 "(AUTHENTICATION_FAILED)\n".encode(), "TabSeparated")
                return
            try:
                out, fmt = self._run(sql, data, params, q.get("database"))
            except Exception as e:  # noqa: BLE001 - every engine error goes back to the client, as a server does
                self._reply(500, f"Code: 1000. DB::Exception: {e}\n".encode(), "TabSeparated")
                return
            self._reply(200, out, fmt)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() != "chunked":  # inserts stream in chunks
                return self.rfile.read(int(self.headers.get("Content-Length", "0")))
            parts = []
            while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(parts)

        def _run(self, sql: str, data: bytes, params: dict[str, str], database: str | None) -> tuple[bytes, str]:
            with lock:
                if database:
                    sess.query(f"USE {database}")
                if m := _INSERT.match(sql):
                    target, fmt = m.group(1), m.group(2)
                    f = spool / f"{uuid.uuid4().hex}.{fmt.lower()}"
                    f.write_bytes(data)
                    try:
                        sess.query(f"INSERT INTO {target} SELECT * FROM file('{f}', '{fmt}')", "TabSeparated")
                    finally:
                        f.unlink()
                    return b"", "TabSeparated"
                m = _FORMAT.search(sql)
                fmt = m.group(1) if m else "TabSeparated"
                text = sql[: m.start()] if m else sql
                res = sess.query(text, fmt, params=params or None)
                return res.bytes(), fmt

        def _reply(self, status: int, payload: bytes, fmt: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=UTF-8")
            self.send_header("X-ClickHouse-Format", fmt)
            self.send_header("X-ClickHouse-Timezone", "UTC")
            self.send_header("X-ClickHouse-Query-Id", str(uuid.uuid4()))
            self.send_header("X-ClickHouse-Summary", json.dumps({"read_rows": "0", "written_rows": "0"}))
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
