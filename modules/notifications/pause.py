"""The operators' ``pause:notifications`` lever (docs/operations.md, Levers): while it
holds, the worker delivers nothing and every message stays queued.

The lever is an item of the stage's routing-control table (``RELAY_ROUTING_TABLE``; its
shape: :class:`shared_contracts.levers.Lever`), written by the gateway's operator API. The
worker reads it at most once per ``cache_seconds`` (one ``GetItem``), and compares its
``expires_at`` with the wall clock itself (the table's TTL deletes expired items late).

A paused batch is put back, not failed: each record's body is sent to its queue again,
out of sight for ``hold_seconds`` (SQS ``DelaySeconds``), and only then reported done, so
the original is deleted. Failing the records instead would count a receive each time, and
a pause longer than ``maxReceiveCount`` receives would dead-letter them. A record that
cannot be put back is reported failed: SQS keeps it, as for any failed delivery. A table
that does not answer keeps the last reading (none yet: not paused, the worker's normal
state); the error is logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from shared_contracts.levers import KIND, PAUSE_NOTIFICATIONS, Lever

log = logging.getLogger("relay.notifications")

DEFAULT_CACHE_SECONDS = 3.0
DEFAULT_HOLD_SECONDS = 30  # a released pause is delivered within this (plus the cache)
MAX_DELAY_SECONDS = 900  # SQS's DelaySeconds limit


class NotificationsPause:
    def __init__(
        self,
        table_name: str | None,
        *,
        dynamodb: Any = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
        hold_seconds: int = DEFAULT_HOLD_SECONDS,
    ) -> None:
        self.table_name = table_name
        self._dynamodb = dynamodb
        self.clock = clock
        self.wall_clock = wall_clock
        self.cache_seconds = cache_seconds
        self.hold_seconds = hold_seconds  # a paused message's time out of sight
        self.lever: Lever | None = None
        self.read_at = -float("inf")

    def _read(self) -> Lever | None:
        if self._dynamodb is None:
            from module_kit import aws

            self._dynamodb = aws.resource("dynamodb")
        item = (
            self._dynamodb.Table(self.table_name)
            .get_item(Key={"kind": KIND, "name": PAUSE_NOTIFICATIONS}, ConsistentRead=True)
            .get("Item")
        )
        return None if item is None else Lever.from_item(item)

    def current(self) -> Lever | None:
        """The pause lever in force now, or None."""
        if self.table_name is None:
            return None
        if self.clock() - self.read_at >= self.cache_seconds:
            self.read_at = self.clock()  # one read per period, even if it fails
            try:
                self.lever = self._read()
            except Exception as exc:
                log.error("could not read the pause lever (%r); keeping the last reading", exc)
        lever = self.lever
        return lever if lever is not None and lever.active(self.wall_clock()) else None


def hold(
    records: Sequence[dict[str, Any]],
    sqs: Any,
    *,
    hold_seconds: int = DEFAULT_HOLD_SECONDS,
    queue_urls: dict[str, str] | None = None,
) -> list[str]:
    """Put each record back on its queue (``hold_seconds`` out of sight); the message ids
    that could not be put back (to report as failed: SQS keeps them)."""
    urls = {} if queue_urls is None else queue_urls
    failed = []
    for record in records:
        arn = record.get("eventSourceARN", "")
        try:
            url = urls.get(arn)
            if url is None:
                _, _, _, _, account, name = arn.split(":", 5)
                url = sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
                urls[arn] = url
            sqs.send_message(
                QueueUrl=url,
                MessageBody=record["body"],
                DelaySeconds=min(max(hold_seconds, 0), MAX_DELAY_SECONDS),
            )
        except Exception as exc:
            log.warning(
                "paused: could not put message %s back on its queue (%r); it is retried",
                record.get("messageId"),
                exc,
            )
            failed.append(record["messageId"])
    return failed
