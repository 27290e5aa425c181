"""Local stand-in for DynamoDB global tables: a replicator driven by the tables' streams.

In AWS the critical tables (loads, gate passes, idempotency records, the fallback store,
the routing-control table) are global tables: DynamoDB copies every write to the same
table in every replica region, and when two regions write one item at about the same time
the last writer wins. moto has no global tables. Locally one emulator (``python -m
relay.emulator``) serves every region, each with its own copy of each table; this
replicator plays the service's part between them. It is developer tooling: product code
never imports it, and nothing here is deployed.

How it works, per round (:meth:`Replicator.run_once`):

1. Each (table, region) stream is read once, from ``TRIM_HORIZON`` the first time (so
   items written before the replicator started, the seed data, are copied too), then on
   from the last record handled. Shards are read parents first (``ParentShardId``), as
   :mod:`relay.eventsource` reads them for Lambda; a shard whose iterator expired is
   read again from its last handled record.
2. Each record is either an *echo* (a write this replicator made: dropped), *superseded*
   (older than the newest write of its item already seen: dropped), or a new write: its
   image (``NewImage``, as AttributeValue maps, so every type survives) is put into the
   same table in every other region, or its key deleted there for a ``REMOVE``.
3. A region whose endpoint is down, or whose table is gone, costs an error (logged,
   counted) and nothing else: the other streams go on, the writes it missed wait (the
   newest per item) and are made when it answers again. Each table is asked for its
   stream after an error and every ``stream_check_seconds`` (a deleted table's stream
   stays readable; only the table tells it is gone), so a table made again is read from
   its new stream. A write a region refuses for what it is (a validation error) is
   given up with an error rather than retried ahead of the writes behind it.

Last writer wins. Every record gets a version, compared as a tuple:
``(creation time in milliseconds, region name, sequence number)``. The creation time is
the record's ``ApproximateCreationDateTime``: moto 5.2 stamps it when the write happens and
sends it with millisecond resolution (AWS's own streams round it down to whole seconds).
Two writes of one item in the same millisecond in two regions are ordered by region name;
in one region, by the stream's sequence number. For each (table, key) the replicator keeps
the newest write seen (its version and image); a record whose version is not newer is
superseded. (If the timestamps were whole seconds, writes within one second would be
ordered by region name rather than by time; moto's are not, so the replicator does not
add its own observation order.)

Converging: a region's stream tells, record by record, what its copy of an item holds.
When two regions write one item before the replicator reads either write, it may copy
the older one into the other region on its way, after the newer write there; reading
that region's stream on, it meets the newer write (copied everywhere else) and then the
echo of its own older write: that region's copy is now the older one. Whenever a region's
record (an echo or a superseded write) shows an older version than the newest, and no
write of the newest to that region is still to come, the replicator writes the newest
there again (counted as ``repaired``). Every copy thus ends on the newest write.

No echo loop: every write the replicator makes appears in the stream of the region it
was made in. Before each write it keeps a fingerprint ``(table, region, key, hash of the
image)`` (``None`` for a delete; a delete that found nothing makes no record and keeps no
fingerprint); the matching record is dropped and counted as an echo, and never makes its
item newer (its own creation time is the replicator's, not the writer's). Fingerprints
expire after :data:`ECHO_TTL_SECONDS` (a put that changes nothing makes no stream record
in AWS, though moto makes one).

Stats (:meth:`Replicator.stats`): ``applied`` (writes made to replicas: one per region a
record reaches, as :meth:`Replicator.run_once` counts them), ``superseded``, ``echoes``,
``repaired``, ``errors``, ``waiting`` (writes waiting for a region) and ``lag_ms``. Lag:
for each write to a replica, the time it was made (the injected ``clock``, wall time)
minus the record's creation time; the last :data:`LAG_SAMPLES` are kept, reported as p50,
p99, maximum and count. moto's millisecond timestamps make this the replication lag
itself, not a bound on it. An idle replicator polls less often (up to
``idle_poll_seconds``): the first write after a quiet spell waits up to that long.

Every AWS call has a deadline (:data:`AWS_CONFIG`: 2 s to connect, 2 s to read, two
attempts). Read positions, the newest write of each item, fingerprints and waiting writes
live in memory: a restarted replicator reads every stream again from its start, rewrites
items on the way, and the copies converge on the newest write again. A replica table made
again starts empty: only writes made after it came back (and those that waited for it)
reach it; the service's backfill of a new replica is not imitated.

Run it with ``python -m relay.replicator``; the environment: ``RELAY_REPLICATOR_TABLES``
and ``RELAY_REPLICATOR_REGIONS`` (comma-separated), ``AWS_ENDPOINT_URL`` (the emulator),
optionally ``RELAY_REPLICATOR_STATS_FILE`` (the stats as JSON, rewritten every second),
``RELAY_REPLICATOR_POLL_SECONDS`` (the wait after an idle round, default 0.05) and
``RELAY_REPLICATOR_IDLE_POLL_SECONDS`` (the longest wait once idle, default 0.25). SIGTERM or
SIGINT stop it after the round in flight.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import os
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from module_kit import logs
from relay.eventsource import STREAM_CHECK_SECONDS, ShardPosition, _seq_of, _stop_on_signals

log = logging.getLogger("relay.replicator")

TABLES_VARIABLE = "RELAY_REPLICATOR_TABLES"
REGIONS_VARIABLE = "RELAY_REPLICATOR_REGIONS"
STATS_FILE_VARIABLE = "RELAY_REPLICATOR_STATS_FILE"
POLL_SECONDS_VARIABLE = "RELAY_REPLICATOR_POLL_SECONDS"
IDLE_POLL_SECONDS_VARIABLE = "RELAY_REPLICATOR_IDLE_POLL_SECONDS"
ENDPOINT_VARIABLE = "AWS_ENDPOINT_URL"

DEFAULT_POLL_SECONDS = 0.05  # wait after an idle round, doubled each idle round up to:
# the longest wait once idle: an idle replicator's reads cost the emulator's CPU (one
# DynamoDB request at a time there), and the first write after a quiet spell waits up to
# this long. (The emulator keeps only the newest shard iterators: relay/emulator.py.)
DEFAULT_IDLE_POLL_SECONDS = 0.25
STATS_SECONDS = 1.0  # how often run() rewrites the stats file
LAG_SAMPLES = 10_000  # lags kept for the percentiles
ECHO_TTL_SECONDS = 600.0  # a fingerprint whose echo never came is forgotten after this
RECORDS_PER_READ = 1000  # GetRecords' own maximum
# Each AWS call: at most 2 s to connect and 2 s per read, two attempts in all, so an
# unreachable region costs a round seconds, not minutes.
AWS_CONFIG = Config(
    connect_timeout=2,
    read_timeout=2,
    retries={"total_max_attempts": 2, "mode": "standard"},
)
# Stream view types whose records carry the new image the replicas need.
VIEW_TYPES_WITH_NEW_IMAGE = ("NEW_IMAGE", "NEW_AND_OLD_IMAGES")
SET_TYPES = ("SS", "NS", "BS")  # AttributeValue sets: their order carries no meaning
# Errors of a write that may go through later; any other refusal is final for that write.
RETRYABLE_ERRORS = frozenset(
    {
        "ResourceNotFoundException",
        "ResourceInUseException",
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "TransactionConflictException",
        "InternalServerError",
        "ServiceUnavailable",
    }
)


class StreamMissingError(RuntimeError):
    """A replicated table has no stream (or one without new images): nothing to read.

    Not retried: the table is set up wrongly, and waiting will not change that."""

    def __init__(self, table: str, region: str, detail: str) -> None:
        super().__init__(
            f"table {table} in {region} {detail}: global-table replication needs a stream "
            "with NEW_AND_OLD_IMAGES (StreamSpecification in the template)"
        )
        self.table, self.region = table, region


class Version(NamedTuple):
    """The order of writes to one item (last writer wins; see the module docstring)."""

    created_ms: int
    region: str
    sequence: int


class EchoDue(NamedTuple):
    """A write of ours whose record has not been read yet from its region's stream."""

    version: Version
    expires: float  # on the replicator's clock


@dataclass
class Change:
    """A write read from one region's stream: the item's new image, or None if removed."""

    table: str
    region: str
    key: dict[str, Any]
    key_id: str  # canonical form of ``key``: one item, whatever the attribute order
    image: dict[str, Any] | None
    created: float  # epoch seconds
    version: Version


@dataclass
class StreamState:
    """Where the replicator reads one table's stream in one region."""

    table: str
    region: str
    arn: str | None = None  # the stream being read
    checked_at: float | None = None  # when the table was last asked for it (None: now)
    shards: list[dict[str, Any]] | None = None  # None: describe the stream before reading
    positions: dict[str, ShardPosition] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)  # closed shards read to their end

    def forget_stream(self) -> None:
        """Read the table's stream afresh: a new stream reuses shard ids and sequence
        numbers (moto), so nothing of the old one's positions carries over."""
        self.shards, self.positions, self.finished = None, {}, set()


Fingerprint = tuple[str, str, str, str | None]  # (table, region, key id, image hash)


class Replicator:
    """Copies every write of ``tables`` between ``regions``, as DynamoDB global tables do.

    ``endpoint_url``: one endpoint for every region (the emulator), a mapping region ->
    endpoint, or None (boto3's own: ``AWS_ENDPOINT_URL``, then AWS). ``session``: the
    boto3 session clients come from (credentials from the environment when None).
    ``clock``: wall time in epoch seconds, for lags and fingerprint expiry.
    """

    def __init__(
        self,
        tables: Sequence[str],
        regions: Sequence[str],
        *,
        endpoint_url: str | Mapping[str, str] | None = None,
        session: Any = None,
        clock: Callable[[], float] = time.time,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        idle_poll_seconds: float = DEFAULT_IDLE_POLL_SECONDS,
        stream_check_seconds: float = STREAM_CHECK_SECONDS,
        echo_ttl_seconds: float = ECHO_TTL_SECONDS,
    ) -> None:
        if not tables:
            raise ValueError("no tables to replicate")
        if len(set(regions)) < 2:
            raise ValueError(f"replication needs two regions or more, got {list(regions)}")
        self.tables = list(dict.fromkeys(tables))
        self.regions = list(dict.fromkeys(regions))
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.idle_poll_seconds = max(idle_poll_seconds, poll_seconds)
        self.stream_check_seconds = stream_check_seconds
        self.echo_ttl_seconds = echo_ttl_seconds
        self._endpoint_url = endpoint_url
        self._session = session
        self._clients: dict[tuple[str, str], Any] = {}
        self.streams = {
            (table, region): StreamState(table, region)
            for table in self.tables
            for region in self.regions
        }
        self.newest: dict[tuple[str, str], Change] = {}  # (table, key id) -> newest write
        # The writes whose echoes are due: the version each wrote, and when to forget it.
        self.echoes_due: dict[Fingerprint, deque[EchoDue]] = {}
        # (table, region) -> key id -> the newest change that region has not received yet
        self.waiting: dict[tuple[str, str], dict[str, Change]] = {}
        self.lags_ms: deque[float] = deque(maxlen=LAG_SAMPLES)
        self.counts = {"applied": 0, "superseded": 0, "echoes": 0, "repaired": 0, "errors": 0}
        self._unreachable: set[str] = set()  # regions that failed to answer this round
        self._broken: set[tuple[str, str]] = set()  # (table, region) that failed this round

    # --- clients -----------------------------------------------------------------------

    def client(self, service: str, region: str) -> Any:
        """The ``dynamodb`` or ``dynamodbstreams`` client of ``region`` (made once)."""
        if (service, region) not in self._clients:
            if self._session is None:
                self._session = boto3.session.Session()
            endpoint = self._endpoint_url
            if isinstance(endpoint, Mapping):
                endpoint = endpoint.get(region)
            self._clients[service, region] = self._session.client(
                service, region_name=region, endpoint_url=endpoint, config=AWS_CONFIG
            )
        return self._clients[service, region]

    # --- rounds ------------------------------------------------------------------------

    def run_once(self) -> int:
        """Read every (table, region) stream once and replicate what it holds: the number
        of writes made to replicas (retried ones included)."""
        self._unreachable, self._broken = set(), set()
        self._forget_expired_echoes()
        made = self._retry_waiting()
        for table in self.tables:
            for region in self.regions:
                made += self._poll(self.streams[table, region])
        return made

    def run(
        self,
        stop: threading.Event,
        *,
        stats_path: str | Path | None = None,
        stats_seconds: float = STATS_SECONDS,
    ) -> None:
        """Rounds until ``stop`` is set: the next at once after a round that wrote, else
        after ``poll_seconds``, doubled with each idle round up to ``idle_poll_seconds``.
        With ``stats_path``, :meth:`write_stats` every ``stats_seconds``. A missing stream
        (:class:`StreamMissingError`) ends it; any other failure is logged and retried."""
        log.info("replicating %s between %s", ", ".join(self.tables), ", ".join(self.regions))
        wait = self.poll_seconds
        written_at = time.monotonic()
        while not stop.is_set():
            made = self._round()
            if stats_path is not None and time.monotonic() - written_at >= stats_seconds:
                self.write_stats(stats_path)
                written_at = time.monotonic()
            if made:
                wait = self.poll_seconds
                continue
            stop.wait(wait)
            wait = min(wait * 2, self.idle_poll_seconds)
        if stats_path is not None:
            self.write_stats(stats_path)
        log.info("stopped replicating")

    def _round(self) -> int:
        """:meth:`run_once`, surviving anything but a missing stream (never fatal: a
        replicator that stops leaves the regions apart for the rest of the day)."""
        try:
            return self.run_once()
        except StreamMissingError:
            raise
        except Exception:
            self.counts["errors"] += 1
            log.exception("replication round failed; retried next round")
            return 0

    # --- reading streams ---------------------------------------------------------------

    def _poll(self, stream: StreamState) -> int:
        if stream.region in self._unreachable or (stream.table, stream.region) in self._broken:
            return 0
        made = 0
        try:
            self._find_stream(stream)
            for shard_id in self._readable_shards(stream):
                made += self._read_shard(stream, shard_id)
        except (BotoCoreError, ClientError) as exc:
            self._failed(stream.table, stream.region, f"reading the stream: {exc}", exc)
            # Ask the table for its stream again (it may be a new one), and the stream for
            # its shards; read on from the last record handled.
            stream.checked_at, stream.shards = None, None
            for position in stream.positions.values():
                position.iterator = None
        return made

    def _find_stream(self, stream: StreamState) -> None:
        """The table's current stream: asked on the first round, after errors, and every
        ``stream_check_seconds`` (a table deleted and made again between two rounds
        leaves no error behind: only its stream's ARN changes)."""
        now = self.clock()
        if stream.checked_at is not None and now - stream.checked_at < self.stream_check_seconds:
            return
        table = self.client("dynamodb", stream.region).describe_table(TableName=stream.table)
        arn = stream_arn(table["Table"], stream.region)
        stream.checked_at = now
        if arn == stream.arn:
            return
        if stream.arn is not None:
            log.info("stream of %s in %s is now %s", stream.table, stream.region, arn)
        stream.forget_stream()
        stream.arn = arn

    def _readable_shards(self, stream: StreamState) -> list[str]:
        if stream.shards is None:
            stream.shards = self._describe_shards(stream)
            stream.positions = {
                s["ShardId"]: stream.positions.get(s["ShardId"], ShardPosition())
                for s in stream.shards
            }
        return readable_shards(stream.shards, stream.finished)

    def _describe_shards(self, stream: StreamState) -> list[dict[str, Any]]:
        client = self.client("dynamodbstreams", stream.region)
        shards: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"StreamArn": stream.arn}
        while True:
            described = client.describe_stream(**kwargs)["StreamDescription"]
            shards.extend(described.get("Shards", []))
            last = described.get("LastEvaluatedShardId")
            if not last:
                return shards
            kwargs["ExclusiveStartShardId"] = last

    def _read_shard(self, stream: StreamState, shard_id: str) -> int:
        position = stream.positions.setdefault(shard_id, ShardPosition())
        page = self._get_records(stream, shard_id, position)
        # Until the whole page is handled, a failure reads on from the last record handled.
        position.iterator = None
        made = 0
        for record in page.get("Records", []):
            made += self._handle(change_of(stream.table, stream.region, record))
            position.after = record["dynamodb"]["SequenceNumber"]
        position.iterator = page.get("NextShardIterator")
        if position.iterator is None:  # a closed shard, read to its end: its children next
            stream.finished.add(shard_id)
            stream.shards = None
        return made

    def _get_records(
        self, stream: StreamState, shard_id: str, position: ShardPosition
    ) -> dict[str, Any]:
        client = self.client("dynamodbstreams", stream.region)
        try:
            return client.get_records(
                ShardIterator=self._iterator(stream, shard_id, position), Limit=RECORDS_PER_READ
            )
        except ClientError as exc:
            if _error_code(exc) != "ExpiredIteratorException":
                raise
        log.info(
            "iterator of %s in %s expired: read on from %s",
            stream.table,
            stream.region,
            position.after or "the start",
        )
        position.iterator = None
        return client.get_records(
            ShardIterator=self._iterator(stream, shard_id, position), Limit=RECORDS_PER_READ
        )

    def _iterator(self, stream: StreamState, shard_id: str, position: ShardPosition) -> str:
        if position.iterator is None:
            kwargs: dict[str, Any] = {"ShardIteratorType": "TRIM_HORIZON"}
            if position.after is not None:
                kwargs = {
                    "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
                    "SequenceNumber": position.after,
                }
            position.iterator = self.client("dynamodbstreams", stream.region).get_shard_iterator(
                StreamArn=stream.arn, ShardId=shard_id, **kwargs
            )["ShardIterator"]
        return position.iterator

    # --- deciding ----------------------------------------------------------------------

    def _handle(self, change: Change) -> int:
        """Drop an echo or a superseded write; replicate anything else everywhere."""
        where = (change.table, change.region, change.key_id)
        echoed = self._consume_echo(fingerprint(*where, change.image))
        if echoed is not None:
            self.counts["echoes"] += 1
            return self._converge(*where, echoed)
        newest = self.newest.get((change.table, change.key_id))
        if newest is not None and change.version <= newest.version:
            self.counts["superseded"] += 1
            return self._converge(*where, change.version)
        self.newest[change.table, change.key_id] = change
        return sum(
            self._apply(change, region) for region in self.regions if region != change.region
        )

    def _converge(self, table: str, region: str, key_id: str, held: Version) -> int:
        """Write the newest version into ``region`` again if its copy was left older.

        ``held`` is the version of the record just read from ``region``'s stream: the
        region's copy, unless a later record follows. Two writes of one item in two regions
        before the replicator reads either: it copies the older one into the other region
        on its way (overwriting the newer there), then reads the newer one; the older
        write's echo, after the newer write in that region's stream, shows what the region
        is left holding. Nothing to do when a write of the newest version to the region is
        still to come (its echo not read yet, or it waits for the region)."""
        newest = self.newest.get((table, key_id))
        if newest is None or held >= newest.version:
            return 0
        due = self.echoes_due.get(fingerprint(table, region, key_id, newest.image), ())
        if any(echo.version == newest.version for echo in due):
            return 0
        waiting = self.waiting.get((table, region), {}).get(key_id)
        if waiting is not None and waiting.version == newest.version:
            return 0
        log.info("%s in %s holds an older write of %s: the newest again", table, region, key_id)
        self.counts["repaired"] += 1
        return self._apply(newest, region)

    def _retry_waiting(self) -> int:
        """The writes regions missed earlier, newest per item; stale ones are dropped."""
        made = 0
        for (table, region), changes in list(self.waiting.items()):
            for key_id, change in list(changes.items()):
                newest = self.newest.get((table, key_id))
                if newest is None or newest.version != change.version:
                    self.counts["superseded"] += 1
                    del changes[key_id]
                    continue
                made += self._apply(change, region)
        return made

    # --- writing replicas --------------------------------------------------------------

    def _apply(self, change: Change, region: str) -> int:
        """Write ``change`` into ``region``'s copy: 1 if made, 0 if it waits for later."""
        if region in self._unreachable or (change.table, region) in self._broken:
            self._wait(change, region)
            return 0
        echo = fingerprint(change.table, region, change.key_id, change.image)
        self._expect_echo(echo, change.version)  # before the write: it may be read first
        dynamodb = self.client("dynamodb", region)
        try:
            if change.image is None:
                old = dynamodb.delete_item(
                    TableName=change.table, Key=change.key, ReturnValues="ALL_OLD"
                )
                if not old.get("Attributes"):  # nothing deleted, no stream record
                    self._unexpect_echo(echo)
            else:
                dynamodb.put_item(TableName=change.table, Item=change.image)
        except ClientError as exc:
            if not retryable(exc):
                return self._refused(change, region, echo, exc)
            return self._missed(change, region, exc)
        except Exception as exc:  # the endpoint down, or the unforeseen: try again later
            return self._missed(change, region, exc)
        self._made(change, region)
        return 1

    def _missed(self, change: Change, region: str, exc: Exception) -> int:
        """A write that failed for now: it waits for the region (the newest per item)."""
        self._failed(change.table, region, f"writing {change.key_id}: {exc}", exc)
        self._wait(change, region)
        return 0

    def _refused(self, change: Change, region: str, echo: Fingerprint, exc: ClientError) -> int:
        """A write the region refuses for what it is (a validation error): trying it again
        would only hold up the writes behind it, so it is given up, loudly."""
        self.counts["errors"] += 1
        self._unexpect_echo(echo)
        log.error(
            "%s in %s refused %s from %s: %s; given up",
            change.table,
            region,
            change.key_id,
            change.region,
            exc,
        )
        return 0

    def _made(self, change: Change, region: str) -> None:
        lag_ms = max(self.clock() - change.created, 0.0) * 1000
        self.lags_ms.append(lag_ms)
        self.counts["applied"] += 1
        waiting = self.waiting.get((change.table, region), {})
        pending = waiting.get(change.key_id)
        if pending is not None and pending.version <= change.version:
            del waiting[change.key_id]

    def _wait(self, change: Change, region: str) -> None:
        self.waiting.setdefault((change.table, region), {})[change.key_id] = change

    def _failed(self, table: str, region: str, what: str, exc: Exception) -> None:
        """Count and log a failed call; skip the region (endpoint down) or the table
        (gone, throttled...) in that region for the rest of the round."""
        self.counts["errors"] += 1
        if isinstance(exc, BotoCoreError):
            self._unreachable.add(region)
        else:
            self._broken.add((table, region))
        log.warning("%s in %s: %s; retried next round", table, region, what)

    # --- echoes ------------------------------------------------------------------------

    def _expect_echo(self, echo: Fingerprint, version: Version) -> None:
        expires = self.clock() + self.echo_ttl_seconds
        self.echoes_due.setdefault(echo, deque()).append(EchoDue(version, expires))

    def _unexpect_echo(self, echo: Fingerprint) -> None:
        """Forget the fingerprint just kept: its write made no stream record."""
        due = self.echoes_due.get(echo)
        if due:
            due.pop()
        if not due:
            self.echoes_due.pop(echo, None)

    def _consume_echo(self, echo: Fingerprint) -> Version | None:
        """The version the matching write of ours carried, or None if it is no echo."""
        due = self.echoes_due.get(echo)
        if not due:
            return None
        version = due.popleft().version
        if not due:
            del self.echoes_due[echo]
        return version

    def _forget_expired_echoes(self) -> None:
        now = self.clock()
        for echo, due in list(self.echoes_due.items()):
            while due and due[0].expires <= now:
                due.popleft()
            if not due:
                del self.echoes_due[echo]

    # --- stats -------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts since start, writes waiting for a region, and the lag percentiles (ms)."""
        return {
            **self.counts,
            "waiting": sum(len(changes) for changes in self.waiting.values()),
            "lag_ms": lag_summary(self.lags_ms),
        }

    def write_stats(self, path: str | Path) -> None:
        """:meth:`stats` as JSON at ``path``, replaced whole (readers never see half)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(self.stats(), out, indent=2, sort_keys=True)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


# --- pure helpers ----------------------------------------------------------------------


def stream_arn(table: Mapping[str, Any], region: str) -> str:
    """The table's stream, from ``describe_table``'s ``Table``; raises
    :class:`StreamMissingError` if it has none the replicator can use."""
    name = table.get("TableName", "?")
    spec = table.get("StreamSpecification") or {}
    arn = table.get("LatestStreamArn")
    if not arn or spec.get("StreamEnabled") is False:
        raise StreamMissingError(name, region, "has no stream")
    view = spec.get("StreamViewType")
    if view is not None and view not in VIEW_TYPES_WITH_NEW_IMAGE:
        raise StreamMissingError(name, region, f"has a {view} stream (no new images)")
    return str(arn)


def readable_shards(shards: Iterable[Mapping[str, Any]], finished: set[str]) -> list[str]:
    """Shards to read now, parents first: a shard waits until its parent, if the stream
    still lists it, has been read to its end (a key's writes stay in order)."""
    listed = {s["ShardId"] for s in shards}
    return [
        s["ShardId"]
        for s in shards
        if s["ShardId"] not in finished
        and (s.get("ParentShardId") not in listed or s.get("ParentShardId") in finished)
    ]


def change_of(table: str, region: str, record: Mapping[str, Any]) -> Change:
    """A stream record read from ``region`` (moto stamps every record ``us-east-1``, so
    the record's own ``awsRegion`` is not trusted) as a :class:`Change`."""
    data = record["dynamodb"]
    created = creation_seconds(data["ApproximateCreationDateTime"])
    image = None if record["eventName"] == "REMOVE" else data["NewImage"]
    return Change(
        table=table,
        region=region,
        key=data["Keys"],
        key_id=canonical_json(data["Keys"]),
        image=image,
        created=created,
        version=Version(round(created * 1000), region, _seq_of(data["SequenceNumber"])),
    )


def creation_seconds(value: datetime | float | int) -> float:
    """``ApproximateCreationDateTime`` in epoch seconds (boto3 gives a datetime)."""
    return value.timestamp() if isinstance(value, datetime) else float(value)


def fingerprint(
    table: str, region: str, key_id: str, image: Mapping[str, Any] | None
) -> Fingerprint:
    """What a write's stream record looks like: a delete has no image."""
    if image is None:
        return (table, region, key_id, None)
    digest = hashlib.sha256(canonical_json(image).encode()).hexdigest()
    return (table, region, key_id, digest)


def canonical_json(value: Any) -> str:
    """AttributeValues as one string per value: map keys sorted, set members sorted
    (a set's order means nothing), binaries in base64."""
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"))


def _plain(value: Any, is_set: bool = False) -> Any:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, Mapping):
        return {name: _plain(v, name in SET_TYPES) for name, v in value.items()}
    if isinstance(value, list | tuple):
        items = [_plain(v) for v in value]
        return sorted(items) if is_set else items
    return value


def lag_summary(lags_ms: Iterable[float]) -> dict[str, float | int | None]:
    """p50, p99 (nearest rank), max and count of ``lags_ms``; None while empty."""
    ordered = sorted(lags_ms)
    if not ordered:
        return {"p50": None, "p99": None, "max": None, "count": 0}

    def rank(fraction: float) -> float:
        return round(ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)], 3)

    return {
        "p50": rank(0.50),
        "p99": rank(0.99),
        "max": round(ordered[-1], 3),
        "count": len(ordered),
    }


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def retryable(exc: ClientError) -> bool:
    """Whether a failed write may succeed later: the table is missing (a region's tables
    deleted, to be made again), DynamoDB is busy, or the server failed."""
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return status >= 500 or _error_code(exc) in RETRYABLE_ERRORS


def _names(value: str | None) -> list[str]:
    return [name.strip() for name in (value or "").split(",") if name.strip()]


def _seconds(variable: str, default: float) -> float:
    return float(os.environ.get(variable) or default)


def main(argv: list[str] | None = None) -> int:
    """``python -m relay.replicator``: replicate until SIGTERM/SIGINT (settings in the
    module docstring)."""
    del argv  # settings come from the environment only
    logs.setup_logging("replicator")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    tables = _names(os.environ.get(TABLES_VARIABLE))
    regions = _names(os.environ.get(REGIONS_VARIABLE))
    if not tables or len(regions) < 2:
        log.error(
            "usage: python -m relay.replicator with %s (tables) and %s (two regions or more) "
            "set, comma-separated",
            TABLES_VARIABLE,
            REGIONS_VARIABLE,
        )
        return 2
    replicator = Replicator(
        tables,
        regions,
        endpoint_url=os.environ.get(ENDPOINT_VARIABLE) or None,
        poll_seconds=_seconds(POLL_SECONDS_VARIABLE, DEFAULT_POLL_SECONDS),
        idle_poll_seconds=_seconds(IDLE_POLL_SECONDS_VARIABLE, DEFAULT_IDLE_POLL_SECONDS),
    )
    stop = _stop_on_signals("the round in flight")
    try:
        replicator.run(stop, stats_path=os.environ.get(STATS_FILE_VARIABLE) or None)
    except StreamMissingError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
