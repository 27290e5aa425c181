"""Levers without AWS: the model (TTL bounds, a reason), the type's targets and the safety
rules, pulling and releasing with their audit, expiry on an injected clock."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from gateway.config import GatewaySettings
from gateway.levers import (
    ActiveLevers,
    InvalidLeverError,
    LeverControl,
    LeverRefusedError,
    UnknownLeverError,
)
from gateway.levers.rules import check
from gateway.routing.routes import RouteTable
from shared_contracts.levers import (
    DEFAULT_TTL_SECONDS,
    MAX_TTL_SECONDS,
    MIN_TTL_SECONDS,
    Lever,
    LeverPull,
    LeverType,
)
from tests.fakes import MonotonicClock, WallClock
from tests.unit.gateway.conftest import UPSTREAMS
from tests.unit.gateway.lever_fakes import FakeLeverStore, celled_routes


@pytest.fixture
def table(settings: GatewaySettings) -> RouteTable:
    return RouteTable.load(settings.routes_file, env=UPSTREAMS)


@pytest.fixture
def celled(settings: GatewaySettings) -> RouteTable:
    return celled_routes(settings.routes_file)


def lever(kind: str, target: str, *, expires_at: int | None, pulled_at: int = 0) -> Lever:
    return Lever(
        lever_id=f"{kind}:{target}",
        type=LeverType(kind),
        target=target,
        who="ops-1",
        why="test",
        pulled_at=pulled_at,
        expires_at=expires_at,
    )


# --- the model ----------------------------------------------------------------------------


def test_ttl_defaults_to_15_minutes_and_is_bounded_to_1_minute_4_hours():
    pull = LeverPull(type="shed", target="optional", reason="load test")
    assert pull.ttl == DEFAULT_TTL_SECONDS == 900 and pull.lever_id == "shed:optional"
    assert LeverPull(type="shed", target="optional", reason="r", ttl_seconds=MIN_TTL_SECONDS)
    assert LeverPull(type="shed", target="optional", reason="r", ttl_seconds=MAX_TTL_SECONDS)
    for ttl in (MIN_TTL_SECONDS - 1, MAX_TTL_SECONDS + 1, 0, -5):
        with pytest.raises(ValidationError, match="ttl_seconds"):
            LeverPull(type="shed", target="optional", reason="r", ttl_seconds=ttl)


@pytest.mark.parametrize("reason", ["", "   "])
def test_a_lever_needs_a_reason(reason):
    with pytest.raises(ValidationError, match="reason"):
        LeverPull(type="pause", target="notifications", reason=reason)


def test_an_unknown_type_is_refused_by_the_model():
    with pytest.raises(ValidationError, match="type"):
        LeverPull(type="explode", target="loads", reason="r")


def test_a_lever_round_trips_through_its_table_item():
    pulled = lever("fallback", "loads/cell-1", expires_at=1_000, pulled_at=100)
    item = pulled.item()
    assert item["kind"] == "lever" and item["name"] == "fallback:loads/cell-1"
    assert item["expires_at"] == 1_000  # an int: the table's TTL attribute, epoch seconds
    assert Lever.from_item(item) == pulled
    assert "expires_at" not in lever("evacuate", "region:us-east-1", expires_at=None).item()


def test_a_lever_is_active_until_it_expires_or_is_released():
    pulled = lever("shed", "optional", expires_at=1_000)
    assert pulled.active(999.9) and not pulled.active(1_000)
    assert pulled.remaining(400) == 600 and pulled.remaining(2_000) == 0
    assert not pulled.model_copy(update={"released": True}).active(0)


# --- targets and safety rules ----------------------------------------------------------


def test_the_critical_tier_is_never_shed(table):
    with pytest.raises(LeverRefusedError) as refused:
        check(LeverType.SHED, "critical", table, [])
    assert refused.value.rule == "critical-never-shed"
    for tier in ("optional", "deferrable", "degradable"):
        check(LeverType.SHED, tier, table, [])
    with pytest.raises(InvalidLeverError, match="tier"):
        check(LeverType.SHED, "loads", table, [])


def test_a_critical_module_with_a_route_that_names_no_fallback_is_refused(table):
    """Every loads route names a fallback in routes.toml (dispatch's assignments are
    deferred), so loads may be held on its fallbacks; without the one on
    /dispatch/assignments it may not: dispatching would stop."""
    check(LeverType.FALLBACK, "loads", table, [])
    data = {
        "modules": {n: m.model_dump(exclude={"name"}) for n, m in table.modules.items()},
        "routes": [
            {**r.model_dump(), **({"fallback": {}} if r.prefix == "/dispatch/assignments" else {})}
            for r in table.routes
        ],
    }
    without = RouteTable.from_dict(json.loads(json.dumps(data, default=list)), env={})
    with pytest.raises(LeverRefusedError, match="/dispatch/assignments") as refused:
        check(LeverType.FALLBACK, "loads", without, [])
    assert refused.value.rule == "critical-route-without-fallback"
    check(LeverType.FALLBACK, "gatepass", table, [])
    check(LeverType.FALLBACK, "navigate", table, [])
    with pytest.raises(InvalidLeverError, match="no module"):
        check(LeverType.FALLBACK, "billing", table, [])
    with pytest.raises(InvalidLeverError, match="no module or cell"):
        check(LeverType.FALLBACK, "gatepass/cell-1", table, [])


def test_the_last_cell_of_a_celled_module_is_refused(celled):
    check(LeverType.FALLBACK, "loads/cell-1", celled, [])
    two = [lever("fallback", "loads/cell-1", expires_at=None)]
    check(LeverType.FALLBACK, "loads/cell-2", celled, two)
    three = [*two, lever("fallback", "loads/cell-2", expires_at=None)]
    with pytest.raises(LeverRefusedError, match="fallback:loads") as refused:
        check(LeverType.FALLBACK, "loads/cell-3", celled, three)
    assert refused.value.rule == "every-cell"
    check(LeverType.FALLBACK, "loads", celled, three)  # the whole module: one lever
    with pytest.raises(InvalidLeverError):
        check(LeverType.FALLBACK, "loads/cell-9", celled, [])


def test_pause_and_evacuate_targets(table):
    check(LeverType.PAUSE, "notifications", table, [])
    with pytest.raises(InvalidLeverError):
        check(LeverType.PAUSE, "loads", table, [])
    check(LeverType.EVACUATE, "region:us-east-1", table, [], ["us-east-1", "us-west-2"])
    with pytest.raises(InvalidLeverError, match="not one of"):
        check(LeverType.EVACUATE, "region:eu-west-1", table, [], ["us-east-1", "us-west-2"])
    with pytest.raises(InvalidLeverError):
        check(LeverType.EVACUATE, "loads", table, [], ["us-east-1"])


def test_evacuating_a_cell_is_a_fallback_lever_on_it_and_audited(celled):
    wall = WallClock()
    store = FakeLeverStore()
    control = LeverControl(store, celled, clock=wall)
    pulled = control.pull(
        LeverPull(type="evacuate", target="cell:loads/cell-2", reason="bad disk", ttl_seconds=120),
        "ops-1",
    )
    assert (pulled.lever_id, pulled.type, pulled.who, pulled.why) == (
        "fallback:loads/cell-2",
        LeverType.FALLBACK,
        "ops-1",
        "bad disk",
    )
    assert pulled.expires_at == int(wall()) + 120 and pulled.revision == 1
    assert [lv.lever_id for lv in control.active()] == ["fallback:loads/cell-2"]
    released = control.release("evacuate:cell:loads/cell-2", "ops-2", "disk swapped")
    assert released.released and released.revision == 2 and control.active() == []
    assert [(a.action, a.lever_id, a.who, a.why) for a in control.audit()] == [
        ("release", "fallback:loads/cell-2", "ops-2", "disk swapped"),
        ("pull", "fallback:loads/cell-2", "ops-1", "bad disk"),
    ]
    with pytest.raises(UnknownLeverError):
        control.release("fallback:loads/cell-2", "ops-2", "again")


def test_an_expired_lever_is_not_in_force_and_cannot_be_released(table):
    wall = WallClock()
    control = LeverControl(FakeLeverStore(), table, clock=wall)
    control.pull(LeverPull(type="shed", target="optional", reason="r", ttl_seconds=60), "ops-1")
    wall.now += 60
    assert control.active() == []
    with pytest.raises(UnknownLeverError):
        control.release("shed:optional", "ops-1", "late")


def test_pulling_again_renews_the_lever(table):
    wall = WallClock()
    control = LeverControl(FakeLeverStore(), table, clock=wall)
    first = control.pull(LeverPull(type="shed", target="optional", reason="a"), "ops-1")
    wall.now += 300
    again = control.pull(LeverPull(type="shed", target="optional", reason="b"), "ops-2")
    assert again.revision == 2 and again.expires_at == first.expires_at + 300
    assert (again.who, again.why) == ("ops-2", "b")


# --- each instance's copy, on injected clocks ------------------------------------------


def test_the_copy_lets_go_at_expires_at_without_a_new_read():
    wall = WallClock()
    now = int(wall())
    store = FakeLeverStore(
        lever("fallback", "loads", expires_at=now + 60),
        lever("fallback", "gatepass/cell-1", expires_at=now + 600),
        lever("shed", "optional", expires_at=now + 30),
        lever("shed", "deferrable", expires_at=now - 1),  # expired: TTL not yet run
    )
    levers = ActiveLevers(store, wall_clock=wall, clock=MonotonicClock(), background=False)
    assert levers.shed_tiers() == frozenset() and not levers.forced_fallback("loads")
    levers.refresh()
    assert levers.forced_fallback("loads") and levers.forced_fallback("loads/cell-2")
    assert levers.forced_fallback("gatepass/cell-1") and not levers.forced_fallback("gatepass")
    assert not levers.forced_fallback("navigate")
    assert levers.shed_tiers() == frozenset({"optional"})
    wall.now += 30
    assert levers.shed_tiers() == frozenset() and levers.forced_fallback("loads")
    wall.now += 30
    assert not levers.forced_fallback("loads/cell-1")
    assert [lv.lever_id for lv in levers.active()] == ["fallback:gatepass/cell-1"]
    assert store.reads == 1
