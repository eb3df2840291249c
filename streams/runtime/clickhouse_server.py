"""A real ClickHouse server (TCP + HTTP on 127.0.0.1) run from the ``chdb-core`` wheel.

Run as ``python -m streams.runtime.clickhouse_server --data DIR [--ports-file FILE]``. When the
server accepts connections it prints one JSON line, ``{"tcp_port": .., "http_port": .., "pid": ..}``,
on stdout (and writes the same object to ``--ports-file``, atomically); it stops cleanly on SIGTERM
or SIGINT, and on SIGTERM when its parent dies.

This is the only module that imports chdb, and only inside :func:`serve`: the supervisor imports
:class:`ServerEndpoint` from here without paying for chdb's 555 MB library.

How chdb becomes a server (see shared/recipes/embedded-clickhouse.md): only the one-shot
``_chdb.query(..., path=DIR)`` can open listeners, they live only while that call runs, and their
settings come from ``./config.xml``. So the call runs in a thread and ends with an endless, cheap
keepalive statement that :meth:`ChdbServer.stop` kills over HTTP. ``_chdb`` is private API: the
project pins chdb-core.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import fcntl
import http.client
import importlib
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Protocol

log = logging.getLogger(__name__)

LISTEN_HOST = "127.0.0.1"
# Ports 0: the OS picks them (the default). Fixed ports let a restarted server be found where the
# old one was (the fault-injection tests stop ClickHouse and start it again under its clients).
CONFIG_XML = (
    "<clickhouse>"
    f"<listen_host>{LISTEN_HOST}</listen_host><tcp_port>{{tcp_port}}</tcp_port><http_port>{{http_port}}</http_port>"
    "</clickhouse>\n"
)
# The keepalive statement carries this alias so that KILL QUERY can find it and nothing else.
KEEPALIVE_MARKER = "embedded_keepalive"
_PR_SET_PDEATHSIG = 1
_POLL_SECONDS = 0.01


class ServerStartError(RuntimeError):
    """The server did not come up; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class ServerEndpoint:
    """What the server announces once it accepts connections (its one stdout line)."""

    tcp_port: int
    http_port: int
    pid: int

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServerEndpoint:
        raw = json.loads(text)
        return cls(tcp_port=int(raw["tcp_port"]), http_port=int(raw["http_port"]), pid=int(raw["pid"]))


def write_config(data_dir: Path, tcp_port: int = 0, http_port: int = 0) -> Path:
    """Write the listen settings chdb reads from ``./config.xml`` (loopback only; port 0: OS-chosen)."""
    config = data_dir / "config.xml"
    config.write_text(CONFIG_XML.format(tcp_port=int(tcp_port), http_port=int(http_port)), encoding="utf-8")
    return config


def _sql_string(value: str) -> str:
    """A ClickHouse single-quoted string literal (paths may hold quotes or backslashes)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _server_sql(ports_tsv: Path) -> str:
    # getServerPort() only answers inside the call that opened the listeners, so that same call
    # writes the bound ports to a file the main thread polls for.
    return (
        "SYSTEM START LISTEN QUERIES ALL; "
        f"INSERT INTO FUNCTION file({_sql_string(str(ports_tsv))}, 'TSV', 'tcp UInt16, http UInt16') "
        "SELECT getServerPort('tcp_port'), getServerPort('http_port'); "
        f"SELECT sleepEachRow(0.2) AS {KEEPALIVE_MARKER} FROM numbers(1000000000) "
        "SETTINGS max_block_size = 1, function_sleep_max_microseconds_per_block = 0 FORMAT Null"
    )


def _kill_keepalive_sql() -> str:
    return (
        f"KILL QUERY WHERE query LIKE '%AS {KEEPALIVE_MARKER}%' AND query NOT LIKE 'KILL%' SYNC FORMAT Null"
    )


def lock_holder(data_dir: Path) -> int | None:
    """The pid of the server holding ``data_dir``'s lock, or None when it is free.

    ClickHouse takes an exclusive ``flock`` on ``<data_dir>/status`` and writes ``PID: n`` in it.
    Used only to explain a failed start, so a race with a starting server does no harm.
    """
    status = data_dir / "status"
    try:
        fd = os.open(status, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
        return _pid_from_status(status) or -1
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _pid_from_status(status: Path) -> int | None:
    for line in status.read_text(encoding="utf-8", errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "PID" and value.strip().isdigit():
            return int(value.strip())
    return None


class ChdbServer:
    """One chdb server on one data directory, in this process. Use :func:`serve` to run it."""

    def __init__(self, data_dir: Path, tcp_port: int = 0, http_port: int = 0) -> None:
        self.data_dir = data_dir
        self.tcp_port = tcp_port
        self.http_port = http_port
        self._ports_tsv = data_dir / "listen_ports.tsv"
        self._thread: threading.Thread | None = None
        self._endpoint: ServerEndpoint | None = None

    def start(self, timeout: float) -> ServerEndpoint:
        """Open the listeners and return the bound ports; raises :class:`ServerStartError`."""
        chdb_query = _import_chdb_query()
        # chdb reads the listen settings from the working directory's config.xml.
        os.chdir(self.data_dir)
        write_config(self.data_dir, self.tcp_port, self.http_port)
        self._ports_tsv.unlink(missing_ok=True)
        sql = _server_sql(self._ports_tsv)

        def run_server() -> None:
            # Errors in this call (a held lock, a bad config) go to stderr and the call simply
            # returns: the main thread notices because the ports file never appears.
            chdb_query(sql, "TabSeparated", path=str(self.data_dir))

        self._thread = threading.Thread(target=run_server, name="chdb-server", daemon=True)
        self._thread.start()
        self._endpoint = self._wait_for_ports(timeout)
        return self._endpoint

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _wait_for_ports(self, timeout: float) -> ServerEndpoint:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ports = self._read_ports()
            if ports is not None:
                return ServerEndpoint(tcp_port=ports[0], http_port=ports[1], pid=os.getpid())
            if not self.is_alive():
                raise ServerStartError(self._why_it_ended())
            time.sleep(_POLL_SECONDS)
        raise ServerStartError(f"ClickHouse did not open its ports within {timeout:.0f}s ({self.data_dir})")

    def _read_ports(self) -> tuple[int, int] | None:
        try:
            fields = self._ports_tsv.read_text(encoding="ascii").split()
        except FileNotFoundError:
            return None
        # The file can be seen half-written: wait for both numbers.
        if len(fields) == 2 and all(f.isdigit() and int(f) > 0 for f in fields):
            return int(fields[0]), int(fields[1])
        return None

    def _why_it_ended(self) -> str:
        holder = lock_holder(self.data_dir)
        if holder is not None:
            who = f"pid {holder}" if holder > 0 else "another process"
            return (
                f"ClickHouse data dir {self.data_dir} is locked by another server ({who}): "
                "Cannot lock file <data_dir>/status. Stop that server or use another data dir "
                "(another SALESPULSE_HOME)."
            )
        return f"ClickHouse ended before opening its ports; its error is on stderr above ({self.data_dir})"

    def stop(self, timeout: float) -> bool:
        """End the keepalive query so the call returns and the listeners close; True once joined."""
        if self._thread is None:
            return True
        if self._endpoint is not None and self._thread.is_alive():
            self._kill_keepalive(self._endpoint.http_port, timeout)
        # Exiting the interpreter while the chdb call still runs has aborted the process (libc++
        # assertion), so wait for the thread.
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _kill_keepalive(self, http_port: int, timeout: float) -> None:
        connection = http.client.HTTPConnection(LISTEN_HOST, http_port, timeout=timeout)
        try:
            connection.request("POST", "/", body=_kill_keepalive_sql().encode())
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                log.error("KILL QUERY answered HTTP %d: %s", response.status, body.decode(errors="replace"))
        except OSError as exc:
            # The thread may have ended on its own between the check and the request.
            if self.is_alive():
                log.error("KILL QUERY over HTTP failed: %s", exc)
        finally:
            connection.close()


def _import_chdb_query() -> ChdbQuery:
    # `import chdb` opens an in-memory connection that reads ./config.xml; import it from an
    # empty directory so a stray config.xml (or ours, with its listen settings) plays no part.
    cwd = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="chdb-import-") as empty_dir:
        os.chdir(empty_dir)
        try:
            # Through importlib: chdb's `_chdb` is an extension module that mypy cannot see into.
            chdb_native = importlib.import_module("chdb._chdb")
        finally:
            os.chdir(cwd)
    query: ChdbQuery = chdb_native.query
    return query


class ChdbQuery(Protocol):
    """Type of ``chdb._chdb.query`` (the module ships no type information)."""

    def __call__(self, sql: str, fmt: str, *, path: str) -> object: ...


def die_with_parent() -> None:
    """Ask the kernel for SIGTERM when our parent dies, so a killed launcher leaves no server behind."""
    parent = os.getppid()
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:
        # The parent died before the request took effect: no signal will come.
        os.kill(os.getpid(), signal.SIGTERM)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def serve(
    data_dir: Path,
    ports_file: Path | None,
    start_timeout: float,
    stop_timeout: float,
    tcp_port: int = 0,
    http_port: int = 0,
) -> int:
    """Run the server until SIGTERM/SIGINT; returns the process exit status."""
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("%s received: stopping ClickHouse", signal.Signals(signum).name)
        stop_requested.set()

    # Handlers first, so a stop request during start-up is honoured once the ports are known.
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    data_dir.mkdir(parents=True, exist_ok=True)
    if ports_file is not None:
        ports_file.unlink(missing_ok=True)
    server = ChdbServer(data_dir, tcp_port, http_port)
    try:
        endpoint = server.start(start_timeout)
    except ServerStartError as exc:
        log.error("%s", exc)
        return 1
    if ports_file is not None:
        _write_atomically(ports_file, endpoint.to_json() + "\n")
    # The one stdout line is this program's protocol with its launcher.
    sys.stdout.write(endpoint.to_json() + "\n")
    sys.stdout.flush()
    log.info(
        "ClickHouse listening on %s: tcp %d, http %d", LISTEN_HOST, endpoint.tcp_port, endpoint.http_port
    )

    while not stop_requested.wait(0.2):
        if not server.is_alive():
            log.error("ClickHouse's server call ended unexpectedly; see stderr above")
            return 1
    if not server.stop(stop_timeout):
        log.error("ClickHouse did not stop within %.0fs; exiting without waiting", stop_timeout)
        # A normal interpreter exit with the chdb call still running can abort; leave at once.
        os._exit(1)
    if ports_file is not None:
        ports_file.unlink(missing_ok=True)
    log.info("ClickHouse stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streams.runtime.clickhouse_server",
        description="Run an embedded ClickHouse server (chdb) on 127.0.0.1 with OS-chosen ports.",
    )
    parser.add_argument("--data", type=Path, required=True, help="data directory (created if missing)")
    parser.add_argument("--ports-file", type=Path, help="also write the JSON endpoint line to this file")
    parser.add_argument("--start-timeout", type=float, default=60.0, help="seconds to wait for the ports")
    parser.add_argument("--stop-timeout", type=float, default=20.0, help="seconds to wait for a clean stop")
    parser.add_argument("--tcp-port", type=int, default=0, help="native-protocol port (0: OS-chosen)")
    parser.add_argument("--http-port", type=int, default=0, help="HTTP port (0: OS-chosen)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s clickhouse_server: %(message)s",
    )
    die_with_parent()
    data_dir: Path = args.data.resolve()
    ports_file: Path | None = args.ports_file.resolve() if args.ports_file is not None else None
    return serve(data_dir, ports_file, args.start_timeout, args.stop_timeout, args.tcp_port, args.http_port)


if __name__ == "__main__":
    sys.exit(main())
