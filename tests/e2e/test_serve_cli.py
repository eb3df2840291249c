"""`salespulse serve` and `salespulse tokens` as a user runs them: the service starts the embedded
runtime and a worker; `tokens create`, `kpis` and `import` in a second terminal use that runtime; a
dialer-like client posts calls with its token and sees them in `kpis`; Ctrl-C stops everything."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest

from .conftest import Cli, assert_nothing_left, runtime_pids

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], process_log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, f"serve exited:\n{process_log.read_text(errors='replace')}"
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"serve not ready:\n{process_log.read_text(errors='replace')}"
        time.sleep(0.3)


def listening_on(port: int) -> set[str]:
    """Addresses with a listening TCP socket on ``port`` (IPv4, from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text(encoding="ascii").splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address_hex, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            found.add(".".join(str(b) for b in bytes.fromhex(address_hex)[::-1]))
    return found


def test_serve_tokens_and_a_second_terminal_on_the_same_home(cli: Cli, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    stdout, stderr = tmp_path / "serve.out", tmp_path / "serve.err"
    process = cli.popen("serve", "--port", str(port), stdout=stdout, stderr=stderr)
    try:
        wait_ready(url, process, stderr)
        pids = runtime_pids(cli.home)
        assert {"broker", "clickhouse", "worker"} <= pids.keys(), pids
        assert listening_on(port) == {"127.0.0.1"}  # loopback by default

        # A second terminal: `tokens create` attaches to the running runtime.
        created = cli.run("tokens", "create", "--name", "dialer", "--scopes", "events:write")
        assert created.returncode == 0, created.describe()
        token = created.stdout.strip().splitlines()[-1]
        assert token.startswith("sp_") and token not in created.stderr
        phone = cli.run_with(
            {"SALESPULSE_INGEST_PUBLIC_URL": "https://field.example.com"},
            "tokens", "create", "--name", "ana phone", "--scopes", "checkin", "--rep", "rep-ana",
        )  # fmt: skip
        assert phone.returncode == 0, phone.describe()
        lines = phone.stdout.rstrip("\n").splitlines()
        phone_token = lines[-1]
        assert any(line == f"https://field.example.com/checkin#token={phone_token}" for line in lines)
        assert any("▀" in line or "█" in line for line in lines), "no QR code printed"
        assert runtime_pids(cli.home) == pids, "a second runtime was started"

        now = datetime.now(UTC).replace(microsecond=0)
        calls = [
            {
                "event_id": f"dialer-{i}",
                "type": "call",
                "rep_id": f"rep-{i % 3}",
                "occurred_at": (now - timedelta(minutes=i)).isoformat(),
                "outcome": "connected",
            }
            for i in range(30)
        ]
        answer = httpx.post(f"{url}/v1/events", json=calls, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200 and answer.json()["accepted"] == 30, answer.text
        assert httpx.post(f"{url}/v1/events", json=calls).status_code == 401

        listed = cli.run("tokens", "list", "--format", "json")
        assert listed.returncode == 0, listed.describe()
        tokens = orjson.loads(listed.stdout)
        assert [(t["name"], t["scopes"], t["rep_id"]) for t in tokens] == [
            ("dialer", ["events:write"], None),
            ("ana phone", ["checkin"], "rep-ana"),
        ]
        assert token not in listed.output and phone_token not in listed.output

        # `kpis` in the second terminal sees the numbers the running worker stored.
        deadline = time.monotonic() + 60
        while True:
            shown = cli.run("kpis", "--format", "json")
            assert shown.returncode == 0, shown.describe()
            rows = orjson.loads(shown.stdout)
            if sum(row["calls"] for row in rows) == 30:
                break
            assert time.monotonic() < deadline, shown.stdout
            time.sleep(0.5)
        assert runtime_pids(cli.home) == pids

        # `replay` in the second terminal publishes to the running broker and waits for its worker.
        emails = tmp_path / "emails.jsonl"
        emails.write_bytes(
            b"".join(
                orjson.dumps({"event_id": f"mail-{i}", "type": "email", "rep_id": "rep-0",
                              "occurred_at": now.isoformat()}) + b"\n"
                for i in range(5)
            )
        )  # fmt: skip
        replayed = cli.run("replay", str(emails))
        assert replayed.returncode == 0, replayed.describe()
        shown = cli.run("kpis", "--format", "json")
        assert sum(row["emails"] for row in orjson.loads(shown.stdout)) == 5, shown.describe()
        assert runtime_pids(cli.home) == pids

        revoked = cli.run("tokens", "revoke", tokens[0]["token_id"])
        assert revoked.returncode == 0, revoked.describe()
        deadline = time.monotonic() + 30
        while (
            httpx.post(
                f"{url}/v1/events", json=calls[:1], headers={"Authorization": f"Bearer {token}"}
            ).status_code
            != 401
        ):
            assert time.monotonic() < deadline, "the revoked token still works"
            time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGINT)
        status = process.wait(timeout=60)
    assert status == 130, stderr.read_text(errors="replace")
    assert token not in stdout.read_text() + stderr.read_text()
    for log in (cli.home / "logs").glob("*.log"):
        assert token not in log.read_text(errors="replace"), log
    assert_nothing_left(cli.home, pids.values())


def test_a_taken_port_fails_at_once_and_starts_nothing(cli: Cli) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = cli.run("serve", "--port", str(port), timeout=60)
    assert result.returncode == 2, result.describe()
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert not (cli.home / "clickhouse").exists()  # no server was started
