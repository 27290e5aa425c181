"""Lambda entry point: an SQS batch of notifications, each published to the push topic.

Each record is handled on its own and the function answers with the records that failed
(``ReportBatchItemFailures`` in the template), so one bad record never re-delivers the
whole batch. A failed record becomes visible again, is retried, and after ``MaxReceiveCount``
receives SQS moves it to the dead-letter queue. That includes a body that is not a valid
:class:`Notification`: retrying it cannot help, but dead-lettering keeps it for an operator
to inspect instead of silently dropping it.
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

from module_kit import logs
from shared_contracts.notifications import Notification

from .config import NotificationsSettings
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


def make_handler(publisher: PushPublisher | None = None) -> Handler:
    """Build the Lambda handler. Without ``publisher``, one is built from the environment
    on the first invocation, so importing this module needs neither AWS nor env vars."""
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    current = publisher
    if publisher is None:  # the deployed worker (tests bring their own publisher)
        logs.setup_logging(MODULE)

    def get_publisher() -> PushPublisher:
        nonlocal current
        if current is None:
            current = PushPublisher(NotificationsSettings())
        return current

    def deliver(record: SQSRecord) -> str:
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
        return process_partial_response(
            event=event, record_handler=deliver, processor=processor, context=context
        )

    return handler


handler = make_handler()
