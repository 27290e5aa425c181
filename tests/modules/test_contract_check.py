"""The contract smoke check (relay.release.contract) against real module apps over moto.

Each app is served by uvicorn on 127.0.0.1 for the test, as a candidate version is served
locally. The current loads and gatepass apps pass; copies of the loads app broken the ways a
release breaks its contract (a field dropped from a list's items, a 500, a removed route, a
different identity key) fail with a problem naming the operation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from module_kit.signed_context import generate_key_pair
from modules.gatepass.app import create_app as create_gatepass_app
from modules.loads.app import create_app as create_loads_app
from relay import demo
from relay.release.contract import ContractReport, check_contract
from relay.stack import free_port
from shared_contracts.identity import Role
from tests.conftest import TEST_IDENTITY_PRIVATE_KEY, identity_header_for

SMOKE_DRIVER = "D-SMOKE"
_key = serialization.load_pem_private_key(TEST_IDENTITY_PRIVATE_KEY.encode(), password=None)
assert isinstance(_key, Ed25519PrivateKey)
KEY: Ed25519PrivateKey = _key  # the gateway's signing key, as the release controller holds it
SERVER_START_SECONDS = 5.0


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """``app`` on 127.0.0.1 in a thread of this process (moto's patch reaches it): its URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_SECONDS
    while not server.started:  # a server starting, not a clock: nothing to inject
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(SERVER_START_SECONDS)


def check(app: FastAPI, module: str = "loads") -> ContractReport:
    with served(app) as url:
        return check_contract(module, url, identity_key=KEY, driver=SMOKE_DRIVER)


@pytest.fixture
def loads_app(deployed, monkeypatch) -> FastAPI:
    """The current loads app, with one load assigned to the smoke driver (so a list has an
    item whose shape the contract checks)."""
    deployed.use_env(monkeypatch, "LoadsFunction")
    app = create_loads_app()
    assign = demo.assignment("L-9901", SMOKE_DRIVER, ["F-CHI", "F-IND"], datetime.now(UTC))
    dispatch = identity_header_for("loads")(Role.DISPATCH, None)
    answer = TestClient(app).post(
        "/dispatch/assignments", json=assign.model_dump(mode="json"), headers=dispatch
    )
    assert answer.status_code == 201, answer.text
    return app


def replace_route(app: FastAPI, path: str, method: str, endpoint: Any | None) -> None:
    """Remove ``method path`` from ``app``; with ``endpoint``, serve that there instead."""
    app.router.routes[:] = [
        r
        for r in app.router.routes
        if not (isinstance(r, APIRoute) and r.path == path and method in (r.methods or ()))
    ]
    if endpoint is not None:
        app.add_api_route(path, endpoint, methods=[method])


def problems_of(report: ContractReport) -> set[tuple[str, str]]:
    return {(p.operation, p.check) for p in report.problems}


def test_the_current_loads_version_keeps_its_contract(loads_app):
    report = check(loads_app)
    assert report.ok, report.problems
    # GET /loads (1 distinct case), GET /loads/{load_id} (5), one probe per write (2)
    assert report.calls == 8


def test_the_current_gatepass_version_keeps_its_contract(deployed, monkeypatch):
    deployed.use_env(monkeypatch, "GatepassFunction")
    report = check(create_gatepass_app(), "gatepass")
    assert report.ok, report.problems
    assert report.calls > 5


def test_a_version_whose_list_items_lack_a_required_field_fails(loads_app):
    # GIVEN a version whose GET /loads drops "status" from each item
    live = TestClient(loads_app)
    signed = identity_header_for("loads")(Role.DRIVER, SMOKE_DRIVER)
    items = live.get("/loads", headers=signed).json()["items"]
    assert items and "status" in items[0]

    def list_loads() -> JSONResponse:
        return JSONResponse(
            {"items": [{k: v for k, v in i.items() if k != "status"} for i in items]}
        )

    replace_route(loads_app, "/loads", "GET", list_loads)
    # WHEN its contract is checked THEN GET /loads breaks the response schema, and only it
    report = check(loads_app)
    assert problems_of(report) == {("GET /loads", "response_schema_conformance")}
    assert "status" in report.problems[0].detail


def test_a_version_that_answers_500_fails(loads_app):
    def list_loads() -> None:
        raise RuntimeError("the new version lost its table")

    replace_route(loads_app, "/loads", "GET", list_loads)
    report = check(loads_app)
    assert ("GET /loads", "not_a_server_error") in problems_of(report)
    assert not report.ok


def test_a_version_without_an_operation_fails_naming_it(loads_app):
    # GIVEN a version that renamed GET /loads/{load_id} and POST /dispatch/assignments
    replace_route(loads_app, "/loads/{load_id}", "GET", None)
    replace_route(loads_app, "/dispatch/assignments", "POST", None)
    report = check(loads_app)
    assert {op for op, check in problems_of(report) if check == "operation_exists"} == {
        "GET /loads/{load_id}",
        "POST /dispatch/assignments",
    }


def test_a_version_that_refuses_the_gateways_identity_fails(deployed, monkeypatch):
    deployed.use_env(monkeypatch, "LoadsFunction")
    monkeypatch.setenv("RELAY_IDENTITY_PUBLIC_KEY", generate_key_pair()[1])
    report = check(create_loads_app())
    assert ("GET /loads", "identity_accepted") in problems_of(report)


def test_nothing_is_written_and_the_requests_are_the_same_every_run(loads_app):
    # GIVEN a version that records what it is asked
    seen: list[str] = []

    async def record(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(f"{scope['method']} {scope['path']}?{scope['query_string'].decode()}")
        await loads_app(scope, receive, send)

    with served(record) as url:  # type: ignore[arg-type]
        first = check_contract("loads", url, identity_key=KEY, max_examples=3)
        requests_first = list(seen)
        seen.clear()
        second = check_contract("loads", url, identity_key=KEY, max_examples=3)
    # THEN two runs send the same requests, bounded by max_examples per read
    assert first.ok and second.ok
    assert requests_first == seen
    assert len(seen) == first.calls == 1 + 3 + 2
    # AND the smoke driver still has only the load it was given: no write ran
    signed = identity_header_for("loads")(Role.DRIVER, SMOKE_DRIVER)
    items = TestClient(loads_app).get("/loads", headers=signed).json()["items"]
    assert [(i["load_id"], i.get("events", [])) for i in items] == [("L-9901", [])]
