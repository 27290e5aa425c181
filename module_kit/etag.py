"""Strong ``ETag``s made where the answer is made: a module's GET 200s (RFC 9110, 8.8.3).

The origin makes the validator and the gateway passes it on: on a route with ``etag = true``
the gateway answers ``If-None-Match`` against the module's tag, without hashing the body
again (:mod:`gateway.forwarding.conditional`, which makes its own tag only for a fallback's
answer or a module that sent none). A module declares such a GET with :func:`tagged_get`::

    @etag.tagged_get(app, "/loads", response_model=LoadList, responses=errors)
    def list_loads(...) -> LoadList: ...

and its 200s carry ``ETag`` (:func:`entity_tag` of the exact body bytes sent and their
content type), ``Cache-Control: private, no-cache`` and ``Vary: Authorization``, the headers
the gateway would add. Modules do not answer ``If-None-Match`` themselves: the gateway
always needs the full 200 (it keeps it as the route's last-known-good copy), and a gateway
that forwarded the header would get 304s instead.

The gateway imports :func:`entity_tag` and :func:`if_none_match_tags` from here, so both
ends compute the same tag.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

ETAG = b"etag"
CACHE_CONTROL = b"cache-control"
VARY = b"vary"
PRIVATE_NO_CACHE = b"private, no-cache"
VARY_AUTHORIZATION = b"Authorization"
# The quoted opaque part of an entity tag (etagc, RFC 9110 8.8.3); ``W/`` before it is
# a weak tag's mark.
OPAQUE_TAG = re.compile(rb'"[\x21\x23-\x7e\x80-\xff]*"')

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def entity_tag(body: bytes | memoryview, content_type: bytes, source: bytes = b"") -> bytes:
    """The strong tag of a representation: ``"<32 hex digits>"``, the first 128 bits of a
    SHA-256 hash of ``content_type``, ``source`` and ``body``. ``source`` is empty on a
    module's (live) answer; the gateway puts a fallback's source there."""
    digest = hashlib.sha256(b"\0".join((content_type, source, body))).hexdigest()
    return b'"' + digest[:32].encode() + b'"'


def if_none_match_tags(values: list[bytes]) -> set[bytes] | None:
    """The opaque tags (quoted, ``W/`` dropped: weak comparison) of a request's
    ``If-None-Match`` fields; ``None`` for ``*``. What is not an entity tag is skipped."""
    tags: set[bytes] = set()
    for value in values:
        if value.strip() == b"*":
            return None
        tags.update(OPAQUE_TAG.findall(value))
    return tags


def tag(response: Response) -> Response:
    """``response`` (a 200 with its whole body) with its ``ETag`` and, unless it has them,
    ``Cache-Control: private, no-cache`` and ``Vary: Authorization``."""
    raw = response.raw_headers
    names = {name for name, _ in raw}
    content_type = next((value for name, value in raw if name == b"content-type"), b"")
    kept = [(n, v) for n, v in raw if n != ETAG] if ETAG in names else raw
    kept.append((ETAG, entity_tag(response.body, content_type)))
    if CACHE_CONTROL not in names:
        kept.append((CACHE_CONTROL, PRIVATE_NO_CACHE))
    if VARY not in names:
        kept.append((VARY, VARY_AUTHORIZATION))
    response.raw_headers = kept
    return response


class TaggedRoute(APIRoute):
    """A FastAPI route whose GET 200s go through :func:`tag`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def tagged(request: Request) -> Response:
            response = await handler(request)
            if response.status_code == 200 and request.method == "GET":
                return tag(response)
            return response

        return tagged


def tagged_get(
    app: FastAPI | APIRouter, path: str, **options: Any
) -> Callable[[Endpoint], Endpoint]:
    """``@app.get(path, **options)`` for a GET whose 200s carry their ``ETag`` (:func:`tag`)."""
    router = app.router if isinstance(app, FastAPI) else app

    def declare(endpoint: Endpoint) -> Endpoint:
        router.add_api_route(
            path,
            endpoint,
            methods=["GET"],
            route_class_override=TaggedRoute,
            **options,
        )
        return endpoint

    return declare
