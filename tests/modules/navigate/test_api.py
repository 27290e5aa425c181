"""Navigate API against moto: next stop, ETA against the window, fallbacks, authorization."""

from __future__ import annotations

from datetime import datetime, timedelta

import boto3
import pytest
from fastapi.testclient import TestClient

from module_kit.cells import parse_cells
from modules.loads.repository import LoadsRepository
from modules.navigate.app import create_app
from modules.navigate.config import NavigateSettings
from modules.navigate.engine import RouteEstimate, RoutingUnavailableError, haversine_km
from modules.navigate.repository import FacilitiesRepository, LoadsReader
from modules.navigate.service import NavigateService
from relay import demo
from shared_contracts.identity import Role
from shared_contracts.loads import LoadPublic, LoadStatus, Stop
from tests.conftest import identity_header_for

identity_header = identity_header_for("navigate")

DRIVER = identity_header(Role.DRIVER, "D-1001")
OTHER = identity_header(Role.DRIVER, "D-1002")
DISPATCH = identity_header(Role.DISPATCH, None)

CHICAGO_YARD = (41.8155, -87.7245)  # the driver is parked at F-CHI


def uncelled_loads(env: dict[str, str], monkeypatch) -> dict[str, str]:
    """``env`` with LOADS_TABLE one plain table name: its first cell's on a celled stage.
    These tests are of an uncelled stage; test_cells.py has the celled ones."""
    cells = parse_cells(env["LOADS_TABLE"], setting="LOADS_TABLE")
    if cells:
        env = {**env, "LOADS_TABLE": next(iter(cells.values()))}
        monkeypatch.setenv("LOADS_TABLE", env["LOADS_TABLE"])
    return env


@pytest.fixture
def env(deployed, monkeypatch):
    return uncelled_loads(deployed.use_env(monkeypatch, "NavigateFunction"), monkeypatch)


@pytest.fixture
def facilities(env):
    repo = FacilitiesRepository(NavigateSettings())
    for f in demo.FACILITIES:
        if f["facility_id"] in ("F-CHI", "F-IND"):  # F-CMH and F-DET deliberately have no record
            repo.put(demo.destination(f["facility_id"]), f["cell"])
    return repo


@pytest.fixture
def client(facilities, clock):
    service = NavigateService(facilities, LoadsReader(NavigateSettings()), clock=clock)
    return TestClient(create_app(service=service))


def write_load(
    clock,
    load_id="L-1",
    driver="D-1001",
    route=("F-CHI", "F-IND"),
    *,
    current_stop=1,
    status=LoadStatus.ASSIGNED,
    table: str | None = None,
) -> LoadPublic:
    """Put a load in the loads table (or ``table``) exactly as the loads module stores it."""
    cmd = demo.assignment(load_id, driver, list(route), clock.now)
    stops = [Stop(seq=i, **plan.model_dump()) for i, plan in enumerate(cmd.stops, 1)]
    load = LoadPublic(
        load_id=load_id,
        driver_id=driver,
        status=status,
        stops=stops,
        shipper=stops[0].facility,
        consignee=stops[-1].facility,
        current_stop=current_stop,
        version=1,
        assigned_at=clock.now,
        updated_at=clock.now,
    )
    boto3.resource("dynamodb").Table(table or NavigateSettings().loads_table).put_item(
        Item=LoadsRepository.item_of(load)
    )
    return load


def parse_time(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def navigate(client, load_id="L-1", origin=CHICAGO_YARD, headers=DRIVER):
    return client.get(
        "/navigate",
        params={"load_id": load_id, "lat": origin[0], "lon": origin[1]},
        headers=headers,
    )


def test_directions_lead_to_the_first_stop_with_its_facility_details(client, clock):
    # GIVEN a freshly assigned load whose pickup is in 1 h, and the driver 1 degree south of it
    load = write_load(clock)
    origin = (40.8155, -87.7245)
    # WHEN the driver asks for directions
    r = navigate(client, origin=origin)
    # THEN they lead to stop 1 with the facility's instructions and dock hours
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["stop_seq"] == 1 and d["destination"]["facility_id"] == "F-CHI"
    assert d["destination"]["entry_instructions"].startswith("Enter from Pulaski gate 3")
    assert d["destination"]["dock_hours"] == {
        "opens": "05:00",
        "closes": "22:00",
        "days": "Mon-Sat",
    }
    # AND the distances are the straight-line estimate, rounded to 0.1 km
    straight = haversine_km(origin, CHICAGO_YARD)
    assert d["straight_line_km"] == round(straight, 1) == 111.2
    assert d["route_km"] == round(straight * 1.3, 1)
    assert d["engine"] == "straight-line"
    # AND the ETA is now + drive time (~116 min), inside the stop's window
    assert d["eta_minutes"] == 116
    assert parse_time(d["eta"]) == clock.now + timedelta(minutes=116)
    first = load.stops[0]
    assert parse_time(d["window_start"]) == first.window_start
    assert parse_time(d["window_end"]) == first.window_end
    assert d["on_time"] is True


def test_next_stop_follows_current_stop(client, clock):
    # GIVEN a load that departed its pickup and now heads to stop 2 (F-IND)
    load = write_load(clock, current_stop=2, status=LoadStatus.IN_TRANSIT)
    # WHEN the driver, still in Chicago, asks for directions
    d = navigate(client).json()
    # THEN they lead to Indianapolis, ~264 km away, with stop 2's window
    assert d["stop_seq"] == 2 and d["destination"]["facility_id"] == "F-IND"
    assert d["destination"]["entry_instructions"].startswith("Truck entrance on Holt Rd")
    assert d["straight_line_km"] == pytest.approx(263.9, abs=0.05)
    assert parse_time(d["window_end"]) == load.stops[1].window_end
    assert d["on_time"] is True  # 4.6 h drive, window closes in 7 h


def test_eta_after_the_window_closes_is_not_on_time(client, clock):
    # GIVEN the driver must reach Indianapolis (window closes 7 h after assignment)
    write_load(clock, current_stop=2, status=LoadStatus.IN_TRANSIT)
    # WHEN they are still in Chicago 3 hours later (4.6 h of driving left)
    clock.advance(hours=3)
    d = navigate(client).json()
    # THEN the ETA falls after the window end
    assert parse_time(d["eta"]) > parse_time(d["window_end"])
    assert d["on_time"] is False


def test_facility_without_record_falls_back_to_the_stops_own_data(client, clock):
    # GIVEN a load going to F-CMH, which has no facility record
    write_load(clock, route=("F-CMH", "F-IND"))
    # WHEN the driver navigates to it
    r = navigate(client)
    # THEN the stop's own name, address and coordinates are used, without instructions
    assert r.status_code == 200, r.text
    dest = r.json()["destination"]
    assert dest == {
        "facility_id": "F-CMH",
        "name": "Columbus Warehouse",
        "address": "1800 Westbelt Dr, Columbus, OH",
        "lat": 39.9961,
        "lon": -83.119,
        "entry_instructions": None,
        "dock_hours": None,
    }


def test_unreadable_facilities_table_degrades_instead_of_failing(env, clock):
    # GIVEN the facilities table cannot be read
    broken = FacilitiesRepository(NavigateSettings(facilities_table="no-such-table"))
    service = NavigateService(broken, LoadsReader(NavigateSettings()), clock=clock)
    client = TestClient(create_app(service=service))
    write_load(clock)
    # WHEN the driver navigates
    r = navigate(client)
    # THEN they still get directions, from the stop's own data
    assert r.status_code == 200, r.text
    assert r.json()["destination"]["name"] == "Chicago Cross-Dock"
    assert r.json()["destination"]["entry_instructions"] is None


def test_unreadable_loads_table_is_a_retryable_503(facilities, clock):
    reader = LoadsReader(NavigateSettings(loads_table="no-such-table"))
    client = TestClient(create_app(service=NavigateService(facilities, reader, clock=clock)))
    r = navigate(client)
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["retry-after"]


class FixedEngine:
    """A stand-in for a real road-network engine."""

    name = "road-network"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def estimate(self, origin, destination):
        if self.fail:
            raise RoutingUnavailableError("quota exceeded")
        return RouteEstimate(
            straight_line_km=10.04, route_km=12.06, duration_minutes=14.2, engine=self.name
        )


def test_a_plugged_in_engine_answers(facilities, clock):
    # GIVEN the app built from the environment with another routing engine
    client = TestClient(create_app(engine=FixedEngine()))
    write_load(clock)
    # WHEN the driver navigates
    d = navigate(client).json()
    # THEN that engine's estimate is used, rounded, with the ETA rounded up to a whole minute
    assert (d["engine"], d["straight_line_km"], d["route_km"], d["eta_minutes"]) == (
        "road-network",
        10.0,
        12.1,
        15,
    )


def test_a_failing_engine_falls_back_to_the_straight_line(facilities, clock):
    service = NavigateService(
        facilities, LoadsReader(NavigateSettings()), engine=FixedEngine(fail=True), clock=clock
    )
    write_load(clock)
    d = navigate(TestClient(create_app(service=service))).json()
    assert d["engine"] == "straight-line"


def test_another_drivers_load_is_not_found_like_an_unknown_one(client, clock):
    # GIVEN a load of D-1001
    write_load(clock)
    # WHEN D-1002 asks for it, and D-1001 asks for a load that does not exist
    theirs = navigate(client, headers=OTHER)
    unknown = navigate(client, load_id="L-404")
    # THEN both are the same 404, which reveals nothing about the owner
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["type"] == unknown.json()["type"] == "urn:relay:problem:not-found"
    assert "D-1001" not in theirs.text


def test_delivered_load_has_nothing_to_navigate_to(client, clock):
    write_load(clock, current_stop=2, status=LoadStatus.DELIVERED)
    r = navigate(client)
    assert r.status_code == 409
    assert r.json()["type"] == "urn:relay:problem:load-delivered"


@pytest.mark.parametrize(
    "query",
    [
        "load_id=L-1&lat=91&lon=-87.7",
        "load_id=L-1&lat=41.8&lon=-180.5",
        "load_id=L-1&lat=41.8&lon=abc",
        "load_id=L-1&lat=nan&lon=-87.7",
        "load_id=L-1&lat=41.8&lon=inf",
        "load_id=L-1&lon=-87.7",
        "load_id=L-1&lat=41.8",
        "lat=41.8&lon=-87.7",
        "load_id=..%2Fetc&lat=41.8&lon=-87.7",
        "load_id=" + "L" * 65 + "&lat=41.8&lon=-87.7",
    ],
)
def test_bad_query_is_a_422_problem(client, clock, query):
    write_load(clock)
    r = client.get(f"/navigate?{query}", headers=DRIVER)
    assert r.status_code == 422
    problem = r.json()
    assert problem["type"] == "urn:relay:problem:validation" and problem["errors"]
    assert problem["request_id"] == r.headers["x-request-id"]


def test_unknown_query_parameters_are_ignored(client, clock):
    write_load(clock)
    r = client.get("/navigate?load_id=L-1&lat=41.8&lon=-87.7&zoom=12", headers=DRIVER)
    assert r.status_code == 200


def test_only_drivers_with_the_gateway_identity_may_navigate(client, clock):
    write_load(clock)
    assert navigate(client, headers={}).status_code == 401
    assert navigate(client, headers={"x-relay-identity": "garbage!"}).status_code == 401
    assert navigate(client, headers=DISPATCH).status_code == 403


def test_health_needs_no_aws(monkeypatch):
    monkeypatch.setenv("FACILITIES_TABLE", "f")
    monkeypatch.setenv("LOADS_TABLE", "l")
    assert TestClient(create_app()).get("/healthz").json() == {"status": "ok"}
