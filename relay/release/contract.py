"""Contract smoke check: a module's candidate version is called before it gets any traffic.

:func:`check_contract` calls the candidate at ``base_url`` with schemathesis-generated
requests for each operation of the module's *published* contract and reports every answer
that breaks it. A version with problems gets no traffic.

The contract is the module's own OpenAPI document as the current tree describes it:
:func:`relay.openapi.module_document` builds ``create_app(...)``'s document with
placeholder services (no settings, environment or AWS), the same function the gateway's
published document (``gateway/ops/openapi.json``) is built from, and the drift check
(``tests/unit/test_openapi.py``) keeps that file equal to it. The module's document rather
than the gateway's: it describes exactly the requests the module receives and the answers
it gives, while the gateway's adds what only the gateway does (bearer auth, ``If-None-Match``,
429, 503), which schemathesis would otherwise generate and accept. Problem bodies are
checked against ``Problem``, as in the published document (FastAPI files their schema
under ``application/json``; the modules answer ``application/problem+json``).

What is called, and why that is enough:

- Reads (GET): up to ``max_examples`` cases per operation, the schema's explicit examples
  first, then generated valid inputs (schemathesis positive mode, hypothesis with a fixed
  seed: the same requests every run), as the smoke driver (``D-SMOKE``), whose ids stay
  clear of real drivers' data. Its lists, the 404 problems for generated ids and every
  answer's status are checked whatever it holds; the shape of a list's items is checked
  where the smoke driver has data of its own (a load assigned to it, as the tests do).
- Writes (POST): never executed. Each write with a JSON body is probed once with a body
  that is not JSON: the module must route it (a 404 ``no-route`` or a 405 means the
  operation was renamed or removed) and refuse it with its documented 400 problem, before
  any handler or idempotency record runs, so nothing is written. Writes without a body
  (e.g. revoking a pass) are not called: they cannot be probed without acting.
- Every request carries an identity context signed for the module's audience, with a role
  the route table admits for its path (driver first, then dispatch, gate, ops).

So a version that removed or renamed an operation, dropped a required field or changed a
type in a read's answer or in a problem, answers a status the contract does not list,
answers 5xx, or refuses the gateway's signed identity (401/403 to a role the route admits)
fails. What it cannot see: a write's success body (only the read of the same model is
checked) and behaviour (which the canary analysis judges on live traffic).

Checks, by name in :attr:`ContractProblem.check`: schemathesis' ``not_a_server_error``,
``status_code_conformance`` and ``response_schema_conformance``, and three of ours:
``operation_exists`` (404 ``no-route`` or 405), ``identity_accepted`` (401/403) and
``reachable`` (no answer within ``timeout_seconds``, or no connection).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx
import schemathesis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Ok

from module_kit.signed_context import IdentitySigner
from relay.openapi import load_routes, module_document
from shared_contracts import headers
from shared_contracts.identity import IdentityContext, Role

DEFAULT_DRIVER = "D-SMOKE"
DEFAULT_MAX_EXAMPLES = 5
DEFAULT_TIMEOUT_SECONDS = 5.0
SEED = 20261204
SMOKE_SUBJECT = "relay-smoke"
# The role signed for an operation: the first of these its route admits.
ROLE_PREFERENCE = (Role.DRIVER, Role.DISPATCH, Role.GATE, Role.OPS)
READ_METHODS = frozenset({"GET", "HEAD"})
NOT_JSON = b"{"
NO_ROUTE_TYPE = "urn:relay:problem:no-route"
CHECKS = (not_a_server_error, status_code_conformance, response_schema_conformance)
_DETAIL_CHARS = 300


@dataclass(frozen=True)
class ContractProblem:
    """One failed check of one call."""

    operation: str  # "GET /loads"
    check: str  # "response_schema_conformance", "operation_exists", ...
    detail: str


@dataclass(frozen=True)
class ContractReport:
    """What :func:`check_contract` found: the calls made and every failed check."""

    module: str
    calls: int
    problems: tuple[ContractProblem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def published_contract(module: str) -> dict[str, Any]:
    """``module``'s OpenAPI document, built from the current tree (module docstring)."""
    document = module_document(module)
    for item in document.get("paths", {}).values():
        for operation in item.values():
            if isinstance(operation, dict):
                for response in operation.get("responses", {}).values():
                    _problem_schema_under_its_media_type(response)
    return document


def check_contract(
    module: str,
    base_url: str,
    *,
    identity_key: Ed25519PrivateKey,
    driver: str = DEFAULT_DRIVER,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
    transport: httpx.BaseTransport | None = None,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
) -> ContractReport:
    """Call the candidate version of ``module`` at ``base_url`` with its contract's smoke
    requests, signed with the gateway's ``identity_key``; at most ``max_examples`` calls
    per read and one per write (module docstring). ValueError if ``module`` publishes no
    operation or ``max_examples`` is below 1."""
    if max_examples < 1:
        raise ValueError(f"max_examples must be at least 1, not {max_examples}")
    schema = schemathesis.openapi.from_dict(published_contract(module))
    operations = []
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):
            raise ValueError(f"{module}'s published contract is not valid: {result.err()}")
        operations.append(result.ok())
    if not operations:
        raise ValueError(f"{module} publishes no operations")
    sign = _signer(identity_key, module, driver)
    routes = load_routes()
    calls = 0
    problems: list[ContractProblem] = []
    with httpx.Client(
        base_url=base_url, transport=transport, timeout=timeout_seconds, follow_redirects=False
    ) as client:
        for operation in sorted(operations, key=lambda op: op.label):
            route = routes.match(operation.path)
            identity = {headers.IDENTITY: sign(_role(route.roles if route else frozenset()))}
            if operation.method.upper() in READ_METHODS:
                cases = _cases(operation, max_examples)
                sent = [(case, _read(client, case, identity)) for case in cases]
            elif operation.body:
                cases = _cases(operation, 1)
                sent = [(case, _probe(client, case, identity)) for case in cases]
            else:
                continue  # a write without a body cannot be probed without acting
            for case, answer in sent:
                calls += 1
                problems.extend(_judge(operation.label, case, answer))
    return ContractReport(module=module, calls=calls, problems=tuple(problems))


# --- requests ----------------------------------------------------------------------------


def _signer(key: Ed25519PrivateKey, module: str, driver: str) -> Callable[[Role], str]:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    signer = IdentitySigner(pem)

    def sign(role: Role) -> str:
        driver_id = driver if role is Role.DRIVER else None
        return signer.sign(
            IdentityContext(sub=SMOKE_SUBJECT, role=role, driver_id=driver_id), module
        )

    return sign


def _role(admitted: Iterable[Role]) -> Role:
    """The role to sign for a path: the first of :data:`ROLE_PREFERENCE` its route admits
    (a driver where the route admits anyone or is not routed by the gateway)."""
    allowed = set(admitted)
    return next((role for role in ROLE_PREFERENCE if role in allowed), Role.DRIVER)


def _cases(operation: Any, count: int) -> list[Any]:
    """Up to ``count`` cases: the schema's explicit examples first, then generated valid
    ones; the same ones every run (a fixed seed, no example database)."""
    found: list[Any] = []
    examples = operation.get_strategies_from_examples()
    if examples:
        found.extend(_draw(st.one_of(examples), count))
    if len(found) < count:
        found.extend(_draw(operation.as_strategy(), count - len(found)))
    return found[:count]


def _draw(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    drawn: list[Any] = []

    @seed(SEED)
    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(case: Any) -> None:
        if len(drawn) < count:
            drawn.append(case)

    collect()
    return drawn


def _read(client: httpx.Client, case: Any, identity: dict[str, str]) -> httpx.Response | str:
    kwargs = case.as_transport_kwargs(base_url=str(client.base_url).rstrip("/"))
    sent_headers = {
        name: value
        for name, value in kwargs.get("headers", {}).items()
        if name.lower() != headers.IDENTITY
    }
    return _send(
        client,
        kwargs["method"],
        kwargs["url"],
        headers={**sent_headers, **identity},
        params=kwargs.get("params") or None,
    )


def _probe(client: httpx.Client, case: Any, identity: dict[str, str]) -> httpx.Response | str:
    """A write with a body that is not JSON: routed, refused, never executed."""
    return _send(
        client,
        case.method,
        case.formatted_path,
        headers={"content-type": "application/json", **identity},
        content=NOT_JSON,
    )


def _send(client: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response | str:
    """The answer, read whole, or why there is none."""
    try:
        return client.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"


# --- judging -----------------------------------------------------------------------------


def _judge(label: str, case: Any, answer: httpx.Response | str) -> list[ContractProblem]:
    if isinstance(answer, str):
        return [ContractProblem(label, "reachable", f"no answer: {answer}")]
    where = (
        f"{answer.request.method} {answer.request.url.raw_path.decode()} -> {answer.status_code}"
    )
    found = []
    if answer.status_code == 405 or (answer.status_code == 404 and _no_route(answer)):
        found.append(
            ContractProblem(label, "operation_exists", f"{where}: the version has no such route")
        )
    elif answer.status_code in (401, 403):
        found.append(
            ContractProblem(
                label,
                "identity_accepted",
                f"{where}: refused an identity signed for a role the route admits",
            )
        )
    for check in CHECKS:
        for failure in _failures(case, answer, check):
            detail = f"{where}: {failure.title}: {failure.message}"
            found.append(ContractProblem(label, check.__name__, _short(detail)))
    return found


def _failures(case: Any, answer: httpx.Response, check: Any) -> list[Failure]:
    try:
        case.validate_response(answer, checks=[check])
    except FailureGroup as group:
        return [e for e in group.exceptions if isinstance(e, Failure)]
    except Failure as failure:
        return [failure]
    return []


def _no_route(answer: httpx.Response) -> bool:
    """A 404 the module's router gave (or one that is not a Relay problem at all)."""
    try:
        body = answer.json()
    except ValueError:
        return True
    return not isinstance(body, dict) or body.get("type", NO_ROUTE_TYPE) == NO_ROUTE_TYPE


def _problem_schema_under_its_media_type(response: dict[str, Any]) -> None:
    content = response.get("content", {})
    problem = headers.PROBLEM_MEDIA_TYPE
    if problem in content and "schema" not in content[problem] and "application/json" in content:
        content[problem] = content.pop("application/json")


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 1] + "…"
