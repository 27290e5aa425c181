"""What a release in progress costs the hop, and how fast a bad canary loses its traffic.

1. **Hop cost** (instructions per request, Valgrind's callgrind; the same count from run to
   run whatever else the host does): in-process ``GET /loads`` forwards through this tree's
   gateway over a stub module, as bench/callgrind_forward.py makes them, by 20 drivers in
   turn, with the module's release store attached in both runs:

   - ``no-release``: no release of loads (what every request pays: a dict lookup);
   - ``release``: a release running at 50%: the caller's bucket (CRC-32), half the drivers
     on the canary's own upstream, each call timed and counted per version.

   The ratio of the two is judged against 5% (docs/benchmarks.md).

2. **Time to 0%**: on the real local stack (emulator, module processes, gateway), a version
   of loads failing 30% of the gateway's calls is released with synthetic drivers reading
   through the gateway; the time from its first failed call (the first second whose stats
   show a failure) to the write that set its weight to 0, against the analysis interval.

``python -m bench.release_cost [--requests N] [--rounds R] [--skip-stack]``; ``make bench``
runs it as its release phase.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import instructions

ROOT = Path(__file__).resolve().parent.parent
SHORT, LONG = 200, 1200
DRIVERS = [f"D-{n}" for n in range(3000, 3020)]
BODY = b'{"items":[{"load_id":"L-1","status":"assigned"}]}'
# The stack phase's release: judged at 10% and 50%, then promoted; failures decide early.
STACK_STEPS = (10.0, 50.0, 100.0)
STACK_INTERVAL_SECONDS = 10
STACK_MIN_CALLS = 20
STACK_RATE = 100.0


# --- 1. the hop, in-process under callgrind -----------------------------------------------


class _Memory:
    """The release store and stats store as the gateway uses them (it only reads the
    releases and adds counts), in memory: no emulator in the measured process."""

    def __init__(self, releases: dict[str, Any]) -> None:
        self.releases = releases
        self.added = 0

    def load(self) -> dict[str, Any]:
        return dict(self.releases)

    def add(self, release_id: str, version: str, second: int, stats: Any) -> None:
        self.added += stats.calls


async def _forwards(mode: str, requests: int) -> None:
    from bench.callgrind_forward import (
        UPSTREAMS,
        WARMUP,
        Clock,
        Module,
        bench_settings,
        callgrind,
        loads_caller,
    )
    from gateway.app import create_app
    from gateway.release.state import Release
    from gateway.routing.routes import RouteTable
    from shared_contracts.identity import Role

    settings, issuer = bench_settings()
    releases = {}
    if mode == "release":
        releases["loads"] = Release(
            module="loads",
            release_id="loads-bench",
            stable_version="v1",
            canary_version="v2",
            canary_url="http://loads-canary.bench",
            steps=(50.0, 100.0),
            weight=50.0,
        )
    store = _Memory(releases)
    clock = Clock()
    app = create_app(
        settings,
        routes=RouteTable.load(settings.routes_file, env=UPSTREAMS),
        transport=Module(BODY),
        clock=clock,
        release_store=store,
        stats_store=store,
    )
    app.state.releases.refresh()
    callers = [loads_caller(app, issuer.mint(d, Role.DRIVER, d)) for d in DRIVERS]
    for n in range(WARMUP):
        await callers[n % len(callers)][0]()
    clock.running = False
    callgrind("on")
    for n in range(requests):
        await callers[n % len(callers)][0]()
    callgrind("off")
    statuses = {s for _, got in callers for s in got}
    if statuses != {200}:
        sys.exit(f"{mode}: answers other than 200: {sorted(statuses)}")
    if mode == "release" and not app.state.releases.stats.totals:
        sys.exit("release: no call was counted per version")


def count_argv(
    mode: str, requests: int, out: Path | str, python: str = sys.executable
) -> list[str]:
    """The measured process (:func:`bench.instructions.forward_argv`)."""
    return instructions.forward_argv("bench.release_cost", mode, requests, out, python)


def hop_cost(rounds: int) -> dict[str, list[float]]:
    """Instructions per forward, one figure per round, for each mode (interleaved: every
    mode once per round)."""
    return instructions.forward_cost(
        "bench.release_cost", ["no-release", "release"], rounds, short=SHORT, long=LONG, timeout=600
    )


# --- 2. time to 0% on the local stack -------------------------------------------------------


def time_to_zero() -> dict[str, Any]:
    """Release a version of loads failing 30% of the gateway's calls; the seconds from its
    first failed call to the weight-0 write, and what the drivers got meanwhile."""
    from gateway.release.state import ControlTableReleases
    from gateway.release.stats import ControlTableStats
    from relay.devissuer import DevIssuer
    from relay.release.deploy import Source, contract_check, deploy, directory_version
    from relay.release.faulty import fails, faulty_version
    from relay.release.hosts import LocalStackHost
    from relay.release.policy import Policy
    from relay.release.traffic import SyntheticTraffic
    from relay.stack import LocalStack, free_port
    from shared_contracts.identity import Role

    policy = Policy(
        steps=STACK_STEPS,
        interval_seconds=STACK_INTERVAL_SECONDS,
        min_calls=STACK_MIN_CALLS,
        min_p99_delta_ms=60,
    )
    with tempfile.TemporaryDirectory(prefix="relay-bench-release-") as tmp:
        tree = faulty_version(Path(tmp) / "fails-30", "loads", fails(0.3))
        source = Source(tree, directory_version(tree))
        with LocalStack(gateway_port=free_port(), state_dir=Path(tmp) / "state") as stack:
            import boto3

            dynamodb = boto3.resource(
                "dynamodb",
                endpoint_url=stack.emulator_url,
                region_name="us-east-1",
                aws_access_key_id="local",
                aws_secret_access_key="local",  # noqa: S106 - the emulator's dummy credentials
            )
            table = stack.function_env("GatewayFunction")["RELAY_CONTROL_TABLE"]
            store = ControlTableReleases(table, dynamodb=dynamodb)
            stats = ControlTableStats(table, dynamodb=dynamodb)
            tokens = DevIssuer.load_or_create(stack.state_dir)
            with SyntheticTraffic(
                stack.gateway_url,
                ["loads"],
                lambda d: tokens.mint(d, Role.DRIVER, d),
                rate=STACK_RATE,
            ) as load:
                result = deploy(
                    "loads",
                    source,
                    host=LocalStackHost(stack),
                    store=store,
                    stats=stats,
                    policy=policy,
                    check=contract_check(stack.identity_private_key),
                )
            release = store.get("loads")
            if release is None or result.outcome is None:
                raise RuntimeError("the release left no record in the control table")
            first = next(
                second
                for second in range(math.floor(release.started_at), math.ceil(release.updated_at))
                if stats.window(release.release_id, source.version, second, second + 1).failures
            )
            canary = stats.window(
                release.release_id, source.version, release.started_at, release.updated_at + 5
            )
            return {
                "promoted": result.promoted,
                "reason": result.outcome.reason,
                "interval_seconds": STACK_INTERVAL_SECONDS,
                "steps": list(STACK_STEPS),
                "min_calls": STACK_MIN_CALLS,
                "rate": STACK_RATE,
                "drivers": len(load.drivers),
                "seconds_to_zero": round(release.updated_at - first, 2),
                "canary_calls": canary.calls,
                "canary_failures": canary.failures,
                "driver_answers": dict(load.statuses),
            }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forward", choices=("no-release", "release"), help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=LONG)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-stack", action="store_true", help="the hop cost only")
    args = parser.parse_args()
    if args.forward:  # one measured process, under callgrind
        asyncio.run(_forwards(args.forward, args.requests))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is needed for the hop cost (make bench installs it)")
    started = time.monotonic()
    cost = hop_cost(args.rounds)
    base, release = statistics.median(cost["no-release"]), statistics.median(cost["release"])
    ratio = release / base
    verdict = "within 5%" if ratio <= 1.05 else "more than 5%"
    print(f"hop, no release: {base:,.0f} instructions/request ({cost['no-release']})")
    print(f"hop, release at 50%: {release:,.0f} instructions/request ({cost['release']})")
    print(f"release/no-release: {ratio:.3f}x ({verdict})")
    if not args.skip_stack:
        print("time to 0%:", time_to_zero())
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
