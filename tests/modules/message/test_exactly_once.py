"""A keyed message lands once even when Powertools lets its work run twice.

The game day: storage froze for 25 s while messages were posted; the first delivery stayed
stuck in a boto3 call past its 10 s idempotency lease, the replay with the same key ran
the work again, and a message was stored twice. Here the lease is expired by writing the
record's ``in_progress_expiration`` into the past (no sleeping), and "the write landed
after the delivery gave up" is a repository that writes and then raises a read timeout.
"""

from __future__ import annotations

import json
import threading

import boto3
import pytest
from boto3.dynamodb.conditions import Key
from botocore.exceptions import ReadTimeoutError
from fastapi.testclient import TestClient

from modules.message.app import create_app
from modules.message.config import MessageSettings
from modules.message.repository import MessageRepository
from modules.message.service import MessageService
from shared_contracts.identity import Role
from tests.conftest import identity_header_for

identity_header = identity_header_for("message")

DRIVER = identity_header(Role.DRIVER, "D-1001")
DISPATCH = identity_header(Role.DISPATCH, None)


class StallingRepository(MessageRepository):
    """The real repository. ``hold_next``: the next write waits for ``release`` first;
    ``lose_next_answer``: the next write lands, then times out as if its answer was lost."""

    def __init__(self, settings: MessageSettings) -> None:
        super().__init__(settings)
        self.hold_next = False
        self.lose_next_answer = False
        self.inside = threading.Event()
        self.release = threading.Event()
        self.writes = 0

    def add(self, message, **kw):
        self.writes += 1
        if self.hold_next:
            self.hold_next = False
            self.inside.set()
            assert self.release.wait(timeout=10), "the test never released the first delivery"
        stored = super().add(message, **kw)
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise ReadTimeoutError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com/")
        return stored


@pytest.fixture
def env(deployed, monkeypatch):
    return deployed.use_env(monkeypatch, "MessageFunction")


@pytest.fixture
def repository(env):
    return StallingRepository(MessageSettings())


@pytest.fixture
def client(repository, clock):
    return TestClient(
        create_app(service=MessageService(repository, clock=clock)), raise_server_exceptions=False
    )


def send(client, body, key, headers=DRIVER):
    return client.post("/message", json={"body": body}, headers={**headers, "idempotency-key": key})


def stored_messages(env, driver_id="D-1001") -> list[dict]:
    """Every message item in the driver's inbox partition, straight from the table."""
    table = boto3.resource("dynamodb").Table(env["MESSAGES_TABLE"])
    items = table.query(KeyConditionExpression=Key("driver_id").eq(driver_id))["Items"]
    return [json.loads(i["doc"]) for i in items]


def queued(env) -> list[dict]:
    msgs = (
        boto3.client("sqs")
        .receive_message(QueueUrl=env["NOTIFICATIONS_QUEUE_URL"], MaxNumberOfMessages=10)
        .get("Messages", [])
    )
    return [json.loads(m["Body"]) for m in msgs]


def expire_leases(env) -> int:
    """What 10 s of a stuck delivery does: every INPROGRESS record's lease is in the past."""
    table = boto3.resource("dynamodb").Table(env["IDEMPOTENCY_TABLE"])
    expired = 0
    for record in table.scan()["Items"]:
        if record["status"] == "INPROGRESS":
            table.update_item(
                Key={"id": record["id"]},
                UpdateExpression="SET in_progress_expiration = :past",
                ExpressionAttributeValues={":past": 0},
            )
            expired += 1
    return expired


def forget_keys(env) -> None:
    table = boto3.resource("dynamodb").Table(env["IDEMPOTENCY_TABLE"])
    for record in table.scan()["Items"]:
        table.delete_item(Key={"id": record["id"]})


def test_a_delivery_that_outlives_its_lease_and_the_replay_store_one_message(
    client, clock, env, repository
):
    # GIVEN a first delivery stuck just before its write
    repository.hold_next = True
    answers: list = []
    first = threading.Thread(target=lambda: answers.append(send(client, "Late", "msg-lease-0001")))
    first.start()
    assert repository.inside.wait(timeout=10)
    # AND its idempotency lease runs out meanwhile
    assert expire_leases(env) == 1
    # WHEN the replay with the same key takes the lease over and stores the message
    clock.advance(seconds=30)
    replay = send(client, "Late", "msg-lease-0001")
    assert replay.status_code == 201, replay.text
    # AND the first delivery resumes and writes
    repository.release.set()
    first.join(timeout=10)
    # THEN both are answered with the one stored message
    assert answers[0].status_code == 201, answers[0].text
    assert answers[0].json() == replay.json()
    assert repository.writes == 2  # both deliveries really ran the work
    assert [m["message_id"] for m in stored_messages(env)] == [replay.json()["message_id"]]
    # AND every push queued for it is the same push (subscribers de-duplicate on its id)
    assert {n["notification_id"] for n in queued(env)} == {replay.json()["message_id"]}


def test_a_write_that_landed_after_the_delivery_gave_up_is_not_stored_again(
    client, clock, env, repository
):
    # GIVEN the message was written, but the answer timed out: a 5xx, Powertools forgot the key
    repository.lose_next_answer = True
    first_sent_at = clock.now.isoformat().replace("+00:00", "Z")
    lost = send(client, "Trailer seal broken", "msg-lost-0001")
    assert lost.status_code == 500
    assert queued(env) == []  # the delivery died before the push
    # WHEN the gateway delivers it again with the same key, 40 s later
    clock.advance(seconds=40)
    again = send(client, "Trailer seal broken", "msg-lost-0001")
    # THEN it is answered with the message stored the first time, keeping its time
    assert again.status_code == 201, again.text
    [stored] = stored_messages(env)
    assert again.json() == stored
    assert stored["sent_at"] == first_sent_at
    # AND the push the first delivery never queued is queued now
    [note] = queued(env)
    assert note["notification_id"] == stored["message_id"]


def test_a_key_reused_for_another_text_is_refused_even_once_powertools_forgot_it(client, env):
    assert send(client, "Arrived at gate", "msg-reuse-0001").status_code == 201
    forget_keys(env)
    r = send(client, "Arrived at dock", "msg-reuse-0001")
    assert r.status_code == 422, r.text
    assert r.json()["type"] == "urn:relay:problem:idempotency-key-reused"
    assert [m["body"] for m in stored_messages(env)] == ["Arrived at gate"]


def test_dispatch_messages_are_stored_once_per_dispatcher_and_key(client, env, clock):
    body = {"driver_id": "D-1001", "body": "Dock 4 is free"}
    key = {"idempotency-key": "gw-" + "ab" * 16}
    # GIVEN dispatch's message landed, and its key was forgotten (lease lost, record deleted)
    first = client.post("/dispatch/messages", json=body, headers={**DISPATCH, **key})
    assert first.status_code == 201, first.text
    forget_keys(env)
    # WHEN it is delivered again
    clock.advance(seconds=5)
    again = client.post("/dispatch/messages", json=body, headers={**DISPATCH, **key})
    # THEN the driver has it once
    assert again.status_code == 201 and again.json() == first.json()
    assert len(stored_messages(env)) == 1
    # AND another dispatcher using the same key sends a message of their own
    other = identity_header(Role.OPS, None)  # ops may message drivers too, as another sender
    theirs = client.post("/dispatch/messages", json=body, headers={**other, **key})
    assert theirs.status_code == 201, theirs.text
    assert theirs.json()["message_id"] != first.json()["message_id"]
    assert len(stored_messages(env)) == 2


def test_id_items_stay_out_of_every_inbox(client, env):
    # GIVEN keyed messages of two drivers
    assert send(client, "mine", "msg-inbox-0001").status_code == 201
    assert (
        send(
            client, "theirs", "msg-inbox-0001", headers=identity_header(Role.DRIVER, "D-1002")
        ).status_code
        == 201
    )
    # THEN each inbox holds its own message only, and no id item shows in any partition
    # a driver id can name
    inbox = client.get("/message", headers=DRIVER).json()["items"]
    assert [m["body"] for m in inbox] == ["mine"]
    table = boto3.resource("dynamodb").Table(env["MESSAGES_TABLE"])
    partitions = {i["driver_id"] for i in table.scan()["Items"]}
    assert {p for p in partitions if "#" not in p} == {"D-1001", "D-1002"}
    assert len(partitions) == 4  # two inboxes, two id items
