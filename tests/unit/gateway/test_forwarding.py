"""The gateway forwards to the module the route table names, with identity, and nothing else."""

from __future__ import annotations

import httpx
import pytest

from shared_contracts.identity import IdentityContext, Role
from tests.conftest import TEST_IDENTITY_SIGNER
from tests.unit.gateway.conftest import identity_of


def test_forwards_path_query_and_identity(gateway, upstream, bearer):
    # GIVEN the loads module answers
    route = upstream.get("http://loads.test/loads/L-1", params={"x": "1"}).mock(
        return_value=httpx.Response(200, json={"load_id": "L-1"})
    )
    # WHEN a driver asks through the gateway
    r = gateway.get("/loads/L-1?x=1", headers=bearer(Role.DRIVER, "D-1001"))
    # THEN the module got the driver's identity context and the answer comes back unchanged
    assert r.status_code == 200 and r.json() == {"load_id": "L-1"}
    sent = route.calls.last.request
    ctx = identity_of(sent, "loads")
    assert (ctx.role, ctx.driver_id) == (Role.DRIVER, "D-1001")
    assert sent.headers["x-request-id"] == r.headers["x-request-id"]
    assert "authorization" not in sent.headers


def test_client_supplied_identity_headers_are_never_forwarded(gateway, upstream, bearer):
    route = upstream.get("http://loads.test/loads").mock(return_value=httpx.Response(200, json={}))
    forged = TEST_IDENTITY_SIGNER.sign(
        IdentityContext(sub="D-1002", role=Role.DRIVER, driver_id="D-1002"), audience="loads"
    )
    gateway.get(
        "/loads",
        headers={
            **bearer(Role.DRIVER, "D-1001"),
            "x-relay-identity": forged,
            "x-relay-internal": "1",
            "cookie": "a=b",
        },
    )
    sent = route.calls.last.request
    assert identity_of(sent, "loads").driver_id == "D-1001"
    assert "x-relay-internal" not in sent.headers and "cookie" not in sent.headers


def test_post_body_and_idempotency_key_are_forwarded(gateway, upstream, bearer):
    route = upstream.post("http://message.test/message").mock(
        return_value=httpx.Response(201, json={"message_id": "m1"})
    )
    body = b'{ "body": "running late" }'  # not how a JSON encoder writes it: sent verbatim
    r = gateway.post(
        "/message",
        content=body,
        headers={**bearer(), "idempotency-key": "k-123456", "content-type": "application/json"},
    )
    assert r.status_code == 201
    sent = route.calls.last.request
    assert sent.content == body
    assert sent.headers["idempotency-key"] == "k-123456"


def test_module_errors_pass_through_unchanged(gateway, upstream, bearer):
    problem = {"type": "urn:relay:problem:not-found", "title": "Not found", "status": 404}
    upstream.get("http://loads.test/loads/L-9").mock(
        return_value=httpx.Response(
            404, json=problem, headers={"content-type": "application/problem+json"}
        )
    )
    r = gateway.get("/loads/L-9", headers=bearer())
    assert r.status_code == 404 and r.json() == problem
    assert r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("path", "module_url"),
    [
        ("/gatepass/P-1", "http://gatepass.test/gatepass/P-1"),
        ("/navigate", "http://navigate.test/navigate"),
        ("/message", "http://message.test/message"),
    ],
)
def test_each_prefix_reaches_its_module(gateway, upstream, bearer, path, module_url):
    route = upstream.get(module_url).mock(return_value=httpx.Response(200, json={}))
    assert gateway.get(path, headers=bearer()).status_code == 200
    assert route.called


def test_unreachable_module_is_503_with_retry_after(gateway, upstream, bearer):
    upstream.get("http://loads.test/loads").mock(side_effect=httpx.ConnectError("refused"))
    r = gateway.get("/loads", headers=bearer())
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert r.json()["type"] == "urn:relay:problem:unavailable"


def test_slow_module_without_a_cached_copy_is_503_with_retry_after(gateway, upstream, bearer):
    upstream.get("http://loads.test/loads").mock(side_effect=httpx.ReadTimeout("slow"))
    r = gateway.get("/loads", headers=bearer())
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert r.headers["content-type"] == "application/problem+json"
    assert "timeout" in r.json()["detail"]


@pytest.mark.parametrize("key", ["short", "has spaces in it", "x" * 65, "semi;colon-key"])
def test_malformed_idempotency_keys_are_refused_at_the_edge(gateway, upstream, bearer, key):
    r = gateway.post("/message", json={"body": "hi"}, headers={**bearer(), "idempotency-key": key})
    assert r.status_code == 400
    assert r.json()["type"] == "urn:relay:problem:invalid-idempotency-key"
    assert not upstream.calls
