"""Regions in the gateway: a critical module's peer-region upstreams, failover when this
region's breaker is open, an evacuated region's requests sent to a serving peer, and every
answer saying which region's gateway gave it."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.config import GatewaySettings
from gateway.regions.control import RegionControl
from gateway.routing.routes import RouteTable, RouteTableError
from shared_contracts.identity import Role
from tests.unit.gateway.conftest import UPSTREAMS

PEERS = json.dumps(
    {"us-west-2": {"loads": "http://loads.west.test", "gatepass": "http://gatepass.west.test"}}
)
LOADS = [{"load_id": "L-1", "driver_id": "D-1001", "status": "assigned"}]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class MemoryRoutingControls:
    """The routing controls as a gateway reads them (it only loads them here)."""

    def __init__(self) -> None:
        self.controls: dict[str, RegionControl] = {}

    def load(self) -> dict[str, RegionControl]:
        return dict(self.controls)

    def evacuate(self, region: str) -> None:
        self.controls[region] = RegionControl(region, serving=False, revision=1)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def routing() -> MemoryRoutingControls:
    return MemoryRoutingControls()


@pytest.fixture
def gateway(settings, upstream, clock, routing):
    s = settings.model_copy(update={"peer_upstreams": PEERS, "aws_region": "us-east-1"})
    routes = RouteTable.load(s.routes_file, env=UPSTREAMS)
    app = create_app(s, routes=routes, clock=clock, routing_store=routing)
    with TestClient(app) as client:
        yield client


def open_home(gateway, bearer) -> None:
    """Requests until this region's loads breaker opens (each GET retries, so a few)."""
    breaker = gateway.app.state.upstreams["loads"].breaker
    for _ in range(breaker.config.fail_max):
        if breaker.state == "open":
            return
        gateway.get("/loads", headers=bearer())
    assert breaker.state == "open"


def test_a_critical_module_has_an_upstream_in_each_peer_region(gateway):
    upstreams = gateway.app.state.regions.failover
    assert {unit: [u.name for _, u in peers] for unit, peers in upstreams.items()} == {
        "loads": ["us-west-2:loads"],
        "gatepass": ["us-west-2:gatepass"],
    }  # navigate (degradable) and message (deferrable) stay in their one region
    west = upstreams["loads"][0][1]
    assert west.base_url == "http://loads.west.test"
    assert west.breaker is not gateway.app.state.upstreams["loads"].breaker


def test_every_answer_says_which_region_gave_it(gateway, upstream, bearer):
    upstream.get("http://loads.test/loads").respond(200, json=LOADS)
    assert gateway.get("/loads", headers=bearer()).headers["relay-region"] == "us-east-1"
    assert gateway.get("/no-such-route", headers=bearer()).headers["relay-region"] == "us-east-1"


def test_requests_stay_home_while_the_module_answers(gateway, upstream, bearer):
    home = upstream.get("http://loads.test/loads").respond(200, json=LOADS)
    away = upstream.get("http://loads.west.test/loads").respond(200, json=LOADS)
    for _ in range(3):
        assert gateway.get("/loads", headers=bearer()).status_code == 200
    assert home.call_count == 3 and away.call_count == 0


def test_an_open_breaker_sends_the_module_s_calls_to_the_peer_region(
    gateway, upstream, bearer, clock
):
    home = upstream.get("http://loads.test/loads").respond(503)
    away = upstream.get("http://loads.west.test/loads").respond(200, json=LOADS)
    open_home(gateway, bearer)
    assert away.call_count == 0
    failed_here = home.call_count
    answer = gateway.get("/loads", headers=bearer())
    assert answer.status_code == 200 and answer.json() == LOADS
    assert away.call_count == 1 and home.call_count == failed_here
    assert gateway.app.state.regions.sent == {"loads -> us-west-2": 1}
    # a write goes there too, with its idempotency key (the records are global tables)
    event = upstream.post("http://loads.west.test/loads/L-1/events").respond(201, json={})
    wrote = gateway.post(
        "/loads/L-1/events",
        json={"type": "arrived"},
        headers={**bearer(), "idempotency-key": "key-00000001"},
    )
    assert wrote.status_code == 201
    assert event.calls.last.request.headers["idempotency-key"] == "key-00000001"


def test_the_home_region_is_probed_again_once_the_breaker_may_probe(
    gateway, upstream, bearer, clock
):
    home = upstream.get("http://loads.test/loads")
    home.respond(503)
    away = upstream.get("http://loads.west.test/loads").respond(200, json=LOADS)
    breaker = gateway.app.state.upstreams["loads"].breaker
    open_home(gateway, bearer)
    gateway.get("/loads", headers=bearer())
    assert away.call_count == 1
    home.respond(200, json=LOADS)
    clock.now += breaker.config.reset_timeout_seconds
    assert gateway.get("/loads", headers=bearer()).status_code == 200
    assert breaker.state == "closed" and away.call_count == 1  # the probe went home
    gateway.get("/loads", headers=bearer())
    assert away.call_count == 1


def test_a_peer_whose_breaker_is_open_too_is_not_chosen(gateway, upstream, bearer):
    upstream.get("http://loads.test/loads").respond(503)
    upstream.get("http://loads.west.test/loads").respond(503)
    regions = gateway.app.state.regions
    home = gateway.app.state.upstreams["loads"]
    west = regions.failover["loads"][0][1]
    open_home(gateway, bearer)
    for _ in range(10):
        if west.breaker.state == "open":
            break
        gateway.get("/loads", headers=bearer())
    assert west.breaker.state == "open" and home.breaker.state == "open"
    assert regions.route("loads", home) is home  # fails fast here: the fallback answers


def test_an_evacuated_region_sends_its_critical_calls_to_a_serving_peer(
    gateway, upstream, bearer, routing
):
    home = upstream.get("http://loads.test/loads").respond(200, json=LOADS)
    away = upstream.get("http://loads.west.test/loads").respond(200, json=LOADS)
    routing.evacuate("us-east-1")
    gateway.app.state.regions.copy.refresh()
    answer = gateway.get("/loads", headers=bearer())
    assert answer.status_code == 200 and away.call_count == 1 and home.call_count == 0
    assert answer.headers["relay-region"] == "us-east-1"  # this gateway, the peer's module
    # navigate has no peer: it stays here
    nav = upstream.get("http://navigate.test/navigate/L-1").respond(200, json={})
    assert gateway.get("/navigate/L-1", headers=bearer()).status_code == 200
    assert nav.call_count == 1


def test_an_evacuated_peer_is_not_sent_anything(gateway, upstream, bearer, routing):
    upstream.get("http://loads.test/loads").respond(503)
    away = upstream.get("http://loads.west.test/loads").respond(200, json=LOADS)
    routing.evacuate("us-west-2")
    gateway.app.state.regions.copy.refresh()
    for _ in range(8):
        gateway.get("/loads", headers=bearer())
    assert away.call_count == 0


def test_a_peer_s_cells_must_be_the_module_s_cells(settings):
    env = UPSTREAMS | {"RELAY_UPSTREAM_LOADS": "cell-1=http://a.test,cell-2=http://b.test"}
    routes = RouteTable.load(settings.routes_file, env=env)
    celled = json.dumps({"us-west-2": {"loads": "cell-1=http://c.test,cell-2=http://d.test"}})
    app = create_app(settings.model_copy(update={"peer_upstreams": celled}), routes=routes)
    assert [u.name for _, u in app.state.regions.failover["loads/cell-2"]] == [
        "us-west-2:loads/cell-2"
    ]
    wrong = json.dumps({"us-west-2": {"loads": "http://one.test"}})
    with pytest.raises(RouteTableError, match="cells"):
        create_app(settings.model_copy(update={"peer_upstreams": wrong}), routes=routes)


def test_without_named_urls_a_peer_s_upstreams_wait_for_its_published_ones(settings):
    s = settings.model_copy(update={"region_peers": "us-west-2", "ssm_path": "/relay/test"})
    routes = RouteTable.load(s.routes_file, env=UPSTREAMS)
    regions = create_app(s, routes=routes).state.regions
    west = regions.failover["loads"][0][1]
    assert httpx.URL(west.base_url).host.endswith(".invalid")
    assert [d.region for d in regions.directories] == ["us-west-2"]
    assert regions.directories[0].names == {
        "/relay/test/loads/url": "loads",
        "/relay/test/gatepass/url": "gatepass",
    }


def test_peer_upstreams_are_checked_at_start_up():
    with pytest.raises(ValueError, match="RELAY_PEER_UPSTREAMS"):
        GatewaySettings(peer_upstreams='{"us-west-2": ["http://loads.west.test"]}')
    named = GatewaySettings(region_peers="eu-west-1", peer_upstreams=PEERS)
    assert named.peers == ["eu-west-1", "us-west-2"]


def test_operators_see_the_regions_in_the_status(gateway, bearer, routing):
    routing.evacuate("us-west-2")
    gateway.app.state.regions.copy.refresh()
    view = gateway.get("/ops/status", headers=bearer(Role.OPS, None)).json()["regions"]
    assert view["region"] == "us-east-1" and view["peers"] == ["us-west-2"]
    assert view["controls"]["us-west-2"]["serving"] is False
    assert view["failover_units"]["loads"] == ["us-west-2:loads"]


def test_a_game_day_can_black_hole_the_calls_to_a_peer_region(gateway, upstream, bearer):
    ops = bearer(Role.OPS, None)
    fault = {"kind": "error", "error_rate": 1.0, "ttl_seconds": 60}
    assert gateway.put("/ops/faults/us-west-2:loads", json=fault, headers=ops).status_code == 200
    assert gateway.put("/ops/faults/eu-west-1:loads", json=fault, headers=ops).status_code == 404
    home = upstream.get("http://loads.test/loads").respond(503)
    away = upstream.get("http://loads.west.test/loads").respond(200, json=LOADS)
    open_home(gateway, bearer)
    west = gateway.app.state.regions.failover["loads"][0][1]
    for _ in range(10):
        if west.breaker.state == "open":
            break
        gateway.get("/loads", headers=bearer())
    assert west.breaker.state == "open" and away.call_count == 0  # the fault answered
    assert home.call_count > 0
