"""Fixtures shared by every tier.

``aws`` runs moto in-process (no network); ``deployed`` creates every table, queue, topic
and key of ``template.yaml`` in it, exactly as the local stack does against moto server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from moto import mock_aws

from module_kit.identity import IdentitySigner, generate_key_pair
from relay.cloud import LocalCloud, StackResult
from shared_contracts.identity import IdentityContext, Role

# The gateway's identity key pair, for tests: modules get the public half from the template
# parameter, exactly as deployed; tests sign contexts the way the gateway does.
TEST_IDENTITY_PRIVATE_KEY, TEST_IDENTITY_PUBLIC_KEY = generate_key_pair()
TEST_IDENTITY_SIGNER = IdentitySigner(TEST_IDENTITY_PRIVATE_KEY, ttl_seconds=24 * 3600)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch):
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield


@dataclass
class Deployed:
    cloud: LocalCloud
    stack: StackResult

    def env(self, function: str) -> dict[str, str]:
        return self.cloud.function_env(self.stack, function)

    def output(self, app: str, name: str) -> str:
        return self.stack.children[app].outputs[name]

    def use_env(self, monkeypatch: pytest.MonkeyPatch, function: str) -> dict[str, str]:
        env = self.env(function)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return env


@pytest.fixture
def deployed(aws) -> Deployed:
    cloud = LocalCloud()
    return Deployed(cloud, cloud.deploy(parameters={"IdentityPublicKey": TEST_IDENTITY_PUBLIC_KEY}))


class Clock:
    """An injected clock tests move by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 22, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def identity_context(role: Role = Role.DRIVER, driver_id: str | None = "D-1001") -> IdentityContext:
    return IdentityContext(
        sub=driver_id or f"{role.value}-user",
        role=role,
        driver_id=driver_id if role is Role.DRIVER else None,
    )


def identity_header_for(module: str):
    """``identity_header(role, driver_id)``: the signed context the gateway sends ``module``."""

    def identity_header(
        role: Role = Role.DRIVER, driver_id: str | None = "D-1001"
    ) -> dict[str, str]:
        token = TEST_IDENTITY_SIGNER.sign(identity_context(role, driver_id), audience=module)
        return {"x-relay-identity": token}

    return identity_header
