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

FIFO queues (``*.fifo``) keep SQS FIFO's message-group semantics, as Lambda's FIFO event
source mapping does: each group's messages are handed over in the order the queue gave
them (SQS gives a group's messages in order; moto's ``SequenceNumber`` is a random number,
so the runner does not sort by it); a group stops at its first failed message (the
*head*): the head backs off, and every later message of the group received with it is
neither deleted (even if the handler reported it done) nor
kept out of sight on its own, but made visible again at once, so the queue's group lock
keeps it behind the head. Until the head succeeds, the runner never hands the handler a
later message of that group without the head before it: when the queue hands one out
alone (moto 5.2 does, once a group's in-flight messages all become visible at the same
time), it goes back to the queue, and the runner releases the group only after the head
has failed to come back ``FIFO_HEAD_MISSES`` times once its retry was due (it was
dead-lettered or deleted). Other groups are never held up by the runner. This state lives
in the runner's memory: it starts empty when the runner restarts (the local stack's
emulator, :mod:`relay.emulator`, keeps a timed-out group in order by itself).

DynamoDB Streams (:class:`DynamoDBStreamRunner`), as Lambda's stream event source mapping
with ``StartingPosition: TRIM_HORIZON`` and ``ReportBatchItemFailures``: each shard is read
in order from its oldest record (moto server serves ``describe_stream``,
``get_shard_iterator`` and ``get_records``); a batch goes to the handler in Lambda's record
shape; a failed record (the first ``itemIdentifier``, a sequence number, or the whole
batch when the handler raises) is read again from there on the next poll, so nothing after
it is skipped, until ``max_retries`` attempts, after which the runner logs it as given up
and moves past it (in AWS: the on-failure destination). Read positions live in memory: a
restarted runner reads every shard again from its oldest record (the projector is
idempotent). A stream replaced under the same table (the emulator restarted and the stack
redeployed) is found again from the table.

Run it with ``python -m relay.eventsource package.module.handler`` and the function's
environment plus ``EVENT_SOURCE_QUEUE_URL`` / ``EVENT_SOURCE_QUEUE_ARN``, or
``EVENT_SOURCE_STREAM_ARNS`` (comma-separated) for its stream events; SIGTERM/SIGINT stop
it after the batch in flight.
"""

from __future__ import annotations

import base64
import importlib
import logging
import math
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from module_kit import logs

log = logging.getLogger("relay.eventsource")

Handler = Callable[[dict[str, Any], Any], Any]

MAX_VISIBILITY_SECONDS = 43_200  # SQS refuses a longer visibility timeout (12 hours)
ERROR_PAUSE_SECONDS = 5  # after SQS itself fails, before polling again
FUNCTION_TIMEOUT_SECONDS = 30  # the SQS-triggered functions' Timeout in the templates
# A held FIFO group's head counts as due this long before the runner's own retry time (the
# queue's clock and the runner's differ by the time the visibility change took).
FIFO_HEAD_GRACE_SECONDS = 1.0
# Receives of a held group without its head, once the head was due, before the runner
# decides the head is gone (dead-lettered or deleted) and lets the group go on.
FIFO_HEAD_MISSES = 3
QUEUE_URL_VARIABLE = "EVENT_SOURCE_QUEUE_URL"
QUEUE_ARN_VARIABLE = "EVENT_SOURCE_QUEUE_ARN"
STREAM_ARNS_VARIABLE = "EVENT_SOURCE_STREAM_ARNS"
STREAM_POLL_SECONDS = 0.25  # Lambda polls each shard about 4 times a second
STREAM_MAX_RETRIES = 10  # the projector's MaximumRetryAttempts in template.yaml
# How often the runner asks whether its table has another stream now (the emulator
# restarted, the stack deployed the table again; moto then reuses shard ids and sequence
# numbers, so only the stream's ARN tells).
STREAM_CHECK_SECONDS = 2.0


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


@dataclass
class GroupHold:
    """A FIFO message group whose head failed: none of its later messages goes first."""

    message_id: str
    retry_at: float  # on the runner's clock: when the head's backoff ends
    misses: int = 0  # receives of the group without its head since it was due


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
        fifo: bool | None = None,
        fifo_head_misses: int = FIFO_HEAD_MISSES,
        clock: Callable[[], float] = time.monotonic,
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
        # SQS requires FIFO queue names to end in ".fifo".
        self.fifo = queue_url.endswith(".fifo") if fifo is None else fifo
        self.fifo_head_misses = fifo_head_misses
        self.clock = clock
        self.holds: dict[str, GroupHold] = {}  # FIFO groups whose head is pending retry
        self._sqs = sqs

    @property
    def sqs(self) -> Any:
        if self._sqs is None:
            self._sqs = boto3.client("sqs", region_name=self.region)
        return self._sqs

    def run_once(self) -> tuple[int, int]:
        """Receive and process one batch: (succeeded, failed); (0, 0) if the queue is idle."""
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
        if self.fifo:
            return self._run_fifo(messages)
        failed_ids = self._invoke(messages)
        delivered = [m for m in messages if m["MessageId"] not in failed_ids]
        failed = [m for m in messages if m["MessageId"] in failed_ids]
        self._delete(delivered)
        retry_in = [self._back_off(m) for m in failed]
        if failed:
            log.warning(
                "batch of %d: %d delivered, %d failed (retry in %s s)",
                len(messages),
                len(delivered),
                len(failed),
                "/".join(str(s) for s in sorted(set(retry_in))),
            )
        return len(delivered), len(failed)

    def _invoke(self, messages: list[dict[str, Any]]) -> set[str]:
        """Hand ``messages`` to the handler; the ids that failed, read with Lambda's rules."""
        ids = {m["MessageId"] for m in messages}
        try:
            response = self.handler(self.event(messages), LocalLambdaContext())
            return _failed_ids(response, ids)
        except Exception:
            log.exception("handler raised: the whole batch of %d fails", len(messages))
            return ids

    def _run_fifo(self, messages: list[dict[str, Any]]) -> tuple[int, int]:
        """One received batch of a FIFO queue, with message-group semantics (module doc)."""
        admitted = {
            group
            for group, group_messages in _fifo_groups(messages).items()
            if self._admit(group, group_messages)
        }
        batch = [m for m in messages if _group(m) in admitted]
        if not batch:
            return 0, 0
        failed_ids = self._invoke(batch)
        delivered: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        retry_in: list[int] = []
        for group, group_messages in _fifo_groups(batch).items():
            first = next(
                (i for i, m in enumerate(group_messages) if m["MessageId"] in failed_ids), None
            )
            if first is None:
                delivered.extend(group_messages)
                self.holds.pop(group, None)
                continue
            head, later = group_messages[first], group_messages[first + 1 :]
            delivered.extend(group_messages[:first])
            done_too_early = [m["MessageId"] for m in later if m["MessageId"] not in failed_ids]
            if done_too_early:
                log.warning(
                    "group %s: the handler reported %s done after %s failed; kept "
                    "queued behind it (FIFO)",
                    group,
                    ", ".join(done_too_early),
                    head["MessageId"],
                )
            seconds = self._back_off(head)
            self.holds[group] = GroupHold(head["MessageId"], self.clock() + seconds)
            # Later messages wait behind the head in the queue, not on a timer of their own.
            self._set_visibility(later, 0)
            failed += [head, *later]
            retry_in.append(seconds)
            log.info(
                "group %s: %s failed on receive %s; %d later message(s) held behind it",
                group,
                head["MessageId"],
                _receive_count(head),
                len(later),
            )
        self._delete(delivered)
        if failed:
            log.warning(
                "batch of %d: %d delivered, %d failed (retry in %s s)",
                len(batch),
                len(delivered),
                len(failed),
                "/".join(str(s) for s in sorted(set(retry_in))),
            )
        return len(delivered), len(failed)

    def _admit(self, group: str, group_messages: list[dict[str, Any]]) -> bool:
        """May this group's received messages go to the handler? If not, they go back."""
        hold = self.holds.get(group)
        if hold is None or any(m["MessageId"] == hold.message_id for m in group_messages):
            return True
        # The group's head failed earlier and is not in this receive: these came after it.
        wait = hold.retry_at - self.clock()
        if wait > FIFO_HEAD_GRACE_SECONDS:
            seconds = math.ceil(wait)  # come back with the head
        else:
            hold.misses += 1
            if hold.misses > self.fifo_head_misses:
                log.warning(
                    "group %s: %s has not come back in %d receives since its retry "
                    "was due (dead-lettered or deleted): the group goes on",
                    group,
                    hold.message_id,
                    hold.misses - 1,
                )
                del self.holds[group]
                return True
            seconds = 0  # back in the queue, behind the head
        log.info(
            "group %s: %d message(s) handed out before %s, which is pending retry: "
            "back to the queue",
            group,
            len(group_messages),
            hold.message_id,
        )
        self._set_visibility(group_messages, seconds)
        return False

    def _set_visibility(self, messages: list[dict[str, Any]], seconds: int) -> None:
        for start in range(0, len(messages), 10):
            chunk = messages[start : start + 10]
            try:
                response = self.sqs.change_message_visibility_batch(
                    QueueUrl=self.queue_url,
                    Entries=[
                        {
                            "Id": str(i),
                            "ReceiptHandle": m["ReceiptHandle"],
                            "VisibilityTimeout": seconds,
                        }
                        for i, m in enumerate(chunk)
                    ],
                )
            except ClientError as exc:
                log.error("could not change the visibility of %d message(s): %s", len(chunk), exc)
                continue
            for failure in response.get("Failed", []):
                log.error(
                    "could not change the visibility of %s: %s",
                    chunk[int(failure["Id"])]["MessageId"],
                    failure.get("Message"),
                )

    def run_forever(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set. SQS outages are logged and polled through, never fatal."""
        log.info("polling %s", self.queue_url)
        while not stop.is_set():
            try:
                self.run_once()
            except (BotoCoreError, ClientError):
                log.exception(
                    "could not poll %s; retrying in %d s", self.queue_url, ERROR_PAUSE_SECONDS
                )
                stop.wait(ERROR_PAUSE_SECONDS)
        log.info("stopped polling %s", self.queue_url)

    def event(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The event Lambda's SQS event source mapping would send for ``messages``."""
        return {
            "Records": [
                {
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
                }
                for m in messages
            ]
        }

    def _delete(self, messages: list[dict[str, Any]]) -> None:
        for start in range(0, len(messages), 10):
            chunk = messages[start : start + 10]
            response = self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)
                ],
            )
            for failure in response.get("Failed", []):
                # The message comes back and is delivered again: push is at-least-once.
                log.error(
                    "could not delete delivered message %s: %s",
                    chunk[int(failure["Id"])]["MessageId"],
                    failure.get("Message"),
                )

    def _back_off(self, message: dict[str, Any]) -> int:
        seconds = backoff_seconds(
            _receive_count(message), self.backoff_base_seconds, self.backoff_max_seconds
        )
        try:
            self.sqs.change_message_visibility(
                QueueUrl=self.queue_url,
                ReceiptHandle=message["ReceiptHandle"],
                VisibilityTimeout=seconds,
            )
        except ClientError as exc:
            # It still comes back, after the queue's own visibility timeout.
            log.error("could not back off message %s: %s", message["MessageId"], exc)
        return seconds


def _receive_count(message: dict[str, Any]) -> int:
    return int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))


def _fifo_groups(messages: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Messages by ``MessageGroupId``, in the order received (a group's order in SQS)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for m in messages:
        groups.setdefault(_group(m), []).append(m)
    return groups


def _group(message: dict[str, Any]) -> str:
    return message.get("Attributes", {}).get("MessageGroupId", "")


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
    out: dict[str, Any] = {
        "dataType": value["DataType"],
        "stringListValues": [],
        "binaryListValues": [],
    }
    if "StringValue" in value:
        out["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        out["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
    return out


@dataclass
class ShardPosition:
    """Where the runner reads a shard: the iterator, and the last record handled."""

    iterator: str | None = None
    after: str | None = None  # sequence number of the last record handled (or given up)
    failed_at: str | None = None  # the record that failed last, and how often in a row
    attempts: int = 0


class DynamoDBStreamRunner:
    """Lambda's DynamoDB stream event source mapping, locally, for one stream."""

    def __init__(
        self,
        stream_arn: str,
        handler: Handler,
        *,
        streams: Any = None,
        dynamodb: Any = None,
        batch_size: int = 100,
        max_retries: int = STREAM_MAX_RETRIES,
        region: str | None = None,
        stream_check_seconds: float = STREAM_CHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream_arn = stream_arn
        self.stream_check_seconds = stream_check_seconds
        self.clock = clock
        self._checked_at: float | None = None
        self.handler = handler
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.region = region or os.environ.get("AWS_REGION") or "us-east-1"
        self.shards: dict[str, ShardPosition] = {}
        self.given_up: list[str] = []  # sequence numbers of records given up on
        self._streams = streams
        self._dynamodb = dynamodb

    @property
    def streams(self) -> Any:
        if self._streams is None:
            self._streams = boto3.client("dynamodbstreams", region_name=self.region)
        return self._streams

    @property
    def dynamodb(self) -> Any:
        if self._dynamodb is None:
            self._dynamodb = boto3.client("dynamodb", region_name=self.region)
        return self._dynamodb

    @property
    def table_name(self) -> str:
        return self.stream_arn.split(":table/", 1)[1].split("/stream/", 1)[0]

    def run_once(self) -> tuple[int, int]:
        """One batch from each shard: (records handled, records failed)."""
        now = self.clock()
        if self._checked_at is None or now - self._checked_at >= self.stream_check_seconds:
            self._checked_at = now
            self._find_stream()
        try:
            shards = self.streams.describe_stream(StreamArn=self.stream_arn)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            self._find_stream()
            return 0, 0
        handled = failed = 0
        for shard in shards["StreamDescription"]["Shards"]:
            ok, bad = self._poll(
                shard["ShardId"], self.shards.setdefault(shard["ShardId"], ShardPosition())
            )
            handled, failed = handled + ok, failed + bad
        return handled, failed

    def _find_stream(self) -> None:
        """The table's current stream (the emulator restarted: same table, new stream)."""
        table = self.dynamodb.describe_table(TableName=self.table_name)["Table"]
        latest = table.get("LatestStreamArn")
        if latest and latest != self.stream_arn:
            log.info("stream of %s is now %s", self.table_name, latest)
            self.stream_arn, self.shards = latest, {}

    def _iterator(self, shard_id: str, position: ShardPosition) -> str:
        if position.iterator is None:
            kwargs: dict[str, Any] = {"ShardIteratorType": "TRIM_HORIZON"}
            if position.after is not None:
                kwargs = {
                    "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
                    "SequenceNumber": position.after,
                }
            position.iterator = self.streams.get_shard_iterator(
                StreamArn=self.stream_arn, ShardId=shard_id, **kwargs
            )["ShardIterator"]
        return position.iterator

    def _poll(self, shard_id: str, position: ShardPosition) -> tuple[int, int]:
        page = self.streams.get_records(
            ShardIterator=self._iterator(shard_id, position), Limit=self.batch_size
        )
        records = page.get("Records", [])
        position.iterator = page.get("NextShardIterator")
        if not records:
            return 0, 0
        failed_at = self._invoke(records)
        if failed_at is None:
            position.after, position.failed_at, position.attempts = (
                records[-1]["dynamodb"]["SequenceNumber"],
                None,
                0,
            )
            return len(records), 0
        done = [r for r in records if _seq(r) < _seq_of(failed_at)]
        if done:
            position.after = done[-1]["dynamodb"]["SequenceNumber"]
        position.attempts = position.attempts + 1 if position.failed_at == failed_at else 1
        position.failed_at = failed_at
        if position.attempts >= self.max_retries:
            log.error(
                "stream record %s of %s failed %d times: given up (in AWS: the on-failure "
                "destination)",
                failed_at,
                self.table_name,
                position.attempts,
            )
            self.given_up.append(failed_at)
            position.after, position.failed_at, position.attempts = failed_at, None, 0
        else:
            log.warning(
                "stream record %s of %s failed (attempt %d); read again from it",
                failed_at,
                self.table_name,
                position.attempts,
            )
        position.iterator = None  # from the record after position.after (or the start)
        return len(done), len(records) - len(done)

    def _invoke(self, records: list[dict[str, Any]]) -> str | None:
        """The handler's verdict on ``records``: the first failed sequence number, or None."""
        batch = {r["dynamodb"]["SequenceNumber"] for r in records}
        try:
            response = self.handler(self.event(records), LocalLambdaContext())
        except Exception:
            log.exception("stream batch of %d failed: retried whole", len(records))
            return str(records[0]["dynamodb"]["SequenceNumber"])
        failed = _failed_ids(response, batch)
        if not failed:
            return None
        return min(failed, key=_seq_of)

    def event(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """The event Lambda's stream event source mapping would send for ``records``."""
        out = []
        for r in records:
            change = dict(r["dynamodb"])
            created = change.get("ApproximateCreationDateTime")
            if isinstance(created, datetime):
                change["ApproximateCreationDateTime"] = int(created.timestamp())
            out.append(
                {
                    "eventID": r.get("eventID"),
                    "eventName": r["eventName"],
                    "eventVersion": r.get("eventVersion", "1.1"),
                    "eventSource": "aws:dynamodb",
                    "awsRegion": r.get("awsRegion", self.region),
                    "dynamodb": change,
                    "eventSourceARN": self.stream_arn,
                }
            )
        return {"Records": out}

    def poll(self) -> tuple[int, int] | None:
        """:meth:`run_once`, never raising: None after an error, once the runner has made
        ready to read again (fresh iterators; the table's current stream, which is another
        one when the emulator restarted and the stack deployed it again)."""
        try:
            return self.run_once()
        except Exception:  # the emulator restarting, a stream replaced...: never fatal
            log.exception("could not read %s", self.stream_arn)
        for position in self.shards.values():
            position.iterator = None  # an iterator of a stream that is gone never works
        try:
            self._find_stream()
        except Exception as exc:
            log.warning("could not find the stream of %s yet: %s", self.table_name, exc)
        return None

    def run_forever(self, stop: threading.Event, poll_seconds: float = STREAM_POLL_SECONDS) -> None:
        log.info("reading %s", self.stream_arn)
        while not stop.is_set():
            result = self.poll()
            if result is None:
                stop.wait(ERROR_PAUSE_SECONDS)
            elif result == (0, 0):
                stop.wait(poll_seconds)


def _seq_of(sequence_number: str) -> int:
    return int(sequence_number)


def _seq(record: dict[str, Any]) -> int:
    return _seq_of(record["dynamodb"]["SequenceNumber"])


def load_handler(dotted: str) -> Handler:
    """``package.module.attribute`` -> the handler object, as Lambda's Handler setting names it."""
    module_name, _, attribute = dotted.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


def main(argv: list[str] | None = None) -> int:
    """``python -m relay.eventsource HANDLER``: run until SIGTERM/SIGINT."""
    argv = sys.argv[1:] if argv is None else argv
    # JSON lines, as the function's own logs are (module_kit.logs; LOG_LEVEL applies).
    logs.setup_logging(os.environ.get("POWERTOOLS_SERVICE_NAME") or "eventsource")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    if len(argv) == 1 and os.environ.get(STREAM_ARNS_VARIABLE):
        return _run_streams(argv[0], os.environ[STREAM_ARNS_VARIABLE].split(","))
    missing = [v for v in (QUEUE_URL_VARIABLE, QUEUE_ARN_VARIABLE) if not os.environ.get(v)]
    if len(argv) != 1 or missing:
        log.error(
            "usage: python -m relay.eventsource package.module.handler, with %s set (missing: %s)",
            " and ".join((QUEUE_URL_VARIABLE, QUEUE_ARN_VARIABLE)),
            ", ".join(missing) or "-",
        )
        return 2
    runner = SqsEventSourceRunner(
        os.environ[QUEUE_URL_VARIABLE],
        os.environ[QUEUE_ARN_VARIABLE],
        load_handler(argv[0]),
        backoff_base_seconds=int(os.environ.get("EVENT_SOURCE_BACKOFF_BASE_SECONDS", 1)),
        backoff_max_seconds=int(os.environ.get("EVENT_SOURCE_BACKOFF_MAX_SECONDS", 60)),
    )
    stop = _stop_on_signals("the batch in flight")
    runner.run_forever(stop)
    return 0


def _stop_on_signals(in_flight: str) -> threading.Event:
    """An event SIGTERM or SIGINT sets: the runner stops after ``in_flight``."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        log.info("%s: stopping after %s", signal.Signals(signum).name, in_flight)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop


def _run_streams(dotted: str, arns: list[str]) -> int:
    """One thread per stream, one handler (as one function with several stream events)."""
    loaded = load_handler(dotted)
    one_at_a_time = threading.Lock()  # one invocation at a time, as one Lambda environment

    def handler(event: dict[str, Any], context: Any) -> Any:
        with one_at_a_time:
            return loaded(event, context)

    stop = _stop_on_signals("the batches in flight")
    threads = [
        threading.Thread(
            target=DynamoDBStreamRunner(arn, handler).run_forever,
            args=(stop,),
            name=f"stream-{k}",
            daemon=True,
        )
        for k, arn in enumerate(a for a in arns if a)
    ]
    for t in threads:
        t.start()
    while not stop.is_set():
        stop.wait(1)
    for t in threads:
        t.join(timeout=FUNCTION_TIMEOUT_SECONDS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
