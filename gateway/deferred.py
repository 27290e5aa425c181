"""Deferred writes: accepted with 202 into a durable FIFO queue while their module is down.

The queue is SQS FIFO with one message group per caller (driver), so one driver's writes
are replayed in the order they were accepted, and deduplicated by idempotency key. The
replayer (:mod:`gateway.replay`) sends each write to the module with the same
``Idempotency-Key``, so a write is applied exactly once even if it had reached the module
before it failed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict
from starlette.responses import Response

from shared_contracts.degraded import DeferredAccepted, DegradedMarker, FallbackKind
from shared_contracts.identity import IdentityContext

from .fallbacks import Call, degraded_response

log = logging.getLogger("relay.gateway.deferred")


class DeferredWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tracking_id: str
    module: str
    method: str
    path: str
    query: str = ""
    body: str
    identity: IdentityContext | None   # signed afresh by the replayer
    caller: str
    request_id: str
    accepted_at: datetime
    headers: dict[str, str] = {}


class DeferredQueue:
    """Thin boto3 wrapper; the client is created on first use, never at import."""

    def __init__(self, queue_url: str, *, sqs: Any = None) -> None:
        self.queue_url = queue_url
        self._sqs = sqs

    @property
    def sqs(self) -> Any:
        if self._sqs is None:
            import boto3

            self._sqs = boto3.client("sqs")
        return self._sqs

    def enqueue(self, write: DeferredWrite) -> None:
        dedup = hashlib.sha256(f"{write.caller}:{write.tracking_id}".encode()).hexdigest()
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=write.model_dump_json(),
                              MessageGroupId=write.caller, MessageDeduplicationId=dedup)


class DeferredWrites:
    kind = FallbackKind.DEFERRED

    def __init__(self, queue: DeferredQueue | None) -> None:
        self.queue = queue
        self.accepted = 0

    def remember(self, call: Call, status: int, body: bytes, content_type: str) -> None:
        return None

    async def serve(self, call: Call) -> Response | None:
        if self.queue is None or call.method != "POST" or not call.idempotency_key:
            return None
        write = DeferredWrite(
            tracking_id=call.idempotency_key, module=call.module, method=call.method,
            path=call.path, query=call.query, body=call.body.decode("utf-8", "replace"),
            identity=call.identity, caller=call.caller,
            request_id=call.request_id, accepted_at=datetime.now(UTC),
            headers=call.forwarded_headers,
        )
        try:
            await asyncio.to_thread(self.queue.enqueue, write)
        except (BotoCoreError, ClientError):
            log.exception("could not defer write %s to %s", write.tracking_id, call.module)
            return None
        self.accepted += 1
        log.warning("deferred write %s to %s for %s", write.tracking_id, call.module, call.caller)
        body = DeferredAccepted(tracking_id=write.tracking_id, module=call.module)
        return degraded_response(body.model_dump_json(), 202,
                                 DegradedMarker(module=call.module, fallback=self.kind))
