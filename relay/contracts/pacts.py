"""The consumers of a breaking change, from the pact files (``contracts/pacts``): whose
interactions call the operation or read the field."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..paths import ROOT, shown
from .exceptions import ContractsError
from .optic import Finding
from .published import EVENT_PREFIX

PACTS_DIR = ROOT / "contracts" / "pacts"
# A message is about an event when at least this share of its document's fields are the
# event's (a consumer's pact holds only the fields it reads, maybe one the event dropped).
EVENT_MATCH_SHARE = 0.75


@dataclass(frozen=True)
class Interaction:
    """What one pact interaction says: the call (HTTP) and the bodies it sends or reads."""

    consumer: str
    provider: str
    method: str | None  # None: a message
    path: str | None
    status: int | None
    sent: Any  # the request body (HTTP)
    read: Any  # the response body (HTTP) or the message contents


def load_pacts(directory: Path = PACTS_DIR) -> list[Interaction]:
    """Every interaction of every pact file (Pact V3 or V4, HTTP or message)."""
    found: list[Interaction] = []
    for path in sorted(directory.glob("*.json")):
        try:
            pact = json.loads(path.read_text(encoding="utf-8"))
            consumer, provider = pact["consumer"]["name"], pact["provider"]["name"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ContractsError(f"{shown(path)} is not a pact file: {exc}") from None
        for raw in [*pact.get("interactions", []), *pact.get("messages", [])]:
            request, response = raw.get("request"), raw.get("response")
            if isinstance(request, dict) and isinstance(response, dict):
                found.append(
                    Interaction(
                        consumer,
                        provider,
                        str(request.get("method", "GET")).upper(),
                        str(request.get("path", "")),
                        response.get("status"),
                        _body(request.get("body")),
                        _body(response.get("body")),
                    )
                )
            elif "contents" in raw or "content" in raw.get("message", {}):
                contents = raw.get("contents", raw.get("message", {}).get("content"))
                found.append(
                    Interaction(consumer, provider, None, None, None, None, _body(contents))
                )
    return found


def _body(body: Any) -> Any:
    """A pact body's JSON: V4 wraps it (``{"content": ..., "contentType": ...}``)."""
    if (
        isinstance(body, dict)
        and "content" in body
        and ("contentType" in body or "encoded" in body)
    ):
        body = body["content"]
    if isinstance(body, str):
        try:
            return json.loads(body)
        except ValueError:
            return body
    return body


_DYNAMODB_TYPES = frozenset({"S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS"})


def _plain(node: Any) -> Any:
    """DynamoDB JSON (a stream image: ``{"S": "L-1"}``, ``{"M": {...}}``) as plain JSON."""
    if isinstance(node, list):
        return [_plain(item) for item in node]
    if not isinstance(node, dict):
        return node
    if len(node) == 1 and next(iter(node)) in _DYNAMODB_TYPES:
        kind, value = next(iter(node.items()))
        if kind == "NULL":
            return None
        if kind == "M" and isinstance(value, dict):
            return {k: _plain(v) for k, v in value.items()}
        return _plain(value)
    return {key: _plain(value) for key, value in node.items()}


def _event_document(contents: Any) -> Any:
    """What a message carries: a record's ``doc`` (JSON text or object, in plain or
    DynamoDB JSON), else the message itself."""
    plain = _plain(contents)
    if isinstance(plain, dict) and "doc" in plain:
        return _body(plain["doc"])
    return plain


def _has(body: Any, field_path: str) -> bool:
    """Whether ``body`` holds the field ``a.b[].c`` (any element of a list)."""

    def walk(node: Any, names: list[str]) -> bool:
        if not names:
            return True
        name, rest = names[0], names[1:]
        many = name.endswith("[]")
        key = name.removesuffix("[]")
        if isinstance(node, list):
            return any(walk(item, names) for item in node)
        if not isinstance(node, dict) or key not in node:
            return False
        value = node[key]
        if many and isinstance(value, list):
            return any(walk(item, rest) for item in value)
        return walk(value, rest)

    return walk(body, field_path.split("."))


def _is_event(doc: Any, properties: set[str]) -> bool:
    if not isinstance(doc, dict) or not doc:
        return False
    return len(doc.keys() & properties) >= EVENT_MATCH_SHARE * len(doc)


def _path_pattern(template: str) -> re.Pattern[str]:
    pieces = re.split(r"(\{[^}]+\})", template)
    return re.compile(
        "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in pieces) + "/?$"
    )


def consumers(
    finding: Finding,
    module: str,
    interactions: Iterable[Interaction],
    *,
    event_properties: Iterable[str] = (),
) -> tuple[str, ...]:
    """The consumers whose pacts with ``module`` call the operation or read the field.

    HTTP: an interaction on the operation (method and path); for a response field, one
    whose response body holds it; for a removed status code, one that expects it. Events:
    a message whose document (its record's ``doc``, or the message itself) is this event's,
    judged by its fields: at least :data:`EVENT_MATCH_SHARE` of them are fields of the
    event (``event_properties``, from the released schema; consumers read narrow views, so
    a subset), and, when a field is named, one that holds it."""
    operation = finding.operation
    if operation is None:
        return ()
    method, template = operation
    event = template.startswith(EVENT_PREFIX)
    pattern = _path_pattern(template)
    known = set(event_properties)
    names: set[str] = set()
    for i in interactions:
        if i.provider != module:
            continue
        if event:
            doc = _event_document(i.read) if i.method is None else None
            if _is_event(doc, known) and (finding.field is None or _has(doc, finding.field)):
                names.add(i.consumer)
            continue
        if i.method != method or i.path is None or not pattern.match(i.path):
            continue
        if finding.side == "response":
            if finding.status and finding.status.isdigit() and str(i.status) != finding.status:
                continue
            if finding.field and not _has(i.read, finding.field):
                continue
        names.add(i.consumer)
    return tuple(sorted(names))
