"""The embedded runtime: the broker and ClickHouse as child processes that never outlive us.

:class:`EmbeddedRuntime` starts what the settings leave unconfigured (the Tansu broker when
``kafka_bootstrap`` is None, ClickHouse when ``clickhouse_host`` is None) and hands out a copy of
the settings pointing at the live endpoints, so workers and clients get a host and a port and never
know which kind of server they talk to.

Every child is a :class:`ManagedProcess`: the kernel sends it SIGTERM when we die (even by
``kill -9``), and a stop is SIGTERM, a grace period, then SIGKILL. While a runtime runs, SIGINT and
SIGTERM to this process unwind the main thread (KeyboardInterrupt / SystemExit), so the ``with``
block's exit stops everything in order.

Layout of ``settings.home``: ``clickhouse/`` (ClickHouse data, kept between runs), ``logs/`` (one
log per child, appended), ``runtime.json`` (endpoints and pids, only while running) and
``runtime.lock`` (held while running).

One home, one runtime: a second process on a home whose runtime is running *attaches* to it (the
embedded servers are shared, nothing more is started, and its stop stops nothing), so `kpis` or
`import` in a second terminal use the servers of a running `serve`, `demo` or `worker`. Commands
that must own their servers (the demo resets its database) pass ``attach=False`` and fail with
:class:`HomeInUseError` instead.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, TYPE_CHECKING, Any, Self, TypeVar

from clickhouse_driver import Client

from schemas.settings import Settings
from streams.runtime.clickhouse_server import LISTEN_HOST, ServerEndpoint

if TYPE_CHECKING:
    from streams.runtime.broker import EmbeddedBroker

log = logging.getLogger(__name__)

RUNTIME_FILE = "runtime.json"
LOCK_FILE = "runtime.lock"
BROKER_STOP_SECONDS = 5.0
# ClickHouse takes ~6 s to force a shutdown while a client connection is still open.
CLICKHOUSE_STOP_SECONDS = 20.0
_PR_SET_PDEATHSIG = 1
# Resolved in the parent, so the child between fork and exec only calls a ready function pointer.
_LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
_T = TypeVar("_T")


class RuntimeStartError(RuntimeError):
    """A server of the embedded runtime did not come up; the message says why."""


class HomeInUseError(RuntimeStartError):
    """Another live salespulse runtime owns this home directory (and cannot be attached to)."""


# What an attaching process waits for a starting owner to write its runtime.json.
ATTACH_WAIT_SECONDS = 60.0


# --------------------------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------------------------


def _die_with_parent(parent_pid: int, sig: signal.Signals) -> Callable[[], None]:
    def preexec() -> None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent_pid:
            # The parent died between fork and prctl: no death signal will ever come.
            os._exit(1)

    return preexec


class _SpawnThread:
    """One thread that lives as long as the process and forks children started off the main thread.

    The kernel sends PR_SET_PDEATHSIG when the *thread* that forked the child exits, not the process.
    A child forked from a short-lived thread (``asyncio.to_thread``, a request handler) would be
    killed when that thread ends, so such spawns are handed to this thread instead.
    """

    _lock = threading.Lock()
    _jobs: queue.SimpleQueue[Callable[[], None]] | None = None

    @classmethod
    def run(cls, fn: Callable[[], _T]) -> _T:
        with cls._lock:
            if cls._jobs is None:
                cls._jobs = queue.SimpleQueue()
                jobs = cls._jobs
                threading.Thread(
                    target=lambda: cls._serve(jobs), name="salespulse-spawn", daemon=True
                ).start()
            jobs = cls._jobs
        done = threading.Event()
        outcome: list[_T] = []
        failure: list[BaseException] = []

        def job() -> None:
            try:
                outcome.append(fn())
            except BaseException as exc:  # noqa: BLE001 - handed back to the calling thread below
                failure.append(exc)
            finally:
                done.set()

        jobs.put(job)
        done.wait()
        if failure:
            raise failure[0]
        return outcome[0]

    @staticmethod
    def _serve(jobs: queue.SimpleQueue[Callable[[], None]]) -> None:
        while True:
            jobs.get()()


class ManagedProcess:
    """A child process that dies with its parent and stops gracefully.

    ``ManagedProcess(name, argv, ...).start()`` runs it with PR_SET_PDEATHSIG (SIGTERM), in its own
    session so a terminal's Ctrl-C reaches only the parent, which then stops its children in order.
    stdout and stderr go to ``log_path`` (appended) or, when it is None, to the parent's.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        cwd: Path | None = None,
        stop_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.log_path = log_path
        self.cwd = cwd
        self.stop_timeout = stop_timeout
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_offset = 0  # where this run's output starts in an appended log

    def start(self) -> Self:
        if self._popen is not None:
            raise RuntimeError(f"{self.name} already started (pid {self._popen.pid})")
        log_file = _open_log(self.log_path, self.name, self.argv) if self.log_path is not None else None
        if log_file is not None:
            self._log_offset = log_file.tell()
        try:
            if threading.current_thread() is threading.main_thread():
                self._popen = self._popen_child(log_file)
            else:
                self._popen = _SpawnThread.run(lambda: self._popen_child(log_file))
        finally:
            if log_file is not None:
                log_file.close()  # the child holds its own copy
        log.debug("started %s (pid %d): %s", self.name, self._popen.pid, " ".join(self.argv))
        return self

    def _popen_child(self, log_file: IO[bytes] | None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid(), signal.SIGTERM),
        )

    @property
    def _process(self) -> subprocess.Popen[bytes]:
        if self._popen is None:
            raise RuntimeError(f"{self.name} has not been started")
        return self._popen

    @property
    def started(self) -> bool:
        return self._popen is not None

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.poll()

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit status, or None if still running after ``timeout`` seconds."""
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def terminate(self) -> None:
        """Ask the process to stop (SIGTERM) without waiting."""
        if self.is_running():
            self._process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM, wait up to ``timeout`` (default ``stop_timeout``), then SIGKILL. The exit status,
        or None if it was never started."""
        if self._popen is None:
            return None
        self.terminate()
        return self._finish(time.monotonic() + (self.stop_timeout if timeout is None else timeout))

    def kill_hard(self) -> int:
        """SIGKILL at once (tests: a crash); the exit status."""
        if self.is_running():
            self._process.kill()
        return self._process.wait()

    def _finish(self, deadline: float) -> int:
        status = self.wait(max(0.0, deadline - time.monotonic()))
        if status is None:
            log.warning("%s (pid %d) ignored SIGTERM; killing it", self.name, self.pid)
            status = self.kill_hard()
        return status

    def log_tail(self, max_lines: int = 20) -> str:
        """The last lines this run wrote to its log, for error messages."""
        if self.log_path is None:
            return ""
        try:
            with self.log_path.open("rb") as log_file:
                log_file.seek(self._log_offset)
                lines = log_file.read().decode("utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(lines[-max_lines:])

    def __repr__(self) -> str:
        pid = self._popen.pid if self._popen is not None else None
        return f"ManagedProcess({self.name!r}, pid={pid}, running={self.is_running()})"


def stop_processes(processes: Sequence[ManagedProcess]) -> None:
    """Stop several processes at once: SIGTERM to all, then each gets its own grace period."""
    started = time.monotonic()
    started_ones = [p for p in processes if p.started]
    for process in started_ones:
        process.terminate()
    for process in started_ones:
        status = process._finish(started + process.stop_timeout)
        log.info("%s stopped (status %d) after %.2fs", process.name, status, time.monotonic() - started)


def _open_log(log_path: Path, name: str, argv: Sequence[str]) -> IO[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = log_path.open("ab")
    header = f"\n--- {datetime.now(UTC).isoformat()} starting {name}: {' '.join(argv)}\n"
    log_file.write(header.encode())
    log_file.flush()
    return log_file


def wait_for_port(host: str, port: int, timeout: float, *, process: ManagedProcess | None = None) -> None:
    """Block until ``host:port`` accepts a TCP connection.

    Raises TimeoutError after ``timeout`` seconds, or RuntimeStartError at once if ``process``
    (the server meant to listen there) exits first.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            if process is not None and not process.is_running():
                raise RuntimeStartError(
                    f"{process.name} exited with status {process.returncode} before listening on "
                    f"{host}:{port}; log {process.log_path}:\n{process.log_tail()}"
                ) from None
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.1f}s") from None
            time.sleep(0.01)


# --------------------------------------------------------------------------------------------
# The home directory: one runtime at a time
# --------------------------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a running process (zombies count as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state letter follows the parenthesised command, which may itself hold spaces or ')'.
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def read_runtime_file(home: Path) -> dict[str, Any] | None:
    """The ``runtime.json`` of a home, or None when absent or unreadable."""
    try:
        content: dict[str, Any] = json.loads((home / RUNTIME_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", home / RUNTIME_FILE, exc)
        return None
    return content


class _HomeLock:
    """An exclusive ``flock`` on ``<home>/runtime.lock`` for the life of a runtime.

    runtime.json alone cannot stop two runtimes starting at the same moment; the lock can, and the
    kernel drops it when its holder dies however it dies, so a stale runtime.json never blocks.
    """

    def __init__(self, home: Path) -> None:
        self._fd = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise HomeInUseError(_home_in_use_message(home)) from None

    def release(self) -> None:
        os.close(self._fd)  # closing drops the flock


def _home_in_use_message(home: Path) -> str:
    owner = read_runtime_file(home) or {}
    pid = owner.get("pid")
    who = f"pid {pid}" if isinstance(pid, int) and pid_alive(pid) else "a process that is still starting"
    return (
        f"another salespulse runtime ({who}) is running with home {home}. "
        f"Stop it (e.g. `kill -TERM {pid if isinstance(pid, int) else '<pid>'}`) "
        "or use another home (set SALESPULSE_HOME)."
    )


def _write_json_atomically(path: Path, content: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Signals: unwind the main thread so the runtime stops in order
# --------------------------------------------------------------------------------------------


class _StopOnSignals:
    """While installed, SIGINT raises KeyboardInterrupt and SIGTERM raises SystemExit(143) in the
    main thread, so the ``with`` block unwinds through :meth:`EmbeddedRuntime.stop`.

    Python runs signal handlers only in the main thread and only lets it install them; elsewhere
    nothing is installed and the caller owns signal handling (PDEATHSIG still reaps the children
    when the process dies). The previous handlers come back on :meth:`restore`, unless someone
    replaced ours meanwhile, in which case theirs is left alone.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, is_stopping: Callable[[], bool]) -> None:
        self._is_stopping = is_stopping
        self._previous: dict[signal.Signals, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            log.debug("not in the main thread: leaving SIGINT/SIGTERM handling to the caller")
            return
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            if signal.getsignal(sig) == self._handle:
                signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._is_stopping():
            log.warning("%s received while the runtime is already stopping; letting the stop finish", name)
            return
        log.info("%s received: stopping the embedded runtime", name)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)


# --------------------------------------------------------------------------------------------
# The runtime
# --------------------------------------------------------------------------------------------


def _source_root() -> Path:
    # streams/runtime/supervisor.py -> the directory holding the `streams` package.
    return Path(__file__).resolve().parents[2]


class EmbeddedRuntime:
    """Starts the servers the settings leave unconfigured and stops them however we exit.

    Use as ``with EmbeddedRuntime(settings) as runtime: ...``; synchronous, so start it outside (or
    before) any event loop. With both servers external it starts nothing, takes no lock and writes
    no runtime.json: it only passes the configured endpoints through.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        start_timeout: float = 60.0,
        handle_signals: bool = True,
        need_broker: bool = True,
        attach: bool = True,
    ) -> None:
        self.settings = settings
        # attach=False: fail with HomeInUseError when another process runs this home's runtime.
        self.attach = attach
        self._owner: dict[str, Any] | None = None
        # Commands that only read or migrate ClickHouse pass need_broker=False: no broker starts
        # and kafka_bootstrap stays as configured (possibly None).
        self.need_broker = need_broker
        self.home = settings.home.expanduser().resolve()
        self.start_timeout = start_timeout
        self._handle_signals = handle_signals
        self._broker: EmbeddedBroker | None = None
        self._clickhouse: ManagedProcess | None = None
        self._clickhouse_endpoint: ServerEndpoint | None = None
        self._managed: list[ManagedProcess] = []
        self._home_lock: _HomeLock | None = None
        self._signals = _StopOnSignals(lambda: self._stopping)
        self._running = False
        self._stopping = False
        self._started_at: datetime | None = None
        self._pipeline: dict[str, str] | None = None
        self._worker_noted = False

    # -- what it needs to start ---------------------------------------------------------------

    @property
    def attached(self) -> bool:
        """True when another process runs this home's servers and this runtime only uses them."""
        return self._owner is not None

    @property
    def started_broker(self) -> bool:
        """True when this runtime runs the broker itself."""
        return self.need_broker and self.settings.kafka_bootstrap is None and not self.attached

    @property
    def started_clickhouse(self) -> bool:
        return self.settings.clickhouse_host is None and not self.attached

    @property
    def embedded_broker(self) -> bool:
        """True when clients talk to the embedded broker, started here or by the process attached to
        (so Tansu's quirks apply to them)."""
        return self.need_broker and self.settings.kafka_bootstrap is None

    @property
    def worker_running(self) -> bool:
        """True when a worker consumes for this runtime: one this process started, or the attached
        owner's (its runtime.json says so)."""
        if self._owner is not None:
            return bool(self._owner.get("worker")) or any(
                name.startswith("worker") for name in self._owner.get("processes", {})
            )
        return any(process.name.startswith("worker") for process in self._managed) or self._worker_noted

    def note_pipeline(self, settings: Settings, *, worker: bool = False) -> None:
        """Record in runtime.json which database, topics and group this runtime's pipeline uses (and,
        with ``worker``, that this process runs a worker itself), for processes that attach to it."""
        self._pipeline = {
            "clickhouse_database": settings.clickhouse_database,
            "topic_prefix": settings.topic_prefix,
            "consumer_group": settings.consumer_group,
        }
        self._worker_noted = self._worker_noted or worker
        if self._running and self._home_lock is not None:
            self._write_runtime_file()

    @property
    def clickhouse_dir(self) -> Path:
        return self.home / "clickhouse"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    # -- endpoints ------------------------------------------------------------------------------

    @property
    def kafka_bootstrap(self) -> str | None:
        if self.settings.kafka_bootstrap is not None or not self.need_broker:
            return self.settings.kafka_bootstrap
        if self._owner is not None:
            return str(self._owner["kafka_bootstrap"])
        return self._require(self._broker, "broker").bootstrap

    @property
    def clickhouse_host(self) -> str:
        if self.settings.clickhouse_host is not None:
            return self.settings.clickhouse_host
        if self._owner is not None:
            return str(self._owner["clickhouse"]["host"])
        self._require(self._clickhouse_endpoint, "ClickHouse")
        return LISTEN_HOST

    @property
    def clickhouse_port(self) -> int:
        if self.settings.clickhouse_host is not None:
            return self.settings.clickhouse_port
        if self._owner is not None:
            return int(self._owner["clickhouse"]["tcp_port"])
        return self._require(self._clickhouse_endpoint, "ClickHouse").tcp_port

    def _require(self, value: _T | None, what: str) -> _T:
        if value is None:
            raise RuntimeError(
                f"the embedded {what} is not running (use EmbeddedRuntime as a context manager)"
            )
        return value

    def settings_for_children(self) -> Settings:
        """These settings with the live endpoints filled in: what workers and clients should use.

        With the embedded broker it also turns on ``kafka_embedded_compat`` (the client-side fix
        for the broker's wrong end offsets, :mod:`streams.runtime.kafka_compat`).
        """
        update: dict[str, Any] = {
            "home": self.home,
            "kafka_bootstrap": self.kafka_bootstrap,
            "clickhouse_host": self.clickhouse_host,
            "clickhouse_port": self.clickhouse_port,
            "kafka_embedded_compat": self.settings.kafka_embedded_compat or self.embedded_broker,
        }
        if self._owner is not None:
            # The owner's pipeline (database, topics, group) unless this process's settings name
            # their own: `kpis` next to a running demo shows the demo's numbers.
            pipeline = self._owner.get("pipeline") or {}
            for key in ("clickhouse_database", "topic_prefix", "consumer_group"):
                if key in pipeline and key not in self.settings.model_fields_set:
                    update[key] = pipeline[key]
        return self.settings.model_copy(update=update)

    def child_env(self) -> dict[str, str]:
        """``os.environ`` plus :meth:`settings_for_children`'s endpoints as ``SALESPULSE_*`` variables."""
        children = self.settings_for_children()
        env = dict(os.environ)
        env.update(
            SALESPULSE_HOME=str(self.home),
            SALESPULSE_CLICKHOUSE_HOST=self.clickhouse_host,
            SALESPULSE_CLICKHOUSE_PORT=str(self.clickhouse_port),
        )
        if self.kafka_bootstrap is not None:
            env["SALESPULSE_KAFKA_BOOTSTRAP"] = self.kafka_bootstrap
        if children.kafka_embedded_compat:
            env["SALESPULSE_KAFKA_EMBEDDED_COMPAT"] = "true"
        return env

    @property
    def processes(self) -> dict[str, ManagedProcess]:
        """Every child this runtime stops, by name."""
        children = [self._broker.process if self._broker else None, self._clickhouse, *self._managed]
        return {p.name: p for p in children if p is not None}

    def manage(self, process: ManagedProcess) -> ManagedProcess:
        """Adopt a child (e.g. a worker): it is stopped before the servers, latest first."""
        self._managed.append(process)
        if self._running:
            self._write_runtime_file()
        return process

    # -- start / stop -------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> Self:
        if self._running:
            raise RuntimeError("EmbeddedRuntime already started")
        if not (self.started_broker or self.started_clickhouse):
            log.info("Kafka and ClickHouse are external: nothing to start")
            self._running = True
            return self
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._home_lock = _HomeLock(self.home)
        except HomeInUseError:
            if not self.attach:
                raise
            self._owner = self._running_owner()
            self._running = True
            log.info("using the embedded runtime of pid %s (home %s)", self._owner.get("pid"), self.home)
            return self
        self._running = True
        self._stopping = False
        self._started_at = datetime.now(UTC)
        try:
            if self._handle_signals:
                self._signals.install()
            self._replace_stale_runtime_file()
            self._start_servers()
            self._write_runtime_file()
        except BaseException:
            # Whatever interrupted the start (an error, Ctrl-C), leave nothing running behind.
            self.stop()
            raise
        return self

    def _start_servers(self) -> None:
        started = time.monotonic()
        # ClickHouse needs ~0.3 s to load; the broker starts meanwhile.
        ports_file = self.home / "clickhouse.endpoint.json"
        if self.started_clickhouse:
            self._clickhouse = self._spawn_clickhouse(ports_file)
        if self.started_broker:
            # Imported here, not at the top: broker.py builds on ManagedProcess from this module.
            from streams.runtime.broker import EmbeddedBroker

            self._broker = EmbeddedBroker.start(self.log_dir / "broker.log", ready_timeout=self.start_timeout)
            log.info("broker ready at %s in %.3fs", self._broker.bootstrap, time.monotonic() - started)
        if self._clickhouse is not None:
            self._clickhouse_endpoint = self._wait_for_clickhouse(self._clickhouse, ports_file)
            log.info(
                "ClickHouse ready at %s:%d in %.3fs",
                LISTEN_HOST,
                self._clickhouse_endpoint.tcp_port,
                time.monotonic() - started,
            )

    def _spawn_clickhouse(self, ports_file: Path) -> ManagedProcess:
        ports_file.unlink(missing_ok=True)
        env = dict(os.environ)
        # The server runs as `python -m streams.runtime.clickhouse_server`: make our package
        # importable whatever the child's working directory and whether or not it is installed.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_source_root()), env.get("PYTHONPATH")]))
        argv = [
            sys.executable,
            "-m",
            "streams.runtime.clickhouse_server",
            "--data",
            str(self.clickhouse_dir),
            "--ports-file",
            str(ports_file),
            "--start-timeout",
            str(self.start_timeout),
            "--stop-timeout",
            str(CLICKHOUSE_STOP_SECONDS - 2),
        ]
        return ManagedProcess(
            "clickhouse",
            argv,
            env=env,
            log_path=self.log_dir / "clickhouse.log",
            stop_timeout=CLICKHOUSE_STOP_SECONDS,
        ).start()

    def _wait_for_clickhouse(self, process: ManagedProcess, ports_file: Path) -> ServerEndpoint:
        deadline = time.monotonic() + self.start_timeout
        while not ports_file.exists():
            if not process.is_running():
                raise RuntimeStartError(
                    f"embedded ClickHouse exited with status {process.returncode} before it was ready; "
                    f"log {process.log_path}:\n{process.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeStartError(
                    f"embedded ClickHouse not ready after {self.start_timeout:.0f}s; log {process.log_path}"
                )
            time.sleep(0.01)
        endpoint = ServerEndpoint.from_json(ports_file.read_text(encoding="utf-8"))
        wait_for_port(LISTEN_HOST, endpoint.tcp_port, max(1.0, deadline - time.monotonic()), process=process)
        # A real query, so "ready" means ready to serve, not only accepting connections.
        client = Client(LISTEN_HOST, port=endpoint.tcp_port, connect_timeout=5, send_receive_timeout=10)
        try:
            client.execute("SELECT 1")
        finally:
            client.disconnect()
        return endpoint

    def _running_owner(self) -> dict[str, Any]:
        """The runtime.json of the process holding the home lock, once it is complete and serves what
        this runtime needs; HomeInUseError when it does not (or never becomes ready)."""
        deadline = time.monotonic() + min(self.start_timeout, ATTACH_WAIT_SECONDS)
        while True:
            owner = read_runtime_file(self.home)
            pid = owner.get("pid") if owner else None
            if owner is not None and isinstance(pid, int) and pid_alive(pid):
                break
            if time.monotonic() > deadline:
                raise HomeInUseError(_home_in_use_message(self.home))
            time.sleep(0.1)
        missing = []
        if self.need_broker and self.settings.kafka_bootstrap is None and not owner.get("kafka_bootstrap"):
            missing.append("a broker")
        if self.settings.clickhouse_host is None and not (owner.get("clickhouse") or {}).get("tcp_port"):
            missing.append("ClickHouse")
        if missing:
            raise HomeInUseError(
                _home_in_use_message(self.home)
                + f" It runs without {' and '.join(missing)}, which this command needs: wait until it ends."
            )
        return owner

    def stop(self) -> None:
        """Stop managed children (latest first), then the servers; idempotent."""
        if self._owner is not None:
            # Attached: the servers are the owner's; only forget them.
            self._owner = None
            self._running = False
            return
        if not self._running or self._stopping:
            return
        self._stopping = True
        started = time.monotonic()
        try:
            # Children (workers) first: they may still flush to the servers on their way out.
            for process in reversed(self._managed):
                log.info("%s stopped (status %s)", process.name, process.stop())
            servers = [p for p in (self._clickhouse, self._broker.process if self._broker else None) if p]
            stop_processes(servers)
            if self._home_lock is not None:
                (self.home / RUNTIME_FILE).unlink(missing_ok=True)
        finally:
            if self._home_lock is not None:
                self._home_lock.release()
                self._home_lock = None
            self._signals.restore()
            self._running = False
            self._stopping = False
            self._broker = None
            self._clickhouse = None
            self._clickhouse_endpoint = None
            self._managed.clear()
        log.info("embedded runtime stopped in %.3fs", time.monotonic() - started)

    # -- runtime.json ---------------------------------------------------------------------------

    def _replace_stale_runtime_file(self) -> None:
        # We hold the home lock, so whoever wrote a leftover runtime.json is gone.
        stale = read_runtime_file(self.home)
        if stale is not None:
            log.warning("replacing stale %s left by pid %s", self.home / RUNTIME_FILE, stale.get("pid"))
            (self.home / RUNTIME_FILE).unlink()

    def _write_runtime_file(self) -> None:
        endpoint = self._clickhouse_endpoint
        _write_json_atomically(
            self.home / RUNTIME_FILE,
            {
                "pid": os.getpid(),
                "started_at": self._started_at.isoformat() if self._started_at else None,
                "home": str(self.home),
                "kafka_bootstrap": self.kafka_bootstrap,
                "clickhouse": {
                    "host": self.clickhouse_host,
                    "tcp_port": self.clickhouse_port,
                    "http_port": endpoint.http_port if endpoint else None,
                },
                "processes": {name: p.pid for name, p in self.processes.items()},
                "pipeline": self._pipeline,
                "worker": self._worker_noted,
            },
        )
