"""The part of a module's ``create_app`` that every module shares.

A module builds its service (and, if it takes writes, its idempotency store) from its
settings, then::

    app = module_app("loads", title="Relay loads", service=service, idempotency=store)

and declares its routes on ``app``. Routes reach the service through a dependency on
:func:`app_service` (``Service = Annotated[LoadsService, Depends(app_service)]``).

Every answer of a module app carries ``x-relay-version`` (:data:`shared_contracts.headers.VERSION`):
the release that produced it, so a canary's answers can be told from the stable version's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from starlette.types import ASGIApp

from . import logs
from .http import RequestLog, VersionHeader, checked_version, install

if TYPE_CHECKING:
    from .idempotency import IdempotencyStore

API_VERSION = "1"
# The release version: the explicit argument, then these variables in order, then the default.
VERSION_VARIABLE = "RELAY_VERSION"
LAMBDA_VERSION_VARIABLE = "AWS_LAMBDA_FUNCTION_VERSION"  # Lambda sets it: "$LATEST" or "7"
DEFAULT_VERSION = "dev"


def release_version(version: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The version a module's answers name: ``version`` if given, else ``RELAY_VERSION``,
    else ``AWS_LAMBDA_FUNCTION_VERSION``, else ``"dev"`` (empty values are skipped).
    ValueError if it cannot be a header value (:func:`module_kit.http.checked_version`)."""
    env = os.environ if environ is None else environ
    chosen = (
        version or env.get(VERSION_VARIABLE) or env.get(LAMBDA_VERSION_VARIABLE) or DEFAULT_VERSION
    )
    return checked_version(chosen.strip())


class ModuleApp(FastAPI):
    """A module's FastAPI app: its middleware stack is wrapped in
    :class:`~module_kit.http.VersionHeader`, outside Starlette's ``ServerErrorMiddleware``
    (which answers unhandled errors outside ``add_middleware``'s layers), so every answer,
    500s included, names :attr:`release_version`."""

    release_version: str = DEFAULT_VERSION

    def build_middleware_stack(self) -> ASGIApp:
        return VersionHeader(super().build_middleware_stack(), self.release_version)


def module_app(
    name: str,
    *,
    title: str,
    service: object,
    idempotency: IdempotencyStore | None = None,
    version: str | None = None,
) -> FastAPI:
    """A module's FastAPI app before its routes.

    ``name`` is the module's name: the audience its identity contexts must be signed for.
    Errors are answered in the problem envelope and requests pass the request guard
    (:func:`module_kit.http.install`); ``GET /healthz`` answers ``{"status": "ok"}``
    outside the published contract. With ``idempotency``, write routes taking
    :data:`module_kit.idempotency.Idempotent` accept an ``Idempotency-Key``. Every answer
    carries ``x-relay-version: <version>``, by default from the environment, read once here
    (:func:`release_version`).
    """
    logs.setup_logging(name)  # JSON lines; POWERTOOLS_SERVICE_NAME names the service
    app = ModuleApp(title=title, version=API_VERSION, docs_url=None, redoc_url=None)
    app.release_version = release_version(version)
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
