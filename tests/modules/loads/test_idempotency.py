"""Idempotent loads POSTs: a retried event or assignment is applied once and answered alike.

Writes are counted where they land: the load's version, the events table, the notification
queue and the idempotency table itself.
"""

from __future__ import annotations

import json
import threading
import time

import boto3
import pytest
from boto3.dynamodb.conditions import Key
from fastapi.testclient import TestClient
from mangum import Mangum

from module_kit.http import LAMBDA_TEXT_MIME_TYPES
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
ARRIVED = {"kind": "arrived", "stop_seq": 1}
DEPARTED = {"kind": "departed", "stop_seq": 1}


class HeldRepository(LoadsRepository):
    """Pauses inside the idempotent work, just before the event is written."""

    def __init__(self, settings: LoadsSettings) -> None:
        super().__init__(settings)
        self.inside = threading.Event()
        self.release = threading.Event()

    def save_event(self, event, expected_version, **kw):
        self.inside.set()
        assert self.release.wait(timeout=10), "the test never released the first request"
        super().save_event(event, expected_version, **kw)


@pytest.fixture
def env(deployed, monkeypatch):
    return deployed.use_env(monkeypatch, "LoadsFunction")


@pytest.fixture
def repository(env):
    return HeldRepository(LoadsSettings())


@pytest.fixture
def client(repository, clock):
    repository.release.set()  # not held unless a test clears it
    return TestClient(create_app(service=LoadsService(repository, clock=clock)))


def assign(client, clock, load_id="L-1", driver="D-1001", key=None):
    body = demo.assignment(load_id, driver, ["F-CHI", "F-IND"], clock.now).model_dump(mode="json")
    return client.post(
        "/dispatch/assignments",
        json=body,
        headers={**DISPATCH, **({"idempotency-key": key} if key else {})},
    )


def report(client, body, key, load_id="L-1", headers=DRIVER):
    return client.post(
        f"/loads/{load_id}/events", json=body, headers={**headers, "idempotency-key": key}
    )


def events_of(env, load_id="L-1") -> list[dict]:
    table = boto3.resource("dynamodb").Table(env["LOAD_EVENTS_TABLE"])
    return table.query(KeyConditionExpression=Key("load_id").eq(load_id))["Items"]


def idempotency_records(env) -> list[dict]:
    return boto3.resource("dynamodb").Table(env["IDEMPOTENCY_TABLE"]).scan()["Items"]


def test_retried_event_is_applied_once_and_answered_alike(client, clock, env):
    # GIVEN an assigned load
    assign(client, clock)
    # WHEN the driver's phone sends "arrived" twice with the same key
    first = report(client, ARRIVED, "evt-0001-abcd")
    clock.advance(minutes=3)
    again = report(client, ARRIVED, "evt-0001-abcd")
    # THEN both get the same 201 answer, the second marked as a replay
    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    # AND the event was written once: one event row, the load moved one version
    assert len(events_of(env)) == 1
    assert client.get("/loads/L-1", headers=DRIVER).json()["version"] == 2


def test_retried_assignment_creates_one_load_and_one_notification(client, clock, env):
    # WHEN dispatch's assignment is delivered twice with one key
    first = assign(client, clock, key="assign-L-1-0001")
    again = assign(client, clock, key="assign-L-1-0001")
    # THEN the retry gets the first 201, not 409 already-assigned
    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert again.json() == first.json()
    # AND only one push was queued
    sqs = boto3.client("sqs")
    queued = sqs.receive_message(
        QueueUrl=env["NOTIFICATIONS_QUEUE_URL"], MaxNumberOfMessages=10
    ).get("Messages", [])
    assert len(queued) == 1


def test_same_key_with_a_different_event_is_refused(client, clock):
    # GIVEN "arrived" was recorded with a key
    assign(client, clock)
    assert report(client, ARRIVED, "evt-0002-abcd").status_code == 201
    # WHEN the same key comes with "departed"
    r = report(client, DEPARTED, "evt-0002-abcd")
    # THEN it is refused clearly and nothing changes
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "urn:relay:problem:idempotency-key-reused"
    assert "different request" in r.json()["detail"]
    assert client.get("/loads/L-1", headers=DRIVER).json()["version"] == 2


def test_same_key_for_another_load_is_a_different_request(client, clock):
    assign(client, clock, "L-1")
    assign(client, clock, "L-2")
    assert report(client, ARRIVED, "evt-0003-abcd", load_id="L-1").status_code == 201
    r = report(client, ARRIVED, "evt-0003-abcd", load_id="L-2")
    assert r.status_code == 422  # the path is part of the request the key stands for


def test_two_drivers_using_the_same_key_do_not_collide(client, clock, env):
    # GIVEN a load for each of two drivers
    assign(client, clock, "L-1", "D-1001")
    assign(client, clock, "L-2", "D-1002")
    # WHEN both report with the same key
    mine = report(client, ARRIVED, "same-key-123", load_id="L-1", headers=DRIVER)
    theirs = report(client, ARRIVED, "same-key-123", load_id="L-2", headers=OTHER)
    # THEN each is processed on its own
    assert (mine.status_code, theirs.status_code) == (201, 201), theirs.text
    assert "idempotent-replayed" not in theirs.headers
    assert (mine.json()["load_id"], theirs.json()["load_id"]) == ("L-1", "L-2")
    assert len(events_of(env, "L-1")) == len(events_of(env, "L-2")) == 1


def test_a_refused_event_is_not_remembered_and_can_be_retried(client, clock, env):
    # GIVEN "departed" is refused with 409 because the driver has not arrived yet
    assign(client, clock)
    refused = report(client, DEPARTED, "evt-0004-abcd")
    assert refused.status_code == 409
    assert refused.json()["type"] == "urn:relay:problem:invalid-transition"
    assert idempotency_records(env) == []  # a failure leaves no record behind
    # WHEN the arrival is recorded and "departed" is retried with the same key and body
    assert report(client, ARRIVED, "evt-0005-abcd").status_code == 201
    retried = report(client, DEPARTED, "evt-0004-abcd")
    # THEN it is processed now, not answered with the old 409
    assert retried.status_code == 201, retried.text
    assert "idempotent-replayed" not in retried.headers
    assert retried.json()["load"]["status"] == "in_transit"


def test_an_unknown_load_can_be_retried_once_it_is_assigned(client, clock):
    assert report(client, ARRIVED, "evt-0006-abcd").status_code == 404
    assign(client, clock)
    assert report(client, ARRIVED, "evt-0006-abcd").status_code == 201


def test_concurrent_duplicate_is_told_to_retry_and_then_replayed(client, clock, env, repository):
    # GIVEN an assigned load and a first delivery held inside the write
    assign(client, clock)
    repository.release.clear()
    answers: list = []
    first = threading.Thread(
        target=lambda: answers.append(report(client, ARRIVED, "evt-0007-abcd"))
    )
    first.start()
    assert repository.inside.wait(timeout=10)
    # WHEN the duplicate arrives while the first is still running
    duplicate = report(client, ARRIVED, "evt-0007-abcd")
    repository.release.set()
    first.join(timeout=10)
    # THEN the duplicate is told to come back, the first completes
    assert duplicate.status_code == 409
    assert duplicate.json()["type"] == "urn:relay:problem:idempotency-in-progress"
    assert duplicate.headers["retry-after"] == "1"
    assert answers[0].status_code == 201, answers[0].text
    # AND a later retry gets the first answer; the event was written exactly once
    later = report(client, ARRIVED, "evt-0007-abcd")
    assert later.status_code == 201 and later.content == answers[0].content
    assert len(events_of(env)) == 1


@pytest.mark.parametrize(
    "key", ["short", "x" * 65, "has space-1234", "slash/key-1234", "colon:key-1234", ""]
)
def test_malformed_key_is_a_400_and_writes_nothing(client, clock, env, key):
    assign(client, clock)
    r = report(client, ARRIVED, key)
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "urn:relay:problem:invalid-idempotency-key"
    assert events_of(env) == [] and idempotency_records(env) == []


def test_without_a_key_requests_are_processed_as_before(client, clock, env):
    assert assign(client, clock).status_code == 201
    assert assign(client, clock).status_code == 409  # a plain retry is a new request
    assert idempotency_records(env) == []


def test_record_is_scoped_hashed_and_kept_for_24_hours(client, clock, env):
    # WHEN an event is recorded with a key
    assign(client, clock)
    report(client, ARRIVED, "evt-0008-abcd")
    # THEN one completed record exists, under a hash (neither the key nor the driver shows)
    (record,) = idempotency_records(env)
    assert record["id"].startswith("loads#") and "evt-0008" not in record["id"]
    assert "D-1001" not in record["id"] and record["status"] == "COMPLETED"
    # AND DynamoDB's TTL removes it a day later (Powertools stamps wall-clock time)
    assert abs(int(record["expiration"]) - (time.time() + 24 * 3600)) < 60


LAMBDA_EVENT = {
    "version": "2.0",
    "routeKey": "$default",
    "rawPath": "/loads/L-1/events",
    "rawQueryString": "",
    "headers": {
        "content-type": "application/json",
        "idempotency-key": "lambda-key-0001",
        "x-relay-identity": DRIVER["x-relay-identity"],
    },
    "requestContext": {
        "http": {
            "method": "POST",
            "path": "/loads/L-1/events",
            "protocol": "HTTP/1.1",
            "sourceIp": "10.0.0.1",
        },
        "requestId": "r-1",
        "routeKey": "$default",
        "stage": "$default",
    },
    "isBase64Encoded": False,
    "body": json.dumps(ARRIVED),
}


class LambdaContext:
    function_name = "relay-loads"
    aws_request_id = "r-1"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 3_000


def test_under_lambda_the_invocation_deadline_bounds_the_in_progress_lock(
    client, clock, env, repository
):
    # GIVEN the app behind Mangum, as the Lambda handler runs it
    assign(client, clock)
    handler = Mangum(
        create_app(service=LoadsService(repository, clock=clock)),
        lifespan="off",
        text_mime_types=LAMBDA_TEXT_MIME_TYPES,
    )
    # WHEN the same event is invoked twice
    first = handler(LAMBDA_EVENT, LambdaContext())
    again = handler(LAMBDA_EVENT, LambdaContext())
    # THEN the second is the replayed first
    assert (first["statusCode"], again["statusCode"]) == (201, 201), again["body"]
    assert again["body"] == first["body"]
    assert again["headers"]["idempotent-replayed"] == "true"
    assert len(events_of(env)) == 1
    # AND the in-progress lock was bounded by the context's remaining time (3 s, not 10 s)
    (record,) = idempotency_records(env)
    assert abs(int(record["in_progress_expiration"]) - (time.time() * 1000 + 3_000)) < 2_000
