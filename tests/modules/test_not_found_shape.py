""" "Not yours" and "does not exist" do the same work, so their timing cannot tell them apart.

A review measured another driver's load answering ~1 ms slower than a missing id: the
other driver's item was read and parsed into a pydantic model before the ownership check.
Every module now has DynamoDB check the stored ``driver_id`` (a filtered read), so another
driver's item never reaches the module. This is proven structurally, not with timing: by
the answers DynamoDB gives the module's client, and by counting ``model_validate_json``.
"""

from __future__ import annotations

import boto3
import pytest
from fastapi.testclient import TestClient

from modules.gatepass.app import create_app as gatepass_app
from modules.gatepass.config import GatepassSettings
from modules.gatepass.repository import GatepassRepository
from modules.gatepass.service import GatepassService
from modules.gatepass.signing import KmsSigner
from modules.loads.app import create_app as loads_app
from modules.loads.config import LoadsSettings
from modules.loads.repository import LoadsRepository
from modules.loads.service import LoadsService
from modules.navigate.app import create_app as navigate_app
from modules.navigate.config import NavigateSettings
from modules.navigate.repository import FacilitiesRepository, LoadsReader
from modules.navigate.service import NavigateService
from relay import demo
from shared_contracts.gatepass import GatePassPublic
from shared_contracts.identity import Role
from shared_contracts.loads import LoadPublic, LoadStatus, LoadView, Stop
from tests.conftest import identity_header_for


class ParseCounter:
    """Counts ``model.model_validate_json`` calls (the real parse still runs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, model: type) -> None:
        self.calls = 0
        original = model.model_validate_json

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(model, "model_validate_json", counted)

    def during(self, request) -> tuple[int, object]:
        before = self.calls
        response = request()
        return self.calls - before, response


class StoredItems:
    """How many stored items DynamoDB's answers handed to one client (a module's own)."""

    def __init__(self, client) -> None:
        self.items = 0
        client.meta.events.register("after-call.dynamodb", self._count)

    def _count(self, parsed, **kwargs) -> None:
        self.items += len(parsed.get("Items", [])) + ("Item" in parsed)

    def during(self, request) -> tuple[int, object]:
        before = self.items
        response = request()
        return self.items - before, response


def put_load(env: dict[str, str], clock, load_id="L-1", driver="D-1001") -> LoadPublic:
    """A load in the loads table, laid out as the loads module writes it."""
    plan = demo.assignment(load_id, driver, ["F-CHI", "F-IND"], clock.now)
    stops = [Stop(seq=i, **p.model_dump()) for i, p in enumerate(plan.stops, 1)]
    load = LoadPublic(
        load_id=load_id,
        driver_id=driver,
        status=LoadStatus.ASSIGNED,
        shipper=stops[0].facility,
        consignee=stops[-1].facility,
        stops=stops,
        current_stop=1,
        version=1,
        assigned_at=clock.now,
        updated_at=clock.now,
    )
    boto3.resource("dynamodb").Table(env["LOADS_TABLE"]).put_item(
        Item=LoadsRepository.item_of(load)
    )
    return load


def same_problem(a, b) -> bool:
    """Two answers alike but for their request ids."""
    strip = lambda r: {k: v for k, v in r.json().items() if k != "request_id"}  # noqa: E731
    return (a.status_code, a.headers["content-type"], strip(a)) == (
        b.status_code,
        b.headers["content-type"],
        strip(b),
    )


# --- loads ------------------------------------------------------------------------------


@pytest.fixture
def loads(deployed, monkeypatch, clock):
    env = deployed.use_env(monkeypatch, "LoadsFunction")
    service = LoadsService(LoadsRepository(LoadsSettings()), clock=clock)
    return env, TestClient(loads_app(service=service)), service.repository.dynamodb.meta.client


def test_loads_never_parses_another_drivers_load(loads, clock, monkeypatch):
    env, client, dynamodb = loads
    header = identity_header_for("loads")
    mine, theirs = header(Role.DRIVER, "D-1001"), header(Role.DRIVER, "D-1002")
    parses, received = ParseCounter(monkeypatch, LoadPublic), StoredItems(dynamodb)
    # GIVEN L-1 does not exist yet: D-1002 asks for it
    n_missing, missing = parses.during(lambda: client.get("/loads/L-1", headers=theirs))
    # WHEN it exists as D-1001's and D-1002 asks again
    put_load(env, clock)
    got_other, (n_other, other) = received.during(
        lambda: parses.during(lambda: client.get("/loads/L-1", headers=theirs))
    )
    got_event, (n_event, event) = received.during(
        lambda: parses.during(
            lambda: client.post(
                "/loads/L-1/events", json={"kind": "arrived", "stop_seq": 1}, headers=theirs
            )
        )
    )
    # THEN both are the same 404: the other driver's load never reached the module,
    # so nothing was decoded or parsed
    assert missing.status_code == other.status_code == event.status_code == 404
    assert same_problem(missing, other)
    assert got_other == got_event == 0
    assert n_missing == n_other == n_event == 0
    # AND its owner's read does receive and parse it (the counters see it when it happens)
    got_own, (n_own, own) = received.during(
        lambda: parses.during(lambda: client.get("/loads/L-1", headers=mine))
    )
    assert own.status_code == 200 and (got_own, n_own) == (1, 1)


# --- gatepass ---------------------------------------------------------------------------


@pytest.fixture
def gatepass(deployed, monkeypatch, clock):
    env = deployed.use_env(monkeypatch, "GatepassFunction")
    settings = GatepassSettings()
    service = GatepassService(
        GatepassRepository(settings), KmsSigner(settings.gatepass_signing_key_id), clock=clock
    )
    return (env, TestClient(gatepass_app(service=service)), service.repository.dynamodb.meta.client)


def test_gatepass_never_parses_another_drivers_load_or_pass(gatepass, clock, monkeypatch):
    env, client, dynamodb = gatepass
    header = identity_header_for("gatepass")
    mine, theirs = header(Role.DRIVER, "D-1001"), header(Role.DRIVER, "D-1002")
    body = {"load_id": "L-1", "facility_id": "F-CHI"}
    load_parses = ParseCounter(monkeypatch, LoadView)
    pass_parses = ParseCounter(monkeypatch, GatePassPublic)
    received = StoredItems(dynamodb)
    # GIVEN a pass requested for a load that does not exist, then for another driver's
    n_missing, missing = load_parses.during(
        lambda: client.post("/gatepass", json=body, headers=theirs)
    )
    put_load(env, clock)
    got_other, (n_other, other) = received.during(
        lambda: load_parses.during(lambda: client.post("/gatepass", json=body, headers=theirs))
    )
    # THEN both are the same 404; the load never reached the module, nor was it parsed
    assert missing.status_code == other.status_code == 404
    assert same_problem(missing, other)
    assert got_other == 0
    assert n_missing == n_other == 0
    # AND the owner's request parses it once, and gets a pass
    n_own, issued = load_parses.during(lambda: client.post("/gatepass", json=body, headers=mine))
    assert issued.status_code == 201, issued.text
    assert n_own == 1
    pass_id = issued.json()["pass_id"]
    # WHEN D-1002 asks for D-1001's pass, and for one that does not exist
    got_theirs, (n_theirs, not_theirs) = received.during(
        lambda: pass_parses.during(lambda: client.get(f"/gatepass/{pass_id}", headers=theirs))
    )
    n_none, none = pass_parses.during(lambda: client.get("/gatepass/GP-nope", headers=theirs))
    # THEN both are 404 and neither received nor parsed a pass; the owner's read does
    assert not_theirs.status_code == none.status_code == 404
    assert got_theirs == 0
    assert n_theirs == n_none == 0
    n_own, own = pass_parses.during(lambda: client.get(f"/gatepass/{pass_id}", headers=mine))
    assert own.status_code == 200 and n_own == 1


# --- navigate ---------------------------------------------------------------------------


@pytest.fixture
def navigate(deployed, monkeypatch, clock):
    env = deployed.use_env(monkeypatch, "NavigateFunction")
    settings = NavigateSettings()
    service = NavigateService(FacilitiesRepository(settings), LoadsReader(settings), clock=clock)
    return env, TestClient(navigate_app(service=service)), service.loads.dynamodb.meta.client


def test_navigate_never_parses_another_drivers_load(navigate, clock, monkeypatch):
    env, client, dynamodb = navigate
    header = identity_header_for("navigate")
    mine, theirs = header(Role.DRIVER, "D-1001"), header(Role.DRIVER, "D-1002")
    params = {"load_id": "L-1", "lat": 41.8, "lon": -87.7}
    parses, received = ParseCounter(monkeypatch, LoadView), StoredItems(dynamodb)
    n_missing, missing = parses.during(
        lambda: client.get("/navigate", params=params, headers=theirs)
    )
    put_load(env, clock)
    got_other, (n_other, other) = received.during(
        lambda: parses.during(lambda: client.get("/navigate", params=params, headers=theirs))
    )
    assert missing.status_code == other.status_code == 404
    assert same_problem(missing, other)
    assert got_other == 0
    assert n_missing == n_other == 0
    n_own, own = parses.during(lambda: client.get("/navigate", params=params, headers=mine))
    assert own.status_code == 200, own.text
    assert n_own == 1
