from __future__ import annotations

import pytest
import respx
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.config import GatewaySettings
from gateway.routing.routes import RouteTable
from module_kit.signed_context import IdentityVerifier
from relay.devissuer import DevIssuer
from shared_contracts.identity import Role
from tests.conftest import TEST_IDENTITY_PRIVATE_KEY, TEST_IDENTITY_PUBLIC_KEY

UPSTREAMS = {
    "RELAY_UPSTREAM_LOADS": "http://loads.test",
    "RELAY_UPSTREAM_GATEPASS": "http://gatepass.test",
    "RELAY_UPSTREAM_NAVIGATE": "http://navigate.test",
    "RELAY_UPSTREAM_MESSAGE": "http://message.test",
}
ISSUER = DevIssuer.generate()  # one RSA key for the session: generating one costs ~50 ms


@pytest.fixture(scope="session")
def jwks_file(tmp_path_factory) -> str:
    return "file://" + str(ISSUER.write_jwks(tmp_path_factory.mktemp("issuer")))


@pytest.fixture
def settings(jwks_file) -> GatewaySettings:
    return GatewaySettings(
        stage="test",
        token_issuer=ISSUER.issuer,
        jwks_url=jwks_file,
        token_client_ids=ISSUER.client_id,
        identity_signing_key=TEST_IDENTITY_PRIVATE_KEY,
        upstream_transport="httpcore",  # the pool respx mocks
        rate_limit_driver="1000/1000",
        rate_limit_ops="1000/1000",
        rate_limit_gate="1000/1000",
        rate_limit_anonymous="1000/1000",
    )


@pytest.fixture
def tokens() -> DevIssuer:
    return ISSUER


@pytest.fixture
def bearer(tokens):
    def make(role: Role = Role.DRIVER, driver_id: str | None = "D-1001") -> dict[str, str]:
        sub = driver_id or f"{role.value}-1"
        return {"authorization": "Bearer " + tokens.mint(sub, role, driver_id)}

    return make


def identity_of(request, module: str):
    """The identity context a module would verify from a forwarded request."""
    return IdentityVerifier(TEST_IDENTITY_PUBLIC_KEY, module).verify(
        request.headers["x-relay-identity"]
    )


@pytest.fixture
def upstream():
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mock:
        yield mock


@pytest.fixture
def gateway(settings, upstream):
    routes = RouteTable.load(settings.routes_file, env=UPSTREAMS)
    with TestClient(create_app(settings, routes=routes)) as client:
        yield client
