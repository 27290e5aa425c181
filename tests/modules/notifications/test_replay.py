"""replay_dead_letters: moves messages intact, honours the limit, refuses a loop."""

from __future__ import annotations

import pytest

from modules.notifications.replay import replay_dead_letters


def test_replay_moves_body_and_attributes_up_to_the_limit(queues):
    # GIVEN three dead letters, one with a message attribute
    attrs = {"source": {"DataType": "String", "StringValue": "loads"}}
    queues.sqs.send_message(
        QueueUrl=queues.dead_letter_url, MessageBody="first", MessageAttributes=attrs
    )
    for body in ("second", "third"):
        queues.sqs.send_message(QueueUrl=queues.dead_letter_url, MessageBody=body)
    # WHEN two are replayed, then the rest
    first = replay_dead_letters(queues.sqs, queues.dead_letter_url, queues.url, limit=2)
    assert queues.depth(queues.dead_letter_url) == 1
    rest = replay_dead_letters(queues.sqs, queues.dead_letter_url, queues.url)
    # THEN all three are on the main queue, unchanged, and the dead-letter queue is empty
    assert (first, rest) == (2, 1)
    msgs = queues.sqs.receive_message(
        QueueUrl=queues.url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    )["Messages"]
    assert sorted(m["Body"] for m in msgs) == ["first", "second", "third"]
    [tagged] = [m for m in msgs if m["Body"] == "first"]
    assert tagged["MessageAttributes"]["source"]["StringValue"] == "loads"
    assert queues.depth(queues.dead_letter_url) == 0


def test_replay_of_an_empty_dead_letter_queue_moves_nothing(queues):
    assert replay_dead_letters(queues.sqs, queues.dead_letter_url, queues.url) == 0


def test_replay_refuses_to_move_a_queue_onto_itself(queues):
    with pytest.raises(ValueError):
        replay_dead_letters(queues.sqs, queues.url, queues.url)
