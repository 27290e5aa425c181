"""The region lever on the routing-control table (moto in-process, a table of template.yaml's
``RoutingControlTable`` shape): evacuate and restore, the safety rule that never leaves no
region serving (checked inside the write's transaction), the audit trail, and the same
through a gateway's operator API."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.regions.control import ControlConflict, RoutingControls, SafetyRuleError
from gateway.routing.routes import RouteTable
from shared_contracts.identity import Role
from tests.functional.conftest import CONTROL_TABLE as TABLE
from tests.unit.gateway.conftest import UPSTREAMS

REGIONS = ["us-east-1", "us-west-2"]
PEERS = json.dumps({"us-west-2": {"loads": "http://loads.west.test"}})


@pytest.fixture
def controls(control_dynamodb) -> RoutingControls:
    return RoutingControls(TABLE, dynamodb=control_dynamodb)


def test_a_region_with_no_control_serves_and_an_evacuation_is_recorded(controls):
    assert controls.load() == {}
    control = controls.evacuate("us-east-1", regions=REGIONS, who="ops-1", why="game day")
    assert not control.serving and control.revision == 1
    assert controls.load()["us-east-1"] == control
    restored = controls.restore("us-east-1", regions=REGIONS, who="ops-2", why="done")
    assert restored.serving and restored.revision == 2
    assert [(a.action, a.region, a.who, a.why) for a in controls.audit()] == [
        ("restore", "us-east-1", "ops-2", "done"),
        ("evacuate", "us-east-1", "ops-1", "game day"),
    ]


def test_the_safety_rule_never_leaves_no_region_serving(controls):
    controls.evacuate("us-east-1", regions=REGIONS, who="ops-1", why="game day")
    with pytest.raises(SafetyRuleError, match="no region serving"):
        controls.evacuate("us-west-2", regions=REGIONS, who="ops-1", why="oops")
    assert controls.load()["us-east-1"].serving is False
    assert "us-west-2" not in controls.load()  # nothing written, nothing audited
    assert len(controls.audit()) == 1
    with pytest.raises(ValueError, match="not one of"):
        controls.evacuate("eu-west-1", regions=REGIONS, who="ops-1", why="typo")


def test_the_rule_is_checked_inside_the_write(controls, monkeypatch):
    """Two operators evacuating both regions at once: the second write's condition on the
    other region's control fails even though its own read said that region served."""
    stale = controls.load()
    controls.evacuate("us-west-2", regions=REGIONS, who="ops-1", why="first")
    monkeypatch.setattr(controls, "load", lambda: stale)
    with pytest.raises(SafetyRuleError, match="meanwhile"):
        controls.evacuate("us-east-1", regions=REGIONS, who="ops-2", why="second")


def test_a_change_made_on_an_old_read_is_refused(controls, monkeypatch):
    stale = controls.load()
    controls.restore("us-east-1", regions=REGIONS, who="ops-1", why="first")
    monkeypatch.setattr(controls, "load", lambda: stale)
    with pytest.raises(ControlConflict):
        controls.restore("us-east-1", regions=REGIONS, who="ops-2", why="second")


@pytest.fixture
def gateway(settings, controls, upstream):
    s = settings.model_copy(update={"peer_upstreams": PEERS})
    app = create_app(
        s, routes=RouteTable.load(s.routes_file, env=UPSTREAMS), routing_store=controls
    )
    with TestClient(app) as client:
        yield client


def test_the_operator_api_pulls_the_same_lever(gateway, bearer, controls):
    ops = bearer(Role.OPS, None)
    reason = {"reason": "game day: evacuate us-east-1"}
    assert gateway.post("/ops/regions/us-east-1/evacuate", json=reason).status_code == 401
    refused = gateway.post("/ops/regions/us-east-1/evacuate", json=reason, headers=bearer())
    assert refused.status_code == 403
    done = gateway.post("/ops/regions/us-east-1/evacuate", json=reason, headers=ops)
    assert done.status_code == 200, done.text
    assert done.json()["control"]["updated_by"] == "ops-1"
    assert gateway.app.state.regions.evacuated  # this instance acts at once
    assert controls.load()["us-east-1"].serving is False
    last = gateway.post("/ops/regions/us-west-2/evacuate", json=reason, headers=ops)
    assert last.status_code == 409 and last.json()["type"].endswith("safety-rule")
    view = gateway.get("/ops/regions", headers=ops).json()
    assert view["region"] == "us-east-1" and view["serving"] is False
    assert view["audit"][0]["why"] == reason["reason"]
    back = gateway.post("/ops/regions/us-east-1/restore", json={"reason": "over"}, headers=ops)
    assert back.status_code == 200 and not gateway.app.state.regions.evacuated


def test_the_operator_api_checks_what_it_is_given(gateway, bearer):
    ops = bearer(Role.OPS, None)
    unknown = gateway.post("/ops/regions/eu-west-1/evacuate", json={"reason": "x" * 5}, headers=ops)
    assert unknown.status_code == 404
    bad = gateway.post("/ops/regions/not a region/evacuate", json={"reason": "xyz"}, headers=ops)
    assert bad.status_code in (404, 422)
    no_reason = gateway.post("/ops/regions/us-east-1/evacuate", json={}, headers=ops)
    assert no_reason.status_code == 422
