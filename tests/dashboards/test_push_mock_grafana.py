"""`push` against a MOCK Grafana HTTP server on localhost that records every request it gets."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from headrace.dashboards import DASHBOARD_DIR, TOKEN_ENV, DashboardError, Pushed, load_dashboards, push

TOKEN = "glsa_mock-token-for-tests-only"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class MockGrafana:
    """A mock of Grafana's ``POST /api/dashboards/db``: records requests, answers like Grafana 11."""

    url: str
    requests: list[Recorded] = field(default_factory=list)
    status: int = 200  # what to answer
    answer: dict[str, Any] | None = None


@pytest.fixture
def mock_grafana() -> Iterator[MockGrafana]:
    mock = MockGrafana(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server's naming
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"null")
            mock.requests.append(Recorded("POST", self.path, dict(self.headers.items()), body))
            if mock.status == 200:
                uid = body["dashboard"]["uid"]
                reply = mock.answer or {"id": 7, "uid": uid, "url": f"/d/{uid}/x", "status": "success",
                                        "version": 3, "slug": "x"}
            else:
                reply = mock.answer or {"message": "mock refusal", "status": "version-mismatch"}
            data = json.dumps(reply).encode()
            self.send_response(mock.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # keep the test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    mock.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield mock
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_push_posts_every_dashboard_with_overwrite_and_the_bearer_token(mock_grafana: MockGrafana) -> None:
    expected = load_dashboards(DASHBOARD_DIR)

    pushed = push(DASHBOARD_DIR, mock_grafana.url, TOKEN)

    assert [(r.method, r.path) for r in mock_grafana.requests] == [("POST", "/api/dashboards/db")] * len(expected)
    for req, dash in zip(mock_grafana.requests, expected):
        assert req.headers["Authorization"] == f"Bearer {TOKEN}"
        assert req.headers["Content-Type"].startswith("application/json")
        assert req.body["overwrite"] is True
        assert req.body["dashboard"]["uid"] == dash["uid"]
        assert req.body["dashboard"]["id"] is None  # matched by uid, never by a database id
        sent = {k: v for k, v in req.body["dashboard"].items() if k != "id"}
        assert sent == {k: v for k, v in dash.items() if k != "id"}
        assert "folderUid" not in req.body
    assert pushed == [Pushed(uid=d["uid"], title=d["title"], version=3, url=f"/d/{d['uid']}/x", status="success")
                      for d in expected]


def test_push_reads_the_token_from_the_environment_and_honours_a_sub_path_and_folder(
        mock_grafana: MockGrafana, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)

    push(DASHBOARD_DIR, mock_grafana.url + "/grafana", folder_uid="trading")

    assert {r.path for r in mock_grafana.requests} == {"/grafana/api/dashboards/db"}
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in mock_grafana.requests)
    assert all(r.body["folderUid"] == "trading" for r in mock_grafana.requests)


def test_push_without_a_token_fails_before_sending_anything(
        mock_grafana: MockGrafana, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(DashboardError, match=TOKEN_ENV):
        push(DASHBOARD_DIR, mock_grafana.url)
    assert mock_grafana.requests == []


def test_a_refused_dashboard_is_named_and_the_token_never_appears_in_errors_or_logs(
        mock_grafana: MockGrafana, caplog: pytest.LogCaptureFixture) -> None:
    mock_grafana.status = 412
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DashboardError) as info:
        push(DASHBOARD_DIR, mock_grafana.url.replace("http://", "http://admin:hunter2@"), TOKEN)
    message = str(info.value)
    first = load_dashboards(DASHBOARD_DIR)[0]["uid"]  # pushed in file name order
    assert repr(first) in message and "412" in message and "mock refusal" in message
    assert len(mock_grafana.requests) == 1  # stops at the first refusal
    assert mock_grafana.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"  # token wins over URL user
    for text in (message, caplog.text):
        assert TOKEN not in text and "hunter2" not in text


def test_a_grafana_that_cannot_be_reached_is_a_dashboard_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DashboardError, match="cannot reach grafana"):
        push(DASHBOARD_DIR, f"http://127.0.0.1:{port}", TOKEN, timeout_s=2.0)


def test_a_broken_dashboard_file_is_named(tmp_path: Path, mock_grafana: MockGrafana) -> None:
    (tmp_path / "bad.json").write_text('{"uid": "x", "title": ')
    with pytest.raises(DashboardError, match=r"bad\.json"):
        push(tmp_path, mock_grafana.url, TOKEN)
    assert mock_grafana.requests == []


def test_cli_dashboards_push_to_a_mock_grafana_sends_the_token_from_the_environment(
        mock_grafana: MockGrafana, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from headrace.cli import app

    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    res = CliRunner().invoke(app, ["dashboards", "push", "--url", mock_grafana.url, "--json"])
    assert res.exit_code == 0, res.output
    assert [p["uid"] for p in json.loads(res.stdout)] == [d["uid"] for d in load_dashboards(DASHBOARD_DIR)]
    assert [(r.method, r.path) for r in mock_grafana.requests] == [("POST", "/api/dashboards/db")] * len(
        load_dashboards(DASHBOARD_DIR))
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in mock_grafana.requests)
    assert TOKEN not in res.output
