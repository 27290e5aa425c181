"""``relay release --target aws``: the AWS host against fake SSM, CloudFormation and Lambda
clients (versions and URLs from SSM, the deploy it runs, promotion as a stack update,
retirement doing nothing), the SigV4 transport of the contract check, ``deploy()`` with a
host that labels its own versions, and the command's arguments."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, WaiterError
from typer.testing import CliRunner

import relay.cli
import relay.release.deploy as deploy_module
from relay.release.aws import CAPABILITIES, AwsAliasHost, SignedTransport, control_table_name
from relay.release.contract import ContractProblem, ContractReport
from relay.release.controller import Outcome
from relay.release.deploy import AlreadyRunning, DeployResult, Source, deploy
from relay.release.exceptions import ReleaseError
from relay.release.policy import Policy

from .fakes import Behaviour, Fleet

STAGE = "preprod"
FUNCTION = "arn:aws:lambda:us-east-1:111122223333:function:relay-preprod-message-Fn"


def client_error(code: str, message: str = "", operation: str = "Call") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


class FakeSsm:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.asked: list[str] = []

    def get_parameter(self, *, Name: str) -> dict[str, Any]:
        self.asked.append(Name)
        if Name not in self.values:
            raise client_error("ParameterNotFound", Name, "GetParameter")
        return {"Parameter": {"Name": Name, "Value": self.values[Name]}}


class FakeLambda:
    def __init__(self, live: str) -> None:
        self.live = live
        self.asked: list[tuple[str, str]] = []

    def get_alias(self, *, FunctionName: str, Name: str) -> dict[str, Any]:
        self.asked.append((FunctionName, Name))
        return {"Name": Name, "FunctionVersion": self.live}


@dataclass
class FakeWaiter:
    failure: Exception | None = None
    waits: list[dict[str, Any]] = field(default_factory=list)

    def wait(self, **kwargs: Any) -> None:
        self.waits.append(kwargs)
        if self.failure is not None:
            raise self.failure


class FakeCloudFormation:
    """One stack's parameters; update_stack moves LiveVersion, and (as the stack's own
    LiveVersionParameter resource does) the live-version parameter in ``ssm``."""

    def __init__(self, ssm: FakeSsm, parameters: dict[str, str], module: str = "message"):
        self.ssm = ssm
        self.module = module
        self.parameters = dict(parameters)
        self.updates: list[dict[str, Any]] = []
        self.waiter = FakeWaiter()
        self.update_error: Exception | None = None
        self.moves_live = True

    def describe_stacks(self, *, StackName: str) -> dict[str, Any]:
        params = [{"ParameterKey": k, "ParameterValue": v} for k, v in self.parameters.items()]
        return {"Stacks": [{"StackName": StackName, "Parameters": params}]}

    def update_stack(self, **kwargs: Any) -> dict[str, Any]:
        self.updates.append(kwargs)
        if self.update_error is not None:
            raise self.update_error
        for p in kwargs["Parameters"]:
            if "ParameterValue" in p:
                self.parameters[p["ParameterKey"]] = p["ParameterValue"]
        if self.moves_live:
            live = self.parameters["LiveVersion"]
            self.ssm.values[f"/relay/{STAGE}/{self.module}/live-version"] = live
        return {"StackId": "arn:stack"}

    def get_waiter(self, name: str) -> FakeWaiter:
        assert name == "stack_update_complete"
        return self.waiter


def ssm_values(module: str = "message", **overrides: str) -> dict[str, str]:
    values = {
        "url": "https://live.lambda-url.us-east-1.on.aws/",
        "canary-url": "https://canary.lambda-url.us-east-1.on.aws/",
        "canary-version": "8",
        "live-version": "7",
        "function-arn": FUNCTION,
    }
    values.update({k.replace("_", "-"): v for k, v in overrides.items()})
    return {f"/relay/{STAGE}/{module}/{k}": v for k, v in values.items()}


@dataclass
class Runs:
    """``subprocess.run`` for sam: records each command; ``fail`` names a subcommand that
    exits 1."""

    fail: str | None = None
    commands: list[tuple[list[str], Path, float]] = field(default_factory=list)

    def __call__(self, command: list[str], *, cwd: Path, check: bool, timeout: float) -> Any:
        assert check is False
        self.commands.append((command, cwd, timeout))
        code = 1 if command[1] == self.fail else 0
        return subprocess.CompletedProcess(command, code)


def host(ssm: FakeSsm, **kwargs: Any) -> AwsAliasHost:
    return AwsAliasHost(
        STAGE, region="us-east-1", config_env="preprod", repo=Path("/repo"), ssm=ssm, **kwargs
    )


# --- versions and URLs ------------------------------------------------------------------


def test_urls_and_versions_are_the_module_s_ssm_parameters() -> None:
    ssm = FakeSsm(ssm_values())
    aws = host(ssm, lambda_client=FakeLambda("99"))

    assert aws.url("message") == "https://live.lambda-url.us-east-1.on.aws/"
    assert aws.stable_version("message") == "7"
    assert aws.canary_version("message") == "8"
    assert ssm.asked == [
        "/relay/preprod/message/url",
        "/relay/preprod/message/live-version",
        "/relay/preprod/message/canary-version",
    ]


def test_a_stack_without_live_version_reads_the_live_alias() -> None:
    values = ssm_values()
    del values["/relay/preprod/message/live-version"]
    functions = FakeLambda("5")
    aws = host(FakeSsm(values), lambda_client=functions)

    assert aws.stable_version("message") == "5"
    assert functions.asked == [(FUNCTION, "live")]


def test_a_module_whose_stack_is_not_there_is_a_release_error() -> None:
    aws = host(FakeSsm({}), lambda_client=FakeLambda("5"))

    with pytest.raises(ReleaseError, match="relay-preprod-message"):
        aws.url("message")
    with pytest.raises(ReleaseError, match="function-arn does not exist"):
        aws.stable_version("message")


def test_the_control_table_is_named_by_the_gateway_stack_s_parameter() -> None:
    ssm = FakeSsm({"/relay/preprod/gateway/control-table-name": "relay-preprod-Control-1"})

    assert control_table_name(STAGE, ssm=ssm) == "relay-preprod-Control-1"
    with pytest.raises(ReleaseError, match="relay-prod-gateway"):
        control_table_name("prod", ssm=ssm)


# --- start: the deploy --------------------------------------------------------------------


def test_start_builds_and_deploys_the_module_keeping_live(tmp_path: Path) -> None:
    (tmp_path / "modules" / "message").mkdir(parents=True)
    (tmp_path / "modules" / "message" / "template.yaml").write_text("{}")
    runs = Runs()
    aws = host(FakeSsm(ssm_values()), run=runs)

    url = aws.start("message", tmp_path, "abc123")

    assert url == "https://canary.lambda-url.us-east-1.on.aws/"
    build, deploy_ = (command for command, _, _ in runs.commands)
    assert build == [
        "sam",
        "build",
        "--template-file",
        "modules/message/template.yaml",
        "--config-env",
        "preprod",
    ]
    assert deploy_[:2] == ["sam", "deploy"]
    assert deploy_[deploy_.index("--stack-name") + 1] == "relay-preprod-message"
    assert deploy_[deploy_.index("--config-env") + 1] == "preprod"
    assert deploy_[deploy_.index("--region") + 1] == "us-east-1"
    overrides = deploy_[deploy_.index("--parameter-overrides") + 1 :]
    assert overrides == ["Stage=preprod", "LiveVersion=7"]  # live stays where it is
    assert "--no-confirm-changeset" in deploy_
    assert {cwd for _, cwd, _ in runs.commands} == {tmp_path}
    assert all(0 < timeout <= 3600 for _, _, timeout in runs.commands)


def test_a_failed_build_deploys_nothing(tmp_path: Path) -> None:
    (tmp_path / "modules" / "message").mkdir(parents=True)
    (tmp_path / "modules" / "message" / "template.yaml").write_text("{}")
    runs = Runs(fail="build")
    aws = host(FakeSsm(ssm_values()), run=runs)

    with pytest.raises(ReleaseError, match="sam build failed"):
        aws.start("message", tmp_path, "abc123")
    assert [command[1] for command, _, _ in runs.commands] == ["build"]


# --- promote and retire -----------------------------------------------------------------


PARAMETERS = {
    "Stage": "preprod",
    "ReservedConcurrency": "50",
    "DeployHookReservedConcurrency": "1",
    "LiveVersion": "7",
}


def test_promote_updates_the_stack_s_live_version_and_waits() -> None:
    ssm = FakeSsm(ssm_values())
    cloudformation = FakeCloudFormation(ssm, PARAMETERS)
    aws = host(ssm, cloudformation=cloudformation, update_poll_seconds=5, update_max_attempts=60)

    aws.promote("message", "8")

    (update,) = cloudformation.updates
    assert update["StackName"] == "relay-preprod-message"
    assert update["UsePreviousTemplate"] is True
    assert sorted(update["Capabilities"]) == sorted(CAPABILITIES)
    assert sorted(update["Parameters"], key=lambda p: p["ParameterKey"]) == [
        {"ParameterKey": "DeployHookReservedConcurrency", "UsePreviousValue": True},
        {"ParameterKey": "LiveVersion", "ParameterValue": "8"},
        {"ParameterKey": "ReservedConcurrency", "UsePreviousValue": True},
        {"ParameterKey": "Stage", "UsePreviousValue": True},
    ]
    assert cloudformation.waiter.waits == [
        {"StackName": "relay-preprod-message", "WaiterConfig": {"Delay": 5, "MaxAttempts": 60}}
    ]


def test_a_stack_update_that_fails_or_times_out_is_a_release_error() -> None:
    ssm = FakeSsm(ssm_values())
    cloudformation = FakeCloudFormation(ssm, PARAMETERS)
    cloudformation.waiter.failure = WaiterError(
        "StackUpdateComplete", "Waiter encountered a terminal failure state", {}
    )
    aws = host(ssm, cloudformation=cloudformation)

    with pytest.raises(ReleaseError, match="did not promote version 8"):
        aws.promote("message", "8")


def test_a_promotion_whose_live_version_did_not_move_is_a_release_error() -> None:
    ssm = FakeSsm(ssm_values())
    cloudformation = FakeCloudFormation(ssm, PARAMETERS)
    cloudformation.moves_live = False
    aws = host(ssm, cloudformation=cloudformation)

    with pytest.raises(ReleaseError, match="live-version says 7, not 8"):
        aws.promote("message", "8")


def test_promoting_the_version_live_already_serves_is_no_error() -> None:
    ssm = FakeSsm(ssm_values(live_version="8"))
    cloudformation = FakeCloudFormation(ssm, {**PARAMETERS, "LiveVersion": "8"})
    cloudformation.update_error = client_error("ValidationError", "No updates are to be performed.")
    aws = host(ssm, cloudformation=cloudformation)

    aws.promote("message", "8")

    assert len(cloudformation.updates) == 1
    cloudformation.update_error = client_error("ValidationError", "Stack is in UPDATE_IN_PROGRESS")
    with pytest.raises(ClientError):
        aws.promote("message", "8")


def test_a_stack_without_live_version_cannot_be_promoted() -> None:
    ssm = FakeSsm(ssm_values())
    cloudformation = FakeCloudFormation(ssm, {"Stage": "preprod"})
    aws = host(ssm, cloudformation=cloudformation)

    with pytest.raises(ReleaseError, match="no LiveVersion parameter"):
        aws.promote("message", "8")
    assert cloudformation.updates == []


class Refuses:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"retire called {name}")


def test_retire_calls_nothing_in_aws() -> None:
    aws = host(Refuses(), cloudformation=Refuses(), lambda_client=Refuses(), run=Refuses())  # type: ignore[arg-type]

    aws.retire("message", "8")


# --- the contract check's transport -----------------------------------------------------


def test_the_signed_transport_signs_each_call_for_lambda() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    transport = SignedTransport(
        "us-east-1",
        credentials=Credentials("AKIDEXAMPLE", "secret", "token"),
        inner=httpx.MockTransport(answer),
    )
    with httpx.Client(
        base_url="https://canary.lambda-url.us-east-1.on.aws", transport=transport
    ) as c:
        assert c.post("/message", json={"text": "hi"}).status_code == 200

    (request,) = seen
    authorization = request.headers["authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/us-east-1/lambda/aws4_request" in authorization
    assert request.headers["x-amz-security-token"] == "token"
    assert request.content == b'{"text":"hi"}'


# --- deploy() with a host that labels its versions ----------------------------------------


class LabelledHost:
    """Lambda-style versions: the deploy happens in start, the labels come from the host."""

    def __init__(self, live: str = "7", canary: str = "8", promote_error: Exception | None = None):
        self.live, self.canary = live, canary
        self.promote_error = promote_error
        self.calls: list[tuple[str, ...]] = []

    def url(self, module: str) -> str:
        return "https://live.example"

    def stable_version(self, module: str) -> str:
        return self.live

    def canary_version(self, module: str) -> str:
        assert ("start", module) in self.calls, "the canary's label is read after the deploy"
        return self.canary

    def start(self, module: str, source: Path, version: str) -> str:
        self.calls.append(("start", module))
        return "https://canary.example"

    def promote(self, module: str, version: str) -> None:
        self.calls.append(("promote", module, version))
        if self.promote_error is not None:
            raise self.promote_error

    def retire(self, module: str, version: str) -> None:
        self.calls.append(("retire", module, version))


KEPT = ContractReport("message", 3, ())
POLICY = Policy(interval_seconds=60, min_calls=50)


@pytest.fixture
def no_healthz(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(url: str) -> str:
        raise AssertionError(f"unsigned GET {url}/healthz")

    monkeypatch.setattr(deploy_module, "running_version", refuse)


def run_deploy(fleet: Fleet, aws: LabelledHost, check: ContractReport = KEPT) -> DeployResult:
    return deploy(
        "message",
        Source(Path("/repo"), "abc123"),
        host=aws,
        store=fleet.releases,
        stats=fleet.stats,
        policy=POLICY,
        check=lambda module, url: check,
        clock=fleet.clock,
        sleep=fleet.sleep,
    )


def test_a_labelled_host_s_release_names_lambda_versions(no_healthz: None) -> None:
    fleet = Fleet()
    aws = LabelledHost()

    result = run_deploy(fleet, aws)

    assert result.promoted and result.version == "8"
    first = fleet.releases.puts[0][1]
    assert (first.stable_version, first.canary_version) == ("7", "8")
    assert (first.stable_url, first.canary_url) == (
        "https://live.example",
        "https://canary.example",
    )
    assert aws.calls == [("start", "message"), ("promote", "message", "8")]
    # Promoted: the gateways' stable version is the live URL again, now serving version 8,
    # so the next deploy (which moves the canary alias) reaches nobody before its release.
    final = fleet.releases.get("message")
    assert final is not None
    assert (final.phase, final.stable_version, final.stable_url) == (
        "promoted",
        "8",
        "https://live.example",
    )


def test_a_labelled_host_s_bad_canary_is_retired_not_promoted(no_healthz: None) -> None:
    fleet = Fleet(calls_per_second=1000, canary=lambda _s: Behaviour(failure_rate=0.3))
    aws = LabelledHost()

    result = run_deploy(fleet, aws)

    assert not result.promoted
    assert aws.calls == [("start", "message"), ("retire", "message", "8")]
    final = fleet.releases.get("message")
    assert final is not None and final.phase == "rolled-back"


def test_a_failed_promotion_sends_everyone_back_to_the_old_live_version(
    no_healthz: None,
) -> None:
    fleet = Fleet()
    aws = LabelledHost(promote_error=ReleaseError("stack update failed"))

    with pytest.raises(ReleaseError, match="stack update failed"):
        run_deploy(fleet, aws)

    final = fleet.releases.get("message")
    assert final is not None
    assert (final.stable_version, final.stable_url) == ("7", "https://live.example")


def test_a_deploy_that_published_no_new_version_has_nothing_to_release(
    no_healthz: None,
) -> None:
    fleet = Fleet()
    aws = LabelledHost(live="8", canary="8")

    with pytest.raises(AlreadyRunning, match="already runs version 8"):
        run_deploy(fleet, aws)
    assert fleet.releases.puts == []


def test_a_labelled_host_s_broken_contract_gets_no_traffic(no_healthz: None) -> None:
    fleet = Fleet()
    aws = LabelledHost()
    broken = ContractReport("message", 3, (ContractProblem("GET /message", "x", "500"),))

    result = run_deploy(fleet, aws, broken)

    assert result.exit_code == 2
    assert fleet.releases.puts == []
    assert aws.calls == [("start", "message"), ("retire", "message", "8")]


# --- the command ------------------------------------------------------------------------

PLAN = """
[defaults]
bake_seconds = 0
[[stage]]
module = "message"
[[stage]]
module = "navigate"
[[stage]]
module = "gatepass"
[[stage]]
module = "loads"
"""


@pytest.fixture
def plan(tmp_path: Path) -> Path:
    path = tmp_path / "plan.toml"
    path.write_text(PLAN)
    return path


@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any) -> Any:
        raise AssertionError("no AWS call before the arguments are checked")

    monkeypatch.setattr(relay.cli, "_aws_parts", refuse)


def invoke(*args: str) -> Any:
    return CliRunner().invoke(relay.cli.app, ["release", *args])


def test_aws_needs_a_stage(plan: Path, no_aws: None) -> None:
    result = invoke(str(plan), "--target", "aws", "--config-env", "preprod")

    assert result.exit_code == 2
    assert "--stage" in result.output


def test_aws_needs_a_samconfig_environment(plan: Path, no_aws: None) -> None:
    result = invoke(str(plan), "--target", "aws", "--stage", "preprod")

    assert result.exit_code == 2
    assert "--config-env" in result.output


def test_aws_deploys_the_checkout_not_a_ref(plan: Path, no_aws: None) -> None:
    args = ("--target", "aws", "--stage", "preprod", "--config-env", "preprod", "--ref", "HEAD")
    result = invoke(str(plan), *args)

    assert result.exit_code == 2
    assert "--ref" in result.output


def test_aws_refuses_a_module_the_plan_does_not_release(plan: Path, no_aws: None) -> None:
    args = ("--target", "aws", "--stage", "preprod", "--config-env", "preprod")
    result = invoke(str(plan), *args, "--modules", "loads gateway")

    assert result.exit_code == 2
    assert "gateway not in" in result.output


def test_local_needs_a_ref_and_takes_no_stage(plan: Path, no_aws: None) -> None:
    assert invoke(str(plan)).exit_code == 2
    result = invoke(str(plan), "--ref", "HEAD", "--stage", "preprod")
    assert result.exit_code == 2
    assert "only with --target aws" in result.output


@dataclass
class Recorded:
    modules: list[str] = field(default_factory=list)
    hosts: list[Any] = field(default_factory=list)


def test_aws_releases_the_chosen_modules_in_plan_order_and_halts_at_a_failure(
    plan: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = Recorded()
    parts = relay.cli.AwsRelease(
        host=object(), store=object(), stats=object(), check=lambda m, u: KEPT
    )  # type: ignore[arg-type]
    made: list[tuple[str, str]] = []

    def aws_parts(stage: str, config_env: str, repo: Path) -> relay.cli.AwsRelease:
        made.append((stage, config_env))
        return parts

    def fake_deploy(module: str, source: Source, **kwargs: Any) -> DeployResult:
        recorded.modules.append(module)
        recorded.hosts.append(kwargs["host"])
        assert "traffic" not in kwargs
        if module == "navigate":
            raise AlreadyRunning("navigate already runs version 4")
        promoted = module != "gatepass"
        return DeployResult(module, "9", KEPT, Outcome(module, "r", promoted, "judged"))

    monkeypatch.setattr(relay.cli, "_aws_parts", aws_parts)
    monkeypatch.setattr(deploy_module, "deploy", fake_deploy)
    args = ("--target", "aws", "--stage", "preprod", "--config-env", "preprod")

    result = invoke(str(plan), *args, "--modules", "loads gatepass navigate")

    assert made == [("preprod", "preprod")]
    # plan order, not the order given; loads never runs after gatepass was not promoted
    assert recorded.modules == ["navigate", "gatepass"]
    assert recorded.hosts == [parts.host, parts.host]
    assert result.exit_code == 1
    assert "nothing to release" in result.output
    assert "gatepass@9: ROLLED BACK" in result.output


def test_aws_stops_before_any_stage_when_the_stage_cannot_be_read(
    plan: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def aws_parts(stage: str, config_env: str, repo: Path) -> Any:
        raise client_error("ResourceNotFoundException", "relay-preprod-identity", "GetSecretValue")

    def fake_deploy(module: str, source: Source, **kwargs: Any) -> DeployResult:
        raise AssertionError("no stage runs")

    monkeypatch.setattr(relay.cli, "_aws_parts", aws_parts)
    monkeypatch.setattr(deploy_module, "deploy", fake_deploy)

    result = invoke(str(plan), "--target", "aws", "--stage", "preprod", "--config-env", "preprod")

    assert result.exit_code == 2
    assert "relay-preprod-identity" in result.output


def test_a_stages_rollback_needs_the_stage_and_writes_to_its_control_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dataclasses import replace as changed

    from gateway.release.state import Release

    running = Release("loads", "loads-r9", "11", "12", "https://canary.example", weight=10.0)
    written: list[Release] = []

    class Store:
        def get(self, module: str) -> Release | None:
            return running if module == "loads" else None

        def load(self) -> dict[str, Release]:
            return {"loads": running}

        def put(self, release: Release, *, expected_revision: int | None) -> Release:
            written.append(release)
            return changed(release, revision=(expected_revision or 0) + 1)

    stages: list[str] = []
    monkeypatch.setattr(
        relay.cli, "_aws_release_stores", lambda stage: stages.append(stage) or (Store(), None)
    )
    rollback = ["rollback", "loads", "--reason", "pager", "--target", "aws"]

    refused = CliRunner().invoke(relay.cli.app, rollback)
    done = CliRunner().invoke(relay.cli.app, [*rollback, "--stage", "prod"])

    assert refused.exit_code == 2 and "--stage" in refused.output
    assert done.exit_code == 0, done.output
    assert stages == ["prod"]
    assert [(r.weight, r.phase, r.updated_by) for r in written] == [
        (0.0, "rolled-back", "relay rollback")
    ]
    assert "release loads-r9 rolled back to 0%" in done.output


def test_rolling_back_a_celled_module_stops_the_release_running_in_its_cell(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dataclasses import replace as changed

    from gateway.release.state import Release

    releases = {
        "loads/cell-1": Release("loads/cell-1", "r1", "11", "12", "https://c1", phase="promoted"),
        "loads/cell-2": Release("loads/cell-2", "r2", "11", "12", "https://c2", weight=10.0),
        "navigate": Release("navigate", "r3", "4", "5", "https://n", weight=10.0),
    }
    written: list[Release] = []

    class Store:
        def get(self, module: str) -> Release | None:
            return releases.get(module)

        def load(self) -> dict[str, Release]:
            return dict(releases)

        def put(self, release: Release, *, expected_revision: int | None) -> Release:
            written.append(release)
            return changed(release, revision=(expected_revision or 0) + 1)

    monkeypatch.setattr(relay.cli, "_aws_release_stores", lambda stage: (Store(), None))
    done = CliRunner().invoke(
        relay.cli.app,
        ["rollback", "loads", "--reason", "pager", "--target", "aws", "--stage", "prod"],
    )
    assert done.exit_code == 0, done.output
    # only the cell whose release runs; the promoted cell and other modules are untouched
    assert [(r.module, r.phase) for r in written] == [("loads/cell-2", "rolled-back")]
    assert "loads/cell-2: release r2 rolled back to 0%" in done.output
