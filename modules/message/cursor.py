"""Opaque paging cursors for ``GET /message``.

A cursor is the base64url (unpadded) JSON of the DynamoDB key to resume after. It is not
secret, so it is never trusted: a cursor is accepted only if it has exactly the key shape
this module writes and names the caller's own inbox. Anything else is a 400, never a 500
and never a read of someone else's partition.
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from shared_contracts.errors import BadRequestError

MAX_CURSOR_CHARS = 512
_SORT_KEY = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z#[A-Za-z0-9_-]{1,64}$")


class InvalidCursorError(BadRequestError):
    code, title = "invalid-cursor", "Invalid cursor"

    def __init__(self) -> None:
        super().__init__("cursor is not valid for this inbox: start again without ?cursor=")


def encode_cursor(key: dict[str, str]) -> str:
    raw = json.dumps(
        {"driver_id": key["driver_id"], "sort_key": key["sort_key"]},
        separators=(",", ":"),
        sort_keys=True,
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(token: str, driver_id: str) -> dict[str, str]:
    """The key ``token`` resumes after, or :class:`InvalidCursorError`."""
    if not token or len(token) > MAX_CURSOR_CHARS:
        raise InvalidCursorError()
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError):  # ValueError covers bad UTF-8 and bad JSON
        raise InvalidCursorError() from None
    if (
        not isinstance(key, dict)
        or set(key) != {"driver_id", "sort_key"}
        or key["driver_id"] != driver_id  # someone else's cursor: same answer as garbage
        or not isinstance(key["sort_key"], str)
        or not _SORT_KEY.match(key["sort_key"])
    ):
        raise InvalidCursorError()
    return key
