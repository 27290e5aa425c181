"""The gate pass module's metrics: passes issued (once per pass) and verified valid live."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from module_kit import metrics
from modules.gatepass.app import create_app
from modules.gatepass.config import GatepassSettings
from modules.gatepass.repository import GatepassRepository
from modules.gatepass.service import GatepassService
from modules.gatepass.signing import KmsSigner
from shared_contracts.gatepass import GatePassCreate
from tests.modules.captured_metrics import CapturedMetrics
from tests.modules.gatepass.test_api import CountingKms, issue, put_load, uncelled_loads, verify


@pytest.fixture(autouse=True)
def metrics_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)


@pytest.fixture
def env(deployed, monkeypatch):
    return uncelled_loads(deployed.use_env(monkeypatch, "GatepassFunction"), monkeypatch)


@pytest.fixture
def emitted() -> CapturedMetrics:
    return CapturedMetrics()


@pytest.fixture
def service(env, clock, emitted):
    settings = GatepassSettings()
    return GatepassService(
        GatepassRepository(settings),
        KmsSigner(settings.gatepass_signing_key_id, kms=CountingKms()),
        clock=clock,
        metrics_writer=metrics.ModuleMetrics("gatepass", stream=emitted),
    )


@pytest.fixture
def client(service):
    return TestClient(create_app(service=service))


def test_a_pass_is_counted_issued_and_verified_when_valid(client, env, clock, emitted):
    # GIVEN a pass issued
    put_load(env, clock)
    first = issue(client)
    assert first.status_code == 201, first.text
    assert emitted.values(metrics.PASSES_ISSUED, service="gatepass") == [1.0]
    # WHEN a gate verifies it at its facility, and a gate elsewhere
    token = first.json()["token"]
    assert verify(client, token).json()["valid"] is True
    assert verify(client, token, facility_id="F-IND").json()["valid"] is False
    # THEN one verification counts: the valid one, live
    assert emitted.values(metrics.PASSES_VERIFIED, service="gatepass", via="live") == [1.0]


def test_a_second_application_of_an_issue_answers_the_stored_pass_uncounted(
    service, env, clock, emitted
):
    # GIVEN an issue applied twice under one key (its idempotency record had expired)
    put_load(env, clock)
    command = GatePassCreate(load_id="L-1", facility_id="F-CHI")
    first = service.issue("D-1001", command, idempotency_key="pass-key-0001")
    again = service.issue("D-1001", command, idempotency_key="pass-key-0001")
    # THEN one pass, counted once
    assert again.pass_id == first.pass_id
    assert emitted.values(metrics.PASSES_ISSUED) == [1.0]
