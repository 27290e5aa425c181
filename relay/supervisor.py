"""Keep the local stack's processes up, and let game days stop and start them by name.

:class:`Supervisor` watches every process of a :class:`relay.stack.LocalStack` started with
``supervise=True`` (``relay dev`` does): when one exits, it says so ("loads exited with
code -9; restarting in 1 s") and starts it again after an exponential backoff
(:class:`RestartPolicy`: 1 s doubling to 30 s; back to 1 s once a process has stayed up
60 s). A process stopped on purpose (``relay stop <name>``, ``LocalStack.stop_process``) is
*held*: it stays down until it is started again. The decisions are in :meth:`tick`, on an
injected clock, so tests drive them without waiting.

:class:`ControlServer` is how the ``relay ps|stop|start|restart`` commands reach the
running stack: a Unix domain socket in the state directory (``.relay/control.sock``, mode
0600, its path recorded in ``stack.json``), one JSON request line in, one JSON answer line
out. Nothing listens on a network port.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import socketserver
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("relay.supervisor")

RESTART_INITIAL_SECONDS = 1.0  # first restart after a crash
RESTART_MAX_SECONDS = 30.0  # the backoff doubles up to this
RESTART_RESET_AFTER_SECONDS = 60.0  # up this long: the next crash restarts after 1 s again
SUPERVISE_INTERVAL_SECONDS = 0.25  # how often the supervisor looks at its processes
CONTROL_SOCKET_NAME = "control.sock"
CONTROL_TIMEOUT_SECONDS = 60.0  # a client's wait; `start` waits for the process's health
CONTROL_MAX_REQUEST_BYTES = 4096
MAX_UNIX_SOCKET_PATH = 100  # sun_path is 104-108 bytes depending on the OS


@dataclass(frozen=True)
class RestartPolicy:
    initial_seconds: float = RESTART_INITIAL_SECONDS
    max_seconds: float = RESTART_MAX_SECONDS
    reset_after_seconds: float = RESTART_RESET_AFTER_SECONDS

    def __post_init__(self) -> None:
        if not 0 < self.initial_seconds <= self.max_seconds:
            raise ValueError("restart backoff needs 0 < initial_seconds <= max_seconds")
        if self.reset_after_seconds <= 0:
            raise ValueError("reset_after_seconds must be positive")

    def delay(self, crashes: int) -> float:
        """Wait before restarting after the ``crashes``-th crash in a row: 1, 2, 4 ... max."""
        return min(self.initial_seconds * 2 ** min(max(crashes - 1, 0), 32), self.max_seconds)


class Child(Protocol):
    """What the supervisor needs of a process (:class:`relay.stack.Process`)."""

    @property
    def pid(self) -> int | None: ...

    @property
    def exit_code(self) -> int | None: ...

    def running(self) -> bool: ...

    def start(self) -> None: ...


class State(StrEnum):
    RUNNING = "running"
    RESTARTING = "restarting"  # exited; waiting out its backoff
    STOPPED = "stopped"  # held: stopped on purpose, never restarted


@dataclass
class Watch:
    state: State = State.RUNNING
    started_at: float = 0.0
    crashes: int = 0  # in a row, since it last stayed up reset_after_seconds
    restarts: int = 0  # done by the supervisor
    restart_at: float | None = None
    last_exit: int | None = None


def _seconds(value: float) -> str:
    return f"{value:g}"


class Supervisor:
    """Restarts exited processes with backoff; holds the ones stopped on purpose."""

    def __init__(
        self,
        children: Mapping[str, Child],
        *,
        policy: RestartPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        report: Callable[[str], None] = log.warning,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        self.children = children
        self.policy = policy or RestartPolicy()
        self.clock = clock
        self.report = report
        self.on_restart = on_restart
        # Held by tick, hold/release and by whoever stops or starts a child on purpose.
        self.lock = threading.RLock()
        now = clock()
        self.watches = {name: Watch(started_at=now) for name in children}

    def tick(self) -> list[str]:
        """Look at every process once: notice exits, restart those whose wait is over."""
        restarted = []
        with self.lock:
            now = self.clock()
            for name, child in self.children.items():
                watch = self.watches[name]
                if watch.state is State.STOPPED:
                    continue
                if watch.state is State.RUNNING:
                    if child.running():
                        if (
                            watch.crashes
                            and now - watch.started_at >= self.policy.reset_after_seconds
                        ):
                            watch.crashes = 0
                        continue
                    watch.last_exit = child.exit_code
                    self._schedule(name, watch, now, f"exited with code {watch.last_exit}")
                if (
                    watch.state is State.RESTARTING
                    and watch.restart_at is not None
                    and now >= watch.restart_at
                ):
                    try:
                        child.start()
                    except OSError as exc:
                        self._schedule(name, watch, now, f"could not be started ({exc})")
                        continue
                    watch.state, watch.restart_at, watch.started_at = State.RUNNING, None, now
                    watch.restarts += 1
                    restarted.append(name)
                    self.report(f"{name} restarted (pid {child.pid})")
        for name in restarted:
            if self.on_restart is not None:
                self.on_restart(name)
        return restarted

    def _schedule(self, name: str, watch: Watch, now: float, why: str) -> None:
        watch.crashes += 1
        delay = self.policy.delay(watch.crashes)
        watch.state, watch.restart_at = State.RESTARTING, now + delay
        self.report(f"{name} {why}; restarting in {_seconds(delay)} s")

    def adopt(self, name: str) -> None:
        """Supervise ``name``, just added to the children (a version started mid-run)."""
        with self.lock:
            self.watches[name] = Watch(started_at=self.clock())

    def forget(self, name: str) -> None:
        """Stop supervising ``name`` (its process stopped for good, about to be removed)."""
        with self.lock:
            self.watches.pop(name, None)

    def hold(self, name: str) -> None:
        """``name`` is being stopped on purpose: never restart it until :meth:`release`."""
        with self.lock:
            watch = self.watches[name]
            watch.state, watch.restart_at = State.STOPPED, None

    def release(self, name: str) -> None:
        """``name`` is being started on purpose: supervise it again, as a fresh start."""
        with self.lock:
            watch = self.watches[name]
            watch.state, watch.restart_at = State.RUNNING, None
            watch.started_at, watch.crashes = self.clock(), 0

    def held(self, name: str) -> bool:
        with self.lock:
            return self.watches[name].state is State.STOPPED

    def run(self, stop: threading.Event, interval: float = SUPERVISE_INTERVAL_SECONDS) -> None:
        """Tick until ``stop`` is set; a failing tick is logged, never the end of supervision."""
        while not stop.wait(interval):
            try:
                self.tick()
            except Exception:
                log.exception("supervisor tick failed")

    def status(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            now = self.clock()
            out = {}
            for name, child in self.children.items():
                watch = self.watches[name]
                out[name] = {
                    "state": watch.state.value,
                    "pid": child.pid if child.running() else None,
                    "restarts": watch.restarts,
                    "last_exit": watch.last_exit,
                    "restart_in": None
                    if watch.restart_at is None
                    else round(max(watch.restart_at - now, 0.0), 1),
                }
            return out


# --- the control socket --------------------------------------------------------------


class ControlError(Exception):
    """The running stack could not be reached or did not answer."""


def control_socket_path(state_dir: Path) -> Path:
    """``<state dir>/control.sock``, or a short path in the temp dir if that one is too long."""
    path = Path(state_dir).resolve() / CONTROL_SOCKET_NAME
    if len(os.fsencode(path)) <= MAX_UNIX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(os.fsencode(path)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"relay-{digest}.sock"


class ControlServer:
    """Serves ``handle(request) -> answer`` (JSON objects) on a Unix socket, one per line."""

    def __init__(self, path: Path, handle: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.path = Path(path)
        self.handle = handle
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        handle = self.handle

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline(CONTROL_MAX_REQUEST_BYTES + 1)
                try:
                    if len(line) > CONTROL_MAX_REQUEST_BYTES:
                        raise ValueError("request too long")
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ValueError("a request is a JSON object")
                    answer = handle(request)
                except Exception as exc:  # answered, never fatal to the stack
                    log.exception("control request failed")
                    answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                self.wfile.write(json.dumps(answer).encode() + b"\n")

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a stack that was killed
        server = socketserver.ThreadingUnixStreamServer(str(self.path), Handler)
        server.daemon_threads = True
        os.chmod(self.path, 0o600)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="relay-control", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def control_request(
    path: Path, request: dict[str, Any], timeout: float = CONTROL_TIMEOUT_SECONDS
) -> dict[str, Any]:
    """Send one request to a running stack's control socket; its answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise ControlError(
            f"no running stack answers on {path} ({exc.strerror}): start it with `make dev`"
        ) from None
    except OSError as exc:  # includes the timeout
        raise ControlError(f"the stack did not answer on {path}: {exc}") from None
    try:
        return json.loads(data)
    except ValueError:
        raise ControlError(f"unreadable answer from {path}: {data[:200]!r}") from None
