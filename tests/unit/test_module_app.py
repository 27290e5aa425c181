"""module_kit.app.module_app: what every module's app has before its own routes."""

from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import Depends
from fastapi.testclient import TestClient

from module_kit.app import app_service, module_app, release_version
from module_kit.http import DriverIdentity
from module_kit.lambda_entry import lambda_handler
from shared_contracts.identity import IdentityContext, Role
from tests.conftest import TEST_IDENTITY_PUBLIC_KEY, TEST_IDENTITY_SIGNER
from tests.unit.test_lambda_metrics import NoVersionContext, url_event


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


# --- x-relay-version: which release produced an answer --------------------------------


def _versioned_app(version: str | None = None) -> TestClient:
    app = module_app("probe", title="Relay probe", service=Greeter(), version=version)

    @app.get("/greet")
    def greet(identity: DriverIdentity, svc: Service) -> dict[str, str]:
        return svc.greet(identity.driver)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("unhandled")

    return TestClient(app, raise_server_exceptions=False)


def test_every_answer_names_the_release_that_produced_it(monkeypatch):
    # GIVEN a module app built while RELAY_VERSION names the release
    monkeypatch.setenv("RELAY_IDENTITY_PUBLIC_KEY", TEST_IDENTITY_PUBLIC_KEY)
    monkeypatch.setenv("RELAY_VERSION", "v42")
    client = _versioned_app()
    # WHEN it answers a route, an unknown route, an identity refusal, an unhandled error,
    # a request over the header limits and a health check
    answers = {
        "ok": client.get("/greet", headers=_signed("probe")),
        "no route": client.get("/nowhere"),
        "unauthorized": client.get("/greet"),
        "unhandled": client.get("/boom"),
        "guard": client.get("/greet", headers={f"x-h{i}": "1" for i in range(120)}),
        "health": client.get("/healthz"),
    }
    # THEN each one, whatever its status, carries the version
    assert {k: r.status_code for k, r in answers.items()} == {
        "ok": 200,
        "no route": 404,
        "unauthorized": 401,
        "unhandled": 500,
        "guard": 431,
        "health": 200,
    }
    assert answers["no route"].headers["content-type"] == "application/problem+json"
    assert {k: r.headers.get("x-relay-version") for k, r in answers.items()} == dict.fromkeys(
        answers, "v42"
    )


@pytest.mark.parametrize(
    ("argument", "environ", "expected"),
    [
        ("v9", {"RELAY_VERSION": "v1", "AWS_LAMBDA_FUNCTION_VERSION": "3"}, "v9"),
        (None, {"RELAY_VERSION": "v1", "AWS_LAMBDA_FUNCTION_VERSION": "3"}, "v1"),
        (None, {"RELAY_VERSION": "", "AWS_LAMBDA_FUNCTION_VERSION": "3"}, "3"),
        (None, {"AWS_LAMBDA_FUNCTION_VERSION": "$LATEST"}, "$LATEST"),
        (None, {}, "dev"),
    ],
)
def test_the_version_is_the_argument_then_relay_version_then_lambdas_then_dev(
    monkeypatch, argument, environ, expected
):
    for name in ("RELAY_VERSION", "AWS_LAMBDA_FUNCTION_VERSION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert release_version(argument, environ) == expected
    assert _versioned_app(argument).get("/healthz").headers["x-relay-version"] == expected


def test_the_version_is_read_once_when_the_app_is_built(monkeypatch):
    monkeypatch.setenv("RELAY_VERSION", "v1")
    client = _versioned_app()
    monkeypatch.setenv("RELAY_VERSION", "v2")
    assert client.get("/healthz").headers["x-relay-version"] == "v1"


@pytest.mark.parametrize("bad", ["two words", "é", "x" * 65, " "])
def test_a_version_that_cannot_be_a_header_value_stops_the_app_at_creation(bad):
    with pytest.raises(ValueError, match="release version"):
        module_app("probe", title="t", service=Greeter(), version=bad)


def test_the_version_reaches_a_function_url_answer_through_the_lambda_entry(monkeypatch):
    # GIVEN the app as Lambda builds it at import: AWS_LAMBDA_FUNCTION_VERSION set
    monkeypatch.delenv("RELAY_VERSION", raising=False)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_VERSION", "7")
    handler = lambda_handler(_versioned_app().app)
    # WHEN a function URL event for a missing route and for the health check arrive
    missing = handler(url_event("/nowhere"), NoVersionContext())
    health = handler(url_event("/healthz"), NoVersionContext())
    # THEN the Lambda response's headers carry the version
    assert missing["statusCode"] == 404
    assert missing["headers"]["x-relay-version"] == "7"
    assert health["headers"]["x-relay-version"] == "7"
