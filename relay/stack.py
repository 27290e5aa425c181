"""The local stack: moto server, every module as its own process, the gateway.

Everything listens on 127.0.0.1. Tables, queues, topics and keys come from template.yaml
(see :mod:`relay.cloud`); each process gets the environment its Lambda function would get,
pointing at the emulator. A module process can be stopped and started again on the same
port, as a game day does to a real module.

With ``supervise=True`` (``relay dev``) a process that exits is restarted with backoff,
one stopped on purpose stays down until started again, and ``relay ps|stop|start|restart``
reach the stack through its control socket (:mod:`relay.supervisor`).

With ``cells=N`` (N >= 2, ``relay dev --cells N``) loads is celled (docs/deploy.md, Cells):
the loads template is deployed once per cell and each cell runs as its own process,
``loads/cell-1`` .. ``loads/cell-N``, with its own tables and port; there is no ``loads``.

With ``regions=("us-east-1", "us-west-2")`` (``relay dev --regions``; docs/deploy.md,
Regions) one emulator serves both regions (moto keeps each region's resources apart). The
primary's stacks are deployed first (their global tables make their replicas in the second
region), then the second region's. The primary runs every process under today's names; the
second region runs only what must be its own, each named ``<region>/<name>``: its gateway,
its critical modules (``us-west-2/loads`` or ``us-west-2/loads/cell-k``,
``us-west-2/gatepass``), its deferred-writes replayer and its notifications worker (each
region's loads enqueues to its own region's queue, and each region's gateway defers to its
own queue). navigate and message run in the primary only: the second region's stacks
publish the primary's processes as their URLs, so its gateway calls them across regions (a
degradable and a deferrable module). The fallback projector runs in the primary only, as
the template deploys it. Every process has ``AWS_REGION`` of its region; each gateway has
``RELAY_PEER_UPSTREAMS``, the other region's critical module processes. A ``replicator``
(:mod:`relay.replicator`) plays DynamoDB global tables between the regions, and nginx on
the gateway port plays Route 53 (``frontdoor``, :mod:`relay.frontdoor`), moved by the
routing controls that ``relay region evacuate|restore`` pulls.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import httpx

from module_kit.signed_context import generate_key_pair

from . import balancer, frontdoor
from .balancer import BALANCER_NAME
from .cloud import CELLED_STACK, ROOT, LocalCloud, StackResult, cell_names
from .devissuer import DevIssuer
from .frontdoor import FRONTDOOR_NAME
from .supervisor import ControlServer, RestartPolicy, Supervisor, control_socket_path

HOST = "127.0.0.1"
# Logs, the dev token secret and the running stack's addresses (RELAY_STATE_DIR overrides).
STATE_DIR = Path(os.environ.get("RELAY_STATE_DIR", ROOT / ".relay"))
LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
# Module function logical id -> (module name, ASGI app factory).
MODULES: dict[str, tuple[str, str]] = {
    "LoadsFunction": ("loads", "modules.loads.app:create_app"),
    "GatepassFunction": ("gatepass", "modules.gatepass.app:create_app"),
    "NavigateFunction": ("navigate", "modules.navigate.app:create_app"),
    "MessageFunction": ("message", "modules.message.app:create_app"),
}
GATEWAY_FUNCTION = "GatewayFunction"
CELLED_FUNCTION = "LoadsFunction"  # the function of the celled module's stack (CELLED_STACK)
EVENT_SOURCES = {
    "NotificationsFunction": "notifications",
    "DeferredReplayFunction": "replay",
    "FallbackProjectorFunction": "projector",
}
# Run in the primary region only (degradable, deferrable): the other region's stacks
# publish the primary's processes as their URLs.
PRIMARY_ONLY_FUNCTIONS = ("NavigateFunction", "MessageFunction")
# The modules every region runs, and its gateway's peer upstreams name (routes.toml's
# critical tier).
CRITICAL_MODULES = ("loads", "gatepass")
REPLICATOR_NAME = "replicator"
CONSOLE_NAME = "console"  # the operators' dashboard page (relay.console)
OPS_TOKEN_TTL_SECONDS = 12 * 3600  # the console's ops token, as long as relay dev's dev token
REPLICATION_STATS_FILE = "replication.json"
REGION_PREFIX = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")  # gateway.regions.control.REGION_NAME
log = logging.getLogger("relay.stack")
START_TIMEOUT_SECONDS = 30.0
RETIRE_AFTER_SECONDS = 10.0  # a promoted version's predecessor runs on this long


LISTEN_PORTS = (10_000, 32_000)  # where free_port looks, below the kernel's ephemeral range
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_port() -> int:
    """A loopback port nothing listens on, for a process to come: below the kernel's
    ephemeral range (an outgoing connection made between choosing a port and the process
    binding it, say one of the deploy's many calls to the emulator, could take a port from
    that range, and the process would fail to start while another answers there), and never
    the same one twice in this process."""
    low, high = LISTEN_PORTS[0], min(LISTEN_PORTS[1], _ephemeral_low() - 1)
    for _ in range(500):
        port = low + secrets.randbelow(high - low + 1)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:  # that range is full: let the kernel choose
        s.bind((HOST, 0))
        return s.getsockname()[1]


def log_name(name: str) -> str:
    """A process's log file name: ``loads/cell-1`` logs to ``loads-cell-1.log``,
    ``us-west-2/gateway`` to ``us-west-2-gateway.log``."""
    return name.replace("/", "-") + ".log"


def split_region(name: str) -> tuple[str | None, str]:
    """A process name's region prefix and the rest: ``("us-west-2", "loads/cell-1")`` for
    ``us-west-2/loads/cell-1``, ``(None, "loads")`` for the primary's ``loads``."""
    head, sep, rest = name.partition("/")
    if sep and REGION_PREFIX.match(head):
        return head, rest
    return None, name


def module_of(name: str) -> str:
    """The module a module process serves: ``loads`` for ``loads``, ``loads/cell-1`` and
    ``us-west-2/loads/cell-1``."""
    return split_region(name)[1].partition("/")[0]


def local_gateway_env(state_dir: Path, identity_private_key: str) -> dict[str, str]:
    """What differs locally: the dev issuer instead of Cognito, no SigV4, the key in env."""
    issuer = DevIssuer.load_or_create(state_dir)
    return {
        "RELAY_STAGE": "local",
        # Function URLs with AWS_IAM auth do not exist locally: no SigV4 on loopback.
        "RELAY_SIGN_UPSTREAMS": "false",
        "RELAY_TOKEN_ISSUER": issuer.issuer,
        "RELAY_TOKEN_CLIENT_IDS": issuer.client_id,
        "RELAY_JWKS_URL": "file://" + str(issuer.write_jwks(state_dir)),
        "RELAY_IDENTITY_SIGNING_KEY": identity_private_key,
        "RELAY_IDENTITY_SIGNING_KEY_SECRET_ARN": "",
    }


@dataclass
class Process:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    port: int | None = None
    health_path: str = "/healthz"
    proc: subprocess.Popen | None = None
    ca_file: Path | None = None  # set when the process serves HTTPS
    cwd: Path = ROOT  # where it runs (a version of a module runs in its own source tree)
    # Its children outlive it (nginx's workers after a `kill -9` of the master keep the
    # port): its process group is killed after it exits, before it starts again.
    reap_group: bool = False

    @property
    def url(self) -> str:
        return f"{'https' if self.ca_file else 'http'}://{HOST}:{self.port}"

    def start(self) -> None:
        self._reap()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def exit_code(self) -> int | None:
        """How it ended (negative: killed by that signal); None while running or never run."""
        return None if self.proc is None else self.proc.poll()

    def wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(
                    f"{self.name} exited at start-up; see {self.log_path}:\n"
                    + self.log_path.read_text()[-2000:]
                )
            if self.port is None:
                return
            try:
                verify: ssl.SSLContext | bool = True
                if self.ca_file:  # the self-signed certificate (relay dev --tls)
                    verify = ssl.create_default_context(cafile=str(self.ca_file))
                if (
                    httpx.get(self.url + self.health_path, timeout=1.0, verify=verify).status_code
                    < 500
                ):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready in time; see {self.log_path}")

    def stop(self, timeout: float = 5.0) -> None:
        if not self.running():
            self._reap()
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reap()

    def _reap(self) -> None:
        """Kill what an exited ``reap_group`` process left in its process group (started
        with ``start_new_session``, the group's id is the process's pid)."""
        if not self.reap_group or self.proc is None or self.proc.poll() is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


@dataclass
class LocalStack:
    """Start with :meth:`start`, stop with :meth:`stop` (or use as a context manager)."""

    gateway_port: int = 8000
    state_dir: Path = STATE_DIR
    seed: bool = True
    # Retry backoff of the local SQS event sources (base, max seconds); tests shorten it.
    event_source_backoff: tuple[int, int] = (1, 60)
    # Serve the gateway over HTTPS with a self-signed certificate (relay dev --tls).
    tls: bool = False
    # Gateway processes (relay dev --gateways N): with N > 1, gateway-1..gateway-N on ports
    # of their own, each its own memory, behind nginx (``balancer``, relay.balancer) on
    # gateway_port; with 1, the one ``gateway`` process on gateway_port and no nginx.
    gateways: int = 1
    # Loads cells (relay dev --cells N): with N > 1, one loads stack and process per cell,
    # loads/cell-1 .. loads/cell-N, each with its own tables and port; with 1, uncelled.
    cells: int = 1
    # The regions (relay dev --regions), the primary first: one runs everything as before;
    # two run the second region's critical processes too, the replicator and the front door.
    regions: tuple[str, ...] = ("us-east-1",)
    # Extra gateway settings (RELAY_*), e.g. looser rate limits for a fuzzing run.
    gateway_overrides: dict[str, str] = field(default_factory=dict)
    # Restart processes that exit, with backoff, and serve `relay ps|stop|start|restart`
    # on the control socket (relay dev); see relay.supervisor.
    supervise: bool = False
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    # The operators' console (relay dev): the dashboard page over the gateway's ops API, on
    # console_port (0: a free one), polling the gateway with an ops token minted here.
    console: bool = False
    console_port: int = 0
    # Called with each supervision event ("loads exited with code -9; restarting in 1 s"),
    # besides logs/supervisor.log; relay dev prints them.
    on_event: Callable[[str], None] | None = None
    processes: dict[str, Process] = field(default_factory=dict)
    cloud: LocalCloud | None = None  # the primary region's
    deployed: StackResult | None = None  # the primary region's
    emulator_url: str = ""
    # Every region's LocalCloud and deployed stacks (the primary's are cloud and deployed).
    region_clouds: dict[str, LocalCloud] = field(default_factory=dict)
    region_deployed: dict[str, StackResult] = field(default_factory=dict)
    front_door: frontdoor.NginxFrontDoor | None = field(default=None, init=False, repr=False)
    start_seconds: float | None = field(default=None, init=False)  # start() took this long
    _ports: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    # Each process running a function: name -> (region, logical id, cell)
    _functions: dict[str, tuple[str, str, str | None]] = field(
        default_factory=dict, init=False, repr=False
    )
    _frontdoor_controller: frontdoor.FrontDoorController | None = field(
        default=None, init=False, repr=False
    )
    _frontdoor_thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _frontdoor_stop: threading.Event = field(
        default_factory=threading.Event, init=False, repr=False
    )
    supervisor: Supervisor | None = field(default=None, init=False, repr=False)
    _supervision_stop: threading.Event = field(
        default_factory=threading.Event, init=False, repr=False
    )
    _supervision_thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _control: ControlServer | None = field(default=None, init=False, repr=False)
    _redeploy_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    identity_private_key: str = field(default="", init=False, repr=False)
    # the console's ops token (relay dev prints it)
    ops_token: str = field(default="", init=False, repr=False)
    _retiring: list[Process] = field(default_factory=list, init=False, repr=False)

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def gateway_url(self) -> str:
        """Where clients connect: the front door of two regions, the balancer in front of a
        fleet, else the gateway."""
        if self.multi_region:
            return self.processes[FRONTDOOR_NAME].url
        front = BALANCER_NAME if self.gateways > 1 else "gateway"
        return self.processes[front].url

    def region_gateway_url(self, region: str) -> str:
        """``region``'s gateway itself, not through the front door."""
        return self.processes[self.region_gateway_names(region)[0]].url

    @property
    def primary_region(self) -> str:
        return self.regions[0]

    @property
    def multi_region(self) -> bool:
        return len(self.regions) > 1

    @property
    def replication_stats_file(self) -> Path:
        """The replicator's stats (applied, superseded, lag ...), rewritten every second."""
        return self.state_dir / REPLICATION_STATS_FILE

    def process_name(self, region: str, name: str) -> str:
        """``name`` in ``region``: as it is in the primary, ``<region>/<name>`` elsewhere."""
        return name if region == self.primary_region else f"{region}/{name}"

    def region_module_processes(self, region: str) -> dict[str, tuple[str, str | None]]:
        """``region``'s module processes: every module in the primary; the critical ones
        (loads or its cells, gatepass) elsewhere, named ``<region>/...``."""
        if region == self.primary_region:
            return self.module_processes
        return {
            self.process_name(region, name): (lid, cell)
            for name, (lid, cell) in self.module_processes.items()
            if lid not in PRIMARY_ONLY_FUNCTIONS
        }

    def region_gateway_names(self, region: str) -> list[str]:
        """``region``'s gateway processes (:attr:`gateway_names` in the primary)."""
        if region == self.primary_region:
            return self.gateway_names
        return [self.process_name(region, "gateway")]

    @property
    def identity_key_file(self) -> Path:
        """The run's identity private key (PEM, mode 0600), for ``relay deploy``."""
        return self.state_dir / "identity-key.pem"

    @property
    def cell_names(self) -> list[str]:
        """The loads cells: ``cell-1`` .. ``cell-N``, or none (uncelled)."""
        return cell_names(self.cells)

    @property
    def module_processes(self) -> dict[str, tuple[str, str | None]]:
        """Each module process: name -> (function logical id, its cell or None)."""
        out: dict[str, tuple[str, str | None]] = {}
        for lid, (module, _) in MODULES.items():
            if lid == CELLED_FUNCTION and self.cell_names:
                out.update({f"{module}/{cell}": (lid, cell) for cell in self.cell_names})
            else:
                out[module] = (lid, None)
        return out

    @property
    def gateway_names(self) -> list[str]:
        """The gateway processes: ``gateway``, or ``gateway-1`` .. ``gateway-N``."""
        if self.gateways == 1:
            return ["gateway"]
        return [f"gateway-{k}" for k in range(1, self.gateways + 1)]

    def module_url(self, name: str) -> str:
        return self.processes[name].url

    def start(self) -> None:
        try:
            self._start()
            if self.supervise:
                self._start_supervision()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        if self.gateways < 1:
            raise ValueError("a stack needs at least one gateway process")
        self.check_regions()
        nginx = None
        if self.gateways > 1 or self.multi_region:
            if self.tls:
                raise ValueError(
                    "--tls serves one gateway process; use it without --gateways or --regions"
                )
            nginx = balancer.nginx_binary()
            if nginx is None:
                raise RuntimeError(balancer.NOT_INSTALLED)
        started = time.monotonic()
        self._start_emulator()
        self.deploy()
        self.plan()
        for name, proc in self.processes.items():
            if name != "emulator":
                proc.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        for proc in self.processes.values():
            proc.wait_ready(deadline)
        self._start_frontdoor_controller()
        self.start_seconds = time.monotonic() - started
        self._write_state()

    def check_regions(self) -> None:
        """Refuse regions that cannot run (ValueError), before anything starts."""
        from gateway.regions.control import REGION_NAME

        if not self.regions:
            raise ValueError("a stack runs in at least one region")
        if len(set(self.regions)) != len(self.regions):
            raise ValueError(f"a region is named twice: {', '.join(self.regions)}")
        if len(self.regions) > 2:
            raise ValueError("the local stack runs one or two regions (a primary and one more)")
        for region in self.regions:
            if not re.match(REGION_NAME, region):
                raise ValueError(f"{region!r} is not a region name (us-east-1, us-west-2 ...)")
        if self.multi_region and self.gateways > 1:
            raise ValueError(
                "--regions runs one gateway per region behind the front door; "
                "use it without --gateways"
            )

    def _start_emulator(self) -> None:
        moto_port = free_port()
        self.emulator_url = f"http://{HOST}:{moto_port}"
        # moto's server, with SQS FIFO groups kept in order and DynamoDB transactions that
        # cannot undo each other (relay/emulator.py). One server serves every region: moto
        # keeps each region's resources apart, by the region a request is signed for.
        moto = Process(
            "emulator",
            [sys.executable, "-m", "relay.emulator", "-H", HOST, "-p", str(moto_port)],
            self.base_env(self.primary_region),
            self.state_dir / "logs" / "emulator.log",
            port=moto_port,
            health_path="/moto-api/",
        )
        self.processes["emulator"] = moto
        moto.start()
        moto.wait_ready(time.monotonic() + START_TIMEOUT_SECONDS)

    def deploy(self) -> None:
        """Deploy every region's stacks into the emulator at ``emulator_url`` (the primary's
        first: its global tables create their replicas in the other region), and seed the
        primary's tables (the replicator copies the global ones). Ports are chosen here:
        every stack publishes its region's module URLs."""
        self._ports = {
            name: free_port()
            for region in self.regions
            for name in self.region_module_processes(region)
        }
        # A fresh identity key pair per run: the platform stack publishes the public half
        # (SSM) for the modules; every stack of the stage, in order (docs/deploy.md).
        identity_private, identity_public = generate_key_pair()
        # relay deploy signs a new version's contract check with it, as the gateway would
        self.identity_private_key = identity_private
        self.identity_key_file.parent.mkdir(parents=True, exist_ok=True)
        self.identity_key_file.touch(mode=0o600)
        self.identity_key_file.chmod(0o600)  # also when an earlier run's file is there
        self.identity_key_file.write_text(identity_private)
        parameters: dict[str, Any] = {"Stage": "local", "IdentityPublicKey": identity_public}
        if self.multi_region:
            parameters |= {"PrimaryRegion": self.regions[0], "ReplicaRegion": self.regions[1]}
        self._deploy_regions(parameters)
        if self.seed:
            self._seed(self._session(self.primary_region))

    def _deploy_regions(self, parameters: dict[str, Any]) -> None:
        """Each region's LocalCloud and stacks, the primary's first."""
        for region in self.regions:
            cloud = LocalCloud(
                region=region,
                function_urls=self._function_urls(region),
                endpoint_url=self.emulator_url,
                session=self._session(region),
            )
            self.region_clouds[region] = cloud
            if region != self.primary_region:
                # the second region replicates the primary's gate pass signing key
                primary = self.region_deployed[self.primary_region]
                parameters = parameters | {
                    "PrimarySigningKeyArn": primary.children["GatepassApp"].outputs["SigningKeyArn"]
                }
            self.region_deployed[region] = cloud.deploy_system(parameters, cells=self.cells)
        self.cloud = self.region_clouds[self.primary_region]
        self.deployed = self.region_deployed[self.primary_region]

    def _function_urls(self, region: str) -> dict[str, str]:
        """What ``region``'s stacks publish as each module function's URL: its own module
        processes, and (another region than the primary) the primary's navigate and
        message, which run there only (degradable and deferrable: the gateway calls them
        across regions)."""
        if region in self.region_clouds:  # a redeploy: the URLs as they are now
            return self.region_clouds[region].function_urls
        urls = {
            _url_key(lid, cell): f"http://{HOST}:{self._ports[name]}/"
            for name, (lid, cell) in self.region_module_processes(region).items()
        }
        if region != self.primary_region:
            for lid in PRIMARY_ONLY_FUNCTIONS:
                urls[lid] = f"http://{HOST}:{self._ports[MODULES[lid][0]]}/"
        return urls

    def plan(self) -> None:
        """Every process of the deployed stack, made but not started: names, argv, ports and
        environments (the primary region's processes under today's names, another region's
        under ``<region>/``)."""
        assert self.deployed is not None
        logs = self.state_dir / "logs"
        front = self.gateways > 1 or self.multi_region  # nginx in front of the gateways
        gateway_local = local_gateway_env(self.state_dir, self.identity_private_key)
        version = source_version(ROOT)
        gateway_ports: dict[str, list[int]] = {}
        for region in self.regions:
            aws_env = self.aws_env(region)
            for name, (lid, cell) in self.region_module_processes(region).items():
                factory = MODULES[lid][1]
                env = {
                    **aws_env,
                    **self.function_env(lid, cell=cell, region=region),
                    "RELAY_VERSION": version,
                }
                port = self._ports[name]
                self.processes[name] = Process(
                    name, _uvicorn(factory, port), env, logs / log_name(name), port=port
                )
                self._functions[name] = (region, lid, cell)
            self._plan_event_sources(region, gateway_local)
            gateway_env = {
                **aws_env,
                **self.function_env(GATEWAY_FUNCTION, region=region),
                **gateway_local,
                # Behind nginx, X-Forwarded-For from it (loopback) names the client.
                **({"RELAY_TRUSTED_PROXIES": HOST} if front else {}),
                **(
                    {"RELAY_PEER_UPSTREAMS": json.dumps(self.peer_upstreams(region))}
                    if self.multi_region
                    else {}
                ),
                **self.gateway_overrides,
            }
            cert = key = None
            if self.tls:
                from .tls import self_signed_certificate

                cert, key = self_signed_certificate(self.state_dir)
            names = self.region_gateway_names(region)
            ports = [self.gateway_port] if not front else [free_port() for _ in names]
            gateway_ports[region] = ports
            for name, port in zip(names, ports, strict=True):
                # The gateway's own server entry: header limits, read timeouts, no proxy
                # headers.
                argv = [
                    sys.executable,
                    "-m",
                    "gateway.edge.server",
                    "--host",
                    HOST,
                    "--port",
                    str(port),
                ]
                if cert is not None and key is not None:
                    argv += ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
                self.processes[name] = Process(
                    name, argv, dict(gateway_env), logs / log_name(name), port=port, ca_file=cert
                )
                self._functions[name] = (region, GATEWAY_FUNCTION, None)
        if self.multi_region:
            self._plan_replicator()
            self._plan_frontdoor({r: ports[0] for r, ports in gateway_ports.items()})
        elif self.gateways > 1:
            nginx = balancer.nginx_binary() or "nginx"
            prefix = self.state_dir / BALANCER_NAME
            conf = balancer.write_config(prefix, self.gateway_port, gateway_ports[self.regions[0]])
            self.processes[BALANCER_NAME] = Process(
                BALANCER_NAME,
                balancer.argv(nginx, prefix, conf),
                {**os.environ},
                logs / log_name(BALANCER_NAME),
                port=self.gateway_port,
                reap_group=True,
            )
        if self.console:
            self._plan_console()

    def _plan_console(self) -> None:
        """The operators' console (relay.console) on its own port, watching the gateway
        clients reach (the balancer, the front door), with an ops token of this run."""
        from shared_contracts.identity import Role

        from .console.server import ENV_CA_FILE, ENV_GATEWAY_URL, ENV_LOG_DIR, ENV_TOKEN

        port = self.console_port or free_port()
        self.ops_token = DevIssuer.load_or_create(self.state_dir).mint(
            "ops-dev", Role.OPS, ttl_seconds=OPS_TOKEN_TTL_SECONDS
        )
        ca_file = self.processes[self.gateway_names[0]].ca_file
        self.processes[CONSOLE_NAME] = Process(
            CONSOLE_NAME,
            [sys.executable, "-m", "relay.console", "--host", HOST, "--port", str(port)],
            {
                **self.base_env(self.primary_region),
                ENV_GATEWAY_URL: self.gateway_url,
                ENV_LOG_DIR: str(self.state_dir / "logs"),
                ENV_TOKEN: self.ops_token,
                **({ENV_CA_FILE: str(ca_file)} if ca_file else {}),
            },
            self.state_dir / "logs" / log_name(CONSOLE_NAME),
            port=port,
        )

    @property
    def console_url(self) -> str | None:
        """The dashboard page's address, if the console runs."""
        proc = self.processes.get(CONSOLE_NAME)
        return f"{proc.url}/" if proc is not None else None

    def _plan_event_sources(self, region: str, gateway_local: dict[str, str]) -> None:
        """One local event source runner per SQS-triggered function of ``region`` (its
        notifications worker and deferred-writes replayer: each region's queues are its
        own) and per function with DynamoDB stream events (the projector: the primary's
        only, the template deploys it there alone)."""
        cloud, deployed = self.region_clouds[region], self.region_deployed[region]
        aws_env = self.aws_env(region)
        for lid, owner in deployed.functions().items():
            for queue in deployed.sqs_event_sources(lid):
                handler = owner.template["Resources"][lid]["Properties"]["Handler"]
                name = self.process_name(region, EVENT_SOURCES.get(lid, lid))
                self.processes[name] = Process(
                    name,
                    [sys.executable, "-m", "relay.eventsource", handler],
                    {
                        **aws_env,
                        **self.function_env(lid, region=region),
                        **gateway_local,
                        "EVENT_SOURCE_QUEUE_URL": queue.ref,
                        "EVENT_SOURCE_QUEUE_ARN": queue.attrs["Arn"],
                        "EVENT_SOURCE_BACKOFF_BASE_SECONDS": str(self.event_source_backoff[0]),
                        "EVENT_SOURCE_BACKOFF_MAX_SECONDS": str(self.event_source_backoff[1]),
                        **self._peer_env(lid, region),
                    },
                    self.state_dir / "logs" / log_name(name),
                )
                self._functions[name] = (region, lid, None)
        # reading every stream of the function (relay.eventsource.DynamoDBStreamRunner)
        for lid, owner in deployed.functions().items():
            if streams := cloud.stream_event_sources(deployed, lid):
                handler = owner.template["Resources"][lid]["Properties"]["Handler"]
                name = self.process_name(region, EVENT_SOURCES.get(lid, lid))
                self.processes[name] = Process(
                    name,
                    [sys.executable, "-m", "relay.eventsource", handler],
                    {
                        **aws_env,
                        **self.function_env(lid, region=region),
                        "EVENT_SOURCE_STREAM_ARNS": ",".join(streams),
                    },
                    self.state_dir / "logs" / log_name(name),
                )
                self._functions[name] = (region, lid, None)

    def _plan_replicator(self) -> None:
        """The global tables' stand-in (relay.replicator): every replicated table, between
        every region, its stats in ``<state dir>/replication.json``."""
        assert self.deployed is not None
        tables = self.global_tables
        if not tables:
            log.warning("the deployed stacks name no global table: no replicator runs")
            return
        self.processes[REPLICATOR_NAME] = Process(
            REPLICATOR_NAME,
            [sys.executable, "-m", "relay.replicator"],
            {
                **self.aws_env(self.primary_region),
                "RELAY_REPLICATOR_TABLES": ",".join(tables),
                "RELAY_REPLICATOR_REGIONS": ",".join(self.regions),
                "RELAY_REPLICATOR_STATS_FILE": str(self.replication_stats_file),
            },
            self.state_dir / "logs" / log_name(REPLICATOR_NAME),
        )

    def _plan_frontdoor(self, gateway_ports: dict[str, int]) -> None:
        """nginx as the front door on gateway_port, every hostname at its own region."""
        nginx = balancer.nginx_binary() or "nginx"
        prefix = self.state_dir / FRONTDOOR_NAME
        self.front_door = frontdoor.NginxFrontDoor(
            prefix,
            self.gateway_port,
            gateway_ports,
            status_port=free_port(),
            master_pid=self._frontdoor_pid,
        )
        conf = self.front_door.write(frontdoor.answering(self.regions, self.regions))
        self.processes[FRONTDOOR_NAME] = Process(
            FRONTDOOR_NAME,
            balancer.argv(nginx, prefix, conf),
            {**os.environ},
            self.state_dir / "logs" / log_name(FRONTDOOR_NAME),
            port=self.gateway_port,
            reap_group=True,
        )

    def _frontdoor_pid(self) -> int | None:
        proc = self.processes.get(FRONTDOOR_NAME)
        return proc.pid if proc is not None and proc.running() else None

    def _start_frontdoor_controller(self) -> None:
        """The thread moving the front door's hostnames with the routing controls."""
        if self.front_door is None:
            return
        table = self.function_env(GATEWAY_FUNCTION).get("RELAY_ROUTING_TABLE")
        if not table:
            log.warning("the gateway has no RELAY_ROUTING_TABLE: the front door never moves")
            return
        reader = frontdoor.RoutingReader(
            table,
            self.regions,
            endpoint_url=self.emulator_url,
            session=self._session(self.primary_region),
        )
        self._frontdoor_controller = frontdoor.FrontDoorController(
            self.regions,
            reader,
            self.front_door,
            record=self.front_door.record,
            say=self.report,
        )
        self._frontdoor_stop.clear()
        self._frontdoor_thread = threading.Thread(
            target=self._frontdoor_controller.run,
            args=(self._frontdoor_stop,),
            name="relay-frontdoor",
            daemon=True,
        )
        self._frontdoor_thread.start()

    def _stop_frontdoor_controller(self) -> None:
        self._frontdoor_stop.set()
        if self._frontdoor_thread is not None:
            self._frontdoor_thread.join(timeout=START_TIMEOUT_SECONDS)
            self._frontdoor_thread = None

    def _peer_env(self, logical_id: str, region: str) -> dict[str, str]:
        """``RELAY_PEER_UPSTREAMS`` for a function its template gives peer regions
        (``RELAY_REGION_PEERS``): what it would read from the peers' SSM in AWS."""
        if not self.multi_region:
            return {}
        if not self.function_env(logical_id, region=region).get("RELAY_REGION_PEERS"):
            return {}
        return {"RELAY_PEER_UPSTREAMS": json.dumps(self.peer_upstreams(region))}

    def peer_upstreams(self, region: str) -> dict[str, dict[str, str]]:
        """``RELAY_PEER_UPSTREAMS`` of ``region``'s gateways: every other region's critical
        module processes, as routes.toml writes an upstream (one URL, or
        "cell-1=URL,cell-2=URL")."""
        out: dict[str, dict[str, str]] = {}
        for peer in self.regions:
            if peer == region:
                continue
            modules: dict[str, dict[str | None, str]] = {}
            for name, (_lid, cell) in self.region_module_processes(peer).items():
                modules.setdefault(module_of(name), {})[cell] = (
                    f"http://{HOST}:{self._ports[name]}/"
                )
            out[peer] = {
                module: by_cell[None]
                if None in by_cell
                else ",".join(f"{cell}={url}" for cell, url in by_cell.items())
                for module, by_cell in modules.items()
                if module in CRITICAL_MODULES
            }
        return out

    def base_env(self, region: str) -> dict[str, str]:
        """Every process's environment in ``region``: the local credentials and the region."""
        env = {
            **os.environ,
            **LOCAL_CREDENTIALS,
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("AWS_PROFILE", None)
        return env

    def aws_env(self, region: str) -> dict[str, str]:
        return {**self.base_env(region), "AWS_ENDPOINT_URL": self.emulator_url}

    def _session(self, region: str) -> boto3.session.Session:
        return boto3.session.Session(
            aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=region,
        )

    @property
    def global_tables(self) -> list[str]:
        """The replicated tables of the primary's stacks (none with one region)."""
        names = getattr(self.deployed, "global_tables", None)
        return list(names()) if callable(names) else []

    def function_env(
        self, logical_id: str, *, cell: str | None = None, region: str | None = None
    ) -> dict[str, str]:
        """The environment of function ``logical_id`` in ``region`` (the primary's by
        default), of loads cell ``cell``'s stack (the first cell's when celled and none is
        named)."""
        region = region or self.primary_region
        cloud, deployed = self.region_clouds.get(region), self.region_deployed.get(region)
        assert cloud is not None
        assert deployed is not None
        stack = deployed
        if cell is not None:
            stack = deployed.children[f"{CELLED_STACK}/{cell}"]
        return cloud.function_env(stack, logical_id)

    def _seed(self, session: boto3.session.Session) -> None:
        """Demo data, each driver's loads in the driver's default cell (no placements yet)."""
        from .seed import seed_demo_data

        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with (logs / "seed.log").open("a") as metric_lines:  # read by relay.emf
            seed_demo_data(
                self.function_env,
                dynamodb=session.resource("dynamodb", endpoint_url=self.emulator_url),
                sqs=session.client("sqs", endpoint_url=self.emulator_url),
                loads_cells={
                    cell: self.function_env(CELLED_FUNCTION, cell=cell) for cell in self.cell_names
                },
                metrics_stream=metric_lines,
            )

    def output(self, app: str, name: str) -> str:
        assert self.deployed
        return self.deployed.children[app].outputs[name]

    def stop_process(self, name: str) -> None:
        """Stop ``name``; under supervision it is held down until :meth:`start_process`."""
        proc = self.processes[name]
        if self.supervisor is None:
            proc.stop()
            return
        with self.supervisor.lock:
            self.supervisor.hold(name)
            proc.stop()

    def start_process(self, name: str) -> None:
        """Start ``name`` (if it is not running) and wait until it is ready."""
        proc = self.processes[name]
        started = False
        if self.supervisor is None:
            proc.start()
            started = True
        else:
            with self.supervisor.lock:
                self.supervisor.release(name)
                if not proc.running():
                    proc.start()
                    started = True
        proc.wait_ready(time.monotonic() + START_TIMEOUT_SECONDS)
        if name == "emulator" and started:
            self._redeploy()

    def restart_process(self, name: str) -> None:
        self.stop_process(name)
        self.start_process(name)

    def status(self) -> list[dict[str, Any]]:
        """Every process: name, state, pid, url, restarts (what `relay ps` shows)."""
        watched = self.supervisor.status() if self.supervisor else {}
        out = []
        for name, proc in list(self.processes.items()):
            running = proc.running()
            row = {
                "name": name,
                "state": "running" if running else "exited",
                "pid": proc.pid if running else None,
                "restarts": 0,
                "last_exit": None,
                "restart_in": None,
                **watched.get(name, {}),
            }
            row.update(
                url=proc.url if proc.port else None,
                log=str(proc.log_path),
                region=split_region(name)[0] or self.primary_region,
            )
            out.append(row)
        return out

    def stop(self) -> None:
        self._stop_frontdoor_controller()
        self._stop_supervision()
        for name in reversed(list(self.processes)):
            self.processes[name].stop()
        for proc in self._retiring:  # promoted versions' predecessors not stopped yet
            proc.stop()
        state = self.state_dir / "stack.json"
        if state.exists():
            state.unlink()

    # --- versions of a module side by side (relay deploy) ---------------------------

    def start_version(self, module: str, source: Path, version: str) -> Process:
        """Run ``version`` of ``module`` from the source tree ``source`` beside the one in
        service: its own process (``<module>@<version>``) on a port of its own, with the
        module's environment (the same tables and queues) and ``RELAY_VERSION``. Waits
        until it answers its health check; an exiting process is restarted like any other."""
        name = f"{module}@{version}"
        if split_region(module)[0] is not None:
            raise ValueError(
                f"{module}: versions are released in the primary region "
                f"({self.primary_region}) only"
            )
        factory = next((f for n, f in MODULES.values() if n == module_of(module)), None)
        if factory is None or module not in self.processes:
            raise ValueError(f"no module named {module!r}")
        existing = self.processes.get(name)
        if existing is not None and existing.running():
            return existing
        port = free_port()
        base = self.processes[module]
        proc = Process(
            name,
            _uvicorn(factory, port),
            {**base.env, "RELAY_VERSION": version, "PYTHONPATH": str(source)},
            self.state_dir / "logs" / log_name(name),
            port=port,
            cwd=source,
        )
        self._add_process(name, proc)
        proc.start()
        try:
            proc.wait_ready(time.monotonic() + START_TIMEOUT_SECONDS)
        except RuntimeError:
            self._remove_process(name)
            raise
        self._write_state()
        return proc

    def promote_version(self, module: str, version: str) -> None:
        """``<module>@<version>`` becomes ``module``: the process in service under that name
        from now on (and what a restarted gateway is pointed at); the one it replaces stops
        ``RETIRE_AFTER_SECONDS`` later. The gateways already reach the new one: the promoted
        release names its URL."""
        name = f"{module}@{version}"
        new = self.processes[name]
        old = self.processes[module]
        self._remove_process(name, stop=False)
        new.name = module
        self._remove_process(module, stop=False)
        self._add_process(module, new)
        self._publish_url(module, new.url + "/")
        self._write_state()
        # The old one answers a little longer: a gateway that has not read the promotion
        # yet (a busy host) still reaches a live process, not a closed port.
        self._retiring.append(old)
        timer = threading.Timer(RETIRE_AFTER_SECONDS, old.stop)
        timer.daemon = True  # stop() stops it too, whenever the stack ends
        timer.start()

    def _publish_url(self, module: str, url: str) -> None:
        """Where ``module`` is from now on, as its stacks publish it: the SSM parameter the
        gateways re-read (``RELAY_SSM_PATH``), and the URL a restarted gateway starts from.
        With two regions, navigate and message are published by every region's stacks
        (they run in the primary only), and the other region's gateways name the primary's
        critical modules in ``RELAY_PEER_UPSTREAMS`` (read when a gateway starts)."""
        from gateway.routing.directory import url_parameter

        name, _, cell = module.partition("/")
        lid = self.module_processes[module][0] if module in self.module_processes else None
        regions = list(self.regions) if lid in PRIMARY_ONLY_FUNCTIONS else [self.primary_region]
        variable = f"RELAY_UPSTREAM_{name.upper()}"
        for region in regions:
            if path := self.function_env(GATEWAY_FUNCTION, region=region).get("RELAY_SSM_PATH"):
                self._session(region).client("ssm", endpoint_url=self.emulator_url).put_parameter(
                    Name=url_parameter(path, module), Value=url, Overwrite=True
                )
            # and where a redeploy into a restarted emulator puts it
            cloud = self.region_clouds.get(region)
            if cloud is not None and lid is not None:
                cloud.function_urls[_url_key(lid, cell or None)] = url
            for gateway in self.region_gateway_names(region):
                proc = self.processes[gateway]
                if variable in proc.env:
                    value = _with_cell_url(proc.env[variable], cell, url) if cell else url
                    proc.env = {**proc.env, variable: value}
        port = urlsplit(url).port
        if module in self._ports and port is not None:
            self._ports[module] = port
        if self.multi_region and name in CRITICAL_MODULES:
            for region in self.regions[1:]:
                peers = json.dumps(self.peer_upstreams(region))
                for other in self.processes.values():
                    in_region = split_region(other.name)[0] == region
                    if in_region and "RELAY_PEER_UPSTREAMS" in other.env:
                        other.env = {**other.env, "RELAY_PEER_UPSTREAMS": peers}

    def retire_version(self, module: str, version: str) -> None:
        """Stop ``<module>@<version>`` and forget it (a release rolled back)."""
        self._remove_process(f"{module}@{version}")
        self._write_state()

    def _add_process(self, name: str, proc: Process) -> None:
        if self.supervisor is None:
            self.processes[name] = proc
            return
        with self.supervisor.lock:
            self.processes[name] = proc
            self.supervisor.adopt(name)

    def _remove_process(self, name: str, *, stop: bool = True) -> None:
        proc = self.processes.get(name)
        if proc is None:
            return
        if self.supervisor is None:
            self.processes.pop(name)
        else:
            with self.supervisor.lock:
                self.supervisor.forget(name)
                self.processes.pop(name)
        if stop:
            proc.stop()

    # --- supervision (relay dev) --------------------------------------------------

    @property
    def control_socket(self) -> Path:
        return control_socket_path(self.state_dir)

    def report(self, message: str) -> None:
        """A supervision event: logged, appended to logs/supervisor.log, passed to on_event."""
        log.warning("%s", message)
        path = self.state_dir / "logs" / "supervisor.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(f"{datetime.now().isoformat(timespec='seconds')} {message}\n")
        if self.on_event is not None:
            self.on_event(message)

    def _start_supervision(self) -> None:
        self.supervisor = Supervisor(
            self.processes,
            policy=self.restart_policy,
            report=self.report,
            on_restart=self._restarted,
        )
        self._control = ControlServer(self.control_socket, self.control)
        self._control.start()
        self._supervision_stop.clear()
        self._supervision_thread = threading.Thread(
            target=self.supervisor.run,
            args=(self._supervision_stop,),
            name="relay-supervisor",
            daemon=True,
        )
        self._supervision_thread.start()
        self._write_state()

    def _stop_supervision(self) -> None:
        self._supervision_stop.set()
        if self._supervision_thread is not None:
            self._supervision_thread.join(timeout=START_TIMEOUT_SECONDS)
            self._supervision_thread = None
        if self._control is not None:
            self._control.close()
            self._control = None

    def _restarted(self, name: str) -> None:
        if name != "emulator":
            return
        try:
            self._redeploy()
        except Exception as exc:  # said, not fatal to the rest of the stack
            log.exception("redeploying into the emulator failed")
            self.report(
                f"emulator: could not deploy template.yaml into it again ({exc!r}); "
                "`relay restart emulator` tries again"
            )

    def _redeploy(self) -> None:
        """A restarted emulator is empty: deploy template.yaml into it again and reseed.

        Table, queue and topic names are the same; a KMS key gets a new id, so every
        process whose environment changed (gatepass's signing key) is restarted with it.
        Every region's stacks, the primary's first (the replicator reads the new tables'
        streams by itself; the front door reads the empty routing table: every region
        serves).
        """
        if self.cloud is None or self.deployed is None:
            return
        with self._redeploy_lock:
            self.processes["emulator"].wait_ready(time.monotonic() + START_TIMEOUT_SECONDS)
            functions = {n: f for n, f in self._functions.items() if n in self.processes}
            before = {
                name: self.function_env(lid, cell=c, region=r)
                for name, (r, lid, c) in functions.items()
            }
            self._deploy_regions(self.deployed.inputs)
            if self.seed:
                self._seed(self._session(self.primary_region))
            changed = [
                name
                for name, (region, lid, cell) in functions.items()
                if self.function_env(lid, cell=cell, region=region) != before[name]
            ]
            self.report(
                "emulator: tables, queues, topics and keys deployed again from "
                f"template.yaml{' and demo data seeded' if self.seed else ''}; "
                "data written before it restarted is gone"
                + (f"; restarting {', '.join(changed)} for new resource ids" if changed else "")
            )
            for name in changed:
                proc = self.processes[name]
                region, lid, cell = functions[name]
                proc.env = {**proc.env, **self.function_env(lid, cell=cell, region=region)}
                if self.supervisor is not None and self.supervisor.held(name):
                    continue
                self.stop_process(name)
                self.start_process(name)

    def control(self, request: dict[str, Any]) -> dict[str, Any]:
        """One control-socket request: {"command": "ps"|"stop"|"start"|"restart", "name"}."""
        command, name = request.get("command"), request.get("name")
        if command == "ps":
            return {"ok": True, "processes": self.status()}
        if command in ("version-start", "version-promote", "version-retire"):
            return self._version_control(command, request)
        if command not in ("stop", "start", "restart"):
            return {"ok": False, "error": f"unknown command {command!r}"}
        if name not in self.processes:
            return {
                "ok": False,
                "error": f"no process named {name!r}; the processes are "
                + ", ".join(self.processes),
            }
        proc = self.processes[name]
        if command == "stop":
            self.stop_process(name)
            self.report(f"{name} stopped by `relay stop`; it stays down until `relay start {name}`")
            return {"ok": True, "message": f"{name} stopped (held down until `relay start {name}`)"}
        was_running = proc.running()
        try:
            if command == "start":
                self.start_process(name)
            else:
                self.restart_process(name)
        except RuntimeError as exc:
            return {"ok": False, "error": str(exc)}
        if command == "start" and was_running:
            return {"ok": True, "message": f"{name} is already running (pid {proc.pid})"}
        self.report(f"{name} {command}ed by `relay {command}` (pid {proc.pid})")
        return {"ok": True, "message": f"{name} {command}ed (pid {proc.pid})"}

    def _version_control(self, command: str, request: dict[str, Any]) -> dict[str, Any]:
        """``relay deploy``'s requests: start, promote or retire a version of a module."""
        module, version = str(request.get("module", "")), str(request.get("version", ""))
        try:
            if command == "version-start":
                proc = self.start_version(module, Path(str(request.get("source"))), version)
                self.report(f"{proc.name} started from {proc.cwd} (pid {proc.pid}) at {proc.url}")
                return {"ok": True, "url": proc.url, "message": f"{proc.name} at {proc.url}"}
            if command == "version-promote":
                self.promote_version(module, version)
                self.report(f"{module}@{version} promoted: it is {module} now")
                return {"ok": True, "message": f"{module} is version {version}"}
            self.retire_version(module, version)
            self.report(f"{module}@{version} retired")
            return {"ok": True, "message": f"{module}@{version} stopped"}
        except (KeyError, ValueError, RuntimeError) as exc:
            return {"ok": False, "error": f"{command} {module}@{version}: {exc}"}

    def _write_state(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "stack.json").write_text(
            json.dumps(
                {
                    "gateway_url": self.gateway_url,
                    "emulator_url": self.emulator_url,
                    "console_url": self.console_url,  # the operators' dashboard (relay dev)
                    "modules": {n: p.url for n, p in self.processes.items() if p.port},
                    # The celled modules' cells (loads/cell-1 ... among the modules above).
                    "cells": {"loads": self.cell_names} if self.cell_names else {},
                    "notifications_queue_url": self.output(
                        "NotificationsApp", "NotificationsQueueUrl"
                    ),
                    "notifications_dead_letter_queue_url": self.output(
                        "NotificationsApp", "NotificationsDeadLetterQueueUrl"
                    ),
                    "push_topic_arn": self.output("NotificationsApp", "PushTopicArn"),
                    # relay ps|stop|start|restart talk to the stack here (supervised stacks only).
                    "control_socket": str(self.control_socket) if self.supervise else None,
                    # relay deploy: where releases live, and the key it signs smoke calls with
                    "control_table": self.function_env(GATEWAY_FUNCTION).get("RELAY_CONTROL_TABLE"),
                    "identity_key_file": str(self.identity_key_file),
                    # Regions (relay region): the primary first, each one's gateway, the
                    # routing-control table, the front door's and the replicator's files.
                    "regions": list(self.regions),
                    "region_gateways": {
                        r: self.region_gateway_url(r)
                        for r in self.regions
                        if self.region_gateway_names(r)[0] in self.processes
                    },
                    "routing_table": self.function_env(GATEWAY_FUNCTION).get("RELAY_ROUTING_TABLE"),
                    "frontdoor_state": str(self.front_door.state_file) if self.front_door else None,
                    "replication_stats": str(self.replication_stats_file)
                    if REPLICATOR_NAME in self.processes
                    else None,
                },
                indent=2,
            )
        )


def source_version(tree: Path) -> str:
    """A source tree's version label: its git commit (short), ``-dirty`` with uncommitted
    changes to tracked files; ``local`` outside git."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "--short=10", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "local"
    return commit + ("-dirty" if dirty else "")


def _url_key(logical_id: str, cell: str | None) -> str:
    """The key of a module function's URL in ``LocalCloud.function_urls``."""
    return f"{CELLED_STACK}/{cell}/{logical_id}" if cell else logical_id


def _with_cell_url(value: str, cell: str, url: str) -> str:
    """A celled upstream ("cell-1=URL,cell-2=URL") with ``cell``'s URL replaced."""
    parts = [part.partition("=") for part in value.split(",") if part]
    return ",".join(f"{c}={url if c == cell else u}" for c, _, u in parts)


def _uvicorn(factory: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        factory,
        "--factory",
        "--host",
        HOST,
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
