"""Message API against moto: the inbox, paging cursors, dispatch messages, pushes, authorization."""

from __future__ import annotations

import base64
import json

import boto3
import pytest
from fastapi.testclient import TestClient

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
OPS = identity_header(Role.OPS, None)


@pytest.fixture
def env(deployed, monkeypatch):
    return deployed.use_env(monkeypatch, "MessageFunction")


@pytest.fixture
def client(env, clock):
    service = MessageService(MessageRepository(MessageSettings()), clock=clock)
    return TestClient(create_app(service=service))


def queued(env) -> list[dict]:
    sqs = boto3.client("sqs")
    msgs = sqs.receive_message(QueueUrl=env["NOTIFICATIONS_QUEUE_URL"], MaxNumberOfMessages=10).get(
        "Messages", []
    )
    return [json.loads(m["Body"]) for m in msgs]


def send(client, clock, body, headers=DRIVER, **extra):
    clock.advance(minutes=1)
    r = client.post("/message", json={"body": body, **extra}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def dispatch(client, clock, body, driver_id="D-1001", headers=DISPATCH):
    clock.advance(minutes=1)
    r = client.post(
        "/dispatch/messages", json={"driver_id": driver_id, "body": body}, headers=headers
    )
    assert r.status_code == 201, r.text
    return r.json()


def test_inbox_lists_both_directions_newest_first(client, clock):
    # GIVEN a driver writes, dispatch answers, the driver writes again
    first = send(client, clock, "Running 30 min late", load_id="L-5001")
    reply = dispatch(client, clock, "Thanks, receiver informed")
    last = send(client, clock, "Arrived at gate")
    # WHEN the driver reads the inbox
    page = client.get("/message", headers=DRIVER).json()
    # THEN all three are there, newest first, with their direction and send time
    assert [m["message_id"] for m in page["items"]] == [
        last["message_id"],
        reply["message_id"],
        first["message_id"],
    ]
    assert [m["direction"] for m in page["items"]] == ["to_dispatch", "to_driver", "to_dispatch"]
    assert page["items"][2]["load_id"] == "L-5001"
    assert page["items"][0]["sent_at"] == clock.now.isoformat().replace("+00:00", "Z")
    assert page["next_cursor"] is None


def test_sent_message_is_answered_with_its_stored_form(client, clock):
    r = client.post("/message", json={"body": "  Dock 4 is blocked  "}, headers=DRIVER)
    assert r.status_code == 201
    msg = r.json()
    assert msg["driver_id"] == "D-1001" and msg["direction"] == "to_dispatch"
    assert msg["body"] == "Dock 4 is blocked" and msg["load_id"] is None
    assert len(msg["message_id"]) == 32


def test_pages_cover_the_inbox_without_duplicates_or_gaps(client, clock):
    # GIVEN 7 messages sent one minute apart
    sent = [send(client, clock, f"message {i}")["message_id"] for i in range(7)]
    # WHEN the driver pages through with limit=3
    seen, sizes, cursor = [], [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        r = client.get("/message", params=params, headers=DRIVER)
        assert r.status_code == 200, r.text
        page = r.json()
        seen += [m["message_id"] for m in page["items"]]
        sizes.append(len(page["items"]))
        cursor = page["next_cursor"]
        if cursor is None:
            break
    # THEN pages are 3, 3, 1 and together they are every message once, newest first
    assert sizes == [3, 3, 1]
    assert seen == list(reversed(sent))


def test_a_full_last_page_has_no_cursor(client, clock):
    for i in range(3):
        send(client, clock, f"message {i}")
    page = client.get("/message", params={"limit": 3}, headers=DRIVER).json()
    assert len(page["items"]) == 3 and page["next_cursor"] is None


def test_a_driver_never_sees_another_drivers_messages(client, clock):
    # GIVEN messages in D-1001's inbox, both directions
    send(client, clock, "for dispatch")
    dispatch(client, clock, "for D-1001")
    # WHEN D-1002 reads their inbox
    page = client.get("/message", headers=OTHER).json()
    # THEN it is empty
    assert page == {"items": [], "next_cursor": None}


def garbage_cursors() -> list[str]:
    def b64(value) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return [
        "not-a-cursor!",
        "",
        "x" * 600,
        b64([1, 2]),
        b64("text"),
        b64({"driver_id": "D-1001"}),
        b64({"driver_id": "D-1001", "sort_key": "anything"}),
        b64({"driver_id": "D-1001", "sort_key": 5}),
        b64({"driver_id": "D-1001", "sort_key": "2026-11-22T08:00:00.000000Z#a", "x": 1}),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ]


@pytest.mark.parametrize("cursor", garbage_cursors())
def test_malformed_cursor_is_a_bad_request(client, clock, cursor):
    send(client, clock, "hello")
    r = client.get("/message", params={"cursor": cursor}, headers=DRIVER)
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "urn:relay:problem:invalid-cursor"


def test_another_drivers_cursor_is_refused(client, clock):
    # GIVEN D-1002 holds a valid cursor into their own inbox
    for i in range(3):
        send(client, clock, f"D-1002 secret {i}", headers=OTHER)
    send(client, clock, "D-1001 message")
    cursor = client.get("/message", params={"limit": 1}, headers=OTHER).json()["next_cursor"]
    assert cursor
    # WHEN D-1001 presents it
    r = client.get("/message", params={"cursor": cursor}, headers=DRIVER)
    # THEN it is refused and nothing of D-1002's leaks
    assert r.status_code == 400
    assert "secret" not in r.text and "D-1002" not in r.text


@pytest.mark.parametrize(
    "payload",
    [
        {"body": ""},
        {"body": "   "},
        {"body": "x" * 2001},
        {"body": "hi", "urgent": True},
        {"body": "hi", "load_id": "not a load id"},
        {},
    ],
)
def test_invalid_message_is_refused(client, payload):
    r = client.post("/message", json=payload, headers=DRIVER)
    assert r.status_code == 422
    assert r.json()["type"] == "urn:relay:problem:validation" and r.json()["errors"]
    assert client.get("/message", headers=DRIVER).json()["items"] == []


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 51}, {"limit": "ten"}])
def test_out_of_range_limit_is_refused(client, params):
    r = client.get("/message", params=params, headers=DRIVER)
    assert r.status_code == 422


def test_malformed_json_is_a_bad_request(client):
    r = client.post(
        "/message", content=b"{nope", headers={**DRIVER, "content-type": "application/json"}
    )
    assert r.status_code == 400


def test_driver_message_queues_a_message_to_dispatch_notification(client, clock, env):
    msg = send(client, clock, "Trailer seal is broken", load_id="L-5001")
    [note] = queued(env)
    assert note["kind"] == "message_to_dispatch" and note["driver_id"] == "D-1001"
    assert note["data"] == {"message_id": msg["message_id"], "load_id": "L-5001"}
    assert note["body"] == "Trailer seal is broken"


def test_dispatch_message_lands_in_the_driver_inbox_and_is_pushed(client, clock, env):
    # WHEN dispatch writes to D-1002
    msg = dispatch(client, clock, "Please call the receiver " + "x" * 300, driver_id="D-1002")
    # THEN it is in D-1002's inbox as to_driver
    items = client.get("/message", headers=OTHER).json()["items"]
    assert [(m["message_id"], m["direction"]) for m in items] == [(msg["message_id"], "to_driver")]
    # AND a message_to_driver push is queued for D-1002, with a short preview
    [note] = queued(env)
    assert note["kind"] == "message_to_driver" and note["driver_id"] == "D-1002"
    assert note["data"] == {"message_id": msg["message_id"]}
    assert note["body"].startswith("Please call the receiver") and len(note["body"]) <= 140


def test_ops_may_message_drivers(client, clock):
    assert dispatch(client, clock, "Road closed on I-65", headers=OPS)["driver_id"] == "D-1001"


def test_drivers_cannot_use_the_dispatch_route(client):
    r = client.post(
        "/dispatch/messages", json={"driver_id": "D-1002", "body": "fake"}, headers=DRIVER
    )
    assert r.status_code == 403
    assert client.get("/message", headers=OTHER).json()["items"] == []


def test_dispatch_cannot_read_an_inbox_as_a_driver(client):
    assert client.get("/message", headers=DISPATCH).status_code == 403


def test_module_refuses_calls_without_the_gateway_identity(client):
    assert client.get("/message").status_code == 401
    assert client.post("/message", json={"body": "hi"}).status_code == 401


def test_queue_failure_does_not_fail_the_message(env, clock, monkeypatch, caplog):
    # GIVEN the notifications queue URL points at a queue that does not exist
    monkeypatch.setenv(
        "NOTIFICATIONS_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/no-such-queue"
    )
    service = MessageService(MessageRepository(MessageSettings()), clock=clock)
    client = TestClient(create_app(service=service))
    # WHEN a driver sends a message
    r = client.post("/message", json={"body": "still delivered?"}, headers=DRIVER)
    # THEN it is accepted and stored; the failed push is logged
    assert r.status_code == 201
    items = client.get("/message", headers=DRIVER).json()["items"]
    assert [m["message_id"] for m in items] == [r.json()["message_id"]]
    assert "could not queue notification" in caplog.text
    assert queued(env) == []
