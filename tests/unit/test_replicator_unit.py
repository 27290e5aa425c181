"""relay.replicator without an emulator: its pure rules (versions, fingerprints, shard
lineage, lag percentiles, stream checks), and the parts moto cannot show (a stream of
several shards) over a small fake of DynamoDB and its streams, given as the session."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from relay import replicator as replicator_module
from relay.replicator import (
    Replicator,
    StreamMissingError,
    Version,
    canonical_json,
    change_of,
    fingerprint,
    lag_summary,
    readable_shards,
    stream_arn,
)

EAST, WEST = "us-east-1", "us-west-2"


def record(pk: str, value: str, seq: int, created: float, event: str = "MODIFY") -> dict[str, Any]:
    data: dict[str, Any] = {
        "ApproximateCreationDateTime": created,
        "Keys": {"pk": {"S": pk}},
        "SequenceNumber": str(seq),
    }
    if event != "REMOVE":
        data["NewImage"] = {"pk": {"S": pk}, "v": {"S": value}}
    return {"eventName": event, "dynamodb": data}


class FakeStreams:
    """One stream of shards: id -> parent, records, and whether the shard is closed."""

    def __init__(self, shards: list[tuple[str, str | None, list[dict[str, Any]], bool]]) -> None:
        self.shards = shards
        self.reads = 0
        self.on_read: Any = None

    def describe_stream(self, StreamArn: str, **kw: Any) -> dict[str, Any]:
        listed = [
            {"ShardId": sid, **({"ParentShardId": parent} if parent else {})}
            for sid, parent, _, _ in self.shards
        ]
        return {"StreamDescription": {"Shards": listed}}

    def get_shard_iterator(self, StreamArn: str, ShardId: str, **kw: Any) -> dict[str, Any]:
        records = next(r for sid, _, r, _ in self.shards if sid == ShardId)
        start = 0
        if kw["ShardIteratorType"] == "AFTER_SEQUENCE_NUMBER":
            start = 1 + [r["dynamodb"]["SequenceNumber"] for r in records].index(
                kw["SequenceNumber"]
            )
        return {"ShardIterator": f"{ShardId}|{start}"}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        self.reads += 1
        if self.on_read:
            self.on_read()
        shard_id, start = ShardIterator.split("|")
        _, _, records, closed = next(s for s in self.shards if s[0] == shard_id)
        page = records[int(start) : int(start) + Limit]
        end = int(start) + len(page)
        done = closed and end >= len(records)
        return {"Records": page, "NextShardIterator": None if done else f"{shard_id}|{end}"}


class FakeDynamoDB:
    """A table's description and the writes made to it; ``fail``: value -> the error the
    next put of that value raises."""

    def __init__(self, table: dict[str, Any]) -> None:
        self.table = table
        self.writes: list[tuple[str, Any]] = []
        self.fail: dict[str, Exception] = {}

    def describe_table(self, TableName: str) -> dict[str, Any]:
        return {"Table": {"TableName": TableName, **self.table}}

    def put_item(self, TableName: str, Item: dict[str, Any]) -> dict[str, Any]:
        if error := self.fail.pop(Item["v"]["S"], None):
            raise error
        self.writes.append(("put", Item["v"]["S"]))
        return {}

    def delete_item(self, TableName: str, Key: dict[str, Any], **kw: Any) -> dict[str, Any]:
        self.writes.append(("delete", Key["pk"]["S"]))
        return {"Attributes": {**Key}}


STREAM_TABLE = {
    "LatestStreamArn": "arn:aws:dynamodb:region:1:table/things/stream/1",
    "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
}


class FakeSession:
    def __init__(self, streams: dict[str, FakeStreams]) -> None:
        self.streams = streams
        self.dynamodb = {region: FakeDynamoDB(STREAM_TABLE) for region in streams}

    def client(self, service: str, region_name: str, **kw: Any) -> Any:
        assert kw["config"] is replicator_module.AWS_CONFIG  # every call has its deadline
        if service == "dynamodb":
            return self.dynamodb[region_name]
        return self.streams[region_name]


def test_versions_order_by_time_then_region_then_sequence():
    assert Version(1000, WEST, 1) < Version(1001, EAST, 1)
    assert Version(1000, EAST, 9) < Version(1000, WEST, 1)
    assert Version(1000, EAST, 1) < Version(1000, EAST, 2)


def test_a_record_becomes_a_change_of_the_region_it_was_read_from_at_millisecond_precision():
    created = datetime(2026, 12, 4, 11, 0, 0, 123000, tzinfo=UTC)
    raw = record("a", "1", 7, 0.0)
    raw["awsRegion"] = EAST  # moto stamps every record us-east-1
    raw["dynamodb"]["ApproximateCreationDateTime"] = created
    change = change_of("things", WEST, raw)
    assert change.version == Version(round(created.timestamp() * 1000), WEST, 7)
    assert change.version.created_ms % 1000 == 123
    assert change.image == {"pk": {"S": "a"}, "v": {"S": "1"}}
    assert change_of("things", WEST, record("a", "", 8, 1.0, "REMOVE")).image is None


def test_fingerprints_ignore_map_and_set_order_but_not_list_order_or_types():
    a = {"x": {"SS": ["b", "a"]}, "y": {"B": b"\x00"}, "z": {"L": [{"N": "1"}, {"N": "2"}]}}
    b = {"z": {"L": [{"N": "1"}, {"N": "2"}]}, "y": {"B": b"\x00"}, "x": {"SS": ["a", "b"]}}
    assert canonical_json(a) == canonical_json(b)
    assert fingerprint("t", EAST, "k", a) == fingerprint("t", EAST, "k", b)
    reordered = {**a, "z": {"L": [{"N": "2"}, {"N": "1"}]}}
    assert fingerprint("t", EAST, "k", a) != fingerprint("t", EAST, "k", reordered)
    assert fingerprint("t", EAST, "k", {"n": {"N": "1"}}) != fingerprint(
        "t", EAST, "k", {"n": {"S": "1"}}
    )
    assert fingerprint("t", EAST, "k", None) == ("t", EAST, "k", None)


def test_a_child_shard_waits_for_its_listed_parent_to_be_read_to_its_end():
    shards = [{"ShardId": "child", "ParentShardId": "parent"}, {"ShardId": "parent"}]
    assert readable_shards(shards, set()) == ["parent"]
    assert readable_shards(shards, {"parent"}) == ["child"]
    trimmed = [{"ShardId": "child", "ParentShardId": "gone"}]
    assert readable_shards(trimmed, set()) == ["child"]


@pytest.mark.parametrize(
    ("table", "detail"),
    [
        ({}, "has no stream"),
        ({**STREAM_TABLE, "StreamSpecification": {"StreamEnabled": False}}, "has no stream"),
        (
            {**STREAM_TABLE, "StreamSpecification": {"StreamViewType": "KEYS_ONLY"}},
            "has a KEYS_ONLY stream",
        ),
    ],
)
def test_a_table_without_a_stream_of_new_images_is_named_with_its_region(table, detail):
    with pytest.raises(StreamMissingError, match=f"table loads in {WEST} {detail}"):
        stream_arn({"TableName": "loads", **table}, WEST)
    assert stream_arn({"TableName": "loads", **STREAM_TABLE}, WEST).endswith("/stream/1")


def test_lag_percentiles_are_nearest_rank():
    assert lag_summary([]) == {"p50": None, "p99": None, "max": None, "count": 0}
    assert lag_summary(float(n) for n in range(100, 0, -1)) == {
        "p50": 50.0,
        "p99": 99.0,
        "max": 100.0,
        "count": 100,
    }


def test_replication_needs_two_regions_and_a_table():
    with pytest.raises(ValueError, match="two regions"):
        Replicator(["loads"], [EAST, EAST])
    with pytest.raises(ValueError, match="no tables"):
        Replicator([], [EAST, WEST])


def test_a_child_shard_is_read_only_after_its_parent_so_an_item_s_writes_stay_in_order():
    # GIVEN an east stream whose closed parent shard holds v1 and whose child holds v2,
    # the child listed first
    east = FakeStreams(
        [
            ("child", "parent", [record("a", "v2", 2, 20.0)], False),
            ("parent", None, [record("a", "v1", 1, 10.0)], True),
        ]
    )
    session = FakeSession({EAST: east, WEST: FakeStreams([("s", None, [], False)])})
    replicator = Replicator(["things"], [EAST, WEST], session=session, clock=lambda: 30.0)
    # WHEN two rounds run
    replicator.run_once()
    replicator.run_once()
    # THEN the west got v1, then v2: both writes, in their order
    assert session.dynamodb[WEST].writes == [("put", "v1"), ("put", "v2")]
    assert replicator.stats()["superseded"] == 0


def two_writes_to_the_west() -> tuple[Replicator, FakeSession]:
    east = FakeStreams(
        [("s", None, [record("a", "v1", 1, 10.0), record("b", "v2", 2, 11.0)], False)]
    )
    session = FakeSession({EAST: east, WEST: FakeStreams([("s", None, [], False)])})
    return Replicator(["things"], [EAST, WEST], session=session, clock=lambda: 30.0), session


def test_a_write_the_region_refuses_is_given_up_and_the_writes_behind_it_go_on():
    replicator, session = two_writes_to_the_west()
    session.dynamodb[WEST].fail["v1"] = ClientError(
        {"Error": {"Code": "ValidationException", "Message": "no"}}, "PutItem"
    )
    replicator.run_once()
    replicator.run_once()
    assert session.dynamodb[WEST].writes == [("put", "v2")]
    stats = replicator.stats()
    assert (stats["errors"], stats["waiting"], stats["applied"]) == (1, 0, 1)
    assert len(replicator.echoes_due) == 1  # v2's echo only: v1 made no record


@pytest.mark.parametrize(
    "error",
    [
        ClientError({"Error": {"Code": "ResourceNotFoundException", "Message": "gone"}}, "PutItem"),
        RuntimeError("unforeseen"),
    ],
)
def test_a_write_that_fails_for_now_waits_and_holds_up_only_its_table_in_that_region(error):
    replicator, session = two_writes_to_the_west()
    session.dynamodb[WEST].fail["v1"] = error
    replicator.run_once()
    assert session.dynamodb[WEST].writes == []  # the table skipped for the rest of the round
    assert replicator.stats()["waiting"] == 2
    replicator.run_once()
    assert session.dynamodb[WEST].writes == [("put", "v1"), ("put", "v2")]
    assert replicator.stats()["waiting"] == 0


def test_run_writes_stats_and_stops_when_told(tmp_path):
    stop = threading.Event()
    east = FakeStreams([("s", None, [record("a", "v1", 1, 10.0)], False)])
    session = FakeSession({EAST: east, WEST: FakeStreams([("s", None, [], False)])})
    east.on_read = lambda: stop.set() if east.reads >= 3 else None
    replicator = Replicator(
        ["things"], [EAST, WEST], session=session, clock=lambda: 10.25, poll_seconds=0
    )
    path = tmp_path / "stats.json"
    replicator.run(stop, stats_path=path)
    stats = json.loads(path.read_text())
    assert stats["applied"] == 1
    assert stats["lag_ms"] == {"p50": 250.0, "p99": 250.0, "max": 250.0, "count": 1}


def test_the_entry_point_refuses_to_start_without_tables_and_two_regions(monkeypatch):
    monkeypatch.setattr(replicator_module.logs, "setup_logging", lambda service: None)
    monkeypatch.setenv("RELAY_REPLICATOR_TABLES", "loads")
    monkeypatch.setenv("RELAY_REPLICATOR_REGIONS", EAST)
    assert replicator_module.main() == 2
