"""relay.emulator: moto's DynamoDB Streams keeps only the newest shard iterators, so stream
readers polling for hours do not grow the emulator's memory without bound."""

from __future__ import annotations

import boto3

from relay.emulator import bound_stream_iterators, in_process


def test_only_the_newest_shard_iterators_are_kept():
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodbstreams.models import dynamodbstreams_backends

    with in_process() as url:
        undo = bound_stream_iterators(kept=10)
        try:
            aws = {"endpoint_url": url, "region_name": "us-east-1"}
            creds = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
            table = boto3.client("dynamodb", **aws, **creds).create_table(
                TableName="t",
                KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
                StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
            )["TableDescription"]
            streams = boto3.client("dynamodbstreams", **aws, **creds)
            arn = table["LatestStreamArn"]
            shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]
            iterator = streams.get_shard_iterator(
                StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            for _ in range(40):  # a reader polling: each read hands out the next iterator
                iterator = streams.get_records(ShardIterator=iterator)["NextShardIterator"]
            kept = dynamodbstreams_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].shard_iterators
            assert 0 < len(kept) <= 10
            assert iterator in kept  # the one a reader holds still works
            streams.get_records(ShardIterator=iterator)
        finally:
            undo()
