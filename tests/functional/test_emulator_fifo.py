"""relay.emulator: moto with SQS FIFO groups that stay in order when in-flight messages time out.

A receive with VisibilityTimeout=0 leaves the messages in flight for moto but already timed
out: what a consumer killed mid-batch leaves behind, without waiting for a real timeout.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from relay.emulator import LONG_POLL_RECHECK_SECONDS, keep_fifo_groups_in_order, long_polls_wait
from relay.eventsource import SqsEventSourceRunner

BODIES = ("A1", "A2", "A3")


@pytest.fixture
def fifo(aws):
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="writes.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    for body in BODIES:
        sqs.send_message(
            QueueUrl=url, MessageBody=body, MessageGroupId="A", MessageDeduplicationId=body
        )
    return sqs, url


@pytest.fixture
def patched():
    undo = keep_fifo_groups_in_order()
    yield
    undo()


@pytest.fixture
def long_polls():
    undo = long_polls_wait()
    yield
    undo()


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts how often moto looks through a queue for visible messages."""
    from moto.sqs.models import Queue

    seen: list[int] = []
    visible = Queue.messages.fget

    def messages(self: Any) -> Any:
        seen.append(1)
        return visible(self)

    monkeypatch.setattr(Queue, "messages", property(messages))
    return seen


def long_poll_behind_the_head(sqs: Any, url: str) -> dict[str, Any]:
    """A1 in flight (a write backing off): A2 and A3 are visible but may not be handed out.
    A long poll of one second (SQS's shortest) finds nothing."""
    head = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=30)
    assert [m["Body"] for m in head["Messages"]] == ["A1"]
    got: dict[str, Any] = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)
    assert "Messages" not in got
    return got


def lapse(sqs: Any, url: str) -> None:
    """Receive the whole group and let its visibility run out at once (a killed consumer)."""
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
    assert [m["Body"] for m in got["Messages"]] == list(BODIES)


def receive_and_delete(sqs: Any, url: str) -> list[str]:
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    for m in got:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return [m["Body"] for m in got]


def test_unpatched_moto_hands_out_the_last_message_of_a_timed_out_group_first(fifo):
    # The reason for relay.emulator; when this fails, moto has fixed it and the patch can go.
    sqs, url = fifo
    lapse(sqs, url)
    assert receive_and_delete(sqs, url) == ["A3"]


def test_the_patched_emulator_hands_a_timed_out_group_out_from_its_head(fifo, patched):
    sqs, url = fifo
    lapse(sqs, url)
    handed_out = []
    for _ in range(len(BODIES) + 1):
        handed_out += receive_and_delete(sqs, url)
    assert handed_out == list(BODIES)


def test_a_fresh_runner_after_a_killed_one_applies_the_group_in_order(fifo, patched):
    # GIVEN a runner was killed with the whole group in flight (it remembers nothing)
    sqs, url = fifo
    lapse(sqs, url)
    applied: list[str] = []
    arn = "arn:aws:sqs:us-east-1:123456789012:writes.fifo"
    runner = SqsEventSourceRunner(
        url,
        arn,
        lambda event, context: applied.extend(r["body"] for r in event["Records"]),
        sqs=sqs,
        wait_seconds=0,
    )
    # WHEN a new one works the queue
    for _ in range(2 * len(BODIES)):
        runner.run_once()
    # THEN the group is applied once each, in order
    assert applied == list(BODIES)


@pytest.mark.parametrize(
    ("patch", "attribute"),
    [(keep_fifo_groups_in_order, "pending_message_groups"), (long_polls_wait, "wait_for_messages")],
)
def test_the_patch_can_be_undone(patch, attribute):
    from moto.sqs.models import Queue

    before = Queue.__dict__[attribute]
    undo = patch()
    assert Queue.__dict__[attribute] is not before
    undo()
    assert Queue.__dict__[attribute] is before


def test_unpatched_moto_spins_through_a_long_poll_behind_a_group_in_flight(fifo, patched, scans):
    # The reason for long_polls_wait; when this fails, moto has fixed it and the patch can go.
    sqs, url = fifo
    long_poll_behind_the_head(sqs, url)
    assert len(scans) > 200


def test_the_patched_long_poll_sleeps_behind_a_group_in_flight(fifo, patched, long_polls, scans):
    sqs, url = fifo
    long_poll_behind_the_head(sqs, url)
    # one look per recheck over the second, and a few more on the way in and out
    assert len(scans) <= 1 / LONG_POLL_RECHECK_SECONDS + 5


def test_the_patched_long_poll_still_hands_out_what_it_may(fifo, patched, long_polls):
    sqs, url = fifo
    sqs.send_message(
        QueueUrl=url, MessageBody="B1", MessageGroupId="B", MessageDeduplicationId="B1"
    )
    sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=30)  # A1
    got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1, MaxNumberOfMessages=10)
    assert [m["Body"] for m in got["Messages"]] == ["B1"]
