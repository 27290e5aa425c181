"""The AWS side of ``relay release --target aws``: a module's two versions are the two
aliases of its function in its own stack ``relay-<stage>-<module>`` (docs/deploy.md,
Canary releases).

**Who deploys.** The pipeline hands the plan's modules to ``relay release`` without
deploying them (.github/workflows/release-stage.yml): :meth:`AwsAliasHost.start` runs
``sam build`` and ``sam deploy`` of the module's template itself, with ``LiveVersion`` =
the version ``live`` serves now, so the deploy publishes a version to ``canary`` (after
its pre-traffic hook) and leaves ``live`` where it is. One deploy per module, in the
plan's order, each just before its release: a module is never deployed while an earlier
module's release is still running.

**Versions.** Every label is a Lambda version number read from the module's SSM
parameters: the stable one from ``/relay/<stage>/<m>/live-version`` (a stack made before
canary releases has none: the ``live`` alias's version, from Lambda), the canary one from
``canary-version`` once the deploy is done. The URLs: ``url`` (live) and ``canary-url``.

**Promotion** is a CloudFormation update of the module's stack (a top-level stack: stacks
never nest, docs/deploy.md, Stacks and parameters): the previous template, ``LiveVersion``
= the canary's version and every other parameter its previous value, so nothing is
rebuilt or published and CloudFormation moves ``live`` and the stack's own
``live-version`` parameter (no other writer: the stack owns it). It waits for
``UPDATE_COMPLETE`` (bounded) and checks the parameter says the new version.

**Cells.** A celled module's cell is its own stack, ``relay-<stage>-loads-cell-1``, made
from the module's template with ``Cell=cell-1`` and publishing under
``/relay/<stage>/loads/cell-1/``; the host takes the cell's unit name (``loads/cell-1``)
wherever it takes a module's (:mod:`relay.release.cells` releases the cells one by one).
:meth:`AwsAliasHost.health_problems` is a promoted cell's health gate on the AWS side:
its ``live-version`` names the promoted version, and none of its stack's canary alarms is
in ALARM.

**Retirement** does nothing: the ``canary`` alias keeps the rolled-back version, which no
gateway calls once the release's weight is 0, until the next deploy replaces it.

Every AWS client is a constructor argument or made on first use (never at import), with
connect and read deadlines and bounded retries.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

import httpx

from .exceptions import ReleaseError

# The controller's AWS calls: a control-plane call may take seconds, never minutes.
CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 30.0
MAX_ATTEMPTS = 4
# sam build and sam deploy of one module: the deploy waits for the canary alias's
# CodeDeploy deployment and its pre-traffic hook (minutes).
SAM_TIMEOUT_SECONDS = 45 * 60
# Waiting for a promotion's stack update: every 10 s, at most 20 minutes.
UPDATE_POLL_SECONDS = 10
UPDATE_MAX_ATTEMPTS = 120
CAPABILITIES = ("CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND")
LIVE_VERSION = "LiveVersion"


def client_config() -> Any:
    """The botocore ``Config`` of the controller's clients: the module kit's settings with
    control-plane deadlines."""
    from module_kit.aws import client_config as kit_config

    return kit_config(
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
    )


def make_client(service: str, region: str) -> Any:
    import boto3

    return boto3.client(service, region_name=region, config=client_config())


def _code(exc: Exception) -> str:
    return str((getattr(exc, "response", None) or {}).get("Error", {}).get("Code", ""))


class AwsAliasHost:
    """The :class:`~relay.release.deploy.VersionHost` of one stage in AWS (module
    docstring). ``run`` runs a command (``subprocess.run``'s signature), ``repo`` is the
    checkout the templates are built from."""

    def __init__(
        self,
        stage: str,
        *,
        region: str,
        config_env: str,
        repo: Path,
        ssm: Any = None,
        cloudformation: Any = None,
        lambda_client: Any = None,
        cloudwatch: Any = None,
        run: Callable[..., Any] = subprocess.run,
        say: Callable[[str], None] | None = None,
        update_poll_seconds: int = UPDATE_POLL_SECONDS,
        update_max_attempts: int = UPDATE_MAX_ATTEMPTS,
    ) -> None:
        self.stage = stage
        self.region = region
        self.config_env = config_env
        self.repo = repo
        self._clients: dict[str, Any] = {
            "ssm": ssm,
            "cloudformation": cloudformation,
            "lambda": lambda_client,
            "cloudwatch": cloudwatch,
        }
        self.run = run
        self.say = say or (lambda _: None)
        self.update_poll_seconds = update_poll_seconds
        self.update_max_attempts = update_max_attempts

    def _client(self, service: str) -> Any:
        if self._clients[service] is None:
            self._clients[service] = make_client(service, self.region)
        return self._clients[service]

    # --- names ---------------------------------------------------------------------------

    def stack_name(self, module: str) -> str:
        """``relay-<stage>-<module>``, a cell's ``relay-<stage>-loads-cell-1``."""
        return f"relay-{self.stage}-{module.replace('/', '-')}"

    def parameter_name(self, module: str, name: str) -> str:
        return f"/relay/{self.stage}/{module}/{name}"

    def _parameter(self, module: str, name: str) -> str:
        path = self.parameter_name(module, name)
        try:
            answer = self._client("ssm").get_parameter(Name=path)
        except Exception as exc:
            if _code(exc) == "ParameterNotFound":
                raise ReleaseError(
                    f"{path} does not exist: is {self.stack_name(module)} deployed "
                    f"in {self.region}?"
                ) from None
            raise
        return str(answer["Parameter"]["Value"])

    # --- VersionHost -----------------------------------------------------------------------

    def url(self, module: str) -> str:
        """The live alias's function URL."""
        return self._parameter(module, "url")

    def stable_version(self, module: str) -> str:
        """The version ``live`` serves: ``live-version``, or on a stack made before canary
        releases (no such parameter) the ``live`` alias's version."""
        try:
            return self._parameter(module, "live-version")
        except ReleaseError:
            function = self._parameter(module, "function-arn")
        alias = self._client("lambda").get_alias(FunctionName=function, Name="live")
        return str(alias["FunctionVersion"])

    def canary_version(self, module: str) -> str:
        """The version ``canary`` serves (the last deploy's)."""
        return self._parameter(module, "canary-version")

    def start(self, module: str, source: Path, version: str) -> str:
        """Build and deploy the module's stack from ``source`` (the checkout) with
        ``LiveVersion`` = the live version: a new version on ``canary``, smoked by its
        pre-traffic hook; ``live`` stays. The canary alias's URL."""
        live = self.stable_version(module)
        name, _, cell = module.partition("/")
        template = f"modules/{name}/template.yaml"
        if not (source / template).is_file():
            raise ReleaseError(f"{source / template} does not exist")
        self._sam(source, ["build", "--template-file", template, "--config-env", self.config_env])
        self._sam(
            source,
            [
                "deploy",
                "--config-env",
                self.config_env,
                "--stack-name",
                self.stack_name(module),
                "--region",
                self.region,
                "--no-confirm-changeset",
                "--no-fail-on-empty-changeset",
                "--parameter-overrides",
                f"Stage={self.stage}",
                *([f"Cell={cell}"] if cell else []),
                f"{LIVE_VERSION}={live}",
            ],
        )
        return self._parameter(module, "canary-url")

    def _sam(self, cwd: Path, args: Sequence[str]) -> None:
        command = ["sam", *args]
        self.say(" ".join(command))
        try:
            done = self.run(command, cwd=cwd, check=False, timeout=SAM_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            raise ReleaseError(f"sam {args[0]} took over {SAM_TIMEOUT_SECONDS} s") from None
        if done.returncode != 0:
            raise ReleaseError(f"sam {args[0]} failed (exit {done.returncode})")

    def promote(self, module: str, version: str) -> None:
        """Point ``live`` at ``version``: an update of the module's stack with the previous
        template, ``LiveVersion`` = ``version`` and every other parameter as it was."""
        stack = self.stack_name(module)
        cloudformation = self._client("cloudformation")
        described = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
        parameters = [
            {"ParameterKey": LIVE_VERSION, "ParameterValue": version}
            if p["ParameterKey"] == LIVE_VERSION
            else {"ParameterKey": p["ParameterKey"], "UsePreviousValue": True}
            for p in described.get("Parameters", [])
        ]
        if not any(p["ParameterKey"] == LIVE_VERSION for p in parameters):
            raise ReleaseError(f"{stack} has no {LIVE_VERSION} parameter: deploy it first")
        self.say(f"updating {stack}: {LIVE_VERSION}={version}")
        try:
            cloudformation.update_stack(
                StackName=stack,
                UsePreviousTemplate=True,
                Parameters=parameters,
                Capabilities=list(CAPABILITIES),
            )
        except Exception as exc:
            # Live already serves it (a promotion run again): nothing to update.
            if _code(exc) != "ValidationError" or "No updates" not in str(exc):
                raise
        try:
            cloudformation.get_waiter("stack_update_complete").wait(
                StackName=stack,
                WaiterConfig={
                    "Delay": self.update_poll_seconds,
                    "MaxAttempts": self.update_max_attempts,
                },
            )
        except Exception as exc:  # botocore's WaiterError: failed, rolled back or too slow
            raise ReleaseError(f"{stack} did not promote version {version}: {exc}") from exc
        live = self._parameter(module, "live-version")
        if live != version:
            raise ReleaseError(f"{stack} updated but live-version says {live}, not {version}")

    def health_problems(self, module: str, version: str) -> list[str]:
        """What is wrong with ``module`` (a promoted cell) serving ``version``: its
        ``live-version`` names another, or its stack's canary alarms (``relay-<stage>-
        loads-cell-1-...Canary...``, judging the version now serving every call) are in
        ALARM. None: healthy."""
        problems: list[str] = []
        live = self._parameter(module, "live-version")
        if live != version:
            problems.append(f"{self.stack_name(module)} live is version {live}, not {version}")
        prefix = self.stack_name(module) + "-"
        kwargs: dict[str, Any] = {"AlarmNamePrefix": prefix, "StateValue": "ALARM"}
        while True:
            page = self._client("cloudwatch").describe_alarms(**kwargs)
            problems.extend(
                f"alarm {alarm['AlarmName']} in ALARM"
                for alarm in page.get("MetricAlarms", [])
                if "Canary" in alarm["AlarmName"]
            )
            if not page.get("NextToken"):
                return problems
            kwargs["NextToken"] = page["NextToken"]

    def retire(self, module: str, version: str) -> None:
        """Nothing to stop in AWS: ``canary`` keeps ``version``, which no gateway calls once
        the release's weight is 0, until the next deploy replaces it."""


# --- the contract check against an IAM-authenticated function URL --------------------------


class SignedTransport(httpx.BaseTransport):
    """An httpx transport that signs every request with SigV4 (``lambda``), as the gateway
    signs its calls to the modules' function URLs."""

    def __init__(
        self,
        region: str,
        *,
        credentials: Any = None,
        inner: httpx.BaseTransport | None = None,
    ) -> None:
        from gateway.security.sigv4 import SigV4Auth

        self.auth = SigV4Auth(region, "lambda", credentials)
        self.inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        flow: Generator[httpx.Request, httpx.Response, None] = self.auth.sync_auth_flow(request)
        signed = next(flow)
        return self.inner.handle_request(signed)

    def close(self) -> None:
        self.inner.close()


def identity_key_pem(stage: str, *, secrets: Any) -> str:
    """The gateway's identity private key (PEM) from the secret ``relay-<stage>-identity``,
    the one the modules' pre-traffic hooks sign with."""
    answer = secrets.get_secret_value(SecretId=f"relay-{stage}-identity")
    return str(answer["SecretString"])


def region_from_environment() -> str:
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise ReleaseError("set AWS_REGION (the stage's region)")
    return region


def control_table_name(stage: str, *, ssm: Any) -> str:
    """The control table the gateways read releases from (the gateway stack publishes its
    name at ``/relay/<stage>/gateway/control-table-name``)."""
    path = f"/relay/{stage}/gateway/control-table-name"
    try:
        return str(ssm.get_parameter(Name=path)["Parameter"]["Value"])
    except Exception as exc:
        if _code(exc) == "ParameterNotFound":
            message = f"{path} does not exist: is relay-{stage}-gateway deployed?"
            raise ReleaseError(message) from None
        raise
