"""Cells in the gateway: the route table's cells, the placement of keys (default and
explicit), each cell its own upstream and breaker, a moving key's writes deferred, a
driver's cells in the identity context other modules read, the replayer routing by the
placement at replay time."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway.app import build_fallbacks, create_app
from gateway.cells.placement import Placement, default_cell
from gateway.cells.router import Cells
from gateway.config import DEFAULT_ROUTES_FILE
from gateway.deferred.queue import DeferredWrite
from gateway.deferred.replayer import Replayer, ReplayFailed
from gateway.routing.routes import RouteTable, RouteTableError
from gateway.security.signer import SignerProvider
from shared_contracts.identity import IdentityContext, Role
from tests.unit.gateway.conftest import UPSTREAMS, identity_of

CELLS = ["cell-1", "cell-2"]
CELLED = UPSTREAMS | {
    "RELAY_UPSTREAM_LOADS": "cell-1=http://loads-1.test,cell-2=http://loads-2.test"
}
URL = {"cell-1": "http://loads-1.test", "cell-2": "http://loads-2.test"}
DRIVERS = [f"D-{n}" for n in range(3000, 3040)]


def in_cell(cell: str) -> list[str]:
    return [d for d in DRIVERS if default_cell(d, CELLS) == cell]


class MemoryPlacements:
    """An in-memory placement table (the gateway only loads it)."""

    def __init__(self) -> None:
        self.items: dict[str, Placement] = {}
        self.fail = False

    def load(self, module: str) -> dict[str, Placement]:
        if self.fail:
            raise ConnectionError("placement table unreachable")
        return {k: p for k, p in self.items.items() if p.module == module}

    def place(self, key: str, cell: str, **changes) -> None:
        current = self.items.get(key)
        revision = current.revision + 1 if current else 1
        self.items[key] = Placement("loads", key, cell, revision=revision, **changes)


class RecordingSqs:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    def send_message(self, **kwargs: object) -> dict:
        self.sent.append(kwargs)
        return {"MessageId": str(len(self.sent))}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def placements() -> MemoryPlacements:
    return MemoryPlacements()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sqs() -> RecordingSqs:
    return RecordingSqs()


@pytest.fixture
def gateway(settings, upstream, placements, clock, sqs):
    s = settings.model_copy(update={"deferred_queue_url": "https://sqs.test/queue"})
    routes = RouteTable.load(s.routes_file, env=CELLED)
    app = create_app(
        s,
        routes=routes,
        placement_store=placements,
        clock=clock,
        fallbacks=build_fallbacks(s, sqs=sqs),
    )
    with TestClient(app) as client:
        yield client


# --- the route table and the default placement ---------------------------------------------


def test_a_celled_upstream_is_one_upstream_per_cell():
    table = RouteTable.load(DEFAULT_ROUTES_FILE, env=CELLED)
    assert table.modules["loads"].cells == URL
    units = table.units()
    assert units["loads/cell-2"].upstream == "http://loads-2.test"
    assert "loads" not in units and units["gatepass"].upstream == "http://gatepass.test"


def test_every_route_of_a_celled_module_names_its_partition_key():
    data = {
        "modules": {"loads": {"tier": "optional", "upstream": "cell-1=http://a.test"}},
        "routes": [{"prefix": "/loads", "module": "loads", "roles": ["driver"]}],
    }
    with pytest.raises(RouteTableError, match="cell_key"):
        RouteTable.from_dict(data, env={})
    data["routes"][0]["cell_key"] = "driver"
    assert RouteTable.from_dict(data, env={}).modules["loads"].celled


@pytest.mark.parametrize(
    "upstream", ["cell-1=http://a.test,cell-1=http://b.test", "Cell 1=http://a.test", "c=ftp://x"]
)
def test_a_bad_cell_list_stops_the_gateway_at_start_up(upstream):
    data = {
        "modules": {"loads": {"tier": "optional", "upstream": upstream}},
        "routes": [
            {"prefix": "/loads", "module": "loads", "roles": ["driver"], "cell_key": "driver"}
        ],
    }
    with pytest.raises(RouteTableError):
        RouteTable.from_dict(data, env={})


def test_the_default_cell_spreads_keys_evenly_and_a_new_cell_takes_keys_only_for_itself():
    keys = [f"D-{n}" for n in range(4000)]
    two = {k: default_cell(k, CELLS) for k in keys}
    share = Counter(two.values())["cell-1"] / len(keys)
    assert 0.45 < share < 0.55
    three = {k: default_cell(k, [*CELLS, "cell-3"]) for k in keys}
    moved = [k for k in keys if three[k] != two[k]]
    assert all(three[k] == "cell-3" for k in moved)  # nobody moves between old cells
    assert 0.28 < len(moved) / len(keys) < 0.39  # about 1/3 joins the new cell
    assert default_cell("D-1", CELLS) == default_cell("D-1", list(reversed(CELLS)))


# --- routing through the gateway ----------------------------------------------------------


def test_each_driver_reaches_their_default_cell_and_a_placed_one_their_placed_cell(
    gateway, upstream, placements, bearer
):
    one = upstream.get(f"{URL['cell-1']}/loads").respond(200, json={"items": []})
    two = upstream.get(f"{URL['cell-2']}/loads").respond(200, json={"items": []})
    for driver in DRIVERS:
        assert gateway.get("/loads", headers=bearer(driver_id=driver)).status_code == 200
    assert {identity_of(c.request, "loads").sub for c in one.calls} == set(in_cell("cell-1"))
    assert {identity_of(c.request, "loads").sub for c in two.calls} == set(in_cell("cell-2"))
    # an explicit placement wins over the default, once the copy is read again
    moved = in_cell("cell-1")[0]
    placements.place(moved, "cell-2")
    gateway.app.state.cells.refresh()
    gateway.get("/loads", headers=bearer(driver_id=moved))
    assert identity_of(two.calls.last.request, "loads").sub == moved


def test_a_dispatcher_assignment_goes_to_the_cell_of_the_driver_in_the_body(
    gateway, upstream, bearer
):
    driver = in_cell("cell-2")[0]
    two = upstream.post(f"{URL['cell-2']}/dispatch/assignments").respond(201, json={})
    upstream.post(f"{URL['cell-1']}/dispatch/assignments").respond(500)
    r = gateway.post(
        "/dispatch/assignments",
        json={"load_id": "L-1", "driver_id": driver, "stops": []},
        headers={**bearer(Role.DISPATCH, None), "idempotency-key": "assign-0001"},
    )
    assert r.status_code == 201 and two.call_count == 1


def test_a_failing_cell_opens_only_its_own_breaker_and_only_its_drivers_are_degraded(
    gateway, upstream, bearer
):
    upstream.get(f"{URL['cell-1']}/loads").mock(side_effect=httpx.ConnectError("down"))
    upstream.get(f"{URL['cell-2']}/loads").respond(200, json={"items": []})
    for _ in range(3):
        for driver in DRIVERS:
            gateway.get("/loads", headers=bearer(driver_id=driver))
    for driver in in_cell("cell-2"):
        r = gateway.get("/loads", headers=bearer(driver_id=driver))
        assert r.status_code == 200 and "relay-degraded" not in r.headers
    state = gateway.app.state
    assert state.upstreams["loads/cell-1"].breaker.state.value == "open"
    assert state.upstreams["loads/cell-2"].breaker.state.value == "closed"
    # the status shows each cell as its own upstream, and counts per cell
    status = gateway.get("/ops/status", headers=bearer(Role.OPS, None)).json()
    assert status["modules"]["loads/cell-1"]["cell"] == "cell-1"
    assert status["modules"]["loads/cell-1"]["breaker"]["state"] == "open"
    assert status["modules"]["loads/cell-2"]["breaker"]["state"] == "closed"
    assert status["cells"]["loads"]["cells"] == CELLS
    assert set(status["unavailable"]) == {"loads/cell-1"}
    routes = gateway.get("/ops/routes", headers=bearer(Role.OPS, None)).json()
    assert routes["modules"]["loads"]["upstreams"]["loads/cell-1"]["breaker"] == "open"
    assert {r["prefix"]: r.get("cell_key") for r in routes["routes"]}["/loads"] == "driver"


def test_other_modules_get_the_drivers_cells_in_the_identity_context(gateway, upstream, bearer):
    passes = upstream.get("http://gatepass.test/gatepass").respond(200, json={"items": []})
    driver = in_cell("cell-2")[0]
    gateway.get("/gatepass", headers=bearer(driver_id=driver))
    assert identity_of(passes.calls.last.request, "gatepass").cells == {"loads": "cell-2"}
    gateway.get("/gatepass", headers=bearer(Role.DISPATCH, None))
    assert identity_of(passes.calls.last.request, "gatepass").cells == {}  # staff: no cell


def test_a_moving_drivers_writes_are_deferred_and_reads_served_from_the_source_cell(
    gateway, upstream, placements, sqs, bearer
):
    driver = in_cell("cell-1")[0]
    placements.place(driver, "cell-1", state="moving", to="cell-2")
    gateway.app.state.cells.refresh()
    read = upstream.get(f"{URL['cell-1']}/loads").respond(200, json={"items": []})
    write = upstream.post(f"{URL['cell-1']}/loads/L-1/events").respond(201, json={})
    assert gateway.get("/loads", headers=bearer(driver_id=driver)).status_code == 200
    r = gateway.post(
        "/loads/L-1/events",
        json={"kind": "arrived", "stop_seq": 1},
        headers={**bearer(driver_id=driver), "idempotency-key": "move-0001"},
    )
    assert r.status_code == 202 and r.json()["status_url"] == "/deferred/move-0001"
    assert write.call_count == 0 and read.call_count == 1
    assert len(sqs.sent) == 1
    # a dispatcher's write for that driver (routed by the body's driver) waits too
    r = gateway.post(
        "/dispatch/assignments",
        json={"load_id": "L-2", "driver_id": driver, "stops": []},
        headers={**bearer(Role.DISPATCH, None), "idempotency-key": "assign-0002"},
    )
    assert r.status_code == 202 and r.json()["status_url"] == "/deferred/assign-0002"
    assert write.call_count == 0 and len(sqs.sent) == 2


def test_a_write_routed_by_a_stale_copy_that_cannot_be_read_again_is_deferred(
    gateway, upstream, placements, clock, sqs, bearer
):
    driver = in_cell("cell-2")[0]
    live = upstream.post(f"{URL['cell-2']}/loads/L-1/events").respond(201, json={})
    event = {"json": {"kind": "arrived", "stop_seq": 1}}
    auth = bearer(driver_id=driver)
    r = gateway.post(
        "/loads/L-1/events", **event, headers={**auth, "idempotency-key": "event-0001"}
    )
    assert r.status_code == 201
    placements.fail = True
    clock.now += 60  # the copy is old, and the store does not answer
    r = gateway.post(
        "/loads/L-1/events", **event, headers={**auth, "idempotency-key": "event-0002"}
    )
    assert r.status_code == 202 and live.call_count == 1 and len(sqs.sent) == 1
    # the store answers again: the copy is read again and writes go live
    placements.fail = False
    clock.now += 60
    r = gateway.post(
        "/loads/L-1/events", **event, headers={**auth, "idempotency-key": "event-0003"}
    )
    assert r.status_code == 201 and live.call_count == 2


# --- the replayer -------------------------------------------------------------------------


def deferred(driver: str) -> DeferredWrite:
    return DeferredWrite(
        tracking_id="key-1",
        module="loads",
        method="POST",
        path="/loads/L-1/events",
        body=json.dumps({"kind": "arrived", "stop_seq": 1}),
        identity=IdentityContext(sub=driver, role=Role.DRIVER, driver_id=driver),
        caller=driver,
        request_id="r-1",
        accepted_at=datetime(2026, 12, 4, tzinfo=UTC),
        headers={"content-type": "application/json"},
    )


def test_the_replayer_applies_a_write_in_the_cell_its_key_is_placed_in_at_replay_time(
    settings, upstream, placements, clock
):
    table = RouteTable.load(settings.routes_file, env=CELLED)
    replayer = Replayer(
        table,
        httpx.Client(),
        SignerProvider(settings),
        cells=Cells(table.modules, placements, refresh_seconds=0, clock=clock, background=False),
    )
    driver = in_cell("cell-1")[0]
    one = upstream.post(f"{URL['cell-1']}/loads/L-1/events").respond(201, json={})
    two = upstream.post(f"{URL['cell-2']}/loads/L-1/events").respond(201, json={})
    placements.place(driver, "cell-1", state="moving", to="cell-2")
    with pytest.raises(ReplayFailed, match="moved"):
        replayer.apply(deferred(driver))
    placements.place(driver, "cell-2")  # the move finished
    assert replayer.apply(deferred(driver)) == 201
    assert one.call_count == 0 and two.call_count == 1
    assert identity_of(two.calls.last.request, "loads").cells == {"loads": "cell-2"}
    # a store that stops answering: the last copy routes for a few seconds, then nothing
    placements.fail = True
    placements.items[driver] = replace(placements.items[driver], revision=9)
    assert replayer.apply(deferred(driver)) == 201
    clock.now += 60
    with pytest.raises(ReplayFailed, match="placements"):
        replayer.apply(deferred(driver))


def test_an_idle_instance_reads_the_placements_before_it_routes_a_read(
    gateway, upstream, placements, clock, bearer
):
    one = upstream.get(f"{URL['cell-1']}/loads").respond(200, json={"items": []})
    two = upstream.get(f"{URL['cell-2']}/loads").respond(200, json={"items": []})
    driver = in_cell("cell-1")[0]
    gateway.get("/loads", headers=bearer(driver_id=driver))
    assert one.call_count == 1
    # the driver is moved while this instance serves nobody; its copy grows old
    placements.place(driver, "cell-2")
    clock.now += 10
    # its first request reads the placements first: the driver's data is in cell-2 now
    gateway.get("/loads", headers=bearer(driver_id=driver))
    assert (one.call_count, two.call_count) == (1, 1)
