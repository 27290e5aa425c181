"""The part of a module's ``create_app`` that every module shares.

A module builds its service (and, if it takes writes, its idempotency store) from its
settings, then::

    app = module_app("loads", title="Relay loads", service=service, idempotency=store)

and declares its routes on ``app``. Routes reach the service through a dependency on
:func:`app_service` (``Service = Annotated[LoadsService, Depends(app_service)]``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request

from . import logs
from .http import RequestLog, install

if TYPE_CHECKING:
    from .idempotency import IdempotencyStore

API_VERSION = "1"


def module_app(
    name: str,
    *,
    title: str,
    service: object,
    idempotency: IdempotencyStore | None = None,
) -> FastAPI:
    """A module's FastAPI app before its routes.

    ``name`` is the module's name: the audience its identity contexts must be signed for.
    Errors are answered in the problem envelope and requests pass the request guard
    (:func:`module_kit.http.install`); ``GET /healthz`` answers ``{"status": "ok"}``
    outside the published contract. With ``idempotency``, write routes taking
    :data:`module_kit.idempotency.Idempotent` accept an ``Idempotency-Key``.
    """
    logs.setup_logging(name)  # JSON lines; POWERTOOLS_SERVICE_NAME names the service
    app = FastAPI(title=title, version=API_VERSION, docs_url=None, redoc_url=None)
    app.state.service = service
    if idempotency is not None:
        app.state.idempotency = idempotency
    # Added first, so inside the request guard (which sets the request id) and around the
    # routes (which set the route): one ``request`` log line per request.
    app.add_middleware(RequestLog, module=name, quiet_paths=frozenset({"/healthz"}))
    install(app, audience=name)

    @app.get("/healthz", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def app_service(request: Request) -> Any:
    """The service :func:`module_app` was given (a route dependency)."""
    return request.app.state.service
