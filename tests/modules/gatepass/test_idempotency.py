"""Idempotent gate pass POSTs: a retried issue answers the pass already minted, signed once.

Writes are counted in the gate pass table (through ``GET /gatepass``) and at the signer.
"""

from __future__ import annotations

import threading

import boto3
import pytest
from fastapi.testclient import TestClient

from modules.gatepass.app import create_app
from modules.gatepass.config import GatepassSettings
from modules.gatepass.repository import GatepassRepository
from modules.gatepass.service import GatepassService
from modules.gatepass.signing import KmsSigner, SigningUnavailableError
from shared_contracts.identity import Role
from tests.conftest import identity_header_for
from tests.modules.gatepass.test_api import put_load, uncelled_loads

identity_header = identity_header_for("gatepass")

DRIVER = identity_header(Role.DRIVER, "D-1001")
OTHER = identity_header(Role.DRIVER, "D-1002")
DISPATCH = identity_header(Role.DISPATCH, None)


class CountingSigner(KmsSigner):
    """The real (moto) KMS signer; counts signatures, can fail once or pause while signing."""

    def __init__(self, key_id: str) -> None:
        super().__init__(key_id)
        self.signed = 0
        self.fail_next = False
        self.inside = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def sign(self, claims):
        self.inside.set()
        assert self.release.wait(timeout=10), "the test never released the first request"
        if self.fail_next:
            self.fail_next = False
            raise SigningUnavailableError("KMS throttled")
        self.signed += 1
        return super().sign(claims)


@pytest.fixture
def env(deployed, monkeypatch):
    return uncelled_loads(deployed.use_env(monkeypatch, "GatepassFunction"), monkeypatch)


@pytest.fixture
def signer(env):
    return CountingSigner(GatepassSettings().gatepass_signing_key_id)


@pytest.fixture
def client(env, signer, clock):
    service = GatepassService(GatepassRepository(GatepassSettings()), signer, clock=clock)
    return TestClient(create_app(service=service))


def issue(client, key, load_id="L-1", facility_id="F-CHI", headers=DRIVER):
    return client.post(
        "/gatepass",
        json={"load_id": load_id, "facility_id": facility_id},
        headers={**headers, "idempotency-key": key},
    )


def revoke(client, pass_id, key):
    return client.post(f"/gatepass/{pass_id}/revoke", headers={**DISPATCH, "idempotency-key": key})


def passes(client, headers=DRIVER) -> list[dict]:
    return client.get("/gatepass", headers=headers).json()["items"]


def idempotency_records(env) -> list[dict]:
    return boto3.resource("dynamodb").Table(env["IDEMPOTENCY_TABLE"]).scan()["Items"]


def test_retried_issue_answers_the_same_pass_signed_once(client, env, clock, signer):
    # GIVEN D-1001's load
    put_load(env, clock)
    # WHEN the app asks for a pass twice with the same key
    first = issue(client, "pass-req-0001")
    again = issue(client, "pass-req-0001")
    # THEN both get the same pass (same id, same token) with 201
    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    # AND one pass exists, signed once
    assert [p["pass_id"] for p in passes(client)] == [first.json()["pass_id"]]
    assert signer.signed == 1


def test_same_key_for_another_facility_is_refused(client, env, clock):
    put_load(env, clock)
    assert issue(client, "pass-req-0002").status_code == 201
    r = issue(client, "pass-req-0002", facility_id="F-IND")
    assert r.status_code == 422
    assert r.json()["type"] == "urn:relay:problem:idempotency-key-reused"
    assert len(passes(client)) == 1


def test_two_drivers_using_the_same_key_each_get_their_pass(client, env, clock):
    # GIVEN a load for each driver
    put_load(env, clock, "L-1", "D-1001")
    put_load(env, clock, "L-2", "D-1002")
    # WHEN both ask with the same key
    mine = issue(client, "same-key-123", load_id="L-1", headers=DRIVER)
    theirs = issue(client, "same-key-123", load_id="L-2", headers=OTHER)
    # THEN each gets their own pass
    assert (mine.status_code, theirs.status_code) == (201, 201), theirs.text
    assert mine.json()["pass_id"] != theirs.json()["pass_id"]
    assert theirs.json()["driver_id"] == "D-1002"
    assert len(passes(client, DRIVER)) == len(passes(client, OTHER)) == 1


def test_a_not_found_is_not_remembered_and_can_be_retried(client, env, clock):
    # GIVEN the load is not known yet: 404, and no record is kept
    assert issue(client, "pass-req-0003").status_code == 404
    assert idempotency_records(env) == []
    # WHEN the load arrives and the same request is retried with the same key
    put_load(env, clock)
    r = issue(client, "pass-req-0003")
    # THEN it is processed
    assert r.status_code == 201, r.text
    assert "idempotent-replayed" not in r.headers


def test_a_signing_outage_is_not_remembered(client, env, clock, signer):
    # GIVEN KMS fails once: 503
    put_load(env, clock)
    signer.fail_next = True
    assert issue(client, "pass-req-0004").status_code == 503
    # WHEN the app retries with the same key
    r = issue(client, "pass-req-0004")
    # THEN the pass is issued
    assert r.status_code == 201, r.text
    assert len(passes(client)) == 1


def test_concurrent_duplicate_is_told_to_retry_and_one_pass_exists(client, env, clock, signer):
    # GIVEN a first request held while KMS signs
    put_load(env, clock)
    signer.release.clear()
    answers: list = []
    first = threading.Thread(target=lambda: answers.append(issue(client, "pass-req-0005")))
    first.start()
    assert signer.inside.wait(timeout=10)
    # WHEN the duplicate arrives meanwhile
    duplicate = issue(client, "pass-req-0005")
    signer.release.set()
    first.join(timeout=10)
    # THEN it gets 409 in-progress with Retry-After, and exactly one pass exists
    assert duplicate.status_code == 409
    assert duplicate.json()["type"] == "urn:relay:problem:idempotency-in-progress"
    assert duplicate.headers["retry-after"] == "1"
    assert answers[0].status_code == 201, answers[0].text
    assert [p["pass_id"] for p in passes(client)] == [answers[0].json()["pass_id"]]
    assert signer.signed == 1


def test_retried_revoke_is_replayed(client, env, clock):
    # GIVEN a pass
    put_load(env, clock)
    pass_id = issue(client, "pass-req-0006").json()["pass_id"]
    # WHEN dispatch's revoke is delivered twice with one key
    first = revoke(client, pass_id, "revoke-0001")
    again = revoke(client, pass_id, "revoke-0001")
    # THEN both answer 200 with the revoked pass, the second as a replay
    assert (first.status_code, again.status_code) == (200, 200), again.text
    assert again.content == first.content and first.json()["revoked"] is True
    assert again.headers["idempotent-replayed"] == "true"


def test_revoking_an_unknown_pass_is_not_remembered(client, env):
    assert revoke(client, "GP-unknown", "revoke-0002").status_code == 404
    assert idempotency_records(env) == []


@pytest.mark.parametrize("key", ["short", "k" * 65, "bad key with spaces"])
def test_malformed_key_is_a_400_and_issues_nothing(client, env, clock, signer, key):
    put_load(env, clock)
    r = issue(client, key)
    assert r.status_code == 400
    assert r.json()["type"] == "urn:relay:problem:invalid-idempotency-key"
    assert passes(client) == [] and signer.signed == 0


def test_verify_ignores_the_key_the_gateway_puts_on_every_post(client, env, clock):
    # The gateway adds a key to every write; verify changes nothing and is not idempotent-wrapped.
    put_load(env, clock)
    token = issue(client, "pass-req-0007").json()["token"]
    r = client.post(
        "/gatepass/verify",
        json={"token": token, "facility_id": "F-CHI"},
        headers={**identity_header(Role.GATE, None), "idempotency-key": "bad"},
    )
    assert r.status_code == 200 and r.json()["valid"] is True
