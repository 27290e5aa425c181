"""``relay cells``: moving a driver's loads data between cells (relay/cells.py), over moto.

Each cell's tables are made with modules/loads/template.yaml's key schemas and named as
the local stack names a cell stack's (``relay-<cell>-<LogicalId>``); the data is written by
the loads module's own service, repository and idempotency store, so the items (and the
Powertools records) are the module's. No sleeps: the mover's clock and wait are a fake.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from typer.testing import CliRunner

from gateway.cells.placement import Placement, PlacementTable, default_cell
from module_kit.idempotency import IdempotencyStore
from modules.loads.config import LoadsSettings
from modules.loads.repository import LoadsRepository
from modules.loads.service import LoadsService
from relay import cells as cells_module
from relay.cells import (
    CELL_TABLE_RESOURCES,
    SETTLE_SECONDS,
    CellMover,
    CellsError,
    LoadsCellTables,
    PlacementChanged,
    local_table_name,
    published_cells,
)
from relay.cloud import ROOT, load_template
from relay.demo import assignment
from shared_contracts.loads import LoadEventCreate, LoadEventKind, LoadEventPublic

CELLS = ["cell-1", "cell-2", "cell-3"]
PLACEMENT_TABLE = "relay-test-placements"
NOW = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)


class FakeTime:
    """The mover's wall clock and its wait: a wait moves the clock, and is recorded."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


class Crash(Exception):
    pass


def crash_at(step: str):
    def on_step(name: str) -> None:
        if name == step:
            raise Crash(step)

    return on_step


class Cluster:
    """Three loads cells and a placement table in moto, and the module's code on each."""

    def __init__(self) -> None:
        self.dynamodb = boto3.resource("dynamodb", region_name="us-east-1")
        self.client = boto3.client("dynamodb", region_name="us-east-1")
        self.queue = boto3.client("sqs", region_name="us-east-1").create_queue(
            QueueName="notifications"
        )["QueueUrl"]
        resources = load_template(ROOT / "modules" / "loads" / "template.yaml")["Resources"]
        self.tables: dict[str, LoadsCellTables] = {}
        for cell in CELLS:
            for logical_id in CELL_TABLE_RESOURCES.values():
                props = resources[logical_id]["Properties"]
                kwargs: dict[str, Any] = {
                    "TableName": f"relay-{cell}-{logical_id}",
                    "KeySchema": props["KeySchema"],
                    "AttributeDefinitions": props["AttributeDefinitions"],
                    "BillingMode": "PAY_PER_REQUEST",
                }
                if props.get("GlobalSecondaryIndexes"):
                    kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
                self.client.create_table(**kwargs)
            self.tables[cell] = LoadsCellTables(
                **{kind: local_table_name(cell, kind) for kind in CELL_TABLE_RESOURCES}
            )
        # template.yaml's CellPlacementTable (gateway/cells/placement.py): module, key
        self.client.create_table(
            TableName=PLACEMENT_TABLE,
            KeySchema=[
                {"AttributeName": "module", "KeyType": "HASH"},
                {"AttributeName": "key", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "module", "AttributeType": "S"},
                {"AttributeName": "key", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        self.placements = PlacementTable(PLACEMENT_TABLE, dynamodb=self.dynamodb)
        self.time = FakeTime()
        self.said: list[str] = []

    def mover(self, **kwargs: Any) -> CellMover:
        return CellMover(
            "loads",
            self.tables,
            self.placements,
            self.dynamodb,
            clock=self.time.clock,
            sleep=self.time.sleep,
            say=self.said.append,
            **kwargs,
        )

    # --- the module's own code on one cell ---------------------------------------------

    def service(self, cell: str) -> LoadsService:
        tables = self.tables[cell]
        settings = LoadsSettings(
            loads_table=tables.loads,
            load_events_table=tables.events,
            notifications_queue_url=self.queue,
            idempotency_table=tables.idempotency,
        )
        return LoadsService(
            LoadsRepository(settings, dynamodb=self.dynamodb, sqs=boto3.client("sqs")),
            clock=lambda: NOW,
        )

    def report(
        self, cell: str, driver: str, load_id: str, kind: LoadEventKind, stop: int, key: str
    ) -> tuple[LoadEventPublic, bool]:
        """A driver's keyed event POST as the loads app runs it: through the cell's
        idempotency store (the record) and service (the event and the load's key)."""
        event = LoadEventCreate(kind=kind, stop_seq=stop)
        store = IdempotencyStore(
            self.tables[cell].idempotency, prefix="loads", dynamodb=self.client
        )
        svc = self.service(cell)
        return store.run(
            LoadEventPublic,
            lambda: svc.record_event(driver, load_id, event, idempotency_key=key),
            scope=f"{driver}:POST /loads/{{load_id}}/events:{key}",
            request={"path": {"load_id": load_id}, "body": event},
        )

    def seed(self, cell: str, driver: str) -> None:
        """Two loads of ``driver`` in ``cell``, the first with two keyed events."""
        svc = self.service(cell)
        svc.assign(assignment("L-1", driver, ["F-CHI", "F-IND"], NOW))
        svc.assign(assignment("L-2", driver, ["F-IND", "F-DET"], NOW))
        self.report(cell, driver, "L-1", LoadEventKind.ARRIVED, 1, "key-arrived-1")
        self.report(cell, driver, "L-1", LoadEventKind.DEPARTED, 1, "key-departed-1")

    # --- what a cell holds ---------------------------------------------------------------

    def snapshot(self, cell: str, driver: str) -> dict[str, Any]:
        data = self.mover().data(cell)
        loads = data.loads(driver)
        return {
            "loads": loads,
            "events": {str(x["load_id"]): data.events(str(x["load_id"])) for x in loads},
            "records": sorted(data.records(driver), key=lambda r: str(r["id"])),
        }

    def placement(self, key: str) -> Placement | None:
        return self.placements.get("loads", key)


@pytest.fixture
def cluster(aws) -> Cluster:
    return Cluster()


def _driver_in(cell: str) -> str:
    """A driver whose default cell is ``cell``."""
    return next(d for d in (f"D-{n}" for n in range(1000, 2000)) if default_cell(d, CELLS) == cell)


DRIVER = "D-1001"


def test_a_move_copies_the_data_flips_the_placement_and_empties_the_source(cluster: Cluster):
    driver = _driver_in("cell-1")
    cluster.seed("cell-1", driver)
    before = cluster.snapshot("cell-1", driver)
    assert len(before["loads"]) == 2
    assert len(before["events"]["L-1"]) == 2
    assert len(before["records"]) == 2  # the two keyed events' Powertools records

    result = cluster.mover().move(driver, "cell-2", reason="rebalance", by="ops-test")

    assert (result.source, result.target) == ("cell-1", "cell-2")
    assert (result.loads, result.events, result.records, result.deleted) == (2, 2, 2, 2)
    placement = cluster.placement(driver)
    assert placement is not None
    assert (placement.cell, placement.state, placement.to) == ("cell-2", "placed", None)
    assert placement.revision == 2  # 1: moving, 2: placed
    assert (placement.reason, placement.updated_by) == ("rebalance", "ops-test")
    assert cluster.snapshot("cell-2", driver) == before
    assert cluster.snapshot("cell-1", driver) == {"loads": [], "events": {}, "records": []}
    assert cluster.snapshot("cell-3", driver)["loads"] == []
    # Every gateway saw it moving before the copy, and placed before the source was emptied.
    assert cluster.time.waits == [SETTLE_SECONDS, SETTLE_SECONDS]


def test_a_retried_write_after_a_move_is_applied_once_in_the_new_cell(cluster: Cluster):
    driver = _driver_in("cell-1")
    cluster.seed("cell-1", driver)
    first, _ = cluster.report("cell-1", driver, "L-1", LoadEventKind.ARRIVED, 2, "key-arrived-2")
    cluster.mover().move(driver, "cell-3", reason="rebalance", by="ops-test")

    # The phone retries with the same key, now routed to cell-3: the copied record replays.
    again, replayed = cluster.report(
        "cell-3", driver, "L-1", LoadEventKind.ARRIVED, 2, "key-arrived-2"
    )
    assert replayed
    assert again == first
    # Without the record (expired), the load's copied event keys answer the recorded event.
    data = cluster.mover().data("cell-3")
    for record in data.records(driver):
        data.delete_record(record)
    again, replayed = cluster.report(
        "cell-3", driver, "L-1", LoadEventKind.ARRIVED, 2, "key-arrived-2"
    )
    assert not replayed
    assert again.seq == first.seq
    assert len(data.events("L-1")) == 3  # arrived 1, departed 1, arrived 2: once each
    # A new key is a new event, applied in the new cell.
    nxt, _ = cluster.report("cell-3", driver, "L-1", LoadEventKind.DELIVERED, 2, "key-delivered")
    assert nxt.seq == 4


def test_a_move_that_died_between_copy_and_flip_finishes_on_rerun(cluster: Cluster):
    driver = _driver_in("cell-1")
    cluster.seed("cell-1", driver)
    before = cluster.snapshot("cell-1", driver)

    with pytest.raises(Crash):
        cluster.mover(on_step=crash_at("verified")).move(
            driver, "cell-2", reason="rebalance", by="ops-test"
        )
    moving = cluster.placement(driver)
    assert moving is not None
    assert (moving.state, moving.cell, moving.to, moving.revision) == (
        "moving",
        "cell-1",
        "cell-2",
        1,
    )
    assert cluster.snapshot("cell-1", driver) == before  # the source is untouched
    assert cluster.snapshot("cell-2", driver) == before  # copied, not yet placed

    cluster.time.now += 1.5  # the operator reruns it a little later
    result = cluster.mover().move(driver, "cell-2", reason="rebalance", by="ops-test")

    assert result.resumed
    assert (result.loads, result.events, result.records) == (2, 2, 2)  # found copied
    assert cluster.snapshot("cell-2", driver) == before  # no duplicates
    assert cluster.snapshot("cell-1", driver)["loads"] == []
    placement = cluster.placement(driver)
    assert placement is not None
    assert (placement.state, placement.cell, placement.revision) == ("placed", "cell-2", 2)
    # The rerun waited only what was left of the first wait (the first had waited it all).
    assert cluster.time.waits == [SETTLE_SECONDS, SETTLE_SECONDS]


def test_a_move_that_died_after_its_flip_is_cleaned_up_by_a_rerun(cluster: Cluster):
    driver = _driver_in("cell-1")
    cluster.seed("cell-1", driver)
    before = cluster.snapshot("cell-1", driver)
    with pytest.raises(Crash):
        cluster.mover(on_step=crash_at("placed")).move(
            driver, "cell-2", reason="rebalance", by="ops-test"
        )
    assert cluster.snapshot("cell-1", driver) == before  # a stale duplicate, until the rerun

    result = cluster.mover().move(driver, "cell-2", reason="rebalance", by="ops-test")

    assert result.noop
    assert result.deleted == 2
    assert cluster.snapshot("cell-1", driver) == {"loads": [], "events": {}, "records": []}
    assert cluster.snapshot("cell-2", driver) == before
    assert any("stopped" in line for line in cluster.said)


def test_a_late_write_in_the_source_after_the_copy_is_copied_by_the_rerun(cluster: Cluster):
    """A delivery stalled in storage past every deadline lands in the old cell after the
    copy: the verify fails, and the rerun replaces the copy with the source's."""
    driver = _driver_in("cell-1")
    cluster.seed("cell-1", driver)

    def late_write(step: str) -> None:
        if step == "copied":
            cluster.report("cell-1", driver, "L-2", LoadEventKind.ARRIVED, 1, "key-late")

    with pytest.raises(CellsError, match="verify: load L-2 in cell-2 is not cell-1's"):
        cluster.mover(on_step=late_write).move(driver, "cell-2", reason="r", by="x")
    before = cluster.snapshot("cell-1", driver)

    result = cluster.mover().move(driver, "cell-2", reason="r", by="x")

    assert result.resumed
    assert cluster.snapshot("cell-2", driver) == before  # the late event included
    assert len(before["events"]["L-2"]) == 1
    assert cluster.snapshot("cell-1", driver)["loads"] == []
    assert any("replaced by the source's" in line for line in cluster.said)


def test_a_load_changed_in_the_source_after_the_flip_is_left_there(cluster: Cluster):
    driver = _driver_in("cell-1")
    cluster.seed("cell-1", driver)

    def late_write(step: str) -> None:
        if step == "placed":
            cluster.report("cell-1", driver, "L-2", LoadEventKind.ARRIVED, 1, "key-late")

    result = cluster.mover(on_step=late_write).move(driver, "cell-2", reason="r", by="x")

    assert result.deleted == 1  # L-1; L-2 is newer in cell-1 than the copy: not deleted
    left = cluster.snapshot("cell-1", driver)
    assert [x["load_id"] for x in left["loads"]] == ["L-2"]
    assert len(left["events"]["L-2"]) == 1
    assert any("still holds load(s) L-2" in line for line in cluster.said)


def test_a_concurrent_placement_write_stops_the_move_and_deletes_nothing(cluster: Cluster):
    driver = _driver_in("cell-1")
    cluster.seed("cell-1", driver)
    before = cluster.snapshot("cell-1", driver)

    def operator_writes(step: str) -> None:
        if step == "verified":  # another operator puts the key back in cell-1 meanwhile
            moving = cluster.placement(driver)
            assert moving is not None
            cluster.placements.put(
                replace(moving, state="placed", to=None, updated_by="other-operator"),
                expected_revision=moving.revision,
            )

    with pytest.raises(PlacementChanged, match="placement changed during the move") as raised:
        cluster.mover(on_step=operator_writes).move(
            driver, "cell-2", reason="rebalance", by="ops-test"
        )
    assert "placed in cell-1, revision 2, by other-operator" in str(raised.value)
    placement = cluster.placement(driver)
    assert placement is not None
    assert (placement.cell, placement.state, placement.revision) == ("cell-1", "placed", 2)
    assert cluster.snapshot("cell-1", driver) == before  # where the key is read: complete

    # The copies left in cell-2 go with a move to where the key is placed.
    result = cluster.mover().move(driver, "cell-1", reason="tidy", by="ops-test")
    assert result.noop
    assert cluster.snapshot("cell-2", driver)["loads"] == []
    assert cluster.snapshot("cell-1", driver) == before


def test_a_placement_written_before_the_move_starts_stops_it_before_any_copy(cluster: Cluster):
    driver = _driver_in("cell-1")
    cluster.seed("cell-1", driver)
    stale = cluster.placements.get

    class Racing(PlacementTable):
        def get(self, module: str, key: str) -> Placement | None:
            found = stale(module, key)
            cluster.placements.put(  # another write lands between our read and our write
                Placement("loads", key, "cell-1", updated_by="other-operator"),
                expected_revision=None if found is None else found.revision,
            )
            return found

    mover = CellMover(
        "loads",
        cluster.tables,
        Racing(PLACEMENT_TABLE, dynamodb=cluster.dynamodb),
        cluster.dynamodb,
        clock=cluster.time.clock,
        sleep=cluster.time.sleep,
    )
    with pytest.raises(PlacementChanged, match="nothing was copied"):
        mover.move(driver, "cell-2", reason="rebalance", by="ops-test")
    assert cluster.snapshot("cell-2", driver)["loads"] == []
    assert cluster.time.waits == []


def test_a_move_to_the_cell_the_key_is_in_is_a_no_op(cluster: Cluster):
    driver = _driver_in("cell-2")
    cluster.seed("cell-2", driver)
    before = cluster.snapshot("cell-2", driver)

    result = cluster.mover().move(driver, "cell-2", reason="why not", by="ops-test")

    assert result.noop
    assert cluster.placement(driver) is None  # nothing written
    assert cluster.time.waits == []
    assert cluster.snapshot("cell-2", driver) == before
    assert cluster.said == [f"loads key {driver} is in cell-2 already: nothing to do"]


def test_unknown_module_and_cell_are_refused(cluster: Cluster):
    with pytest.raises(CellsError, match="unknown celled module 'gatepass'"):
        CellMover("gatepass", cluster.tables, cluster.placements, cluster.dynamodb)
    with pytest.raises(CellsError, match="unknown cell 'cell-9' of loads"):
        cluster.mover().move(DRIVER, "cell-9", reason="x", by="y")


def test_a_second_move_to_another_cell_waits_for_the_first(cluster: Cluster):
    driver = _driver_in("cell-1")
    cluster.seed("cell-1", driver)
    with pytest.raises(Crash):
        cluster.mover(on_step=crash_at("moving")).move(driver, "cell-2", reason="a", by="x")
    with pytest.raises(CellsError, match="already moving from cell-1 to cell-2"):
        cluster.mover().move(driver, "cell-3", reason="b", by="y")


def test_abort_places_the_key_back_and_removes_the_copies(cluster: Cluster):
    driver = _driver_in("cell-1")
    cluster.seed("cell-1", driver)
    before = cluster.snapshot("cell-1", driver)
    with pytest.raises(Crash):
        cluster.mover(on_step=crash_at("copied")).move(driver, "cell-2", reason="a", by="x")

    result = cluster.mover().abort(driver, reason="changed my mind", by="x")

    assert result.aborted
    placement = cluster.placement(driver)
    assert placement is not None
    assert (placement.cell, placement.state, placement.to) == ("cell-1", "placed", None)
    assert cluster.snapshot("cell-1", driver) == before
    assert cluster.snapshot("cell-2", driver) == {"loads": [], "events": {}, "records": []}
    with pytest.raises(CellsError, match="is not moving"):
        cluster.mover().abort(driver, reason="again", by="x")


def test_place_is_for_a_key_without_data(cluster: Cluster):
    driver = _driver_in("cell-1")
    cluster.seed("cell-1", driver)
    with pytest.raises(CellsError, match="use `relay cells move loads"):
        cluster.mover().place(driver, "cell-2", reason="new", by="x")
    assert cluster.placement(driver) is None

    new = _driver_in("cell-3")
    result = cluster.mover().place(new, "cell-1", reason="onboarding", by="x")
    placement = cluster.placement(new)
    assert placement is not None
    assert (placement.cell, placement.state) == ("cell-1", "placed")
    assert result.loads == 0
    assert cluster.time.waits == [SETTLE_SECONDS]  # in-flight writes to cell-3 had ended


def test_a_load_id_held_by_another_driver_in_the_target_is_refused(cluster: Cluster):
    driver, other = _driver_in("cell-1"), _driver_in("cell-2")
    cluster.seed("cell-1", driver)
    cluster.service("cell-2").assign(assignment("L-2", other, ["F-CHI", "F-IND"], NOW))
    with pytest.raises(CellsError, match=r"load L-2 of .* exists in cell-2 as another driver's"):
        cluster.mover().move(driver, "cell-2", reason="x", by="y")
    assert cluster.placement(driver) is None


def test_the_tables_are_looked_up_in_ssm(aws):
    ssm = boto3.client("ssm", region_name="us-east-1")
    for cell in ("cell-1", "cell-2", "cell-10"):
        ssm.put_parameter(
            Name=f"/relay/local/loads/{cell}/table-name",
            Value=f"relay-{cell}-LoadsTable",
            Type="String",
        )
    ssm.put_parameter(
        Name="/relay/local/loads/cell-2/load-events-table-name", Value="events-2", Type="String"
    )
    ssm.put_parameter(Name="/relay/local/loads/url", Value="http://x", Type="String")

    found = published_cells("local", "loads", ssm=ssm, fallback=local_table_name)
    assert list(found) == ["cell-1", "cell-2", "cell-10"]
    assert found["cell-2"] == LoadsCellTables(
        loads="relay-cell-2-LoadsTable",
        events="events-2",
        idempotency="relay-cell-2-LoadsIdempotencyTable",
    )
    assert list(published_cells("local", "loads", ssm=ssm, cells=["cell-2", "cell-1"],
                                fallback=local_table_name)) == ["cell-1", "cell-2"]  # fmt: skip
    with pytest.raises(CellsError, match="cell-3 publish no"):
        published_cells("local", "loads", ssm=ssm, cells=["cell-3"], fallback=local_table_name)
    with pytest.raises(CellsError, match="cell-1/load-events-table-name does not exist"):
        published_cells("local", "loads", ssm=ssm)
    with pytest.raises(CellsError, match="no cell of loads"):
        published_cells("prod", "loads", ssm=ssm)


def test_the_command_line(cluster: Cluster, monkeypatch: pytest.MonkeyPatch):
    driver = _driver_in("cell-1")
    cluster.seed("cell-1", driver)

    def mover(module: str, target: Any, stage: Any, **kwargs: Any) -> CellMover:
        if module != "loads":
            raise CellsError(f"unknown celled module {module!r}")
        return cluster.mover(**{k: v for k, v in kwargs.items() if k != "say"})

    monkeypatch.setattr(cells_module, "_mover", mover)
    runner = CliRunner()
    app = cells_module.cells_app

    moved = runner.invoke(app, ["move", "loads", driver, "--to", "cell-2", "--reason", "r"])
    assert moved.exit_code == 0, moved.output
    assert f"loads {driver}: moved from cell-1 to cell-2 (2 load(s)" in moved.output

    shown = runner.invoke(app, ["show", "loads", "--driver", driver])
    assert shown.exit_code == 0, shown.output
    assert "loads: 3 cell(s): cell-1 cell-2 cell-3" in shown.output
    assert f"{driver}: read from cell-2 (placed, revision 2); loads in: cell-2 (2)" in shown.output
    assert "moving: none" in shown.output

    refused = runner.invoke(app, ["move", "loads", driver, "--to", "cell-7", "--reason", "r"])
    assert refused.exit_code == 1
    assert "unknown cell 'cell-7'" in refused.output
    usage = runner.invoke(app, ["move", "loads", driver, "--reason", "r"])
    assert usage.exit_code == 2
    assert "give --to <cell>, or --abort" in usage.output


def test_relay_cells_move_on_a_local_celled_stage(
    emulator_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
):
    """`relay cells` as the local stack runs it: the stage deployed celled from the
    templates into the emulator, stack.json naming it; the CLI finds the cells, their tables
    and the placement table itself, and moves a driver."""
    import inspect
    import json

    from relay import stack
    from relay.cloud import LocalCloud
    from tests.conftest import TEST_IDENTITY_PUBLIC_KEY

    if "cells" not in inspect.signature(LocalCloud.deploy_system).parameters:
        pytest.skip("this tree's local deployer has no celled stages")
    cloud = LocalCloud(endpoint_url=emulator_url)
    root = cloud.deploy_system(
        parameters={"Stage": "local", "IdentityPublicKey": TEST_IDENTITY_PUBLIC_KEY}, cells=3
    )
    # cell-1's tables as its function gets them (named by the template, relay-local-loads-...)
    cell_1 = cloud.function_env(root.cells()["cell-1"], "LoadsFunction")
    (tmp_path / "stack.json").write_text(
        json.dumps({"emulator_url": emulator_url, "cells": {"loads": CELLS}})
    )
    monkeypatch.setattr(stack, "STATE_DIR", tmp_path)
    dynamodb = boto3.resource("dynamodb", endpoint_url=emulator_url)
    sqs = boto3.client("sqs", endpoint_url=emulator_url)
    driver = _driver_in("cell-1")
    settings = LoadsSettings(
        loads_table=cell_1["LOADS_TABLE"],
        load_events_table=cell_1["LOAD_EVENTS_TABLE"],
        idempotency_table=cell_1["IDEMPOTENCY_TABLE"],
        notifications_queue_url=sqs.create_queue(QueueName="test")["QueueUrl"],
    )
    svc = LoadsService(LoadsRepository(settings, dynamodb=dynamodb, sqs=sqs), clock=lambda: NOW)
    svc.assign(assignment("L-1", driver, ["F-CHI", "F-IND"], NOW))
    svc.record_event(
        driver, "L-1", LoadEventCreate(kind=LoadEventKind.ARRIVED, stop_seq=1), idempotency_key="k1"
    )
    monkeypatch.setattr(cells_module, "SETTLE_SECONDS", 0.0)  # no gateway runs here
    runner = CliRunner()
    app = cells_module.cells_app

    shown = runner.invoke(app, ["show", "loads", "--driver", driver])
    assert shown.exit_code == 0, shown.output
    assert "loads: 3 cell(s): cell-1 cell-2 cell-3" in shown.output
    assert f"{driver}: read from cell-1 (default); loads in: cell-1 (1)" in shown.output

    moved = runner.invoke(
        app, ["move", "loads", driver, "--to", "cell-3", "--reason", "test", "--by", "me"]
    )
    assert moved.exit_code == 0, moved.output
    assert "moved from cell-1 to cell-3 (1 load(s), 1 event(s)" in moved.output

    shown = runner.invoke(app, ["show", "loads", "--driver", driver])
    assert f"{driver}: read from cell-3 (placed, revision 2); loads in: cell-3 (1)" in shown.output
    assert f"  {driver:<16} cell-3     placed  -             2  me / test" in shown.output

    aws = runner.invoke(app, ["show", "loads", "--stage", "prod"])
    assert aws.exit_code == 2
    assert "only with --target aws" in aws.output


def test_relay_cells_on_an_aws_stage(cluster: Cluster, monkeypatch: pytest.MonkeyPatch):
    """`--target aws --stage S`: the gateway function's cells, each cell's tables from its
    parameters or else its stack, the placement table from the gateway stack's parameter."""
    from relay.release import aws as release_aws

    ssm = boto3.client("ssm", region_name="us-east-1")
    parameters = {f"/relay/prod/loads/{c}/table-name": cluster.tables[c].loads for c in CELLS}
    parameters["/relay/prod/gateway/placement-table-name"] = PLACEMENT_TABLE
    parameters["/relay/prod/gateway/function-arn"] = "arn:gateway"
    for name, value in parameters.items():
        ssm.put_parameter(Name=name, Value=value, Type="String")
    asked: list[dict[str, str]] = []

    class Lambda:
        def get_function_configuration(self, **kwargs: str) -> dict[str, Any]:
            assert kwargs == {"FunctionName": "arn:gateway"}
            urls = ",".join(f"{c}=https://{c}.example" for c in CELLS)
            return {"Environment": {"Variables": {"RELAY_UPSTREAM_LOADS": urls}}}

    class CloudFormation:
        def describe_stack_resource(self, **kwargs: str) -> dict[str, Any]:
            asked.append(kwargs)
            cell = kwargs["StackName"].removeprefix("relay-prod-loads-")
            name = f"relay-{cell}-{kwargs['LogicalResourceId']}"
            return {"StackResourceDetail": {"PhysicalResourceId": name}}

    clients = {"ssm": ssm, "lambda": Lambda(), "cloudformation": CloudFormation()}
    monkeypatch.setattr(release_aws, "make_client", lambda service, region: clients[service])
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setattr(cells_module, "SETTLE_SECONDS", 0.0)
    driver = _driver_in("cell-2")
    cluster.seed("cell-2", driver)
    runner = CliRunner()
    app = cells_module.cells_app

    aws = ["--target", "aws", "--stage", "prod"]
    moved = runner.invoke(app, ["move", "loads", driver, "--to", "cell-1", "--reason", "r", *aws])
    assert moved.exit_code == 0, moved.output
    assert f"loads {driver}: moved from cell-2 to cell-1 (2 load(s)" in moved.output
    assert {"StackName": "relay-prod-loads-cell-3", "LogicalResourceId": "LoadEventsTable"} in asked
    shown = runner.invoke(app, ["show", *aws, "--driver", driver])
    assert f"{driver}: read from cell-1 (placed, revision 2); loads in: cell-1 (2)" in shown.output
    no_stage = runner.invoke(app, ["show", "--target", "aws"])
    assert no_stage.exit_code == 2
    assert "required with --target aws" in no_stage.output
