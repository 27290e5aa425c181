"""The operators' pause:notifications lever: while it holds, the worker delivers nothing
and every message stays queued (put back, never failed towards the dead-letter queue);
released, every one is delivered."""

from __future__ import annotations

import os

import boto3
import pytest

from gateway.config import GatewaySettings
from gateway.levers import LeverControl, LeverStore
from gateway.routing.routes import RouteTable
from modules.notifications.handler import make_handler
from modules.notifications.pause import NotificationsPause
from relay.eventsource import SqsEventSourceRunner
from shared_contracts.levers import Lever, LeverPull, LeverType
from tests.fakes import MonotonicClock
from tests.modules.notifications.conftest import notification
from tests.unit.gateway.conftest import UPSTREAMS

TABLE = "relay-test-routing-levers"


@pytest.fixture
def levers(queues) -> LeverControl:
    dynamodb = boto3.resource("dynamodb")
    dynamodb.create_table(
        TableName=TABLE,
        AttributeDefinitions=[
            {"AttributeName": "kind", "AttributeType": "S"},
            {"AttributeName": "name", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "kind", "KeyType": "HASH"},
            {"AttributeName": "name", "KeyType": "RANGE"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    routes = RouteTable.load(GatewaySettings().routes_file, env=UPSTREAMS)
    return LeverControl(LeverStore(TABLE, dynamodb=dynamodb), routes)


def test_nothing_is_delivered_while_paused_and_everything_after(queues, subscriber, levers):
    # GIVEN an operator's pause, and three notifications queued
    levers.pull(LeverPull(type="pause", target="notifications", reason="push outage"), "ops-1")
    clock = MonotonicClock()
    pause = NotificationsPause(TABLE, clock=clock, cache_seconds=3, hold_seconds=0)
    handler = make_handler(pause=pause, sqs=queues.sqs)
    runner = SqsEventSourceRunner(
        queues.url, queues.arn, handler, sqs=queues.sqs, wait_seconds=0, backoff_base_seconds=0
    )
    sent = sorted(notification(i).notification_id for i in range(3))
    for i in range(3):
        queues.send(notification(i).model_dump_json())
    # WHEN the worker polls many times while paused
    for _ in range(8):
        runner.run_once()
    # THEN nothing was published, the three are still queued, none dead-lettered
    assert subscriber.drain() == []
    assert queues.depth() == 3 and queues.depth(queues.dead_letter_url) == 0
    # WHEN the lever is released (and the worker's reading of it is older than its cache)
    levers.release("pause:notifications", "ops-1", "push back")
    assert pause.current() is not None  # still the cached reading
    clock.now += 3
    # THEN every notification is delivered, once
    for _ in range(5):
        runner.run_once()
    assert sorted(subscriber.notification_ids()) == sent
    assert queues.depth() == 0 and queues.depth(queues.dead_letter_url) == 0


class OneItemTable:
    """A DynamoDB resource whose every table holds ``item`` (counting the reads)."""

    def __init__(self, item: dict | None) -> None:
        self.item, self.reads = item, 0

    def Table(self, name: str) -> OneItemTable:  # boto3's name
        return self

    def get_item(self, **_: object) -> dict:
        self.reads += 1
        return {} if self.item is None else {"Item": self.item}


def test_a_pause_lets_go_at_expires_at_and_is_read_once_per_cache_period():
    lever = Lever(
        lever_id="pause:notifications",
        type=LeverType.PAUSE,
        target="notifications",
        who="ops-1",
        why="r",
        pulled_at=1_000,
        expires_at=1_060,
    )
    table = OneItemTable(lever.item())
    wall, mono = [1_059.0], MonotonicClock()
    pause = NotificationsPause(
        TABLE, dynamodb=table, clock=mono, wall_clock=lambda: wall[0], cache_seconds=3
    )
    assert pause.current() == lever and pause.current() == lever and table.reads == 1
    wall[0] += 1  # its expires_at: the table's TTL has not deleted it yet
    assert pause.current() is None and table.reads == 1
    table.item = None
    mono.now += 3
    assert pause.current() is None and table.reads == 2


def test_no_table_means_never_paused():
    assert NotificationsPause(None).current() is None


def test_the_deployed_worker_reads_the_stage_routing_table(queues, subscriber, monkeypatch):
    """The worker's environment from its template names the gateway stack's routing-control
    table (and its own queue): a pause pulled there holds the worker built from it."""
    table = os.environ["RELAY_ROUTING_TABLE"]
    assert os.environ["NOTIFICATIONS_QUEUE_URL"] == queues.url
    routes = RouteTable.load(GatewaySettings().routes_file, env=UPSTREAMS)
    control = LeverControl(LeverStore(table, dynamodb=boto3.resource("dynamodb")), routes)
    control.pull(LeverPull(type="pause", target="notifications", reason="r"), "ops-1")
    queues.send(notification(1).model_dump_json())
    runner = SqsEventSourceRunner(
        queues.url, queues.arn, make_handler(sqs=queues.sqs), sqs=queues.sqs, wait_seconds=0
    )
    assert runner.run_once() == (1, 0)  # put back (held 30 s), reported done
    delayed = queues.sqs.get_queue_attributes(
        QueueUrl=queues.url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]["ApproximateNumberOfMessagesDelayed"]
    assert subscriber.drain() == [] and queues.depth() == 0 and int(delayed) == 1
