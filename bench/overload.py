"""The overload phase of ``make bench``: one gateway process offered ~3x what it can answer.

One gateway process (bench.harness.Gateway, pinned to the servers' core) in front of the
nginx stub upstream. First its capacity: full-speed RPS over the mixed routes, load
shedding off. Then, in interleaved rounds:

1. *unloaded*: the critical route (``GET /loads``) alone at a moderate paced rate (a
   quarter of the capacity, as the other phases' paced runs), load shedding on;
2. *shedding*: the same critical traffic, plus every other tier (``GET /navigate``
   degradable, ``POST /message`` deferrable, ``POST /dispatch/messages`` optional) paced
   so that all four together offer ``OFFERED`` x the capacity, each tier by its own wrk
   (so each has its own latency figures), load shedding on;
3. *no shedding*: the same offer to the same gateway with ``RELAY_SHED_LOAD=false`` (the
   reference: what the overload does without shedding).

Reported: the critical route's p99 under the overload against its unloaded p99 (target
at most ``P99_RATIO_TARGET`` x) and its success (100%), the shed answers' latency (the
optional tier's requests, all shed: p99 at most ``SHED_P99_TARGET_MS`` ms), and
each tier's share shed, from the gateway's own counts (``/ops/status``, ``shedding``).
wrk is closed-loop: a connection sends its next request a pause after an answer (drawn
at random, exponential, of the mean that gives the offered rate: independent clients, not
connections in lockstep; bench/overload.lua), so an offered rate holds only while
answers are fast; the achieved rate is reported.
"""

from __future__ import annotations

import json
import random
import re
import statistics
import subprocess
import threading
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import httpx

from shared_contracts.identity import Role

from .harness import BENCH, LOAD_CPU, Gateway, Nginx, WrkResult, command_line, parse_wrk, pinned

OFFERED = 3.0  # x one process's full-speed capacity, all tiers together
CRITICAL_SHARE = 0.25  # of the capacity: the critical route's paced rate, loaded or not
P99_RATIO_TARGET = 2.0  # critical p99 under the overload / unloaded: at most
SHED_P99_TARGET_MS = 5.0  # a shed answer's p99 on loopback: at most
CRITICAL_CONNECTIONS = 10
FLOOD_CONNECTIONS = 128  # per other tier: long pauses, so slow answers cut the offer less
NAVIGATE = "/navigate?load_id=L-5001&lat=41.60&lon=-87.30"
MESSAGE = json.dumps({"body": "running 20 minutes late"}, separators=(",", ":"))
DISPATCH_MESSAGE = json.dumps(
    {"driver_id": "D-1001", "body": "dock 4 instead"}, separators=(",", ":")
)
# Each tier's request: method, path, who sends it, body ("-": none).
REQUESTS: dict[str, tuple[str, str, Role, str]] = {
    "critical": ("GET", "/loads", Role.DRIVER, "-"),
    "degradable": ("GET", NAVIGATE, Role.DRIVER, "-"),
    "deferrable": ("POST", "/message", Role.DRIVER, MESSAGE),
    "optional": ("POST", "/dispatch/messages", Role.DISPATCH, DISPATCH_MESSAGE),
}
TIERS = ("optional", "deferrable", "degradable", "critical")  # shed in this order
MODULES = ("loads", "gatepass", "navigate", "message")
# The dispatch console's messages are sent thousands a second here: lift its rate limit.
ENV = {"RELAY_RATE_LIMIT_DISPATCH": "10000/100000"}
# The optional tier is shed from the first sign of load (the other tiers keep their
# defaults), so that its requests under the overload are the shed answers whose latency is
# measured: a tier only partly shed would mix forwards into the figure.
SHED_ALL_OPTIONAL = {"RELAY_SHED_AT_OPTIONAL": "0.0001"}
UNLOADED, SHEDDING, NO_SHEDDING = "unloaded", "shedding", "no shedding"
POLITE = "shedding, clients honour Retry-After"
RETRY_AFTER_MS = 1000  # the gateway's Retry-After on a shed (RELAY_SHED_RETRY_AFTER_SECONDS)

TARGET_TEXT = (
    f"- *Overload*: one gateway process offered ~{OFFERED:g}x its full-speed capacity "
    "(mixed routes: critical `GET /loads` at a quarter of the capacity, the rest spread over "
    "the degradable, deferrable and optional tiers): the critical route's p99 at most "
    f"{P99_RATIO_TARGET:g}x its p99 at the same paced rate unloaded, measured in the same "
    "rounds (the reference, with the p99 noise threshold), with 100% success; a shed "
    "answer's p99 (the optional tier, set to be shed from the first sign of load) at most "
    f"{SHED_P99_TARGET_MS:g} ms."
)


def tokens(gw: Gateway) -> dict[Role, str]:
    return {
        Role.DRIVER: gw.token,
        Role.DISPATCH: gw.issuer.mint("dispatch-bench", Role.DISPATCH),
    }


def wrk_argv(
    url: str,
    tiers: list[str],
    toks: dict[Role, str],
    *,
    seconds: int,
    connections: int,
    rate: float | None,
    after_503_ms: int = 0,
) -> list[str]:
    """wrk on LOAD_CPU sending ``tiers``' requests in turn (bench/overload.lua); with
    ``rate``, each connection pauses ``connections / rate`` s on average between its
    requests (drawn at random: independent clients), and with ``after_503_ms`` that long
    after a 503 (a client honouring Retry-After)."""
    pause = f"{connections * 1000 / rate:.3f}" if rate else "0"
    args = [pause, str(after_503_ms), str(random.randrange(1, 2**31))]
    for tier in tiers:
        method, path, role, body = REQUESTS[tier]
        args += [method, path, toks[role], body]
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    argv += ["-s", str(BENCH / "overload.lua"), url, "--", *args]
    return pinned(LOAD_CPU, argv)


def shown(argv: list[str], tiers: list[str]) -> str:
    """The command as the report prints it: each request's token and body left out."""
    cut = argv.index("--") + 4  # up to the pauses and the seed
    requests = " ".join(f"{REQUESTS[t][0]} '{REQUESTS[t][1]}' $TOKEN <body>" for t in tiers)
    return f"{command_line(argv[:cut])} {requests}"


def run_wrks(runs: dict[str, list[str]], seconds: int) -> dict[str, WrkResult]:
    """The wrk commands at once, each to the end; their results by name."""
    procs = {
        name: subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, argv in runs.items()
    }
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=seconds + 30)
        if proc.returncode:
            raise RuntimeError(f"wrk for {name} failed: {stderr}")
        out[name] = parse_wrk(stdout)
    return out


def status(gw: Gateway) -> dict[str, Any]:
    answer = httpx.get(
        gw.url + "/ops/status",
        headers={"authorization": "Bearer " + gw.ops_token},
        timeout=10,
    )
    answer.raise_for_status()
    shedding: dict[str, Any] = answer.json().get("shedding") or {}
    return shedding


def figures(result: WrkResult) -> dict[str, float]:
    return {
        "rps": round(result.rps, 1),
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "requests": result.requests,
        "errors": result.errors,
    }


def overload_run(
    gw: Gateway,
    rates: dict[str, float],
    seconds: int,
    sample: bool,
    after_503_ms: int = 0,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Every tier's wrk at once against ``gw``: each tier's figures (with the gateway's
    shed count of the tier, when ``sample``: also its shedding state halfway through).
    ``after_503_ms``: the clients wait that long after a 503 (0: they ignore Retry-After)."""
    toks = tokens(gw)
    runs = {
        tier: wrk_argv(
            gw.url,
            [tier],
            toks,
            seconds=seconds,
            connections=CRITICAL_CONNECTIONS if tier == "critical" else FLOOD_CONNECTIONS,
            rate=rates[tier],
            after_503_ms=after_503_ms,
        )
        for tier in TIERS
    }
    before = status(gw).get("shed", {}) if sample else {}
    halfway: dict[str, Any] = {}

    def look() -> None:
        time.sleep(seconds / 2)
        halfway.update(status(gw))

    probe = threading.Thread(target=look, daemon=True) if sample else None
    if probe:
        probe.start()
    cpu = gw.cpu_seconds()
    results = run_wrks(runs, seconds)
    cpu = gw.cpu_seconds() - cpu
    if probe:
        probe.join(10)
    after = status(gw).get("shed", {}) if sample else {}
    out: dict[str, Any] = {
        tier: {**figures(results[tier]), "shed": after.get(tier, 0) - before.get(tier, 0)}
        for tier in TIERS
    }
    out["cpu_seconds"] = round(cpu, 3)
    if halfway:
        kept = ("in_flight", "delay_ms", "pressure", "shedding", "letting_in")
        out["halfway"] = {k: halfway.get(k) for k in kept}
    return out, {tier: shown(argv, [tier]) for tier, argv in runs.items()}


def phase(report: Any, state: Path, nginx: Nginx) -> None:
    """The overload phase (bench/run.py): figures in ``report.overload``, targets in
    ``report.targets`` (phase "overload")."""
    from bench.run import upstreams

    seconds, rounds = report.seconds, report.rounds
    on = Gateway(state, upstreams(nginx), env={**ENV, **SHED_ALL_OPTIONAL})
    off = Gateway(state, upstreams(nginx), env={**ENV, "RELAY_SHED_LOAD": "false"})
    on.start()
    try:
        off.start()
        try:
            print("overload: one gateway process's capacity, mixed routes", flush=True)
            mixed = list(REQUESTS)
            toks = tokens(off)
            warm = wrk_argv(off.url, mixed, toks, seconds=report.warmup, connections=32, rate=None)
            run_wrks({"warm": warm}, report.warmup)
            argv = wrk_argv(
                off.url, mixed, toks, seconds=max(3, seconds), connections=32, rate=None
            )
            cpu = off.cpu_seconds()
            capacity = run_wrks({"capacity": argv}, seconds)["capacity"]
            forward_cpu_us = (off.cpu_seconds() - cpu) * 1e6 / max(1, capacity.requests)
            c = capacity.rps
            critical = max(50.0, round(CRITICAL_SHARE * c / 10) * 10)
            flood = (OFFERED * c - critical) / 3
            rates = {"critical": critical, "degradable": flood, "deferrable": flood}
            rates["optional"] = flood
            print(
                f"  {c:,.0f} RPS at full speed (shedding off, {capacity.errors} errors); "
                f"offering {critical:,.0f} RPS critical and {flood:,.0f} RPS to each other tier",
                flush=True,
            )
            unloaded_argv = wrk_argv(
                on.url,
                ["critical"],
                tokens(on),
                seconds=seconds,
                connections=CRITICAL_CONNECTIONS,
                rate=critical,
            )
            run_wrks(
                {
                    "warm": wrk_argv(
                        on.url,
                        ["critical"],
                        tokens(on),
                        seconds=report.warmup,
                        connections=CRITICAL_CONNECTIONS,
                        rate=critical,
                    )
                },
                report.warmup,
            )
            out_rounds = []
            commands: dict[str, str] = {}
            for r in range(1, rounds + 1):
                unloaded = run_wrks({"u": unloaded_argv}, seconds)["u"]
                shed, commands = overload_run(on, rates, seconds, sample=True)
                polite, _ = overload_run(
                    on, rates, seconds, sample=True, after_503_ms=RETRY_AFTER_MS
                )
                plain, _ = overload_run(off, rates, seconds, sample=False)
                out_rounds.append(
                    {
                        UNLOADED: figures(unloaded),
                        SHEDDING: shed,
                        POLITE: polite,
                        NO_SHEDDING: plain,
                    }
                )
                print(
                    f"  r{r} critical p99: unloaded {unloaded.p99_ms:.2f} ms, overloaded "
                    f"{shed['critical']['p99_ms']:.2f} ms with shedding "
                    f"({shed['critical']['errors']} errors), {plain['critical']['p99_ms']:.2f} ms "
                    f"without; shed: "
                    + ", ".join(f"{t} {shed[t]['shed']:,}/{shed[t]['requests']:,}" for t in TIERS)
                    + f"; halfway {shed.get('halfway')}; honouring Retry-After: critical "
                    f"p99 {polite['critical']['p99_ms']:.2f} ms",
                    flush=True,
                )
            report.overload = {
                "capacity": {**figures(capacity), "cpu_us": round(forward_cpu_us, 1)},
                "step_us": round(step_cost_us(), 2),
                "rates": rates,
                "connections": {
                    t: CRITICAL_CONNECTIONS if t == "critical" else FLOOD_CONNECTIONS for t in TIERS
                },
                "settings": {
                    k: v
                    for k, v in status(on).items()
                    if k in ("max_in_flight", "max_delay_ms", "shed_at")
                },
                "rounds": out_rounds,
                "commands": {
                    "capacity": shown(argv, mixed),
                    "unloaded": shown(unloaded_argv, ["critical"]),
                    **{f"overload, {t}": cmd for t, cmd in commands.items()},
                },
            }
        finally:
            off.stop()
    finally:
        on.stop()
    targets(report)


def step_cost_us(requests: int = 20_000) -> float:
    """Microseconds per shed request through the gateway's ASGI pipeline in this process
    (every tier forced shed; no server, no socket): what the steps up to ``ShedLoad`` cost."""
    import asyncio
    import os

    from gateway.app import create_app
    from gateway.config import GatewaySettings

    saved = dict(os.environ)
    os.environ.update({f"RELAY_UPSTREAM_{m.upper()}": "http://127.0.0.1:9" for m in MODULES})
    try:
        app = create_app(GatewaySettings(stage="local"))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    app.state.shedder.forced_tiers = lambda: frozenset(TIERS)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        return None

    def scope() -> dict[str, Any]:
        return {
            "type": "http",
            "method": "GET",
            "path": "/loads",
            "raw_path": b"/loads",
            "query_string": b"",
            "headers": [(b"host", b"gateway"), (b"authorization", b"Bearer token")],
            "client": ("127.0.0.1", 50000),
            "state": {},
        }

    async def run(n: int) -> float:
        started = time.process_time()  # CPU: a busy host's other work left out
        for _ in range(n):
            await app(scope(), receive, send)
        return time.process_time() - started

    asyncio.run(run(2_000))
    return asyncio.run(run(requests)) * 1e6 / requests


def shed_cpu_us(o: dict[str, Any], run: dict[str, Any]) -> float | None:
    """A shed request's CPU in the process, from one shedding run: its CPU less the
    forwarded requests' (at the capacity run's CPU per forward), over the requests shed."""
    shed = sum(run[t]["shed"] for t in TIERS)
    forwarded = sum(max(0, run[t]["requests"] - run[t]["shed"]) for t in TIERS)
    forward_us = o["capacity"].get("cpu_us")
    if not shed or not forward_us or "cpu_seconds" not in run:
        return None
    return max(0.0, (run["cpu_seconds"] * 1e6 - forwarded * forward_us) / shed)


def cost_reading(o: dict[str, Any]) -> list[str]:
    """What a shed costs the process against a forward, and what that means for 3x."""
    forward_us = o["capacity"].get("cpu_us")
    estimates = [e for e in (shed_cpu_us(o, x[SHEDDING]) for x in o["rounds"]) if e is not None]
    if not forward_us or not estimates:
        return []
    shed_us = median(estimates)
    share = shed_us / forward_us
    critical = o["rates"]["critical"] / o["capacity"]["rps"]
    need = critical + (OFFERED - critical) * share
    return [
        f"**What a shed costs.** A forward took {forward_us:,.0f} us of the process's CPU "
        f"(the capacity run), a shed request ~{shed_us:,.0f} us (the shedding rounds' CPU "
        f"less their forwards', over the requests shed; median of {len(estimates)}), "
        f"{100 * share:.0f}% of a forward. The pipeline's own steps up to `ShedLoad` take "
        f"{o.get('step_us', 0):.1f} us when a request is shed there (in-process, every tier "
        "forced shed); while a tier is being shed the gateway's server refuses it before "
        "any of that (`EarlyShed`: no task, no ASGI cycle; a whole plain request in one "
        "read is not even parsed), and what a shed costs is then finding its request line "
        "and length and the socket's read and write. With the critical "
        "route at "
        f"{100 * critical:.0f}% of the capacity and everything else shed, the offer of "
        f"{OFFERED:g}x would still need {100 * need:.0f}% of the process: "
        + (
            "the process stays saturated however the tiers are chosen, and every answer, "
            "the critical ones and the 503s alike, waits in the same event loop. What would "
            "move it: refusing in front of the process (the balancer's per-route limits), or "
            "more processes (`relay dev --gateways N`): shedding inside one process only "
            "holds while a shed costs less than (1 - critical share) / (offer - critical "
            "share) of a forward."
            if need >= 1
            else "below its capacity, so the critical route's latency is bounded by how "
            "early the tiers are shed and how far they are let back in (docs/resilience.md: "
            "a shed tier comes back over a ramp, not whole), and by the sheds themselves: "
            "those alone keep most of the process busy, and a critical request read in the "
            "same turn of the event loop as dozens of shed ones waits for their answers."
        ),
        "",
    ]


def without_out(command: str) -> str:
    """The command less its ``--out`` (where that run's report was written, not what it
    measured: a run of this phase alone is written aside and its section put in here)."""
    return re.sub(r" --out(=| )\S+", "", command)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def tier_figures(rounds: list[dict[str, Any]], run: str, tier: str) -> dict[str, list[float]]:
    rows = [r[run][tier] for r in rounds]
    return {
        "rps": [x["rps"] for x in rows],
        "p50_ms": [x["p50_ms"] for x in rows],
        "p99_ms": [x["p99_ms"] for x in rows],
        "success": [1 - x["errors"] / x["requests"] if x["requests"] else 0.0 for x in rows],
        # the gateway's count can pass wrk's by the requests in flight when wrk stopped
        "shed": [
            min(1.0, x.get("shed", 0) / x["requests"]) if x["requests"] else 0.0 for x in rows
        ],
    }


def targets(report: Any) -> None:
    from bench.verdicts import NOISE_THRESHOLDS, ratios, spread, verdict

    o = report.overload
    rounds = o["rounds"]
    first = len(report.targets)
    unloaded = spread([r[UNLOADED]["p99_ms"] for r in rounds])
    loaded = tier_figures(rounds, SHEDDING, "critical")
    ratio = spread(ratios(loaded["p99_ms"], [r[UNLOADED]["p99_ms"] for r in rounds]))
    success = min(loaded["success"])
    report.target(
        f"critical GET /loads p99 with the process offered ~{OFFERED:g}x its capacity, "
        "shedding on, over its p99 unloaded at the same rate",
        f"<= {P99_RATIO_TARGET:g}x, 100% success",
        ratio,
        f"{ratio.show('{:.2f}', 'x')}; p99 {spread(loaded['p99_ms']).show('{:.2f}', ' ms')}, "
        f"success {100 * success:.2f}% (lowest round)",
        "the critical route unloaded, same rate",
        unloaded,
        unloaded.show("{:.2f}", " ms"),
        NOISE_THRESHOLDS["p99"],
        verdict(
            ratio.median,
            P99_RATIO_TARGET,
            at_most=True,
            reference=unloaded,
            threshold=NOISE_THRESHOLDS["p99"],
            also=success >= 1.0,
        ),
    )
    optional = tier_figures(rounds, SHEDDING, "optional")
    shed_p99 = spread(optional["p99_ms"])
    share = min(optional["shed"])
    report.target(
        "a shed answer's p99 (the optional tier's requests under the overload)",
        f"<= {SHED_P99_TARGET_MS:g} ms",
        shed_p99,
        f"{shed_p99.show('{:.2f}', ' ms')}; {100 * share:.1f}% of them shed (lowest round)",
        "the critical route unloaded (the host's noise)",
        unloaded,
        unloaded.show("{:.2f}", " ms"),
        NOISE_THRESHOLDS["p99"],
        verdict(
            shed_p99.median,
            SHED_P99_TARGET_MS,
            at_most=True,
            reference=unloaded,
            threshold=NOISE_THRESHOLDS["p99"],
            also=share >= 0.99,
        ),
    )
    for t in report.targets[first:]:
        t["phase"] = "overload"


def markdown(r: Any) -> list[str]:
    """The overload phase's section of docs/benchmarks.md, from bench/results/overload.json
    (a bench.run Report with ``overload``; any run that had the phase)."""
    from bench.run import host_text, verdict_lines, without_note
    from bench.verdicts import spread

    if r is None or not getattr(r, "overload", None):
        return []
    o = r.overload
    rounds = o["rounds"]
    mode = f"`--quick`: {r.rounds} rounds, a smoke check" if r.quick else f"{r.rounds} rounds"
    s = o.get("settings", {})

    def ms(values: list[float]) -> str:
        return spread(values).show("{:.2f}", " ms")

    def pct(values: list[float]) -> str:
        return spread([100 * v for v in values]).show("{:.1f}", "%")

    rows = []
    for run in (SHEDDING, POLITE, NO_SHEDDING):
        if not all(run in x for x in rounds):
            continue
        for tier in reversed(TIERS):
            f = tier_figures(rounds, run, tier)
            method, path, _, _ = REQUESTS[tier]
            rows.append(
                f"| {run} | {tier}: {method} {path.split('?')[0]} | {o['rates'][tier]:,.0f} "
                f"| {spread(f['rps']).show('{:,.0f}')} | {ms(f['p50_ms'])} | {ms(f['p99_ms'])} "
                f"| {pct(f['success'])} | {'-' if run == NO_SHEDDING else pct(f['shed'])} |"
            )
    unloaded = [x[UNLOADED] for x in rounds]
    reading = cost_reading(o)
    halfway = [x[SHEDDING].get("halfway") or {} for x in rounds]
    return [
        f"## Overload (run of {r.started}; {mode})",
        "",
        *([f"`{without_out(without_note(r.command))}`", ""] if r.command else []),
        host_text(r.load_average, r.note),
        "",
        "### 15. Load shedding: one process offered 3x its capacity",
        "",
        "bench/overload.py: one gateway process (pinned to the servers' core) in front of "
        "the nginx stub upstream. Its capacity over the mixed routes (`GET /loads`, `GET "
        "/navigate`, `POST /message`, `POST /dispatch/messages` in turn, 32 connections, "
        f"shedding off): **{o['capacity']['rps']:,.0f} RPS**. Then, in each round: the "
        f"critical route alone at {o['rates']['critical']:,.0f} RPS (unloaded), the same "
        "with every other tier offered on top, ~"
        f"{OFFERED:g}x the capacity in all, each tier by its own paced wrk (shedding on; "
        "wrk ignores Retry-After, the worst case: a shed connection sends again after its "
        "usual pause), the same with clients that honour it (after a 503 a connection "
        f"waits {RETRY_AFTER_MS / 1000:g} to {2 * RETRY_AFTER_MS / 1000:g} s, at random: at "
        "least Retry-After, as the app does, docs/mobile.md, and out of step), "
        "and the same offer to a second process of the same gateway with "
        "`RELAY_SHED_LOAD=false` (the reference: the overload without shedding). wrk is "
        "closed-loop (a connection waits a pause after each answer, drawn at random from an "
        "exponential distribution of the mean that gives the offered rate: independent "
        "clients, not hundreds of connections in lockstep; bench/overload.lua), so slow "
        "answers lower the rate achieved. Shedding as configured: capacity "
        f"{s.get('max_in_flight', '?')} in flight or {s.get('max_delay_ms', '?')} ms of "
        f"event-loop lag, tiers shed from "
        + ", ".join(f"{t} {v:g}" for t, v in (s.get("shed_at") or {}).items())
        + " of it (the defaults, but for the optional tier: shed from the first sign of "
        "load, `RELAY_SHED_AT_OPTIONAL=0.0001`, so that its requests are the shed answers "
        "timed). Shed shares are "
        "the gateway's own counts (`/ops/status`, `shedding.shed`) over wrk's requests.",
        "",
        f"Critical `GET /loads` unloaded: p50 {ms([u['p50_ms'] for u in unloaded])}, "
        f"p99 {ms([u['p99_ms'] for u in unloaded])}, "
        f"{spread([u['rps'] for u in unloaded]).show('{:,.0f}', ' RPS')}.",
        "",
        "| run | tier: request | offered RPS | achieved RPS | p50 | p99 | 2xx | shed |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "Halfway through each shedding round, the gateway's own view (in flight, loop lag "
        "in ms, pressure, tiers shed, and the share let in of those being let back in): "
        + "; ".join(
            f"r{i + 1} {h.get('in_flight')}, {h.get('delay_ms')} ms, {h.get('pressure')}, "
            f"{'/'.join(h.get('shedding') or []) or 'none'}"
            + "".join(f", {t} {v:g} let in" for t, v in (h.get("letting_in") or {}).items())
            for i, h in enumerate(halfway)
        )
        + ".",
        "",
        *reading,
        *verdict_lines(r, "overload", ""),
        "",
        "```",
        *(f"{name}: {cmd}" for name, cmd in o.get("commands", {}).items()),
        "```",
        "",
    ]
