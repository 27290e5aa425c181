"""The fallback store against DynamoDB (moto): the projector's conditional writes keep each
key's newest state whatever order and how often records arrive, and the store's reads."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest

from gateway.fallbackstore.projector import KEYS_ITEM, Projector, make_handler
from gateway.fallbackstore.store import FallbackStore
from shared_contracts.loads import LoadPublic
from tests.fakes import NOW
from tests.unit.gateway.test_fallback_store import load_image, pass_image, record


@pytest.fixture
def store(deployed) -> FallbackStore:
    table = deployed.stack.resources["FallbackStoreTable"].ref
    return FallbackStore(table, clock=lambda: 1_780_000_000.0)


def project(store: FallbackStore, *records: dict[str, Any]) -> dict[str, Any]:
    return make_handler(Projector(store))({"Records": list(records)}, None)


def stored_version(store: FallbackStore, load_id: str = "L-1") -> int:
    copy = asyncio.run(store.load("D-1001", load_id))
    assert copy is not None
    return LoadPublic.model_validate_json(copy.doc).version


def test_a_late_older_load_never_overwrites_a_newer_one_and_a_replay_changes_nothing(store):
    project(store, record(load_image(version=3), "30"))
    project(store, record(load_image(version=2), "20"))  # late: bisected, retried...
    assert stored_version(store) == 3
    project(store, record(load_image(version=3), "30"), record(load_image(version=4), "40"))
    project(store, record(load_image(version=4), "40"))  # the same batch again
    assert stored_version(store) == 4
    copies = asyncio.run(store.loads("D-1001"))
    assert len(copies) == 1 and copies[0].projected_at == 1_780_000_000.0


def test_a_revoked_pass_stays_revoked_and_is_a_revocation_every_instance_reads(store):
    project(store, record(pass_image("P-1", revoked=True), "50"))
    project(store, record(pass_image("P-1"), "40"))  # the issue, delivered late
    project(store, record(pass_image("P-1"), "60"))  # even a newer record cannot un-revoke
    copy = asyncio.run(store.gate_pass("D-1001", "P-1"))
    assert copy is not None and json.loads(copy.doc)["revoked"] is True
    assert asyncio.run(store.is_revoked("P-1")) is True
    assert asyncio.run(store.is_revoked("P-2")) is False
    item = store.table.get_item(Key={"pk": "revoked#P-1", "sk": "-"})["Item"]
    # kept (TTL) until the pass would have expired anyway
    assert int(item["expires_at"]) == int((NOW + timedelta(hours=2)).timestamp()) + 1


def test_keys_published_later_win_and_facilities_follow_their_stream_order(store):
    def keys(kid: str, at: int) -> dict[str, Any]:
        jwk = {"kty": "EC", "crv": "P-256", "x": "x", "y": "y", "kid": kid}
        doc = json.dumps({"keys": [{**jwk, "alg": "ES256", "use": "sig"}]})
        return {"pass_id": KEYS_ITEM, "doc": doc, "published_at": at}

    project(store, record(keys("new", 2000), "9"), record(keys("old", 1000), "10"))
    jwks = asyncio.run(store.jwks())
    assert jwks is not None and json.loads(jwks.doc)["keys"][0]["kid"] == "new"

    def facility(text: str) -> dict[str, Any]:
        doc = {
            "facility_id": "F-1",
            "name": "DC",
            "address": "Rd",
            "lat": 1.0,
            "lon": 2.0,
            "entry_instructions": text,
        }
        return {"facility_id": "F-1", "cell": "c", "doc": json.dumps(doc)}

    project(store, record(facility("Gate 4"), "200"), record(facility("Gate 1"), "100"))
    found = asyncio.run(store.facility("F-1"))
    assert found is not None and json.loads(found.doc)["entry_instructions"] == "Gate 4"
    project(store, record(None, "150", event="REMOVE", keys={"facility_id": "F-1"}))
    assert asyncio.run(store.facility("F-1")) is not None  # older than what is stored
    project(store, record(None, "300", event="REMOVE", keys={"facility_id": "F-1"}))
    assert asyncio.run(store.facility("F-1")) is None
