"""Schemathesis over every operation of the published mobile API, through the real stack.

Every operation is called with generated (valid and invalid) input and a valid token of a
role the route admits. No answer may be a 5xx, and every answer must match the published
document (status codes, content types, bodies). A larger run:

    make test-fuzz FUZZ_EXAMPLES=200

Not part of `make test` (its own target, which CI runs after it); 12 cases per operation
when run by hand without RELAY_FUZZ_EXAMPLES.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    ignored_auth,
    missing_required_header,
    positive_data_acceptance,
    unsupported_method,
)

from relay.cloud import ROOT
from relay.stack import LocalStack, free_port
from shared_contracts.identity import Role
from tests.integration.conftest import Api

EXAMPLES = int(os.environ.get("RELAY_FUZZ_EXAMPLES", "12"))
CURRENT_APP = "5.2.0"
schema = schemathesis.openapi.from_path(ROOT / "gateway" / "ops" / "openapi.json")
ROUTES = sorted(
    tomllib.loads((ROOT / "gateway" / "routing" / "routes.toml").read_text())["routes"],
    key=lambda r: len(r["prefix"]),
    reverse=True,
)


@pytest.fixture(scope="module")
def fuzz_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    overrides = {
        f"RELAY_RATE_LIMIT_{r.upper()}": "10000/10000"
        for r in ("driver", "gate", "dispatch", "ops", "anonymous")
    }
    with LocalStack(
        gateway_port=free_port(),
        state_dir=tmp_path_factory.mktemp("fuzz"),
        gateway_overrides=overrides,
    ) as stack:
        api = Api(stack)
        yield api
        api.http.close()


# Off, and why:
# - positive_data_acceptance: cross-field rules (a window ends after it starts, the first
#   stop is a pickup) cannot be said in JSON Schema; schema-valid input may still get 422.
# - unsupported_method, allow_header_conformance: methods a path does not declare are
#   answered by the module (405 + its Allow) or, for OPTIONS, by the gateway, which does not
#   know each module's methods.
# - ignored_auth, missing_required_header: their probes cannot take out a token set per
#   case; authentication is proven case by case in tests/unit/gateway/test_security_matrix.py.
EXCLUDED = [
    positive_data_acceptance,
    unsupported_method,
    allow_header_conformance,
    ignored_auth,
    missing_required_header,
]


# Routes the gateway answers itself (not in the route table), and who may call them.
GATEWAY_ROUTES = [{"prefix": "/deferred", "roles": ["driver"]}]


def role_for(path: str) -> Role | None:
    route = next(
        r
        for r in ROUTES + GATEWAY_ROUTES
        if path == r["prefix"] or path.startswith(r["prefix"] + "/")
    )
    if route.get("auth") == "none":
        return None
    return Role(route["roles"][0])


@schema.parametrize()
@settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
def test_every_operation_conforms_and_never_fails(case, fuzz_api):
    role = role_for(case.path)
    # The current app: which versions are served is the gateway's own rule (426 before any
    # module is called), tested in tests/unit/gateway/test_appversion.py and on the stack.
    case.headers = {**(case.headers or {}), "Relay-App-Version": CURRENT_APP}
    if role is not None:  # in the case itself, so schemathesis' auth probes can remove it
        token = fuzz_api.auth(role, "D-1001" if role is Role.DRIVER else None)["authorization"]
        case.headers = {**(case.headers or {}), "Authorization": token}
    case.call_and_validate(base_url=fuzz_api.stack.gateway_url, excluded_checks=EXCLUDED)
