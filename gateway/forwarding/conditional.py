"""Conditional GETs for routes with ``etag = true``: a strong ``ETag`` on a GET's 200 and
``If-None-Match`` answered with 304 (RFC 9110, 8.8.3 and 13.1.2), applied by ``Forward``
to the final answer, live or from a fallback, so a polling app downloads a list only when
it changed.

- The module makes the tag (:mod:`module_kit.etag`: SHA-256, first 128 bits, of the exact
  body bytes and their content type) and the gateway passes it on: a live answer with one
  strong ``ETag`` is not hashed again. The gateway makes the tag itself, the same way, only
  for a module that sent none (an older version) or a weak one, and for a fallback's answer
  (``Relay-Degraded``), whose tag also covers its source (the marker's module and
  fallback, not its ``age``). A live answer and a degraded one never share a tag: a 304
  refreshes the headers a device's HTTP cache keeps but cannot remove one, so a shared
  tag would leave a live answer marked degraded after the module is back.
- ``If-None-Match`` is never forwarded to a module (``forwarder.FORWARDED_REQUEST_HEADERS``):
  the gateway needs the full 200 to keep its last-known-good copy fresh.
- The answer also gets ``Cache-Control: private, no-cache`` (the device may keep it but
  revalidates each time) and ``Vary: Authorization``, unless it has them already.
- ``If-None-Match`` is a list of entity tags or ``*``, compared weakly (``W/"x"`` matches
  ``"x"``); a match is a 304 with no body that keeps ``ETag``, ``Cache-Control``, ``Vary``
  and the degraded marker (``Relay-Degraded``, ``Age``).
- Only a GET's 200: never a write, an error, a 202, or a HEAD (the modules do not answer
  HEAD).

Routes without ``etag`` never reach this module: ``Forward`` checks the route's flag and
nothing else.
"""

from __future__ import annotations

from starlette.responses import Response

from module_kit.etag import (
    CACHE_CONTROL,
    ETAG,
    PRIVATE_NO_CACHE,
    VARY,
    VARY_AUTHORIZATION,
    entity_tag,
    if_none_match_tags,
)
from shared_contracts import headers

__all__ = ["NotModified", "conditional_get", "entity_tag", "if_none_match_tags", "source_of"]

IF_NONE_MATCH = b"if-none-match"
AGE = b"age"
DEGRADED = headers.DEGRADED.encode()
# What a 304 keeps of the 200 it stands for (RFC 9110 15.4.5, and the degraded marker).
NOT_MODIFIED_HEADERS = frozenset(
    {ETAG, CACHE_CONTROL, VARY, DEGRADED, AGE, b"content-location", b"date", b"expires"}
)


class NotModified(Response):
    """A 304: headers only."""

    def __init__(self, raw_headers: list[tuple[bytes, bytes]]) -> None:
        self.status_code = 304
        self.body = b""
        self.raw_headers = raw_headers
        self.background = None


def source_of(marker: bytes | None) -> bytes:
    """What a degraded answer's tag adds for its source: the marker without its age (the
    age grows every second; the copy does not). The gateway wrote the marker itself
    (``DegradedMarker.header_value``: module, fallback, then age), so no parsing is needed."""
    if marker is None:
        return b""
    return marker.partition(b"; age=")[0]


def conditional_get(
    method: str, request_headers: list[tuple[bytes, bytes]], response: Response
) -> Response:
    """``response`` tagged (GET 200 only), or a 304 when ``If-None-Match`` matches it.

    ``request_headers``: the request's raw header list (ASGI ``scope["headers"]``), so a
    list split over several ``If-None-Match`` fields counts whole."""
    if method != "GET" or response.status_code != 200:
        return response
    kept = response.raw_headers
    found = dict(kept)  # one lookup each below; a repeated name: its last value
    marker = found.get(DEGRADED)
    tag = found.get(ETAG)
    # The module's tag stands if it is one strong tag ("...", not W/"...": its quotes are
    # checked, not its characters; a tag is only ever compared) on a live answer.
    strong = tag is not None and tag[:1] == b'"' == tag[-1:] and tag.count(b'"') == 2
    if not strong or marker is not None or _repeated(kept, found, ETAG):
        # none, weak, several, or on a fallback's answer: the gateway's own stands instead
        if tag is not None:
            kept = [(n, v) for n, v in kept if n != ETAG]
        content_type = found.get(b"content-type", b"")
        tag = entity_tag(response.body, content_type, source_of(marker))
        kept.append((ETAG, tag))
    if CACHE_CONTROL not in found:
        kept.append((CACHE_CONTROL, PRIVATE_NO_CACHE))
    if VARY not in found:
        kept.append((VARY, VARY_AUTHORIZATION))
    conditions = []  # a plain loop: no comprehension's frame on every tagged answer
    for name, value in request_headers:
        if name == IF_NONE_MATCH:
            conditions.append(value)
    if conditions:
        wanted = if_none_match_tags(conditions)
        if wanted is None or tag in wanted:
            return NotModified([(n, v) for n, v in kept if n in NOT_MODIFIED_HEADERS])
    response.raw_headers = kept
    return response


def _repeated(fields: list[tuple[bytes, bytes]], found: dict[bytes, bytes], name: bytes) -> bool:
    """Whether ``name`` is in ``fields`` more than once (``found``: ``dict(fields)``)."""
    return len(found) != len(fields) and sum(n == name for n, _ in fields) > 1
