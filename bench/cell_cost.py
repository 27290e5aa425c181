"""What cells cost the hop, and how far a single cell's fault reaches (docs/cells.md).

1. **Hop cost** (instructions per request, Valgrind's callgrind; the same count from run to
   run whatever else the host does): in-process forwards through this tree's gateway over
   a stub module, as bench/callgrind_forward.py makes them, by 20 drivers in turn:

   - ``uncelled``: loads as one upstream (``RELAY_UPSTREAM_LOADS`` one URL), no cells;
   - ``celled``: loads as 2 cells (``cell-1=URL,cell-2=URL``), each its own upstream and
     breaker, a placement store in memory with explicit placements for 4 of the 20
     drivers (each in the cell that is not its default); every request finds its
     driver's cell (the copy of the placements, else rendezvous hashing), checks the
     copy's age (a write waits when it is stale) and carries the driver's cells in its
     identity context.

   Both for ``GET /loads`` and for a write, ``POST /loads/L-1/events``. The ratio celled /
   uncelled is judged against 1.05 (docs/benchmarks.md).

2. **Blast radius**: on the real local stack with loads in N cells (``LocalStack(cells=N)``:
   the emulator, one loads process and tables per cell, the gateway), a few hundred
   synthetic drivers each get a load assigned through the gateway (``POST
   /dispatch/assignments``) and read ``/loads`` once live; once the fallback store (the
   projector, from each cell's table stream) holds every driver's load, every driver
   reads ``/loads`` twice with all cells well, then ``loads/cell-1`` is black-holed
   (``PUT /ops/faults/loads/cell-1``: accepts, never answers) and every driver reads twice
   more. Each driver counts as live (every answer live), degraded (an answer marked
   ``relay-degraded``, none failed) or failed (a 5xx, another error or no answer within
   the client's timeout); the shares are printed next to 1/N and the drivers' actual
   share in cell-1 (by ``default_cell``), with the healthy cells' latency before and
   during the fault.

``python -m bench.cell_cost [--rounds R] [--cells 2,3] [--drivers N] [--skip-stack]``;
``make bench`` runs it as its cells phase (bench/run.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import instructions

ROOT = Path(__file__).resolve().parent.parent
SHORT, LONG = 200, 1200
DRIVERS = [f"D-{n}" for n in range(3000, 3020)]
CELLS = ("cell-1", "cell-2")
PLACED = 4  # drivers with an explicit placement (in the cell that is not their default)
MODES = ("uncelled", "celled", "uncelled-write", "celled-write")
RATIO_TARGET = 1.05  # instructions per forward, celled / uncelled: at most
BODY = b'{"items":[{"load_id":"L-1","status":"assigned"}]}'
EVENT = b'{"kind":"arrived","stop_seq":1}'

# The blast radius on the local stack.
STACK_DRIVERS = 300
STACK_CELLS = (2, 3, 4)  # a 4-cell stack still starts in about 15 s on 2 cores
BAD_CELL = "cell-1"
READERS = 8  # drivers reading at once
CLIENT_TIMEOUT = 5.0  # seconds a driver waits for an answer (the loads deadline is 2 s)
SETUP_TRIES = 4  # an assignment or a first live read, on a busy host
FAULT_ROUNDS = 2  # reads per driver during the fault, and with every cell well before it
ROUTE = ["F-CHI", "F-IND"]


# --- 1. the hop, in-process under callgrind -----------------------------------------------


class _Placements:
    """The placement store as the gateway reads it (every explicit placement of a module),
    in memory: no emulator in the measured process."""

    def __init__(self, placed: dict[str, Any]) -> None:
        self.placed = placed

    def load(self, module: str) -> dict[str, Any]:
        return dict(self.placed) if module == "loads" else {}


def placements(cells: Sequence[str] = CELLS) -> dict[str, Any]:
    """The first ``PLACED`` drivers each placed in a cell that is not their default."""
    from gateway.cells.placement import Placement, default_cell

    out = {}
    for driver in DRIVERS[:PLACED]:
        other = next(c for c in cells if c != default_cell(driver, cells))
        out[driver] = Placement("loads", driver, other, revision=1, updated_by="bench")
    return out


def caller(
    app: Any, token: str, method: str, path: str, body: bytes = b""
) -> tuple[Callable[[], Awaitable[None]], list[int]]:
    """One authenticated request through ``app``'s ASGI interface per call (no server, no
    sockets), and the statuses it got (bench.callgrind_forward.loads_caller, any method)."""
    headers = [
        (b"host", b"gateway"),
        (b"authorization", b"Bearer " + token.encode()),
        (b"accept", b"application/json"),
        (b"user-agent", b"bench"),
    ]
    if body:
        headers += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def one() -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": list(headers),
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        await app(scope, receive, send)

    return one, statuses


async def _forwards(mode: str, requests: int) -> None:
    from bench.callgrind_forward import (
        UPSTREAMS,
        Clock,
        Module,
        bench_settings,
    )
    from gateway.app import create_app
    from gateway.routing.routes import RouteTable

    celled = mode.startswith("celled")
    write = mode.endswith("-write")
    settings, issuer = bench_settings()
    env = dict(UPSTREAMS)
    store = None
    if celled:
        env["RELAY_UPSTREAM_LOADS"] = ",".join(f"{c}=http://loads-{c}.bench" for c in CELLS)
        store = _Placements(placements())
    clock = Clock()
    app = create_app(
        settings,
        routes=RouteTable.load(settings.routes_file, env=env),
        transport=Module(BODY),
        clock=clock,
        placement_store=store,
    )

    def warmed() -> str | None:
        cells = app.state.cells
        if celled and len(cells.placed.get("loads", {})) != PLACED:
            return f"the gateway's copy has {cells.view()}, not {PLACED} placements"
        return None

    await measure(app, issuer, clock, mode=mode, write=write, requests=requests, warmed=warmed)


async def measure(
    app: Any,
    issuer: Any,
    clock: Any,
    *,
    mode: str,
    write: bool,
    requests: int,
    warmed: Callable[[], str | None],
) -> None:
    """The measured forwards of one mode (the cells and regions phases): 20 drivers in
    turn, warmed up first (then the shared copies' last background read lands and
    ``warmed`` says what is wrong with the app's state, if anything), counted between
    callgrind's on and off; every answer must be a 200."""
    from bench.callgrind_forward import WARMUP, callgrind
    from shared_contracts.identity import Role

    method, path, body = ("POST", "/loads/L-1/events", EVENT) if write else ("GET", "/loads", b"")
    callers = [caller(app, issuer.mint(d, Role.DRIVER, d), method, path, body) for d in DRIVERS]
    for n in range(WARMUP):
        await callers[n % len(callers)][0]()
    await asyncio.sleep(0.05)  # the last background read of the shared copies lands
    if (wrong := warmed()) is not None:
        sys.exit(f"{mode}: {wrong}")
    for _, got in callers:
        del got[:]
    clock.running = False
    callgrind("on")
    for n in range(requests):
        await callers[n % len(callers)][0]()
    callgrind("off")
    statuses = {s for _, got in callers for s in got}
    if statuses != {200}:
        sys.exit(f"{mode}: answers other than 200: {sorted(statuses)}")


def count_argv(
    mode: str, requests: int, out: Path | str, python: str = sys.executable
) -> list[str]:
    """The measured process (:func:`bench.instructions.forward_argv`)."""
    return instructions.forward_argv("bench.cell_cost", mode, requests, out, python)


def hop_cost(rounds: int, modes: Sequence[str] = MODES) -> dict[str, list[float]]:
    """Instructions per forward, one figure per round, for each mode (interleaved: every
    mode once per round)."""
    return instructions.forward_cost(
        "bench.cell_cost", list(modes), rounds, short=SHORT, long=LONG, timeout=900
    )


# --- 2. the blast radius of one cell's fault, on the local stack ----------------------------


def _percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``values``, nearest rank; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def outcome(status: int | None, degraded: bool) -> str:
    """One answer: ``live``, ``degraded`` (a 2xx marked relay-degraded) or ``failed``
    (anything else: a 5xx, a 4xx, an error, no answer in time)."""
    if status is not None and 200 <= status < 300:
        return "degraded" if degraded else "live"
    return "failed"


def worst(outcomes: Sequence[str]) -> str:
    """A driver's outcome over their reads: failed if any failed, else degraded if any was."""
    for kind in ("failed", "degraded"):
        if kind in outcomes:
            return kind
    return "live"


def blast_radius(cells: int = 2, drivers: int = STACK_DRIVERS) -> dict[str, Any]:
    """Black-hole one of ``cells`` loads cells while ``drivers`` synthetic drivers read
    their loads; what each driver got, and the healthy cells' latency before and during."""
    import boto3
    import httpx

    from gateway.cells.placement import default_cell
    from relay import demo
    from relay.cloud import cell_names
    from relay.devissuer import DevIssuer
    from relay.stack import LocalStack, free_port
    from shared_contracts.identity import Role

    names = cell_names(cells)
    people = [f"D-{n}" for n in range(80000, 80000 + drivers)]
    load_of = {d: f"L-{d[2:]}" for d in people}
    cell_of = {d: default_cell(d, names) for d in people}
    order = list(people)
    random.Random(14).shuffle(order)  # both cells' drivers interleaved, the same every run
    bad_unit = f"loads/{BAD_CELL}"
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="relay-bench-cells-") as tmp,
        LocalStack(
            gateway_port=free_port(),
            state_dir=Path(tmp) / "state",
            event_source_backoff=(1, 2),
            cells=cells,
            gateway_overrides={"RELAY_RATE_LIMIT_DISPATCH": "1000/1000"},
        ) as stack,
    ):
        tokens = DevIssuer.load_or_create(stack.state_dir)
        token = {d: tokens.mint(d, Role.DRIVER, d) for d in people}

        def auth(role: Role, driver: str | None = None) -> dict[str, str]:
            sub = driver if role is Role.DRIVER and driver else f"{role.value}-bench"
            return {"authorization": f"Bearer {tokens.mint(sub, role, driver)}"}

        dispatch, ops = auth(Role.DISPATCH), auth(Role.OPS)
        retries: list[str] = []  # setting up: assignments and first reads tried again
        up_at = time.monotonic()
        with httpx.Client(
            base_url=stack.gateway_url,
            timeout=CLIENT_TIMEOUT,
            limits=httpx.Limits(max_connections=READERS, max_keepalive_connections=READERS),
        ) as http:

            def assign(driver: str) -> int:
                """201, retried a few times on a busy host (409: an earlier try landed)."""
                body = demo.assignment(load_of[driver], driver, ROUTE, datetime.now(UTC))
                status = 0
                for attempt in range(SETUP_TRIES):
                    if attempt:
                        retries.append(driver)
                        time.sleep(attempt)
                    try:
                        status = http.post(
                            "/dispatch/assignments",
                            json=body.model_dump(mode="json"),
                            headers=dispatch,
                        ).status_code
                    except httpx.HTTPError:
                        continue
                    if status == 201 or (attempt and status == 409):
                        return 201
                return status

            def read(driver: str) -> tuple[str, str, float, int | None]:
                headers = {"authorization": f"Bearer {token[driver]}"}
                begun = time.perf_counter()
                try:
                    r = http.get("/loads", headers=headers)
                except httpx.HTTPError:
                    return driver, "failed", time.perf_counter() - begun, None
                took = time.perf_counter() - begun
                kind = outcome(r.status_code, "relay-degraded" in r.headers)
                if kind != "failed":
                    got = [ld["load_id"] for ld in r.json().get("items", [])]
                    if got != [load_of[driver]]:  # never another driver's loads, nor none
                        kind = "failed"
                return driver, kind, took, r.status_code

            def round_(who: list[str]) -> list[tuple[str, str, float, int | None]]:
                with ThreadPoolExecutor(READERS) as pool:
                    return list(pool.map(read, who))

            with ThreadPoolExecutor(READERS // 2) as pool:
                assigned = list(pool.map(assign, order))
            if set(assigned) != {201}:
                raise RuntimeError(f"assignments answered {sorted(set(assigned))}, not 201")
            # each driver once live, so that the gateway's copies hold it (retried a few
            # times on a busy host)
            pending = order
            for attempt in range(SETUP_TRIES):
                if attempt:
                    retries.extend(pending)
                    time.sleep(attempt)
                pending = [d for d, kind, _, _ in round_(pending) if kind != "live"]
                if not pending:
                    break
            if pending:
                raise RuntimeError(f"{len(pending)} drivers never read their load live")
            # The fallback store holds each driver's load (the projector, each cell's stream)
            ddb = boto3.resource(
                "dynamodb",
                endpoint_url=stack.emulator_url,
                region_name="us-east-1",
                aws_access_key_id="local",
                aws_secret_access_key="local",  # noqa: S106 - the emulator's dummy credentials
            )
            table = stack.function_env("GatewayFunction")["RELAY_FALLBACK_STORE_TABLE"]
            projected_in = _wait_projected(ddb, table, load_of, timeout=120.0)

            load_before = [round(x, 2) for x in os.getloadavg()]
            before = [r for _ in range(FAULT_ROUNDS) for r in round_(order)]
            fault = {"kind": "blackhole", "ttl_seconds": 300, "reason": "bench: cell blast radius"}
            r = http.put(f"/ops/faults/{bad_unit}", json=fault, headers=ops)
            if r.status_code != 200:
                raise RuntimeError(f"the fault was not set: {r.status_code} {r.text}")
            faulted_at = time.monotonic()
            try:
                during = [round_(order) for _ in range(FAULT_ROUNDS)]
            finally:
                http.delete(f"/ops/faults/{bad_unit}", headers=ops)
            fault_seconds = time.monotonic() - faulted_at
            shown = http.get("/ops/status", headers=ops).json()
            load_after = [round(x, 2) for x in os.getloadavg()]

    return _summary(
        cells=names,
        cell_of=cell_of,
        before=before,
        during=during,
        breakers={
            unit: (shown.get("modules", {}).get(unit, {}).get("breaker") or {}).get("state", "?")
            for unit in (f"loads/{c}" for c in names)
        },
        load_average={"before": load_before, "after": load_after},
        setup_retries=len(retries),
        seconds={
            "stack_start": round(up_at - started, 1),
            "projected_in": round(projected_in, 1),
            "fault": round(fault_seconds, 1),
            "all": round(time.monotonic() - started, 1),
        },
    )


def _wait_projected(ddb: Any, table: str, load_of: dict[str, str], timeout: float) -> float:
    """Seconds until the fallback store has every driver's load (bounded by ``timeout``)."""
    begun = time.monotonic()
    missing = {(f"driver#{d}", f"load#{ld}") for d, ld in load_of.items()}
    while True:
        pending = sorted(missing)  # one pass over what is still missing
        for at in range(0, len(pending), 100):
            batch = pending[at : at + 100]
            got = ddb.meta.client.batch_get_item(
                RequestItems={table: {"Keys": [{"pk": pk, "sk": sk} for pk, sk in batch]}}
            )
            for item in got.get("Responses", {}).get(table, []):
                missing.discard((item["pk"], item["sk"]))
        if not missing:
            break
        if time.monotonic() - begun > timeout:
            raise RuntimeError(f"the fallback store lacks {len(missing)} loads after {timeout} s")
        time.sleep(1.0)
    return time.monotonic() - begun


def _summary(
    *,
    cells: list[str],
    cell_of: dict[str, str],
    before: list[tuple[str, str, float, int | None]],
    during: list[list[tuple[str, str, float, int | None]]],
    breakers: dict[str, str],
    seconds: dict[str, float],
    load_average: dict[str, list[float]] | None = None,
    setup_retries: int = 0,
) -> dict[str, Any]:
    """The figures of one blast-radius run, from each read's (driver, outcome, seconds,
    status)."""
    drivers = sorted(cell_of)
    n = len(drivers)
    per_driver: dict[str, list[str]] = {d: [] for d in drivers}
    statuses: dict[str, int] = {}
    for reads in during:
        for driver, kind, _, status in reads:
            per_driver[driver].append(kind)
            key = "no answer" if status is None else str(status)
            statuses[key] = statuses.get(key, 0) + 1
    outcomes = {d: worst(kinds) for d, kinds in per_driver.items()}
    in_bad = [d for d in drivers if cell_of[d] == BAD_CELL]
    healthy = [d for d in drivers if cell_of[d] != BAD_CELL]

    def count(who: list[str], kind: str) -> int:
        return sum(outcomes[d] == kind for d in who)

    def latency(reads: list[tuple[str, str, float, int | None]], bad: bool) -> dict[str, float]:
        ms = [1000 * s for d, _, s, _ in reads if (cell_of[d] == BAD_CELL) == bad]
        return {
            "p50_ms": round(_percentile(ms, 0.50), 2),
            "p99_ms": round(_percentile(ms, 0.99), 2),
            "max_ms": round(max(ms, default=0.0), 2),
            "reads": len(ms),
        }

    during_all = [r for reads in during for r in reads]
    return {
        "cells": len(cells),
        "bad_cell": BAD_CELL,
        "drivers": n,
        "readers": READERS,
        "client_timeout_seconds": CLIENT_TIMEOUT,
        "fault_rounds": len(during),
        "expected_share": round(1 / len(cells), 4),
        "actual_share": round(len(in_bad) / n, 4),
        "drivers_in_bad_cell": len(in_bad),
        "live": count(drivers, "live"),
        "degraded": count(drivers, "degraded"),
        "failed": count(drivers, "failed"),
        "share_degraded": round(count(drivers, "degraded") / n, 4),
        "share_failed": round(count(drivers, "failed") / n, 4),
        "bad_cell_degraded": count(in_bad, "degraded"),
        "bad_cell_failed": count(in_bad, "failed"),
        "healthy_live": count(healthy, "live"),
        "healthy_drivers": len(healthy),
        "before_live": sum(kind == "live" for _, kind, _, _ in before),
        "healthy_before": latency(before, bad=False),
        "healthy_during": latency(during_all, bad=False),
        "bad_before": latency(before, bad=True),
        "bad_during": latency(during_all, bad=True),
        "bad_during_rounds": [latency(reads, bad=True) for reads in during],
        "healthy_during_rounds": [latency(reads, bad=False) for reads in during],
        "statuses_during": statuses,
        "breakers": breakers,
        "seconds": seconds,
        "load_average": load_average or {},
        "setup_retries": setup_retries,
    }


def isolated(b: dict[str, Any]) -> bool:
    """The fault stayed in its cell: every healthy-cell driver live, no driver failed, and
    no more drivers degraded than the bad cell holds."""
    return (
        b["healthy_live"] == b["healthy_drivers"]
        and b["failed"] == 0
        and b["degraded"] <= b["drivers_in_bad_cell"]
    )


def radius_text(b: dict[str, Any]) -> str:
    return (
        f"{b['cells']} cells, {b['drivers']} drivers: {100 * b['share_degraded']:.1f}% degraded, "
        f"{100 * b['share_failed']:.1f}% failed; 1/N = {100 * b['expected_share']:.1f}%, "
        f"drivers in {b['bad_cell']} {100 * b['actual_share']:.1f}%; healthy cells' p50/p99 "
        f"{b['healthy_before']['p50_ms']:.1f}/{b['healthy_before']['p99_ms']:.1f} ms before, "
        f"{b['healthy_during']['p50_ms']:.1f}/{b['healthy_during']['p99_ms']:.1f} ms during"
    )


# --- the phase in bench/run.py, and its section of docs/benchmarks.md ---------------------

CELLED = "loads in 2 cells, 4 of 20 drivers placed explicitly"
UNCELLED = "loads uncelled (reference)"
MODE_NAMES = {
    "uncelled": f"GET /loads, {UNCELLED}",
    "celled": f"GET /loads, {CELLED}",
    "uncelled-write": f"POST /loads/L-1/events, {UNCELLED}",
    "celled-write": f"POST /loads/L-1/events, {CELLED}",
}
TARGET_TEXT = (
    f"- *Cells*: with loads in 2 cells, a forward (`GET /loads`, and a write) costs at most "
    f"{RATIO_TARGET:.2f}x the instructions of the same forward with loads uncelled, counted "
    "under callgrind in the same run; and with one cell of N black-holed on the real local "
    "stack, the fault stays in its cell: every driver of the other cells live, none failed, "
    "no more drivers degraded than the cell holds (about 1/N), printed next to 1/N. That "
    "one is measured once, against what isolation means (set, not measured): MET or MISSED."
)


def phase(report: Any, stack: bool = True, cells: Sequence[int] = STACK_CELLS) -> None:
    """The cells phase of ``make bench`` (bench/run.py): the instruction counts in
    ``report.rounds`` interleaved rounds, then, with ``stack``, the blast radius of one
    black-holed cell for each number of ``cells``; figures in ``report.cells``, targets in
    ``report.targets`` (phase "cells")."""
    from bench.harness import command_line
    from bench.run import describe_tree

    if shutil.which("valgrind") is None:
        raise RuntimeError("the cells phase needs valgrind (make bench installs it)")
    print(
        f"cells: instructions per forward with loads in 2 cells vs uncelled "
        f"(callgrind, {report.rounds} rounds)",
        flush=True,
    )
    tree = describe_tree()  # the commit measured (at the start), and whether it had changes
    cost = hop_cost(report.rounds)
    for r in range(report.rounds):
        shown = ", ".join(f"{mode} {cost[mode][r]:,.0f}" for mode in cost)
        print(f"  r{r + 1} {shown} instructions/forward", flush=True)
    report.cells = {
        "instructions": cost,
        "requests": [SHORT, LONG],
        "drivers": len(DRIVERS),
        "placed": PLACED,
        "tree": tree if tree == describe_tree() else f"{tree}, then {describe_tree()}",
        "commands": [
            "PYTHONHASHSEED=0 " + command_line(count_argv(mode, n, ".", python="python"))
            for mode in cost
            for n in (SHORT, LONG)
        ],
        "blast_radius": [],
    }
    if stack:
        for n in cells:
            print(f"cells: {BAD_CELL} of {n} black-holed, on the local stack", flush=True)
            b = blast_radius(n)
            print(f"  {radius_text(b)}", flush=True)
            report.cells["blast_radius"].append(b)
    targets(report)


def targets(report: Any) -> None:
    from bench.verdicts import once_verdict, spread

    first = len(report.targets)
    instructions.ratio_targets(
        report,
        report.cells["instructions"],
        (
            ("uncelled", "celled", "GET /loads"),
            ("uncelled-write", "celled-write", "POST /loads/L-1/events"),
        ),
        comparison="loads in 2 cells vs uncelled",
        base_name="uncelled",
        drivers=report.cells["drivers"],
        target=RATIO_TARGET,
    )
    for b in report.cells.get("blast_radius", []):
        share = spread([b["share_degraded"]])
        expected = spread([b["expected_share"]])
        report.target(
            f"one of {b['cells']} loads cells black-holed, on the local stack: share of "
            f"{b['drivers']} drivers degraded and failed",
            "the other cells' drivers all live, none failed, degraded <= the cell's drivers",
            share,
            f"{100 * b['share_degraded']:.1f}% degraded, {100 * b['share_failed']:.1f}% failed "
            f"(drivers in {b['bad_cell']}: {100 * b['actual_share']:.1f}%; other cells "
            f"{b['healthy_live']} of {b['healthy_drivers']} live)",
            "1/N (set, not measured)",
            expected,
            f"{100 * b['expected_share']:.1f}%",
            0.0,
            once_verdict(b["degraded"], b["drivers_in_bad_cell"], at_most=True, also=isolated(b)),
        )
    for t in report.targets[first:]:
        t["phase"] = "cells"


def markdown(r: Any) -> list[str]:
    """The cells phase's section of docs/benchmarks.md, from bench/results/cells.json (a
    bench.run Report with ``cells``; any run that had the phase, a --quick one included)."""
    from bench.run import host_text, ratio_text, verdict_lines, without_note
    from bench.verdicts import ratios, spread

    if r is None or not r.cells:
        return []
    figures = r.cells
    cost = figures["instructions"]
    short, long = figures["requests"]
    mode = f"`--quick`: {r.rounds} rounds, a smoke check" if r.quick else f"{r.rounds} rounds"

    adds: list[str] = []  # what cell routing adds per forward, in words
    rows = [f"| {MODE_NAMES.get(m, m)} | {spread(v).show('{:,.0f}')} |" for m, v in cost.items()]
    for base, celled, what in (
        ("uncelled", "celled", "GET /loads"),
        ("uncelled-write", "celled-write", "POST /loads/L-1/events"),
    ):
        if cost.get(base) and cost.get(celled):
            ratio = spread(ratios(cost[celled], cost[base]))
            rows.append(f"| {what}: celled / uncelled, round by round | {ratio_text(ratio)} |")
            added = spread(cost[celled]).median - spread(cost[base]).median
            share = added / spread(cost[base]).median
            adds.append(f"{what} {added:,.0f} ({100 * share:.1f}%)")
    lines = [
        f"## Cells (run of {r.started}; {mode})",
        "",
        *([f"`{without_note(r.command)}`", ""] if r.command else []),
        *([f"Tree measured: {figures['tree']}.", ""] if figures.get("tree") else []),
        host_text(r.load_average, r.note),
        "",
        "### 10. Cell routing: instructions per forward",
        "",
        "`python -m bench.cell_cost` (bench/cell_cost.py), as this phase runs it: "
        "in-process authenticated forwards through this tree's gateway app over a stub "
        "module (as bench/callgrind_forward.py makes them), by "
        f"{figures['drivers']} drivers in turn, each run in a fresh interpreter under "
        "Valgrind's callgrind with instrumentation on only while the forwards run: loads "
        "as one upstream (the reference), and loads in 2 cells (`RELAY_UPSTREAM_LOADS="
        '"cell-1=...,cell-2=..."`: each cell its own upstream and breaker) with a placement '
        f"store in memory holding explicit placements for {figures['placed']} of the "
        "drivers (each in the cell that is not its default). A celled request finds its "
        "driver's cell (the instance's copy of the placements, else rendezvous hashing) "
        "and carries the driver's cells in its signed identity context; it also checks the "
        "copy's age (an idle instance reads the placements first; a write waits when the "
        "copy is stale). Instructions per forward are "
        f"({long:,} forwards - {short:,} forwards) / {long - short:,}, which leaves out the "
        "interpreter's start and the app's building. The gateway's clock is frozen while "
        "counting, so the copy's background read (once a second) falls outside the count. "
        "One round: every run once, in the order of the table.",
        "",
        "| run | instructions per forward, median (range) |",
        "|---|---:|",
        *rows,
        "",
        *(
            [
                "Cell routing adds, per forward (the medians' difference): "
                + "; ".join(adds)
                + ". What a celled request does that an uncelled one does not: it checks the "
                "placements copy's age (a clock read; a read of the table only when it is "
                "stale), finds its driver's cells for the identity context and the route's "
                "cell (each worked out once per copy of the placements: rendezvous hashing, "
                "a BLAKE2b per cell, unless placed), and signs the identity context with the "
                "cells in it (cached per identity and cells).",
                "",
            ]
            if adds
            else []
        ),
        *verdict_lines(r, "cells", "instructions per in-process forward"),
        "",
        "```",
        *figures.get("commands", []),
        "```",
        "",
    ]
    radii = figures.get("blast_radius") or []
    if not radii:
        return [*lines, "(blast radius: not run)", ""]
    b0 = radii[0]
    lines += [
        "### 11. The blast radius of one cell's fault",
        "",
        "On the real local stack (relay.stack.LocalStack with `cells=N`, as `relay dev "
        "--cells N` runs it: the DynamoDB emulator, one loads process and set of tables per "
        f"cell, the gateway), {b0['drivers']} synthetic drivers each get one load assigned "
        "through the gateway (`POST /dispatch/assignments`, routed to the driver's cell) "
        "and read `/loads` once live; once the fallback store holds every driver's load "
        "(the projector, from each cell's table stream), every driver reads `/loads` "
        f"{b0['fault_rounds']} times with all cells well, then `loads/{b0['bad_cell']}` is "
        "black-holed (`PUT "
        f"/ops/faults/loads/{b0['bad_cell']}`, kind `blackhole`: the gateway's calls to "
        f"it are accepted and never answered) and every driver reads {b0['fault_rounds']} "
        f"times more (the same order, {b0['readers']} drivers at a time), each waiting at most "
        f"{b0['client_timeout_seconds']:g} s (the loads deadline is 2 s). A driver is "
        "*live* if every answer during the fault was live, *degraded* if any was marked "
        "`relay-degraded` (their own load, from the gateway's copy or the fallback store) "
        "and none failed, *failed* otherwise (a 5xx, another status, no answer in time, or "
        "a list without their load). Each driver's cell is the placement's default "
        "(rendezvous hashing), so the share in the black-holed cell is about 1/N, not "
        "exactly it.",
        "",
        "| cells (N) | drivers | 1/N | drivers in the bad cell | degraded | failed "
        "| other cells' drivers live | healthy cells p50 / p99, before | during "
        "| bad cell's p50 / p99, during |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in radii:
        hb, hd, bd = b["healthy_before"], b["healthy_during"], b["bad_during"]
        lines.append(
            f"| {b['cells']} | {b['drivers']} | {100 * b['expected_share']:.1f}% "
            f"| {b['drivers_in_bad_cell']} ({100 * b['actual_share']:.1f}%) "
            f"| {b['degraded']} ({100 * b['share_degraded']:.1f}%) "
            f"| {b['failed']} ({100 * b['share_failed']:.1f}%) "
            f"| {b['healthy_live']} of {b['healthy_drivers']} "
            f"| {hb['p50_ms']:.1f} / {hb['p99_ms']:.1f} ms "
            f"| {hd['p50_ms']:.1f} / {hd['p99_ms']:.1f} ms "
            f"| {bd['p50_ms']:.1f} / {bd['p99_ms']:.1f} ms |"
        )
    lines.append("")
    for b in radii:
        rounds_ = "; ".join(
            f"round {k + 1} p50 {x['p50_ms']:.1f} ms, p99 {x['p99_ms']:.1f} ms, max "
            f"{x['max_ms']:.0f} ms"
            for k, x in enumerate(b.get("bad_during_rounds", []))
        )
        answers = ", ".join(
            f"{n:,} x {s}" for s, n in sorted(b["statuses_during"].items(), key=lambda kv: -kv[1])
        )
        healthy_rounds = "; ".join(
            f"round {k + 1} p50 {x['p50_ms']:.1f} ms, p99 {x['p99_ms']:.1f} ms"
            for k, x in enumerate(b.get("healthy_during_rounds", []))
        )
        breakers = ", ".join(f"{u} {s}" for u, s in b["breakers"].items())

        def drift(figure: str, b: dict[str, Any] = b) -> str:
            before, during = b["healthy_before"][figure], b["healthy_during"][figure]
            return f"{during / before:.2f}x" if before else "n/a"

        load = b.get("load_average") or {}
        host = (
            f"; host load average (1, 5, 15 min) {', '.join(map(str, load['before']))} before "
            f"the first read with all cells well, {', '.join(map(str, load['after']))} after "
            f"the fault, on {os.cpu_count()} cores"
            if load.get("before") and load.get("after")
            else ""
        )
        lines.append(
            f"N = {b['cells']}: answers during the fault {answers}; the bad cell's reads "
            f"{rounds_} (the first reads wait for the deadline until its breaker opens); "
            f"the healthy cells' reads {healthy_rounds} (p50 {drift('p50_ms')}, p99 "
            f"{drift('p99_ms')} their p50 and p99 with every cell well); breakers after the "
            "fault: "
            f"{breakers}; the fallback store held every load "
            f"{b['seconds']['projected_in']:g} s after the first live reads ended; "
            f"{b['seconds']['all']:.0f} s in all{host}."
        )
        lines.append("")
    return [
        *lines,
        *verdict_lines(r, "cells", "one of"),
        "",
        "```",
        "python -m bench.cell_cost",
        "```",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--forward", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=LONG)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cells", default=",".join(map(str, STACK_CELLS)))
    parser.add_argument("--drivers", type=int, default=STACK_DRIVERS)
    parser.add_argument("--skip-stack", action="store_true", help="the hop cost only")
    parser.add_argument("--skip-hop", action="store_true", help="the blast radius only")
    args = parser.parse_args()
    if args.forward:  # one measured process, under callgrind
        asyncio.run(_forwards(args.forward, args.requests))
        return
    started = time.monotonic()
    if not args.skip_hop:
        if shutil.which("valgrind") is None:
            sys.exit("valgrind is needed for the hop cost (make bench installs it)")
        cost = hop_cost(args.rounds)
        for mode, figures in cost.items():
            print(f"{mode}: {statistics.median(figures):,.0f} instructions/request ({figures})")
        for base, celled in (("uncelled", "celled"), ("uncelled-write", "celled-write")):
            ratio = statistics.median(cost[celled]) / statistics.median(cost[base])
            judged = "within 5%" if ratio <= RATIO_TARGET else "more than 5%"
            print(f"{celled}/{base}: {ratio:.3f}x ({judged})")
    if not args.skip_stack:
        for n in (int(c) for c in args.cells.split(",")):
            b = blast_radius(n, args.drivers)
            print(radius_text(b))
            print(json.dumps(b, indent=2))
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
