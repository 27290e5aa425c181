"""The worker counts each notification delivered, and each failing on its last receive
before the dead-letter queue (MAX_RECEIVE_COUNT, the queue's maxReceiveCount)."""

from __future__ import annotations

import json

import pytest

from module_kit import metrics
from modules.notifications.config import NotificationsSettings
from modules.notifications.handler import make_handler
from modules.notifications.publisher import PushPublisher
from tests.modules.captured_metrics import CapturedMetrics
from tests.modules.notifications.conftest import notification, sqs_event
from tests.modules.notifications.test_handler import broken_publisher


@pytest.fixture(autouse=True)
def metrics_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)


@pytest.fixture
def emitted() -> CapturedMetrics:
    return CapturedMetrics()


def writer(emitted: CapturedMetrics) -> metrics.ModuleMetrics:
    return metrics.ModuleMetrics("notifications", stream=emitted)


def test_each_notification_published_is_counted_delivered(queues, subscriber, emitted):
    publisher = PushPublisher(NotificationsSettings())
    handler = make_handler(publisher, metrics_writer=writer(emitted))
    bad = json.dumps({"notification_id": "N-test-bad1", "kind": "telegram"})
    handler(sqs_event(notification(1).model_dump_json(), bad), None)
    assert emitted.values(metrics.NOTIFICATIONS_DELIVERED, service="notifications") == [1.0]
    assert emitted.values(metrics.NOTIFICATIONS_DEAD_LETTERED) == []  # its first receive


@pytest.mark.parametrize(("receive", "dead_lettered"), [(1, []), (2, []), (3, [1.0, 1.0])])
def test_a_failure_on_the_last_receive_is_counted_dead_lettered(
    queues, monkeypatch, emitted, receive, dead_lettered
):
    # GIVEN the queue's maxReceiveCount is 3, SNS is down and one body is not a Notification
    monkeypatch.setenv("MAX_RECEIVE_COUNT", "3")
    handler = make_handler(broken_publisher(), metrics_writer=writer(emitted))
    bad = json.dumps({"notification_id": "N-test-bad1"})
    event = sqs_event(notification(1).model_dump_json(), bad, receive_count=receive)
    # WHEN both fail on this receive
    result = handler(event, None)
    assert len(result["batchItemFailures"]) == 2
    # THEN they count as dead-lettered only on the 3rd: SQS moves them on
    assert emitted.values(metrics.NOTIFICATIONS_DEAD_LETTERED) == dead_lettered
    assert emitted.values(metrics.NOTIFICATIONS_DELIVERED) == []


def test_the_max_receive_count_comes_from_the_template(deployed):
    env = deployed.env("NotificationsFunction")
    assert env["MAX_RECEIVE_COUNT"] == "5"
    assert NotificationsSettings(push_topic_arn="arn").max_receive_count == 5
