"""The gateway as a consumer: the real gateway app (``gateway.app.create_app``) in this
process, its modules' upstreams at Pact mock servers, a Cognito-shaped token issuer of its
own. A consumer test asks the gateway what the app asks, lets the mock server answer as
the pact says, then holds the module on its fallback (an operator's fault, ``error`` at
100%) and reads what the gateway kept: the gateway's own reading code, on the pact's body.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.config import GatewaySettings
from gateway.routing.routes import RouteTable
from relay.devissuer import DevIssuer
from shared_contracts.identity import Role
from tests.conftest import TEST_IDENTITY_PRIVATE_KEY

MODULES = ("loads", "gatepass", "navigate", "message")
UNUSED = "http://127.0.0.1:9"  # the discard port: a module a test does not call
ISSUER = DevIssuer.generate()


class Gateway:
    def __init__(self, client: TestClient) -> None:
        self.client = client

    def auth(self, role: Role = Role.DRIVER, driver_id: str | None = "D-1001") -> dict[str, str]:
        sub = driver_id or f"{role.value}-1"
        return {"authorization": "Bearer " + ISSUER.mint(sub, role, driver_id)}

    def module_down(self, module: str) -> None:
        """Every call to ``module`` fails from now on (a fault as operators set one)."""
        spec = {"kind": "error", "error_rate": 1.0, "ttl_seconds": 600, "reason": "contract"}
        r = self.client.put(f"/ops/faults/{module}", json=spec, headers=self.auth(Role.OPS, None))
        assert r.status_code == 200, r.text


@contextmanager
def gateway(
    upstreams: dict[str, str], state: Path, *, wall_clock: Callable[[], float] = time.time
) -> Iterator[Gateway]:
    """The gateway with ``upstreams`` (module -> URL); ``state``: a directory of its own;
    ``wall_clock``: the time its fallbacks judge copies by (a pass's validity)."""
    settings = GatewaySettings(
        stage="test",
        token_issuer=ISSUER.issuer,
        jwks_url="file://" + str(ISSUER.write_jwks(state)),
        token_client_ids=ISSUER.client_id,
        identity_signing_key=TEST_IDENTITY_PRIVATE_KEY,
        rate_limit_driver="1000/1000",
        rate_limit_ops="1000/1000",
        rate_limit_gate="1000/1000",
        rate_limit_anonymous="1000/1000",
    )
    env = {f"RELAY_UPSTREAM_{m.upper()}": str(upstreams.get(m, UNUSED)) for m in MODULES}
    routes = RouteTable.load(settings.routes_file, env=env)
    with TestClient(create_app(settings, routes=routes, wall_clock=wall_clock)) as client:
        yield Gateway(client)
