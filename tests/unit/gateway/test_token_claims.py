"""Validly signed tokens whose claims have the wrong shape: 401, never 500, nothing forwarded.

Every case is signed by the real (dev) issuer with the right key, issuer and audience
except for the one claim it changes, so only the claim's shape can refuse it.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from shared_contracts.identity import Role

CLIENT = "relay-mobile-local"
# case -> the claims it sets, for a token of ``role``
MALFORMED_CLAIMS: dict[str, Callable[[Role], dict]] = {
    "aud a list holding our client": lambda role: {"aud": [CLIENT]},
    "aud a list of two": lambda role: {"aud": [CLIENT, "another-app"]},
    "aud a number": lambda role: {"aud": 5},
    "access token, client_id a list": lambda role: {"token_use": "access", "client_id": [CLIENT]},
    "groups a string": lambda role: {"cognito:groups": role.value},
    "groups a number": lambda role: {"cognito:groups": 5},
    "groups an object": lambda role: {"cognito:groups": {role.value: True}},
    "groups holding a number": lambda role: {"cognito:groups": [role.value, 7]},
    "groups a list too long": lambda role: {
        "cognito:groups": [role.value] + [f"g{i}" for i in range(200)]
    },
    "sub a number": lambda role: {"sub": 1001},
    "sub a list": lambda role: {"sub": ["D-1001"]},
    "sub empty": lambda role: {"sub": ""},
    "token_use a list": lambda role: {"token_use": ["id"]},
    "token_use an object": lambda role: {"token_use": {"id": True}},
    "exp a string": lambda role: {"exp": "9999999999"},
    "exp a boolean": lambda role: {"exp": True},
    "iat a string": lambda role: {"iat": "1"},
    "nbf a string": lambda role: {"nbf": "1"},
}
# A driver id only matters on driver accounts.
MALFORMED_DRIVER_IDS: dict[str, object] = {
    "driver id a number": 1001,
    "driver id a list": ["D-1001"],
    "driver id too long": "D-" + "1" * 300,
    "driver id not an id": "D 1001; drop",
}
CASES = [(case, Role.DRIVER, "/loads") for case in [*MALFORMED_CLAIMS, *MALFORMED_DRIVER_IDS]] + [
    (case, Role.OPS, "/ops/status") for case in MALFORMED_CLAIMS
]


def _token(tokens, role: Role, claims: dict) -> str:
    """Signed by our issuer for our app; ``claims`` override what it would set."""
    driver = "D-1001" if role is Role.DRIVER else None
    claims = dict(claims)
    sub = claims.pop("sub", driver or f"{role.value}-1")
    return tokens.mint(sub, role, driver, **claims)


@pytest.mark.parametrize(("case", "role", "path"), CASES)
def test_malformed_claims_are_401_in_the_problem_envelope(
    gateway, upstream, tokens, case, role, path
):
    route = upstream.get("http://loads.test/loads").mock(
        return_value=httpx.Response(200, json={"items": [{"load_id": "L-SECRET"}]})
    )
    claims = (
        MALFORMED_CLAIMS[case](role)
        if case in MALFORMED_CLAIMS
        else {"custom:driver_id": MALFORMED_DRIVER_IDS[case]}
    )
    r = gateway.get(path, headers={"authorization": f"Bearer {_token(tokens, role, claims)}"})
    assert r.status_code == 401, (case, r.text)
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "urn:relay:problem:unauthorized"
    assert not route.called


@pytest.mark.parametrize(
    "claims",
    [
        {},  # as the dev issuer mints them
        {"exp": 9_999_999_999.5},  # a NumericDate may be fractional
        {"cognito:groups": ["driver", "beta-testers"]},
        {"aud": CLIENT, "extra": {"nested": [1, 2]}},  # unknown claims are ignored
    ],
)
def test_well_formed_claims_still_pass(gateway, upstream, tokens, claims):
    upstream.get("http://loads.test/loads").mock(return_value=httpx.Response(200, json={}))
    r = gateway.get(
        "/loads", headers={"authorization": f"Bearer {_token(tokens, Role.DRIVER, claims)}"}
    )
    assert r.status_code == 200, r.text
