"""The local front door: nginx playing Route 53 for a two-region stack (``relay dev
--regions us-east-1,us-west-2``).

In AWS each region has a hostname of its own (``<region>.api.<domain>``; the app is given
its driver's home region's), and Route 53 failover records answer it with that region
while the region's ARC routing control is On, with the other region while it is Off
(frontdoor/template.yaml). Locally each region's hostname is ``<region>.relay.localhost``
(curl and browsers resolve ``*.localhost`` to loopback), and nginx on the stack's gateway
port has a ``server`` per hostname, proxying to the gateway of the region that answers it
now. Any other Host (``127.0.0.1:8000``) is the primary region's hostname.

What moves a hostname is the routing-control state the gateways read too
(:mod:`gateway.regions.control`, the routing table, a global table): a
:class:`FrontDoorController` thread of the stack reads it every :data:`POLL_SECONDS`, from
the primary region's replica, or the next region's when that one does not answer (as ARC's
five cluster endpoints: the lever must work while a region is failing), and when the set of
serving regions changes it rewrites nginx.conf and reloads nginx (SIGHUP to the master: it
starts workers with the new configuration and lets the old ones finish the requests they
hold, so no request in flight is cut). A hostname whose region does not serve is answered
by the first serving region in the stack's order; with no region serving (the safety rule
forbids it, but a hand-edited table can) every hostname is answered by its own region, as
Route 53 answers with the primary records when every health check fails.

Each switch is recorded in ``<state dir>/frontdoor.json`` (when the change was made, when
the controller saw it, when nginx answered with the new configuration) and in the stack's
log: the benchmark measures an evacuation from them and from the ``relay-region`` header of
the answers. nginx itself confirms a reload: a status ``server`` on a port of its own
answers the configuration's generation, and a reload is done when it answers the new one.

The proxy rules are the balancer's (:mod:`relay.balancer`: client address in
X-Forwarded-For, keep-alive, a request that may have been applied is never sent twice).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from . import balancer
from .balancer import HOST

log = logging.getLogger("relay.frontdoor")

FRONTDOOR_NAME = "frontdoor"  # the nginx process of a two-region stack
HOSTNAME_SUFFIX = ".relay.localhost"
POLL_SECONDS = 0.2  # how often the controller reads the routing controls
RELOAD_TIMEOUT_SECONDS = 5.0  # nginx answers the new generation within this, or it failed
STATE_FILE = "frontdoor.json"
SWITCHES_KEPT = 100
STATUS_PATH = "/frontdoor-generation"
# Reading the routing controls: a replica that does not answer in half a second is skipped
# for the next one (a poll every 0.2 s must not hang on a failing region).
READ_TIMEOUT_SECONDS = 0.5


def hostname(region: str) -> str:
    """A region's hostname at the local front door: ``us-west-2.relay.localhost``."""
    return f"{region}{HOSTNAME_SUFFIX}"


def answering(regions: Sequence[str], serving: Collection[str]) -> dict[str, str]:
    """Which region answers each region's hostname: its own while it serves, else the
    first serving region in ``regions``' order; every region its own when none serves."""
    live = [r for r in regions if r in serving]
    if not live:
        return {r: r for r in regions}
    return {r: r if r in serving else live[0] for r in regions}


def render_config(
    prefix: Path,
    listen_port: int,
    gateway_ports: Mapping[str, int],
    targets: Mapping[str, str],
    *,
    status_port: int,
    generation: int,
) -> str:
    """nginx.conf of the front door on ``listen_port``: a ``server`` per region hostname
    (the first region's is the default server) proxying to the gateway of the region
    ``targets`` names for it; ``gateway_ports``: each region's gateway port (in the
    stack's order, the primary first). The status server on ``status_port`` answers
    ``generation``."""
    regions = list(gateway_ports)
    if not regions:
        raise ValueError("a front door needs at least one region")
    if set(targets) != set(regions) or not set(targets.values()) <= set(regions):
        raise ValueError("every region's hostname needs a target among the regions")
    ports = [*gateway_ports.values(), listen_port, status_port]
    if len(set(ports)) != len(ports):
        raise ValueError("the front door, its status server and every gateway need ports")
    upstreams = "".join(
        balancer.upstream(_upstream_name(region), [port]) for region, port in gateway_ports.items()
    )
    servers = []
    for region in regions:
        default = " default_server" if region == regions[0] else ""
        servers.append(
            f"""    # {hostname(region)}: answered by {targets[region]}
    server {{
        listen {HOST}:{listen_port}{default};
        server_name {hostname(region)};
        client_max_body_size 0;
{balancer.proxy_location(_upstream_name(targets[region]))}    }}
"""
        )
    return f"""# Written by relay dev (relay/frontdoor.py) at each start and each routing change.
# generation {generation}: {", ".join(f"{hostname(r)} -> {targets[r]}" for r in regions)}
{balancer.preamble(prefix)}
    # Each region's gateway.
{upstreams}
{"".join(servers)}
    # Which configuration nginx runs (the controller's check that a reload is done).
    server {{
        listen {HOST}:{status_port};
        location = {STATUS_PATH} {{
            default_type text/plain;
            return 200 "{generation}";
        }}
    }}
}}
"""


def _upstream_name(region: str) -> str:
    return "region_" + region.replace("-", "_")


@dataclass(frozen=True)
class Switch:
    """One change of the front door. Times are wall-clock epoch seconds."""

    serving: list[str]
    targets: dict[str, str]  # hostname -> the region answering it
    changed_at: float | None  # the newest routing change behind it (the lever pulled)
    seen_at: float  # the controller read the new state
    reloaded_at: float | None  # nginx answered with the new configuration (None: failed)

    @property
    def ok(self) -> bool:
        return self.reloaded_at is not None


class RoutingReader:
    """The routing controls, read from the first region's replica that answers (the
    primary's, else the next), with short deadlines.

    A replica may lag (it is a global table): when the primary's read times out and the
    next replica still holds an older control, taking it would move the front door back
    to a state operators already left. Each region's control only ever moves forward
    here: the newest revision seen from any replica wins."""

    def __init__(
        self,
        table: str,
        regions: Sequence[str],
        *,
        endpoint_url: str | None,
        session: Any = None,
    ) -> None:
        import boto3

        from gateway.regions.control import RoutingControls
        from module_kit.aws import client_config

        session = session or boto3.session.Session()
        config = client_config(  # one attempt: the next poll is the retry
            connect_timeout=READ_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
            retries={"mode": "standard", "total_max_attempts": 1},
        )
        self.replicas = [
            (
                region,
                RoutingControls(
                    table,
                    dynamodb=session.resource(
                        "dynamodb", region_name=region, endpoint_url=endpoint_url, config=config
                    ),
                ),
            )
            for region in regions
        ]
        self.newest: dict[str, Any] = {}  # region -> the newest RegionControl seen

    def __call__(self) -> dict[str, Any]:
        error: Exception | None = None
        for region, controls in self.replicas:
            try:
                read = controls.load()
            except Exception as exc:  # the next replica
                log.debug("routing controls unreadable in %s: %r", region, exc)
                error = exc
                continue
            for name, control in read.items():
                known = self.newest.get(name)
                if known is None or control.revision > known.revision:
                    self.newest[name] = control
            return dict(self.newest)
        assert error is not None
        raise error


class FrontDoorController:
    """Moves the hostnames when the set of serving regions changes.

    ``load()`` returns the routing controls (``{region: RegionControl}``); ``apply(targets)``
    puts ``{region: answering region}`` into service and returns when it did (wall clock),
    or None if it could not. ``serving``: what the front door serves at start."""

    def __init__(
        self,
        regions: Sequence[str],
        load: Callable[[], Mapping[str, Any]],
        apply: Callable[[dict[str, str]], float | None],
        *,
        serving: Collection[str] | None = None,
        clock: Callable[[], float] = time.time,
        record: Callable[[Switch], None] = lambda _switch: None,
        say: Callable[[str], None] = log.warning,
    ) -> None:
        self.regions = list(regions)
        self.load = load
        self.apply = apply
        self.clock = clock
        self.record = record
        self.say = say
        self.serving = frozenset(self.regions if serving is None else serving)
        self.failing = False  # the last read failed (said once, not every poll)
        self.reload_failing = False  # the last reload failed (recorded and said once)
        self.errors = 0

    def tick(self) -> Switch | None:
        """Read the controls once; switch the front door if the serving regions changed."""
        from gateway.regions.control import serving

        try:
            controls = self.load()
        except Exception as exc:
            self.errors += 1
            if not self.failing:
                self.say(
                    f"front door: routing controls unreadable in every region ({exc!r}); "
                    "it keeps its hostnames where they are"
                )
            self.failing = True
            return None
        seen_at = self.clock()
        if self.failing:
            self.say("front door: routing controls readable again")
            self.failing = False
        now = frozenset(r for r in self.regions if serving(controls, r))
        if now == self.serving:
            return None
        moved = now ^ self.serving
        times = [
            float(getattr(controls.get(r), "updated_at", 0.0) or 0.0)
            for r in moved
            if controls.get(r) is not None
        ]
        targets = answering(self.regions, now)
        reloaded_at = self.apply(targets)
        switch = Switch(
            serving=[r for r in self.regions if r in now],
            targets={hostname(r): t for r, t in targets.items()},
            changed_at=max(times) if times else None,
            seen_at=seen_at,
            reloaded_at=reloaded_at,
        )
        where = ", ".join(f"{h} -> {t}" for h, t in switch.targets.items())
        if switch.ok:
            assert reloaded_at is not None
            self.serving, self.reload_failing = now, False
            self.record(switch)
            self.say(
                f"front door: serving {', '.join(switch.serving) or 'none'}: {where} "
                f"(nginx reloaded {1000 * (reloaded_at - seen_at):.0f} ms after the change "
                "was seen)"
            )
        elif not self.reload_failing:  # nginx down: tried at every poll, said once
            self.reload_failing = True
            self.record(switch)
            self.say(
                f"front door: could not reload nginx for {where}; trying again at every poll "
                "(a restarted nginx reads the configuration written)"
            )
        return switch

    def run(self, stop: threading.Event, interval: float = POLL_SECONDS) -> None:
        """Tick until ``stop`` is set; a failing tick is logged, never the end of it."""
        while not stop.wait(interval):
            try:
                self.tick()
            except Exception:
                log.exception("front door tick failed")


@dataclass
class NginxFrontDoor:
    """nginx's side of the front door: its configuration, reloads, and the record."""

    prefix: Path
    listen_port: int
    gateway_ports: dict[str, int]  # region -> its gateway's port, the primary first
    status_port: int
    master_pid: Callable[[], int | None]  # nginx's master process (None: not running)
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    generation: int = 0
    targets: dict[str, str] = field(default_factory=dict)
    switches: list[Switch] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def state_file(self) -> Path:
        return self.prefix.parent / STATE_FILE

    def write(self, targets: Mapping[str, str]) -> Path:
        """Write nginx.conf for ``targets`` (the next generation); the path."""
        balancer.prepare_prefix(self.prefix)
        with self._lock:
            self.generation += 1
            self.targets = dict(targets)
            text = render_config(
                self.prefix,
                self.listen_port,
                self.gateway_ports,
                self.targets,
                status_port=self.status_port,
                generation=self.generation,
            )
            _write_atomically(self.conf, text)
        self.save()
        return self.conf

    def __call__(self, targets: dict[str, str]) -> float | None:
        """Put ``targets`` into service: rewrite, SIGHUP, wait until nginx answers the new
        generation. When it did (wall clock), or None (nginx down or the reload refused:
        a restarted nginx reads the file written)."""
        self.write(targets)
        pid = self.master_pid()
        if pid is None:
            return None
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            return None
        deadline = time.monotonic() + RELOAD_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.running_generation() == self.generation:
                return self.clock()
            self.sleep(0.005)
        return None

    def running_generation(self) -> int | None:
        """The generation nginx answers with now (None: it does not answer)."""
        try:
            answer = httpx.get(f"http://{HOST}:{self.status_port}{STATUS_PATH}", timeout=0.5)
            return int(answer.text) if answer.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    def record(self, switch: Switch) -> None:
        with self._lock:
            self.switches = [*self.switches, switch][-SWITCHES_KEPT:]
        self.save()

    def save(self) -> None:
        """``frontdoor.json``: each hostname's region now, and the switches so far."""
        with self._lock:
            regions = list(self.gateway_ports)
            view = {
                "url": f"http://{HOST}:{self.listen_port}",
                "regions": regions,
                "hostnames": {hostname(r): r for r in regions},
                "default_hostname": hostname(regions[0]),
                "generation": self.generation,
                "targets": {hostname(r): t for r, t in self.targets.items()},
                "switches": [
                    {**asdict(s), "ok": s.ok}
                    for s in self.switches  # oldest first
                ],
            }
            _write_atomically(self.state_file, json.dumps(view, indent=2))


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """A running front door's ``frontdoor.json`` (None: no front door)."""
    path = Path(state_dir) / STATE_FILE
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def _write_atomically(path: Path, text: str) -> None:
    """Readers (nginx, relay region show) see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
