"""The local SQS event source runner: delivery, retries with backoff, dead-letters, replay."""

from __future__ import annotations

import hashlib
import os
import signal
from collections import Counter

import pytest

from modules.notifications.config import NotificationsSettings
from modules.notifications.handler import make_handler
from modules.notifications.publisher import PushPublisher
from modules.notifications.replay import replay_dead_letters
from relay import eventsource as runner_module
from relay.eventsource import SqsEventSourceRunner, backoff_seconds
from tests.modules.notifications.conftest import notification

MAX_RECEIVE_COUNT = 5  # NotificationsQueue's RedrivePolicy in template.yaml


def make_runner(queues, handler, **kw) -> SqsEventSourceRunner:
    kw = {"wait_seconds": 0, "backoff_base_seconds": 0, **kw}
    return SqsEventSourceRunner(queues.url, queues.arn, handler, sqs=queues.sqs, **kw)


def drain(runner: SqsEventSourceRunner, max_batches: int = 50) -> tuple[int, int]:
    """run_once until the queue is idle; totals of (succeeded, failed)."""
    totals = [0, 0]
    for _ in range(max_batches):
        ok, failed = runner.run_once()
        if ok == failed == 0:
            return totals[0], totals[1]
        totals[0] += ok
        totals[1] += failed
    pytest.fail(f"queue still busy after {max_batches} batches")


class Recording:
    """Wraps a handler and records, per message, every ApproximateReceiveCount it saw."""

    def __init__(self, handler):
        self.handler = handler
        self.receives: dict[str, list[int]] = {}
        self.events: list[dict] = []

    def __call__(self, event, context):
        self.events.append(event)
        for r in event["Records"]:
            self.receives.setdefault(r["messageId"], []).append(
                int(r["attributes"]["ApproximateReceiveCount"])
            )
        return self.handler(event, context)


def test_delivered_messages_are_published_and_deleted(queues, subscriber):
    # GIVEN three notifications on the queue
    for i in range(3):
        queues.send(notification(i).model_dump_json())
    # WHEN the runner processes one batch
    result = make_runner(queues, make_handler()).run_once()
    # THEN all three are published and none is left on the queue
    assert result == (3, 0)
    assert sorted(subscriber.notification_ids()) == [f"N-test-{i:04d}" for i in range(3)]
    assert queues.depth() == 0


def test_handler_receives_a_lambda_shaped_sqs_event(queues):
    # GIVEN a message with a message attribute on the queue
    body = notification().model_dump_json()
    message_id = queues.sqs.send_message(
        QueueUrl=queues.url,
        MessageBody=body,
        MessageAttributes={"source": {"DataType": "String", "StringValue": "loads"}},
    )["MessageId"]
    recording = Recording(lambda event, context: {"batchItemFailures": []})
    # WHEN the runner processes it
    make_runner(queues, recording).run_once()
    # THEN the handler got the record as Lambda's event source mapping would shape it
    [record] = recording.events[0]["Records"]
    assert record["messageId"] == message_id and record["body"] == body
    assert record["md5OfBody"] == hashlib.md5(body.encode()).hexdigest()  # noqa: S324 - SQS
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert record["messageAttributes"]["source"]["stringValue"] == "loads"
    assert record["messageAttributes"]["source"]["dataType"] == "String"
    assert (record["eventSource"], record["eventSourceARN"], record["awsRegion"]) == (
        "aws:sqs",
        queues.arn,
        "us-east-1",
    )
    assert record["receiptHandle"]


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(RuntimeError("boom"), id="handler-raises"),
        pytest.param({"batchItemFailures": [{"itemIdentifier": "not-in-batch"}]}, id="unknown-id"),
        pytest.param({"batchItemFailures": [{"itemIdentifier": ""}]}, id="empty-id"),
    ],
)
def test_whole_batch_fails_like_lambda_would(queues, answer):
    # GIVEN a handler that raises or answers with an identifier Lambda would reject
    def handler(event, context):
        if isinstance(answer, Exception):
            raise answer
        return answer

    queues.send(notification(1).model_dump_json())
    queues.send(notification(2).model_dump_json())
    runner = make_runner(queues, handler)
    # WHEN the runner processes the batch
    # THEN every message fails and stays queued, to be received again
    assert runner.run_once() == (0, 2)
    assert queues.depth() == 2
    assert runner.run_once() == (0, 2)


def test_failing_notifications_dead_letter_then_replay_delivers_each_exactly_once(
    queues, subscriber
):
    # GIVEN notifications queued while SNS refuses to publish
    sent = {f"N-test-{i:04d}" for i in range(12)}
    for i in range(12):
        queues.send(notification(i).model_dump_json())
    broken = PushPublisher(
        NotificationsSettings(push_topic_arn="arn:aws:sns:us-east-1:123456789012:no-such-topic")
    )
    recording = Recording(make_handler(broken))
    # WHEN the runner keeps retrying until the queue is empty
    ok, failed = drain(make_runner(queues, recording))
    # THEN each was tried MaxReceiveCount times, then moved to the dead-letter queue
    assert (ok, failed) == (0, 12 * MAX_RECEIVE_COUNT)
    assert all(
        counts == list(range(1, MAX_RECEIVE_COUNT + 1)) for counts in recording.receives.values()
    )
    assert len(recording.receives) == 12
    assert queues.depth() == 0 and queues.depth(queues.dead_letter_url) == 12
    assert subscriber.drain() == []

    # WHEN an operator replays the dead letters and SNS is healthy again
    moved = replay_dead_letters(queues.sqs, queues.dead_letter_url, queues.url)
    ok, failed = drain(make_runner(queues, make_handler()))
    # THEN every notification is delivered exactly once: none lost, none duplicated
    assert moved == 12 and (ok, failed) == (12, 0)
    delivered = Counter(subscriber.notification_ids())
    assert set(delivered) == sent and set(delivered.values()) == {1}
    assert queues.depth() == 0 and queues.depth(queues.dead_letter_url) == 0


def test_backoff_doubles_per_receive_up_to_the_cap():
    assert [backoff_seconds(n, 1, 60) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert [backoff_seconds(n, 5, 30) for n in (1, 2, 3)] == [5, 10, 20]
    assert backoff_seconds(3, 0, 60) == 0  # tests retry at once
    assert backoff_seconds(1000, 60, 10**9) == 43_200  # SQS's 12 h visibility limit


class VisibilitySpy:
    """An SQS client that records the backoff asked for, then applies 0 so tests need no sleep."""

    def __init__(self, sqs):
        self._sqs = sqs
        self.asked: list[int] = []

    def __getattr__(self, name):
        return getattr(self._sqs, name)

    def change_message_visibility(self, **kw):
        self.asked.append(kw["VisibilityTimeout"])
        return self._sqs.change_message_visibility(**{**kw, "VisibilityTimeout": 0})


def test_runner_backs_off_failed_messages_by_their_receive_count(queues):
    # GIVEN a message every delivery of which fails, and a runner with base 2 s, max 10 s
    queues.send(notification().model_dump_json())
    spy = VisibilitySpy(queues.sqs)
    runner = SqsEventSourceRunner(
        queues.url,
        queues.arn,
        lambda e, c: {
            "batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in e["Records"]]
        },
        sqs=spy,
        wait_seconds=0,
        backoff_base_seconds=2,
        backoff_max_seconds=10,
    )
    # WHEN it fails on each of its receives
    drain(runner)
    # THEN each failure hid it for twice as long as the previous, capped, until it dead-lettered
    assert spy.asked == [2, 4, 8, 10, 10]


def test_main_exits_cleanly_on_sigterm(queues, monkeypatch):
    # GIVEN the runner's environment and a poll loop that receives SIGTERM while polling
    monkeypatch.setenv("EVENT_SOURCE_QUEUE_URL", queues.url)
    monkeypatch.setenv("EVENT_SOURCE_QUEUE_ARN", queues.arn)
    polled = []

    def run_forever(self, stop):
        os.kill(os.getpid(), signal.SIGTERM)
        polled.append(stop.is_set())

    monkeypatch.setattr(SqsEventSourceRunner, "run_forever", run_forever)
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        # WHEN main runs / THEN the signal only asks the loop to stop, and main returns 0
        assert runner_module.main(["modules.notifications.handler.handler"]) == 0
        assert polled == [True]
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def test_main_refuses_to_start_without_its_queue(queues, monkeypatch, caplog):
    monkeypatch.delenv("EVENT_SOURCE_QUEUE_URL", raising=False)
    monkeypatch.delenv("EVENT_SOURCE_QUEUE_ARN", raising=False)
    assert runner_module.main(["modules.notifications.handler.handler"]) == 2
    assert "EVENT_SOURCE_QUEUE_URL" in caplog.text
