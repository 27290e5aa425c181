"""Run in-process gateway forwards with Valgrind's callgrind counting only the measured ones.

Started by :mod:`bench.instructions` as ``valgrind --tool=callgrind --instr-atstart=no
python -P bench/callgrind_forward.py --mode hop|fast-fail --requests N --body FILE`` with
``PYTHONPATH`` on the tree under test (this one or a ``--baseline`` worktree), so it
imports nothing from ``bench/``: it builds the gateway's app over a stub transport as
bench/inprocess.py does, warms it up, switches callgrind's instrumentation on for exactly
``N`` authenticated ``GET /loads`` and off again. The modules' names it imports exist in
every tree since the request pipeline was split into subpackages and in the one before it.

- ``hop``: the module answers 200 with ``FILE``'s body and the loads module's headers (its
  ``ETag``, ``Cache-Control``, ``Vary``);
- ``fast-fail``: the module answered during the warm-up, then refuses connections; its
  breaker opens and every measured request is answered from the last-known-good copy.

The gateway's monotonic clock is frozen while measuring, so no breaker probe or refill
falls inside the window: the same work for every request, in every tree.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from gateway.app import create_app
from gateway.config import GatewaySettings
from relay.devissuer import DevIssuer
from shared_contracts.identity import Role

try:
    from gateway.routing.routes import RouteTable
    from module_kit.signed_context import generate_key_pair
except ImportError:  # a tree from before the gateway's subpackages
    from gateway.routes import RouteTable  # type: ignore[import-not-found,no-redef]
    from module_kit.identity import (  # type: ignore[import-not-found,no-redef]
        generate_key_pair,
    )

WARMUP = 300
UPSTREAMS = {
    f"RELAY_UPSTREAM_{m.upper()}": f"http://{m}.bench"
    for m in ("loads", "gatepass", "navigate", "message")
}


class Clock:
    """A monotonic clock that advances only while ``running``."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.running = True

    def __call__(self) -> float:
        if self.running:
            self.now += 0.001
        return self.now


def module_tag(body: bytes) -> bytes:
    """The ``ETag`` the loads module sends with ``body`` (module_kit.etag.entity_tag, written
    out: the trees from before the modules tagged their answers have no module_kit.etag)."""
    digest = hashlib.sha256(b"\0".join((b"application/json", b"", body))).hexdigest()
    return f'"{digest[:32]}"'.encode()


class Module(httpx.AsyncBaseTransport):
    """The loads module: its list with the headers it sends (module_kit.etag)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.down = False
        self.headers = [
            (b"content-type", b"application/json"),
            (b"etag", module_tag(body)),
            (b"cache-control", b"private, no-cache"),
            (b"vary", b"Authorization"),
        ]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused")
        return httpx.Response(200, content=self.body, headers=self.headers)


def loads_caller(app: Any, token: str) -> tuple[Callable[[], Awaitable[None]], list[int]]:
    """A function making one authenticated ``GET /loads`` through ``app``'s ASGI interface
    (no server, no sockets) per call, and the list of the statuses it got."""
    headers = [
        (b"host", b"gateway"),
        (b"authorization", b"Bearer " + token.encode()),
        (b"accept", b"application/json"),
        (b"user-agent", b"bench"),
    ]
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
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

    return one, statuses


def callgrind(switch: str) -> None:
    """Instrumentation on or off for this process (a no-op outside Valgrind)."""
    subprocess.run(
        ["callgrind_control", "-i", switch, str(os.getpid())], capture_output=True, check=False
    )


def bench_settings(**extra: Any) -> tuple[GatewaySettings, DevIssuer]:
    """The gateway's settings for an in-process benchmark (a fresh token issuer and
    identity key, rate limits out of the way) and the issuer that mints its tokens."""
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
        **extra,
    )
    return settings, issuer


async def run(mode: str, requests: int, body: bytes) -> None:
    settings, issuer = bench_settings()
    module, clock = Module(body), Clock()
    app = create_app(
        settings,
        routes=RouteTable.load(settings.routes_file, env=UPSTREAMS),
        transport=module,
        clock=clock,
    )
    one, statuses = loads_caller(app, issuer.mint("D-1001", Role.DRIVER, "D-1001"))
    for _ in range(WARMUP):
        await one()
    if mode == "fast-fail":
        module.down = True
        for _ in range(WARMUP):  # the breaker opens; the copy answers
            await one()
    del statuses[:]
    clock.running = False
    callgrind("on")
    for _ in range(requests):
        await one()
    callgrind("off")
    if set(statuses) != {200}:
        sys.exit(f"{mode}: answers other than 200: {sorted(set(statuses))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("hop", "fast-fail"), required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--body", type=Path, required=True, help="the module's answer")
    args = parser.parse_args()
    asyncio.run(run(args.mode, args.requests, args.body.read_bytes()))


if __name__ == "__main__":
    main()
