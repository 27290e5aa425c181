"""The CodeDeploy hooks: smoke requests against the new version decide Succeeded or Failed.

The Lambda, CodeDeploy, Secrets Manager and CloudWatch clients are fakes given through the
hooks' seam (``Clients``); one test uses botocore's Stubber, so the calls made are checked
against the real API models. No network. The "new version" is an app on the module kit,
run through the real Lambda handler in-process.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber
from fastapi import Depends

from module_kit import deploy_hooks as hooks
from module_kit.app import app_service, module_app
from module_kit.http import DriverIdentity
from module_kit.signed_context import IdentityVerifier, generate_key_pair
from tests.conftest import TEST_IDENTITY_PRIVATE_KEY, TEST_IDENTITY_PUBLIC_KEY

FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:relay-prod-loads"
VERSION_ARN = f"{FUNCTION_ARN}:7"
SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:relay-identity-AbCdEf"
EVENT = {"DeploymentId": "d-ABC123", "LifecycleEventHookExecutionId": "hook-exec-1"}
ENVIRON = {
    "RELAY_HOOK_SMOKE": "modules.loads.smoke",
    "RELAY_HOOK_TARGET_VERSION": VERSION_ARN,
    "RELAY_HOOK_IDENTITY_SECRET": SECRET_ARN,
}
# As deployed: the version to judge is the deployment's target, asked of CodeDeploy.
DEPLOYED = {k: v for k, v in ENVIRON.items() if k != "RELAY_HOOK_TARGET_VERSION"}
CANARY_START = datetime(2026, 12, 3, 18, 0, tzinfo=UTC)


class Loads:
    def list(self, driver: str) -> dict[str, Any]:
        return {"loads": [], "driver": driver}


def loads_release(monkeypatch: pytest.MonkeyPatch, public_key: str = TEST_IDENTITY_PUBLIC_KEY):
    """The Lambda handler of a release of a loads-like module: verifies contexts with
    ``public_key`` (the release's RELAY_IDENTITY_PUBLIC_KEY)."""
    from module_kit.lambda_entry import lambda_handler

    monkeypatch.setenv("RELAY_IDENTITY_PUBLIC_KEY", public_key)
    app = module_app("loads", title="Relay loads", service=Loads())

    @app.get("/loads")
    def list_loads(
        identity: DriverIdentity, svc: Annotated[Loads, Depends(app_service)]
    ) -> dict[str, Any]:
        return svc.list(identity.driver)

    return lambda_handler(app)


class Context:
    def __init__(self, version: str) -> None:
        self.function_version = version
        self.function_name = "relay-prod-loads"
        self.memory_limit_in_mb = 512
        self.invoked_function_arn = f"{FUNCTION_ARN}:{version}"
        self.aws_request_id = "req"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 10_000


class FakeLambda:
    """``invoke`` runs a handler in-process; the alias resolves to ``alias_version``."""

    def __init__(self, handler: Any, alias_version: str = "7") -> None:
        self.handler = handler
        self.alias_version = alias_version
        self.calls: list[dict[str, Any]] = []

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        qualifier = kwargs["Qualifier"]
        version = qualifier if qualifier.isdigit() else self.alias_version
        event = json.loads(kwargs["Payload"])
        try:
            answer = self.handler(event, Context(version))
        except Exception as exc:
            return {
                "StatusCode": 200,
                "FunctionError": "Unhandled",
                "ExecutedVersion": version,
                "Payload": io.BytesIO(json.dumps({"errorMessage": str(exc)}).encode()),
            }
        body = json.dumps(answer).encode()
        return {"StatusCode": 200, "ExecutedVersion": version, "Payload": io.BytesIO(body)}

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(call["Payload"]) for call in self.calls]


def answering(status: int):
    """A release that answers ``status`` to every call."""

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"statusCode": status, "headers": {}, "body": "{}", "isBase64Encoded": False}

    return handler


class FakeCodeDeploy:
    """The deployment of EVENT moves relay-prod-loads:live from version 6 to 7."""

    def __init__(self, target_version: str = "7") -> None:
        self.reports: list[dict[str, str]] = []
        self.target_version = target_version

    def list_deployment_targets(self, deploymentId: str) -> dict[str, Any]:
        assert deploymentId == EVENT["DeploymentId"]
        return {"targetIds": ["relay-prod-loads:live"]}

    def get_deployment_target(self, deploymentId: str, targetId: str) -> dict[str, Any]:
        assert (deploymentId, targetId) == (EVENT["DeploymentId"], "relay-prod-loads:live")
        info = {
            "functionName": "relay-prod-loads",
            "functionAlias": "live",
            "currentVersion": "6",
            "targetVersion": self.target_version,
            "targetVersionWeight": 0.0,
        }
        return {"deploymentTarget": {"lambdaTarget": {"lambdaFunctionInfo": info}}}

    def put_lifecycle_event_hook_execution_status(self, **kwargs: str) -> dict[str, str]:
        self.reports.append(kwargs)
        return {"lifecycleEventHookExecutionId": kwargs["lifecycleEventHookExecutionId"]}

    def get_deployment(self, deploymentId: str) -> dict[str, Any]:
        assert deploymentId == EVENT["DeploymentId"]
        return {"deploymentInfo": {"deploymentId": deploymentId, "createTime": CANARY_START}}

    @property
    def outcome(self) -> str:
        (report,) = self.reports
        assert report["deploymentId"] == EVENT["DeploymentId"]
        assert report["lifecycleEventHookExecutionId"] == EVENT["LifecycleEventHookExecutionId"]
        return report["status"]


class FakeSecrets:
    def __init__(self, pem: str = TEST_IDENTITY_PRIVATE_KEY) -> None:
        self.pem = pem
        self.read: list[str] = []

    def get_secret_value(self, SecretId: str) -> dict[str, str]:
        self.read.append(SecretId)
        return {"SecretString": self.pem}


class FakeCloudWatch:
    """Answers each query id with ``sums[id]`` spread over per-minute values."""

    def __init__(self, **sums: float) -> None:
        self.sums = sums
        self.requests: list[dict[str, Any]] = []

    def get_metric_data(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        results = []
        for query in request["MetricDataQueries"]:
            total = self.sums.get(query["Id"], 0)
            values = [total / 2, total / 2] if total else []
            results.append({"Id": query["Id"], "Values": values, "StatusCode": "Complete"})
        return {"MetricDataResults": results}


def clients(lambda_: Any, cloudwatch: Any = None, secrets: Any = None) -> hooks.Clients:
    return hooks.Clients(
        lambda_=lambda_,
        codedeploy=FakeCodeDeploy(),
        secrets=secrets or FakeSecrets(),
        cloudwatch=cloudwatch or FakeCloudWatch(),
    )


# --- pre-traffic ------------------------------------------------------------------------


def test_a_working_release_passes_the_pre_traffic_smoke(monkeypatch):
    # GIVEN a new version that accepts the gateway's signed contexts
    fake = FakeLambda(loads_release(monkeypatch))
    given = clients(fake)
    # WHEN the pre-traffic hook runs
    result = hooks.run_pre_traffic(EVENT, given, ENVIRON)
    # THEN it reports Succeeded to CodeDeploy
    assert result == {"status": "Succeeded"}
    assert given.codedeploy.outcome == "Succeeded"
    # AND it called the new version itself, never the alias, once per smoke request
    assert [(c["FunctionName"], c["Qualifier"]) for c in fake.calls] == [(FUNCTION_ARN, "7")] * 3
    assert {c["InvocationType"] for c in fake.calls} == {"RequestResponse"}
    assert given.secrets.read == [SECRET_ARN]


def test_as_deployed_the_hook_judges_the_version_its_deployment_targets(monkeypatch):
    # GIVEN no version in the environment: CodeDeploy's deployment names its target
    fake = FakeLambda(loads_release(monkeypatch))
    given = clients(fake)
    hooks.run_pre_traffic(EVENT, given, DEPLOYED)
    assert given.codedeploy.outcome == "Succeeded"
    assert {(c["FunctionName"], c["Qualifier"]) for c in fake.calls} == {("relay-prod-loads", "7")}


def test_a_deployment_whose_target_is_not_a_version_fails(monkeypatch):
    given = clients(FakeLambda(loads_release(monkeypatch)))
    given.codedeploy.target_version = "$LATEST"
    hooks.run_pre_traffic(EVENT, given, DEPLOYED)
    assert given.codedeploy.outcome == "Failed"
    assert given.lambda_.calls == [], "nothing is invoked when the target is unknown"


def test_smoke_requests_are_function_url_events_signed_for_the_module(monkeypatch):
    fake = FakeLambda(loads_release(monkeypatch))
    hooks.run_pre_traffic(EVENT, clients(fake), ENVIRON)
    health, anonymous, signed = fake.events
    assert health["version"] == "2.0"
    assert health["requestContext"]["http"]["method"] == "GET"
    assert (health["rawPath"], anonymous["rawPath"]) == ("/healthz", "/loads")
    assert "x-relay-identity" not in anonymous["headers"]
    verifier = IdentityVerifier(TEST_IDENTITY_PUBLIC_KEY, audience="loads")
    identity = verifier.verify(signed["headers"]["x-relay-identity"])
    assert identity == hooks.SMOKE_DRIVER
    assert all(e[hooks.SMOKE_MARKER] is True for e in fake.events), "kept out of the metrics"


def test_a_release_that_refuses_the_gateways_identity_fails_pre_traffic(monkeypatch):
    # GIVEN a release configured with a public key that is not the gateway's
    fake = FakeLambda(loads_release(monkeypatch, public_key=generate_key_pair()[1]))
    given = clients(fake)
    hooks.run_pre_traffic(EVENT, given, ENVIRON)
    # THEN the signed request answered 401 and the deployment fails
    assert given.codedeploy.outcome == "Failed"


@pytest.mark.parametrize("answer", [401, 500, 503])
def test_a_release_answering_the_same_error_to_every_call_fails_pre_traffic(answer):
    given = clients(FakeLambda(answering(answer)))
    assert hooks.run_pre_traffic(EVENT, given, ENVIRON) == {"status": "Failed"}
    assert given.codedeploy.outcome == "Failed"


def test_a_release_that_answers_200_to_every_call_fails_too():
    # A release whose routes answer without checking the identity at all is broken as well.
    given = clients(FakeLambda(answering(200)))
    hooks.run_pre_traffic(EVENT, given, ENVIRON)
    assert given.codedeploy.outcome == "Failed"


def test_a_version_that_crashes_fails_pre_traffic():
    def crash(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raise ImportError("No module named 'modules.loads.app'")

    given = clients(FakeLambda(crash))
    hooks.run_pre_traffic(EVENT, given, ENVIRON)
    assert given.codedeploy.outcome == "Failed"


def test_an_invoke_that_fails_fails_the_deployment_but_is_still_reported(monkeypatch):
    class Unreachable(FakeLambda):
        def invoke(self, **kwargs: Any) -> dict[str, Any]:
            raise TimeoutError("read timeout")

    given = clients(Unreachable(loads_release(monkeypatch)))
    hooks.run_pre_traffic(EVENT, given, ENVIRON)
    assert given.codedeploy.outcome == "Failed"


@pytest.mark.parametrize(
    "environ",
    [
        {**ENVIRON, "RELAY_HOOK_IDENTITY_SECRET": ""},  # the signed probe can't run
        {**ENVIRON, "RELAY_HOOK_TARGET_VERSION": FUNCTION_ARN},  # not a version
        {**ENVIRON, "RELAY_HOOK_TARGET_VERSION": f"{FUNCTION_ARN}:live"},  # an alias
        {**ENVIRON, "RELAY_HOOK_SMOKE": "os"},  # not a smoke list
    ],
    ids=["no-secret", "unqualified", "alias", "not-a-smoke-list"],
)
def test_a_hook_that_cannot_check_the_release_fails_it(monkeypatch, environ):
    given = clients(FakeLambda(loads_release(monkeypatch)))
    hooks.run_pre_traffic(EVENT, given, environ)
    assert given.codedeploy.outcome == "Failed"


def test_the_hook_calls_match_the_aws_api_models(monkeypatch):
    """botocore's Stubber checks each call's parameters against the service's model."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    lam = boto3.client("lambda", region_name="us-east-1")
    deploy = boto3.client("codedeploy", region_name="us-east-1")
    with Stubber(lam) as lambda_stub, Stubber(deploy) as deploy_stub:
        deploy_stub.add_response(
            "list_deployment_targets",
            {"targetIds": ["relay-prod-loads:live"]},
            {"deploymentId": "d-ABC123"},
        )
        info = {"functionName": "relay-prod-loads", "functionAlias": "live", "targetVersion": "7"}
        deploy_stub.add_response(
            "get_deployment_target",
            {"deploymentTarget": {"lambdaTarget": {"lambdaFunctionInfo": info}}},
            {"deploymentId": "d-ABC123", "targetId": "relay-prod-loads:live"},
        )
        for _ in range(3):  # a release answering 401 to every call
            body = json.dumps({"statusCode": 401}).encode()
            lambda_stub.add_response(
                "invoke",
                {
                    "StatusCode": 200,
                    "ExecutedVersion": "7",
                    "Payload": StreamingBody(io.BytesIO(body), len(body)),
                },
                {
                    "FunctionName": "relay-prod-loads",
                    "Qualifier": "7",
                    "InvocationType": "RequestResponse",
                    "Payload": ANY,
                },
            )
        deploy_stub.add_response(
            "put_lifecycle_event_hook_execution_status",
            {"lifecycleEventHookExecutionId": "hook-exec-1"},
            {
                "deploymentId": "d-ABC123",
                "lifecycleEventHookExecutionId": "hook-exec-1",
                "status": "Failed",
            },
        )
        given = hooks.Clients(lambda_=lam, codedeploy=deploy, secrets=FakeSecrets())
        assert hooks.run_pre_traffic(EVENT, given, DEPLOYED) == {"status": "Failed"}
        lambda_stub.assert_no_pending_responses()
        deploy_stub.assert_no_pending_responses()


# --- post-traffic -----------------------------------------------------------------------


def later() -> datetime:
    return CANARY_START + timedelta(minutes=6)


def test_post_traffic_passes_a_release_whose_canary_window_is_clean(monkeypatch):
    fake = FakeLambda(loads_release(monkeypatch))
    cloudwatch = FakeCloudWatch(answers=400, answers_5xx=1, answers_401=0, invocations=400)
    given = clients(fake, cloudwatch)
    assert hooks.run_post_traffic(EVENT, given, ENVIRON, now=later) == {"status": "Succeeded"}
    # the smoke went through the alias callers use
    assert {c["Qualifier"] for c in fake.calls} == {"live"}
    # the window is the deployment's, and only the new version's metrics were read
    (request,) = cloudwatch.requests
    assert (request["StartTime"], request["EndTime"]) == (CANARY_START, later())
    dims = {
        q["Id"]: {d["Name"]: d["Value"] for d in q["MetricStat"]["Metric"]["Dimensions"]}
        for q in request["MetricDataQueries"]
    }
    assert dims["answers_5xx"] == {"service": "loads", "function_version": "7"}
    assert dims["errors"] == {
        "FunctionName": "relay-prod-loads",
        "Resource": "relay-prod-loads:live",
        "ExecutedVersion": "7",
    }


@pytest.mark.parametrize(
    ("sums", "outcome"),
    [
        ({"answers": 20, "answers_5xx": 4, "invocations": 20}, "Failed"),  # 20% 5xx
        ({"answers": 20, "answers_401": 20, "invocations": 20}, "Failed"),  # all refused
        ({"answers": 30, "invocations": 30, "errors": 5}, "Failed"),  # crashes
        ({"answers": 5, "answers_5xx": 2, "invocations": 5}, "Succeeded"),  # 2 are no evidence
        ({"answers": 100, "answers_5xx": 3, "invocations": 100}, "Succeeded"),  # 3%
        ({}, "Succeeded"),  # an idle canary: the smoke requests judged it
    ],
)
def test_post_traffic_judges_the_new_versions_whole_canary_window(monkeypatch, sums, outcome):
    given = clients(FakeLambda(loads_release(monkeypatch)), FakeCloudWatch(**sums))
    hooks.run_post_traffic(EVENT, given, ENVIRON, now=later)
    assert given.codedeploy.outcome == outcome


def test_post_traffic_as_deployed_reads_the_targets_metrics(monkeypatch):
    cloudwatch = FakeCloudWatch(answers=50, invocations=50)
    given = clients(FakeLambda(loads_release(monkeypatch)), cloudwatch)
    hooks.run_post_traffic(EVENT, given, DEPLOYED, now=later)
    assert given.codedeploy.outcome == "Succeeded"
    queries = cloudwatch.requests[0]["MetricDataQueries"]
    (errors,) = [q for q in queries if q["Id"] == "errors"]
    assert {d["Name"]: d["Value"] for d in errors["MetricStat"]["Metric"]["Dimensions"]} == {
        "FunctionName": "relay-prod-loads",
        "Resource": "relay-prod-loads:live",
        "ExecutedVersion": "7",
    }


def test_post_traffic_fails_when_the_alias_still_runs_another_version(monkeypatch):
    given = clients(FakeLambda(loads_release(monkeypatch), alias_version="6"))
    hooks.run_post_traffic(EVENT, given, ENVIRON, now=later)
    assert given.codedeploy.outcome == "Failed"


def test_post_traffic_fails_a_release_answering_401_to_every_call():
    given = clients(FakeLambda(answering(401)))
    hooks.run_post_traffic(EVENT, given, ENVIRON, now=later)
    assert given.codedeploy.outcome == "Failed"


def test_the_gateway_tolerates_more_401s_than_a_module():
    window = hooks.Totals(answers=100, answers_401=30, invocations=100)
    gateway = hooks.Smoke.load("gateway.smoke")
    loads = hooks.Smoke.load("modules.loads.smoke")
    assert hooks.judge(window, gateway.limits) == []
    assert hooks.judge(window, loads.limits) == ["401 answers: 30 of 100 calls (over 10%)"]


# --- the smoke lists --------------------------------------------------------------------


@pytest.mark.parametrize(
    "module",
    [
        "modules.loads.smoke",
        "modules.gatepass.smoke",
        "modules.navigate.smoke",
        "modules.message.smoke",
        "gateway.smoke",
    ],
)
def test_every_smoke_list_proves_alive_refusal_and_service(module):
    smoke = hooks.Smoke.load(module)
    says = [(p.method, p.path, p.identity is None, p.expect.says) for p in smoke.probes]
    assert ("GET", "/healthz", True, "200") in says
    assert any(anonymous and expect == "401" for _, _, anonymous, expect in says)
    assert any(p.expect is hooks.SERVED for p in smoke.probes)
    if module.startswith("modules."):
        assert smoke.service == module.split(".")[1]
        signed = [p for p in smoke.probes if p.identity is not None]
        assert signed, "a module is smoked with a signed identity"
        assert all(p.expect is hooks.SERVED for p in signed)
