"""Loads HTTP API. ``create_app()`` builds it; nothing talks to AWS until a request needs it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Path

from module_kit import etag, http
from module_kit.app import app_service, module_app
from module_kit.http import DispatchIdentity, DriverIdentity
from module_kit.idempotency import IdempotencyStore, Idempotent
from shared_contracts import ID_PATTERN
from shared_contracts.loads import (
    LoadAssign,
    LoadEventCreate,
    LoadEventPublic,
    LoadList,
    LoadPublic,
)

from .config import LoadsSettings
from .repository import LoadsRepository
from .service import LoadsService

LoadIdPath = Annotated[str, Path(pattern=ID_PATTERN)]


Service = Annotated[LoadsService, Depends(app_service)]


def create_app(
    settings: LoadsSettings | None = None,
    *,
    service: LoadsService | None = None,
    idempotency: IdempotencyStore | None = None,
) -> FastAPI:
    if service is None or idempotency is None:
        settings = settings or LoadsSettings()
        service = service or LoadsService(LoadsRepository(settings))
        idempotency = idempotency or IdempotencyStore(settings.idempotency_table, prefix="loads")
    # POSTs accept an Idempotency-Key (module_kit.idempotency)
    app = module_app("loads", title="Relay loads", service=service, idempotency=idempotency)
    errors = http.json_error_responses(400, 401, 404, 409, 422)

    # The GETs' 200s carry their ETag, which the gateway passes on (module_kit.etag).
    @etag.tagged_get(app, "/loads", response_model=LoadList, responses=errors)
    def list_loads(identity: DriverIdentity, svc: Service) -> LoadList:
        return LoadList(items=svc.list_for_driver(identity.driver))

    @etag.tagged_get(app, "/loads/{load_id}", response_model=LoadPublic, responses=errors)
    def get_load(load_id: LoadIdPath, identity: DriverIdentity, svc: Service) -> LoadPublic:
        return svc.get(identity.driver, load_id)

    @app.post(
        "/loads/{load_id}/events", status_code=201, response_model=LoadEventPublic, responses=errors
    )
    def report_event(
        load_id: LoadIdPath,
        event: LoadEventCreate,
        identity: DriverIdentity,
        svc: Service,
        once: Idempotent,
    ) -> LoadEventPublic:
        return once(
            LoadEventPublic,
            event,
            lambda: svc.record_event(
                identity.driver,
                load_id,
                event,
                idempotency_key=once.key,
                accepted_at=once.accepted_at,
            ),
        )

    @app.post("/dispatch/assignments", status_code=201, response_model=LoadPublic, responses=errors)
    def assign_load(
        command: LoadAssign, identity: DispatchIdentity, svc: Service, once: Idempotent
    ) -> LoadPublic:
        return once(LoadPublic, command, lambda: svc.assign(command))

    return app
