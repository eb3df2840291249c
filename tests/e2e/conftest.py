"""Helpers for running the ``salespulse`` console script as a user would.

Every test gets its own ``SALESPULSE_HOME`` under ``tmp_path``, so the embedded broker, ClickHouse
data and runtime.json of one test are never seen by another. The command runs in ``tmp_path`` as
its working directory (no ``.env`` from the checkout is read) with every ``SALESPULSE_*`` variable
of the caller's environment removed: these tests are about the embedded default.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from clickhouse_driver import Client

from schemas.settings import Settings
from streams.runtime.supervisor import RUNTIME_FILE, EmbeddedRuntime, pid_alive

# The console script installed next to the interpreter running the tests (the project's venv).
SALESPULSE = Path(sys.executable).parent / "salespulse"


@dataclass(frozen=True)
class CliResult:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        """For assertion messages: what ran and everything it printed."""
        return (
            f"salespulse {' '.join(self.args)} exited {self.returncode}\n"
            f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        )


@dataclass(frozen=True)
class Cli:
    """Runs ``salespulse`` with one home and one working directory."""

    home: Path
    cwd: Path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SALESPULSE_")}
        env["SALESPULSE_HOME"] = str(self.home)
        # Wide enough that rich never wraps a message (or a long tmp path) across lines.
        env["COLUMNS"] = "250"
        env.pop("FORCE_COLOR", None)
        env["NO_COLOR"] = "1"
        return env

    def run(self, *args: str, timeout: float = 120.0) -> CliResult:
        return self.run_with({}, *args, timeout=timeout)

    def run_with(self, extra_env: dict[str, str], *args: str, timeout: float = 120.0) -> CliResult:
        """``run`` with more environment variables (settings) for this one command."""
        completed = subprocess.run(
            [str(SALESPULSE), *args],
            cwd=self.cwd,
            env=self.env() | extra_env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return CliResult(tuple(args), completed.returncode, completed.stdout, completed.stderr)

    def popen(self, *args: str, stdout: Path, stderr: Path) -> subprocess.Popen[bytes]:
        """Started in its own session, like a foreground job: a terminal's Ctrl-C goes to its group."""
        with stdout.open("wb") as out, stderr.open("wb") as err:
            return subprocess.Popen(
                [str(SALESPULSE), *args],
                cwd=self.cwd,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    if not SALESPULSE.exists():
        pytest.fail(f"the salespulse console script is not installed at {SALESPULSE} (pip install -e .)")
    home = (tmp_path / "home").resolve()
    runner = Cli(home=home, cwd=tmp_path.resolve())
    yield runner
    # Whatever a test asserted, never leave a process of this home running for the next tests,
    # and say so: a leftover is a bug even in a test that does not look for one.
    leftovers = processes_of_home(home)
    for pid, _ in leftovers:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if leftovers:
        pytest.fail(f"processes of {home} were still running after the test (now killed): {leftovers}")


# ------------------------------------------------------------------------------ child processes


def _read_proc(pid: str, name: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:  # gone meanwhile, or not ours to read
        return b""


def processes_of_home(home: Path) -> list[tuple[int, str]]:
    """Live processes (pid, command line) started for ``home``: its path is on their command line
    (ClickHouse's --data) or they run with ``SALESPULSE_HOME`` set to it (every salespulse process
    and every child they start inherits that environment, the broker included)."""
    marker = str(home).encode()
    env_entry = b"SALESPULSE_HOME=" + marker
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        cmdline = _read_proc(entry.name, "cmdline")
        environ = _read_proc(entry.name, "environ")
        if marker in cmdline or env_entry in environ.split(b"\0"):
            pid = int(entry.name)
            if pid_alive(pid):
                found.append((pid, cmdline.replace(b"\0", b" ").decode(errors="replace").strip()))
    return found


def runtime_pids(home: Path) -> dict[str, int]:
    """The pids runtime.json lists right now (the owner as ``"salespulse"``); empty when absent."""
    try:
        content = json.loads((home / RUNTIME_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):  # absent, or caught mid-replace
        return {}
    return {"salespulse": int(content["pid"]), **{k: int(v) for k, v in content["processes"].items()}}


def wait_until_dead(pids: Iterable[int], timeout: float) -> list[int]:
    """The pids still alive after ``timeout`` seconds (empty when all are gone)."""
    deadline = time.monotonic() + timeout
    alive = [pid for pid in pids if pid_alive(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if pid_alive(pid)]
    return alive


def assert_nothing_left(home: Path, seen_pids: Iterable[int]) -> None:
    """No pid runtime.json listed is alive, no process of ``home`` is left, runtime.json is gone."""
    # The command has exited, so its children must be gone already; a short grace only covers the
    # kernel reaping them.
    alive = wait_until_dead(seen_pids, timeout=2.0)
    assert alive == [], f"pids listed in runtime.json still alive: {alive}"
    leftovers = processes_of_home(home)
    assert leftovers == [], f"processes of {home} still running: {leftovers}"
    assert not (home / RUNTIME_FILE).exists(), "runtime.json outlived the runtime"


# ---------------------------------------------------------------------------------- ClickHouse


@contextmanager
def clickhouse_of(home: Path, database: str = "salespulse") -> Iterator[Query]:
    """The home's embedded ClickHouse (its data as the CLI left it), started by this process."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        home=home,
        clickhouse_host=None,
        clickhouse_database=database,
    )
    with EmbeddedRuntime(settings, handle_signals=False, need_broker=False) as runtime:
        client = Client(runtime.clickhouse_host, port=runtime.clickhouse_port)
        try:
            yield Query(client, database)
        finally:
            # An open connection makes the embedded server's stop take seconds instead of ~0.3 s.
            client.disconnect()


@dataclass(frozen=True)
class Query:
    client: Client
    database: str

    def rows(self, sql: str) -> list[tuple[object, ...]]:
        return list(self.client.execute(sql.format(db=self.database)))

    def scalar(self, sql: str) -> int:
        return int(self.rows(sql)[0][0])


class WebhookReceiver:
    """A local HTTP receiver for alert webhooks: records every POST as (body, signature header)."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, str | None]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.received.append((body, self.headers.get("X-Salespulse-Signature")))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    @property
    def bodies(self) -> list[Any]:
        return [json.loads(body) for body, _ in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    try:
        yield receiver
    finally:
        receiver.close()
