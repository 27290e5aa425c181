"""Local stand-in for Lambda's SQS event source mapping: poll, invoke, delete or back off.

In AWS, Lambda polls a function's SQS event source and invokes it with a batch; locally
this runner does the same against the emulator, with the function's own handler (the
local stack starts one per SQS-triggered function in template.yaml):

1. receive up to ``batch_size`` messages (long poll of ``wait_seconds``);
2. build the event Lambda would send (``Records`` with ``messageId``, ``body``,
   ``attributes.ApproximateReceiveCount``...) and call ``handler(event, context)``;
3. read the ``batchItemFailures`` answer with Lambda's rules (a raised error, an unknown or
   empty ``itemIdentifier`` fail the whole batch; ``None`` or an empty list mean success);
4. delete the delivered messages, and push each failed one out of sight for
   ``min(base * 2**(receive_count - 1), max)`` seconds, so retries back off exponentially.
   SQS itself dead-letters a message on its ``MaxReceiveCount``-th failed receive.

Run it with ``python -m relay.eventsource package.module.handler`` and the function's
environment plus ``EVENT_SOURCE_QUEUE_URL`` / ``EVENT_SOURCE_QUEUE_ARN``; SIGTERM/SIGINT
stop it after the batch in flight.
"""

from __future__ import annotations

import base64
import importlib
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger("relay.eventsource")

Handler = Callable[[dict[str, Any], Any], Any]

MAX_VISIBILITY_SECONDS = 43_200  # SQS refuses a longer visibility timeout (12 hours)
ERROR_PAUSE_SECONDS = 5          # after SQS itself fails, before polling again
FUNCTION_TIMEOUT_SECONDS = 30    # the SQS-triggered functions' Timeout in the templates
QUEUE_URL_VARIABLE = "EVENT_SOURCE_QUEUE_URL"
QUEUE_ARN_VARIABLE = "EVENT_SOURCE_QUEUE_ARN"


def backoff_seconds(receive_count: int, base: int, maximum: int) -> int:
    """Visibility timeout after the ``receive_count``-th failed delivery: base, 2*base, 4*base..."""
    exponent = min(max(receive_count - 1, 0), 32)
    return int(min(base * 2**exponent, maximum, MAX_VISIBILITY_SECONDS))


@dataclass
class LocalLambdaContext:
    """The parts of Lambda's context object a handler (and Powertools) may read."""

    function_name: str = "local-function"
    function_version: str = "$LATEST"
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:local-function"
    memory_limit_in_mb: int = 256
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/local/functions"
    log_stream_name: str = "local"
    deadline: float = field(default_factory=lambda: time.monotonic() + FUNCTION_TIMEOUT_SECONDS)

    def get_remaining_time_in_millis(self) -> int:
        return max(int((self.deadline - time.monotonic()) * 1000), 0)


class SqsEventSourceRunner:
    def __init__(
        self,
        queue_url: str,
        queue_arn: str,
        handler: Handler,
        *,
        sqs: Any = None,
        batch_size: int = 10,
        wait_seconds: int = 1,
        backoff_base_seconds: int = 1,
        backoff_max_seconds: int = 60,
    ) -> None:
        if not 1 <= batch_size <= 10:
            raise ValueError("batch_size must be 1..10 (the SQS ReceiveMessage limit)")
        if not 0 <= wait_seconds <= 20:
            raise ValueError("wait_seconds must be 0..20 (the SQS long-poll limit)")
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.region = queue_arn.split(":")[3]
        self.handler = handler
        self.batch_size = batch_size
        self.wait_seconds = wait_seconds
        self.backoff_base_seconds = backoff_base_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self._sqs = sqs

    @property
    def sqs(self) -> Any:
        if self._sqs is None:
            self._sqs = boto3.client("sqs", region_name=self.region)
        return self._sqs

    def run_once(self) -> tuple[int, int]:
        """Receive and process one batch; return (succeeded, failed). (0, 0) if the queue is idle."""
        messages = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self.batch_size,
            WaitTimeSeconds=self.wait_seconds,
            AttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return 0, 0
        ids = [m["MessageId"] for m in messages]
        try:
            response = self.handler(self.event(messages), LocalLambdaContext())
            failed_ids = _failed_ids(response, set(ids))
        except Exception:
            log.exception("handler raised: the whole batch of %d fails", len(messages))
            failed_ids = set(ids)
        delivered = [m for m in messages if m["MessageId"] not in failed_ids]
        failed = [m for m in messages if m["MessageId"] in failed_ids]
        self._delete(delivered)
        retry_in = [self._back_off(m) for m in failed]
        if failed:
            log.warning("batch of %d: %d delivered, %d failed (retry in %s s)",
                        len(messages), len(delivered), len(failed),
                        "/".join(str(s) for s in sorted(set(retry_in))))
        return len(delivered), len(failed)

    def run_forever(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set. SQS outages are logged and polled through, never fatal."""
        log.info("polling %s", self.queue_url)
        while not stop.is_set():
            try:
                self.run_once()
            except (BotoCoreError, ClientError):
                log.exception("could not poll %s; retrying in %d s",
                              self.queue_url, ERROR_PAUSE_SECONDS)
                stop.wait(ERROR_PAUSE_SECONDS)
        log.info("stopped polling %s", self.queue_url)

    def event(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The event Lambda's SQS event source mapping would send for ``messages``."""
        return {"Records": [{
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "attributes": dict(m.get("Attributes", {})),
            "messageAttributes": {
                name: _lambda_attribute(value)
                for name, value in m.get("MessageAttributes", {}).items()
            },
            "md5OfBody": m["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": self.queue_arn,
            "awsRegion": self.region,
        } for m in messages]}

    def _delete(self, messages: list[dict[str, Any]]) -> None:
        for start in range(0, len(messages), 10):
            chunk = messages[start:start + 10]
            response = self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)
            ])
            for failure in response.get("Failed", []):
                # The message comes back and is delivered again: push is at-least-once.
                log.error("could not delete delivered message %s: %s",
                          chunk[int(failure["Id"])]["MessageId"], failure.get("Message"))

    def _back_off(self, message: dict[str, Any]) -> int:
        receive_count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        seconds = backoff_seconds(receive_count, self.backoff_base_seconds,
                                  self.backoff_max_seconds)
        try:
            self.sqs.change_message_visibility(QueueUrl=self.queue_url,
                                               ReceiptHandle=message["ReceiptHandle"],
                                               VisibilityTimeout=seconds)
        except ClientError as exc:
            # It still comes back, after the queue's own visibility timeout.
            log.error("could not back off message %s: %s", message["MessageId"], exc)
        return seconds


def _failed_ids(response: Any, batch: set[str]) -> set[str]:
    """Lambda's reading of a ReportBatchItemFailures answer: the ids to retry."""
    if response is None:
        return set()
    if not isinstance(response, dict):
        return set(batch)
    failures = response.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return set(batch)
    failed: set[str] = set()
    for item in failures:
        ident = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not ident or ident not in batch:
            log.error("handler reported unknown item %r: the whole batch fails", ident)
            return set(batch)
        failed.add(ident)
    return failed


def _lambda_attribute(value: dict[str, Any]) -> dict[str, Any]:
    """A boto3 message attribute in the camelCase shape Lambda's SQS events use."""
    out: dict[str, Any] = {"dataType": value["DataType"],
                           "stringListValues": [], "binaryListValues": []}
    if "StringValue" in value:
        out["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        out["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
    return out


def load_handler(dotted: str) -> Handler:
    """``package.module.attribute`` -> the handler object, as Lambda's Handler setting names it."""
    module_name, _, attribute = dotted.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


def main(argv: list[str] | None = None) -> int:
    """``python -m relay.eventsource HANDLER``: run until SIGTERM/SIGINT."""
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    missing = [v for v in (QUEUE_URL_VARIABLE, QUEUE_ARN_VARIABLE) if not os.environ.get(v)]
    if len(argv) != 1 or missing:
        log.error("usage: python -m relay.eventsource package.module.handler, with %s set "
                  "(missing: %s)", " and ".join((QUEUE_URL_VARIABLE, QUEUE_ARN_VARIABLE)),
                  ", ".join(missing) or "-")
        return 2
    runner = SqsEventSourceRunner(
        os.environ[QUEUE_URL_VARIABLE], os.environ[QUEUE_ARN_VARIABLE], load_handler(argv[0]),
        backoff_base_seconds=int(os.environ.get("EVENT_SOURCE_BACKOFF_BASE_SECONDS", 1)),
        backoff_max_seconds=int(os.environ.get("EVENT_SOURCE_BACKOFF_MAX_SECONDS", 60)))
    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        log.info("%s: stopping after the batch in flight", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    runner.run_forever(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
