"""Loads API against moto: assignment, reads, the event state machine, authorization."""

from __future__ import annotations

import json

import boto3
import pytest
from fastapi.testclient import TestClient

from module_kit.etag import entity_tag
from modules.loads.app import create_app
from modules.loads.config import LoadsSettings
from modules.loads.repository import LoadsRepository
from modules.loads.service import LoadsService
from relay import demo
from shared_contracts.identity import Role
from tests.conftest import identity_header_for

identity_header = identity_header_for("loads")

DRIVER = identity_header(Role.DRIVER, "D-1001")
OTHER = identity_header(Role.DRIVER, "D-1002")
DISPATCH = identity_header(Role.DISPATCH, None)


@pytest.fixture
def env(deployed, monkeypatch):
    return deployed.use_env(monkeypatch, "LoadsFunction")


@pytest.fixture
def client(env, clock):
    service = LoadsService(LoadsRepository(LoadsSettings()), clock=clock)
    return TestClient(create_app(service=service))


def assign(client, clock, load_id="L-1", driver="D-1001", route=("F-CHI", "F-IND")):
    body = demo.assignment(load_id, driver, list(route), clock.now).model_dump(mode="json")
    return client.post("/dispatch/assignments", json=body, headers=DISPATCH)


def test_assigned_load_is_listed_for_its_driver_only(client, clock):
    # GIVEN a load assigned to D-1001
    assert assign(client, clock).status_code == 201
    # WHEN each driver lists their loads
    mine = client.get("/loads", headers=DRIVER).json()["items"]
    theirs = client.get("/loads", headers=OTHER).json()["items"]
    # THEN only D-1001 sees it
    assert [ld["load_id"] for ld in mine] == ["L-1"]
    assert theirs == []


def test_assignment_queues_a_notification(client, clock, env):
    assign(client, clock)
    sqs = boto3.client("sqs")
    msgs = sqs.receive_message(QueueUrl=env["NOTIFICATIONS_QUEUE_URL"], MaxNumberOfMessages=10)[
        "Messages"
    ]
    body = json.loads(msgs[0]["Body"])
    assert body["kind"] == "load_assigned" and body["driver_id"] == "D-1001"
    assert body["data"] == {"load_id": "L-1"}


def test_same_load_cannot_be_assigned_twice(client, clock):
    assign(client, clock)
    r = assign(client, clock, driver="D-1002")
    assert r.status_code == 409
    assert r.json()["type"] == "urn:relay:problem:already-assigned"


def test_another_drivers_load_is_not_found(client, clock):
    assign(client, clock)
    r = client.get("/loads/L-1", headers=OTHER)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert "D-1001" not in r.text
    r = client.post("/loads/L-1/events", json={"kind": "arrived", "stop_seq": 1}, headers=OTHER)
    assert r.status_code == 404


def test_full_trip_follows_the_state_machine(client, clock):
    assign(client, clock, route=("F-CHI", "F-IND", "F-CMH"))
    steps = [
        ("arrived", 1, "at_stop", 1),
        ("departed", 1, "in_transit", 2),
        ("arrived", 2, "at_stop", 2),
        ("departed", 2, "in_transit", 3),
        ("arrived", 3, "at_stop", 3),
        ("delivered", 3, "delivered", 3),
    ]
    for seq, (kind, stop, status, current) in enumerate(steps, 1):
        clock.advance(minutes=30)
        r = client.post("/loads/L-1/events", json={"kind": kind, "stop_seq": stop}, headers=DRIVER)
        assert r.status_code == 201, r.text
        assert r.json()["seq"] == seq
        assert (r.json()["load"]["status"], r.json()["load"]["current_stop"]) == (status, current)
    load = client.get("/loads/L-1", headers=DRIVER).json()
    assert load["status"] == "delivered" and load["version"] == 7
    assert load["stops"][0]["arrived_at"] is not None


@pytest.mark.parametrize(
    ("events", "bad", "code"),
    [
        ([], {"kind": "departed", "stop_seq": 1}, 409),  # not arrived yet
        ([], {"kind": "arrived", "stop_seq": 2}, 409),  # skipping a stop
        ([("arrived", 1)], {"kind": "arrived", "stop_seq": 1}, 409),  # arrived twice
        ([("arrived", 1)], {"kind": "delivered", "stop_seq": 1}, 409),  # delivered at pickup
        (
            [("arrived", 1), ("departed", 1), ("arrived", 2), ("delivered", 2)],
            {"kind": "arrived", "stop_seq": 2},
            409,
        ),  # after delivery
        ([], {"kind": "arrived", "stop_seq": 9}, 422),  # no such stop
    ],
)
def test_invalid_transitions_are_refused_clearly(client, clock, events, bad, code):
    assign(client, clock)
    for kind, stop in events:
        assert (
            client.post(
                "/loads/L-1/events", json={"kind": kind, "stop_seq": stop}, headers=DRIVER
            ).status_code
            == 201
        )
    r = client.post("/loads/L-1/events", json=bad, headers=DRIVER)
    assert r.status_code == code
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == code and r.json()["detail"]


def test_event_in_the_future_is_refused(client, clock):
    assign(client, clock)
    future = (clock.now.replace(year=2027)).isoformat()
    r = client.post(
        "/loads/L-1/events",
        json={"kind": "arrived", "stop_seq": 1, "occurred_at": future},
        headers=DRIVER,
    )
    assert r.status_code == 422


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b'{"kind": "arrived", "stop_seq": 1, "extra": 1}', "application/json", 422),
        (b'{"kind": "teleported", "stop_seq": 1}', "application/json", 422),
        (b'{"kind": "arrived", "stop_seq": 1}', "text/plain", 415),
        (
            b'{"kind": "arrived", "stop_seq": 1, "note": "' + b"x" * 70000 + b'"}',
            "application/json",
            413,
        ),
    ],
)
def test_bad_input_gets_a_problem_envelope(client, clock, body, content_type, status):
    assign(client, clock)
    r = client.post(
        "/loads/L-1/events", content=body, headers={**DRIVER, "content-type": content_type}
    )
    assert r.status_code == status
    problem = r.json()
    assert problem["status"] == status and problem["type"].startswith("urn:relay:problem:")
    assert problem["request_id"] == r.headers["x-request-id"]


def test_module_refuses_calls_without_the_gateway_identity(client):
    r = client.get("/loads")
    assert r.status_code == 401
    r = client.get("/loads", headers={"x-relay-identity": "garbage!"})
    assert r.status_code == 401


def test_drivers_cannot_assign_loads(client, clock):
    body = demo.assignment("L-9", "D-1001", ["F-CHI", "F-IND"], clock.now).model_dump(mode="json")
    r = client.post("/dispatch/assignments", json=body, headers=DRIVER)
    assert r.status_code == 403


# --- ETags: the module makes the validator the gateway passes on -------------------------


def test_reads_carry_the_strong_etag_of_their_exact_body(client, clock):
    # GIVEN a load assigned to D-1001
    assign(client, clock)
    for path in ("/loads", "/loads/L-1"):
        # WHEN the driver reads the list and the load
        r = client.get(path, headers=DRIVER)
        # THEN each 200 carries the tag of its bytes and content type, and the
        # revalidation headers the gateway would add
        assert r.status_code == 200
        assert r.headers["etag"] == entity_tag(r.content, b"application/json").decode(), path
        assert r.headers["cache-control"] == "private, no-cache"
        assert r.headers["vary"] == "Authorization"


def test_the_list_tag_changes_with_the_list_and_differs_per_driver(client, clock):
    empty = client.get("/loads", headers=DRIVER).headers["etag"]
    assert client.get("/loads", headers=DRIVER).headers["etag"] == empty  # same bytes
    assign(client, clock)
    one = client.get("/loads", headers=DRIVER).headers["etag"]
    assert one != empty
    assign(client, clock, load_id="L-2", driver="D-1002")
    assert client.get("/loads", headers=DRIVER).headers["etag"] == one  # not D-1001's
    assert client.get("/loads", headers=OTHER).headers["etag"] != one


def test_the_module_answers_if_none_match_with_the_full_list(client, clock):
    # The gateway answers conditionals and keeps the 200 as its last-known-good copy.
    assign(client, clock)
    tag = client.get("/loads", headers=DRIVER).headers["etag"]
    r = client.get("/loads", headers={**DRIVER, "if-none-match": tag})
    assert r.status_code == 200 and r.json()["items"] and r.headers["etag"] == tag


def test_writes_and_errors_carry_no_etag(client, clock):
    r = assign(client, clock)
    assert r.status_code == 201 and "etag" not in r.headers
    missing = client.get("/loads/L-9", headers=DRIVER)
    assert missing.status_code == 404 and "etag" not in missing.headers
    assert "cache-control" not in missing.headers
    assert "etag" not in client.get("/loads").headers  # 401
