"""A keyed gate pass is issued once even when Powertools lets its work run twice.

"The write landed after the delivery gave up" is a repository that stores the pass and
then raises botocore's read timeout: the delivery fails, Powertools forgets the key, and
the retry with the same key runs the work again.
"""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ReadTimeoutError
from fastapi.testclient import TestClient

from modules.gatepass.app import create_app
from modules.gatepass.config import GatepassSettings
from modules.gatepass.repository import KEYS_ITEM, GatepassRepository
from modules.gatepass.service import GatepassService
from modules.gatepass.signing import KmsSigner
from shared_contracts.identity import Role
from tests.conftest import identity_header_for
from tests.modules.gatepass.test_api import put_load, uncelled_loads

identity_header = identity_header_for("gatepass")

DRIVER = identity_header(Role.DRIVER, "D-1001")


class AnswerLosingRepository(GatepassRepository):
    """The real repository; ``lose_next_answer``: the next pass is stored, then times out."""

    lose_next_answer = False

    def create(self, gate_pass):
        stored = super().create(gate_pass)
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise ReadTimeoutError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com/")
        return stored


@pytest.fixture
def env(deployed, monkeypatch):
    return uncelled_loads(deployed.use_env(monkeypatch, "GatepassFunction"), monkeypatch)


@pytest.fixture
def repository(env):
    return AnswerLosingRepository(GatepassSettings())


@pytest.fixture
def client(env, repository, clock):
    signer = KmsSigner(GatepassSettings().gatepass_signing_key_id)
    return TestClient(
        create_app(service=GatepassService(repository, signer, clock=clock)),
        raise_server_exceptions=False,
    )


def issue(client, key, facility_id="F-CHI"):
    return client.post(
        "/gatepass",
        json={"load_id": "L-1", "facility_id": facility_id},
        headers={**DRIVER, "idempotency-key": key},
    )


def stored_passes(env) -> list[dict]:
    items = boto3.resource("dynamodb").Table(env["GATEPASS_TABLE"]).scan()["Items"]
    return [i for i in items if i["pass_id"] != KEYS_ITEM]  # the published keys' item


def test_a_pass_stored_after_the_delivery_gave_up_is_not_issued_again(
    client, clock, env, repository
):
    # GIVEN a pass was stored, but the answer timed out: a 5xx, and Powertools forgot the key
    put_load(env, clock)
    repository.lose_next_answer = True
    assert issue(client, "pass-lost-0001").status_code == 500
    [first] = stored_passes(env)
    # WHEN the same request is delivered again with its key
    clock.advance(seconds=30)
    again = issue(client, "pass-lost-0001")
    # THEN it is answered with the pass stored the first time, and no second pass exists
    assert again.status_code == 201, again.text
    assert again.json()["pass_id"] == first["pass_id"]
    assert again.json()["token"] == again.json()["qr_payload"]
    assert again.json()["issued_at"] == "2026-11-22T08:00:00Z"
    assert len(stored_passes(env)) == 1
    # AND the same key for another facility is refused, not answered with that pass
    r = issue(client, "pass-lost-0001", facility_id="F-IND")
    assert r.status_code == 422, r.text
    assert r.json()["type"] == "urn:relay:problem:idempotency-key-reused"
    assert len(stored_passes(env)) == 1
