"""Load events keep the time the gateway accepted them (``x-relay-accepted-at``).

The clock starts at 08:00 UTC. A deferred event is replayed later than it was reported;
the header carries the acceptance time, as the gateway sends it on a replay.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from modules.loads.app import create_app
from modules.loads.config import LoadsSettings
from modules.loads.repository import LoadsRepository
from modules.loads.service import LoadsService
from relay import demo
from shared_contracts import headers
from shared_contracts.identity import Role
from tests.conftest import identity_header_for

identity_header = identity_header_for("loads")

DRIVER = identity_header(Role.DRIVER, "D-1001")
DISPATCH = identity_header(Role.DISPATCH, None)
ARRIVED = {"kind": "arrived", "stop_seq": 1}


@pytest.fixture
def env(deployed, monkeypatch):
    return deployed.use_env(monkeypatch, "LoadsFunction")


@pytest.fixture
def client(env, clock):
    client = TestClient(
        create_app(service=LoadsService(LoadsRepository(LoadsSettings()), clock=clock))
    )
    body = demo.assignment("L-1", "D-1001", ["F-CHI", "F-IND"], clock.now).model_dump(mode="json")
    assert client.post("/dispatch/assignments", json=body, headers=DISPATCH).status_code == 201
    return client


def iso(at) -> str:
    return at.isoformat().replace("+00:00", "Z")


def report(client, body=ARRIVED, accepted_at: str | None = None, key="evt-accepted-01"):
    extra = {headers.ACCEPTED_AT: accepted_at} if accepted_at is not None else {}
    return client.post(
        "/loads/L-1/events", json=body, headers={**DRIVER, "idempotency-key": key, **extra}
    )


def test_a_replayed_event_keeps_the_time_it_was_accepted(client, clock):
    # GIVEN "arrived" was accepted at 08:00:00 while the module was down
    accepted = clock.now
    # WHEN it is replayed 32 s later, without occurred_at
    clock.advance(seconds=32)
    r = report(client, accepted_at=iso(accepted))
    # THEN it happened when it was accepted, and was recorded when it was applied
    assert r.status_code == 201, r.text
    event = r.json()
    assert event["occurred_at"] == iso(accepted)
    assert event["recorded_at"] == iso(clock.now)
    assert event["load"]["stops"][0]["arrived_at"] == iso(accepted)
    assert event["load"]["updated_at"] == iso(accepted)
    # AND an occurred_at the driver sent still wins over the acceptance time
    reported = clock.now - timedelta(seconds=10)
    r = report(
        client,
        {"kind": "departed", "stop_seq": 1, "occurred_at": iso(reported)},
        accepted_at=iso(accepted + timedelta(seconds=20)),
        key="evt-accepted-02",
    )
    assert r.status_code == 201, r.text
    assert r.json()["occurred_at"] == iso(reported)


def test_a_future_occurred_at_is_judged_against_when_it_was_reported(client, clock):
    # GIVEN events accepted at 08:00 claiming to have occurred after that
    accepted = clock.now
    # WHEN they are replayed at 08:10, when neither claim is in the future any more
    clock.advance(minutes=10)
    within = report(
        client,
        {**ARRIVED, "occurred_at": iso(accepted + timedelta(minutes=4))},
        accepted_at=iso(accepted),
    )
    beyond = report(
        client,
        {"kind": "departed", "stop_seq": 1, "occurred_at": iso(accepted + timedelta(minutes=6))},
        accepted_at=iso(accepted),
        key="evt-accepted-02",
    )
    # THEN each gets the verdict it would have had at 08:00: within the 5 min skew, or not
    assert within.status_code == 201, within.text
    assert beyond.status_code == 422, beyond.text
    assert beyond.json()["detail"] == "occurred_at is in the future"


@pytest.mark.parametrize(
    "stamp",
    [
        "garbage",
        "2026-11-22T07:59:28",  # no time zone
        "2026-11-22",  # a date
        "2026-13-22T07:59:28Z",  # no such month
        "2026-11-22T08:06:00Z",  # 6 min ahead of the module's clock
        "2026-11-22T08:02:00Z",  # 2 min ahead: within the skew, clamped to now
        "2026-11-08T07:59:00Z",  # older than the deferred queue's 14 days
        "2026-11-22T07:59:28Z" + " " * 40,  # too long
    ],
)
def test_only_a_plausible_acceptance_time_is_used(client, clock, stamp):
    # WHEN "arrived" comes with an unusable stamp
    r = report(client, accepted_at=stamp)
    # THEN the module's clock stamps it, as before the header existed
    assert r.status_code == 201, r.text
    assert r.json()["occurred_at"] == r.json()["recorded_at"] == iso(clock.now)
    # AND the next event, with a plausible stamp, gets the stamp
    clock.advance(minutes=1)
    good = clock.now - timedelta(seconds=20)
    r = report(
        client, {"kind": "departed", "stop_seq": 1}, accepted_at=iso(good), key="evt-accepted-02"
    )
    assert r.status_code == 201, r.text
    assert r.json()["occurred_at"] == iso(good)


def test_an_acceptance_time_up_to_14_days_old_is_kept(client, clock):
    accepted = clock.now - timedelta(days=14) + timedelta(minutes=1)
    r = report(client, accepted_at=iso(accepted))
    assert r.status_code == 201, r.text
    assert r.json()["occurred_at"] == iso(accepted)


def test_other_offsets_and_precisions_are_read_as_the_same_instant(client, clock):
    accepted = clock.now - timedelta(seconds=30)
    stamp = (accepted + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.123456789+02:00")
    r = report(client, accepted_at=stamp)
    assert r.status_code == 201, r.text
    assert r.json()["occurred_at"] == iso(accepted + timedelta(microseconds=123456))
