"""Conditional GETs for routes with ``etag = true``: a strong ``ETag`` on a GET's 200 and
``If-None-Match`` answered with 304 (RFC 9110, 8.8.3 and 13.1.2), applied by ``Forward``
to the final answer, live or from a fallback, so a polling app downloads a list only when
it changed.

- The tag is a hash (SHA-256, its first 128 bits; OpenSSL's, with the CPU's SHA
  instructions where it has them: less time than the interpreter's own BLAKE2b on a 1 KB
  list) of the exact body bytes sent, their content type
  and, on a fallback's answer, its source (the ``Relay-Degraded`` marker's module and
  fallback, not its ``age``). A live answer and a degraded one never share a tag: a 304
  refreshes the headers a device's HTTP cache keeps but cannot remove one, so a shared
  tag would leave a live answer marked degraded after the module is back.
- Valgrind's virtual CPU has no SHA instructions, so under callgrind (bench/instructions.py)
  SHA-256 takes OpenSSL's software path: about 31,000 instructions for the benchmark's
  1 KB list, against about 19,000 for BLAKE2b. BLAKE2b would lower that count and raise
  the real CPU's time (1.1 against 1.5 us on the benchmark host: ``python -m
  bench.etag_cost``), so the hash stays SHA-256.
- The answer also gets ``Cache-Control: private, no-cache`` (the device may keep it but
  revalidates each time) and ``Vary: Authorization``, unless it has them already.
- ``If-None-Match`` is a list of entity tags or ``*``, compared weakly (``W/"x"`` matches
  ``"x"``); a match is a 304 with no body that keeps ``ETag``, ``Cache-Control``, ``Vary``
  and the degraded marker (``Relay-Degraded``, ``Age``).
- Only a GET's 200: never a write, an error, a 202, or a HEAD (the modules do not answer
  HEAD, and the gateway could not hash a body it never sees).

Routes without ``etag`` never reach this module: ``Forward`` checks the route's flag and
nothing else.
"""

from __future__ import annotations

import hashlib
import re

from starlette.responses import Response

from shared_contracts import headers

ETAG = b"etag"
IF_NONE_MATCH = b"if-none-match"
CACHE_CONTROL = b"cache-control"
VARY = b"vary"
AGE = b"age"
DEGRADED = headers.DEGRADED.encode()
PRIVATE_NO_CACHE = b"private, no-cache"
VARY_AUTHORIZATION = b"Authorization"
# What a 304 keeps of the 200 it stands for (RFC 9110 15.4.5, and the degraded marker).
NOT_MODIFIED_HEADERS = frozenset(
    {ETAG, CACHE_CONTROL, VARY, DEGRADED, AGE, b"content-location", b"date", b"expires"}
)
# The quoted opaque part of each entity tag of a list (etagc, RFC 9110 8.8.3): a ``W/``
# before it is left out, which is the weak comparison If-None-Match uses.
_OPAQUE_TAG = re.compile(rb'"[\x21\x23-\x7e\x80-\xff]*"')


class NotModified(Response):
    """A 304: headers only."""

    def __init__(self, raw_headers: list[tuple[bytes, bytes]]) -> None:
        self.status_code = 304
        self.body = b""
        self.raw_headers = raw_headers
        self.background = None


def entity_tag(body: bytes | memoryview, content_type: bytes, source: bytes = b"") -> bytes:
    """The strong tag of a representation: ``"<32 hex digits>"``. ``source`` is empty on a
    live answer, the fallback's module and kind on a degraded one."""
    digest = hashlib.sha256(b"\0".join((content_type, source, body))).hexdigest()
    return b'"' + digest[:32].encode() + b'"'


def if_none_match_tags(values: list[bytes]) -> set[bytes] | None:
    """The opaque tags (quoted, ``W/`` dropped: weak comparison) of the request's
    ``If-None-Match`` fields; ``None`` for ``*``. What is not an entity tag is skipped."""
    tags: set[bytes] = set()
    for value in values:
        if value.strip() == b"*":
            return None
        tags.update(_OPAQUE_TAG.findall(value))
    return tags


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
    content_type = b""
    marker = None
    cache_control = vary = tagged = False
    for name, value in kept:
        if name == b"content-type":
            content_type = value
        elif name == DEGRADED:
            marker = value
        elif name == CACHE_CONTROL:
            cache_control = True
        elif name == VARY:
            vary = True
        elif name == ETAG:
            tagged = True
    if tagged:  # a module's own tag: the gateway's stands for the bytes it sends
        kept = [(n, v) for n, v in kept if n != ETAG]
    tag = entity_tag(response.body, content_type, source_of(marker))
    kept.append((ETAG, tag))
    if not cache_control:
        kept.append((CACHE_CONTROL, PRIVATE_NO_CACHE))
    if not vary:
        kept.append((VARY, VARY_AUTHORIZATION))
    wanted = if_none_match_tags([v for n, v in request_headers if n == IF_NONE_MATCH])
    if wanted is None or tag in wanted:
        return NotModified([(n, v) for n, v in kept if n in NOT_MODIFIED_HEADERS])
    response.raw_headers = kept
    return response
