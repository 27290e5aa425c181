"""The local SQS event source on a FIFO queue keeps SQS FIFO's message-group semantics.

Against moto in-process, with an injected handler and clock. Visibility changes are
recorded and applied as 0, so nothing waits for a real timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from relay.eventsource import SqsEventSourceRunner
from tests.fakes import MonotonicClock

MAX_RECEIVES = 20  # bound on every loop below


@dataclass
class Fifo:
    sqs: Any
    url: str
    arn: str

    def send(self, group: str, body: str) -> None:
        self.sqs.send_message(
            QueueUrl=self.url, MessageBody=body, MessageGroupId=group, MessageDeduplicationId=body
        )

    def depth(self) -> int:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return sum(int(v) for v in attrs.values())


@pytest.fixture
def fifo(aws) -> Fifo:
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(
        QueueName="writes.fifo", Attributes={"FifoQueue": "true", "VisibilityTimeout": "60"}
    )["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return Fifo(sqs, url, arn)


class GroupHandler:
    """Applies records in order; a group stops at its first failure (the rest fail too),
    like Powertools' SqsFifoPartialProcessor with skip_group_on_error.

    ``failures``: body -> how many of its deliveries fail. With ``report_rest=False`` it
    reports only the failing record itself, as a handler that ignores FIFO rules would.
    """

    def __init__(self, failures: dict[str, int] | None = None, *, report_rest: bool = True):
        self.failures = dict(failures or {})
        self.report_rest = report_rest
        self.batches: list[list[str]] = []
        self.applied: list[str] = []

    def __call__(self, event: dict, context: Any) -> dict:
        self.batches.append([r["body"] for r in event["Records"]])
        failed_groups: set[str] = set()
        failures = []
        for record in event["Records"]:
            body, group = record["body"], record["attributes"]["MessageGroupId"]
            if group in failed_groups and self.report_rest:
                failures.append({"itemIdentifier": record["messageId"]})
            elif self.failures.get(body, 0) > 0:
                self.failures[body] -= 1
                failed_groups.add(group)
                failures.append({"itemIdentifier": record["messageId"]})
            else:
                self.applied.append(body)
        return {"batchItemFailures": failures}


class Emulator:
    """The SQS client, recording every visibility asked for and applying 0 instead.

    ``skip`` bodies are left out of the next receive and made visible again, as moto 5.2
    does when a group's in-flight messages all become visible at once (it hands out the
    last of them). ``gone`` bodies are deleted when next received (dead-lettered).
    """

    def __init__(self, sqs: Any):
        self._sqs = sqs
        self.head_backoffs: list[int] = []
        self.released: list[tuple[str, int]] = []  # (body, visibility) of the others
        self.skip: set[str] = set()
        self.gone: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)

    def change_message_visibility(self, **kw: Any) -> Any:
        self.head_backoffs.append(kw["VisibilityTimeout"])
        return self._sqs.change_message_visibility(**{**kw, "VisibilityTimeout": 0})

    def change_message_visibility_batch(self, **kw: Any) -> Any:
        bodies = {m["ReceiptHandle"]: m["Body"] for m in self._last}
        self.released += [
            (bodies[e["ReceiptHandle"]], e["VisibilityTimeout"]) for e in kw["Entries"]
        ]
        return self._sqs.change_message_visibility_batch(
            QueueUrl=kw["QueueUrl"], Entries=[{**e, "VisibilityTimeout": 0} for e in kw["Entries"]]
        )

    def receive_message(self, **kw: Any) -> Any:
        response = self._sqs.receive_message(**kw)
        kept = []
        for m in response.get("Messages", []):
            if m["Body"] in self.gone:
                self._sqs.delete_message(QueueUrl=kw["QueueUrl"], ReceiptHandle=m["ReceiptHandle"])
            elif m["Body"] in self.skip:
                self._sqs.change_message_visibility(
                    QueueUrl=kw["QueueUrl"], ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
                )
            else:
                kept.append(m)
        self.skip = set()
        self._last = kept
        return {**response, "Messages": kept}


def runner_for(fifo: Fifo, handler: Any, sqs: Any = None, **kw: Any) -> SqsEventSourceRunner:
    kw = {"wait_seconds": 0, "backoff_base_seconds": 0, **kw}
    return SqsEventSourceRunner(fifo.url, fifo.arn, handler, sqs=sqs or fifo.sqs, **kw)


def drain(runner: SqsEventSourceRunner, fifo: Fifo) -> int:
    """run_once until the queue is empty; how many receives it took."""
    for n in range(1, MAX_RECEIVES + 1):
        runner.run_once()
        if fifo.depth() == 0:
            return n
    pytest.fail(f"queue not empty after {MAX_RECEIVES} receives")


def firsts_of(group: str, batches: list[list[str]]) -> list[str]:
    """For each batch with messages of ``group``: the first of them."""
    return [
        next(b for b in batch if b.startswith(group))
        for batch in batches
        if any(b.startswith(group) for b in batch)
    ]


def test_a_failed_head_holds_its_group_in_order_and_other_groups_go_on(fifo):
    # GIVEN two drivers' writes interleaved, and A1 fails on its first three deliveries
    for body in ("A1", "B1", "A2", "B2", "A3"):
        fifo.send(body[0], body)
    handler = GroupHandler({"A1": 3})
    runner = runner_for(fifo, handler)
    assert runner.fifo
    # WHEN the runner works until the queue is empty
    drain(runner, fifo)
    # THEN group B went through in the first batch, untouched by A's failures
    assert handler.batches[0] == ["A1", "B1", "A2", "B2", "A3"]
    assert handler.applied[:2] == ["B1", "B2"]
    # AND group A was applied once each, in order, after A1's three failures
    assert handler.applied[2:] == ["A1", "A2", "A3"]
    assert [b for batch in handler.batches for b in batch].count("A1") == 4
    # AND no batch ever started group A anywhere but at A1 (applied in the last one)
    assert firsts_of("A", handler.batches) == ["A1"] * 4


def test_later_messages_are_not_deleted_when_the_handler_says_done_after_a_failure(fifo):
    # GIVEN a handler that ignores FIFO rules: A1 fails once, but it "applies" A2 anyway
    fifo.send("A", "A1")
    fifo.send("A", "A2")
    handler = GroupHandler({"A1": 1}, report_rest=False)
    runner = runner_for(fifo, handler)
    # WHEN the first batch comes back with only A1 failed
    assert runner.run_once() == (0, 2)
    # THEN A2 stays queued behind A1 (SQS FIFO would not have let it pass A1)
    assert fifo.depth() == 2
    # AND it is delivered again after A1, in one batch, and only then deleted
    drain(runner, fifo)
    assert handler.batches == [["A1", "A2"], ["A1", "A2"]]


def test_the_head_backs_off_by_its_receive_count_and_the_rest_waits_behind_it(fifo):
    # GIVEN a group whose head fails three times, base 2 s, max 5 s
    for body in ("A1", "A2", "A3"):
        fifo.send("A", body)
    emulator = Emulator(fifo.sqs)
    runner = runner_for(
        fifo,
        GroupHandler({"A1": 3}),
        emulator,
        backoff_base_seconds=2,
        backoff_max_seconds=5,
        clock=MonotonicClock(),
    )
    # WHEN it works the queue empty
    drain(runner, fifo)
    # THEN only the head was put out of sight, for 2, 4, then 5 s (capped)
    assert emulator.head_backoffs == [2, 4, 5]
    # AND its later messages went straight back to the queue, behind it, each time
    assert emulator.released == [("A2", 0), ("A3", 0)] * 3


def test_later_messages_handed_out_before_the_pending_head_go_back_to_the_queue(fifo):
    # GIVEN A1 failed once (retry in 5 s) with A2 and A3 behind it
    for body in ("A1", "A2", "A3"):
        fifo.send("A", body)
    clock = MonotonicClock()
    emulator = Emulator(fifo.sqs)
    handler = GroupHandler({"A1": 1})
    runner = runner_for(fifo, handler, emulator, backoff_base_seconds=5, clock=clock)
    assert runner.run_once() == (0, 3)
    emulator.released.clear()

    # WHEN the queue hands out A2 and A3 without A1, 1 s later (A1's retry not yet due)
    clock.now += 1
    emulator.skip = {"A1"}
    # THEN the handler does not see them; they come back when A1 is due (in 4 s)
    assert runner.run_once() == (0, 0)
    assert handler.batches == [["A1", "A2", "A3"]]
    assert emulator.released == [("A2", 4), ("A3", 4)]

    # WHEN it happens again once A1 is due
    clock.now += 4
    emulator.skip = {"A1"}
    # THEN they go back to the queue at once, behind A1
    assert runner.run_once() == (0, 0)
    assert emulator.released[2:] == [("A2", 0), ("A3", 0)]

    # AND the next receive delivers the group from A1, in order
    assert runner.run_once() == (3, 0)
    assert handler.batches[1:] == [["A1", "A2", "A3"]]
    assert handler.applied == ["A1", "A2", "A3"] and fifo.depth() == 0


def test_a_group_goes_on_once_its_head_is_gone_for_good(fifo):
    # GIVEN A1 always fails, and leaves the queue (dead-lettered) after its first failure
    fifo.send("A", "A1")
    fifo.send("A", "A2")
    emulator = Emulator(fifo.sqs)
    handler = GroupHandler({"A1": 99})
    runner = runner_for(fifo, handler, emulator, fifo_head_misses=2, clock=MonotonicClock())
    assert runner.run_once() == (0, 2)
    emulator.gone = {"A1"}
    # WHEN the runner keeps receiving A2 without its head
    receives = drain(runner, fifo)
    # THEN it held A2 back twice (the head might still come), then let the group go on
    assert receives == 3
    assert emulator.released == [("A2", 0)] * 3  # once behind the failed head, twice held
    assert handler.batches == [["A1", "A2"], ["A2"]]
    assert handler.applied == ["A2"] and runner.holds == {}


def test_standard_queues_keep_per_message_backoff(aws):
    # GIVEN a standard queue: no groups, so no holding
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="pushes")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    for body in ("n1", "n2"):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    seen: list[str] = []

    def handler(event: dict, context: Any) -> dict:
        seen.extend(r["body"] for r in event["Records"])
        return {
            "batchItemFailures": [
                {"itemIdentifier": r["messageId"]} for r in event["Records"] if r["body"] == "n1"
            ]
        }

    runner = SqsEventSourceRunner(
        url, arn, handler, sqs=sqs, wait_seconds=0, backoff_base_seconds=0
    )
    # WHEN n1 fails and n2 succeeds
    # THEN n2 is deleted at once although n1 failed before it
    assert not runner.fifo
    assert runner.run_once() == (1, 1)
    assert runner.run_once() == (0, 1) and seen == ["n1", "n2", "n1"]
