"""Deferred writes: accepted with 202 into a durable FIFO queue while their module is down.

The queue is SQS FIFO with one message group per caller (driver) and module, so one
driver's writes to a module are replayed in the order they were accepted, and
deduplicated by idempotency key. Order is kept per module, not across modules: no
module's writes depend on another's, and a driver's messages queued while message is down
must not hold up their trip events, which loads could apply. The
replayer (:mod:`gateway.deferred.replayer`) sends each write to the module with the same
``Idempotency-Key`` and the time the gateway accepted it, so a write is applied exactly
once, stamped with that time, even if an earlier attempt had reached the module.

A 202 is a promise, so a write is acknowledged only once it is durable *and* visible:

1. queued in SQS (deadline ``queue_timeout_seconds``);
2. recorded in the ledger (:mod:`gateway.deferred.ledger`) as pending, with a per-caller marker
   (deadline ``store_timeout_seconds``).

If either step fails or runs out of time the driver gets 503 + Retry-After and retries
with the same key: a message that did reach the queue is deduplicated (FIFO) and applied
once (idempotency key), and the replayer records it in the ledger when it applies it.

While a caller has a write to a module pending, every later write of theirs to that module
is queued behind it rather than sent live (:meth:`DeferredWrites.must_queue`), so the live
path can never overtake the queue. When the ledger cannot say, the write is queued: order
is never bet on a guess.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from starlette.responses import Response

from gateway import aws_calls
from gateway.config import DEFAULT_QUEUE_TIMEOUT_SECONDS, DEFAULT_STORE_TIMEOUT_SECONDS
from gateway.deferred.ledger import DeferredLedger, LedgerError
from gateway.resilience.fallbacks import Call, degraded_response
from module_kit import logs
from shared_contracts.degraded import DeferredAccepted, DegradedMarker, FallbackKind
from shared_contracts.identity import IdentityContext

log = logging.getLogger("relay.gateway.deferred")

STATUS_PATH = "/deferred/{tracking_id}"


class DeferredWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tracking_id: str
    module: str
    method: str
    path: str
    query: str = ""
    body: str
    identity: IdentityContext | None  # signed afresh by the replayer
    caller: str
    request_id: str
    accepted_at: datetime
    headers: dict[str, str] = {}


def order_group(caller: str, module: str) -> str:
    """The FIFO message group: a caller's writes to one module, applied in order."""
    return f"{module}:{caller}"


class DeferredQueue:
    """Thin boto3 wrapper; the client (with socket timeouts) is made on first use."""

    def __init__(
        self,
        queue_url: str,
        *,
        sqs: Any = None,
        timeout_seconds: float = DEFAULT_QUEUE_TIMEOUT_SECONDS,
    ) -> None:
        self.queue_url = queue_url
        self.timeout_seconds = timeout_seconds
        self._sqs = sqs

    @property
    def sqs(self) -> Any:
        if self._sqs is None:
            self._sqs = aws_calls.client("sqs", read_timeout=self.timeout_seconds)
        return self._sqs

    def enqueue(self, write: DeferredWrite) -> None:
        dedup = hashlib.sha256(f"{write.caller}:{write.tracking_id}".encode()).hexdigest()
        self.sqs.send_message(
            QueueUrl=self.queue_url,
            MessageBody=write.model_dump_json(),
            MessageGroupId=order_group(write.caller, write.module),
            MessageDeduplicationId=dedup,
        )


class DeferredWrites:
    kind = FallbackKind.DEFERRED

    def __init__(
        self,
        queue: DeferredQueue | None,
        ledger: DeferredLedger | None = None,
        *,
        store_timeout_seconds: float = DEFAULT_STORE_TIMEOUT_SECONDS,
    ) -> None:
        self.queue = queue
        self.ledger = ledger
        self.store_timeout_seconds = store_timeout_seconds
        self.accepted = 0

    def remember(self, call: Call, status: int, body: bytes, content_type: str) -> None:
        return None

    async def must_queue(self, call: Call) -> bool:
        """Must this write queue behind its caller's earlier ones to the same module
        instead of going live?"""
        if self.queue is None or self.ledger is None or call.identity is None:
            return False
        try:
            return await aws_calls.call(
                self.ledger.has_pending,
                call.caller,
                call.module,
                timeout=self.store_timeout_seconds,
                what="deferred ledger",
            )
        except (aws_calls.DependencyTimeout, LedgerError) as exc:
            log.warning(
                "cannot tell whether %s has writes queued (%s): queueing %s %s",
                logs.caller_hash(call.caller),
                exc,
                call.method,
                call.path,
                extra=logs.fields(request_id=call.request_id, module=call.module),
            )
            return True

    async def serve(self, call: Call) -> Response | None:
        if self.queue is None or call.method != "POST" or not call.idempotency_key:
            return None
        write = DeferredWrite(
            tracking_id=call.idempotency_key,
            module=call.module,
            method=call.method,
            path=call.path,
            query=call.query,
            body=call.body.decode("utf-8", "replace"),
            identity=call.identity,
            caller=call.caller,
            request_id=call.request_id,
            accepted_at=datetime.fromtimestamp(call.accepted_at, UTC),
            headers=call.forwarded_headers,
        )
        try:
            await aws_calls.call(
                self.queue.enqueue, write, timeout=self.queue.timeout_seconds, what="deferred queue"
            )
        except Exception as exc:  # botocore errors, the deadline: not acknowledged
            log.error("could not queue write %s to %s: %r", write.tracking_id, call.module, exc)
            return None
        if self.ledger is not None:
            try:
                await aws_calls.call(
                    self.ledger.accept,
                    write,
                    timeout=self.store_timeout_seconds,
                    what="deferred ledger",
                )
            except (aws_calls.DependencyTimeout, LedgerError) as exc:
                # Queued, so it will be applied once; not visible, so not acknowledged.
                log.error(
                    "write %s to %s queued but not recorded (%s): answering 503",
                    write.tracking_id,
                    call.module,
                    exc,
                )
                return None
        self.accepted += 1
        log.warning(
            "deferred write %s to %s for %s",
            write.tracking_id,
            call.module,
            logs.caller_hash(call.caller),
            extra=logs.fields(
                request_id=call.request_id,
                module=call.module,
                outcome=FallbackKind.DEFERRED.value,
                status=202,
                caller=call.caller,
            ),
        )
        body = DeferredAccepted(
            tracking_id=write.tracking_id,
            module=call.module,
            status_url=STATUS_PATH.format(tracking_id=write.tracking_id),
        )
        return degraded_response(
            body.model_dump_json(), 202, DegradedMarker(module=call.module, fallback=self.kind)
        )
