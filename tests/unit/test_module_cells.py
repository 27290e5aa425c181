"""module_kit.cells: per-cell settings, and which cell's table a request reads."""

from __future__ import annotations

import pytest

from module_kit.cells import (
    CellConfigError,
    CellTables,
    CellUnavailableError,
    driver_identity,
    parse_cells,
)
from shared_contracts.errors import UnavailableError
from shared_contracts.identity import IdentityContext, Role

CELLED = "cell-1=loads-a,cell-2=loads-b,cell-3=loads-c"


def who(role: Role, driver_id: str | None = None, **cells: str) -> IdentityContext:
    return IdentityContext(sub=driver_id or role.value, role=role, driver_id=driver_id, cells=cells)


def tables(value: str = CELLED) -> CellTables:
    return CellTables.parse("loads", value, setting="LOADS_TABLE")


# --- parsing ------------------------------------------------------------------------------


def test_a_celled_value_is_each_cells_table_in_the_order_written():
    assert list(parse_cells(" cell-2 = loads-b , cell-1=loads-a", setting="X").items()) == [
        ("cell-2", "loads-b"),
        ("cell-1", "loads-a"),
    ]
    arn = "arn:aws:dynamodb:us-east-1:123456789012:table/relay-loads"
    assert parse_cells(f"cell-1={arn}", setting="X") == {"cell-1": arn}


def test_a_plain_value_is_an_uncelled_stage():
    assert parse_cells("relay-dev-loads", setting="LOADS_TABLE") == {}
    plain = tables(" relay-dev-loads ")
    assert not plain.celled and plain.table == "relay-dev-loads"


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("", "LOADS_TABLE is empty"),
        ("   ", "LOADS_TABLE is empty"),
        ("loads-a,loads-b", "'loads-a' is not cell=table"),
        ("cell-1=loads-a,loads-b", "'loads-b' is not cell=table"),
        ("cell-1=loads-a,", "'' is not cell=table"),
        ("cell-1=", "'' is not a DynamoDB table name"),
        ("=loads-a", "cell name ''"),
        ("Cell-1=loads-a", "cell name 'Cell-1'"),
        ("cell-1=loads-a,cell-1=loads-b", "cell cell-1 is given twice"),
        ("cell-1=loads a", "'loads a' is not a DynamoDB table name"),
        ("cell-1=loads-a=b", "'loads-a=b' is not a DynamoDB table name"),
        ("loads table", "'loads table' is not a DynamoDB table name"),
    ],
)
def test_a_malformed_value_is_refused_naming_the_setting(value, complaint):
    with pytest.raises(CellConfigError) as refused:
        CellTables.parse("loads", value, setting="LOADS_TABLE")
    assert "LOADS_TABLE" in str(refused.value)
    assert complaint in str(refused.value)


# --- which tables a request reads ---------------------------------------------------------


def test_a_driver_reads_their_cell_only():
    assert tables().tables_for(who(Role.DRIVER, "D-1", loads="cell-2")) == ("loads-b",)
    assert tables().tables_for(who(Role.DRIVER, "D-1", loads="cell-3")) == ("loads-c",)


def test_another_modules_cell_says_nothing_of_this_one():
    identity = who(Role.DRIVER, "D-1", message="cell-2")
    assert tables("relay-loads").tables_for(identity) == ("relay-loads",)
    with pytest.raises(CellUnavailableError):
        tables().tables_for(identity)


@pytest.mark.parametrize("role", [Role.GATE, Role.DISPATCH, Role.OPS])
def test_staff_read_every_cell_in_order(role):
    assert tables().tables_for(who(role)) == ("loads-a", "loads-b", "loads-c")


@pytest.mark.parametrize("role", list(Role))
def test_an_uncelled_stage_reads_its_one_table(role):
    driver_id = "D-1" if role is Role.DRIVER else None
    assert tables("relay-loads").tables_for(who(role, driver_id)) == ("relay-loads",)


def test_an_unknown_cell_is_a_503_never_another_cells_table(caplog):
    with pytest.raises(CellUnavailableError) as refused:
        tables().tables_for(who(Role.DRIVER, "D-1", loads="cell-9"))
    error = refused.value
    assert isinstance(error, UnavailableError)
    assert (error.status, error.code) == (503, "cell-unavailable")
    assert error.headers["Retry-After"]
    assert "cell-9" in caplog.text  # logged as an error: the deployment is out of step


def test_a_cell_on_an_uncelled_stage_is_unknown_too():
    with pytest.raises(CellUnavailableError):
        tables("relay-loads").tables_for(who(Role.DRIVER, "D-1", loads="cell-1"))


def test_a_driver_without_a_cell_on_a_celled_stage_reads_nothing():
    with pytest.raises(CellUnavailableError):
        tables().tables_for(who(Role.DRIVER, "D-1"))


def test_read_stops_at_the_first_cell_that_has_the_item():
    store = {"loads-b": "found in b", "loads-c": "found in c"}
    asked: list[str] = []

    def get(table: str) -> str | None:
        asked.append(table)
        return store.get(table)

    assert tables().read(who(Role.GATE), get) == "found in b"
    assert asked == ["loads-a", "loads-b"]
    asked.clear()
    # a driver of cell-1 never sees cell-2's item, and only cell-1 is asked
    assert tables().read(who(Role.DRIVER, "D-1", loads="cell-1"), get) is None
    assert asked == ["loads-a"]


def test_a_bare_driver_id_is_a_driver_with_no_cell():
    identity = driver_identity("D-7")
    assert (identity.role, identity.driver, identity.cells) == (Role.DRIVER, "D-7", {})
    placed = who(Role.DRIVER, "D-7", loads="cell-2")
    assert driver_identity(placed) is placed
