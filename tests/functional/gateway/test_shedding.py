"""Load shedding through the real gateway app: with requests held in flight at the
upstream, a deferrable request is shed with 503 while a critical one is forwarded."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from gateway.app import create_app
from gateway.routing.routes import RouteTable
from shared_contracts.identity import Role
from tests.unit.gateway.conftest import UPSTREAMS

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


class HeldUpstream(httpx.AsyncBaseTransport):
    """Every module answers at once, except gate pass reads: held until ``release``."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.all_held = asyncio.Event()
        self.held = 0
        self.seen: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(f"{request.method} {request.url.path}")
        if request.url.host == "gatepass.test":
            self.held += 1
            if self.held == 3:
                self.all_held.set()
            await self.release.wait()
            return httpx.Response(200, json={"items": []})
        if request.method == "POST":
            return httpx.Response(201, json={"message_id": "M-1"})
        return httpx.Response(200, json={"items": []})


async def test_held_requests_make_a_deferrable_request_shed_while_a_critical_one_is_forwarded(
    settings, bearer
):
    # GIVEN a gateway whose process holds at most 10 requests in flight (deferrable shed
    # from 20% of that, critical only at 100%), and three gate pass reads held upstream
    upstream = HeldUpstream()
    app = create_app(
        settings.model_copy(update={"shed_max_in_flight": 10}),
        transport=upstream,
        routes=RouteTable.load(settings.routes_file, env=UPSTREAMS),
    )
    driver = bearer(Role.DRIVER)
    now = [0.0]
    app.state.shedder.clock = lambda: now[0]  # the hold before a shed tier is let back in
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway.test", timeout=5
    ) as client:
        held = [asyncio.create_task(client.get("/gatepass", headers=driver)) for _ in range(3)]
        await asyncio.wait_for(upstream.all_held.wait(), 5)
        assert app.state.shedder.in_flight == 3

        # WHEN a driver sends a message (deferrable) and reads their loads (critical)
        message = await client.post("/message", json={"body": "running late"}, headers=driver)
        loads = await client.get("/loads", headers=driver)

        # THEN the message is shed at once, never reaching the module; the loads forwarded
        assert message.status_code == 503
        assert message.headers["retry-after"] == "1"
        assert message.headers["content-type"] == "application/problem+json"
        assert message.json()["type"] == "urn:relay:problem:overloaded"
        assert "POST /message" not in upstream.seen
        assert loads.status_code == 200
        assert "GET /loads" in upstream.seen
        assert app.state.shedder.shed == {"deferrable": 1}

        # and once the held requests are answered, messages are let back in after a calm
        # second (the hold: shed at once in the meantime), a growing share over the ramp
        upstream.release.set()
        assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200, 200]
        assert app.state.shedder.in_flight == 0

        async def send_messages(n: int) -> list[int]:
            return [
                (await client.post("/message", json={"body": "late"}, headers=driver)).status_code
                for _ in range(n)
            ]

        assert await send_messages(1) == [503]
        config = app.state.shedder.config
        now[0] += config.hold_seconds
        assert await send_messages(1) == [503]  # held: the ramp begins
        now[0] += config.ramp_seconds / 2
        assert sorted(await send_messages(4)) == [201, 201, 503, 503]  # half of them
        now[0] += config.ramp_seconds / 2
        assert await send_messages(2) == [201, 201]  # all again
        assert "POST /message" in upstream.seen
