"""Fixtures shared by every tier: the gateway's identity keys and an injected clock.

Nothing here imports moto or the SAM translator: the unit tier must not pay for them (the
emulator fixtures ``aws`` and ``deployed`` are in tests/functional/conftest.py).
"""

from __future__ import annotations

import pytest

from module_kit.signed_context import IdentitySigner, generate_key_pair
from shared_contracts.identity import IdentityContext, Role
from tests.fakes import DatetimeClock

# The gateway's identity key pair, for tests: modules get the public half from the template
# parameter, exactly as deployed; tests sign contexts the way the gateway does.
TEST_IDENTITY_PRIVATE_KEY, TEST_IDENTITY_PUBLIC_KEY = generate_key_pair()
TEST_IDENTITY_SIGNER = IdentitySigner(TEST_IDENTITY_PRIVATE_KEY, ttl_seconds=24 * 3600)


@pytest.fixture
def clock() -> DatetimeClock:
    return DatetimeClock()


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
