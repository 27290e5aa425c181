"""Publish a notification to the push SNS topic. boto3 is injected; nothing connects at import.

The message is the notification's JSON. ``driver_id`` and ``kind`` are also sent as String
message attributes, so each subscriber (the mobile push platform, a dispatch console...) can
use an SNS filter policy instead of receiving and discarding every driver's notifications.
SNS delivery is at-least-once: subscribers de-duplicate on ``notification_id``.
"""

from __future__ import annotations

from typing import Any

import boto3

from shared_contracts.notifications import Notification

from .config import NotificationsSettings


class PushPublisher:
    def __init__(self, settings: NotificationsSettings, *, sns: Any = None) -> None:
        self.settings = settings
        self._sns = sns

    @property
    def sns(self) -> Any:
        if self._sns is None:
            self._sns = boto3.client("sns")
        return self._sns

    def publish(self, n: Notification) -> str:
        """Publish ``n``; return the SNS MessageId. boto3 errors propagate: the caller retries."""
        response = self.sns.publish(
            TopicArn=self.settings.push_topic_arn,
            Message=n.model_dump_json(),
            MessageAttributes={
                "driver_id": {"DataType": "String", "StringValue": n.driver_id},
                "kind": {"DataType": "String", "StringValue": n.kind.value},
            },
        )
        return response["MessageId"]
