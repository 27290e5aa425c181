"""The contract tier's plumbing: where pact files live, the identities interactions carry,
a module served alone for verification, and the verification itself.

Pact files are ``contracts/pacts/<consumer>-<provider>.json`` (Pact V4). The gateway's are
written by its consumer tests (:func:`write_pact`: rewritten when they change, and the test
fails so that the change is reviewed and committed); the mobile app's are recorded once
per app version (tests/contracts/app_recordings.py) and never rewritten.

A module is verified alone: its ``create_app()`` behind :class:`GatewayHop` (what the
gateway does to a request on its way to a module: the caller's identity signed afresh for
that module, a write given an idempotency key) served by uvicorn in a thread on
127.0.0.1, port 0. The hop also answers Pact's provider-state calls from
tests/contracts/states.py.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pact import Verifier, match
from pact.match.matcher import AbstractMatcher
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.security.auth import CognitoClaims, bearer_token, identity_of
from module_kit.signed_context import IdentitySigner
from shared_contracts import headers
from shared_contracts.identity import IdentityContext, Role
from tests.conftest import TEST_IDENTITY_SIGNER

ROOT = Path(__file__).resolve().parents[2]
PACTS = ROOT / "contracts" / "pacts"
PROVIDERS = ("loads", "gatepass", "navigate", "message")
HTTP_INTERACTION = "Synchronous/HTTP"

# A signed JWT (header.claims.signature, base64url): the shape of x-relay-identity and of
# the app's bearer token. Interactions match the shape; verification re-signs the value.
JWT_PATTERN = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"
BEARER_PATTERN = r"^Bearer [A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"
ISO_DATETIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"

# The examples in the gateway's pacts are made by the gateway's own signer with a fixed
# key at a fixed time, so the files come out the same on every run (Ed25519 signatures
# are deterministic). Nothing trusts this key: verification signs the claims afresh.
EXAMPLE_TIME = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
_EXAMPLE_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32))).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)
EXAMPLE_SIGNER = IdentitySigner(
    _EXAMPLE_KEY.decode(), ttl_seconds=60, clock=lambda: EXAMPLE_TIME.timestamp()
)


def identity_context_example(role: Role, driver_id: str | None) -> IdentityContext:
    return IdentityContext(
        sub=driver_id or f"{role.value}-1",
        role=role,
        driver_id=driver_id if role is Role.DRIVER else None,
    )


def identity_matcher(
    module: str, role: Role = Role.DRIVER, driver_id: str | None = "D-1001"
) -> AbstractMatcher[str]:
    """``x-relay-identity`` as the gateway sends it to ``module``: any signed context; the
    example names the caller (verification signs that caller afresh)."""
    example = EXAMPLE_SIGNER.sign(identity_context_example(role, driver_id), audience=module)
    return match.regex(example, regex=JWT_PATTERN)


# --- pact files ----------------------------------------------------------------------------


def comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """A pact without its metadata (the versions of the tools that wrote it)."""
    return {k: v for k, v in doc.items() if k != "metadata"}


def write_pact(
    pact: Any, consumer: str, provider: str, scratch: Path, directory: Path = PACTS
) -> str | None:
    """Writes ``pact`` to ``directory`` if it differs from the file there (atomically:
    verifications may be reading it). The reason it was rewritten, or None if unchanged."""
    pact.write_file(scratch, overwrite=True)
    produced = json.loads((scratch / f"{consumer}-{provider}.json").read_text())
    target = directory / f"{consumer}-{provider}.json"
    was = "stale" if target.exists() else "missing"
    if target.exists() and comparable(json.loads(target.read_text())) == comparable(produced):
        return None
    directory.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{uuid.uuid4().hex}.tmp")
    partial.write_text(json.dumps(produced, indent=2, sort_keys=True) + "\n")
    os.replace(partial, target)
    shown = target.relative_to(ROOT) if target.is_relative_to(ROOT) else target
    return f"{shown} was {was}: rewritten from the consumer tests; review and commit it"


def pact_files(provider: str) -> list[Path]:
    """Every pact file in contracts/pacts/ naming ``provider`` with HTTP interactions."""
    found = []
    for path in sorted(PACTS.glob("*.json")):
        doc = json.loads(path.read_text())
        kinds = {i.get("type", HTTP_INTERACTION) for i in doc.get("interactions", [])}
        if doc.get("provider", {}).get("name") == provider and HTTP_INTERACTION in kinds:
            found.append(path)
    return found


def http_only(path: Path, scratch: Path) -> Path:
    """``path`` itself, or a copy in ``scratch`` with its HTTP interactions only (message
    interactions are verified by the message tests)."""
    doc = json.loads(path.read_text())
    kept = [i for i in doc["interactions"] if i.get("type", HTTP_INTERACTION) == HTTP_INTERACTION]
    if len(kept) == len(doc["interactions"]):
        return path
    copy = scratch / path.name
    copy.write_text(json.dumps({**doc, "interactions": kept}))
    return copy


# --- a module served alone ------------------------------------------------------------------

STATE_PATH = "/_pact/provider-states"
StateSetup = Callable[[dict[str, Any]], dict[str, Any] | None]


def identity_of_example(token: str) -> IdentityContext:
    """The caller an interaction's ``x-relay-identity`` example names (not verified: it is
    an example, signed by nobody the module trusts)."""
    claims = jwt.decode(token, options={"verify_signature": False})
    return IdentityContext(
        sub=claims["sub"], role=claims["role"], driver_id=claims.get("driver_id")
    )


def identity_of_bearer(authorization: str) -> IdentityContext:
    """The caller the app's bearer token names, as the gateway reads its claims
    (:class:`gateway.security.auth.CognitoClaims`; the signature is the gateway's business,
    not the module's)."""
    claims = CognitoClaims.model_validate(
        jwt.decode(bearer_token(authorization), options={"verify_signature": False})
    )
    return identity_of(claims)


class GatewayHop:
    """``app`` as the gateway reaches it: the caller named by ``x-relay-identity`` (the
    gateway's pacts) or by the app's bearer token (the app's pacts) signed for ``module``
    with the tests' gateway key, ``Authorization`` dropped, and a write without an
    ``Idempotency-Key`` given one, as the gateway does. ``POST`` :data:`STATE_PATH` runs
    a provider state's setup from ``states`` and answers the values it returns (Pact's
    provider-state values: e.g. a pass token an interaction sends back)."""

    def __init__(self, app: ASGIApp, module: str, states: dict[str, StateSetup]) -> None:
        self.app, self.module, self.states = app, module, states
        self.failures: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == STATE_PATH:
            await self.state_change(receive, send)
            return
        hdrs = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        identity: IdentityContext | None = None
        if headers.IDENTITY in hdrs:
            identity = identity_of_example(hdrs[headers.IDENTITY])
        elif "authorization" in hdrs:
            identity = identity_of_bearer(hdrs["authorization"])
        kept = [
            (k, v) for k, v in scope["headers"] if k not in (b"authorization", b"x-relay-identity")
        ]
        if identity is not None:
            token = TEST_IDENTITY_SIGNER.sign(identity, audience=self.module)
            kept.append((headers.IDENTITY.encode(), token.encode()))
        if scope["method"] == "POST" and headers.IDEMPOTENCY_KEY not in hdrs:
            kept.append((headers.IDEMPOTENCY_KEY.encode(), f"gw-{uuid.uuid4().hex}".encode()))
        await self.app({**scope, "headers": kept}, receive, send)

    async def state_change(self, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        change = json.loads(body or b"{}")
        values: dict[str, Any] = {}
        state = change.get("state") or ""
        # (no state: an interaction without one, which needs no setup). A state that cannot
        # be set up is answered 200 all the same and told by verify_provider: Pact's core
        # retries a failed state change for minutes before it gives up.
        if change.get("action", "setup") == "setup" and state:
            setup = self.states.get(state)
            if setup is None:
                self.failures.append(f"{self.module} has no setup for provider state {state!r}")
            else:
                try:
                    values = setup(change.get("params") or {}) or {}
                except Exception as exc:
                    self.failures.append(f"provider state {state!r} failed: {exc!r}")
        raw = json.dumps(values).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": raw})


@contextmanager
def serving(app: ASGIApp) -> Iterator[str]:
    """``app`` served by uvicorn in a thread on 127.0.0.1 (a port of its own): its URL. The
    socket listens before the thread starts, so no request waits for the server to be up."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


class VerificationFailedError(AssertionError):
    """A provider does not honour a pact: Pact's own account of every mismatch."""


def verify_provider(
    module: str, app: ASGIApp, states: dict[str, StateSetup], scratch: Path
) -> list[Path]:
    """Replays every HTTP interaction of every pact naming ``module`` as provider against
    ``app`` alone; raises :class:`VerificationFailedError` with Pact's output if one fails.
    The pact files verified."""
    files = pact_files(module)
    assert files, f"no pact in {PACTS.relative_to(ROOT)} names {module} as provider"
    hop = GatewayHop(app, module, states)
    with serving(hop) as url:
        verifier = Verifier(module, host="127.0.0.1").add_transport(url=url)
        verifier.state_handler(f"{url}{STATE_PATH}", body=True)
        for path in files:
            verifier.add_source(http_only(path, scratch))
        try:
            verifier.verify()
            failed = bool(hop.failures)
        except RuntimeError:
            failed = True
        if failed:
            raise VerificationFailedError(
                f"{module} does not honour its pacts:\n{verifier.output(strip_ansi=True)}"
                + "".join(f"\n{f}" for f in hop.failures)
            )
    return files
