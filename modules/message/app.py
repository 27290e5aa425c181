"""Message HTTP API. ``create_app()`` builds it; nothing talks to AWS until a request needs it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Query

from module_kit import http
from module_kit.app import app_service, module_app
from module_kit.http import DispatchIdentity, DriverIdentity
from module_kit.idempotency import IdempotencyStore, Idempotent
from shared_contracts.message import (
    DispatchMessageCreate,
    MessageCreate,
    MessagePage,
    MessagePublic,
)

from .config import MessageSettings
from .repository import MessageRepository
from .service import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, MessageService

Service = Annotated[MessageService, Depends(app_service)]
# Bounds on the cursor are checked by the service so that any bad cursor is a 400.
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]


def create_app(
    settings: MessageSettings | None = None,
    *,
    service: MessageService | None = None,
    idempotency: IdempotencyStore | None = None,
) -> FastAPI:
    if service is None or idempotency is None:
        settings = settings or MessageSettings()
        service = service or MessageService(MessageRepository(settings))
        idempotency = idempotency or IdempotencyStore(settings.idempotency_table, prefix="message")
    # POSTs accept an Idempotency-Key (module_kit.idempotency)
    app = module_app("message", title="Relay message", service=service, idempotency=idempotency)
    errors = http.json_error_responses(400, 401, 403, 409, 422)

    @app.get("/message", response_model=MessagePage, responses=errors)
    def list_messages(
        identity: DriverIdentity,
        svc: Service,
        limit: Limit = DEFAULT_PAGE_SIZE,
        cursor: Cursor = None,
    ) -> MessagePage:
        return svc.inbox(identity.driver, limit, cursor)

    @app.post("/message", status_code=201, response_model=MessagePublic, responses=errors)
    def send_to_dispatch(
        command: MessageCreate, identity: DriverIdentity, svc: Service, once: Idempotent
    ) -> MessagePublic:
        return once(
            MessagePublic,
            command,
            lambda: svc.send_to_dispatch(
                identity.driver, command, idempotency_key=once.key, accepted_at=once.accepted_at
            ),
        )

    @app.post("/dispatch/messages", status_code=201, response_model=MessagePublic, responses=errors)
    def send_to_driver(
        command: DispatchMessageCreate, identity: DispatchIdentity, svc: Service, once: Idempotent
    ) -> MessagePublic:
        return once(
            MessagePublic,
            command,
            lambda: svc.send_to_driver(
                command, sender=identity.sub, idempotency_key=once.key, accepted_at=once.accepted_at
            ),
        )

    return app
