"""Gate passes on a celled stage: the load is read in the driver's cell, and only there.

LOADS_TABLE names one loads table per cell (module_kit.cells); the gateway names each
driver's cell in the identity context it signs. The two cell tables here have the
deployed loads table's shape.
"""

from __future__ import annotations

import boto3
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from module_kit.cells import parse_cells
from modules.gatepass.app import create_app
from modules.gatepass.config import GatepassSettings
from modules.gatepass.repository import GatepassRepository
from modules.gatepass.service import GatepassService
from modules.gatepass.signing import KmsSigner
from shared_contracts.identity import IdentityContext, Role
from tests.conftest import TEST_IDENTITY_SIGNER
from tests.modules.gatepass.test_api import put_load, uncelled_loads

CELLS = {"cell-1": "relay-test-loads-cell-1", "cell-2": "relay-test-loads-cell-2"}
CELLED = ",".join(f"{cell}={table}" for cell, table in CELLS.items())


def identity(role: Role, driver_id: str | None = None, **cells: str) -> IdentityContext:
    """``role``'s identity; ``cells`` as the gateway places a driver (module=cell)."""
    return IdentityContext(
        sub=driver_id or f"{role.value}-user",
        role=role,
        driver_id=driver_id,
        cells=cells,
    )


def header(who: IdentityContext) -> dict[str, str]:
    """The context the gateway signs for gatepass, cells included."""
    return {"x-relay-identity": TEST_IDENTITY_SIGNER.sign(who, audience="gatepass")}


DRIVER_IN_CELL_2 = identity(Role.DRIVER, "D-1001", loads="cell-2")


def clone_loads_table(env: dict[str, str], name: str) -> str:
    """A new table ``name`` with the deployed loads table's keys and indexes."""
    first = next(iter(parse_cells(env["LOADS_TABLE"], setting="LOADS_TABLE").values()), None)
    client = boto3.client("dynamodb")
    shape = client.describe_table(TableName=first or env["LOADS_TABLE"])["Table"]
    indexes = [
        {k: i[k] for k in ("IndexName", "KeySchema", "Projection")}
        for i in shape.get("GlobalSecondaryIndexes", [])
    ]
    client.create_table(
        TableName=name,
        KeySchema=shape["KeySchema"],
        AttributeDefinitions=shape["AttributeDefinitions"],
        BillingMode="PAY_PER_REQUEST",
        **({"GlobalSecondaryIndexes": indexes} if indexes else {}),
    )
    return name


@pytest.fixture
def env(deployed, monkeypatch):
    env = deployed.use_env(monkeypatch, "GatepassFunction")
    for table in CELLS.values():
        clone_loads_table(env, table)
    monkeypatch.setenv("LOADS_TABLE", CELLED)
    return {**env, "LOADS_TABLE": CELLED}


@pytest.fixture
def service(env, clock):
    settings = GatepassSettings()
    signer = KmsSigner(settings.gatepass_signing_key_id)
    return GatepassService(GatepassRepository(settings), signer, clock=clock)


@pytest.fixture
def client(service):
    return TestClient(create_app(service=service))


def issue(client, who: IdentityContext, load_id="L-1"):
    body = {"load_id": load_id, "facility_id": "F-CHI"}
    return client.post("/gatepass", json=body, headers=header(who))


def test_a_driver_gets_a_pass_for_the_load_in_their_cell(client, env, clock):
    # GIVEN D-1001 placed in cell-2, their load in cell-2's table
    put_load(env, clock, table=CELLS["cell-2"])
    # WHEN they ask for a pass, their identity naming cell-2
    r = issue(client, DRIVER_IN_CELL_2)
    # THEN they get it, for that load
    assert r.status_code == 201, r.text
    assert (r.json()["load_id"], r.json()["driver_id"]) == ("L-1", "D-1001")


def test_a_driver_never_reads_another_cell(client, env, clock):
    # GIVEN the driver's load id present only in cell-1 (theirs, even), nothing in cell-2
    put_load(env, clock, table=CELLS["cell-1"])
    missing = issue(client, DRIVER_IN_CELL_2, load_id="L-none")
    # WHEN the driver placed in cell-2 asks for a pass for it
    r = issue(client, DRIVER_IN_CELL_2)
    # THEN cell-1 is not read: the load is not found, answered as a missing one is
    assert r.status_code == missing.status_code == 404, r.text
    assert r.json()["type"] == missing.json()["type"]
    # AND the same driver placed in cell-1 does get it (the load is there)
    assert issue(client, identity(Role.DRIVER, "D-1001", loads="cell-1")).status_code == 201


@pytest.mark.parametrize("role", [Role.GATE, Role.DISPATCH, Role.OPS])
def test_staff_find_a_load_in_any_cell(service, env, clock, role):
    # GIVEN a load only in cell-2, and a staff caller, whose identity names no cell
    load = put_load(env, clock, table=CELLS["cell-2"])
    staff = identity(role)
    # WHEN the module reads it for them
    found = service.repository.get_load("L-1", staff)
    # THEN every cell is read in turn, and cell-2 has it
    assert found is not None and found.load_id == load.load_id and found.driver_id == load.driver_id
    assert service.repository.get_load("L-none", staff) is None


def test_an_unknown_cell_is_a_retryable_503_not_a_guess(client, env, clock):
    # GIVEN the load in both cells, and a driver placed in a cell this function does not know
    for table in CELLS.values():
        put_load(env, clock, table=table)
    # WHEN they ask for a pass
    r = issue(client, identity(Role.DRIVER, "D-1001", loads="cell-9"))
    # THEN no cell answers in its place: 503, retryable
    assert r.status_code == 503, r.text
    assert r.json()["type"] == "urn:relay:problem:cell-unavailable"
    assert r.headers["retry-after"]


def test_a_driver_without_a_cell_on_a_celled_stage_reads_no_cell(client, env, clock):
    # GIVEN the load in every cell, and a driver whose identity names no loads cell
    for table in CELLS.values():
        put_load(env, clock, table=table)
    # WHEN they ask for a pass
    r = issue(client, identity(Role.DRIVER, "D-1001", message="cell-1"))
    # THEN no cell is read on their behalf
    assert r.status_code == 503, r.text
    assert r.json()["type"] == "urn:relay:problem:cell-unavailable"


def test_an_uncelled_stage_reads_its_one_table(deployed, monkeypatch, clock):
    # GIVEN an uncelled stage: LOADS_TABLE one table name, with the driver's load
    env = uncelled_loads(deployed.use_env(monkeypatch, "GatepassFunction"), monkeypatch)
    settings = GatepassSettings()
    assert not settings.loads_tables.celled
    put_load(env, clock)
    service = GatepassService(
        GatepassRepository(settings), KmsSigner(settings.gatepass_signing_key_id), clock=clock
    )
    client = TestClient(create_app(service=service))
    # WHEN the driver (no cell in their identity) and a gate read it
    r = issue(client, identity(Role.DRIVER, "D-1001"))
    # THEN both find it in the one table
    assert r.status_code == 201, r.text
    assert service.repository.get_load("L-1", identity(Role.GATE)) is not None


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("cell-1=relay-loads-1,relay-loads-2", "'relay-loads-2' is not cell=table"),
        ("cell-1=relay-loads-1,cell-1=relay-loads-2", "cell cell-1 is given twice"),
        ("cell-1=", "'' is not a DynamoDB table name"),
        ("Cell 1=relay-loads-1", "cell name 'Cell 1'"),
        ("", "LOADS_TABLE is empty"),
    ],
)
def test_a_malformed_loads_table_stops_the_start_up(monkeypatch, value, complaint):
    # GIVEN the function's environment with a malformed LOADS_TABLE (nothing else wrong)
    for key, good in {
        "GATEPASS_TABLE": "relay-gatepass",
        "GATEPASS_SIGNING_KEY_ID": "alias/relay-gatepass",
        "IDEMPOTENCY_TABLE": "relay-gatepass-idempotency",
        "LOADS_TABLE": value,
    }.items():
        monkeypatch.setenv(key, good)
    # WHEN the function starts, THEN it fails, saying which setting and what is wrong
    with pytest.raises(ValidationError) as failed:
        create_app()
    message = str(failed.value)
    assert "LOADS_TABLE" in message and complaint in message, message
