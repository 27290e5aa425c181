"""PushPublisher against moto: what a push topic subscriber receives."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from modules.notifications.config import NotificationsSettings
from modules.notifications.publisher import PushPublisher
from shared_contracts.notifications import NotificationKind
from tests.modules.notifications.conftest import Subscriber, notification


def test_published_notification_reaches_subscribers_with_filterable_attributes(queues, subscriber):
    # GIVEN a publisher configured from the function's environment
    publisher = PushPublisher(NotificationsSettings())
    n = notification(7, driver_id="D-1002", kind=NotificationKind.MESSAGE_TO_DRIVER)
    # WHEN it publishes a notification
    message_id = publisher.publish(n)
    # THEN the subscriber gets exactly that notification, with driver_id and kind attributes
    [envelope] = subscriber.drain()
    assert envelope["MessageId"] == message_id
    assert json.loads(envelope["Message"]) == n.model_dump(mode="json")
    assert envelope["MessageAttributes"] == {
        "driver_id": {"Type": "String", "Value": "D-1002"},
        "kind": {"Type": "String", "Value": "message_to_driver"},
    }


def test_subscriber_filter_policy_sees_only_its_drivers_notifications(queues):
    # GIVEN a subscriber that only wants D-1002's notifications
    only_d2 = Subscriber(
        queues.sqs, queues.topic_arn, "d2-only", filter_policy={"driver_id": ["D-1002"]}
    )
    publisher = PushPublisher(NotificationsSettings())
    # WHEN notifications for two drivers are published
    publisher.publish(notification(1, driver_id="D-1001"))
    publisher.publish(notification(2, driver_id="D-1002"))
    # THEN the filter, working on the message attributes, lets only D-1002's through
    assert only_d2.notification_ids() == ["N-test-0002"]


def test_publish_to_a_missing_topic_raises_for_the_caller_to_retry(queues):
    # GIVEN a publisher pointing at a topic that does not exist
    publisher = PushPublisher(
        NotificationsSettings(push_topic_arn="arn:aws:sns:us-east-1:123456789012:no-such-topic")
    )
    # WHEN / THEN publishing raises the boto error (the batch handler turns it into a retry)
    with pytest.raises(ClientError):
        publisher.publish(notification())
