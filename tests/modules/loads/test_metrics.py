"""The loads module's critical input/output metrics, as the EMF lines it writes (moto).

Assignments created and first seen live by their driver (once, with the delay), events
accepted on a live call and applied (live or from the gateway's deferred queue), pushes
enqueued.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from module_kit import metrics
from modules.loads.app import create_app
from modules.loads.config import LoadsSettings
from modules.loads.repository import LoadsRepository
from modules.loads.service import LoadsService
from relay import demo
from shared_contracts.identity import Role
from tests.conftest import identity_header_for
from tests.modules.captured_metrics import CapturedMetrics

identity_header = identity_header_for("loads")
DRIVER = identity_header(Role.DRIVER, "D-1001")
DISPATCH = identity_header(Role.DISPATCH, None)
REPLAYED = {metrics.REPLAY_HEADER: "1"}


@pytest.fixture(autouse=True)
def metrics_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)


@pytest.fixture
def emitted() -> CapturedMetrics:
    return CapturedMetrics()


@pytest.fixture
def service(deployed, monkeypatch, clock, emitted):
    deployed.use_env(monkeypatch, "LoadsFunction")
    writer = metrics.ModuleMetrics("loads", stream=emitted)
    return LoadsService(LoadsRepository(LoadsSettings()), clock=clock, metrics_writer=writer)


@pytest.fixture
def client(service):
    return TestClient(create_app(service=service))


def assign(client, clock, load_id="L-1", driver="D-1001"):
    body = demo.assignment(load_id, driver, ["F-CHI", "F-IND"], clock.now).model_dump(mode="json")
    return client.post("/dispatch/assignments", json=body, headers=DISPATCH)


def test_an_assignment_counts_created_and_its_push_enqueued(client, clock, emitted):
    assert assign(client, clock).status_code == 201
    assert emitted.values(metrics.ASSIGNMENTS_CREATED, service="loads") == [1.0]
    assert emitted.values(metrics.NOTIFICATIONS_ENQUEUED, service="loads") == [1.0]
    # a refused second assignment of the same load creates nothing
    assert assign(client, clock, driver="D-1002").status_code == 409
    assert emitted.values(metrics.ASSIGNMENTS_CREATED) == [1.0]


def test_the_first_live_read_marks_the_load_seen_once_with_the_delay(client, clock, emitted):
    # GIVEN a load assigned, first read by its driver 90 s later
    assign(client, clock)
    clock.advance(seconds=90)
    assert client.get("/loads", headers=DRIVER).status_code == 200
    # THEN it is seen once, live, 90 s after it was assigned
    assert emitted.values(metrics.ASSIGNMENTS_SEEN, via="live") == [1.0]
    assert emitted.values(metrics.ASSIGNMENT_SEEN_DELAY) == [90.0]
    # WHEN the driver reads it again, alone or in the list, later
    clock.advance(seconds=30)
    assert client.get("/loads/L-1", headers=DRIVER).status_code == 200
    assert client.get("/loads", headers=DRIVER).status_code == 200
    # THEN it is not seen again
    assert emitted.values(metrics.ASSIGNMENTS_SEEN) == [1.0]
    assert emitted.values(metrics.ASSIGNMENT_SEEN_DELAY) == [90.0]


def test_two_reads_racing_mark_the_load_seen_once(service, client, clock, emitted):
    # GIVEN two reads that both found the load unseen (a second process, a retry)
    assign(client, clock)
    stored = service.repository.list_stored_for_driver("D-1001")
    assert [s.seen for s in stored] == [False]
    # WHEN both mark it
    service._mark_seen(stored)
    service._mark_seen(stored)
    # THEN the conditional update lets one count it
    assert emitted.values(metrics.ASSIGNMENTS_SEEN) == [1.0]
    assert service.repository.list_stored_for_driver("D-1001")[0].seen


def test_a_load_read_only_after_its_first_event_is_never_counted_seen(client, clock, emitted):
    # GIVEN the driver reported arriving before any live read (they had it from a fallback)
    assign(client, clock)
    arrived = {"kind": "arrived", "stop_seq": 1}
    assert client.post("/loads/L-1/events", json=arrived, headers=DRIVER).status_code == 201
    # WHEN they read it live THEN it is not new any more: not counted
    client.get("/loads", headers=DRIVER)
    assert emitted.values(metrics.ASSIGNMENTS_SEEN) == []


def test_a_failure_to_mark_seen_never_fails_the_read(service, client, clock, emitted, monkeypatch):
    assign(client, clock)

    def broken(*args, **kwargs):
        raise RuntimeError("storage is down")

    monkeypatch.setattr(service.repository, "mark_seen", broken)
    assert client.get("/loads", headers=DRIVER).status_code == 200
    assert emitted.values(metrics.ASSIGNMENTS_SEEN) == []


def test_events_are_accepted_live_and_applied_by_way_in(client, clock, emitted):
    assign(client, clock)
    arrived = {"kind": "arrived", "stop_seq": 1}
    departed = {"kind": "departed", "stop_seq": 1}
    # WHEN one event comes live and one from the deferred queue
    assert client.post("/loads/L-1/events", json=arrived, headers=DRIVER).status_code == 201
    replayed = client.post("/loads/L-1/events", json=departed, headers={**DRIVER, **REPLAYED})
    assert replayed.status_code == 201
    # THEN only the live one was accepted here, and each is applied under its way in
    assert emitted.values(metrics.EVENTS_ACCEPTED, service="loads") == [1.0]
    assert emitted.values(metrics.EVENTS_APPLIED, via="live") == [1.0]
    assert emitted.values(metrics.EVENTS_APPLIED, via="replay") == [1.0]


def test_a_refused_or_repeated_event_is_not_applied_again(client, clock, emitted):
    assign(client, clock)
    keyed = {**DRIVER, "Idempotency-Key": "key-00000001"}
    arrived = {"kind": "arrived", "stop_seq": 1}
    assert client.post("/loads/L-1/events", json=arrived, headers=keyed).status_code == 201
    # the same write again (a retry) answers the first result; an invalid one is refused
    assert client.post("/loads/L-1/events", json=arrived, headers=keyed).status_code == 201
    delivered = {"kind": "delivered", "stop_seq": 1}
    assert client.post("/loads/L-1/events", json=delivered, headers=DRIVER).status_code == 409
    assert emitted.values(metrics.EVENTS_APPLIED) == [1.0]
    assert emitted.values(metrics.EVENTS_ACCEPTED) == [1.0]
