"""Navigate on a celled stage: the load is read in the driver's cell, and only there.

LOADS_TABLE names one loads table per cell (module_kit.cells); the gateway names each
driver's cell in the identity context it signs. The cell tables are made as in
tests/modules/gatepass/test_cells.py, with the deployed loads table's shape.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from modules.navigate.app import create_app
from modules.navigate.config import NavigateSettings
from modules.navigate.repository import FacilitiesRepository, LoadsReader
from modules.navigate.service import NavigateService
from shared_contracts.identity import IdentityContext, Role
from tests.conftest import TEST_IDENTITY_SIGNER
from tests.modules.gatepass.test_cells import CELLED, CELLS, clone_loads_table, identity
from tests.modules.navigate.test_api import CHICAGO_YARD, uncelled_loads, write_load

DRIVER_IN_CELL_2 = identity(Role.DRIVER, "D-1001", loads="cell-2")


def header(who: IdentityContext) -> dict[str, str]:
    """The context the gateway signs for navigate, cells included."""
    return {"x-relay-identity": TEST_IDENTITY_SIGNER.sign(who, audience="navigate")}


def navigate(client, who: IdentityContext, load_id="L-1"):
    params = {"load_id": load_id, "lat": CHICAGO_YARD[0], "lon": CHICAGO_YARD[1]}
    return client.get("/navigate", params=params, headers=header(who))


@pytest.fixture
def env(deployed, monkeypatch):
    env = deployed.use_env(monkeypatch, "NavigateFunction")
    for table in CELLS.values():
        clone_loads_table(env, table)
    monkeypatch.setenv("LOADS_TABLE", CELLED)
    return {**env, "LOADS_TABLE": CELLED}


@pytest.fixture
def reader(env):
    return LoadsReader(NavigateSettings())


@pytest.fixture
def client(env, reader, clock):
    service = NavigateService(FacilitiesRepository(NavigateSettings()), reader, clock=clock)
    return TestClient(create_app(service=service))


def test_a_driver_navigates_to_the_load_in_their_cell(client, clock):
    # GIVEN D-1001 placed in cell-2, their load in cell-2's table
    write_load(clock, table=CELLS["cell-2"])
    # WHEN they ask for directions, their identity naming cell-2
    r = navigate(client, DRIVER_IN_CELL_2)
    # THEN they get them, to that load's first stop
    assert r.status_code == 200, r.text
    assert (r.json()["load_id"], r.json()["stop_seq"]) == ("L-1", 1)


def test_a_driver_never_reads_another_cell(client, clock):
    # GIVEN the driver's load id present only in cell-1, nothing in cell-2
    write_load(clock, table=CELLS["cell-1"])
    missing = navigate(client, DRIVER_IN_CELL_2, load_id="L-none")
    # WHEN the driver placed in cell-2 asks for directions to it
    r = navigate(client, DRIVER_IN_CELL_2)
    # THEN cell-1 is not read: not found, answered as a missing load is
    assert r.status_code == missing.status_code == 404, r.text
    assert r.json()["type"] == missing.json()["type"]
    # AND the same driver placed in cell-1 does get directions (the load is there)
    assert navigate(client, identity(Role.DRIVER, "D-1001", loads="cell-1")).status_code == 200


@pytest.mark.parametrize("role", [Role.GATE, Role.DISPATCH, Role.OPS])
def test_staff_find_a_load_in_any_cell(reader, clock, role):
    # GIVEN a load only in cell-2, and a staff caller, whose identity names no cell
    load = write_load(clock, table=CELLS["cell-2"])
    staff = identity(role)
    # WHEN the reader reads it for them, THEN every cell is read in turn and cell-2 has it
    found = reader.get_load("L-1", staff)
    assert found is not None and (found.load_id, found.driver_id) == (load.load_id, load.driver_id)
    assert reader.get_load("L-none", staff) is None


def test_an_unknown_cell_is_a_retryable_503_not_a_guess(client, clock):
    # GIVEN the load in both cells, and a driver placed in a cell this function does not know
    for table in CELLS.values():
        write_load(clock, table=table)
    # WHEN they ask for directions
    r = navigate(client, identity(Role.DRIVER, "D-1001", loads="cell-9"))
    # THEN no cell answers in its place: 503, retryable
    assert r.status_code == 503, r.text
    assert r.json()["type"] == "urn:relay:problem:cell-unavailable"
    assert r.headers["retry-after"]


def test_a_driver_without_a_cell_on_a_celled_stage_reads_no_cell(client, clock):
    # GIVEN the load in every cell, and a driver whose identity names no loads cell
    for table in CELLS.values():
        write_load(clock, table=table)
    # WHEN they ask for directions, THEN no cell is read on their behalf
    r = navigate(client, identity(Role.DRIVER, "D-1001"))
    assert r.status_code == 503, r.text
    assert r.json()["type"] == "urn:relay:problem:cell-unavailable"


def test_an_uncelled_stage_reads_its_one_table(deployed, monkeypatch, clock):
    # GIVEN an uncelled stage: LOADS_TABLE one table name, with the driver's load
    uncelled_loads(deployed.use_env(monkeypatch, "NavigateFunction"), monkeypatch)
    settings = NavigateSettings()
    assert not settings.loads_tables.celled
    write_load(clock)
    reader = LoadsReader(settings)
    service = NavigateService(FacilitiesRepository(settings), reader, clock=clock)
    client = TestClient(create_app(service=service))
    # WHEN the driver (no cell in their identity) and a gate read it
    r = navigate(client, identity(Role.DRIVER, "D-1001"))
    # THEN both find it in the one table
    assert r.status_code == 200, r.text
    assert reader.get_load("L-1", identity(Role.GATE)) is not None


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("cell-1=relay-loads-1,relay-loads-2", "'relay-loads-2' is not cell=table"),
        ("cell-1=relay-loads-1;cell-2=relay-loads-2", "is not a DynamoDB table name"),
        ("relay loads", "'relay loads' is not a DynamoDB table name"),
    ],
)
def test_a_malformed_loads_table_stops_the_start_up(monkeypatch, value, complaint):
    # GIVEN the function's environment with a malformed LOADS_TABLE (nothing else wrong)
    monkeypatch.setenv("FACILITIES_TABLE", "relay-facilities")
    monkeypatch.setenv("LOADS_TABLE", value)
    # WHEN the function starts, THEN it fails, saying which setting and what is wrong
    with pytest.raises(ValidationError) as failed:
        create_app()
    message = str(failed.value)
    assert "LOADS_TABLE" in message and complaint in message, message
