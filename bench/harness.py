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
import tomllib
from dataclasses import dataclass
from pathlib import Path

import httpx

from module_kit.etag import entity_tag
from module_kit.signed_context import generate_key_pair
from relay.cloud import ROOT
from relay.devissuer import DevIssuer
from relay.stack import HOST, Process, free_port
from shared_contracts.identity import Role
from shared_contracts.loads import LoadList

BENCH = Path(__file__).resolve().parent
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"  # /usr/sbin is not on every PATH
# One load assignment as the loads module answers GET /loads (valid against LoadList):
# about 1 KB, so the fallbacks (last-known-good, static directions) work on it as on real data.
_CHI = {
    "facility_id": "F-CHI",
    "name": "Chicago Cross-Dock",
    "address": "4200 S Pulaski Rd, Chicago, IL",
    "lat": 41.8155,
    "lon": -87.7245,
}
_IND = {
    "facility_id": "F-IND",
    "name": "Indianapolis DC",
    "address": "2700 S Holt Rd, Indianapolis, IN",
    "lat": 39.7322,
    "lon": -86.2236,
}
LOAD_BODY = LoadList.model_validate(
    {
        "items": [
            {
                "load_id": "L-5001",
                "driver_id": "D-1001",
                "status": "in_transit",
                "reference": "PO-5001",
                "shipper": _CHI,
                "consignee": _IND,
                "current_stop": 2,
                "version": 3,
                "assigned_at": "2026-11-22T07:30:00Z",
                "updated_at": "2026-11-22T09:00:00Z",
                "stops": [
                    {
                        "seq": 1,
                        "kind": "pickup",
                        "facility": _CHI,
                        "window_start": "2026-11-22T08:00:00Z",
                        "window_end": "2026-11-22T10:00:00Z",
                        "arrived_at": "2026-11-22T08:10:00Z",
                        "departed_at": "2026-11-22T09:00:00Z",
                    },
                    {
                        "seq": 2,
                        "kind": "delivery",
                        "facility": _IND,
                        "window_start": "2026-11-22T14:00:00Z",
                        "window_end": "2026-11-22T16:00:00Z",
                    },
                ],
            }
        ]
    }
).model_dump_json(exclude_none=True)
SERVER_CPU, LOAD_CPU = "0", "1"


def pinned(cpu: str, argv: list[str]) -> list[str]:
    return (
        ["taskset", "-c", cpu] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []
    ) + argv


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors + non-2xx/3xx

    @property
    def success_rate(self) -> float:
        return 1.0 if self.requests == 0 else max(0.0, 1 - self.errors / self.requests)


_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * _UNIT[m.group(2)]


def wrk_argv(
    url: str,
    *,
    seconds: int,
    connections: int = 32,
    token: str | None = None,
    rate: int | None = None,
) -> list[str]:
    """wrk on LOAD_CPU. With ``rate``, each connection waits ``connections / rate`` seconds
    between its requests (bench/paced.lua), so about ``rate`` requests a second are offered;
    the report says what was achieved. Latency is timed from each request's send."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    if token:
        argv += ["-H", "Authorization: Bearer " + token]
    if rate:
        argv += ["-s", str(BENCH / "paced.lua")]
    argv.append(url)
    if rate:
        argv += ["--", f"{connections * 1000 / rate:.3f}"]
    return pinned(LOAD_CPU, argv)


def wrk(
    url: str,
    *,
    seconds: int,
    connections: int = 32,
    token: str | None = None,
    rate: int | None = None,
) -> tuple[WrkResult, list[str]]:
    """One wrk run: its result and the exact command (for the report)."""
    argv = wrk_argv(url, seconds=seconds, connections=connections, token=token, rate=rate)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    return parse_wrk(out.stdout), argv


def _find(pattern: str, text: str) -> str:
    m = re.search(pattern, text)
    if m is None:
        raise ValueError(f"wrk output without {pattern!r}:\n{text}")
    return m.group(1)


def parse_wrk(out: str) -> WrkResult:
    rps = float(_find(r"Requests/sec:\s+([\d.]+)", out))
    p50 = _ms(_find(r"\s50(?:\.000)?%\s+(\S+)", out))
    p99 = _ms(_find(r"\s99(?:\.000)?%\s+(\S+)", out))
    requests = int(_find(r"(\d+) requests in", out))
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
        for key, value in {
            "state": str(state),
            "upstream_port": str(self.upstream_port),
            "proxy_port": str(self.proxy_port),
            "body": LOAD_BODY,
            # the tag the loads module sends with this body (default_type: application/json)
            "etag": entity_tag(LOAD_BODY.encode(), b"application/json").decode(),
        }.items():
            conf = conf.replace("{" + key + "}", value)
        (state / "nginx.conf").write_text(conf)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        argv = [
            NGINX,
            "-c",
            str(self.state / "nginx.conf"),
            "-e",
            str(self.state / "nginx-error.log"),
        ]
        self.proc = subprocess.Popen(
            pinned(SERVER_CPU, argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_port(self.proxy_port)

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)


class BlackHole:
    """Accepts connections and never answers (a hung upstream). The first ``answer_first``
    requests get the load assignment, so the gateway can hold a last-known-good copy
    before its upstream goes silent."""

    def __init__(self, answer_first: int = 0) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.sock.listen(4096)
        self.port = self.sock.getsockname()[1]
        self.to_answer = answer_first
        self.accepted = 0  # connections the gateway opened to the black hole
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            self._held.append(conn)
            if self.to_answer > 0:
                threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        body = LOAD_BODY.encode()
        reply = (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        try:
            while self.to_answer > 0 and conn.recv(65536):
                self.to_answer -= 1
                conn.sendall(reply)
        except OSError:
            pass

    def close(self) -> None:
        self._stop.set()
        for c in self._held:
            c.close()
        self.sock.close()


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` (from /proc: no sampling, no overhead)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a worker that has just exited
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / CLOCK_TICKS


class Gateway:
    """The real gateway (route table, breakers, deadlines, auth on) in front of ``upstreams``.

    Runs ``python -m gateway.server`` of the tree at ``root`` (this one, or a baseline
    worktree). ``routes`` is merged into that tree's gateway/routes.toml (e.g. a shorter
    breaker reset timeout); ``cpus`` pins the process; ``env`` adds settings (e.g. a
    control table the instances of a fleet share).
    """

    def __init__(
        self,
        state: Path,
        upstreams: dict[str, str],
        *,
        root: Path = ROOT,
        cpus: str = SERVER_CPU,
        routes: dict | None = None,
        env: dict[str, str] | None = None,
        wrapper: list[str] | None = None,
    ) -> None:
        self.issuer = DevIssuer.load_or_create(state)
        private, _ = generate_key_pair()
        self.port = free_port()
        self.root = root
        environment = {
            **os.environ,
            # ``root`` is the tree whose gateway runs (a baseline worktree for --baseline):
            # python -P leaves the working directory off sys.path, so PYTHONPATH decides.
            "PYTHONPATH": str(root),
            "RELAY_STAGE": "local",
            "RELAY_JWKS_URL": "file://" + str(self.issuer.write_jwks(state)),
            "RELAY_TOKEN_ISSUER": self.issuer.issuer,
            "RELAY_TOKEN_CLIENT_IDS": self.issuer.client_id,
            "RELAY_IDENTITY_SIGNING_KEY": private,
            # One benchmark driver sends thousands of requests a second: lift its rate limit.
            "RELAY_RATE_LIMIT_DRIVER": "10000/100000",
            "RELAY_RATE_LIMIT_OPS": "100/100",
            **{f"RELAY_UPSTREAM_{m.upper()}": u for m, u in upstreams.items()},
        }
        extra_env = env or {}
        env = {**environment, **extra_env}
        env.pop("RELAY_ROUTES_FILE", None)
        if routes:
            import tomli_w  # a bench-only dependency

            path = state / f"routes-{self.port}.toml"
            # Found, not spelled out: a --baseline tree may keep it elsewhere.
            base = tomllib.loads(in_tree(root, "routes.toml").read_text())
            path.write_text(tomli_w.dumps(_merged(base, routes)))
            env["RELAY_ROUTES_FILE"] = str(path)
        # The product's own server entry, as relay/stack.py starts it: uvicorn with the
        # httptools EdgeProtocol (header limits, read timeouts), uvloop, one process.
        argv = [
            sys.executable,
            "-P",
            "-m",
            # Found, not spelled out: a --baseline tree may keep it elsewhere.
            ".".join(in_tree(root, "server.py").relative_to(root).with_suffix("").parts),
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--log-level",
            "warning",
        ]
        # ``wrapper``: a command the server runs under (bench.instructions: callgrind), which
        # slows its start down a lot.
        self.argv = pinned(cpus, [*(wrapper or []), *argv])
        self.ready_seconds = 600.0 if wrapper else 60.0
        self.proc = Process(
            "gateway", self.argv, env, state / f"gateway-{self.port}.log", port=self.port
        )
        self.token = self.issuer.mint("D-1001", Role.DRIVER, "D-1001")
        self.ops_token = self.issuer.mint("ops-bench", Role.OPS)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> Gateway:
        self.proc.start()
        self.proc.wait_ready(time.monotonic() + self.ready_seconds)
        return self

    def stop(self) -> None:
        self.proc.stop()

    def get(self, path: str, timeout: float = 5.0) -> httpx.Response:
        return httpx.get(
            self.url + path, headers={"authorization": "Bearer " + self.token}, timeout=timeout
        )

    @property
    def pid(self) -> int:
        assert self.proc.proc is not None, "not started"
        return self.proc.proc.pid

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process and its workers have used so far."""
        return process_cpu_seconds(self.process_ids())

    def process_ids(self) -> list[int]:
        """The server process and its workers."""
        assert self.proc.proc is not None
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.proc.pid)], capture_output=True, text=True
        ).stdout.split()
        return [self.proc.proc.pid, *map(int, out)]

    def breaker_state(self, module: str) -> str:
        status = httpx.get(
            self.url + "/ops/status",
            timeout=5,
            headers={"authorization": "Bearer " + self.ops_token},
        ).json()
        return status["modules"][module]["breaker"]["state"]


class Balancer:
    """nginx in front of gateway processes, with the configuration `relay dev --gateways N`
    runs (relay/balancer.py: round-robin, keep-alive, X-Forwarded-For)."""

    def __init__(self, state: Path, gateway_ports: list[int]) -> None:
        from relay import balancer  # the product's own configuration

        self.port = free_port()
        prefix = state / f"balancer-{self.port}"
        conf = balancer.write_config(prefix, self.port, gateway_ports)
        self.proc = Process(
            "balancer",
            pinned(SERVER_CPU, balancer.argv(NGINX, prefix, conf)),
            dict(os.environ),
            prefix / "stdout.log",
            port=self.port,
        )

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> Balancer:
        self.proc.start()
        _wait_port(self.port)
        return self

    def stop(self) -> None:
        self.proc.stop()


def in_tree(root: Path, name: str) -> Path:
    """The gateway's file ``name`` in the tree at ``root``, wherever the tree keeps it
    (gateway/server.py in older trees, a subpackage in newer ones)."""
    found = sorted(p for p in (root / "gateway").rglob(name) if "__pycache__" not in p.parts)
    if len(found) != 1:
        raise RuntimeError(f"{len(found)} gateway files named {name} under {root}: {found}")
    return found[0]


def _merged(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merged(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


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
    """The command as the report prints it: paths inside the repository relative to it."""
    return " ".join(shlex.quote(a) for a in argv).replace(str(ROOT) + "/", "")


__all__ = [
    "Balancer",
    "BlackHole",
    "Gateway",
    "Nginx",
    "WrkResult",
    "command_line",
    "in_tree",
    "parse_wrk",
    "wrk",
    "wrk_argv",
]
