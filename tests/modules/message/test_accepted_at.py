"""Messages are sent when the gateway accepted them (``x-relay-accepted-at``), not when a
deferred delivery finally arrives, so they keep their place in the conversation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from modules.message.app import create_app
from modules.message.config import MessageSettings
from modules.message.repository import MessageRepository
from modules.message.service import MessageService
from shared_contracts import headers
from shared_contracts.identity import Role
from tests.conftest import identity_header_for

identity_header = identity_header_for("message")

DRIVER = identity_header(Role.DRIVER, "D-1001")
DISPATCH = identity_header(Role.DISPATCH, None)


@pytest.fixture
def env(deployed, monkeypatch):
    return deployed.use_env(monkeypatch, "MessageFunction")


@pytest.fixture
def client(env, clock):
    return TestClient(
        create_app(service=MessageService(MessageRepository(MessageSettings()), clock=clock))
    )


def iso(at) -> str:
    return at.isoformat().replace("+00:00", "Z")


def post(client, path, body, key, accepted_at=None, headers_=DRIVER):
    extra = {headers.ACCEPTED_AT: accepted_at} if accepted_at is not None else {}
    r = client.post(path, json=body, headers={**headers_, "idempotency-key": key, **extra})
    assert r.status_code == 201, r.text
    return r.json()


def test_a_deferred_message_keeps_its_place_in_the_inbox(client, clock):
    # GIVEN at 08:00:00 the driver's message is accepted while the module is down
    deferred_at = clock.now
    # AND at 08:00:10 dispatch's message goes through live
    clock.advance(seconds=10)
    live = post(
        client,
        "/dispatch/messages",
        {"driver_id": "D-1001", "body": "Dock 4 is free"},
        "msg-live-0001",
        accepted_at=iso(clock.now),
        headers_=DISPATCH,
    )
    # WHEN the deferred message is replayed at 08:00:30
    clock.advance(seconds=20)
    deferred = post(
        client, "/message", {"body": "Running late"}, "msg-defer-0001", accepted_at=iso(deferred_at)
    )
    # THEN it was sent when it was accepted, before dispatch's
    assert deferred["sent_at"] == iso(deferred_at)
    assert live["sent_at"] == iso(deferred_at + timedelta(seconds=10))
    inbox = client.get("/message", headers=DRIVER).json()["items"]
    assert [m["message_id"] for m in inbox] == [live["message_id"], deferred["message_id"]]


@pytest.mark.parametrize(
    "stamp",
    [
        "not-a-time",
        "2026-11-22T07:59:30",  # no time zone
        "2026-11-22T08:06:00Z",  # beyond the skew, ahead of the module's clock
        "2026-11-22T08:01:00Z",  # ahead within the skew: clamped to now
        "2026-11-07T08:00:00Z",  # older than the deferred queue's 14 days
    ],
)
def test_only_a_plausible_acceptance_time_is_used(client, clock, stamp):
    # WHEN a message comes with an unusable stamp, it is sent "now", as before the header
    unusable = post(client, "/message", {"body": "one"}, "msg-stamp-0001", accepted_at=stamp)
    assert unusable["sent_at"] == iso(clock.now)
    # AND a plausible stamp is used
    good = clock.now - timedelta(seconds=45)
    used = post(client, "/message", {"body": "two"}, "msg-stamp-0002", accepted_at=iso(good))
    assert used["sent_at"] == iso(good)
