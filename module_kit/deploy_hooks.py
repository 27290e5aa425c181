"""CodeDeploy lifecycle hooks of every HTTP function: smoke requests against the new version.

A function's deployment preference runs them (docs/deploy.md, Canary releases): the
gateway's both; an HTTP module's only the pre-traffic hook, on its ``canary`` alias (the
release controller judges the canary against live afterwards):

- :func:`pre_traffic`, before any caller reaches the new version: each smoke request of the
  function (``modules/<name>/smoke.py``, ``gateway/smoke.py``) is sent to the new version
  itself (``lambda:InvokeFunction`` with ``Qualifier`` = its version number) as a function
  URL event, and must be answered as the smoke list says: ``GET /healthz`` 200, no identity
  401, a context signed like the gateway signs it neither 401 nor 5xx. A release answering
  401 or 500 on every call (an empty identity public key, a missing table) fails here and
  never takes traffic.
- :func:`post_traffic`, once the alias serves the new version alone: the same requests
  through the alias (each must be run by the new version), then the new version's answers
  over the whole canary window (the ``Relay`` metrics of :mod:`module_kit.lambda_entry`
  and Lambda's ``Errors`` by ``ExecutedVersion``), judged in aggregate: a canary too
  quiet for the per-minute alarms is still judged on every call it served.

Either hook reports ``Succeeded`` or ``Failed`` to CodeDeploy
(``PutLifecycleEventHookExecutionStatus``); ``Failed`` rolls the alias back. Anything the
hook cannot do (a secret it cannot read, an invoke that fails) fails the deployment: a
release nobody could check is not promoted.

Which version to judge comes from the CodeDeploy event: its deployment's target
(``ListDeploymentTargets``, ``GetDeploymentTarget``) names the function, its alias and the
target version. The hook functions' environment (set in the templates):

- ``RELAY_HOOK_SMOKE``: the smoke list's module, e.g. ``modules.loads.smoke``;
- ``RELAY_HOOK_IDENTITY_SECRET``: the secret (ARN or name) holding the gateway's identity
  private key, to sign the smoke requests that carry an identity;
- ``RELAY_HOOK_TARGET_VERSION`` (optional): a version ARN to judge instead of the
  deployment's target (running a hook by hand).

The AWS clients are a seam (:class:`Clients`): tests pass fakes; deployed, they are made
on first use. Nothing here talks to AWS at import time.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared_contracts.identity import IdentityContext, Role

from . import logs
from .lambda_entry import (
    ANSWERS,
    ANSWERS_5XX,
    ANSWERS_401,
    NAMESPACE,
    SMOKE_MARKER,
    VERSION_DIMENSION,
)

log = logging.getLogger("relay.deploy_hooks")

SMOKE_VARIABLE = "RELAY_HOOK_SMOKE"
TARGET_VARIABLE = "RELAY_HOOK_TARGET_VERSION"
SECRET_VARIABLE = "RELAY_HOOK_IDENTITY_SECRET"  # noqa: S105 - a variable's name
ALIAS = "live"
_SMOKE_MODULE = re.compile(r"^(modules\.[a-z_]+|gateway)\.smoke$")
_VERSION_ARN = re.compile(r"^arn:[a-z-]+:lambda:[a-z0-9-]+:\d{12}:function:[A-Za-z0-9_-]+:\d+$")

SUCCEEDED = "Succeeded"
FAILED = "Failed"


# --- what a smoke list is made of -------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """The statuses a smoke request accepts, and how they are said in a report."""

    says: str
    accepts: Callable[[int], bool]


def status(code: int) -> Expect:
    """Exactly ``code``."""
    return Expect(str(code), lambda answered: answered == code)


SERVED = Expect("not 401 and not 5xx", lambda answered: answered != 401 and answered < 500)
"""The identity was accepted and the release did not fail: 2xx, or a 4xx of the rules
(404 for an unknown load is an answer of a working release)."""


@dataclass(frozen=True)
class Probe:
    """One smoke request: sent as a function URL event, ``identity`` signed if given."""

    name: str
    method: str
    path: str
    identity: IdentityContext | None
    expect: Expect
    query: str = ""


@dataclass(frozen=True)
class Limits:
    """Over the canary window, a version fails when a kind of bad answer is at least
    ``min_bad`` answers and more than its ratio of the calls. The canary alarms use the
    same ratios per minute (docs/deploy.md)."""

    max_5xx_ratio: float = 0.10
    max_401_ratio: float = 0.10
    max_error_ratio: float = 0.10
    min_bad: int = 3


SMOKE_DRIVER = IdentityContext(sub="relay-smoke", role=Role.DRIVER, driver_id="D-SMOKE")
"""The driver the smoke requests sign for: no loads, passes or messages of its own."""


@dataclass(frozen=True)
class Smoke:
    """A function's smoke list: ``SERVICE`` (the audience signed for, and the metrics'
    ``service``), ``PROBES`` and optionally ``LIMITS`` of its smoke module."""

    service: str
    probes: Sequence[Probe]
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def load(cls, module: str) -> Smoke:
        if not _SMOKE_MODULE.match(module):
            raise ValueError(f"{SMOKE_VARIABLE}={module!r} is not a smoke list module")
        found = importlib.import_module(module)
        return cls(found.SERVICE, tuple(found.PROBES), getattr(found, "LIMITS", Limits()))


# --- running the smoke requests ---------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The version being deployed: its function (name or ARN), number and alias."""

    function: str
    version: str
    alias: str = ALIAS

    @classmethod
    def from_version_arn(cls, arn: str) -> Target:
        if not _VERSION_ARN.match(arn):
            raise ValueError(f"{TARGET_VARIABLE}={arn!r} is not a function version's ARN")
        function, version = arn.rsplit(":", 1)
        return cls(function, version)

    @classmethod
    def from_deployment(cls, codedeploy: Any, deployment_id: str) -> Target:
        """The target of a Lambda deployment: one function alias moving to a version."""
        ids = codedeploy.list_deployment_targets(deploymentId=deployment_id)["targetIds"]
        if len(ids) != 1:
            raise ValueError(f"deployment {deployment_id} has {len(ids)} targets, not one")
        found = codedeploy.get_deployment_target(deploymentId=deployment_id, targetId=ids[0])
        info = found["deploymentTarget"]["lambdaTarget"]["lambdaFunctionInfo"]
        version = str(info["targetVersion"])
        if not version.isdigit():
            raise ValueError(f"deployment {deployment_id} targets {version!r}, not a version")
        return cls(info["functionName"], version, info.get("functionAlias") or ALIAS)

    @property
    def function_name(self) -> str:
        return self.function.rsplit(":function:", 1)[-1].split(":", 1)[0]


@dataclass(frozen=True)
class ProbeResult:
    probe: Probe
    status: int | None = None
    executed_version: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and self.status is not None
            and self.probe.expect.accepts(self.status)
        )

    def describe(self) -> str:
        probe = self.probe
        request = f"{probe.method} {probe.path}{'?' + probe.query if probe.query else ''}"
        got = self.error or f"answered {self.status}"
        return f"{probe.name} ({request}): expected {probe.expect.says}, {got}"


def url_event(probe: Probe, identity_header: str | None) -> dict[str, Any]:
    """The function URL (payload 2.0) event of ``probe``, marked as a smoke request."""
    request_id = f"smoke-{uuid.uuid4().hex[:16]}"
    now = time.time()
    headers = {
        "accept": "application/json",
        "host": "smoke.lambda-url.invalid",
        "user-agent": "relay-deploy-hook",
        "x-request-id": request_id,
    }
    if identity_header is not None:
        headers["x-relay-identity"] = identity_header
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": probe.path,
        "rawQueryString": probe.query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "smoke",
            "domainName": "smoke.lambda-url.invalid",
            "domainPrefix": "smoke",
            "http": {
                "method": probe.method,
                "path": probe.path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "relay-deploy-hook",
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": datetime.fromtimestamp(now, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": False,
        SMOKE_MARKER: True,
    }


def invoke(
    lambda_client: Any, function: str, qualifier: str, probe: Probe, identity_header: str | None
) -> ProbeResult:
    """Send ``probe`` to ``function:qualifier`` and read the status it answered."""
    payload = json.dumps(url_event(probe, identity_header)).encode()
    try:
        response = lambda_client.invoke(
            FunctionName=function,
            Qualifier=qualifier,
            InvocationType="RequestResponse",
            Payload=payload,
        )
        body = response["Payload"].read()
    except Exception as exc:  # a failed invoke fails the probe, and so the deployment
        return ProbeResult(probe, error=f"invoke failed: {type(exc).__name__}: {exc}")
    executed = response.get("ExecutedVersion")
    if response.get("FunctionError"):
        text = body.decode(errors="replace")[:300]
        return ProbeResult(probe, executed_version=executed, error=f"function error: {text}")
    try:
        answered = int(json.loads(body)["statusCode"])
    except (ValueError, KeyError, TypeError):
        text = body.decode(errors="replace")[:300]
        return ProbeResult(probe, executed_version=executed, error=f"not an HTTP answer: {text}")
    return ProbeResult(probe, status=answered, executed_version=executed)


def run_smoke(
    smoke: Smoke,
    lambda_client: Any,
    function: str,
    qualifier: str,
    sign: Callable[[IdentityContext, str], str] | None,
) -> list[ProbeResult]:
    """Every probe of ``smoke`` against ``function:qualifier``, in order."""
    results = []
    for probe in smoke.probes:
        header = None
        if probe.identity is not None:
            if sign is None:
                results.append(
                    ProbeResult(probe, error=f"no identity signing key ({SECRET_VARIABLE})")
                )
                continue
            header = sign(probe.identity, smoke.service)
        results.append(invoke(lambda_client, function, qualifier, probe, header))
    return results


# --- the new version's answers over the canary window -----------------------------------


@dataclass(frozen=True)
class Totals:
    answers: float = 0
    answers_5xx: float = 0
    answers_401: float = 0
    invocations: float = 0
    errors: float = 0


def window_totals(
    cloudwatch: Any, smoke: Smoke, target: Target, start: datetime, end: datetime
) -> Totals:
    """The new version's answers and invocations from ``start`` to ``end``, summed."""
    answers_dims = [
        {"Name": "service", "Value": smoke.service},
        {"Name": VERSION_DIMENSION, "Value": target.version},
    ]
    lambda_dims = [
        {"Name": "FunctionName", "Value": target.function_name},
        {"Name": "Resource", "Value": f"{target.function_name}:{target.alias}"},
        {"Name": "ExecutedVersion", "Value": target.version},
    ]
    series = {
        "answers": (NAMESPACE, ANSWERS, answers_dims),
        "answers_5xx": (NAMESPACE, ANSWERS_5XX, answers_dims),
        "answers_401": (NAMESPACE, ANSWERS_401, answers_dims),
        "invocations": ("AWS/Lambda", "Invocations", lambda_dims),
        "errors": ("AWS/Lambda", "Errors", lambda_dims),
    }
    queries = [
        {
            "Id": key,
            "MetricStat": {
                "Metric": {"Namespace": ns, "MetricName": name, "Dimensions": dims},
                "Period": 60,
                "Stat": "Sum",
            },
            "ReturnData": True,
        }
        for key, (ns, name, dims) in series.items()
    ]
    sums = dict.fromkeys(series, 0.0)
    request: dict[str, Any] = {"MetricDataQueries": queries, "StartTime": start, "EndTime": end}
    while True:
        page = cloudwatch.get_metric_data(**request)
        for result in page["MetricDataResults"]:
            sums[result["Id"]] += sum(result.get("Values", []))
        if not page.get("NextToken"):
            break
        request["NextToken"] = page["NextToken"]
    return Totals(**sums)


def judge(totals: Totals, limits: Limits) -> list[str]:
    """Why the version's window fails (empty: it passes)."""
    reasons = []
    checks = [
        ("5xx answers", totals.answers_5xx, totals.answers, limits.max_5xx_ratio),
        ("401 answers", totals.answers_401, totals.answers, limits.max_401_ratio),
        ("Lambda errors", totals.errors, totals.invocations, limits.max_error_ratio),
    ]
    for what, bad, calls, ratio in checks:
        if bad >= limits.min_bad and calls > 0 and bad / calls > ratio:
            reasons.append(f"{what}: {bad:g} of {calls:g} calls (over {ratio:.0%})")
    return reasons


# --- the hooks --------------------------------------------------------------------------


@dataclass
class Clients:
    """The AWS clients a hook uses; made on first use unless given (tests give fakes)."""

    lambda_: Any = None
    codedeploy: Any = None
    secrets: Any = None
    cloudwatch: Any = None

    def get(self, name: str) -> Any:
        attr = "lambda_" if name == "lambda" else name
        if getattr(self, attr) is None:
            from . import aws

            # A new version's first call is a cold start: wait for it like a caller would.
            overrides: dict[str, Any] = {"read_timeout": 30} if name == "lambda" else {}
            service = "secretsmanager" if name == "secrets" else name
            setattr(self, attr, aws.client(service, **overrides))
        return getattr(self, attr)


def _signer(
    clients: Clients, environ: Mapping[str, str]
) -> Callable[[IdentityContext, str], str] | None:
    """Signs like the gateway, with its private key read from the secret (None: no secret)."""
    secret = environ.get(SECRET_VARIABLE, "")
    if not secret:
        return None
    from .signed_context import IdentitySigner

    pem = clients.get("secrets").get_secret_value(SecretId=secret)["SecretString"]
    signer = IdentitySigner(pem)
    return lambda identity, audience: signer.sign(identity, audience=audience)


def _report(clients: Clients, event: Mapping[str, Any], outcome: str) -> dict[str, str]:
    clients.get("codedeploy").put_lifecycle_event_hook_execution_status(
        deploymentId=event["DeploymentId"],
        lifecycleEventHookExecutionId=event["LifecycleEventHookExecutionId"],
        status=outcome,
    )
    return {"status": outcome}


def _conclude(
    hook: str, clients: Clients, event: Mapping[str, Any], failures: list[str]
) -> dict[str, str]:
    outcome = FAILED if failures else SUCCEEDED
    if failures:
        log.error(
            "%s hook failed the deployment %s: %s",
            hook,
            event.get("DeploymentId"),
            "; ".join(failures),
            extra=logs.fields(outcome="failed"),
        )
    else:
        log.info(
            "%s hook passed the deployment %s",
            hook,
            event.get("DeploymentId"),
            extra=logs.fields(outcome="succeeded"),
        )
    return _report(clients, event, outcome)


def _target(event: Mapping[str, Any], clients: Clients, environ: Mapping[str, str]) -> Target:
    if environ.get(TARGET_VARIABLE):
        return Target.from_version_arn(environ[TARGET_VARIABLE])
    return Target.from_deployment(clients.get("codedeploy"), event["DeploymentId"])


def run_pre_traffic(
    event: Mapping[str, Any], clients: Clients, environ: Mapping[str, str]
) -> dict[str, str]:
    """Smoke the new version before it takes traffic; report the outcome to CodeDeploy."""
    try:
        smoke = Smoke.load(environ.get(SMOKE_VARIABLE, ""))
        target = _target(event, clients, environ)
        sign = _signer(clients, environ)
        results = run_smoke(smoke, clients.get("lambda"), target.function, target.version, sign)
        failures = [r.describe() for r in results if not r.ok]
        for result in results:
            outcome = "ok" if result.ok else "failed"
            log.info("smoke %s", result.describe(), extra=logs.fields(outcome=outcome))
    except Exception as exc:  # the hook could not check the release: it is not promoted
        failures = [f"the pre-traffic hook could not run: {type(exc).__name__}: {exc}"]
    return _conclude("pre-traffic", clients, event, failures)


def run_post_traffic(
    event: Mapping[str, Any],
    clients: Clients,
    environ: Mapping[str, str],
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[str, str]:
    """Smoke the alias (now the new version) and judge the new version's canary window."""
    try:
        smoke = Smoke.load(environ.get(SMOKE_VARIABLE, ""))
        target = _target(event, clients, environ)
        alias = target.alias
        sign = _signer(clients, environ)
        results = run_smoke(smoke, clients.get("lambda"), target.function, alias, sign)
        failures = [r.describe() for r in results if not r.ok]
        failures += [
            f"{r.probe.name}: alias {alias} ran version {r.executed_version}, not {target.version}"
            for r in results
            if r.executed_version is not None and r.executed_version != target.version
        ]
        deployment = clients.get("codedeploy").get_deployment(deploymentId=event["DeploymentId"])
        start = deployment["deploymentInfo"]["createTime"]
        end = now()
        totals = window_totals(
            clients.get("cloudwatch"),
            smoke,
            target,
            start,
            max(end, start + timedelta(minutes=1)),
        )
        log.info("canary window of version %s: %s", target.version, totals)
        failures += judge(totals, smoke.limits)
    except Exception as exc:
        failures = [f"the post-traffic hook could not run: {type(exc).__name__}: {exc}"]
    return _conclude("post-traffic", clients, event, failures)


_logging_ready = False


def _deployed() -> Clients:
    global _logging_ready  # once per Lambda instance
    if not _logging_ready:
        logs.setup_logging("deploy-hooks")
        _logging_ready = True
    return Clients()


def pre_traffic(event: dict[str, Any], context: Any) -> dict[str, str]:
    """Lambda entry point of a function's ``PreTraffic`` hook."""
    return run_pre_traffic(event, _deployed(), os.environ)


def post_traffic(event: dict[str, Any], context: Any) -> dict[str, str]:
    """Lambda entry point of a function's ``PostTraffic`` hook."""
    return run_post_traffic(event, _deployed(), os.environ)
