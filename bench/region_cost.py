"""What a second region costs the hop, and how fast a region's traffic moves when it is
evacuated (docs/regions.md).

1. **Hop cost** (instructions per request, Valgrind's callgrind; the same count from run to
   run whatever else the host does): in-process forwards through this tree's gateway over
   a stub module, as bench/callgrind_forward.py makes them (bench/cell_cost.py's caller),
   by 20 drivers in turn:

   - ``one-region``: no peer region (the gateway of a one-region stage);
   - ``two-regions``: ``RELAY_PEER_UPSTREAMS`` names a us-west-2 upstream of loads and
     gatepass (the critical modules), and a routing-control store in memory has both
     regions serving, so every loads request goes through ``Regions.route``: the routing
     copy's age checked, this region's serving flag and its breaker, and it stays here.

   Both for ``GET /loads`` and for a write, ``POST /loads/L-1/events``. The ratio two
   regions / one region is judged against 1.05 (docs/benchmarks.md).

2. **Evacuation**, on the real two-region local stack (``LocalStack(regions=("us-east-1",
   "us-west-2"))``: one emulator, each region its own gateway, loads and gatepass, the
   replicator, nginx as the front door): 40 synthetic drivers, half on each region's
   hostname (``Host: <region>.relay.localhost``), read ``/loads`` and report trip events
   through the front door, paced to 20 requests a second in all (at most 600 requests);
   then ``relay region evacuate us-east-1 --reason bench``: the seconds from the command's
   start until every answer on the us-east-1 hostname comes from us-west-2 (the
   ``relay-region`` header), the requests that failed meanwhile (an answer other than 2xx,
   or none), then ``relay region restore`` and the seconds back.

3. **Replication lag**: the replicator's own figures (``<state dir>/replication.json``:
   each copied write's creation time to its copy), and end to end: an item written into a
   replicated table in us-east-1, read in us-west-2 until it is there, 50 times.

``python -m bench.region_cost [--quick] [--rounds R] [--skip-stack] [--skip-hop]``;
``make bench`` runs it as its regions phase (bench/run.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import instructions
from bench.cell_cost import BODY, DRIVERS, _percentile, measure

ROOT = Path(__file__).resolve().parent.parent
SHORT, LONG = 200, 1200
QUICK_SHORT, QUICK_LONG = 100, 400
EAST, WEST = "us-east-1", "us-west-2"
REGIONS = (EAST, WEST)
MODES = ("one-region", "two-regions", "one-region-write", "two-regions-write")
RATIO_TARGET = 1.05  # instructions per forward, two regions / one region: at most
# The peer region's upstreams of the critical modules, as the local stack names them.
PEER_UPSTREAMS = {WEST: {"loads": "http://loads.us-west-2.bench", "gatepass": "http://gp.bench"}}

# The evacuation on the local stack: bounded, loopback only.
STACK_DRIVERS = 40
STACK_RATE = 20.0  # requests a second, all drivers together
MAX_REQUESTS = 600
QUICK_DRIVERS = 20
BEFORE_SECONDS = 4.0  # every driver on its home region, before the lever
STEADY_SECONDS = 3.0  # answers from the new region for this long: the move is done
SHIFT_GOAL_SECONDS = 60.0  # the command's start to 100% of the hostname's answers moved
GAME_DAY_SECONDS = 600.0  # the seed's game day: under 10 minutes
WAIT_SECONDS = 75.0  # at most this long for a move (beyond the goal: MISSED)
CLIENT_TIMEOUT = 10.0
SETUP_TRIES = 4
ROUTE = ["F-CHI", "F-IND", "F-CMH", "F-DET", "F-CHI"]
TRIP = [
    (kind, stop)
    for stop in range(1, len(ROUTE) + 1)
    for kind in (("arrived", "departed") if stop < len(ROUTE) else ("arrived", "delivered"))
]
PROBES = 50  # end-to-end replication probes
PROBE_POLL_SECONDS = 0.01
PROBE_TIMEOUT = 30.0
PROBE_KEY = "bench#replication"


# --- 1. the hop, in-process under callgrind -----------------------------------------------


class _Controls:
    """The routing-control store as the gateway reads it, in memory: both regions serve."""

    def __init__(self, regions: Sequence[str] = REGIONS) -> None:
        from gateway.regions.control import RegionControl

        self.controls = {r: RegionControl(r, serving=True, revision=1) for r in regions}

    def load(self) -> dict[str, Any]:
        return dict(self.controls)


async def _forwards(mode: str, requests: int) -> None:
    from bench.callgrind_forward import (
        UPSTREAMS,
        Clock,
        Module,
        bench_settings,
    )
    from gateway.app import create_app
    from gateway.routing.routes import RouteTable

    two = mode.startswith("two-regions")
    write = mode.endswith("-write")
    extra = {"peer_upstreams": json.dumps(PEER_UPSTREAMS)} if two else {}
    settings, issuer = bench_settings(aws_region=EAST, **extra)
    clock = Clock()
    app = create_app(
        settings,
        routes=RouteTable.load(settings.routes_file, env=UPSTREAMS),
        transport=Module(BODY),
        clock=clock,
        routing_store=_Controls() if two else None,
    )
    regions = app.state.regions

    def warmed() -> str | None:
        if two:
            if sorted(regions.controls) != sorted(REGIONS) or regions.evacuated:
                return f"the gateway's routing copy is {regions.view()}"
            if "loads" not in regions.failover:
                return f"loads has no peer upstream: {regions.view()}"
        elif regions.failover:
            return f"a peer region is configured: {regions.view()}"
        return None

    await measure(app, issuer, clock, mode=mode, write=write, requests=requests, warmed=warmed)
    if regions.sent:
        sys.exit(f"{mode}: requests went to a peer region: {dict(regions.sent)}")


def count_argv(
    mode: str, requests: int, out: Path | str, python: str = sys.executable
) -> list[str]:
    """The measured process (:func:`bench.instructions.forward_argv`)."""
    return instructions.forward_argv("bench.region_cost", mode, requests, out, python)


def hop_cost(
    rounds: int, modes: Sequence[str] = MODES, short: int = SHORT, long: int = LONG
) -> dict[str, list[float]]:
    """Instructions per forward, one figure per round, for each mode (interleaved: every
    mode once per round)."""
    return instructions.forward_cost(
        "bench.region_cost", list(modes), rounds, short=short, long=long, timeout=900
    )


# --- 2. an evacuation on the local stack ----------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One request of a synthetic driver. Times: time.monotonic() of this process."""

    host: str  # the region whose hostname the request went to
    kind: str  # "read" or "write"
    start: float
    end: float
    status: int  # 0: no answer (a transport error or the client's timeout)
    region: str  # the relay-region header: the gateway that answered ("" without one)
    degraded: bool = False
    problem: str = ""  # a failed answer's problem type (its last part), or the error


def ok(a: Answer) -> bool:
    """A request that did not fail: any 2xx (201 and a deferred write's 202 included)."""
    return 200 <= a.status < 300


def moved_after(
    answers: Sequence[Answer], host: str, to: str, since: float, until: float | None = None
) -> float | None:
    """Seconds from ``since`` to the start of the first request on ``host``'s hostname from
    which every answer (started before ``until``) came from region ``to``; None if the last
    answer did not, or none came. Requests that got no answer tell no region and are left
    out here (they count as failed)."""
    window = sorted(
        (
            a
            for a in answers
            if a.host == host
            and a.status
            and a.start >= since
            and (until is None or a.start < until)
        ),
        key=lambda a: a.start,
    )
    if not window or window[-1].region != to:
        return None
    first = len(window) - 1
    while first > 0 and window[first - 1].region == to:
        first -= 1
    return window[first].start - since


def window_figures(answers: Sequence[Answer], since: float, until: float) -> dict[str, Any]:
    """Requests started in [since, until): how many, how many failed, the statuses."""
    these = [a for a in answers if since <= a.start < until]
    statuses: dict[str, int] = {}
    problems: dict[str, int] = {}  # the failed ones: "<status> <problem> (<kind>)"
    for a in these:
        key = str(a.status) if a.status else "no answer"
        statuses[key] = statuses.get(key, 0) + 1
        if not ok(a):
            what = f"{key} {a.problem} ({a.kind} on the {a.host} hostname)".replace("  ", " ")
            problems[what] = problems.get(what, 0) + 1
    ms = [1000 * (a.end - a.start) for a in these if a.status]
    return {
        "requests": len(these),
        "failed": sum(not ok(a) for a in these),
        "degraded": sum(a.degraded for a in these),
        "statuses": statuses,
        "problems": problems,
        "p50_ms": round(_percentile(ms, 0.50), 1),
        "p99_ms": round(_percentile(ms, 0.99), 1),
        "by_region": {
            host: {
                region: sum(a.host == host and a.region == region for a in these)
                for region in sorted({a.region for a in these if a.host == host and a.region})
            }
            for host in REGIONS
        },
    }


def lag_figures(lags_ms: Sequence[float]) -> dict[str, float]:
    return {
        "p50": round(_percentile(lags_ms, 0.50), 1),
        "p99": round(_percentile(lags_ms, 0.99), 1),
        "max": round(max(lags_ms, default=0.0), 1),
        "count": len(lags_ms),
    }


def summary(
    answers: Sequence[Answer],
    *,
    started: float,
    evacuated: float,
    restored: float,
    ended: float,
    commands: dict[str, float],
    lever: str,
) -> dict[str, Any]:
    """The figures of one evacuation from every request's :class:`Answer`: ``evacuated``
    and ``restored`` are the commands' starts."""
    shift = moved_after(answers, EAST, WEST, evacuated, restored)
    back = moved_after(answers, EAST, EAST, restored, ended)
    # the other hostname never moves
    strays = sum(a.host == WEST and a.status and a.region != WEST for a in answers)
    return {
        "shift_seconds": None if shift is None else round(shift, 2),
        "back_seconds": None if back is None else round(back, 2),
        "lever": lever,
        "command_seconds": {k: round(v, 2) for k, v in commands.items()},
        "requests": len(answers),
        "failed": sum(not ok(a) for a in answers),
        "west_host_elsewhere": strays,
        "before": window_figures(answers, started, evacuated),
        "evacuating": window_figures(answers, evacuated, restored),
        "restoring": window_figures(answers, restored, ended + 1),
        "seconds": {
            "before": round(evacuated - started, 1),
            "evacuated": round(restored - evacuated, 1),
            "restored": round(ended - restored, 1),
        },
    }


def problem_of(r: Any) -> str:
    """A failed answer's problem type, its last part (``invalid-transition``), if any."""
    try:
        body = r.json()
    except ValueError:
        return ""
    kind = body.get("type", "") if isinstance(body, dict) else ""
    return re.split(r"[/:]", str(kind).rstrip("/:"))[-1]  # urn:relay:problem:<name>


class Drivers:
    """Synthetic drivers on their home regions' hostnames through the front door, paced
    together to ``rate`` requests a second, at most ``budget`` requests in all: each reads
    its loads, then reports its trip's next event (a write tried again with the same
    Idempotency-Key until acknowledged, as the app does), in turn."""

    def __init__(
        self,
        url: str,
        token: dict[str, str],
        home: dict[str, str],
        load_of: dict[str, str],
        *,
        rate: float,
        budget: int,
    ) -> None:
        self.url, self.token, self.home, self.load_of = url, token, home, load_of
        self.period = len(home) / rate  # each driver's time between its requests
        self.budget = budget
        self.answers: list[Answer] = []
        self.taken = 0  # requests begun
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(d, n), daemon=True)
            for n, d in enumerate(sorted(home))
        ]

    @property
    def exhausted(self) -> bool:
        return self.taken >= self.budget

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=CLIENT_TIMEOUT + 5)

    def _take(self) -> bool:
        with self.lock:
            if self.stop.is_set() or self.taken >= self.budget:
                return False
            self.taken += 1
            return True

    def _run(self, driver: str, n: int) -> None:
        import httpx

        host = self.home[driver]
        load = self.load_of[driver]
        headers = {
            "authorization": f"Bearer {self.token[driver]}",
            "host": f"{host}.relay.localhost",
        }
        at = time.monotonic() + n * self.period / len(self.home)  # spread over one period
        event, write = 0, False
        with httpx.Client(base_url=self.url, headers=headers, timeout=CLIENT_TIMEOUT) as http:
            while True:
                pause = at - time.monotonic()
                if pause > 0 and self.stop.wait(pause):
                    return
                if not self._take():
                    return
                at = max(at + self.period, time.monotonic())
                writing = write and event < len(TRIP)
                write = not write
                begun = time.monotonic()
                try:
                    if writing:
                        kind, stop = TRIP[event]
                        r = http.post(
                            f"/loads/{load}/events",
                            json={"kind": kind, "stop_seq": stop},
                            headers={"idempotency-key": f"{load}-event-{event:02d}"},
                        )
                    else:
                        r = http.get("/loads")
                except httpx.HTTPError as exc:
                    status, region, degraded, problem = 0, "", False, type(exc).__name__
                else:
                    status = r.status_code
                    region = r.headers.get("relay-region", "")
                    degraded = "relay-degraded" in r.headers
                    problem = "" if 200 <= status < 300 else problem_of(r)
                answer = Answer(
                    host,
                    "write" if writing else "read",
                    begun,
                    time.monotonic(),
                    status,
                    region,
                    degraded,
                    problem,
                )
                with self.lock:
                    self.answers.append(answer)
                if writing and ok(answer):
                    event += 1  # acknowledged: the next event; else the same one again

    def snapshot(self) -> list[Answer]:
        with self.lock:
            return list(self.answers)

    def wait_moved(self, to: str, since: float, timeout: float) -> float | None:
        """Wait until every us-east-1-hostname answer has come from ``to`` for
        ``STEADY_SECONDS`` (or ``timeout`` passed, or the request budget ran out)."""
        deadline = since + timeout
        while time.monotonic() < deadline and not self.exhausted:
            moved = moved_after(self.snapshot(), EAST, to, since)
            if moved is not None and time.monotonic() - (since + moved) >= STEADY_SECONDS:
                return moved
            time.sleep(0.1)
        return moved_after(self.snapshot(), EAST, to, since)


def _lever(stack: Any, action: str, ops: dict[str, str]) -> tuple[str, float]:
    """``relay region <action> us-east-1 --reason bench`` (the ops API of us-west-2's
    gateway if this tree's CLI has no ``region`` command); which lever, and its seconds."""
    import httpx

    begun = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "relay.cli", "region", action, EAST, "--reason", "bench"],
        cwd=ROOT,
        env={**os.environ, "RELAY_STATE_DIR": str(stack.state_dir)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode == 0:
        return "relay region " + action, time.monotonic() - begun
    if "No such command" not in done.stderr:  # a tree with no `relay region`
        raise RuntimeError(f"relay region {action} {EAST} failed: {done.stdout}{done.stderr}")
    begun = time.monotonic()
    with httpx.Client(base_url=stack.region_gateway_url(WEST), timeout=30) as http:
        r = http.post(f"/ops/regions/{EAST}/{action}", json={"reason": "bench"}, headers=ops)
    if r.status_code != 200:
        raise RuntimeError(f"POST /ops/regions/{EAST}/{action}: {r.status_code} {r.text}")
    return f"POST /ops/regions/{EAST}/{action}", time.monotonic() - begun


def _probes(stack: Any, count: int) -> dict[str, Any]:
    """End-to-end replication lag: ``count`` items put into a replicated table's us-east-1
    copy, each read from its us-west-2 copy until it is there (then deleted)."""
    import boto3

    tables = list(stack.global_tables)
    if not tables:
        raise RuntimeError("the stack has no replicated table")
    gateway = stack.function_env("GatewayFunction")
    name = gateway.get("RELAY_FALLBACK_STORE_TABLE")
    table_name = name if name in tables else tables[0]

    def resource(region: str) -> Any:
        return boto3.resource(
            "dynamodb",
            endpoint_url=stack.emulator_url,
            region_name=region,
            aws_access_key_id="local",
            aws_secret_access_key="local",  # noqa: S106 - the emulator's dummy credentials
        )

    east, west = resource(EAST).Table(table_name), resource(WEST).Table(table_name)
    schema = {k["KeyType"]: k["AttributeName"] for k in east.key_schema}
    lags: list[float] = []
    missing = 0
    for n in range(count):
        key = {schema["HASH"]: PROBE_KEY}
        if "RANGE" in schema:
            key[schema["RANGE"]] = f"probe#{n:03d}#{time.time_ns()}"
        else:
            key[schema["HASH"]] = f"{PROBE_KEY}#{n:03d}#{time.time_ns()}"
        begun = time.monotonic()
        east.put_item(Item={**key, "bench": "replication probe"})
        while time.monotonic() - begun < PROBE_TIMEOUT:
            if "Item" in west.get_item(Key=key, ConsistentRead=True):
                lags.append(1000 * (time.monotonic() - begun))
                break
            time.sleep(PROBE_POLL_SECONDS)
        else:
            missing += 1
        east.delete_item(Key=key)  # the delete replicates too
    return {
        "table": table_name,
        "lag_ms": lag_figures(lags),
        "missing": missing,
        "probes": count,
        "poll_ms": 1000 * PROBE_POLL_SECONDS,
    }


def evacuation(
    drivers: int = STACK_DRIVERS,
    rate: float = STACK_RATE,
    budget: int = MAX_REQUESTS,
    probes: int = PROBES,
) -> dict[str, Any]:
    """Evacuate us-east-1 and restore it while ``drivers`` synthetic drivers read and
    write through the front door; then the replication lag. ``{"skipped": why}`` when this
    tree's LocalStack has no regions."""
    import dataclasses

    import httpx

    from relay import demo
    from relay.devissuer import DevIssuer
    from relay.stack import LocalStack, free_port
    from shared_contracts.identity import Role

    if "regions" not in {f.name for f in dataclasses.fields(LocalStack)}:
        return {"skipped": "this tree's LocalStack has no regions (relay/stack.py)"}
    people = [f"D-{n}" for n in range(84000, 84000 + drivers)]
    home = {d: EAST if n % 2 == 0 else WEST for n, d in enumerate(people)}
    load_of = {d: f"L-{d[2:]}" for d in people}
    began = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="relay-bench-regions-") as tmp,
        LocalStack(
            gateway_port=free_port(),
            state_dir=Path(tmp) / "state",
            event_source_backoff=(1, 2),
            regions=REGIONS,
            cells=1,
            gateway_overrides={"RELAY_RATE_LIMIT_DISPATCH": "1000/1000"},
        ) as stack,
    ):
        up_at = time.monotonic()
        tokens = DevIssuer.load_or_create(stack.state_dir)
        token = {d: tokens.mint(d, Role.DRIVER, d) for d in people}
        dispatch = {"authorization": f"Bearer {tokens.mint('dispatch-bench', Role.DISPATCH)}"}
        ops = {"authorization": f"Bearer {tokens.mint('ops-bench', Role.OPS)}"}
        with httpx.Client(base_url=stack.gateway_url, timeout=CLIENT_TIMEOUT) as http:
            for d in people:  # each driver's load, assigned in their home region
                body = demo.assignment(load_of[d], d, ROUTE, datetime.now(UTC))
                for attempt in range(SETUP_TRIES):
                    time.sleep(attempt)
                    try:
                        r = http.post(
                            "/dispatch/assignments",
                            json=body.model_dump(mode="json"),
                            headers={**dispatch, "host": f"{home[d]}.relay.localhost"},
                        )
                    except httpx.HTTPError:
                        continue
                    if r.status_code == 201 or (attempt and r.status_code == 409):
                        break
                else:
                    raise RuntimeError(f"{d}'s assignment was not made")
        load_before = [round(x, 2) for x in os.getloadavg()]
        replicated_before = _read_json(stack.replication_stats_file) or {}
        wall = time.time() - time.monotonic()  # this process's monotonic clock to epoch
        crew = Drivers(stack.gateway_url, token, home, load_of, rate=rate, budget=budget)
        started = time.monotonic()
        crew.start()
        try:
            time.sleep(BEFORE_SECONDS)
            evacuated = time.monotonic()
            lever, evacuate_s = _lever(stack, "evacuate", ops)
            crew.wait_moved(WEST, evacuated, WAIT_SECONDS)
            restored = time.monotonic()
            _, restore_s = _lever(stack, "restore", ops)
            crew.wait_moved(EAST, restored, WAIT_SECONDS)
        finally:
            crew.finish()
        ended = time.monotonic()
        load_after = [round(x, 2) for x in os.getloadavg()]
        answers = crew.snapshot()
        figures = summary(
            answers,
            started=started,
            evacuated=evacuated,
            restored=restored,
            ended=ended,
            commands={"evacuate": evacuate_s, "restore": restore_s},
            lever=lever,
        )
        door = _read_json(stack.state_dir / "frontdoor.json") or {}
        switches = [
            {k: s.get(k) for k in ("serving", "changed_at", "seen_at", "reloaded_at", "ok")}
            for s in door.get("switches", [])
        ]
        probed = _probes(stack, probes)
        time.sleep(1.5)  # the replicator's stats file, rewritten every second
        replicator = json.loads(stack.replication_stats_file.read_text())
    return {
        **figures,
        "drivers": drivers,
        "rate": rate,
        "budget": budget,
        "exhausted": len(answers) >= budget,
        "client_timeout_seconds": CLIENT_TIMEOUT,
        "steady_seconds": STEADY_SECONDS,
        "replicator": replicator,
        "replicator_before_drivers": replicated_before,
        "end_to_end": probed,
        "switches": switches,
        "commanded_at": {  # epoch seconds
            "evacuate": round(evacuated + wall, 3),
            "restore": round(restored + wall, 3),
        },
        # from the routing write the lever made (the front door's record) to the move
        "after_write_seconds": {
            "evacuate": after_write(switches, [WEST], evacuated + wall, figures["shift_seconds"]),
            "restore": after_write(
                switches, list(REGIONS), restored + wall, figures["back_seconds"]
            ),
        },
        "load_average": {"before": load_before, "after": load_after},
        "stack_seconds": round(up_at - began, 1),
        "all_seconds": round(time.monotonic() - began, 1),
    }


def after_write(
    switches: Sequence[dict[str, Any]], serving: list[str], commanded: float, moved: float | None
) -> float | None:
    """Seconds from the routing write of the first front-door switch to ``serving`` after
    ``commanded`` (epoch seconds: the command's start) to the move (``moved`` seconds after
    the command's start); None without either."""
    for s in switches:
        changed = s.get("changed_at")
        if s.get("ok") and s.get("serving") == serving and changed and changed >= commanded:
            return None if moved is None else round(commanded + moved - changed, 2)
    return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def switch_lines(e: dict[str, Any]) -> list[str]:
    """Each switch of the front door during the run, timed from the command before it."""
    commanded = e.get("commanded_at") or {}
    out = []
    for s in e.get("switches", []):
        if not s.get("ok") or not s.get("seen_at") or not commanded:
            continue
        which = max(
            (c for c in commanded if commanded[c] <= s["seen_at"]),
            key=lambda c: commanded[c],
            default=None,
        )
        if which is None:
            continue
        at = commanded[which]
        wrote = (
            f"; the routing write it acted on {s['changed_at'] - at:+.2f} s"
            if s.get("changed_at")
            else ""
        )
        out.append(
            f"serving {', '.join(s['serving'])}: seen {s['seen_at'] - at:.2f} s and nginx "
            f"reloaded {s['reloaded_at'] - at:.2f} s after the {which} command's start{wrote}"
        )
    return out


def reading(e: dict[str, Any]) -> list[str]:
    """How to read an evacuation's figures: where the time goes, and what failed."""
    lines = [
        "How to read it: the time to move is mostly the command's own: `relay region` starts "
        "an interpreter, writes the routing control and its audit item in one transaction, "
        "and returns (the command's seconds above); the front door reads the controls every "
        "0.2 s and reloads nginx when the serving regions change, so the hostname moves a "
        "fraction of a second after the write (its row above, and the switches). Locally the "
        "front door stands in for Route 53: in AWS the move also waits for the failover "
        "record's TTL in the clients' resolvers, which this run does not measure. A driver "
        "answered by the other region is served by that region's gateway and modules, "
        "reading and writing that region's copy of the tables.",
        "",
    ]
    problems = {
        what
        for w in (e["evacuating"], e["restoring"])
        for what in w.get("problems", {})
        if "invalid-transition" in what
    }
    if problems:
        between = 2 * e["drivers"] / e["rate"]  # a driver writes every other request
        slowest = float(e["replicator"].get("lag_ms", {}).get("max", 0.0))
        windows = (e["before"], e["evacuating"], e["restoring"])
        deferred = any("202" in w["statuses"] for w in windows)
        lines += [
            "A write answered 409 invalid-transition was refused by loads because the event "
            "does not follow the load's status in the answering region's copy. The drivers "
            "send each event only once the one before it was acknowledged, so that copy did "
            "not yet hold the previous event: acknowledged by the other region before the "
            f"move, about {between:g} s earlier (each driver writes every other request)"
            + (", or acknowledged with a 202 and still queued" if deferred else "")
            + f". The replicator's slowest copy in this run took {slowest / 1000:.1f} s "
            "(section 14): this is the replication lag as a driver meets it in the seconds "
            "after a move. The driver tries the same event again (the same Idempotency-Key) "
            "at its next write.",
            "",
        ]
    return lines


def evacuation_text(e: dict[str, Any]) -> str:
    if e.get("skipped"):
        return f"evacuation skipped: {e['skipped']}"
    shift, back = e["shift_seconds"], e["back_seconds"]
    lag, e2e = e["replicator"].get("lag_ms", {}), e["end_to_end"]["lag_ms"]
    return (
        f"us-east-1 evacuated: its hostname answered from us-west-2 "
        f"{'never' if shift is None else f'{shift:.2f} s'} after the command's start; "
        f"restored: back {'never' if back is None else f'{back:.2f} s'} after; "
        f"{e['evacuating']['failed']} of {e['evacuating']['requests']} requests failed "
        f"while evacuating, {e['restoring']['failed']} of {e['restoring']['requests']} "
        f"while restoring; replication lag p50/p99 {lag.get('p50', 0):.0f}/"
        f"{lag.get('p99', 0):.0f} ms (replicator), {e2e['p50']:.0f}/{e2e['p99']:.0f} ms "
        "(end to end)"
    )


# --- the phase in bench/run.py, and its section of docs/benchmarks.md ---------------------

TWO = "two regions (a us-west-2 peer of loads and gatepass, both serving)"
ONE = "one region (reference)"
MODE_NAMES = {
    "one-region": f"GET /loads, {ONE}",
    "two-regions": f"GET /loads, {TWO}",
    "one-region-write": f"POST /loads/L-1/events, {ONE}",
    "two-regions-write": f"POST /loads/L-1/events, {TWO}",
}
TARGET_TEXT = (
    f"- *Regions*: with a second region configured (a peer upstream of each critical module, "
    f"the routing controls read), a forward (`GET /loads`, and a write) costs at most "
    f"{RATIO_TARGET:.2f}x the instructions of the same forward in a one-region gateway, "
    "counted under callgrind in the same run; on the real two-region local stack, evacuating "
    f"us-east-1 moves 100% of its hostname's answers to us-west-2 within "
    f"{SHIFT_GOAL_SECONDS:g} s of the command's start (the seed's game day: under 10 "
    "minutes), with no request failed while it moves, and restoring brings them back. "
    "Those are measured once, against goals set in advance: MET or MISSED."
)


def phase(report: Any, stack: bool = True) -> None:
    """The regions phase of ``make bench`` (bench/run.py): the instruction counts in
    ``report.rounds`` interleaved rounds, then, with ``stack``, an evacuation of us-east-1
    on the two-region local stack; figures in ``report.regions``, targets in
    ``report.targets`` (phase "regions")."""
    from bench.harness import command_line
    from bench.run import describe_tree

    if shutil.which("valgrind") is None:
        raise RuntimeError("the regions phase needs valgrind (make bench installs it)")
    short, long = (QUICK_SHORT, QUICK_LONG) if report.quick else (SHORT, LONG)
    print(
        f"regions: instructions per forward with two regions configured vs one "
        f"(callgrind, {report.rounds} rounds)",
        flush=True,
    )
    tree = describe_tree()
    cost = hop_cost(report.rounds, short=short, long=long)
    for r in range(report.rounds):
        shown = ", ".join(f"{mode} {cost[mode][r]:,.0f}" for mode in cost)
        print(f"  r{r + 1} {shown} instructions/forward", flush=True)
    report.regions = {
        "instructions": cost,
        "requests": [short, long],
        "drivers": len(DRIVERS),
        "tree": tree if tree == describe_tree() else f"{tree}, then {describe_tree()}",
        "commands": [
            "PYTHONHASHSEED=0 " + command_line(count_argv(mode, n, ".", python="python"))
            for mode in cost
            for n in (short, long)
        ],
    }
    if stack:
        quick = report.quick
        print("regions: us-east-1 evacuated and restored, on the local stack", flush=True)
        e = evacuation(drivers=QUICK_DRIVERS if quick else STACK_DRIVERS)
        print(f"  {evacuation_text(e)}", flush=True)
        report.regions["evacuation"] = e
    targets(report)


def targets(report: Any) -> None:
    from bench.verdicts import once_verdict, spread

    first = len(report.targets)
    instructions.ratio_targets(
        report,
        report.regions["instructions"],
        (
            ("one-region", "two-regions", "GET /loads"),
            ("one-region-write", "two-regions-write", "POST /loads/L-1/events"),
        ),
        comparison="two regions configured vs one",
        base_name="one region",
        drivers=report.regions["drivers"],
        target=RATIO_TARGET,
    )
    e = report.regions.get("evacuation") or {}
    if e and not e.get("skipped"):
        shift = e["shift_seconds"]
        moved = shift is not None
        back = e["back_seconds"]
        report.target(
            "us-east-1 evacuated on the two-region local stack: seconds from the command's "
            "start until 100% of its hostname's answers come from us-west-2 "
            f"({e['drivers']} drivers, ~{e['rate']:g} requests/s)",
            f"<= {SHIFT_GOAL_SECONDS:g} s",
            spread([shift if moved else WAIT_SECONDS]),
            f"{'not moved' if not moved else f'{shift:.2f} s'}; back after the restore "
            + ("not seen" if back is None else f"{back:.2f} s"),
            "the goal (set, not measured)",
            spread([SHIFT_GOAL_SECONDS]),
            f"{SHIFT_GOAL_SECONDS:g} s",
            0.0,
            once_verdict(
                shift if moved else WAIT_SECONDS,
                SHIFT_GOAL_SECONDS,
                at_most=True,
                also=moved and back is not None,
            ),
        )
        windows = (e["evacuating"], e["restoring"])
        failed = sum(w["failed"] for w in windows)
        problems: dict[str, int] = {}
        for w in windows:
            for what, n in w.get("problems", {}).items():
                problems[what] = problems.get(what, 0) + n
        report.target(
            "us-east-1 evacuated and restored on the two-region local stack: requests "
            "failed from the evacuate command to the end (an answer other than 2xx, or none)",
            "0",
            spread([float(failed)]),
            f"{failed} of {sum(w['requests'] for w in windows)}"
            + (
                " (" + ", ".join(f"{n} x {p}" for p, n in sorted(problems.items())) + ")"
                if problems
                else ""
            ),
            "the goal (set, not measured)",
            spread([0.0]),
            "0",
            0.0,
            once_verdict(failed, 0, at_most=True),
        )
    for t in report.targets[first:]:
        t["phase"] = "regions"


def markdown(r: Any) -> list[str]:
    """The regions phase's section of docs/benchmarks.md, from bench/results/regions.json
    (a bench.run Report with ``regions``; any run that had the phase, a --quick one
    included)."""
    from bench.run import host_text, ratio_text, verdict_lines, without_note
    from bench.verdicts import ratios, spread

    if r is None or not r.regions:
        return []
    figures = r.regions
    cost = figures["instructions"]
    short, long = figures["requests"]
    mode = f"`--quick`: {r.rounds} rounds, a smoke check" if r.quick else f"{r.rounds} rounds"

    adds: list[str] = []
    rows = [f"| {MODE_NAMES.get(m, m)} | {spread(v).show('{:,.0f}')} |" for m, v in cost.items()]
    for base, two, what in (
        ("one-region", "two-regions", "GET /loads"),
        ("one-region-write", "two-regions-write", "POST /loads/L-1/events"),
    ):
        if cost.get(base) and cost.get(two):
            ratio = spread(ratios(cost[two], cost[base]))
            rows.append(f"| {what}: two regions / one, round by round | {ratio_text(ratio)} |")
            added = spread(cost[two]).median - spread(cost[base]).median
            adds.append(f"{what} {added:,.0f} ({100 * added / spread(cost[base]).median:.1f}%)")
    lines = [
        f"## Regions (run of {r.started}; {mode})",
        "",
        *([f"`{without_note(r.command)}`", ""] if r.command else []),
        *([f"Tree measured: {figures['tree']}.", ""] if figures.get("tree") else []),
        host_text(r.load_average, r.note),
        "",
        "### 12. A second region: instructions per forward",
        "",
        "`python -m bench.region_cost` (bench/region_cost.py), as this phase runs it: "
        "in-process authenticated forwards through this tree's gateway app over a stub "
        "module (as bench/callgrind_forward.py makes them), by "
        f"{figures['drivers']} drivers in turn, each run in a fresh interpreter under "
        "Valgrind's callgrind with instrumentation on only while the forwards run: a "
        "one-region gateway (no peer: the reference), and the same gateway in us-east-1 with "
        "`RELAY_PEER_UPSTREAMS` naming a us-west-2 upstream of loads and gatepass (the "
        "critical modules) and a routing-control store in memory with both regions serving. "
        "Every loads request of the second then goes through the region router: the routing "
        "copy's age checked (a read of the table only when it is due), this region's "
        "serving flag and its own breaker, and it stays in us-east-1 (the run checks that "
        "none went to the peer). Instructions per forward are "
        f"({long:,} forwards - {short:,} forwards) / {long - short:,}, which leaves out the "
        "interpreter's start and the app's building; the gateway's clock is frozen while "
        "counting. One round: every run once, in the order of the table.",
        "",
        "| run | instructions per forward, median (range) |",
        "|---|---:|",
        *rows,
        "",
        *(
            [
                "A second region adds, per forward (the medians' difference): "
                + "; ".join(adds)
                + ".",
                "",
            ]
            if adds
            else []
        ),
        *verdict_lines(r, "regions", "instructions per in-process forward"),
        "",
        "```",
        *figures.get("commands", []),
        "```",
        "",
    ]
    e = figures.get("evacuation") or {}
    if not e or e.get("skipped"):
        why = e.get("skipped") if e else "not run"
        return [*lines, f"(evacuation on the local stack: {why})", ""]
    ev, rs, bf = e["evacuating"], e["restoring"], e["before"]
    shift, back = e["shift_seconds"], e["back_seconds"]

    def seconds(x: float | None) -> str:
        return "not within the run" if x is None else f"{x:.2f} s"

    def statuses(w: dict[str, Any]) -> str:
        return ", ".join(
            f"{n:,} x {s}" for s, n in sorted(w["statuses"].items(), key=lambda kv: -kv[1])
        )

    def problems(w: dict[str, Any]) -> str:
        failed = sorted(w.get("problems", {}).items(), key=lambda kv: -kv[1])
        return "; failed: " + ", ".join(f"{n} x {p}" for p, n in failed) if failed else ""

    def hosts(w: dict[str, Any]) -> str:
        return "; ".join(
            f"{host} hostname: "
            + ", ".join(f"{n} from {region}" for region, n in w["by_region"][host].items())
            for host in REGIONS
            if w["by_region"].get(host)
        )

    switch_text = "; ".join(switch_lines(e))
    rep, e2e = e["replicator"], e["end_to_end"]
    lag = rep.get("lag_ms", {})
    early = (e.get("replicator_before_drivers") or {}).get("lag_ms") or {}
    load = e.get("load_average") or {}
    after = e.get("after_write_seconds") or {}
    lines += [
        "### 13. Evacuating a region under load",
        "",
        'On the real two-region local stack (relay.stack.LocalStack with `regions=("us-east-1", '
        '"us-west-2")`, as `relay dev --regions us-east-1,us-west-2` runs it: one emulator '
        "serving both regions, each region its own gateway, loads and gatepass, the "
        "replicator standing in for DynamoDB global tables, nginx on the gateway port as the "
        f"front door), {e['drivers']} synthetic drivers, half on each region's hostname "
        "(`Host: <region>.relay.localhost`, as the app is given its home region's), each get "
        "a load assigned in their home region, then in turn read `/loads` and report their "
        "trip's next event (`POST /loads/<id>/events` with an Idempotency-Key, the same key "
        f"again until acknowledged), paced to {e['rate']:g} requests a second in all, at most "
        f"{e['budget']:,} requests, each waiting at most {e['client_timeout_seconds']:g} s. "
        f"After {e['seconds']['before']:g} s, `{e['lever']} us-east-1 --reason bench`; the "
        "time to move is from the command's start to the start of the first request on the "
        "us-east-1 hostname from which every answer came from us-west-2 (the `relay-region` "
        f"header), once that held for {e['steady_seconds']:g} s; then the same lever "
        "restores us-east-1 and the time back is measured the same way. A request failed "
        "if it got anything but a 2xx (a deferred write's 202 is a 2xx) or no answer.",
        "",
        "| figure | measured | goal |",
        "|---|---:|---:|",
        f"| command's start to 100% of the us-east-1 hostname's answers from us-west-2 "
        f"| {seconds(shift)} | <= {SHIFT_GOAL_SECONDS:g} s (the seed's game day: under "
        f"{GAME_DAY_SECONDS / 60:g} minutes) |",
        f"| requests failed from the evacuate command to the restore command "
        f"| {ev['failed']} of {ev['requests']} | 0 |",
        f"| restore command's start to 100% of its answers from us-east-1 | {seconds(back)} "
        "| (measured) |",
        f"| requests failed from the restore command to the end "
        f"| {rs['failed']} of {rs['requests']} | 0 |",
        f"| the command itself (evacuate / restore) | "
        f"{e['command_seconds']['evacuate']:.2f} s / {e['command_seconds']['restore']:.2f} s "
        "| |",
        f"| the routing write the command made (the front door's record) to the move "
        f"(evacuate / restore) | {seconds(after.get('evacuate'))} / "
        f"{seconds(after.get('restore'))} | |",
        f"| answers on the us-west-2 hostname from elsewhere | {e['west_host_elsewhere']} | 0 |",
        "",
        f"Before the lever: {statuses(bf)} ({hosts(bf)}), p50 {bf['p50_ms']:.1f} ms, p99 "
        f"{bf['p99_ms']:.1f} ms. Evacuating: {statuses(ev)} ({hosts(ev)}{problems(ev)}), p50 "
        f"{ev['p50_ms']:.1f} ms, p99 {ev['p99_ms']:.1f} ms, {ev['degraded']} marked "
        f"degraded. Restoring: {statuses(rs)} ({hosts(rs)}{problems(rs)}), p50 "
        f"{rs['p50_ms']:.1f} ms, p99 {rs['p99_ms']:.1f} ms, {rs['degraded']} marked degraded."
        + (f" The front door (`frontdoor.json`): {switch_text}." if switch_text else "")
        + f" {e['requests']:,} requests in all"
        + (" (the request budget ran out)" if e.get("exhausted") else "")
        + f"; the stack started in {e['stack_seconds']:g} s, {e['all_seconds']:.0f} s in all"
        + (
            f"; host load average (1, 5, 15 min) {', '.join(map(str, load['before']))} "
            f"before the drivers, {', '.join(map(str, load['after']))} after, on "
            f"{os.cpu_count()} cores"
            if load.get("before") and load.get("after")
            else ""
        )
        + ".",
        "",
        *reading(e),
        *verdict_lines(r, "regions", "us-east-1 evacuated"),
        "",
        "### 14. Replication lag",
        "",
        "Two figures, in milliseconds. The replicator's own (`<state dir>/replication.json`, "
        "its stats at the end of the run): for each write it copied, the time of its copy "
        "minus the stream record's creation time (moto stamps it in milliseconds), over "
        "every write of the run (the seed data, the assignments, the drivers' events, the "
        "routing controls, the probes below); the same file read just before the drivers "
        "started gives the stack's start alone. End to end: "
        f"{e2e['probes']} items written one after another into the us-east-1 copy of "
        f"`{e2e['table']}` (a replicated table), each read from the us-west-2 copy (a "
        f"consistent read every {e2e['poll_ms']:g} ms) until it is there: the write's "
        "start to the first read that found it, the delay a driver's write in one region "
        "takes to be readable in the other.",
        "",
        "| lag | p50 | p99 | max | writes |",
        "|---|---:|---:|---:|---:|",
        f"| replicator (record created to copy written) | {lag.get('p50', 0):,.0f} ms "
        f"| {lag.get('p99', 0):,.0f} ms | {lag.get('max', 0):,.0f} ms | {lag.get('count', 0):,} |",
        *(
            [
                f"| replicator, the stack's start alone (before the drivers) "
                f"| {early.get('p50', 0):,.0f} ms | {early.get('p99', 0):,.0f} ms "
                f"| {early.get('max', 0):,.0f} ms | {early.get('count', 0):,} |"
            ]
            if early
            else []
        ),
        f"| end to end (written in us-east-1 to read in us-west-2) "
        f"| {e2e['lag_ms']['p50']:,.0f} ms | {e2e['lag_ms']['p99']:,.0f} ms "
        f"| {e2e['lag_ms']['max']:,.0f} ms | {e2e['lag_ms']['count']:,} |",
        "",
        f"The replicator copied {rep.get('applied', 0):,} writes"
        + "".join(
            f", {rep[k]:,} {k}" for k in ("superseded", "echoes", "repaired", "errors") if k in rep
        )
        + (f"; {e2e['missing']} probes never arrived" if e2e["missing"] else "")
        + ".",
        "",
        "```",
        "python -m bench.region_cost",
        "```",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--forward", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=LONG)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="shorter windows, fewer drivers")
    parser.add_argument("--drivers", type=int, help=f"on the stack ({STACK_DRIVERS})")
    parser.add_argument("--skip-stack", action="store_true", help="the hop cost only")
    parser.add_argument("--skip-hop", action="store_true", help="the evacuation only")
    args = parser.parse_args()
    if args.forward:  # one measured process, under callgrind
        asyncio.run(_forwards(args.forward, args.requests))
        return
    started = time.monotonic()
    if not args.skip_hop:
        if shutil.which("valgrind") is None:
            sys.exit("valgrind is needed for the hop cost (make bench installs it)")
        short, long = (QUICK_SHORT, QUICK_LONG) if args.quick else (SHORT, LONG)
        cost = hop_cost(args.rounds, short=short, long=long)
        for mode, figures in cost.items():
            print(f"{mode}: {statistics.median(figures):,.0f} instructions/request ({figures})")
        for base, two in (("one-region", "two-regions"), ("one-region-write", "two-regions-write")):
            ratio = statistics.median(cost[two]) / statistics.median(cost[base])
            judged = "within 5%" if ratio <= RATIO_TARGET else "more than 5%"
            print(f"{two}/{base}: {ratio:.3f}x ({judged})")
    if not args.skip_stack:
        e = evacuation(drivers=args.drivers or (QUICK_DRIVERS if args.quick else STACK_DRIVERS))
        print(evacuation_text(e))
        print(json.dumps(e, indent=2))
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
