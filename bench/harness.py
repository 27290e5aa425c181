"""Pieces of the benchmark: nginx, the gateway, a black hole, wrk. Loopback only."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from relay.cloud import ROOT
from relay.devissuer import DevIssuer
from relay.stack import HOST, Process, free_port
from shared_contracts.identity import Role, generate_key_pair

BENCH = Path(__file__).resolve().parent
# ~500 bytes: one load assignment as the loads module answers it.
LOAD_BODY = (
    '{"items":[{"load_id":"L-5001","driver_id":"D-1001","status":"assigned",'
    '"reference":"PO-5001","trailer":"TRL-53-0042","commodity":"Palletized dry goods",'
    '"shipper":{"facility_id":"F-CHI","name":"Chicago Cross-Dock","address":"4200 S Pulaski '
    'Rd, Chicago, IL","lat":41.8155,"lon":-87.7245},"consignee":{"facility_id":"F-IND","name":'
    '"Indianapolis DC","address":"2700 S Holt Rd, Indianapolis, IN","lat":39.7322,"lon":'
    '-86.2236},"current_stop":1,"version":1,"assigned_at":"2026-11-22T08:00:00Z"}]}'
)
SERVER_CPU, LOAD_CPU = "0", "1"


def pinned(cpu: str, argv: list[str]) -> list[str]:
    return (["taskset", "-c", cpu] if shutil.which("taskset") and os.cpu_count() > 1 else []) + argv


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int   # socket errors + non-2xx/3xx

    @property
    def success_rate(self) -> float:
        return 1.0 if self.requests == 0 else max(0.0, 1 - self.errors / self.requests)


_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * _UNIT[m.group(2)]


def wrk(url: str, *, seconds: int, connections: int = 32, token: str | None = None,
        rate: int | None = None) -> WrkResult:
    """wrk (or wrk2-style fixed rate when ``rate`` and the binary supports it) on LOAD_CPU."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    if token:
        argv += ["-H", f"Authorization: Bearer {token}"]
    if rate:
        argv += ["-R", str(rate)]
    out = subprocess.run(pinned(LOAD_CPU, argv + [url]), capture_output=True, text=True,
                         timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"\s50(?:\.000)?%\s+(\S+)", out).group(1))
    p99 = _ms(re.search(r"\s99(?:\.000)?%\s+(\S+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = 0
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(x) for x in m.groups())
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    return WrkResult(rps, p50, p99, requests, errors)


class Nginx:
    def __init__(self, state: Path) -> None:
        self.state = state
        self.upstream_port, self.proxy_port = free_port(), free_port()
        conf = (BENCH / "nginx.conf.template").read_text()
        for key, value in {"state": str(state), "upstream_port": str(self.upstream_port),
                           "proxy_port": str(self.proxy_port), "body": LOAD_BODY}.items():
            conf = conf.replace("{" + key + "}", value)
        (state / "nginx.conf").write_text(conf)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(pinned(SERVER_CPU, ["nginx", "-c", str(self.state / "nginx.conf"),
                                                         "-e", str(self.state / "nginx-error.log")]),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.proxy_port)

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)


class BlackHole:
    """Accepts connections and never answers (a hung upstream)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.sock.listen(4096)
        self.port = self.sock.getsockname()[1]
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
                self._held.append(conn)
            except OSError:
                continue

    def close(self) -> None:
        self._stop.set()
        for c in self._held:
            c.close()
        self.sock.close()


class Gateway:
    """The real gateway (route table, breakers, deadlines, auth) in front of ``upstreams``."""

    def __init__(self, state: Path, upstreams: dict[str, str], *, workers: int = 1,
                 extra_env: dict[str, str] | None = None, server: str = "uvicorn") -> None:
        self.issuer = DevIssuer.load_or_create(state)
        private, _ = generate_key_pair()
        self.port = free_port()
        env = {
            **os.environ, "RELAY_STAGE": "local",
            "RELAY_JWKS_URL": "file://" + str(self.issuer.write_jwks(state)),
            "RELAY_TOKEN_ISSUER": self.issuer.issuer, "RELAY_TOKEN_CLIENT_IDS": self.issuer.client_id,
            "RELAY_IDENTITY_SIGNING_KEY": private,
            "RELAY_RATE_LIMIT_DRIVER": "10000/100000",
            **{f"RELAY_UPSTREAM_{m.upper()}": u for m, u in upstreams.items()},
            **(extra_env or {}),
        }
        argv = [sys.executable, "-m", "uvicorn", "gateway.app:create_app", "--factory",
                "--host", HOST, "--port", str(self.port), "--no-access-log", "--log-level",
                "warning", "--workers", str(workers)]
        self.proc = Process("gateway", pinned(SERVER_CPU, argv), env, state / "gateway.log",
                            port=self.port)
        self.token = self.issuer.mint("D-1001", Role.DRIVER, "D-1001")
        self.ops_token = self.issuer.mint("ops-bench", Role.OPS)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        self.proc.start()
        self.proc.wait_ready(time.monotonic() + 60)

    def stop(self) -> None:
        self.proc.stop()


def _wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def command_line(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


__all__ = ["BlackHole", "Gateway", "Nginx", "WrkResult", "wrk", "ROOT", "command_line"]
