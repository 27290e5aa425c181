"""Gate pass HTTP API. ``create_app()`` builds it; nothing talks to AWS until a request needs it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Path, Response

from module_kit import etag, http
from module_kit.app import app_service, module_app
from module_kit.http import DispatchIdentity, DriverIdentity
from module_kit.idempotency import IdempotencyStore, Idempotent
from shared_contracts import ID_PATTERN
from shared_contracts.gatepass import (
    GatePassCreate,
    GatePassList,
    GatePassPublic,
    GatePassVerdict,
    GatePassVerify,
    Jwks,
)
from shared_contracts.identity import IdentityContext, Role

from .config import GatepassSettings
from .repository import GatepassRepository
from .service import GatepassService
from .signing import KmsSigner

PassIdPath = Annotated[str, Path(pattern=ID_PATTERN)]
GateIdentity = Annotated[IdentityContext, Depends(http.require_role(Role.GATE, Role.OPS))]
# Gates may cache the JWKS: keys only change with a deployment (a rotation, see signing.py).
# A gate meeting a kid it does not know refetches the JWKS before refusing the pass.
KEYS_MAX_AGE = 300


Service = Annotated[GatepassService, Depends(app_service)]


def create_app(
    settings: GatepassSettings | None = None,
    *,
    service: GatepassService | None = None,
    idempotency: IdempotencyStore | None = None,
) -> FastAPI:
    if service is None or idempotency is None:
        settings = settings or GatepassSettings()
        if service is None:
            signer = KmsSigner(
                settings.gatepass_signing_key_id, retired_key_ids=settings.retired_key_ids
            )
            service = GatepassService(GatepassRepository(settings), signer)
        idempotency = idempotency or IdempotencyStore(settings.idempotency_table, prefix="gatepass")
    # POSTs accept an Idempotency-Key (module_kit.idempotency)
    app = module_app(
        "gatepass", title="Relay gate passes", service=service, idempotency=idempotency
    )
    errors = http.json_error_responses(400, 401, 403, 404, 409, 422, 503)

    # Declared before /gatepass/{pass_id}, which would otherwise capture "keys".
    @app.get("/gatepass/keys", response_model=Jwks, responses=http.json_error_responses(503))
    def keys(response: Response, svc: Service) -> Jwks:
        """Public keys gates use to verify passes offline: the current key, then retired
        ones whose passes may still be valid. Public: needs no identity."""
        response.headers["Cache-Control"] = f"public, max-age={KEYS_MAX_AGE}"
        return svc.jwks()

    @app.post("/gatepass", status_code=201, response_model=GatePassPublic, responses=errors)
    def issue_pass(
        command: GatePassCreate, identity: DriverIdentity, svc: Service, once: Idempotent
    ) -> GatePassPublic:
        # A retried issue answers the pass already minted rather than signing a second one.
        return once(
            GatePassPublic,
            command,
            lambda: svc.issue(identity, command, idempotency_key=once.key),
        )

    # Its 200s carry their ETag, which the gateway passes on (module_kit.etag).
    @etag.tagged_get(app, "/gatepass", response_model=GatePassList, responses=errors)
    def list_passes(identity: DriverIdentity, svc: Service) -> GatePassList:
        return GatePassList(items=svc.list_for_driver(identity.driver))

    @app.get("/gatepass/{pass_id}", response_model=GatePassPublic, responses=errors)
    def get_pass(pass_id: PassIdPath, identity: DriverIdentity, svc: Service) -> GatePassPublic:
        return svc.get(identity.driver, pass_id)

    @app.post("/gatepass/verify", response_model=GatePassVerdict, responses=errors)
    def verify_pass(
        command: GatePassVerify, identity: GateIdentity, svc: Service
    ) -> GatePassVerdict:
        return svc.verify(command)

    @app.post("/gatepass/{pass_id}/revoke", response_model=GatePassPublic, responses=errors)
    def revoke_pass(
        pass_id: PassIdPath, identity: DispatchIdentity, svc: Service, once: Idempotent
    ) -> GatePassPublic:
        return once(GatePassPublic, None, lambda: svc.revoke(pass_id))

    return app
