"""Levers on the routing-control table (moto in-process, template.yaml's
``RoutingControlTable`` shape): the item and its audit round trip, two gateway instances
holding the same lever within a refresh, an expired lever ignored before the TTL deletes
it, a restarted instance holding the levers at once, and a region's evacuation as a lever."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.levers import (
    ActiveLevers,
    LeverConflictError,
    LeverControl,
    LeverRefusedError,
    LeverStore,
)
from gateway.regions.control import RoutingControls
from gateway.routing.routes import RouteTable
from shared_contracts.identity import Role
from shared_contracts.levers import LeverPull
from tests.fakes import MonotonicClock, WallClock
from tests.functional.conftest import CONTROL_TABLE as TABLE
from tests.unit.gateway.conftest import ISSUER, UPSTREAMS
from tests.unit.gateway.lever_fakes import celled_routes

REGIONS = ["us-east-1", "us-west-2"]


@pytest.fixture
def store(control_dynamodb) -> LeverStore:
    return LeverStore(TABLE, dynamodb=control_dynamodb)


@pytest.fixture
def routes(settings) -> RouteTable:
    return RouteTable.load(settings.routes_file, env=UPSTREAMS)


def test_a_pull_and_a_release_round_trip_with_their_audit(store, routes, control_dynamodb):
    wall = WallClock()
    control = LeverControl(store, routes, clock=wall)
    pulled = control.pull(
        LeverPull(type="fallback", target="gatepass", reason="kms throttling", ttl_seconds=600),
        "ops-1",
    )
    raw = control_dynamodb.Table(TABLE).get_item(
        Key={"kind": "lever", "name": "fallback:gatepass"}
    )["Item"]
    assert int(raw["expires_at"]) == int(wall()) + 600  # the TTL attribute, epoch seconds
    assert (raw["type"], raw["target"], raw["who"], raw["why"]) == (
        "fallback",
        "gatepass",
        "ops-1",
        "kms throttling",
    )
    assert store.get("fallback:gatepass") == pulled and control.active() == [pulled]
    wall.now += 5  # the trail is in time order (items named by their time)
    control.release("fallback:gatepass", "ops-2", "kms fine")
    assert control.active() == [] and store.get("fallback:gatepass").revision == 2
    assert [(a.action, a.lever_id, a.who, a.why) for a in control.audit()] == [
        ("release", "fallback:gatepass", "ops-2", "kms fine"),
        ("pull", "fallback:gatepass", "ops-1", "kms throttling"),
    ]
    # the regions' reader of the same trail still reads it (one audit trail)
    assert [a.action for a in RoutingControls(TABLE, dynamodb=control_dynamodb).audit()] == [
        "release",
        "pull",
    ]


def test_a_write_on_an_old_read_is_refused_and_writes_nothing(store, routes):
    control = LeverControl(store, routes)
    pulled = control.pull(LeverPull(type="shed", target="optional", reason="a"), "ops-1")
    stale = pulled.model_copy(update={"revision": pulled.revision + 1, "why": "b"})
    control.pull(LeverPull(type="shed", target="optional", reason="c"), "ops-2")  # rev 2
    with pytest.raises(LeverConflictError):
        store.write(stale, before=pulled, action="pull", at=0)
    assert store.get("shed:optional").why == "c" and len(store.audit()) == 2


def test_a_refused_pull_writes_nothing(store, routes):
    with pytest.raises(LeverRefusedError):
        LeverControl(store, routes).pull(
            LeverPull(type="shed", target="critical", reason="r"), "ops-1"
        )
    assert store.load() == [] and store.audit() == []


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_two_instances_hold_the_same_lever_within_a_refresh(store, routes, anyio_backend):
    wall, mono = WallClock(), MonotonicClock()
    a, b = (ActiveLevers(store, wall_clock=wall, clock=mono, refresh_seconds=1.0) for _ in range(2))
    await a.load_at_start()
    await b.load_at_start()
    LeverControl(store, routes, clock=wall).pull(
        LeverPull(type="shed", target="deferrable", reason="surge"), "ops-1"
    )
    mono.now += 0.5
    assert b.shed_tiers() == frozenset()  # its copy is half a refresh old
    mono.now += 0.5
    assert b.shed_tiers() == frozenset()  # due: this request starts the background read
    await asyncio.wait_for(asyncio.shield(b.copy.refreshing), 5)
    assert b.shed_tiers() == {"deferrable"}
    a.shed_tiers()
    await asyncio.wait_for(asyncio.shield(a.copy.refreshing), 5)
    assert a.shed_tiers() == {"deferrable"}
    # a restarted instance holds it from its first request
    restarted = ActiveLevers(store, wall_clock=wall, clock=mono)
    await restarted.load_at_start()
    assert restarted.shed_tiers() == {"deferrable"}


def test_an_expired_lever_still_in_the_table_is_ignored(store, routes):
    wall = WallClock()
    LeverControl(store, routes, clock=wall).pull(
        LeverPull(type="fallback", target="navigate", reason="r", ttl_seconds=60), "ops-1"
    )
    wall.now += 61
    assert len(store.load()) == 1  # the TTL deletes it later
    fresh = ActiveLevers(store, wall_clock=wall, background=False)
    fresh.refresh()
    assert not fresh.forced_fallback("navigate") and fresh.active() == []
    assert LeverControl(store, routes, clock=wall).active() == []


def test_a_region_evacuation_is_a_lever_with_the_regions_safety_rule(
    store, routes, control_dynamodb
):
    regions = RoutingControls(TABLE, dynamodb=control_dynamodb)
    control = LeverControl(store, routes, routing=regions, regions=REGIONS)
    pulled = control.pull(
        LeverPull(type="evacuate", target="region:us-east-1", reason="game day"), "ops-1"
    )
    assert pulled.lever_id == "evacuate:region:us-east-1" and pulled.expires_at is None
    assert not regions.load()["us-east-1"].serving
    assert [lv.lever_id for lv in control.active()] == ["evacuate:region:us-east-1"]
    with pytest.raises(LeverRefusedError) as refused:
        control.pull(LeverPull(type="evacuate", target="region:us-west-2", reason="x"), "ops-1")
    assert refused.value.rule == "last-region"
    control.release("evacuate:region:us-east-1", "ops-1", "over")
    assert regions.load()["us-east-1"].serving and control.active() == []
    assert [a.lever_id for a in control.audit()][:2] == [
        "evacuate:region:us-east-1",
        "evacuate:region:us-east-1",
    ]


def test_a_lever_pulled_through_one_gateway_holds_on_another(settings, upstream, store):
    """Two gateway apps on one table: a POST /ops/levers to the first; the second's copy
    holds it after its next read."""
    routes = RouteTable.load(settings.routes_file, env=UPSTREAMS)
    first = create_app(settings, routes=routes, lever_store=store)
    second = create_app(settings, routes=routes, lever_store=store)
    ops = {"authorization": "Bearer " + ISSUER.mint("ops-1", Role.OPS, None)}
    with TestClient(first) as one, TestClient(second) as two:
        r = one.post(
            "/ops/levers",
            json={"type": "fallback", "target": "navigate", "reason": "provider down"},
            headers=ops,
        )
        assert r.status_code == 201, r.text
        assert first.state.levers.forced_fallback("navigate")
        second.state.levers.refresh()  # its next background read, here at once
        assert second.state.levers.forced_fallback("navigate")
        assert [lv["lever_id"] for lv in two.get("/ops/levers", headers=ops).json()["levers"]] == [
            "fallback:navigate"
        ]


def test_the_every_cell_rule_is_checked_inside_the_write(store, settings, monkeypatch):
    """Two operators: one has pulled cells 2 and 3 meanwhile; the other's read predates
    both, so its rule passes, and the write's condition refuses cell 1."""
    celled = celled_routes(settings.routes_file)
    control = LeverControl(store, celled)
    monkeypatch.setattr(control, "active", list)  # the stale read: nothing in force
    other = LeverControl(store, celled)
    for cell in ("loads/cell-2", "loads/cell-3"):
        other.pull(LeverPull(type="fallback", target=cell, reason="r"), "ops-2")
    with pytest.raises(LeverRefusedError, match="meanwhile") as refused:
        control.pull(LeverPull(type="fallback", target="loads/cell-1", reason="r"), "ops-1")
    assert refused.value.rule == "every-cell"
    assert store.get("fallback:loads/cell-1") is None and len(store.audit()) == 2
