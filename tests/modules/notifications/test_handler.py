"""The SQS batch handler: partial batch failures, lazy configuration, the sample events."""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
from pathlib import Path

import boto3
import pytest

from modules.notifications import handler as handler_module
from modules.notifications.config import NotificationsSettings
from modules.notifications.handler import make_handler
from modules.notifications.publisher import PushPublisher
from shared_contracts.notifications import Notification
from tests.modules.notifications.conftest import notification, sqs_event

EVENTS = Path(__file__).resolve().parents[3] / "events" / "notifications"


def broken_publisher() -> PushPublisher:
    return PushPublisher(
        NotificationsSettings(push_topic_arn="arn:aws:sns:us-east-1:123456789012:no-such-topic")
    )


def test_only_the_invalid_record_is_reported_as_failed(queues, subscriber):
    # GIVEN a batch with a valid notification and a body that is not a Notification
    good = notification(1).model_dump_json()
    bad = json.dumps({"notification_id": "N-test-bad1", "kind": "telegram"})
    # WHEN the handler processes it
    result = make_handler()(sqs_event(good, bad), None)
    # THEN only the invalid record fails (and will dead-letter); the valid one is published
    assert result == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}
    assert subscriber.notification_ids() == ["N-test-0001"]


def test_non_json_bodies_fail_and_unknown_fields_are_ignored(queues, subscriber):
    # GIVEN bodies that are not JSON, and one from a newer producer with a field this
    # consumer does not know (a tolerant reader: docs/contracts.md)
    extra = {**notification(1).model_dump(mode="json"), "priority": "high"}
    event = sqs_event("not json", json.dumps(extra), "[]")
    # WHEN the batch is handled
    result = make_handler()(event, None)
    # THEN the malformed records fail, and the newer notification is delivered
    assert [f["itemIdentifier"] for f in result["batchItemFailures"]] == ["m-0", "m-2"]
    assert len(subscriber.drain()) == 1


def test_every_record_fails_when_sns_is_down_without_raising(queues):
    # GIVEN SNS refusing every publish
    handler = make_handler(broken_publisher())
    # WHEN a batch of valid notifications arrives
    result = handler(sqs_event(*(notification(i).model_dump_json() for i in range(3))), None)
    # THEN each record is reported failed (retried one by one), not the invocation as a whole
    assert result == {"batchItemFailures": [{"itemIdentifier": f"m-{i}"} for i in range(3)]}


def test_each_failure_is_logged_with_the_notification_id(queues, caplog):
    # GIVEN one malformed notification and one SNS cannot take
    event = sqs_event(
        json.dumps({"notification_id": "N-test-malformed"}),
        notification(5).model_dump_json(),
        receive_count=3,
    )
    # WHEN they fail
    with caplog.at_level(logging.WARNING, logger="relay.notifications"):
        make_handler(broken_publisher())(event, None)
    # THEN the log names each notification, and the retry attempt of the publish failure
    lines = [r.getMessage() for r in caplog.records if r.name == "relay.notifications"]
    assert any("N-test-malformed" in line and "m-0" in line for line in lines)
    assert any("N-test-0005" in line and "receive 3" in line for line in lines)


def test_import_needs_no_env_and_missing_config_fails_the_invocation(monkeypatch):
    # GIVEN no function environment and no way to reach AWS
    monkeypatch.delenv("PUSH_TOPIC_ARN", raising=False)
    monkeypatch.setattr(boto3, "client", lambda *a, **k: pytest.fail("AWS touched"))
    # WHEN the module is imported
    module = importlib.reload(handler_module)
    # THEN it imports fine, and only an invocation reports the missing configuration
    with pytest.raises(Exception, match="push_topic_arn"):
        module.handler(sqs_event(notification().model_dump_json()), None)


@pytest.mark.parametrize("path", sorted(EVENTS.glob("*.json")), ids=lambda p: p.stem)
def test_sample_events(path, queues, subscriber):
    # GIVEN a sample SQS batch event
    event = json.loads(path.read_text())
    records = event["Records"]
    valid = {}
    for r in records:
        with contextlib.suppress(ValueError):
            valid[r["messageId"]] = Notification.model_validate_json(r["body"]).notification_id
    # WHEN the function's handler processes it
    result = make_handler()(event, None)
    # THEN exactly the records that are not Notifications fail, and the others are published
    failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
    assert failed == {r["messageId"] for r in records} - valid.keys()
    assert sorted(subscriber.notification_ids()) == sorted(valid.values())
