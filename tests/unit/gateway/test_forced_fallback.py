"""A fallback lever through the gateway: the module is never called, the answer and its
``Relay-Degraded`` marker are the ones an open breaker gives, and it lets go at its
``expires_at`` without a new read of the levers."""

from __future__ import annotations

import httpx
import pytest

from gateway.app import create_app
from gateway.routing.routes import RouteTable
from shared_contracts.degraded import DegradedMarker, FallbackKind
from shared_contracts.identity import Role
from shared_contracts.levers import Lever, LeverType
from tests.fakes import MonotonicClock, WallClock
from tests.unit.gateway.conftest import ISSUER, UPSTREAMS
from tests.unit.gateway.lever_fakes import FakeLeverStore
from tests.unit.gateway.test_resilience import a_load


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_forced_fallback_answers_with_the_marker_and_never_calls_the_module(
    settings, upstream, anyio_backend
):
    table = RouteTable.load(settings.routes_file, env=UPSTREAMS)
    wall, mono = WallClock(), MonotonicClock()
    store = FakeLeverStore()
    app = create_app(
        settings,
        routes=table,
        clock=mono,
        wall_clock=wall,
        lever_store=store,
    )
    auth = {"authorization": "Bearer " + ISSUER.mint("D-1001", Role.DRIVER, "D-1001")}
    loads = upstream.get("http://loads.test/loads").mock(
        return_value=httpx.Response(200, json={"items": [a_load()]})
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as client:
        live = await client.get("/loads", headers=auth)
        assert live.status_code == 200 and "relay-degraded" not in live.headers
        # an operator's lever (written straight to the store: the rules are tested above)
        store.items["fallback:loads"] = Lever(
            lever_id="fallback:loads",
            type=LeverType.FALLBACK,
            target="loads",
            who="ops-1",
            why="test",
            pulled_at=int(wall()),
            expires_at=int(wall()) + 60,
        )
        app.state.levers.refresh()
        forced = await client.get("/loads", headers=auth)
        assert loads.call_count == 1  # the module was not called
        assert forced.status_code == 200 and forced.json() == live.json()
        marker = DegradedMarker.parse(forced.headers["relay-degraded"])
        assert (marker.module, marker.fallback) == ("loads", FallbackKind.LAST_KNOWN_GOOD)
        status = (
            await client.get(
                "/ops/status",
                headers={"authorization": "Bearer " + ISSUER.mint("ops-1", Role.OPS, None)},
            )
        ).json()
        assert status["levers"]["fallback:loads"]["expires_in_seconds"] == 60
        assert status["fallbacks_served"] == {"loads:last-known-good": 1}
        assert status["modules"]["loads"]["breaker"]["state"] == "closed"  # not a failure
        # expired: the module is called again, with no new read of the levers
        wall.now += 60
        again = await client.get("/loads", headers=auth)
        assert again.status_code == 200 and "relay-degraded" not in again.headers
        assert loads.call_count == 2
        # the module fails until its breaker opens: the same answer as the lever's
        loads.mock(side_effect=httpx.ConnectError("down"))
        while app.state.upstreams["loads"].breaker.state != "open":
            await client.get("/loads", headers=auth)
        calls = loads.call_count
        opened = await client.get("/loads", headers=auth)
        assert loads.call_count == calls
        assert opened.json() == forced.json()
        assert DegradedMarker.parse(opened.headers["relay-degraded"]).model_dump(
            exclude={"age"}
        ) == marker.model_dump(exclude={"age"})
