"""Idempotent message POSTs: a retried or replayed send lands in the inbox once, pushed once.

The message module is deferrable: while it is down the gateway accepts writes with 202 and
replays them later with the same ``Idempotency-Key`` (``gw-<hex>`` when the app sent none).
"""

from __future__ import annotations

import json
import threading

import boto3
import pytest
from botocore.exceptions import ClientError
from fastapi.testclient import TestClient

from module_kit.idempotency import IdempotencyStore
from modules.message.app import create_app
from modules.message.config import MessageSettings
from modules.message.repository import MessageRepository
from modules.message.service import MessageService
from shared_contracts.identity import Role
from tests.conftest import identity_header_for

identity_header = identity_header_for("message")

DRIVER = identity_header(Role.DRIVER, "D-1001")
OTHER = identity_header(Role.DRIVER, "D-1002")
DISPATCH = identity_header(Role.DISPATCH, None)


class FlakyRepository(MessageRepository):
    """The real repository; can fail the next write, or pause inside it."""

    def __init__(self, settings: MessageSettings) -> None:
        super().__init__(settings)
        self.fail_next = False
        self.inside = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def add(self, message, **kw):
        self.inside.set()
        assert self.release.wait(timeout=10), "the test never released the first request"
        if self.fail_next:
            self.fail_next = False
            raise ClientError(
                {
                    "Error": {
                        "Code": "ProvisionedThroughputExceededException",
                        "Message": "slow down",
                    }
                },
                "PutItem",
            )
        return super().add(message, **kw)


@pytest.fixture
def env(deployed, monkeypatch):
    return deployed.use_env(monkeypatch, "MessageFunction")


@pytest.fixture
def repository(env):
    return FlakyRepository(MessageSettings())


@pytest.fixture
def client(repository, clock):
    return TestClient(create_app(service=MessageService(repository, clock=clock)))


def send(client, body, key, headers=DRIVER):
    return client.post("/message", json={"body": body}, headers={**headers, "idempotency-key": key})


def inbox(client, headers=DRIVER) -> list[dict]:
    return client.get("/message", headers=headers).json()["items"]


def queued(env) -> list[dict]:
    msgs = (
        boto3.client("sqs")
        .receive_message(QueueUrl=env["NOTIFICATIONS_QUEUE_URL"], MaxNumberOfMessages=10)
        .get("Messages", [])
    )
    return [json.loads(m["Body"]) for m in msgs]


def idempotency_records(env) -> list[dict]:
    return boto3.resource("dynamodb").Table(env["IDEMPOTENCY_TABLE"]).scan()["Items"]


def test_retried_send_lands_once_and_is_pushed_once(client, clock, env):
    # WHEN a flaky phone sends the same message twice with one key
    first = send(client, "Running 30 min late", "msg-0001-abcd")
    clock.advance(minutes=2)
    again = send(client, "Running 30 min late", "msg-0001-abcd")
    # THEN both get the first 201 answer, the second marked as a replay
    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    # AND the inbox holds it once, and dispatch was pushed once
    assert [m["message_id"] for m in inbox(client)] == [first.json()["message_id"]]
    assert len(queued(env)) == 1


def test_gateway_replay_of_a_deferred_write_that_had_landed_is_not_written_twice(client, env):
    # GIVEN dispatch's message reached the module, but the answer was lost on the way back,
    # so the gateway deferred it under its own key
    key = "gw-" + "0123456789abcdef" * 2
    body = {"driver_id": "D-1001", "body": "Dock 4 is free"}
    first = client.post(
        "/dispatch/messages", json=body, headers={**DISPATCH, "idempotency-key": key}
    )
    # WHEN the gateway replays it later with the same key
    replay = client.post(
        "/dispatch/messages", json=body, headers={**DISPATCH, "idempotency-key": key}
    )
    # THEN the driver has it once
    assert (first.status_code, replay.status_code) == (201, 201), replay.text
    assert replay.json() == first.json()
    assert len(inbox(client)) == 1


def test_same_key_with_another_text_is_refused(client):
    assert send(client, "Arrived at gate", "msg-0002-abcd").status_code == 201
    r = send(client, "Arrived at dock", "msg-0002-abcd")
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "urn:relay:problem:idempotency-key-reused"
    assert [m["body"] for m in inbox(client)] == ["Arrived at gate"]


def test_two_drivers_using_the_same_key_each_send_their_message(client):
    mine = send(client, "Arrived at gate", "same-key-123", headers=DRIVER)
    theirs = send(client, "Arrived at gate", "same-key-123", headers=OTHER)
    assert (mine.status_code, theirs.status_code) == (201, 201), theirs.text
    assert mine.json()["message_id"] != theirs.json()["message_id"]
    assert len(inbox(client, DRIVER)) == len(inbox(client, OTHER)) == 1


def test_a_failed_send_is_not_remembered_and_can_be_retried(client, env, repository):
    # GIVEN the first attempt fails inside the write (answered as a problem, as in production)
    repository.fail_next = True
    failed = send(
        TestClient(client.app, raise_server_exceptions=False), "Arrived at gate", "msg-0003-abcd"
    )
    assert failed.status_code == 500 and failed.json()["type"] == "urn:relay:problem:internal"
    assert idempotency_records(env) == []
    # WHEN the phone retries with the same key and text
    r = send(client, "Arrived at gate", "msg-0003-abcd")
    # THEN the message is sent, once
    assert r.status_code == 201, r.text
    assert "idempotent-replayed" not in r.headers
    assert len(inbox(client)) == 1


def test_concurrent_duplicate_is_told_to_retry_and_lands_once(client, env, repository):
    # GIVEN a first send held inside the write
    repository.release.clear()
    answers: list = []
    first = threading.Thread(target=lambda: answers.append(send(client, "Late", "msg-0004-abcd")))
    first.start()
    assert repository.inside.wait(timeout=10)
    # WHEN the duplicate arrives meanwhile
    duplicate = send(client, "Late", "msg-0004-abcd")
    repository.release.set()
    first.join(timeout=10)
    # THEN the duplicate gets 409 in-progress; the first completes; the inbox has one message
    assert duplicate.status_code == 409
    assert duplicate.json()["type"] == "urn:relay:problem:idempotency-in-progress"
    assert duplicate.headers["retry-after"] == "1"
    assert answers[0].status_code == 201, answers[0].text
    assert [m["message_id"] for m in inbox(client)] == [answers[0].json()["message_id"]]
    assert len(queued(env)) == 1


@pytest.mark.parametrize("key", [b"1234567", "é-key-1234".encode(), b"key.with.dots"])
def test_malformed_key_is_a_400_and_sends_nothing(client, env, key):
    r = client.post("/message", json={"body": "hello"}, headers={**DRIVER, "idempotency-key": key})
    assert r.status_code == 400
    assert r.json()["type"] == "urn:relay:problem:invalid-idempotency-key"
    assert inbox(client) == [] and queued(env) == []


def test_key_of_exactly_8_and_64_characters_is_accepted(client):
    assert send(client, "a", "k" * 8).status_code == 201
    assert send(client, "b", "K_-9" * 16).status_code == 201


def test_without_a_key_every_send_is_a_new_message(client, env):
    for _ in range(2):
        assert client.post("/message", json={"body": "ping"}, headers=DRIVER).status_code == 201
    assert len(inbox(client)) == 2
    assert idempotency_records(env) == []


def test_unreachable_idempotency_table_fails_safe_without_writing(repository, clock, env):
    # GIVEN the idempotency table cannot be used
    app = create_app(
        service=MessageService(repository, clock=clock),
        idempotency=IdempotencyStore("relay-missing-table", prefix="message"),
    )
    client = TestClient(app)
    # WHEN a keyed send arrives
    r = send(client, "Arrived at gate", "msg-0005-abcd")
    # THEN it is refused as retryable, and nothing was sent
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert inbox(client) == [] and queued(env) == []
    # AND sends without a key do not depend on the table
    assert client.post("/message", json={"body": "ping"}, headers=DRIVER).status_code == 201
