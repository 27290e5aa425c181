"""Move dead-lettered notifications back to the notifications queue, once the cause is fixed.

Each message is re-sent with its body and message attributes, then deleted from the
dead-letter queue, so it starts over with a fresh receive count. Sending before deleting
means a crash in between can duplicate a notification but never lose one (subscribers
de-duplicate on ``notification_id``). Messages being moved are hidden from other replays
by the receive's visibility timeout.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("relay.notifications.replay")

SQS_BATCH = 10  # SQS batch calls take at most 10 entries
HIDE_SECONDS = 60  # visibility timeout while a message is being moved


def replay_dead_letters(
    sqs: Any, dead_letter_queue_url: str, queue_url: str, *, limit: int | None = None
) -> int:
    """Move up to ``limit`` (default all) messages from the DLQ to ``queue_url``; say how many."""
    if dead_letter_queue_url == queue_url:
        raise ValueError("the dead-letter queue and the target queue must differ")
    if limit is not None and limit < 0:
        raise ValueError("limit must be >= 0")
    moved = 0
    while limit is None or moved < limit:
        want = SQS_BATCH if limit is None else min(SQS_BATCH, limit - moved)
        messages = sqs.receive_message(
            QueueUrl=dead_letter_queue_url,
            MaxNumberOfMessages=want,
            WaitTimeSeconds=0,
            VisibilityTimeout=HIDE_SECONDS,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            break
        sent = sqs.send_message_batch(
            QueueUrl=queue_url, Entries=[_resend_entry(str(i), m) for i, m in enumerate(messages)]
        )
        for failure in sent.get("Failed", []):
            # Left in the dead-letter queue: visible again after HIDE_SECONDS.
            log.error(
                "could not replay %s: %s",
                messages[int(failure["Id"])]["MessageId"],
                failure.get("Message"),
            )
        done = [messages[int(ok["Id"])] for ok in sent.get("Successful", [])]
        if done:
            deleted = sqs.delete_message_batch(
                QueueUrl=dead_letter_queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)
                ],
            )
            for failure in deleted.get("Failed", []):
                log.error(
                    "replayed %s but could not delete it from the dead-letter queue: %s",
                    done[int(failure["Id"])]["MessageId"],
                    failure.get("Message"),
                )
        moved += len(done)
    log.info("replayed %d dead-lettered notification(s) to %s", moved, queue_url)
    return moved


def _resend_entry(entry_id: str, message: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"Id": entry_id, "MessageBody": message["Body"]}
    attributes = {
        name: {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
        for name, value in message.get("MessageAttributes", {}).items()
    }
    if attributes:
        entry["MessageAttributes"] = attributes
    return entry
