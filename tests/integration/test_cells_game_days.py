"""Cell game days: loads runs as 2 cells (`relay dev --cells 2`); one cell fails, in three
ugly ways, and only its own drivers notice.

1. cell-1 black-holed (accepts, never answers): cell-2's drivers get 100% live answers at
   the latency they had before; cell-1's drivers get their loads from the fallback.
2. A poison request (a build of cell-1 that crashes on one load id) kills cell-1's process:
   cell-2 answers every request live throughout.
3. cell-1's loads table deleted: cell-1's module answers 500s, its breaker opens, its
   drivers get the fallback; cell-2 never notices.

And a driver moved from cell-1 to cell-2 (`relay cells move`) while they report events:
the events sent during the move are deferred (202) and then applied in cell-2, once each,
in order; nothing is left in cell-1.

Each driver's cell is the placement's default (`default_cell`), so the test picks drivers
of each cell; each driver has one load, read once live before the fault (so the app, the
gateway's copy and the fallback store have it).
"""

from __future__ import annotations

import json
import statistics
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from subprocess import CompletedProcess

import httpx
import pytest
from boto3.dynamodb.conditions import Key

from gateway.cells.placement import default_cell
from relay import demo
from relay.release.faulty import faulty_version
from relay.stack import LocalStack, free_port
from shared_contracts.degraded import DegradedMarker, FallbackKind
from shared_contracts.identity import Role
from tests.integration.conftest import Api, run_relay, wait_until

CELLS = ["cell-1", "cell-2"]
ROUTE = ["F-CHI", "F-IND"]
CANDIDATES = [f"D-{n}" for n in range(7100, 7160)]
PER_CELL = 5
BAD, GOOD = "loads/cell-1", "loads/cell-2"
# A build of loads that kills its own process on one load id: the poison request.
POISON_LOAD = "L-7999"
CRASH = (
    f"if {POISON_LOAD!r} in request.url.path:\n"
    "                import os\n"
    "                os._exit(70)"
)


def drivers_of(cell: str) -> list[str]:
    return [d for d in CANDIDATES if default_cell(d, CELLS) == cell][:PER_CELL]


BAD_DRIVERS, GOOD_DRIVERS = drivers_of("cell-1"), drivers_of("cell-2")
LOAD_OF = {d: f"L-{d[2:]}" for d in BAD_DRIVERS + GOOD_DRIVERS}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(
        gateway_port=free_port(),
        state_dir=tmp_path_factory.mktemp("relay"),
        event_source_backoff=(1, 2),
        cells=2,
    ) as s:
        yield s


@pytest.fixture(scope="module")
def api(stack: LocalStack) -> Iterator[Api]:
    client = Api(stack)
    # every driver has a load in their cell, read once live (the app and the copies hold it)
    for driver, load_id in LOAD_OF.items():
        body = demo.assignment(load_id, driver, ROUTE, datetime.now(UTC)).model_dump(mode="json")
        r = client.http.post("/dispatch/assignments", json=body, headers=client.auth(Role.DISPATCH))
        assert r.status_code == 201, r.text
        r = client.http.get("/loads", headers=client.auth(Role.DRIVER, driver))
        assert r.status_code == 200 and "relay-degraded" not in r.headers, r.text
        assert [ld["load_id"] for ld in r.json()["items"]] == [load_id]
    yield client
    client.http.close()


def read(api: Api, driver: str) -> httpx.Response:
    with httpx.Client(base_url=api.stack.gateway_url, timeout=10) as c:
        return c.get("/loads", headers=api.auth(Role.DRIVER, driver))


def rounds(api: Api, drivers: list[str], n: int) -> list[httpx.Response]:
    return [
        api.http.get("/loads", headers=api.auth(Role.DRIVER, d)) for _ in range(n) for d in drivers
    ]


def live(r: httpx.Response) -> bool:
    return r.status_code == 200 and "relay-degraded" not in r.headers


def median_ms(answers: list[httpx.Response]) -> float:
    return statistics.median(r.elapsed.total_seconds() * 1000 for r in answers)


def status(api: Api) -> dict:
    r = api.http.get("/ops/status", headers=api.auth(Role.OPS))
    assert r.status_code == 200, r.text  # (ops may call twice a second)
    return r.json()


def cell_table(stack: LocalStack, unit: str) -> str:
    return stack.processes[unit].env["LOADS_TABLE"]


def serving_again(api: Api) -> None:
    """Before each game day: cell-1 answers its drivers live again (its breaker closed)."""
    assert wait_until(lambda: live(read(api, BAD_DRIVERS[0])), timeout=40, interval=1)


def assert_bad_cell_degraded(answers: list[httpx.Response], drivers: list[str]) -> None:
    for driver, r in zip(drivers, answers, strict=True):
        assert r.status_code == 200, (driver, r.status_code, r.text)
        assert [ld["load_id"] for ld in r.json()["items"]] == [LOAD_OF[driver]]
        marker = DegradedMarker.parse(r.headers["relay-degraded"])
        assert (marker.module, marker.fallback) == ("loads", FallbackKind.LAST_KNOWN_GOOD)


def test_cell_1_black_holed_only_its_drivers_get_fallbacks_and_cell_2_keeps_its_latency(api):
    serving_again(api)
    ops = api.auth(Role.OPS)
    # GIVEN cell-2's latency with both cells well
    before = rounds(api, GOOD_DRIVERS, 6)
    assert all(live(r) for r in before)

    # WHEN cell-1 is black-holed (accepts, never answers; self-expiring)
    fault = {"kind": "blackhole", "ttl_seconds": 120, "reason": "cell game day"}
    assert api.http.put(f"/ops/faults/{BAD}", json=fault, headers=ops).status_code == 200
    try:
        # ... while both cells' drivers read at once
        with ThreadPoolExecutor(max_workers=len(BAD_DRIVERS)) as pool:
            bad = [pool.submit(read, api, d) for d in BAD_DRIVERS]
            during = rounds(api, GOOD_DRIVERS, 6)
            bad_answers = [f.result() for f in bad]

        # THEN cell-2's drivers: every answer live, at the latency they had before
        assert all(live(r) for r in during), [r.status_code for r in during]
        assert max(r.elapsed.total_seconds() for r in during) < 1.0  # never a deadline
        assert median_ms(during) <= median_ms(before) + 100, (median_ms(before), median_ms(during))
        # AND cell-1's drivers get their own load from the fallback, marked degraded
        assert_bad_cell_degraded(bad_answers, BAD_DRIVERS)
        # AND once cell-1's breaker is open its drivers are answered without waiting
        for _ in range(5):
            read(api, BAD_DRIVERS[0])
        shown = status(api)
        assert shown["modules"][BAD]["breaker"]["state"] == "open"
        assert shown["modules"][GOOD]["breaker"]["state"] == "closed"
        assert shown["fallbacks_served"].get(f"{BAD}:last-known-good", 0) >= len(BAD_DRIVERS)
        assert f"{GOOD}:last-known-good" not in shown["fallbacks_served"]
        fast = read(api, BAD_DRIVERS[1])
        assert "relay-degraded" in fast.headers and fast.elapsed.total_seconds() < 1.0
    finally:
        assert api.http.delete(f"/ops/faults/{BAD}", headers=ops).status_code == 204


def test_a_poison_request_crashes_cell_1_and_cell_2_answers_every_request_live(
    api, stack, tmp_path: Path
):
    serving_again(api)
    cell = stack.processes[BAD]
    original = (cell.env, cell.cwd)
    # GIVEN cell-1 runs a build that crashes on one load id (a latent bug, a poison request)
    tree = faulty_version(tmp_path / "poison", "loads", CRASH)
    cell.env = {**cell.env, "PYTHONPATH": str(tree)}
    cell.cwd = tree
    stack.restart_process(BAD)
    try:
        serving_again(api)
        poisoner = BAD_DRIVERS[0]
        with ThreadPoolExecutor(max_workers=2) as pool:
            # WHEN one of cell-1's drivers sends the poison request
            poison = pool.submit(
                lambda: api.http.get(
                    f"/loads/{POISON_LOAD}", headers=api.auth(Role.DRIVER, poisoner)
                )
            )
            # ... while cell-2's drivers keep reading
            good = rounds(api, GOOD_DRIVERS, 4)
            poisoned = poison.result()
        # THEN cell-1's process is gone, and the poisoner got an answer, not a hang
        assert wait_until(lambda: not cell.running(), timeout=10)
        assert cell.exit_code == 70
        assert poisoned.status_code in (404, 503), poisoned.text
        # AND cell-2 answered every request live, before and after the crash
        good += rounds(api, GOOD_DRIVERS, 4)
        assert all(live(r) for r in good), [r.status_code for r in good]
        # AND cell-1's drivers get their loads from the fallback
        assert_bad_cell_degraded([read(api, d) for d in BAD_DRIVERS], BAD_DRIVERS)
    finally:
        cell.env, cell.cwd = original
        stack.restart_process(BAD)


def test_a_driver_moved_to_cell_2_keeps_every_event_sent_during_the_move(api, stack):
    serving_again(api)
    mover = _spare_driver("cell-1")
    load_id = f"L-{mover[2:]}"
    body = demo.assignment(load_id, mover, ROUTE, datetime.now(UTC)).model_dump(mode="json")
    r = api.http.post("/dispatch/assignments", json=body, headers=api.auth(Role.DISPATCH))
    assert r.status_code == 201, r.text
    driver = api.auth(Role.DRIVER, mover)
    trip = [("arrived", 1), ("departed", 1), ("arrived", 2)]

    def event(i: int) -> httpx.Response:
        kind, stop = trip[i]
        return api.http.post(
            f"/loads/{load_id}/events",
            json={"kind": kind, "stop_seq": stop},
            headers={**driver, "idempotency-key": f"move-{load_id}-{i}"},
        )

    # GIVEN the driver's first event applied live in cell-1
    assert event(0).status_code == 201
    # WHEN the driver is moved to cell-2
    moved: list[CompletedProcess] = []
    move = threading.Thread(
        target=lambda: moved.append(
            run_relay(
                stack,
                "cells",
                "move",
                "loads",
                mover,
                "--to",
                "cell-2",
                "--reason",
                "cell game day",
                timeout=120,
            )
        )
    )
    move.start()
    try:
        # ... and, once the gateway knows the driver is moving, they report two more events
        assert wait_until(
            lambda: mover in status(api)["cells"]["loads"]["moving"], timeout=20, interval=0.6
        )
        during = [event(1), event(2)]
        # THEN both are accepted for later (202), and reads still come live from cell-1
        assert [r.status_code for r in during] == [202, 202], [r.text for r in during]
        assert live(api.http.get("/loads", headers=driver))
    finally:
        move.join(timeout=150)
    assert moved and moved[0].returncode == 0, (moved[0].stdout, moved[0].stderr) if moved else None

    # AND once the move is done, all three events are in cell-2, once each, in order
    def events_in(unit: str) -> list[tuple[str, int]]:
        table = api.aws_resource("dynamodb").Table(stack.processes[unit].env["LOAD_EVENTS_TABLE"])
        items = table.query(KeyConditionExpression=Key("load_id").eq(load_id))["Items"]
        docs = [json.loads(i["doc"]) for i in sorted(items, key=lambda i: i["seq"])]
        return [(d["kind"], d["stop_seq"]) for d in docs]

    assert wait_until(lambda: len(events_in(GOOD)) >= 3, timeout=60, interval=0.5)
    assert events_in(GOOD) == trip
    assert events_in(BAD) == []  # nothing left behind in cell-1
    for r in during:
        state = api.http.get(r.json()["status_url"], headers=driver).json()
        assert state["state"] == "applied", state
    # AND the driver now reads their load, live, from cell-2
    after = api.http.get("/loads", headers=driver)
    assert live(after) and after.json()["items"][0]["load_id"] == load_id


def _spare_driver(cell: str) -> str:
    """A driver of ``cell`` not among the ones the other game days use."""
    return next(d for d in CANDIDATES if default_cell(d, CELLS) == cell and d not in LOAD_OF)


def test_cell_1_table_deleted_only_its_drivers_get_fallbacks(api, stack):
    serving_again(api)
    # GIVEN cell-1's loads table deleted (a broken table: the worst a cell's data can do)
    ddb = api.aws("dynamodb")
    table = cell_table(stack, BAD)
    ddb.update_table(TableName=table, DeletionProtectionEnabled=False)
    ddb.delete_table(TableName=table)
    # WHEN every driver reads, a few rounds (cell-1's module answers 500s; its breaker opens)
    bad = rounds(api, BAD_DRIVERS, 3)
    good = rounds(api, GOOD_DRIVERS, 3)
    # THEN cell-2's drivers see nothing: all live
    assert all(live(r) for r in good), [r.status_code for r in good]
    # AND cell-1's drivers get their own loads, degraded, every time
    assert_bad_cell_degraded(bad[-PER_CELL:], BAD_DRIVERS)
    assert all(r.status_code == 200 for r in bad)
    shown = status(api)
    assert shown["modules"][BAD]["breaker"]["state"] == "open"
    assert shown["modules"][GOOD]["breaker"]["state"] == "closed"
    # AND cell-2's table is untouched
    assert api.aws("dynamodb").describe_table(TableName=cell_table(stack, GOOD))["Table"]
