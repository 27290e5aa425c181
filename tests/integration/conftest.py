"""The real local stack on free loopback ports: emulator server, module processes, gateway."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import boto3
import httpx
import pytest

from relay.cloud import ROOT
from relay.devissuer import DevIssuer
from relay.stack import LocalStack, free_port
from shared_contracts.identity import Role


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.2) -> bool:
    """Poll real processes for a condition, bounded in time. Returns whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def run_relay(stack: LocalStack, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """The `relay` CLI as a developer runs it, against ``stack``'s state dir."""
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", *args],
        cwd=ROOT,
        env={**os.environ, "RELAY_STATE_DIR": str(stack.state_dir)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Api:
    """The gateway as the app sees it, with tokens for any role."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.tokens = DevIssuer.load_or_create(stack.state_dir)
        self.http = httpx.Client(base_url=stack.gateway_url, timeout=10)

    def auth(self, role: Role = Role.DRIVER, driver_id: str | None = "D-1001") -> dict[str, str]:
        sub = driver_id if role is Role.DRIVER else f"{role.value}-it"
        token = self.tokens.mint(sub, role, driver_id if role is Role.DRIVER else None)
        return {"authorization": f"Bearer {token}"}

    def aws(self, service: str):
        return boto3.client(
            service,
            endpoint_url=self.stack.emulator_url,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )

    def aws_resource(self, service: str):
        return boto3.resource(
            service,
            endpoint_url=self.stack.emulator_url,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )

    def subscribe_to_pushes(self) -> str:
        """An SQS queue subscribed to the push topic, standing in for the push provider."""
        sqs, sns = self.aws("sqs"), self.aws("sns")
        url = sqs.create_queue(QueueName=f"push-capture-{free_port()}")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        sns.subscribe(
            TopicArn=self.stack.output("NotificationsApp", "PushTopicArn"),
            Protocol="sqs",
            Endpoint=arn,
            Attributes={"RawMessageDelivery": "true"},
        )
        return url

    def queue_depth(self, url: str) -> int:
        attrs = self.aws("sqs").get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(
            attrs["ApproximateNumberOfMessagesNotVisible"]
        )

    def pushes(self, queue_url: str, *, until: int, max_polls: int = 15) -> list[dict]:
        """Long-poll the capture queue (bounded) until ``until`` pushes have arrived."""
        sqs, seen = self.aws("sqs"), []
        for _ in range(max_polls):
            batch = sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", [])
            for m in batch:
                seen.append(json.loads(m["Body"]))
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
            if len(seen) >= until:
                break
        return seen


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """One stack per test file: files that kill or break parts of it do not share it."""
    with LocalStack(
        gateway_port=free_port(),
        state_dir=tmp_path_factory.mktemp("relay"),
        event_source_backoff=(1, 2),
    ) as s:
        yield s


@pytest.fixture(scope="module")
def api(stack: LocalStack) -> Iterator[Api]:
    client = Api(stack)
    yield client
    client.http.close()


@pytest.fixture(scope="module")
def supervised_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A stack as `relay dev` runs it: supervised, `relay ps|stop|start` on its control socket
    (game days kill, stop and start its processes by name)."""
    with LocalStack(
        gateway_port=free_port(),
        state_dir=tmp_path_factory.mktemp("relay"),
        event_source_backoff=(1, 2),
        supervise=True,
    ) as s:
        yield s
