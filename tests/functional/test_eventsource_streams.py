"""The local DynamoDB stream event source (relay.eventsource.DynamoDBStreamRunner) against
moto server (in a thread, on 127.0.0.1: in-process moto does not serve the Streams API):
every write is handed over in order, in Lambda's record shape; a failed record is read
again, with everything after it, until it succeeds or its retries are spent."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from relay import emulator
from relay.eventsource import DynamoDBStreamRunner

MAX_POLLS = 20  # bound on every loop below


@pytest.fixture
def endpoint() -> Iterator[str]:
    with emulator.in_process() as url:
        yield url


def client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


@pytest.fixture
def table(endpoint: str) -> tuple[Any, str]:
    ddb = client("dynamodb", endpoint)
    arn = ddb.create_table(
        TableName="things",
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    )["TableDescription"]["LatestStreamArn"]
    return ddb, arn


class Handler:
    """Records what it is handed; ``failures``: key -> how many deliveries of it fail."""

    def __init__(self, failures: dict[str, int] | None = None) -> None:
        self.failures = dict(failures or {})
        self.seen: list[str] = []
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.events.append(event)
        failed = []
        for r in event["Records"]:
            key = r["dynamodb"]["NewImage"]["k"]["S"]
            if failed or self.failures.get(key, 0) > 0:
                if not failed:
                    self.failures[key] -= 1
                failed.append({"itemIdentifier": r["dynamodb"]["SequenceNumber"]})
                continue
            self.seen.append(key)
        return {"batchItemFailures": failed[:1]}  # Lambda reads from the first failure on


def put(ddb: Any, *keys: str) -> None:
    for k in keys:
        ddb.put_item(TableName="things", Item={"k": {"S": k}})


def drain(runner: DynamoDBStreamRunner) -> None:
    for _ in range(MAX_POLLS):
        handled, failed = runner.run_once()
        if not handled and not failed:
            return
    raise AssertionError("the stream never drained")


def runner_for(endpoint: str, arn: str, handler: Handler, **kw: Any) -> DynamoDBStreamRunner:
    return DynamoDBStreamRunner(
        arn,
        handler,
        streams=client("dynamodbstreams", endpoint),
        dynamodb=client("dynamodb", endpoint),
        batch_size=10,
        **kw,
    )


def test_records_arrive_in_order_in_lambda_s_shape_including_later_writes(endpoint, table):
    ddb, arn = table
    handler = Handler()
    runner = runner_for(endpoint, arn, handler)
    put(ddb, "a", "b")
    ddb.transact_write_items(
        TransactItems=[{"Put": {"TableName": "things", "Item": {"k": {"S": "c"}}}}]
    )
    drain(runner)
    put(ddb, "d")  # after the runner caught up: the same shard, read on
    drain(runner)
    assert handler.seen == ["a", "b", "c", "d"]
    record = handler.events[0]["Records"][0]
    assert record["eventSource"] == "aws:dynamodb" and record["eventSourceARN"] == arn
    assert isinstance(record["dynamodb"]["ApproximateCreationDateTime"], int)
    assert record["eventName"] == "INSERT"


def test_a_failed_record_is_read_again_with_everything_after_it(endpoint, table):
    ddb, arn = table
    handler = Handler({"b": 2})
    runner = runner_for(endpoint, arn, handler)
    put(ddb, "a", "b", "c")
    drain(runner)
    assert handler.seen == ["a", "b", "c"]  # b after its two failures, c never before b
    assert runner.given_up == []


def test_a_record_failing_past_its_retries_is_given_up_and_the_shard_moves_on(endpoint, table):
    ddb, arn = table
    handler = Handler({"b": 100})
    runner = runner_for(endpoint, arn, handler, max_retries=3)
    put(ddb, "a", "b", "c")
    drain(runner)
    assert handler.seen == ["a", "c"]
    assert len(runner.given_up) == 1


def test_a_table_made_again_is_read_on_from_its_new_stream(endpoint, table):
    # GIVEN a runner that has read the table's stream
    ddb, arn = table
    handler = Handler()
    runner = runner_for(endpoint, arn, handler, stream_check_seconds=0)
    put(ddb, "a")
    drain(runner)
    # WHEN the table is made again (the emulator restarted and the stack redeployed)
    ddb.delete_table(TableName="things")
    ddb.create_table(
        TableName="things",
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    )
    put(ddb, "b")
    # THEN the runner finds the new stream and reads it from its start
    for _ in range(MAX_POLLS):
        if runner.poll() == (0, 0) and "b" in handler.seen:
            break
    assert handler.seen == ["a", "b"]
    assert runner.stream_arn != arn
