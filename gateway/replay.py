"""Replays deferred writes to their module: the SQS FIFO-triggered half of the deferred fallback.

Lambda (or locally :mod:`relay.eventsource`) delivers batches of the deferred queue; each
write is sent to its module with its original idempotency key and identity. Outcomes:

- 2xx: applied (or it had been applied already: the module answers the first result);
- 4xx other than "in progress": the module refused it for good (e.g. an event that no
  longer fits the load's state); logged with its tracking id, not retried;
- anything else (module still down, 5xx, 409 in progress): the write fails and stays in
  the queue. Powertools' FIFO processor then also fails the rest of that driver's
  messages in the batch, so one driver's writes are applied strictly in order.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from aws_lambda_powertools.utilities.batch import (
    SqsFifoPartialProcessor,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from shared_contracts import headers

from .config import GatewaySettings
from .deferred import DeferredWrite
from .identity import SignerProvider
from .routes import RouteTable
from .sigv4 import SigV4Auth

log = logging.getLogger("relay.gateway.replay")
REPLAY_TIMEOUT_SECONDS = 10.0
RETRY_LATER_STATUSES = frozenset({408, 425, 429})
IN_PROGRESS = "idempotency-in-progress"   # the first attempt is still being applied


class ReplayFailed(Exception):
    """The write could not be applied now; it stays queued."""


class Replayer:
    def __init__(self, table: RouteTable, client: httpx.Client, signer: SignerProvider) -> None:
        self.table = table
        self.client = client
        self.signer = signer

    def apply(self, write: DeferredWrite) -> int:
        module = self.table.modules[write.module]
        out = {**write.headers, headers.IDEMPOTENCY_KEY: write.tracking_id,
               headers.REQUEST_ID: write.request_id}
        if write.identity:
            out[headers.IDENTITY] = self.signer.get().sign(write.identity, audience=write.module)
        url = module.upstreams[0] + write.path + (f"?{write.query}" if write.query else "")
        try:
            response = self.client.request(write.method, url, content=write.body.encode(),
                                           headers=out)
        except httpx.TransportError as exc:
            raise ReplayFailed(f"{write.module} unreachable: {exc}") from None
        status = response.status_code
        if status >= 500 or status in RETRY_LATER_STATUSES or (
                status == 409 and IN_PROGRESS in response.text):
            raise ReplayFailed(f"{write.module} answered {status}")
        if status >= 400:
            log.error("deferred write %s refused by %s for good: %s %s", write.tracking_id,
                      write.module, status, response.text[:500])
        else:
            log.info("deferred write %s applied by %s (%s)", write.tracking_id, write.module,
                     status)
        return status


def make_handler(replayer: Replayer | None = None):  # type: ignore[no-untyped-def]
    """The Lambda handler; the route table and HTTP client are built on first use."""
    state: dict[str, Replayer] = {}

    def get() -> Replayer:
        if replayer is not None:
            return replayer
        if "r" not in state:
            settings = GatewaySettings()
            auth = SigV4Auth(settings.aws_region) if settings.sign_upstreams else None
            state["r"] = Replayer(RouteTable.load(settings.routes_file),
                                  httpx.Client(timeout=REPLAY_TIMEOUT_SECONDS, auth=auth),
                                  SignerProvider(settings))
        return state["r"]

    def record_handler(record: SQSRecord) -> int:
        return get().apply(DeferredWrite.model_validate_json(record.body))

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return process_partial_response(event=event, record_handler=record_handler,
                                        processor=SqsFifoPartialProcessor(), context=context)

    return handler


handler = make_handler()

__all__ = ["Replayer", "ReplayFailed", "handler", "make_handler"]
