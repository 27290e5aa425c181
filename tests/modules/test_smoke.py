"""Each module's smoke list (modules/<name>/smoke.py) through its real Lambda handler.

The pre-traffic hook runs with its Lambda client replaced by the module's handler,
in-process over moto: a healthy release passes; a release with an empty identity public
key (every signed call 401) or a missing table (every read 500) fails, as it would before
taking any traffic.
"""

from __future__ import annotations

import importlib

import pytest

from module_kit import deploy_hooks as hooks
from tests.unit.test_deploy_hooks import (
    ENVIRON,
    EVENT,
    FakeCloudWatch,
    FakeCodeDeploy,
    FakeLambda,
    FakeSecrets,
)

FUNCTIONS = {
    "loads": "LoadsFunction",
    "gatepass": "GatepassFunction",
    "navigate": "NavigateFunction",
    "message": "MessageFunction",
}


def pre_traffic(module: str) -> str:
    handler = importlib.reload(importlib.import_module(f"modules.{module}.handler")).handler
    given = hooks.Clients(
        lambda_=FakeLambda(handler),
        codedeploy=FakeCodeDeploy(),
        secrets=FakeSecrets(),
        cloudwatch=FakeCloudWatch(),
    )
    environ = {**ENVIRON, "RELAY_HOOK_SMOKE": f"modules.{module}.smoke"}
    hooks.run_pre_traffic(EVENT, given, environ)
    return given.codedeploy.outcome


@pytest.mark.parametrize("module", FUNCTIONS)
def test_a_healthy_release_passes_its_smoke(module, deployed, monkeypatch):
    deployed.use_env(monkeypatch, FUNCTIONS[module])
    assert pre_traffic(module) == "Succeeded"


@pytest.mark.parametrize("module", FUNCTIONS)
def test_a_release_without_the_identity_public_key_fails_its_smoke(module, deployed, monkeypatch):
    deployed.use_env(monkeypatch, FUNCTIONS[module])
    monkeypatch.setenv("RELAY_IDENTITY_PUBLIC_KEY", "")
    assert pre_traffic(module) == "Failed"


@pytest.mark.parametrize("module", FUNCTIONS)
def test_a_release_pointed_at_a_missing_table_fails_its_smoke(module, deployed, monkeypatch):
    env = deployed.use_env(monkeypatch, FUNCTIONS[module])
    tables = [k for k in env if k.endswith("_TABLE") and k != "IDEMPOTENCY_TABLE"]
    assert tables
    for name in tables:
        monkeypatch.setenv(name, "relay-no-such-table")
    assert pre_traffic(module) == "Failed"
