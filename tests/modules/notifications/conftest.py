"""Notifications fixtures: the deployed queues and topic, a subscriber, notification builders."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from shared_contracts.notifications import Notification, NotificationKind


@dataclass
class Queues:
    sqs: Any
    url: str
    arn: str
    dead_letter_url: str
    topic_arn: str

    def send(self, body: str) -> str:
        return self.sqs.send_message(QueueUrl=self.url, MessageBody=body)["MessageId"]

    def depth(self, url: str | None = None) -> int:
        """Messages in a queue, visible or in flight."""
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=url or self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return sum(int(v) for v in attrs.values())


@pytest.fixture
def queues(deployed, monkeypatch) -> Queues:
    deployed.use_env(monkeypatch, "NotificationsFunction")
    out = lambda name: deployed.output("NotificationsApp", name)  # noqa: E731
    return Queues(
        boto3.client("sqs"),
        out("NotificationsQueueUrl"),
        out("NotificationsQueueArn"),
        out("NotificationsDeadLetterQueueUrl"),
        out("PushTopicArn"),
    )


class Subscriber:
    """An SQS queue subscribed to the push topic: what a push platform would receive."""

    def __init__(self, sqs: Any, topic_arn: str, name: str, filter_policy: dict | None = None):
        self.sqs = sqs
        self.url = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        attributes = {"FilterPolicy": json.dumps(filter_policy)} if filter_policy else {}
        boto3.client("sns").subscribe(
            TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, Attributes=attributes
        )

    def drain(self) -> list[dict[str, Any]]:
        """Every SNS envelope delivered so far (removed from the queue)."""
        out: list[dict[str, Any]] = []
        while msgs := self.sqs.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", []):
            for m in msgs:
                out.append(json.loads(m["Body"]))
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"])
        return out

    def notification_ids(self) -> list[str]:
        return [json.loads(e["Message"])["notification_id"] for e in self.drain()]


@pytest.fixture
def subscriber(queues) -> Subscriber:
    return Subscriber(queues.sqs, queues.topic_arn, "push-platform")


def notification(
    i: int = 1, driver_id: str = "D-1001", kind: NotificationKind = NotificationKind.LOAD_ASSIGNED
) -> Notification:
    return Notification(
        notification_id=f"N-test-{i:04d}",
        kind=kind,
        driver_id=driver_id,
        title=f"New load L-{i}",
        body="Pick up at F-CHI.",
        data={"load_id": f"L-{i}"},
    )


def sqs_event(*bodies: str, receive_count: int = 1) -> dict[str, Any]:
    """A Lambda SQS event with one record per body (message ids m-0, m-1, ...)."""
    return {
        "Records": [
            {
                "messageId": f"m-{i}",
                "receiptHandle": f"rh-{i}",
                "body": body,
                "attributes": {"ApproximateReceiveCount": str(receive_count)},
                "messageAttributes": {},
                "md5OfBody": hashlib.md5(body.encode()).hexdigest(),  # noqa: S324 - SQS's own checksum
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q",
                "awsRegion": "us-east-1",
            }
            for i, body in enumerate(bodies)
        ]
    }
