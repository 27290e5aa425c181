"""The local AWS emulator: moto's server, with SQS FIFO message groups kept in order and
DynamoDB transactions that cannot undo each other.

moto 5.2 counts a received message as in flight until a later receive walks past it, even
after its visibility timeout has run out. When a whole group's in-flight messages time
out together (a consumer killed mid-batch, or a batch that failed and was left to time
out), the next receive skips each of them while the ones after it still look in flight,
and hands out only the *last* one: the group's order is broken. Real SQS counts a
message as in flight only while it is invisible. :func:`keep_fifo_groups_in_order`
teaches moto the same; ``relay.stack`` runs the emulator as ``python -m relay.emulator``
(moto server's own arguments).

The local SQS event source (:mod:`relay.eventsource`) does not rely on this alone: it keeps
its own per-group hold, but that is lost when the runner restarts, and this is not.

moto 5.2's long poll spins while a queue holds visible messages it may not hand out (a
FIFO group whose head is in flight: a deferred write backing off while its module is
down, and the driver's later writes queued behind it). Its receive loop waits for "any
visible message", which is true at once, so each waiting ``ReceiveMessage`` rescans the
queue thousands of times a second for its whole ``WaitTimeSeconds``, holding the GIL: the
whole emulator slows, every module's DynamoDB calls with it, and a fault in one module
makes the others look slow. :func:`long_polls_wait` makes a receive with nothing to hand
out sleep until a message is sent or :data:`LONG_POLL_RECHECK_SECONDS` pass (a message
whose visibility timeout runs out is found within that; moto itself rechecks every
second).

moto 5.2 runs ``TransactWriteItems`` by deep-copying each table it names, applying the
items one by one, and, when a condition fails, putting the copies back. Its server answers
requests on many threads with no lock, so every write another request makes to those
tables between the copy and the put-back is silently undone, and others read the
half-applied transaction meanwhile. In DynamoDB a transaction that fails changes nothing.
Failed transactions are routine here: a retried deferred write's ``accept`` fails its
condition by design, and can undo the replayer's concurrent ``decide`` of another write
(recorded ``applied``, message deleted, the ledger back to ``pending`` for good); a
module's version-conditioned event transaction fails whenever a live attempt and a replay
race. :func:`serialize_dynamodb` runs one DynamoDB request at a time, so a failed
transaction only ever undoes itself.

moto 5.2 keeps every DynamoDB Streams shard iterator it hands out (about 2 KB each, one per
``GetRecords``) for as long as the server runs; the local stream runners and the region
replicator poll their streams several times a second, so the emulator would grow by
hundreds of megabytes an hour. AWS expires an iterator after 15 minutes;
:func:`bound_stream_iterators` keeps only the newest ones (a consumer uses each within a
second of getting it), so memory stays flat.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

log = logging.getLogger("relay.emulator")


def _replace(
    owner: type, name: str, build: Callable[[Any], Any], unpatched: str, kind: type = object
) -> Callable[[], None]:
    """Set ``owner.name`` to ``build(original)``; returns a function that puts the original
    back (for tests). When moto has no such attribute any more (or not of ``kind``), says
    so (``unpatched``: what then goes without the patch) and changes nothing."""
    original = owner.__dict__.get(name)
    if original is None or not isinstance(original, kind):
        log.warning(
            "moto's %s has no %s; %s (see relay/emulator.py)", owner.__name__, name, unpatched
        )
        return lambda: None
    setattr(owner, name, build(original))
    return lambda: setattr(owner, name, original)


def keep_fifo_groups_in_order() -> Callable[[], None]:
    """Patch moto's SQS: a FIFO group is locked only by messages still invisible."""
    from moto.sqs.models import Queue

    def pending_message_groups(self: Queue) -> set[str]:
        return {
            m.group_id for m in self.pending_messages if m.group_id is not None and not m.visible
        }

    return _replace(
        Queue,
        "pending_message_groups",
        lambda _: property(pending_message_groups),
        "FIFO groups are not kept in order",
        kind=property,
    )


def serialize_dynamodb(
    guard: AbstractContextManager[Any] | None = None,
) -> Callable[[], None]:
    """Patch moto's DynamoDB: one request at a time (``guard``, a lock, held around each)."""
    from moto.dynamodb.responses import DynamoHandler

    lock = threading.RLock() if guard is None else guard

    def build(original: Callable[[DynamoHandler], Any]) -> Callable[[DynamoHandler], Any]:
        @functools.wraps(original)
        def call_action(self: DynamoHandler) -> Any:
            with lock:
                return original(self)

        return call_action

    return _replace(DynamoHandler, "call_action", build, "DynamoDB requests are not serialized")


LONG_POLL_RECHECK_SECONDS = 0.1


def long_polls_wait(recheck_seconds: float = LONG_POLL_RECHECK_SECONDS) -> Callable[[], None]:
    """Patch moto's SQS: a long poll that found nothing to hand out sleeps until a message
    is sent to the queue or ``recheck_seconds`` pass, instead of spinning."""
    from moto.sqs.models import Queue

    def build(original: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(original)
        def wait_for_messages(self: Queue, timeout: int) -> None:
            with self._messages_lock:  # notified by every message sent
                self._messages_lock.wait(timeout=min(timeout, recheck_seconds))

        return wait_for_messages

    return _replace(Queue, "wait_for_messages", build, "long polls spin")


STREAM_ITERATORS_KEPT = 20_000  # ~40 MB; at 50 GetRecords a second, the last 6-7 minutes


def bound_stream_iterators(kept: int = STREAM_ITERATORS_KEPT) -> Callable[[], None]:
    """Patch moto's DynamoDB Streams: keep the newest ``kept`` shard iterators only."""
    from moto.dynamodbstreams.models import DynamoDBStreamsBackend

    def build(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def get_records(self: DynamoDBStreamsBackend, iterator_arn: str, limit: int) -> Any:
            answer = original(self, iterator_arn, limit)
            iterators = self.shard_iterators  # insertion-ordered: the oldest first
            if len(iterators) > kept:
                for arn in list(itertools.islice(iterators, len(iterators) - kept // 2)):
                    iterators.pop(arn, None)
            return answer

        return get_records

    return _replace(DynamoDBStreamsBackend, "get_records", build, "iterators are not bounded")


def patch_moto() -> list[Callable[[], None]]:
    """Every patch above, applied: the functions that undo them (for tests)."""
    return [
        keep_fifo_groups_in_order(),
        long_polls_wait(),
        serialize_dynamodb(),
        bound_stream_iterators(),
    ]


@contextlib.contextmanager
def in_process(host: str = "127.0.0.1") -> Iterator[str]:
    """moto's server on a free port of ``host`` in this process, patched as ``python -m
    relay.emulator`` is (for tests that drive handlers in-process): its URL. Its state
    starts empty and is cleared on the way out; the patches are undone."""
    import httpx
    from moto.server import ThreadedMotoServer

    undo = patch_moto()
    server = ThreadedMotoServer(ip_address=host, port=0, verbose=False)
    server.start()
    bound_host, port = server.get_host_and_port()
    url = f"http://{bound_host}:{port}"
    httpx.post(f"{url}/moto-api/reset", timeout=10)  # the backends are this process's
    try:
        yield url
    finally:
        httpx.post(f"{url}/moto-api/reset", timeout=10)
        server.stop()
        for patch in undo:
            patch()


def main(argv: list[str] | None = None) -> None:
    """``python -m relay.emulator [moto.server arguments]``."""
    patch_moto()
    from moto.server import main as moto_server

    moto_server(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
