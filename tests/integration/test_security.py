"""Object-level authorization and the gateway's guarantees, on the real stack."""

from __future__ import annotations

import httpx
import pytest

from module_kit.signed_context import IdentitySigner, generate_key_pair
from shared_contracts.identity import IdentityContext, Role


def test_a_driver_never_reaches_another_drivers_load_pass_or_message(api):
    me, other = api.auth(Role.DRIVER, "D-1001"), api.auth(Role.DRIVER, "D-1002")
    # GIVEN another driver's pass and message exist
    their_pass = api.http.post(
        "/gatepass", json={"load_id": "L-6001", "facility_id": "F-DET"}, headers=other
    )
    assert their_pass.status_code == 201
    pass_id = their_pass.json()["pass_id"]
    their_message = api.http.post(
        "/message", json={"body": "private note to dispatch"}, headers=other
    )
    assert their_message.status_code == 201

    # WHEN I ask for them by id: 404, exactly as for ids that do not exist
    for path in ("/loads/L-6001", f"/gatepass/{pass_id}", "/loads/L-6001/events"):
        method = "POST" if path.endswith("events") else "GET"
        kwargs = {"json": {"kind": "arrived", "stop_seq": 1}} if method == "POST" else {}
        r = api.http.request(method, path, headers=me, **kwargs)
        assert r.status_code == 404, path
        assert "D-1002" not in r.text and "F-DET" not in r.text
    assert api.http.get("/gatepass/P-does-not-exist", headers=me).status_code == 404
    # a pass for their load cannot be issued to me either
    r = api.http.post("/gatepass", json={"load_id": "L-6001", "facility_id": "F-DET"}, headers=me)
    assert r.status_code == 404
    # THEN my inbox and lists hold only my own data
    inbox = api.http.get("/message", headers=me).json()["items"]
    assert their_message.json()["message_id"] not in {m["message_id"] for m in inbox}
    assert {m["driver_id"] for m in inbox} <= {"D-1001"}
    assert {p["driver_id"] for p in api.http.get("/gatepass", headers=me).json()["items"]} <= {
        "D-1001"
    }


@pytest.mark.parametrize("how", ["none", "forged key", "for another module", "garbage"])
def test_modules_refuse_identity_contexts_the_gateway_did_not_sign_for_them(stack, how):
    ctx = IdentityContext(sub="D-1002", role=Role.DRIVER, driver_id="D-1002")
    forged_key, _ = generate_key_pair()
    headers = {
        "none": {},
        "forged key": {"x-relay-identity": IdentitySigner(forged_key).sign(ctx, "loads")},
        "for another module": {"x-relay-identity": _gateway_signed(stack, ctx, "message")},
        "garbage": {"x-relay-identity": "eyJzdWIiOiJELTEwMDIifQ"},
    }[how]
    r = httpx.get(stack.module_url("loads") + "/loads", headers=headers, timeout=5)
    assert r.status_code == 401
    assert "L-6001" not in r.text


def _gateway_signed(stack, ctx: IdentityContext, audience: str) -> str:
    key = stack.processes["gateway"].env["RELAY_IDENTITY_SIGNING_KEY"]
    return IdentitySigner(key).sign(ctx, audience)


def test_client_identity_headers_are_ignored_by_the_gateway(api, stack):
    forged = _gateway_signed(
        stack, IdentityContext(sub="D-1002", role=Role.DRIVER, driver_id="D-1002"), "loads"
    )
    r = api.http.get(
        "/loads", headers={**api.auth(Role.DRIVER, "D-1001"), "x-relay-identity": forged}
    )
    assert r.status_code == 200
    assert {ld["driver_id"] for ld in r.json()["items"]} == {"D-1001"}


def test_oversized_and_malformed_bodies_are_refused_at_the_edge(api):
    me = api.auth(Role.DRIVER, "D-1001")
    big = api.http.post(
        "/message",
        content=b'{"body": "' + b"x" * 100_000 + b'"}',
        headers={**me, "content-type": "application/json"},
    )
    assert big.status_code == 413
    bad = api.http.post(
        "/message", content=b'{"body": ', headers={**me, "content-type": "application/json"}
    )
    assert bad.status_code == 400
    assert bad.headers["content-type"] == "application/problem+json"
