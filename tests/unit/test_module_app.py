"""module_kit.app.module_app: what every module's app has before its own routes."""

from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import Depends
from fastapi.testclient import TestClient

from module_kit.app import app_service, module_app
from module_kit.http import DriverIdentity
from shared_contracts.identity import IdentityContext, Role
from tests.conftest import TEST_IDENTITY_PUBLIC_KEY, TEST_IDENTITY_SIGNER


class Greeter:
    def greet(self, driver: str) -> dict[str, str]:
        return {"hello": driver}


Service = Annotated[Greeter, Depends(app_service)]
DRIVER = IdentityContext(sub="u-1", role=Role.DRIVER, driver_id="D-1")


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.setenv("RELAY_IDENTITY_PUBLIC_KEY", TEST_IDENTITY_PUBLIC_KEY)
    app = module_app("probe", title="Relay probe", service=Greeter())

    @app.get("/greet")
    def greet(identity: DriverIdentity, svc: Service) -> dict[str, str]:
        return svc.greet(identity.driver)

    return TestClient(app)


def _signed(audience: str) -> dict[str, str]:
    return {"x-relay-identity": TEST_IDENTITY_SIGNER.sign(DRIVER, audience=audience)}


def test_routes_reach_the_service_for_a_context_signed_for_this_module(client):
    response = client.get("/greet", headers=_signed("probe"))
    assert response.status_code == 200
    assert response.json() == {"hello": "D-1"}
    assert response.headers["x-request-id"]


def test_contexts_for_another_module_or_none_are_refused_as_problems(client):
    for headers in ({}, _signed("loads")):
        response = client.get("/greet", headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == "urn:relay:problem:unauthorized"


def test_health_answers_outside_the_published_contract(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    document = client.get("/openapi.json").json()
    assert "/healthz" not in document["paths"]
    assert "/greet" in document["paths"]
    assert document["info"] == {"title": "Relay probe", "version": "1"}


def test_unknown_routes_are_problems(client):
    response = client.get("/nowhere")
    assert response.status_code == 404
    assert response.json()["type"] == "urn:relay:problem:no-route"


def test_idempotency_store_is_kept_only_when_given(client):
    assert not hasattr(client.app.state, "idempotency")
    store = object()
    app = module_app("probe", title="t", service=Greeter(), idempotency=store)  # type: ignore[arg-type]
    assert app.state.idempotency is store
