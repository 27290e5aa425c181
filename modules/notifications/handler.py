"""Lambda entry point: an SQS batch of notifications, each published to the push topic.

Each record is handled on its own and the function answers with the records that failed
(``ReportBatchItemFailures`` in the template), so one bad record never re-delivers the
whole batch. A failed record becomes visible again, is retried, and after ``MaxReceiveCount``
receives SQS moves it to the dead-letter queue. That includes a body that is not a valid
:class:`Notification`: retrying it cannot help, but dead-lettering keeps it for an operator
to inspect instead of silently dropping it.

Metrics (:mod:`module_kit.metrics`): each notification published counts
``relay_notifications_delivered_total``; a record failing on its last receive before the
dead-letter queue (``MAX_RECEIVE_COUNT``, the queue's ``maxReceiveCount``) counts
``relay_notifications_dead_lettered_total``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from pydantic import ValidationError

from module_kit import logs, metrics
from shared_contracts.notifications import Notification

from .config import NotificationsSettings
from .pause import NotificationsPause, hold
from .publisher import PushPublisher

log = logging.getLogger("relay.notifications")
MODULE = "notifications"

Handler = Callable[[dict[str, Any], Any], PartialItemFailureResponse]


class InvalidNotificationError(Exception):
    """The record's body is not a Notification; it fails so that it dead-letters."""


def _claimed_id(body: str) -> str:
    """The notification id a malformed body claims, for the log line (``?`` if none)."""
    try:
        claimed = json.loads(body).get("notification_id")
    except (ValueError, AttributeError):
        return "?"
    return str(claimed)[:64] if claimed else "?"


def make_handler(
    publisher: PushPublisher | None = None,
    *,
    metrics_writer: metrics.ModuleMetrics | None = None,
    pause: NotificationsPause | None = None,
    sqs: Any = None,
) -> Handler:
    """Build the Lambda handler. Without ``publisher``, one is built from the environment
    on the first invocation, so importing this module needs neither AWS nor env vars."""
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    current = publisher
    counter = metrics_writer or metrics.ModuleMetrics(MODULE)
    if publisher is None:  # the deployed worker (tests bring their own publisher)
        logs.setup_logging(MODULE)

    def get_publisher() -> PushPublisher:
        nonlocal current
        if current is None:
            current = PushPublisher(NotificationsSettings())
        return current

    def get_pause() -> NotificationsPause:
        nonlocal pause
        if pause is None:  # the operators' pause lever, in the stage's routing-control table
            pause = NotificationsPause(get_publisher().settings.relay_routing_table)
        return pause

    def get_sqs() -> Any:
        nonlocal sqs
        if sqs is None:
            from module_kit import aws

            sqs = aws.client("sqs")
        return sqs

    queue_urls: dict[str, str] = {}  # each record's queue (its event source ARN): its URL

    def deliver(record: SQSRecord) -> str:
        try:
            message_id = publish(record)
        except Exception:
            attempt = int(record.attributes.approximate_receive_count or 0)
            if attempt >= get_publisher().settings.max_receive_count:
                counter.count(metrics.NOTIFICATIONS_DEAD_LETTERED)
            raise
        counter.count(metrics.NOTIFICATIONS_DELIVERED)
        return message_id

    def publish(record: SQSRecord) -> str:
        attempt = record.attributes.approximate_receive_count
        try:
            notification = Notification.model_validate_json(record.body)
        except ValidationError as exc:
            log.warning(
                "notification %s (SQS message %s) rejected, not a valid Notification: %s",
                _claimed_id(record.body),
                record.message_id,
                "; ".join(
                    f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()
                ),
                extra=logs.fields(module=MODULE, outcome="rejected"),
            )
            raise InvalidNotificationError(record.message_id) from None
        try:
            message_id = get_publisher().publish(notification)
        except Exception as exc:  # any failure: the record is retried, then dead-lettered
            log.warning(
                "notification %s not published (receive %s), will retry: %s: %s",
                notification.notification_id,
                attempt,
                type(exc).__name__,
                exc,
                extra=logs.fields(module=MODULE, outcome="retry"),
            )
            raise
        log.info(
            "notification %s published as %s",
            notification.notification_id,
            message_id,
            extra=logs.fields(module=MODULE, outcome="published"),
        )
        return message_id

    def handler(event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
        # Misconfiguration (missing PUSH_TOPIC_ARN) raises here, failing the invocation
        # loudly instead of dead-lettering every notification one by one.
        get_publisher()
        paused = get_pause().current()
        if paused is not None:
            # An operator paused delivery: every record goes back on the queue, none is lost.
            records = event.get("Records", [])
            own = get_publisher().settings.notifications_queue_url
            if own:
                queue_urls.update({r.get("eventSourceARN", ""): own for r in records})
            failed = hold(
                records, get_sqs(), hold_seconds=get_pause().hold_seconds, queue_urls=queue_urls
            )
            log.info(
                "paused by %s until %s (%s): %d notification(s) kept queued",
                paused.who,
                paused.expires_at,
                paused.why,
                len(records) - len(failed),
                extra=logs.fields(module=MODULE, outcome="paused"),
            )
            return {"batchItemFailures": [{"itemIdentifier": i} for i in failed]}
        return process_partial_response(
            event=event, record_handler=deliver, processor=processor, context=context
        )

    return handler


handler = make_handler()
