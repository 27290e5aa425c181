"""The local stand-in for DynamoDB global tables (relay.replicator.Replicator) against moto
server in this process (in-process moto does not serve the Streams API), with one copy of
each table per region: writes reach every region, the last writer wins, echoes die out,
and a region that is gone costs errors, never the other regions' replication.

Rounds are driven by hand (``run_once``), with an injected wall clock: no sleeps.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from relay import emulator
from relay.replicator import Replicator, StreamMissingError
from tests.fakes import WallClock

EAST, WEST, EU = "us-east-1", "us-west-2", "eu-west-1"
LOADS, GATEPASSES = "relay-loads", "relay-gatepasses"
MAX_ROUNDS = 10  # bound on every loop below


@pytest.fixture
def endpoint() -> Iterator[str]:
    with emulator.in_process() as url:
        yield url


def client(endpoint: str, region: str, service: str = "dynamodb") -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def session() -> boto3.session.Session:
    return boto3.session.Session(aws_access_key_id="local", aws_secret_access_key="local")


def create_table(endpoint: str, region: str, name: str, *, stream: str | None = None) -> None:
    """``name`` in ``region``, keyed ``pk``/``sk``; a NEW_AND_OLD_IMAGES stream unless
    ``stream`` names another view type (or ``"none"``)."""
    view = stream or "NEW_AND_OLD_IMAGES"
    spec = (
        {"StreamEnabled": False}
        if view == "none"
        else {"StreamEnabled": True, "StreamViewType": view}
    )
    client(endpoint, region).create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"},
        ],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification=spec,
    )


@pytest.fixture
def regions(endpoint: str) -> list[str]:
    """Both tables in both regions, empty."""
    for region in (EAST, WEST):
        for table in (LOADS, GATEPASSES):
            create_table(endpoint, region, table)
    return [EAST, WEST]


def replicator_for(endpoint: str | dict[str, str], regions: list[str], **kw: Any) -> Replicator:
    return Replicator([LOADS, GATEPASSES], regions, endpoint_url=endpoint, session=session(), **kw)


def key(pk: str, sk: int = 1) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"N": str(sk)}}


def put(endpoint: str, region: str, pk: str, table: str = LOADS, **attrs: Any) -> None:
    client(endpoint, region).put_item(TableName=table, Item={**key(pk), **attrs})


def items(endpoint: str, region: str, table: str = LOADS) -> list[dict[str, Any]]:
    found = client(endpoint, region).scan(TableName=table, ConsistentRead=True)["Items"]
    return sorted(found, key=lambda item: json.dumps(item, sort_keys=True, default=str))


def get(endpoint: str, region: str, pk: str, table: str = LOADS) -> dict[str, Any] | None:
    return client(endpoint, region).get_item(TableName=table, Key=key(pk)).get("Item")


def settle(replicator: Replicator) -> int:
    """Rounds until one makes no write: how many rounds made writes."""
    for rounds in range(MAX_ROUNDS):
        if replicator.run_once() == 0:
            return rounds
    raise AssertionError(f"still replicating after {MAX_ROUNDS} rounds: an echo loop?")


def test_inserts_modifies_and_removes_reach_the_other_region_in_both_directions(endpoint, regions):
    replicator = replicator_for(endpoint, regions)
    replicator.run_once()  # both streams read once: what follows is read on, not from start
    # GIVEN an item of every attribute type written in the east, another in the west
    rich = {
        "weight": {"N": "12.5"},
        "photo": {"B": b"\x00\xffjpeg"},
        "tags": {"SS": ["frozen", "hazmat"]},
        "axles": {"NS": ["2", "3"]},
        "dock": {"M": {"door": {"N": "7"}, "open": {"BOOL": True}}},
        "stops": {"L": [{"S": "Reno"}, {"NULL": True}]},
    }
    put(endpoint, EAST, "load-1", **rich)
    put(endpoint, WEST, "pass-1", table=GATEPASSES, gate={"S": "north"})
    replicator.run_once()
    # THEN each is in the other region, every type as written
    assert get(endpoint, WEST, "load-1") == {**key("load-1"), **rich}
    assert get(endpoint, EAST, "pass-1", GATEPASSES) == {**key("pass-1"), "gate": {"S": "north"}}
    # WHEN the west modifies the load and the east removes the gate pass
    put(endpoint, WEST, "load-1", weight={"N": "13"})
    client(endpoint, EAST).delete_item(TableName=GATEPASSES, Key=key("pass-1"))
    settle(replicator)
    # THEN both changes reach the other region
    assert get(endpoint, EAST, "load-1") == {**key("load-1"), "weight": {"N": "13"}}
    assert get(endpoint, WEST, "pass-1", GATEPASSES) is None
    assert items(endpoint, EAST) == items(endpoint, WEST)


def test_items_written_before_the_replicator_started_are_replicated(endpoint, regions):
    # GIVEN seed data written before any replicator existed
    put(endpoint, EAST, "seed-1", status={"S": "posted"})
    put(endpoint, WEST, "seed-2", table=GATEPASSES)
    # WHEN one starts
    replicator = replicator_for(endpoint, regions)
    settle(replicator)
    # THEN it copies them too (it reads from the streams' oldest records)
    assert get(endpoint, WEST, "seed-1") == {**key("seed-1"), "status": {"S": "posted"}}
    assert get(endpoint, EAST, "seed-2", GATEPASSES) == key("seed-2")


@pytest.mark.parametrize("last", [EAST, WEST])
def test_concurrent_writes_to_one_item_converge_on_the_last_writer(endpoint, regions, last):
    # GIVEN an item both regions have
    replicator = replicator_for(endpoint, regions)
    put(endpoint, EAST, "load-7", status={"S": "posted"})
    settle(replicator)
    # WHEN both regions change it before the replicator reads either change (the east's
    # stream is read first in a round)
    first = WEST if last == EAST else EAST
    put(endpoint, first, "load-7", status={"S": f"booked in {first}"})
    put(endpoint, last, "load-7", status={"S": f"booked in {last}"})
    settle(replicator)
    # THEN both regions hold the later write
    winner = {**key("load-7"), "status": {"S": f"booked in {last}"}}
    assert get(endpoint, EAST, "load-7") == winner
    assert get(endpoint, WEST, "load-7") == winner
    stats = replicator.stats()
    if last == EAST:  # read first: the west's older write is superseded there
        assert stats["superseded"] == 1 and stats["repaired"] == 0
    else:  # the east's older write went west first, over the newer: written again
        assert stats["superseded"] == 0 and stats["repaired"] == 1


def test_a_burst_of_writes_settles_into_identical_regions_without_an_echo_loop(endpoint, regions):
    replicator = replicator_for(endpoint, regions)
    # GIVEN a burst of writes in both regions, some to the same items, some removed
    for n in range(12):
        region = EAST if n % 2 else WEST
        put(endpoint, region, f"load-{n % 5}", seen={"N": str(n)})
    client(endpoint, EAST).delete_item(TableName=LOADS, Key=key("load-0"))
    # WHEN the replicator runs
    rounds = settle(replicator)
    # THEN it goes quiet within a few rounds and stays quiet
    assert rounds <= 3
    assert [replicator.run_once() for _ in range(3)] == [0, 0, 0]
    # AND the regions hold the same items, each write of its own echoed once
    assert items(endpoint, EAST) == items(endpoint, WEST)
    assert len(items(endpoint, EAST)) == 4
    stats = replicator.stats()
    assert stats["echoes"] == stats["applied"] > 0
    assert not replicator.echoes_due  # every fingerprint met its echo


def test_stats_count_writes_and_measure_lag_from_the_records_creation_time(
    endpoint, regions, tmp_path
):
    # GIVEN three writes, and a replicator whose clock reads 2 s after them
    put(endpoint, EAST, "load-1")
    put(endpoint, EAST, "load-2")
    put(endpoint, WEST, "load-3")
    clock = WallClock(datetime.now(UTC))
    clock.advance(2.0)
    replicator = replicator_for(endpoint, regions, clock=clock)
    # WHEN it copies them
    made = replicator.run_once()
    settle(replicator)
    # THEN it counts three writes to replicas and their echoes, and lags of about 2 s
    stats = replicator.stats()
    assert made == 3
    assert (stats["applied"], stats["echoes"], stats["errors"]) == (3, 3, 0)
    lag = stats["lag_ms"]
    assert lag["count"] == 3
    assert 2000 <= lag["p50"] <= lag["p99"] <= lag["max"] < 2000 + 5000
    # AND write_stats leaves the same numbers as JSON, and no temporary file
    path = tmp_path / "stats" / "replicator.json"
    replicator.write_stats(path)
    assert json.loads(path.read_text()) == stats
    assert [p.name for p in path.parent.iterdir()] == ["replicator.json"]


def test_a_missing_table_is_an_error_the_others_replicate_and_it_resumes_when_made_again(
    endpoint, regions
):
    clock = WallClock(datetime.now(UTC))
    replicator = replicator_for(endpoint, regions, clock=clock)
    replicator.run_once()  # every stream known
    # GIVEN the west's gate-pass table deleted (a game day)
    client(endpoint, WEST).delete_table(TableName=GATEPASSES)
    # WHEN the east writes a load, and the replicator next asks the tables for their
    # streams (a deleted table's stream can still be read: only the table tells)
    put(endpoint, EAST, "load-1")
    clock.advance(5)
    replicator.run_once()
    # THEN the load replicates; the west's gate passes are an error, and nothing more
    assert get(endpoint, WEST, "load-1") == key("load-1")
    assert replicator.stats()["errors"] == 1
    # WHEN the east writes a gate pass: it waits for the west, another error
    put(endpoint, EAST, "pass-1", table=GATEPASSES)
    replicator.run_once()
    stats = replicator.stats()
    assert stats["errors"] == 2 and stats["waiting"] == 1
    # WHEN the table is made again (empty, with a new stream)
    create_table(endpoint, WEST, GATEPASSES)
    put(endpoint, WEST, "pass-2", table=GATEPASSES)
    clock.advance(5)
    settle(replicator)
    # THEN the waiting write is made, and the new stream is read
    assert get(endpoint, WEST, "pass-1", GATEPASSES) == key("pass-1")
    assert get(endpoint, EAST, "pass-2", GATEPASSES) == key("pass-2")
    assert replicator.stats()["waiting"] == 0


def test_a_table_made_again_between_two_rounds_is_read_from_its_new_stream(endpoint, regions):
    clock = WallClock(datetime.now(UTC))
    replicator = replicator_for(endpoint, regions, clock=clock)
    put(endpoint, WEST, "pass-1", table=GATEPASSES)
    settle(replicator)
    # GIVEN the west's table deleted and made again with no round in between
    client(endpoint, WEST).delete_table(TableName=GATEPASSES)
    create_table(endpoint, WEST, GATEPASSES)
    put(endpoint, WEST, "pass-2", table=GATEPASSES)
    # WHEN the replicator next asks the table for its stream
    clock.advance(5)
    settle(replicator)
    # THEN the new stream's write reaches the east (its sequence numbers start over)
    assert get(endpoint, EAST, "pass-2", GATEPASSES) == key("pass-2")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_region_is_an_error_and_the_others_replicate(endpoint, regions):
    for table in (LOADS, GATEPASSES):
        create_table(endpoint, EU, table)
    # GIVEN the west black-holed (its endpoint refuses connections), read before the EU
    endpoints = {EAST: endpoint, WEST: f"http://127.0.0.1:{closed_port()}", EU: endpoint}
    replicator = replicator_for(endpoints, [EAST, WEST, EU])
    # WHEN the EU writes
    put(endpoint, EU, "load-1")
    replicator.run_once()
    # THEN the east gets it; reading the west failed once (then skipped for the round),
    # and the write waits for it
    assert get(endpoint, EAST, "load-1") == key("load-1")
    stats = replicator.stats()
    assert (stats["applied"], stats["errors"], stats["waiting"]) == (1, 1, 1)
    # AND the next round tries again: one error more, nothing lost
    replicator.run_once()
    assert replicator.stats()["errors"] == 2
    assert replicator.stats()["waiting"] == 1


class ExpiringIterators:
    """A streams client whose next ``get_records`` fails as an expired iterator does."""

    def __init__(self, streams: Any) -> None:
        self.streams = streams
        self.expire_next = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.streams, name)

    def get_records(self, **kw: Any) -> Any:
        if self.expire_next:
            self.expire_next = False
            raise ClientError(
                {"Error": {"Code": "ExpiredIteratorException", "Message": "expired"}},
                "GetRecords",
            )
        return self.streams.get_records(**kw)


def test_an_expired_iterator_is_renewed_from_the_last_record_handled(endpoint, regions):
    replicator = replicator_for(endpoint, regions)
    put(endpoint, EAST, "load-1")
    settle(replicator)
    expiring = ExpiringIterators(replicator.client("dynamodbstreams", EAST))
    replicator._clients["dynamodbstreams", EAST] = expiring
    # GIVEN the east's iterator expired after the replicator read load-1
    put(endpoint, EAST, "load-2")
    expiring.expire_next = True
    # WHEN it reads again
    made = replicator.run_once()
    # THEN it reads on from load-1 in the same round: load-2 only, and no error
    assert made == 1
    assert get(endpoint, WEST, "load-2") == key("load-2")
    assert replicator.stats()["errors"] == 0
    assert replicator.stats()["applied"] == 2


@pytest.mark.parametrize("view", ["none", "KEYS_ONLY"])
def test_a_table_without_a_stream_of_new_images_is_refused_by_name_and_region(endpoint, view):
    for region in (EAST, WEST):
        create_table(endpoint, region, LOADS)
        create_table(endpoint, region, GATEPASSES, stream=view if region == WEST else None)
    replicator = replicator_for(endpoint, [EAST, WEST])
    with pytest.raises(StreamMissingError, match=f"{GATEPASSES} in {WEST}"):
        replicator.run_once()
