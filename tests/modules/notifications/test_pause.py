"""The operators' pause:notifications lever: while it holds, the worker delivers nothing
and every message stays queued (put back, never failed towards the dead-letter queue);
released, every one is delivered."""

from __future__ import annotations

import boto3
import pytest

from gateway.config import GatewaySettings
from gateway.levers import LeverControl, LeverStore
from gateway.routing.routes import RouteTable
from modules.notifications.handler import make_handler
from modules.notifications.pause import NotificationsPause
from relay.eventsource import SqsEventSourceRunner
from shared_contracts.levers import LeverPull
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


def test_an_expired_pause_delivers_without_a_release(queues, subscriber, levers):
    levers.pull(
        LeverPull(type="pause", target="notifications", reason="r", ttl_seconds=60), "ops-1"
    )
    lever = levers.store.get("pause:notifications")
    assert lever is not None and lever.expires_at is not None
    wall = [float(lever.expires_at) - 1]
    pause = NotificationsPause(TABLE, wall_clock=lambda: wall[0], hold_seconds=0)
    assert pause.current() is not None
    wall[0] += 1  # its expires_at: the table's TTL has not deleted it yet
    assert pause.current() is None
    queues.send(notification(7).model_dump_json())
    runner = SqsEventSourceRunner(
        queues.url,
        queues.arn,
        make_handler(pause=pause, sqs=queues.sqs),
        sqs=queues.sqs,
        wait_seconds=0,
    )
    runner.run_once()
    assert subscriber.notification_ids() == [notification(7).notification_id]


def test_no_table_means_never_paused():
    assert NotificationsPause(None).current() is None
