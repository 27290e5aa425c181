"""The levers' operator API (``/ops/levers``) on a gateway with an in-memory store: ops
only, 201 with the lever, 409 ``lever-refused`` naming the rule, 422 for a type or target
the stage does not have, 404 for a lever not in force, 204 on release."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.routing.routes import RouteTable
from shared_contracts.identity import Role
from tests.fakes import WallClock
from tests.unit.gateway.conftest import UPSTREAMS
from tests.unit.gateway.lever_fakes import FakeLeverStore


@pytest.fixture
def wall() -> WallClock:
    return WallClock()


@pytest.fixture
def store() -> FakeLeverStore:
    return FakeLeverStore()


@pytest.fixture
def client(settings, upstream, store, wall):
    routes = RouteTable.load(settings.routes_file, env=UPSTREAMS)
    app = create_app(settings, routes=routes, lever_store=store, wall_clock=wall)
    with TestClient(app) as c:
        yield c


@pytest.fixture
def ops(bearer):
    return bearer(Role.OPS, None)


def test_a_driver_or_dispatcher_cannot_see_or_pull_levers(client, bearer, store):
    pull = {"type": "shed", "target": "optional", "reason": "r"}
    for role, driver in ((Role.DRIVER, "D-1001"), (Role.DISPATCH, None)):
        headers = bearer(role, driver)
        assert client.get("/ops/levers", headers=headers).status_code == 403
        assert client.post("/ops/levers", json=pull, headers=headers).status_code == 403
    assert store.items == {}


def test_pull_list_and_release(client, ops, store, wall):
    r = client.post(
        "/ops/levers",
        json={"type": "fallback", "target": "navigate", "reason": "routing provider down"},
        headers=ops,
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["lever_id"] == "fallback:navigate" and body["who"] == "ops-1"
    assert body["expires_at"] == int(wall()) + 900
    assert client.app.state.levers.forced_fallback("navigate")  # this instance: at once
    listed = client.get("/ops/levers", headers=ops).json()
    assert [lv["lever_id"] for lv in listed["levers"]] == ["fallback:navigate"]
    assert listed["audit"][0]["action"] == "pull"
    status = client.get("/ops/status", headers=ops).json()
    assert list(status["levers"]) == ["fallback:navigate"]
    r = client.request(
        "DELETE", "/ops/levers/fallback:navigate", json={"reason": "back"}, headers=ops
    )
    assert r.status_code == 204
    assert not client.app.state.levers.forced_fallback("navigate")
    assert client.get("/ops/levers", headers=ops).json()["levers"] == []
    assert store.trail[0].action == "release" and store.trail[0].why == "back"
    assert client.delete("/ops/levers/fallback:navigate", headers=ops).status_code == 404


def test_release_by_post_and_a_cell_path(client, ops):
    client.post(
        "/ops/levers", json={"type": "pause", "target": "notifications", "reason": "r"}, headers=ops
    )
    r = client.post("/ops/levers/pause:notifications/release", headers=ops)
    assert r.status_code == 204
    assert client.post("/ops/levers/pause:notifications/release", headers=ops).status_code == 404


@pytest.mark.parametrize(
    ("pull", "rule"),
    [
        ({"type": "shed", "target": "critical"}, "critical-never-shed"),
    ],
)
def test_a_safety_rule_is_a_409_naming_it(client, ops, store, pull, rule):
    r = client.post("/ops/levers", json={**pull, "reason": "r"}, headers=ops)
    assert r.status_code == 409
    problem = r.json()
    assert problem["type"].endswith("lever-refused") and rule in problem["detail"]
    assert store.items == {} and store.trail == []


@pytest.mark.parametrize(
    "pull",
    [
        {"type": "explode", "target": "loads", "reason": "r"},
        {"type": "shed", "target": "everything", "reason": "r"},
        {"type": "fallback", "target": "billing", "reason": "r"},
        {"type": "pause", "target": "loads", "reason": "r"},
        {"type": "evacuate", "target": "region:us-east-1", "reason": "r"},  # no regions here
        {"type": "shed", "target": "optional", "reason": ""},
        {"type": "shed", "target": "optional", "reason": "r", "ttl_seconds": 59},
        {"type": "shed", "target": "optional", "reason": "r", "ttl_seconds": 4 * 3600 + 1},
    ],
)
def test_a_bad_type_target_reason_or_ttl_is_a_422(client, ops, store, pull):
    r = client.post("/ops/levers", json=pull, headers=ops)
    assert r.status_code == 422, r.text
    assert store.items == {}


def test_a_shed_lever_refuses_its_tier_at_once_and_only_it(client, ops, bearer, upstream):
    navigate = upstream.get("http://navigate.test/navigate").mock(
        return_value=httpx.Response(200, json={})
    )
    r = client.post(
        "/ops/levers", json={"type": "shed", "target": "deferrable", "reason": "surge"}, headers=ops
    )
    assert r.status_code == 201
    shed = client.post("/message", json={"body": "hi"}, headers=bearer())
    assert shed.status_code == 503 and shed.headers["retry-after"]
    assert shed.json()["type"].endswith("overloaded")
    assert client.get("/navigate", headers=bearer()).status_code == 200  # degradable: not shed
    assert navigate.call_count == 1
    client.delete("/ops/levers/shed:deferrable", headers=ops)
    message = upstream.post("http://message.test/message").mock(
        return_value=httpx.Response(201, json={"message_id": "m1"})
    )
    assert client.post("/message", json={"body": "hi"}, headers=bearer()).status_code == 201
    assert message.call_count == 1
