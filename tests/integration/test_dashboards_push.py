"""``salespulse dashboards push`` against a local stand-in for Grafana's HTTP API (folders,
dashboards, data sources, bearer tokens) on 127.0.0.1: every board lands in the folder,
overwriting; a bad token, an unreachable host and missing data sources are told plainly."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from streams.cli_dashboards import dashboards_app
from streams.dashboards import build_all

pytestmark = pytest.mark.integration

TOKEN = "glsa_test-token"


@dataclass
class FakeGrafana:
    datasources: set[str] = field(default_factory=lambda: {"salespulse-clickhouse", "salespulse-prometheus"})
    folders: list[dict[str, Any]] = field(default_factory=list)
    saved: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    state = FakeGrafana()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def reply(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def authorised(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {TOKEN}":
                return True
            self.reply(401, {"message": "invalid API key"})
            return False

        def do_GET(self) -> None:
            if not self.authorised():
                return
            if self.path.startswith("/api/folders"):
                self.reply(200, state.folders)
            elif self.path.startswith("/api/datasources/uid/"):
                uid = self.path.rsplit("/", 1)[1]
                if uid in state.datasources:
                    self.reply(200, {"uid": uid})
                else:
                    self.reply(404, {"message": "Data source not found"})
            else:
                self.reply(404, {"message": "not found"})

        def do_POST(self) -> None:
            if not self.authorised():
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path == "/api/folders":
                folder = {"uid": f"f{len(state.folders) + 1}", "title": body["title"]}
                state.folders.append(folder)
                self.reply(200, folder)
            elif self.path == "/api/dashboards/db":
                state.saved.append(body)
                self.reply(200, {"status": "success", "uid": body["dashboard"]["uid"]})
            else:
                self.reply(404, {"message": "not found"})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def push(*args: str) -> Any:
    app = typer.Typer()
    app.add_typer(dashboards_app, name="dashboards")
    return CliRunner().invoke(app, ["dashboards", "push", *args], env={"COLUMNS": "250"})


def test_every_board_is_pushed_into_its_folder_overwriting(grafana: FakeGrafana) -> None:
    for _ in range(2):
        result = push("--url", grafana.url, "--token", TOKEN)
        assert result.exit_code == 0, result.output
    assert [folder["title"] for folder in grafana.folders] == ["salespulse"]  # created once, then reused
    boards = build_all()
    assert [saved["dashboard"]["uid"] for saved in grafana.saved] == [*boards, *boards]
    assert all(saved["overwrite"] is True and saved["folderUid"] == "f1" for saved in grafana.saved)
    assert grafana.saved[0]["dashboard"] == boards[grafana.saved[0]["dashboard"]["uid"]]
    assert "pushed salespulse-rep" in result.output and "warning" not in result.output


def test_a_bad_token_is_told_as_such(grafana: FakeGrafana) -> None:
    result = push("--url", grafana.url, "--token", "wrong")
    assert result.exit_code == 1
    assert "Grafana refused the token (401)" in result.output
    assert "Traceback" not in result.output and grafana.saved == []


def test_an_unreachable_grafana_is_told_as_such() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = push("--url", f"http://127.0.0.1:{port}", "--token", TOKEN, "--timeout", "3")
    assert result.exit_code == 1
    assert f"cannot reach Grafana at http://127.0.0.1:{port}" in result.output


def test_missing_datasources_are_warned_about(grafana: FakeGrafana) -> None:
    grafana.datasources = {"salespulse-prometheus"}
    result = push("--url", grafana.url, "--token", TOKEN)
    assert result.exit_code == 0, result.output
    assert "no data source with uid salespulse-clickhouse" in result.output


def test_a_url_without_a_scheme_is_refused() -> None:
    result = push("--url", "localhost:3000", "--token", TOKEN)
    assert result.exit_code == 2
    assert "is not an http:// or https:// address" in result.output
