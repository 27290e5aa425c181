"""The tier's own plumbing (tests/contracts/pacts.py), without a module or a verifier: a
changed pact is rewritten and reported, the hop signs the caller an interaction names as
the gateway would, and a provider state no module can set up is reported, not retried."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from pact import Pact

from module_kit.signed_context import IdentityVerifier
from shared_contracts.identity import InvalidIdentityError, Role
from tests.conftest import TEST_IDENTITY_PUBLIC_KEY
from tests.contracts.gateway import ISSUER
from tests.contracts.pacts import (
    EXAMPLE_SIGNER,
    STATE_PATH,
    GatewayHop,
    identity_context_example,
    write_pact,
)


def a_pact(status: int) -> Pact:
    pact = Pact("gateway", "loads").with_specification("V4")
    pact.upon_receiving("a call").with_request("GET", "/loads").will_respond_with(status)
    return pact


def test_a_changed_pact_is_rewritten_and_reported_an_unchanged_one_is_left(tmp_path):
    out = tmp_path / "pacts"
    assert "missing" in (write_pact(a_pact(200), "gateway", "loads", tmp_path / "a", out) or "")
    assert write_pact(a_pact(200), "gateway", "loads", tmp_path / "b", out) is None
    assert "stale" in (write_pact(a_pact(404), "gateway", "loads", tmp_path / "c", out) or "")
    written = json.loads((out / "gateway-loads.json").read_text())
    assert written["interactions"][0]["response"]["status"] == 404


def seen_by_module(states=None):
    """A hop in front of an app that answers the headers it got."""

    async def echo(scope, receive, send):
        got = {k.decode(): v.decode() for k, v in scope["headers"]}
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": json.dumps(got).encode()})

    hop = GatewayHop(echo, "loads", states or {})
    return hop, TestClient(hop)


def test_the_hop_signs_the_caller_an_interaction_names_for_the_module():
    _, client = seen_by_module()
    example = EXAMPLE_SIGNER.sign(identity_context_example(Role.DRIVER, "D-1001"), "loads")
    verifier = IdentityVerifier(TEST_IDENTITY_PUBLIC_KEY, "loads")
    with pytest.raises(InvalidIdentityError):  # the example is signed by nobody trusted
        verifier.verify(example)
    got = client.get("/loads", headers={"x-relay-identity": example}).json()
    assert verifier.verify(got["x-relay-identity"]).driver_id == "D-1001"
    # the app's pacts carry its bearer token, which the gateway turns into the same context
    token = ISSUER.mint("D-1002", Role.DRIVER, "D-1002")
    got = client.post("/loads/L-1/events", headers={"authorization": f"Bearer {token}"}).json()
    assert "authorization" not in got
    assert verifier.verify(got["x-relay-identity"]).driver_id == "D-1002"
    assert got["idempotency-key"].startswith("gw-")  # a write always has a key at a module
    kept = client.post("/loads/L-1/events", headers={"idempotency-key": "app-key-0001"}).json()
    assert kept["idempotency-key"] == "app-key-0001"


def test_a_state_is_set_up_its_values_answered_and_a_missing_one_reported():
    setups = []
    hop, client = seen_by_module(
        {"a load": lambda params: setups.append(params) or {"token": "t-1"}}
    )
    known = client.post(STATE_PATH, json={"state": "a load", "params": {"n": 1}, "action": "setup"})
    assert known.json() == {"token": "t-1"} and setups == [{"n": 1}]
    unknown = client.post(STATE_PATH, json={"state": "no such", "action": "setup"})
    # answered 200 (Pact's core would retry a failure for minutes), reported by the hop
    assert unknown.status_code == 200
    assert hop.failures == ["loads has no setup for provider state 'no such'"]
    client.post(STATE_PATH, json={"state": "a load", "action": "teardown"})
    assert len(setups) == 1
