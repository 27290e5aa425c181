"""The message module counts each push it queues (relay_notifications_enqueued_total)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from module_kit import metrics
from modules.message.app import create_app
from modules.message.config import MessageSettings
from modules.message.repository import MessageRepository
from modules.message.service import MessageService
from tests.modules.captured_metrics import CapturedMetrics
from tests.modules.message.test_api import DISPATCH, DRIVER


@pytest.fixture(autouse=True)
def metrics_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)


@pytest.fixture
def emitted() -> CapturedMetrics:
    return CapturedMetrics()


@pytest.fixture
def service(deployed, monkeypatch, clock, emitted):
    deployed.use_env(monkeypatch, "MessageFunction")
    writer = metrics.ModuleMetrics("message", stream=emitted)
    return MessageService(MessageRepository(MessageSettings()), clock=clock, metrics_writer=writer)


def test_each_push_queued_is_counted_and_a_failed_one_is_not(service, emitted, monkeypatch):
    client = TestClient(create_app(service=service))
    # WHEN dispatch messages a driver and the driver answers
    sent = {"driver_id": "D-1001", "body": "Dock 4"}
    assert client.post("/dispatch/messages", json=sent, headers=DISPATCH).status_code == 201
    assert client.post("/message", json={"body": "ok"}, headers=DRIVER).status_code == 201
    # THEN each push queued counts, under the message service
    assert emitted.values(metrics.NOTIFICATIONS_ENQUEUED, service="message") == [1.0, 1.0]
    # AND a push the queue refused does not
    monkeypatch.setattr(service.repository, "enqueue_notification", lambda n: False)
    assert client.post("/message", json={"body": "again"}, headers=DRIVER).status_code == 201
    assert emitted.values(metrics.NOTIFICATIONS_ENQUEUED) == [1.0, 1.0]
