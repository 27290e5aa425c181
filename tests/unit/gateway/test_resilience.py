"""Retries, budget, bulkheads, fallbacks and faults through the gateway, on injected clocks."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from datetime import timedelta

import httpx
import pytest

from gateway.app import build_fallbacks, create_app
from gateway.config import GatewaySettings
from gateway.resilience import fallbacks
from gateway.resilience.breaker import ProbeStillRunningError
from gateway.resilience.retry import (
    BudgetConfig,
    RetryBudget,
    RetryConfig,
    backoff_delay,
    is_retry_safe,
)
from gateway.routing.routes import RouteTable
from shared_contracts.degraded import DegradedMarker, FallbackKind
from shared_contracts.gatepass import GatePassList, GatePassPublic, GatePassVerdict
from shared_contracts.identity import Role
from shared_contracts.loads import LoadPublic
from shared_contracts.navigate import Directions
from tests.fakes import NOW, FakeSleep, MonotonicClock, WallClock
from tests.unit.gateway.conftest import ISSUER, UPSTREAMS

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


class Harness:
    def __init__(
        self,
        mono: MonotonicClock,
        wall: WallClock,
        settings: GatewaySettings,
        overrides: dict | None = None,
    ) -> None:
        self.mono, self.wall, self.sleep = mono, wall, FakeSleep(mono)
        self.slept = self.sleep.slept
        table = RouteTable.load(settings.routes_file, env=UPSTREAMS)
        if overrides:
            data = {
                "modules": {
                    n: {**m.model_dump(exclude={"name"}), **overrides.get(n, {})}
                    for n, m in table.modules.items()
                },
                "routes": [r.model_dump() for r in table.routes],
            }
            table = RouteTable.from_dict(json.loads(json.dumps(data, default=list)), env={})

        self.app = create_app(
            settings,
            routes=table,
            clock=mono,
            wall_clock=wall,
            sleep=self.sleep,
            fallbacks=build_fallbacks(settings, wall_clock=wall),
        )
        self.tokens = ISSUER
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://gateway"
        )

    def auth(self, role: Role = Role.DRIVER, driver: str | None = "D-1001") -> dict[str, str]:
        return {"authorization": "Bearer " + self.tokens.mint(driver or "ops-1", role, driver)}

    @property
    def upstreams(self):
        return self.app.state.upstreams


@pytest.fixture
def harness(settings, upstream):
    def make(overrides: dict | None = None, **settings_kw) -> Harness:
        s = settings.model_copy(update=settings_kw) if settings_kw else settings
        return Harness(MonotonicClock(), WallClock(), s, overrides)

    return make


def facility(facility_id: str = "F-IND", lat: float = 39.7322, lon: float = -86.2236) -> dict:
    return {
        "facility_id": facility_id,
        "name": f"{facility_id} DC",
        "address": "Holt Rd",
        "lat": lat,
        "lon": lon,
    }


def a_load(load_id: str = "L-1", *, status: str = "assigned", current_stop: int = 1) -> dict:
    """A load as the loads module answers it (fits ``LoadPublic``)."""
    pickup, delivery = facility("F-IND"), facility("F-DET", 42.3314, -83.0458)
    stops = [
        {
            "seq": 1,
            "kind": "pickup",
            "facility": pickup,
            "window_start": NOW.isoformat(),
            "window_end": (NOW + timedelta(hours=3)).isoformat(),
        },
        {
            "seq": 2,
            "kind": "delivery",
            "facility": delivery,
            "window_start": (NOW + timedelta(hours=6)).isoformat(),
            "window_end": (NOW + timedelta(hours=9)).isoformat(),
        },
    ]
    load = {
        "load_id": load_id,
        "driver_id": "D-1001",
        "status": status,
        "shipper": pickup,
        "consignee": delivery,
        "stops": stops,
        "current_stop": current_stop,
        "version": 1,
        "assigned_at": NOW.isoformat(),
        "updated_at": NOW.isoformat(),
    }
    LoadPublic.model_validate(load)
    return load


def a_gate_pass(pass_id: str, *, valid_for: timedelta = timedelta(hours=2)) -> dict:
    """A pass as the gatepass module answers it (fits ``GatePassPublic``)."""
    gate_pass = {
        "pass_id": pass_id,
        "driver_id": "D-1001",
        "load_id": "L-1",
        "facility_id": "F-1",
        "valid_from": NOW.isoformat(),
        "valid_until": (NOW + valid_for).isoformat(),
        "issued_at": NOW.isoformat(),
        "kid": "k1",
        "token": "t" * 40,
        "qr_payload": "relay:t",
        "revoked": False,
    }
    GatePassPublic.model_validate(gate_pass)
    return gate_pass


LOAD = a_load()


# --- retries and the budget ----------------------------------------------------------


def test_only_safe_requests_are_retried():
    assert is_retry_safe("GET", False) and is_retry_safe("POST", True)
    assert not is_retry_safe("POST", False)


def test_backoff_is_jittered_and_capped():
    cfg = RetryConfig(base_delay_seconds=0.1, max_delay_seconds=0.3)
    rng = random.Random(7)
    delays = [backoff_delay(a, cfg, rng) for a in (1, 2, 3, 4, 5) for _ in range(50)]
    assert all(0 <= d <= 0.3 for d in delays)
    assert len({round(d, 6) for d in delays}) > 200  # jittered, not a fixed schedule


def test_retry_budget_caps_retries_at_a_share_of_requests():
    mono = MonotonicClock()
    budget = RetryBudget(BudgetConfig(ratio=0.2, min_per_second=0, window_seconds=10), clock=mono)
    for _ in range(10):
        budget.record_request()
    assert [budget.try_spend() for _ in range(3)] == [True, True, False]
    mono.now += 11  # the window slides: old requests no longer pay for retries
    assert budget.try_spend() is False


async def test_a_failing_read_is_retried_then_fails_over(harness, upstream):
    h = harness({"loads": {"retry": {"max_attempts": 3}}})
    route = upstream.get("http://loads.test/loads").mock(return_value=httpx.Response(503))
    r = await h.client.get("/loads", headers=h.auth())
    assert r.status_code == 503 and route.call_count == 3
    assert len(h.slept) == 2


async def test_retries_stop_when_the_budget_is_spent(harness, upstream):
    # the budget as the route table sets it ([modules.loads.retry_budget])
    h = harness(
        {
            "loads": {
                "retry": {"max_attempts": 3},
                "breaker": {"fail_max": 1000},
                "retry_budget": {"ratio": 0.1, "min_per_second": 0},
            }
        }
    )
    route = upstream.get("http://loads.test/loads").mock(return_value=httpx.Response(503))
    for _ in range(20):
        await h.client.get("/loads", headers=h.auth())
    # 20 requests may retry 10% of the time: 2 retries, not the 40 that 3 attempts allow
    assert route.call_count == 20 + 2


async def test_writes_without_a_key_are_made_safe_with_one(harness, upstream):
    h = harness({"message": {"retry": {"max_attempts": 2}}})
    route = upstream.post("http://message.test/message").mock(
        side_effect=[httpx.Response(503), httpx.Response(201, json={"message_id": "m1"})]
    )
    r = await h.client.post("/message", json={"body": "hi"}, headers=h.auth())
    assert r.status_code == 201 and route.call_count == 2
    keys = {c.request.headers["idempotency-key"] for c in route.calls}
    assert len(keys) == 1 and keys.pop().startswith("gw-")


# --- breaker through the gateway -----------------------------------------------------


async def test_open_breaker_short_circuits_to_the_cached_copy(harness, upstream):
    h = harness({"loads": {"retry": {"max_attempts": 1}}})
    route = upstream.get("http://loads.test/loads").mock(
        return_value=httpx.Response(200, json={"items": [LOAD]})
    )
    assert (await h.client.get("/loads", headers=h.auth())).status_code == 200
    route.mock(side_effect=httpx.ConnectError("down"))
    for _ in range(5):  # fail_max = 5 for loads in routes.toml
        await h.client.get("/loads", headers=h.auth())
    assert h.upstreams["loads"].breaker.state == "open"
    calls = route.call_count
    r = await h.client.get("/loads", headers=h.auth())
    assert r.status_code == 200 and route.call_count == calls  # not attempted
    assert (
        DegradedMarker.parse(r.headers["relay-degraded"]).fallback is FallbackKind.LAST_KNOWN_GOOD
    )


async def test_half_open_probe_does_not_hold_its_caller_when_a_copy_exists(
    harness, upstream, monkeypatch
):
    # GIVEN a cached copy, then a black-holed loads module whose breaker has opened
    h = harness(
        {
            "loads": {
                "retry": {"max_attempts": 1},
                "timeout_seconds": 0.5,
                "breaker": {"probe_patience_seconds": 0.01},
            }
        }
    )
    route = upstream.get("http://loads.test/loads").mock(
        return_value=httpx.Response(200, json={"items": [LOAD]})
    )
    assert (await h.client.get("/loads", headers=h.auth())).status_code == 200
    route.mock(side_effect=httpx.ConnectError("down"))
    for _ in range(5):
        await h.client.get("/loads", headers=h.auth())
    breaker = h.upstreams["loads"].breaker
    assert breaker.state == "open"
    released, trials = asyncio.Event(), []
    patiently = breaker.patiently

    async def keeping_the_trial(attempt):
        try:
            return await patiently(attempt)
        except ProbeStillRunningError as running:
            trials.append(running.trial)  # what runs on after its caller got the copy
            raise

    monkeypatch.setattr(breaker, "patiently", keeping_the_trial)

    async def black_hole(request):
        await released.wait()
        return httpx.Response(200, json={"items": [LOAD]})

    route.mock(side_effect=black_hole)
    h.mono.now += 11  # past the 10 s reset timeout: the next call is the trial
    assert breaker.would_probe()
    # WHEN the trial's caller asks
    r = await asyncio.wait_for(h.client.get("/loads", headers=h.auth()), timeout=0.4)
    # THEN it gets the cached copy after the probe patience, not after the 0.5 s deadline
    assert r.status_code == 200 and "relay-degraded" in r.headers
    assert breaker.state == "half-open"
    # AND the trial runs on: when the module answers, the breaker closes
    released.set()
    await trials.pop()  # the trial ends when the module answers
    assert breaker.state == "closed" and route.call_count == 7
    r = await h.client.get("/loads", headers=h.auth())
    assert r.status_code == 200 and "relay-degraded" not in r.headers


async def test_module_4xx_does_not_trip_the_breaker(harness, upstream):
    h = harness()
    upstream.get("http://loads.test/loads/L-9").mock(return_value=httpx.Response(404, json={}))
    for _ in range(20):
        assert (await h.client.get("/loads/L-9", headers=h.auth())).status_code == 404
    assert h.upstreams["loads"].breaker.state == "closed"


# --- bulkheads -----------------------------------------------------------------------


async def test_bulkhead_overflow_goes_to_the_fallback_at_once(harness, upstream):
    h = harness({"loads": {"bulkhead": {"max_concurrent": 1}}})
    route = upstream.get("http://loads.test/loads").mock(
        return_value=httpx.Response(200, json={"items": [LOAD]})
    )
    await h.client.get("/loads", headers=h.auth())  # a live copy to fall back on
    inside, release = asyncio.Event(), asyncio.Event()

    async def slow(request):
        inside.set()
        await release.wait()
        return httpx.Response(200, json={"items": [LOAD]})

    route.mock(side_effect=slow)
    first = asyncio.create_task(h.client.get("/loads", headers=h.auth()))
    await inside.wait()  # the first call holds the only bulkhead slot
    second = await h.client.get("/loads", headers=h.auth())
    assert second.status_code == 200 and "relay-degraded" in second.headers
    assert h.upstreams["loads"].bulkhead.rejected == 1
    release.set()
    assert (await first).status_code == 200 and "relay-degraded" not in (await first).headers


# --- fallbacks -----------------------------------------------------------------------


async def test_loads_cache_serves_list_and_details_with_their_age(harness, upstream):
    h = harness()
    route = upstream.get("http://loads.test/loads").mock(
        return_value=httpx.Response(200, json={"items": [LOAD, a_load("L-2")]})
    )
    await h.client.get("/loads", headers=h.auth())
    route.mock(side_effect=httpx.ConnectError("down"))
    upstream.get("http://loads.test/loads/L-2").mock(side_effect=httpx.ConnectError("down"))
    h.wall.now += 180
    listing = await h.client.get("/loads", headers=h.auth())
    detail = await h.client.get("/loads/L-2", headers=h.auth())
    assert listing.json()["items"][0]["load_id"] == "L-1"
    assert detail.json()["load_id"] == "L-2"
    marker = DegradedMarker.parse(detail.headers["relay-degraded"])
    assert (marker.module, marker.age) == ("loads", 180) and detail.headers["age"] == "180"
    # another driver never gets this driver's copy
    other = await h.client.get("/loads", headers=h.auth(Role.DRIVER, "D-2"))
    assert other.status_code == 503 and other.headers["retry-after"]


async def test_loads_cache_is_bounded():
    from gateway.resilience.fallbacks import Call, LastKnownGood

    cache = LastKnownGood(max_entries=100)
    for i in range(1000):
        cache.remember(Call("loads", "GET", f"/loads/{i}", "", b"", None), 200, b"{}", "x")
    assert len(cache) == 100


async def test_gate_pass_copy_is_served_only_while_valid(harness, upstream):
    h = harness()
    gate_pass = a_gate_pass("P-1")
    issue = upstream.post("http://gatepass.test/gatepass").mock(
        return_value=httpx.Response(201, json=gate_pass)
    )
    await h.client.post(
        "/gatepass", json={"load_id": "L-1", "facility_id": "F-1"}, headers=h.auth()
    )
    issue.mock(side_effect=httpx.ConnectError("down"))
    upstream.get("http://gatepass.test/gatepass/P-1").mock(side_effect=httpx.ConnectError("x"))
    again = await h.client.post(
        "/gatepass", json={"load_id": "L-1", "facility_id": "F-1"}, headers=h.auth()
    )
    assert again.status_code == 200 and again.json()["pass_id"] == "P-1"
    assert (await h.client.get("/gatepass/P-1", headers=h.auth())).status_code == 200
    h.wall.now += 3 * 3600  # expired: an old pass is never handed out
    assert (await h.client.get("/gatepass/P-1", headers=h.auth())).status_code == 503


def directions(entry_instructions: str = "Gate 3", dock_hours: object = None) -> dict:
    """A live navigate answer (fits ``Directions``) to the load's first stop."""
    answer = {
        "load_id": "L-1",
        "stop_seq": 1,
        "destination": {
            **facility("F-IND"),
            "entry_instructions": entry_instructions,
            "dock_hours": dock_hours or {"opens": "06:00", "closes": "22:00", "days": "Mon-Sat"},
        },
        "straight_line_km": 260.0,
        "route_km": 300.0,
        "eta_minutes": 240,
        "eta": (NOW + timedelta(hours=4)).isoformat(),
        "window_start": NOW.isoformat(),
        "window_end": (NOW + timedelta(hours=3)).isoformat(),
        "on_time": False,
        "engine": "osrm",
    }
    Directions.model_validate(answer)
    return answer


async def test_navigate_falls_back_to_static_directions(harness, upstream):
    h = harness()
    upstream.get("http://loads.test/loads").mock(
        return_value=httpx.Response(200, json={"items": [LOAD]})
    )
    nav = upstream.get("http://navigate.test/navigate").mock(
        return_value=httpx.Response(200, json=directions())
    )
    await h.client.get("/loads", headers=h.auth())
    await h.client.get("/navigate?load_id=L-1&lat=41.8&lon=-87.7", headers=h.auth())
    nav.mock(side_effect=httpx.ReadTimeout("black hole"))
    r = await h.client.get("/navigate?load_id=L-1&lat=41.8781&lon=-87.6298", headers=h.auth())
    assert r.status_code == 200
    body = Directions.model_validate(r.json())  # the navigate contract, as a live answer
    assert body.engine == "gateway-static"
    assert body.destination.entry_instructions == "Gate 3"
    assert body.destination.dock_hours is not None and body.destination.dock_hours.opens == "06:00"
    assert 255 < body.straight_line_km < 275  # Chicago - Indianapolis
    assert body.eta == NOW + timedelta(minutes=body.eta_minutes)
    # about 4.5 h at truck speed: late for the stop's window, which ends 3 h from now
    assert body.window_end == NOW + timedelta(hours=3) and body.on_time is False
    assert DegradedMarker.parse(r.headers["relay-degraded"]).fallback is FallbackKind.STATIC


async def test_static_directions_with_remembered_dock_hours_that_do_not_fit_are_a_503(
    harness, upstream, caplog
):
    # GIVEN a live navigate answer whose dock hours the contract refuses
    h = harness()
    upstream.get("http://loads.test/loads").mock(
        return_value=httpx.Response(200, json={"items": [LOAD]})
    )
    odd = {**directions(), "destination": {**directions()["destination"], "dock_hours": "6-22"}}
    nav = upstream.get("http://navigate.test/navigate").mock(
        return_value=httpx.Response(200, json=odd)
    )
    await h.client.get("/loads", headers=h.auth())
    await h.client.get("/navigate?load_id=L-1&lat=41.8&lon=-87.7", headers=h.auth())
    # WHEN navigate is down
    nav.mock(side_effect=httpx.ConnectError("down"))
    with caplog.at_level(logging.ERROR):
        r = await h.client.get("/navigate?load_id=L-1&lat=41.8&lon=-87.7", headers=h.auth())
    # THEN no answer is built from it: a logged, counted 503
    assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
    assert h.app.state.forwarder.fallback_errors == {"navigate:static": 1}
    assert "do not fit Directions" in caplog.text


async def test_a_failing_fallback_is_a_clear_503_not_a_500(harness, upstream):
    # GIVEN a cached listing of a shape the static-directions fallback cannot read
    h = harness()
    upstream.get("http://loads.test/loads").mock(
        return_value=httpx.Response(200, json={"items": [{"load_id": "L-1", "current_stop": 1}]})
    )  # no "stops"
    upstream.get("http://navigate.test/navigate").mock(side_effect=httpx.ConnectError("down"))
    await h.client.get("/loads", headers=h.auth())
    # WHEN navigate is down and the fallback raises
    r = await h.client.get("/navigate?load_id=L-1&lat=41.8&lon=-87.7", headers=h.auth())
    # THEN the driver gets the module's unavailability, counted where operators look
    assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
    assert r.headers["retry-after"]
    assert h.app.state.forwarder.fallback_errors == {"navigate:static": 1}


async def test_a_cached_load_list_that_does_not_fit_the_contract_is_a_logged_503(
    harness, upstream, caplog
):
    # GIVEN a driver's last live list, of a shape LoadList refuses (no stops, no driver...)
    h = harness()
    listing = upstream.get("http://loads.test/loads").mock(
        return_value=httpx.Response(200, json={"items": [{"load_id": "L-1", "status": "x"}]})
    )
    assert (await h.client.get("/loads", headers=h.auth())).status_code == 200  # live: as is
    # WHEN loads is down
    listing.mock(side_effect=httpx.ConnectError("down"))
    upstream.get("http://loads.test/loads/L-1").mock(side_effect=httpx.ConnectError("down"))
    with caplog.at_level(logging.ERROR):
        as_list = await h.client.get("/loads", headers=h.auth())
        as_detail = await h.client.get("/loads/L-1", headers=h.auth())
    # THEN neither the list nor a load from it is served: 503s, logged and counted
    assert [as_list.status_code, as_detail.status_code] == [503, 503]
    assert as_detail.headers["content-type"] == "application/problem+json"
    assert h.app.state.forwarder.fallback_errors == {"loads:last-known-good": 2}
    assert "does not fit LoadList" in caplog.text


async def test_a_cached_list_is_checked_against_its_contract_once_not_on_every_serve(
    harness, upstream, monkeypatch
):
    # GIVEN a driver's list cached live, and loads down
    h = harness()
    listing = upstream.get("http://loads.test/loads").mock(
        return_value=httpx.Response(200, json={"items": [LOAD]})
    )
    await h.client.get("/loads", headers=h.auth())
    listing.mock(side_effect=httpx.ConnectError("down"))
    parsed: list[str] = []
    real = fallbacks.parse_copy

    def counting(model, body, what):
        parsed.append(model.__name__)
        return real(model, body, what)

    monkeypatch.setattr(fallbacks, "parse_copy", counting)
    # WHEN the app polls it five times during the outage
    answers = [await h.client.get("/loads", headers=h.auth()) for _ in range(5)]
    # THEN all five are served from the copy, which was parsed the first time only
    assert {r.status_code for r in answers} == {200}
    assert all("relay-degraded" in r.headers for r in answers)
    assert parsed == ["LoadListView"]


async def test_a_cached_load_detail_that_does_not_fit_the_contract_is_a_503(harness, upstream):
    # GIVEN a copy without the stops a fallback reads (static directions, the list's order)
    h = harness()
    detail = upstream.get("http://loads.test/loads/L-1").mock(
        return_value=httpx.Response(200, json={k: v for k, v in LOAD.items() if k != "stops"})
    )
    await h.client.get("/loads/L-1", headers=h.auth())
    detail.mock(side_effect=httpx.ConnectError("down"))
    r = await h.client.get("/loads/L-1", headers=h.auth())
    assert r.status_code == 503
    assert h.app.state.forwarder.fallback_errors == {"loads:last-known-good": 1}


async def test_copies_keep_fields_the_gateway_does_not_know_and_ignore_a_new_status(
    harness, upstream
):
    # GIVEN loads, in a newer version, answering with a field and a status this gateway's
    # contracts do not know (a tolerant reader: neither is a reason to refuse the copy)
    h = harness()
    newer = {**LOAD, "hazmat_class": "3", "status": "on_hold"}
    listing = upstream.get("http://loads.test/loads").mock(
        return_value=httpx.Response(200, json={"items": [newer]})
    )
    detail = upstream.get("http://loads.test/loads/L-1").mock(
        return_value=httpx.Response(200, json=newer)
    )
    await h.client.get("/loads", headers=h.auth())
    await h.client.get("/loads/L-1", headers=h.auth())
    listing.mock(side_effect=httpx.ConnectError("down"))
    detail.mock(side_effect=httpx.ConnectError("down"))
    # WHEN loads is down
    served = [await h.client.get(p, headers=h.auth()) for p in ("/loads", "/loads/L-1")]
    # THEN both copies are served, degraded, with the new field and status as loads sent them
    assert [r.status_code for r in served] == [200, 200]
    assert all("relay-degraded" in r.headers for r in served)
    assert served[0].json()["items"][0]["hazmat_class"] == "3"
    assert served[1].json()["hazmat_class"] == "3"
    assert served[1].json()["status"] == "on_hold"


async def test_a_cached_gate_pass_that_does_not_fit_the_contract_is_a_503(
    harness, upstream, caplog
):
    # GIVEN a pass, still valid, but without the token a gate scans
    h = harness()
    partial = {k: v for k, v in a_gate_pass("P-1").items() if k != "token"}
    live = upstream.get("http://gatepass.test/gatepass/P-1").mock(
        return_value=httpx.Response(200, json=partial)
    )
    await h.client.get("/gatepass/P-1", headers=h.auth())
    live.mock(side_effect=httpx.ConnectError("down"))
    issue = {"load_id": "L-1", "facility_id": "F-1"}
    upstream.post("http://gatepass.test/gatepass").mock(side_effect=httpx.ConnectError("down"))
    with caplog.at_level(logging.ERROR):
        read = await h.client.get("/gatepass/P-1", headers=h.auth())
        again = await h.client.post("/gatepass", json=issue, headers=h.auth())
    # THEN it is never handed out, read or re-issued
    assert [read.status_code, again.status_code] == [503, 503]
    assert h.app.state.forwarder.fallback_errors == {"gatepass:last-known-good": 2}
    assert "does not fit GatePassPublic" in caplog.text


async def test_a_cached_gate_pass_list_serves_only_passes_still_valid(harness, upstream):
    h = harness()
    passes = [a_gate_pass("P-1"), a_gate_pass("P-2", valid_for=timedelta(minutes=30))]
    listing = upstream.get("http://gatepass.test/gatepass").mock(
        return_value=httpx.Response(200, json={"items": passes})
    )
    await h.client.get("/gatepass", headers=h.auth())
    listing.mock(side_effect=httpx.ConnectError("down"))
    h.wall.now += 3600  # P-2 has expired, P-1 has an hour left
    r = await h.client.get("/gatepass", headers=h.auth())
    assert r.status_code == 200
    assert [p.pass_id for p in GatePassList.model_validate(r.json()).items] == ["P-1"]


async def test_without_any_fallback_answer_it_is_503_with_retry_after(harness, upstream):
    h = harness()
    upstream.post("http://gatepass.test/gatepass/verify").mock(side_effect=httpx.ConnectError("x"))
    r = await h.client.post(
        "/gatepass/verify",
        json={"token": "t" * 30, "facility_id": "F-1"},
        headers=h.auth(Role.GATE, None),
    )
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert r.headers["content-type"] == "application/problem+json"


# --- faults --------------------------------------------------------------------------


async def test_faults_are_ops_only_run_through_the_breaker_and_expire(harness, upstream):
    h = harness({"navigate": {"retry": {"max_attempts": 1}}})
    nav = upstream.get("http://navigate.test/navigate").mock(
        return_value=httpx.Response(200, json={})
    )
    spec = {"kind": "error", "error_rate": 1.0, "ttl_seconds": 60, "reason": "test"}
    assert (
        await h.client.put("/ops/faults/navigate", json=spec, headers=h.auth())
    ).status_code == 403
    r = await h.client.put("/ops/faults/navigate", json=spec, headers=h.auth(Role.OPS, None))
    assert r.status_code == 200 and r.json()["set_by"] == "ops-1"
    for _ in range(5):
        assert (await h.client.get("/navigate", headers=h.auth())).status_code == 503
    assert nav.call_count == 0
    assert h.upstreams["navigate"].breaker.state == "open"
    # the fault expires by itself (wall clock: it is shared by every instance); the
    # breaker recovers on its probe (monotonic clock)
    h.wall.now += 61
    h.mono.now += 61
    assert (await h.client.get("/navigate", headers=h.auth())).status_code == 200
    status = (await h.client.get("/ops/status", headers=h.auth(Role.OPS, None))).json()
    assert status["faults"] == [] and status["modules"]["navigate"]["breaker"]["state"] == "closed"


async def test_black_hole_fault_ends_at_the_deadline(harness, upstream):
    # (connect bound and slow-call threshold kept inside the short deadline, as validated)
    h = harness(
        {
            "navigate": {
                "timeout_seconds": 0.05,
                "connect_timeout_seconds": 0.05,
                "breaker": {"slow_call_seconds": 0.04},
                "retry": {"max_attempts": 1},
            }
        }
    )
    upstream.get("http://navigate.test/navigate").mock(return_value=httpx.Response(200, json={}))
    await h.client.put(
        "/ops/faults/navigate", json={"kind": "blackhole"}, headers=h.auth(Role.OPS, None)
    )
    r = await h.client.get("/navigate", headers=h.auth())
    assert r.status_code == 503 and "timeout" in r.json()["detail"]


def test_fault_specs_are_validated():
    from gateway.resilience.faults import FaultSpec

    with pytest.raises(ValueError):
        FaultSpec(kind="latency")  # needs latency_ms
    with pytest.raises(ValueError):
        FaultSpec(kind="error", ttl_seconds=86400)  # never longer than an hour


async def test_gates_verify_passes_through_the_gateway_while_gatepass_is_down(harness, upstream):
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", alg="ES256", use="sig")
    exp = int((NOW + timedelta(hours=2)).timestamp())
    token = jwt.encode(
        {
            "iss": "relay-gatepass",
            "sub": "D-1001",
            "jti": "P-1",
            "load_id": "L-1",
            "facility_id": "F-CHI",
            "iat": int(NOW.timestamp()),
            "nbf": int(NOW.timestamp()),
            "exp": exp,
        },
        key,
        algorithm="ES256",
        headers={"kid": "k1"},
    )
    h = harness()
    keys = upstream.get("http://gatepass.test/gatepass/keys").mock(
        return_value=httpx.Response(200, json={"keys": [jwk]})
    )
    await h.client.get("/gatepass/keys")  # a live answer: the gateway keeps the keys
    keys.mock(side_effect=httpx.ConnectError("down"))
    upstream.post("http://gatepass.test/gatepass/verify").mock(side_effect=httpx.ConnectError("x"))
    gate = h.auth(Role.GATE, None)

    async def verify(facility: str) -> dict:
        r = await h.client.post(
            "/gatepass/verify", json={"token": token, "facility_id": facility}, headers=gate
        )
        assert r.status_code == 200 and "relay-degraded" in r.headers
        assert GatePassVerdict.model_validate(r.json()).revocation_checked is False
        return r.json()

    assert (await verify("F-CHI"))["valid"] is True
    assert (await verify("F-DET"))["reason"] == "wrong_facility"
    assert (await h.client.get("/gatepass/keys")).json()["keys"][0]["kid"] == "k1"
    h.wall.now = exp + 1
    assert (await verify("F-CHI"))["reason"] == "expired"


async def test_cached_gate_keys_that_do_not_fit_the_contract_are_a_503(harness, upstream, caplog):
    # GIVEN keys published live in a shape Jwks refuses (no curve, no coordinates)
    h = harness()
    keys = upstream.get("http://gatepass.test/gatepass/keys").mock(
        return_value=httpx.Response(200, json={"keys": [{"kid": "k1", "kty": "EC"}]})
    )
    assert (await h.client.get("/gatepass/keys")).status_code == 200  # live: passed through
    keys.mock(side_effect=httpx.ConnectError("down"))
    upstream.post("http://gatepass.test/gatepass/verify").mock(side_effect=httpx.ConnectError("x"))
    # WHEN gatepass is down, THEN neither the keys nor a verdict on them is served
    with caplog.at_level(logging.ERROR):
        served_keys = await h.client.get("/gatepass/keys")
        verdict = await h.client.post(
            "/gatepass/verify",
            json={"token": "t" * 40, "facility_id": "F-CHI"},
            headers=h.auth(Role.GATE, None),
        )
    assert [served_keys.status_code, verdict.status_code] == [503, 503]
    assert h.app.state.forwarder.fallback_errors == {"gatepass:static": 2}
    assert "does not fit Jwks" in caplog.text


async def test_a_live_answer_the_fallbacks_cannot_read_is_passed_through_not_a_500(
    harness, upstream
):
    # GIVEN live 200s of shapes no fallback can learn from
    h = harness()
    nav = upstream.get("http://navigate.test/navigate").mock(
        return_value=httpx.Response(200, json=["not", "directions"])
    )
    passes = upstream.get("http://gatepass.test/gatepass").mock(
        return_value=httpx.Response(200, text="not json", headers={"content-type": "text/plain"})
    )
    verdict = upstream.post("http://gatepass.test/gatepass/verify").mock(
        return_value=httpx.Response(200, text="revoked?")
    )
    gate = h.auth(Role.GATE, None)
    scan = {"token": "t" * 40, "facility_id": "F-CHI"}
    live = [
        await h.client.get("/navigate?load_id=L-1&lat=1&lon=1", headers=h.auth()),
        await h.client.get("/gatepass", headers=h.auth()),
        await h.client.post("/gatepass/verify", json=scan, headers=gate),
    ]
    # THEN each is passed through as the module sent it
    assert [r.status_code for r in live] == [200, 200, 200]
    assert [live[0].json(), live[1].text, live[2].text] == [
        ["not", "directions"],
        "not json",
        "revoked?",
    ]
    # and with the modules down none is served: the pass list's copy (kept as bytes) does
    # not fit the contract, a counted 503; verify learnt no keys from its answer
    for route in (nav, passes, verdict):
        route.mock(side_effect=httpx.ConnectError("down"))
    assert (await h.client.get("/gatepass", headers=h.auth())).status_code == 503
    assert (await h.client.post("/gatepass/verify", json=scan, headers=gate)).status_code == 503
    assert h.app.state.forwarder.fallback_errors == {"gatepass:last-known-good": 1}
