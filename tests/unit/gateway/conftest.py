from __future__ import annotations

import pytest
import respx
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.auth import DevTokenAuthenticator
from gateway.config import GatewaySettings
from gateway.routes import RouteTable
from shared_contracts.identity import Role

SECRET = "unit-test-secret-unit-test-secret-0123"
UPSTREAMS = {
    "RELAY_UPSTREAM_LOADS": "http://loads.test",
    "RELAY_UPSTREAM_GATEPASS": "http://gatepass.test",
    "RELAY_UPSTREAM_NAVIGATE": "http://navigate.test",
    "RELAY_UPSTREAM_MESSAGE": "http://message.test",
}


@pytest.fixture
def settings() -> GatewaySettings:
    return GatewaySettings(stage="test", dev_token_secret=SECRET)


@pytest.fixture
def tokens(settings) -> DevTokenAuthenticator:
    return DevTokenAuthenticator(SECRET, issuer=settings.token_issuer,
                                 audience=settings.token_audience)


@pytest.fixture
def bearer(tokens):
    def make(role: Role = Role.DRIVER, driver_id: str | None = "D-1001") -> dict[str, str]:
        return {"authorization": "Bearer " + tokens.mint(driver_id or "ops-1", role, driver_id)}
    return make


@pytest.fixture
def upstream():
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mock:
        yield mock


@pytest.fixture
def gateway(settings, upstream):
    routes = RouteTable.load(settings.routes_file, env=UPSTREAMS)
    with TestClient(create_app(settings, routes=routes)) as client:
        yield client
