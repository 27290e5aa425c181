"""A Lambda entry point for an ASGI app: Mangum, with the API stage's path prefix removed.

Every function that serves HTTP (the gateway and each module) builds its handler here::

    handler = lambda_handler(create_app())

The same app is reached through four kinds of event, and the path the app sees must be the
same in all of them:

- a function URL (payload 2.0): ``rawPath`` is the request's path;
- an HTTP API on its ``$default`` stage (payload 2.0): the same;
- an HTTP API on a named stage, e.g. ``prod`` (payload 2.0): ``rawPath`` and
  ``requestContext.http.path`` start with ``/prod``, which the app's routes do not know;
- a REST API (payload 1.0): ``path`` is already without the stage.

Mangum strips one fixed base path, set when the handler is built; the stage is known only
from the event, so the prefix is removed here, per event, before Mangum reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mangum import Mangum

from .http import LAMBDA_TEXT_MIME_TYPES

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


def without_stage_prefix(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` with a named stage's ``/<stage>`` removed from its paths (payload 2.0).

    A function URL, a ``$default`` stage and REST (1.0) events come back unchanged; so does
    a path that does not start with the stage (a custom domain's API mapping already
    removed it). The event is not modified; a changed copy is returned.
    """
    if event.get("version") != "2.0":
        return event
    context = event.get("requestContext") or {}
    stage = context.get("stage")
    if not stage or stage == "$default":
        return event
    prefix = f"/{stage}"
    http = context.get("http") or {}
    raw_path = event.get("rawPath", "")
    if not _under(raw_path, prefix):
        return event
    stripped = {"rawPath": raw_path[len(prefix) :] or "/"}
    path = http.get("path", raw_path)
    if _under(path, prefix):
        context = {**context, "http": {**http, "path": path[len(prefix) :] or "/"}}
    return {**event, **stripped, "requestContext": context}


def lambda_handler(app: Any) -> LambdaHandler:
    """The Lambda handler for ``app``: problem+json goes out as text, no lifespan."""
    mangum = Mangum(app, lifespan="off", text_mime_types=LAMBDA_TEXT_MIME_TYPES)

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        response: dict[str, Any] = mangum(without_stage_prefix(event), context)
        return response

    return handler


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")
