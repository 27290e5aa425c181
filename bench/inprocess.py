"""An in-process micro-benchmark of one forward: the gateway's ASGI app called directly,
its module answered by a stub transport (no sockets, no server), timed per request.

``python -m bench.inprocess [--requests N] [--rounds R] [--access-log] [--lambda]`` prints
the median of R rounds of N authenticated ``GET /loads`` forwards, in microseconds of this
process's CPU time per request (CPU time, not wall time: other work on the machine
inflates the wall clock, not the CPU the gateway spends). It measures the gateway's own
Python work (guard, route, auth, rate limit, the forward pipeline); the
server and the sockets are what ``make bench`` adds on top. ``--access-log`` turns on
the gateway's per-request JSON ``request`` line (``RELAY_ACCESS_LOG``), written to a file
as the local processes' logs are.

``--lambda`` drives the same app through the gateway's Lambda entry instead
(``module_kit.lambda_entry.lambda_handler``, as gateway/handler.py builds it: Mangum, the
stage prefix removed, the answer metrics written as EMF to stdout, here a file), with HTTP
API v2 events and a Lambda context: the CPU a forward costs when API Gateway invokes the
gateway function. ``--json`` prints the rounds as JSON (for ``make bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.callgrind_forward import UPSTREAMS, bench_settings, loads_caller
from gateway.app import create_app
from gateway.routing.routes import RouteTable
from module_kit import logs
from module_kit.lambda_entry import lambda_handler
from shared_contracts.identity import Role

DEFAULT_REQUESTS = 5000
DEFAULT_ROUNDS = 7
BODY = b'{"items":[{"load_id":"L-1","status":"assigned"}]}'


class StubTransport(httpx.AsyncBaseTransport):
    """Every module answers 200 with the same small JSON body."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=BODY, headers=[(b"content-type", b"application/json")])


def _app(access_log: bool) -> tuple[Any, str, Path]:
    """The gateway's ASGI app over the stub transport, a driver token, its directory."""
    settings, issuer = bench_settings(access_log=access_log)
    directory = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    routes = RouteTable.load(settings.routes_file, env=UPSTREAMS)
    app = create_app(settings, routes=routes, transport=StubTransport())
    log_file = (directory / "gateway.log").open("a")  # the log file, as `relay dev` has it
    logs.setup_logging("gateway", stream=log_file, level="INFO" if access_log else "WARNING")
    return app, issuer.mint("D-1001", Role.DRIVER, "D-1001"), directory


async def _run(requests: int, rounds: int, access_log: bool = False) -> list[float]:
    app, token, _ = _app(access_log)
    one, statuses = loads_caller(app, token)
    for _ in range(200):  # warm-up: key caches, URL cache, signer
        await one()
    assert set(statuses) == {200}, statuses[:5]
    gc.collect()
    gc.freeze()
    per_request = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(requests):
            await one()
        per_request.append((time.process_time() - started) / requests * 1e6)
    assert set(statuses) == {200}
    return per_request


@dataclass(frozen=True)
class LambdaContext:
    """What Lambda passes the handler (the fields the gateway's entry reads)."""

    function_name: str = "relay-bench-gateway"
    function_version: str = "7"
    invoked_function_arn: str = (
        "arn:aws:lambda:us-east-1:123456789012:function:relay-bench-gateway:live"
    )
    memory_limit_in_mb: int = 1024
    aws_request_id: str = "bench-0001"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


def http_api_event(token: str, n: int) -> dict[str, Any]:
    """An HTTP API (payload 2.0) event on a named stage, as API Gateway invokes the gateway."""
    headers = {
        "host": "api.relay.example",
        "authorization": "Bearer " + token,
        "accept": "application/json",
        "user-agent": "bench",
    }
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/prod/loads",
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "bench",
            "domainName": "api.relay.example",
            "domainPrefix": "api",
            "http": {
                "method": "GET",
                "path": "/prod/loads",
                "protocol": "HTTP/1.1",
                "sourceIp": "198.51.100.7",
                "userAgent": "bench",
            },
            "requestId": f"bench-{n}",
            "routeKey": "$default",
            "stage": "prod",
            "time": "03/Dec/2026:18:00:00 +0000",
            "timeEpoch": 1796320800000,
        },
        "isBase64Encoded": False,
    }


def run_lambda(requests: int, rounds: int) -> list[float]:
    """CPU microseconds per forward through the gateway's Lambda entry (Mangum)."""
    app, token, directory = _app(access_log=False)
    handler = lambda_handler(app, service="gateway")
    context = LambdaContext()
    events = [http_api_event(token, n) for n in range(16)]
    # Lambda sends stdout (the EMF metrics) to CloudWatch Logs; here, to a file.
    with (directory / "stdout.log").open("a") as out, contextlib.redirect_stdout(out):
        for n in range(200):  # warm-up, as _run
            answer = handler(events[n % len(events)], context)
            assert answer["statusCode"] == 200, answer
        gc.collect()
        gc.freeze()
        per_request = []
        for _ in range(rounds):
            started = time.process_time()
            for n in range(requests):
                answer = handler(events[n % len(events)], context)
            per_request.append((time.process_time() - started) / requests * 1e6)
            assert answer["statusCode"] == 200, answer
    return per_request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS)
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--access-log", action="store_true", help="one JSON line per request")
    parser.add_argument("--lambda", dest="lambda_", action="store_true", help="Mangum entry")
    parser.add_argument("--json", action="store_true", help="the rounds as a JSON list")
    args = parser.parse_args()
    if args.lambda_:
        rounds = run_lambda(args.requests, args.rounds)
    else:
        rounds = asyncio.run(_run(args.requests, args.rounds, args.access_log))
    if args.json:
        print(json.dumps(rounds))
        return
    print(
        f"{args.rounds} rounds of {args.requests} GET /loads"
        f"{' (access log on)' if args.access_log else ''}"
        f"{' through the Lambda entry' if args.lambda_ else ''}: "
        f"median {statistics.median(rounds):.1f} us CPU/request "
        f"(rounds: {', '.join(f'{r:.1f}' for r in rounds)})"
    )


if __name__ == "__main__":
    main()
