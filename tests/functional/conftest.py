"""The functional tier: our code over emulators, in-process, no processes.

``aws`` runs moto in-process (no network); ``deployed`` deploys every stack of a stage in
it (the platform, each module, then ``template.yaml``: tables, queues, topics, keys and the
SSM parameters they publish), exactly as the local stack does against moto server.
The module tier (tests/modules) uses the same fixtures. The unit tier imports neither moto
nor the SAM translator (tests/unit/conftest.py checks), so these live here, not in
tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from moto import mock_aws

from relay import emulator
from relay.cloud import LocalCloud, StackResult
from relay.stack import LOCAL_CREDENTIALS
from tests.conftest import TEST_IDENTITY_PUBLIC_KEY


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch):
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield


@pytest.fixture
def emulator_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's server in this process, patched as the local stack's emulator is
    (``relay.emulator.in_process``), with boto3's environment pointing at it: its URL."""
    with emulator.in_process() as url:
        for key, value in {**LOCAL_CREDENTIALS, "AWS_ENDPOINT_URL": url}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        yield url


CONTROL_TABLE = "relay-test-control"


@pytest.fixture
def control_dynamodb(aws):
    """moto's DynamoDB with an empty control table of template.yaml's ``ControlTable``
    shape (``kind``, ``name``) named :data:`CONTROL_TABLE`."""
    import boto3

    resource = boto3.resource("dynamodb", region_name="us-east-1")
    resource.create_table(
        TableName=CONTROL_TABLE,
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
    return resource


@dataclass
class Deployed:
    cloud: LocalCloud
    stack: StackResult

    def env(self, function: str) -> dict[str, str]:
        return self.cloud.function_env(self.stack, function)

    def output(self, app: str, name: str) -> str:
        return self.stack.children[app].outputs[name]

    def use_env(self, monkeypatch: pytest.MonkeyPatch, function: str) -> dict[str, str]:
        env = self.env(function)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return env


@pytest.fixture
def deployed(aws) -> Deployed:
    cloud = LocalCloud()
    return Deployed(
        cloud, cloud.deploy_system(parameters={"IdentityPublicKey": TEST_IDENTITY_PUBLIC_KEY})
    )
