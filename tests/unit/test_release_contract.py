"""relay.release.contract without a module: what it sends and how it judges, over
httpx.MockTransport. The real modules' answers are checked in tests/modules."""

from __future__ import annotations

import json

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from module_kit.signed_context import IdentityVerifier
from relay.release.contract import check_contract
from shared_contracts.identity import IdentityContext, Role
from tests.conftest import TEST_IDENTITY_PRIVATE_KEY, TEST_IDENTITY_PUBLIC_KEY

_key = serialization.load_pem_private_key(TEST_IDENTITY_PRIVATE_KEY.encode(), password=None)
assert isinstance(_key, Ed25519PrivateKey)
KEY: Ed25519PrivateKey = _key
BASE = "http://127.0.0.1:9"


def answer(
    status: int, body: object = None, media_type: str = "application/json"
) -> httpx.Response:
    """An answer the client reads from a stream, as from a server (so httpx times it)."""
    content = b"" if body is None else json.dumps(body).encode()
    return httpx.Response(
        status, headers={"content-type": media_type}, stream=httpx.ByteStream(content)
    )


def problem(status: int, code: str) -> httpx.Response:
    body = {"type": f"urn:relay:problem:{code}", "title": code, "status": status, "detail": code}
    return answer(status, body, "application/problem+json")


class FakeLoads:
    """Answers the loads contract as a healthy version with no loads for anyone; records
    what it was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, IdentityContext, bytes]] = []
        self.verifier = IdentityVerifier(TEST_IDENTITY_PUBLIC_KEY, "loads")

    def __call__(self, request: httpx.Request) -> httpx.Response:
        identity = self.verifier.verify(request.headers["x-relay-identity"])
        self.sent.append((request.method, request.url.path, identity, request.content))
        if request.method == "POST":
            return problem(400, "bad-request")
        if request.url.path == "/loads":
            return answer(200, {"items": []})
        return problem(404, "not-found")


def test_a_healthy_version_passes_with_each_request_signed_for_its_role():
    fake = FakeLoads()
    report = check_contract("loads", BASE, identity_key=KEY, transport=httpx.MockTransport(fake))
    assert report.ok, report.problems
    assert report.calls == len(fake.sent) == 1 + 5 + 2
    roles = {(method, path.split("/")[1]): i for method, path, i, _ in fake.sent}
    assert roles[("GET", "loads")] == IdentityContext(
        sub="relay-smoke", role=Role.DRIVER, driver_id="D-SMOKE"
    )
    assert roles[("POST", "dispatch")].role is Role.DISPATCH
    # writes are sent a body that is not JSON, so no handler can run
    assert {body for method, _, _, body in fake.sent if method == "POST"} == {b"{"}


def test_no_answer_is_a_problem_of_every_operation():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    report = check_contract("loads", BASE, identity_key=KEY, transport=httpx.MockTransport(refuse))
    assert {p.check for p in report.problems} == {"reachable"}
    assert {p.operation for p in report.problems} == {
        "GET /loads",
        "GET /loads/{load_id}",
        "POST /loads/{load_id}/events",
        "POST /dispatch/assignments",
    }


@pytest.mark.parametrize(
    ("answer", "check"),
    [
        (lambda: answer(200, {"items": [{"load_id": "L-1"}]}), "response_schema_conformance"),
        (lambda: answer(200, {"loads": []}), "response_schema_conformance"),
        (lambda: problem(500, "internal"), "not_a_server_error"),
        (lambda: problem(404, "no-route"), "operation_exists"),
        (lambda: problem(405, "method-not-allowed"), "operation_exists"),
        (lambda: problem(401, "unauthorized"), "identity_accepted"),
        (lambda: answer(204), "status_code_conformance"),
    ],
)
def test_a_broken_list_answer_is_a_problem_of_that_operation(answer, check):
    healthy = FakeLoads()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path == "/loads":
            return answer()
        return healthy(request)

    report = check_contract("loads", BASE, identity_key=KEY, transport=httpx.MockTransport(handler))
    assert ("GET /loads", check) in {(p.operation, p.check) for p in report.problems}
    assert {p.operation for p in report.problems} == {"GET /loads"}
    assert all("GET /loads ->" in p.detail for p in report.problems)


def test_a_not_found_problem_is_an_answer_but_a_bare_404_is_a_missing_route():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/loads/") and request.method == "GET":
            return answer(404, "Not Found", "text/plain")
        return FakeLoads()(request)

    report = check_contract("loads", BASE, identity_key=KEY, transport=httpx.MockTransport(handler))
    assert ("GET /loads/{load_id}", "operation_exists") in {
        (p.operation, p.check) for p in report.problems
    }


def test_max_examples_bounds_the_reads_and_must_be_positive():
    fake = FakeLoads()
    report = check_contract(
        "loads", BASE, identity_key=KEY, max_examples=2, transport=httpx.MockTransport(fake)
    )
    assert report.ok and report.calls == 1 + 2 + 2
    with pytest.raises(ValueError, match="max_examples"):
        check_contract("loads", BASE, identity_key=KEY, max_examples=0)


def test_the_report_detail_is_json_safe_text():
    def handler(request: httpx.Request) -> httpx.Response:
        return problem(500, "internal")

    report = check_contract("loads", BASE, identity_key=KEY, transport=httpx.MockTransport(handler))
    assert not report.ok
    json.dumps([p.detail for p in report.problems])
