"""A keyed load event is applied once even when Powertools lets its work run twice.

Powertools' INPROGRESS record is a lease (10 s locally). A first delivery stuck in a storage
call for longer loses it, and a write storage received before the stall lands after the
client gave up. Both are simulated here without sleeping: the lease is expired by writing
the record's ``in_progress_expiration`` into the past, and "landed after giving up" is a
repository that writes and then raises botocore's read timeout.
"""

from __future__ import annotations

import threading

import boto3
import pytest
from boto3.dynamodb.conditions import Key
from botocore.exceptions import ReadTimeoutError
from fastapi.testclient import TestClient

from modules.loads.app import create_app
from modules.loads.config import LoadsSettings
from modules.loads.repository import LoadsRepository
from modules.loads.service import LoadsService
from relay import demo
from shared_contracts.identity import Role
from tests.conftest import identity_header_for

identity_header = identity_header_for("loads")

DRIVER = identity_header(Role.DRIVER, "D-1001")
DISPATCH = identity_header(Role.DISPATCH, None)
ARRIVED = {"kind": "arrived", "stop_seq": 1}
DEPARTED = {"kind": "departed", "stop_seq": 1}


class StallingRepository(LoadsRepository):
    """The real repository. ``hold_next``: the next save_event waits for ``release`` before
    writing; ``lose_next_answer``: the next save_event writes, then times out as if the
    answer never came back."""

    def __init__(self, settings: LoadsSettings) -> None:
        super().__init__(settings)
        self.hold_next = False
        self.lose_next_answer = False
        self.inside = threading.Event()
        self.release = threading.Event()
        self.saves = 0

    def save_event(self, event, expected_version, **kw):
        self.saves += 1
        if self.hold_next:
            self.hold_next = False
            self.inside.set()
            assert self.release.wait(timeout=10), "the test never released the first delivery"
        super().save_event(event, expected_version, **kw)
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise ReadTimeoutError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com/")


@pytest.fixture
def env(deployed, monkeypatch):
    return deployed.use_env(monkeypatch, "LoadsFunction")


@pytest.fixture
def repository(env):
    return StallingRepository(LoadsSettings())


@pytest.fixture
def client(repository, clock):
    return TestClient(
        create_app(service=LoadsService(repository, clock=clock)), raise_server_exceptions=False
    )


@pytest.fixture
def load(client, clock):
    body = demo.assignment("L-1", "D-1001", ["F-CHI", "F-IND"], clock.now).model_dump(mode="json")
    assert client.post("/dispatch/assignments", json=body, headers=DISPATCH).status_code == 201
    return "L-1"


def report(client, body, key, load_id="L-1"):
    return client.post(
        f"/loads/{load_id}/events", json=body, headers={**DRIVER, "idempotency-key": key}
    )


def events_of(env, load_id="L-1") -> list[dict]:
    table = boto3.resource("dynamodb").Table(env["LOAD_EVENTS_TABLE"])
    return table.query(KeyConditionExpression=Key("load_id").eq(load_id))["Items"]


def load_item(env, load_id="L-1") -> dict:
    table = boto3.resource("dynamodb").Table(env["LOADS_TABLE"])
    return table.get_item(Key={"load_id": load_id})["Item"]


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


def test_a_delivery_that_outlives_its_lease_and_the_replay_apply_the_event_once(
    client, clock, env, repository, load
):
    # GIVEN a first delivery of "arrived" that read the load and is stuck before writing
    repository.hold_next = True
    answers: list = []
    first = threading.Thread(
        target=lambda: answers.append(report(client, ARRIVED, "evt-lease-0001"))
    )
    first.start()
    assert repository.inside.wait(timeout=10)
    # AND its idempotency lease runs out meanwhile
    assert expire_leases(env) == 1
    # WHEN the replay with the same key arrives, takes the lease over and applies the event
    clock.advance(seconds=30)
    replay = report(client, ARRIVED, "evt-lease-0001")
    assert replay.status_code == 201, replay.text
    # AND the first delivery resumes and writes
    repository.release.set()
    first.join(timeout=10)
    # THEN the first one is answered with the event the replay applied, not a 409
    assert answers[0].status_code == 201, answers[0].text
    assert answers[0].json()["seq"] == replay.json()["seq"] == 1
    assert answers[0].json()["occurred_at"] == replay.json()["occurred_at"]
    # AND the event exists once: one row, the load one version further
    assert repository.saves == 2  # both deliveries really ran the work
    assert len(events_of(env)) == 1
    assert client.get("/loads/L-1", headers=DRIVER).json()["version"] == 2


def test_a_write_that_landed_after_the_delivery_gave_up_is_not_applied_again(
    client, clock, env, repository, load
):
    # GIVEN "arrived" was written, but the answer timed out: the delivery failed with a 5xx
    # and Powertools forgot the key
    repository.lose_next_answer = True
    lost = report(client, ARRIVED, "evt-lost-0001")
    assert lost.status_code == 500
    first_version = client.get("/loads/L-1", headers=DRIVER).json()
    assert first_version["status"] == "at_stop"
    # WHEN the same event is delivered again with its key
    clock.advance(seconds=40)
    again = report(client, ARRIVED, "evt-lost-0001")
    # THEN it is answered with the recorded event, not "already at stop 1" (409)
    assert again.status_code == 201, again.text
    event = again.json()
    assert (event["seq"], event["kind"], event["stop_seq"]) == (1, "arrived", 1)
    assert event["load"] == first_version
    assert event["occurred_at"] == first_version["stops"][0]["arrived_at"]
    # AND nothing was applied twice
    assert len(events_of(env)) == 1
    assert client.get("/loads/L-1", headers=DRIVER).json()["version"] == 2


def test_the_recorded_event_is_answered_with_the_load_as_it_is_now(
    client, clock, env, repository, load
):
    # GIVEN "arrived" landed after its delivery gave up, and the driver has departed since
    repository.lose_next_answer = True
    assert report(client, ARRIVED, "evt-late-0001").status_code == 500
    assert report(client, DEPARTED, "evt-late-0002").status_code == 201
    # WHEN the lost "arrived" is delivered again
    again = report(client, ARRIVED, "evt-late-0001")
    # THEN it is the recorded event (seq 1), with the current load, and nothing changes
    assert again.status_code == 201, again.text
    assert again.json()["seq"] == 1 and again.json()["load"]["status"] == "in_transit"
    assert len(events_of(env)) == 2 and load_item(env)["version"] == 3


def test_a_key_reused_for_another_event_is_refused_even_once_powertools_forgot_it(
    client, env, load
):
    # GIVEN "arrived" recorded with a key, and the idempotency record gone (expired, deleted)
    assert report(client, ARRIVED, "evt-reuse-0001").status_code == 201
    table = boto3.resource("dynamodb").Table(env["IDEMPOTENCY_TABLE"])
    for record in table.scan()["Items"]:
        table.delete_item(Key={"id": record["id"]})
    # WHEN the same key comes with "departed"
    r = report(client, DEPARTED, "evt-reuse-0001")
    # THEN it is refused as a reused key, and the load did not move
    assert r.status_code == 422, r.text
    assert r.json()["type"] == "urn:relay:problem:idempotency-key-reused"
    assert load_item(env)["status"] == "at_stop" and len(events_of(env)) == 1
    # AND duplicates are found by key, not by content: "arrived" again under a new key is
    # a real mistake, answered as before
    r = report(client, ARRIVED, "evt-reuse-0002")
    assert r.status_code == 409 and r.json()["type"] == "urn:relay:problem:invalid-transition"


def test_applied_keys_stay_off_the_public_load_and_out_of_unkeyed_events(client, env, load):
    # WHEN one event comes without a key and one with
    assert client.post("/loads/L-1/events", json=ARRIVED, headers=DRIVER).status_code == 201
    assert load_item(env).get("event_keys") is None  # no key: stored exactly as before
    assert report(client, DEPARTED, "evt-keys-0001").status_code == 201
    # THEN the load item remembers the key's event (as a digest), the document does not
    item = load_item(env)
    assert list(item["event_keys"].values()) == [2]
    assert "evt-keys-0001" not in str(item) and "D-1001:" not in str(item["event_keys"])
    public = client.get("/loads/L-1", headers=DRIVER).json()
    assert "event_keys" not in public and "event_keys" not in item["doc"]
    assert [e.get("event_key") for e in sorted(events_of(env), key=lambda e: e["seq"])] == [
        None,
        next(iter(item["event_keys"])),
    ]
