"""relay.emulator: moto's DynamoDB, where a failed transaction undoes only itself.

moto 5.2 rolls a failed ``TransactWriteItems`` back by putting back copies of its tables
taken before it started, undoing whatever other requests wrote meanwhile (moto server
answers on many threads). Here that window is held open deterministically: the failing
transaction stops at its condition check (after the copy, before the put-back) until the
test lets it go. The transactions are the deferred-writes ledger's own: a retried write's
``accept`` (its condition fails: the write is in the ledger already) and the replayer's
``decide`` of another write of the same driver.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from gateway.deferred.ledger import DeferredLedger
from gateway.deferred.queue import DeferredWrite
from relay.emulator import serialize_dynamodb
from shared_contracts.degraded import DeferredState
from shared_contracts.identity import IdentityContext, Role
from tests.fakes import WallClock

TABLE = "ledger"
DRIVER = "D-1"
Hold = Callable[[Callable[[], Any]], tuple[threading.Thread, threading.Event]]
WAIT_SECONDS = 10.0  # only a broken test waits this long: every wait is for an event


class WatchedLock:
    """A lock that says when a request had to wait for it."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.contended = threading.Event()

    def __enter__(self) -> None:
        if not self._lock.acquire(blocking=False):
            self.contended.set()
            self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def write(key: str) -> DeferredWrite:
    return DeferredWrite(
        tracking_id=key,
        module="loads",
        method="POST",
        path="/loads/L-1/events",
        body=json.dumps({"kind": "arrived", "stop_seq": 1}),
        identity=IdentityContext(sub=DRIVER, role=Role.DRIVER),
        caller=DRIVER,
        request_id=f"r-{key}",
        accepted_at=datetime(2026, 11, 22, 7, 59, 30, tzinfo=UTC),
    )


def ledger() -> DeferredLedger:
    """One per thread (a boto3 resource is not made safely across threads)."""
    made = DeferredLedger(
        TABLE, dynamodb=boto3.resource("dynamodb", region_name="us-east-1"), wall_clock=WallClock()
    )
    made.has_pending(DRIVER, "loads")  # the resource and its client exist before any thread runs
    return made


@pytest.fixture
def accepted(aws) -> tuple[DeferredLedger, DeferredLedger]:
    """A driver with two writes pending: 07, whose retry comes in, and 08, being replayed."""
    boto3.client("dynamodb", region_name="us-east-1").create_table(
        TableName=TABLE,
        KeySchema=[
            {"AttributeName": "caller", "KeyType": "HASH"},
            {"AttributeName": "item", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "caller", "AttributeType": "S"},
            {"AttributeName": "item", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    gateway, replayer = ledger(), ledger()
    assert gateway.accept(write("event-07")) and gateway.accept(write("event-08"))
    return gateway, replayer


@pytest.fixture
def held_open(monkeypatch: pytest.MonkeyPatch) -> Iterator[Hold]:
    """Stop the transaction of the thread this returns (once) at its first condition check."""
    from moto.dynamodb.models import DynamoDBBackend

    inside, go = threading.Event(), threading.Event()
    held: dict[str, threading.Thread] = {}
    get_item = DynamoDBBackend.get_item

    def stopping_get_item(self: DynamoDBBackend, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is held.get("thread") and not inside.is_set():
            inside.set()
            assert go.wait(WAIT_SECONDS)
        return get_item(self, *args, **kwargs)

    monkeypatch.setattr(DynamoDBBackend, "get_item", stopping_get_item)

    def start(target: Callable[[], Any]) -> tuple[threading.Thread, threading.Event]:
        held["thread"] = threading.Thread(target=target)
        held["thread"].start()
        assert inside.wait(WAIT_SECONDS), "the transaction never reached its condition check"
        return held["thread"], go

    yield start
    go.set()


def retry_meets_replay(
    accepted: tuple[DeferredLedger, DeferredLedger],
    held_open: Hold,
    before_release: Callable[[threading.Thread], None],
) -> list[bool]:
    """07's retry reaches the ledger; while its transaction is open, 08 is decided applied."""
    gateway, replayer = accepted
    answers: list[bool] = []
    retry, go = held_open(lambda: answers.append(gateway.accept(write("event-07"))))
    decide = threading.Thread(
        target=lambda: replayer.decide(write("event-08"), DeferredState.APPLIED)
    )
    decide.start()
    before_release(decide)
    go.set()
    for thread in (retry, decide):
        thread.join(WAIT_SECONDS)
        assert not thread.is_alive()
    return answers


def test_unpatched_moto_lets_a_failed_transaction_undo_a_concurrent_one(accepted, held_open):
    # The reason for relay.emulator's serialize_dynamodb; when this fails, moto has fixed
    # it and the patch can go.
    def decided(thread: threading.Thread) -> None:
        thread.join(WAIT_SECONDS)  # nothing stops it: it lands inside the retry's window
        assert not thread.is_alive()

    answers = retry_meets_replay(accepted, held_open, decided)
    gateway, _ = accepted
    assert answers == [False]  # the retry found 07 in the ledger already
    # ... and put the ledger back as it was before it started: 08 pending forever, though
    # the replayer recorded it applied (and deleted its message)
    status = gateway.status(DRIVER, "event-08")
    assert status is not None and status.state is DeferredState.PENDING


def test_with_the_emulator_patched_a_failed_transaction_undoes_nothing_else(accepted, held_open):
    # GIVEN the emulator's DynamoDB, one request at a time
    lock = WatchedLock()
    undo = serialize_dynamodb(lock)
    try:
        # WHEN the replayer decides 08 while 07's retry is inside its (failing) transaction
        def waits_its_turn(thread: threading.Thread) -> None:
            assert lock.contended.wait(WAIT_SECONDS), "the decide did not wait for the retry"

        answers = retry_meets_replay(accepted, held_open, waits_its_turn)
    finally:
        undo()
    gateway, _ = accepted
    # THEN the retry was refused as a retry, and 08 stays applied, its marker gone
    assert answers == [False]
    status = gateway.status(DRIVER, "event-08")
    assert status is not None and status.state is DeferredState.APPLIED
    pending = gateway.status(DRIVER, "event-07")
    assert pending is not None and pending.state is DeferredState.PENDING
    assert gateway.has_pending(DRIVER, "loads")  # 07's marker, still queued


def test_the_dynamodb_patch_can_be_undone():
    from moto.dynamodb.responses import DynamoHandler

    before = DynamoHandler.__dict__["call_action"]
    undo = serialize_dynamodb()
    assert DynamoHandler.__dict__["call_action"] is not before
    undo()
    assert DynamoHandler.__dict__["call_action"] is before
