"""An in-process micro-benchmark of one forward: the gateway's ASGI app called directly,
its module answered by a stub transport (no sockets, no server), timed per request.

``python -m bench.inprocess [--requests N] [--rounds R] [--access-log]`` prints the
median of R rounds of N authenticated ``GET /loads`` forwards, in microseconds of this
process's CPU time per request (CPU time, not wall time: other work on the machine
inflates the wall clock, not the CPU the gateway spends). It measures the gateway's own
Python work (guard, route, auth, rate limit, the forward pipeline); the
server and the sockets are what ``make bench`` adds on top. ``--access-log`` turns on
the gateway's per-request JSON ``request`` line (``RELAY_ACCESS_LOG``), written to a file
as the local processes' logs are.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from starlette.types import Message

from gateway.app import create_app
from gateway.config import GatewaySettings
from gateway.routing.routes import RouteTable
from module_kit import logs
from module_kit.signed_context import generate_key_pair
from relay.devissuer import DevIssuer
from shared_contracts.identity import Role

DEFAULT_REQUESTS = 5000
DEFAULT_ROUNDS = 7
BODY = b'{"items":[{"load_id":"L-1","status":"assigned"}]}'
UPSTREAMS = {
    "RELAY_UPSTREAM_LOADS": "http://loads.bench",
    "RELAY_UPSTREAM_GATEPASS": "http://gatepass.bench",
    "RELAY_UPSTREAM_NAVIGATE": "http://navigate.bench",
    "RELAY_UPSTREAM_MESSAGE": "http://message.bench",
}


class StubTransport(httpx.AsyncBaseTransport):
    """Every module answers 200 with the same small JSON body."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=BODY, headers=[(b"content-type", b"application/json")])


async def _run(requests: int, rounds: int, access_log: bool = False) -> list[float]:
    issuer = DevIssuer.generate()
    private_key, _ = generate_key_pair()
    directory = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    settings = GatewaySettings(
        stage="test",
        token_issuer=issuer.issuer,
        jwks_url="file://" + str(issuer.write_jwks(directory)),
        token_client_ids=issuer.client_id,
        identity_signing_key=private_key,
        rate_limit_driver="10000/100000",
        access_log=access_log,
    )
    routes = RouteTable.load(settings.routes_file, env=UPSTREAMS)
    app = create_app(settings, routes=routes, transport=StubTransport())
    log_file = (directory / "gateway.log").open("a")  # the log file, as `relay dev` has it
    logs.setup_logging("gateway", stream=log_file, level="INFO" if access_log else "WARNING")
    token = issuer.mint("D-1001", Role.DRIVER, "D-1001")
    headers = [
        (b"host", b"gateway"),
        (b"authorization", b"Bearer " + token.encode()),
        (b"accept", b"application/json"),
        (b"user-agent", b"bench"),
    ]
    statuses: list[int] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def one() -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/loads",
            "raw_path": b"/loads",
            "query_string": b"",
            "headers": list(headers),
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        await app(scope, receive, send)

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS)
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--access-log", action="store_true", help="one JSON line per request")
    args = parser.parse_args()
    rounds = asyncio.run(_run(args.requests, args.rounds, args.access_log))
    print(
        f"{args.rounds} rounds of {args.requests} GET /loads"
        f"{' (access log on)' if args.access_log else ''}: "
        f"median {statistics.median(rounds):.1f} us CPU/request "
        f"(rounds: {', '.join(f'{r:.1f}' for r in rounds)})"
    )


if __name__ == "__main__":
    main()
