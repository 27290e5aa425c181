"""No route is reachable without a valid token, and roles are enforced per route."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from shared_contracts.identity import Role


@pytest.mark.parametrize(
    "path",
    [
        "/loads",
        "/loads/L-1",
        "/gatepass",
        "/navigate",
        "/message",
        "/dispatch/assignments",
        "/gatepass/verify",
    ],
)
def test_every_protected_route_needs_a_token(gateway, upstream, path):
    r = gateway.get(path)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["type"] == "urn:relay:problem:unauthorized"
    assert not upstream.calls


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer not-a-jwt",
        "Basic dXNlcjpwYXNz",
        "Bearer ",
    ],
)
def test_garbage_tokens_are_refused(gateway, upstream, authorization):
    r = gateway.get("/loads", headers={"authorization": authorization})
    assert r.status_code == 401 and not upstream.calls


def test_expired_token_is_refused(gateway, upstream, tokens):
    old = tokens.mint(
        "D-1001", Role.DRIVER, "D-1001", now=(datetime.now(UTC) - timedelta(days=2)).timestamp()
    )
    r = gateway.get("/loads", headers={"authorization": f"Bearer {old}"})
    assert r.status_code == 401 and r.json()["detail"] == "token expired"


def test_role_not_listed_for_the_route_is_forbidden(gateway, upstream, bearer):
    r = gateway.post("/dispatch/assignments", json={}, headers=bearer(Role.DRIVER))
    assert r.status_code == 403 and not upstream.calls
    r = gateway.post("/gatepass/verify", json={}, headers=bearer(Role.DRIVER))
    assert r.status_code == 403


def test_public_keys_need_no_token(gateway, upstream):
    upstream.get("http://gatepass.test/gatepass/keys").mock(
        return_value=httpx.Response(200, json={"keys": []})
    )
    r = gateway.get("/gatepass/keys")
    assert r.status_code == 200
    assert "x-relay-identity" not in upstream.calls.last.request.headers


def test_unknown_path_is_a_404_problem(gateway, bearer):
    r = gateway.get("/admin", headers=bearer())  # unknown paths answer before auth
    assert r.status_code == 404 and r.json()["type"] == "urn:relay:problem:no-route"


@pytest.mark.parametrize(
    "path", ["/loads/../dispatch/assignments", "/loads/%2e%2e/x", "/loads/a%2Fb"]
)
def test_dot_segments_and_encoded_slashes_are_refused(gateway, upstream, bearer, path):
    r = gateway.get(path, headers=bearer())
    # (a client may normalise the first path itself: then the role check stops it)
    assert 400 <= r.status_code < 500 and not upstream.calls


def test_wrong_content_type_and_oversized_bodies_never_reach_a_module(gateway, upstream, bearer):
    r = gateway.post("/message", content=b"hi", headers={**bearer(), "content-type": "text/plain"})
    assert r.status_code == 415
    r = gateway.post(
        "/message",
        content=b"{" + b" " * 70000 + b"}",
        headers={**bearer(), "content-type": "application/json"},
    )
    assert r.status_code == 413
    assert not upstream.calls
