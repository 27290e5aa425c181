"""The documents a module publishes, as the tree builds them: ``openapi.json`` (its HTTP
API) and ``events.json`` (:data:`EVENTS`, in OpenAPI form), their contract version, and
their comparable form."""

from __future__ import annotations

import copy
import importlib
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from shared_contracts.gatepass import GatePassPublic, Jwks
from shared_contracts.loads import LoadPublic
from shared_contracts.navigate import Destination
from shared_contracts.notifications import Notification

from ..paths import ROOT

# relay.openapi (and FastAPI) is imported where the HTTP document is built: every `relay`
# command imports this package, and only that document needs them.

OPENAPI_FILE = "openapi.json"
EVENTS_FILE = "events.json"
CONTRACT_VERSION_ATTRIBUTE = "CONTRACT_VERSION"
EVENT_PREFIX = "/events/"


@dataclass(frozen=True)
class Event:
    """Something a module publishes for other components to read."""

    name: str
    model: type[BaseModel]
    description: str


_NOTIFICATION = (
    "A message on the notifications queue (SQS), read by the notifications worker: the "
    "message body is this document."
)
EVENTS: dict[str, tuple[Event, ...]] = {
    "loads": (
        Event(
            "load",
            LoadPublic,
            "A load's record in the loads table and its stream image (NEW_IMAGE): `doc` is "
            "this document as JSON; the record's `load_id`, `driver_id`, `status` and "
            "`version` repeat its fields.",
        ),
        Event("notification", Notification, _NOTIFICATION + " Kind `load_assigned`."),
    ),
    "gatepass": (
        Event(
            "pass",
            GatePassPublic,
            "A gate pass's record in the passes table and its stream image: `doc` is this "
            "document as JSON; the record's `pass_id`, `driver_id` and `revoked` repeat its "
            "fields.",
        ),
        Event(
            "revocation",
            GatePassPublic,
            "A revoked pass: the pass's record updated with `revoked` = true and `doc` "
            "this document (its `revoked` true) as JSON.",
        ),
        Event(
            "keys",
            Jwks,
            "The published verification keys: the passes table's record `pass_id` = "
            "`keys#jwks`, `doc` this document as JSON, `published_at` in epoch ms.",
        ),
    ),
    "navigate": (
        Event(
            "facility",
            Destination,
            "A facility's record in the facilities table and its stream image: `doc` is "
            "this document as JSON, with `facility_id` and `cell`; a removed facility is a "
            "REMOVE record keyed by `facility_id`.",
        ),
    ),
    "message": (
        Event(
            "notification",
            Notification,
            _NOTIFICATION + " Kinds `message_to_driver` and `message_to_dispatch`.",
        ),
    ),
    "notifications": (
        Event(
            "push",
            Notification,
            "A message on the push topic (SNS): the message is this document; `driver_id` "
            "and `kind` are also message attributes.",
        ),
    ),
}

EVENTS_DESCRIPTION = """\
The events {module} publishes for other components, in OpenAPI form so that the
breaking-change check judges them like answers: each pseudo-operation `GET /events/<name>`
stands for one event, and its 200 response body is the event's schema. Nothing serves
these paths."""


def modules() -> tuple[str, ...]:
    """Every module with a published contract: an HTTP app or events."""
    apps = {p.parent.name for p in (ROOT / "modules").glob("*/app.py")}
    return tuple(sorted(apps | set(EVENTS)))


def openapi_document(module: str) -> dict[str, Any] | None:
    """The module's HTTP API document, or None if it has no app."""
    from ..openapi import module_document

    if not (ROOT / "modules" / module / "app.py").exists():
        return None
    return module_document(module)


def contract_version(module: str, api: dict[str, Any] | None = None) -> str:
    """The module's contract version: its app's ``info.version``, else its package's
    ``CONTRACT_VERSION``, else ``module_kit.app.API_VERSION``."""
    if api is not None:
        return str(api["info"]["version"])
    package = importlib.import_module(f"modules.{module}")
    if hasattr(package, CONTRACT_VERSION_ATTRIBUTE):
        return str(getattr(package, CONTRACT_VERSION_ATTRIBUTE))
    from module_kit.app import API_VERSION

    return API_VERSION


def events_document(module: str, version: str) -> dict[str, Any]:
    """The module's events (:data:`EVENTS`) as an OpenAPI document of pseudo-operations:
    one ``GET /events/<name>`` each, its 200 body the event's schema (as FastAPI writes an
    answer's, so the same checker reads both)."""
    from pydantic.json_schema import models_json_schema

    events = EVENTS.get(module, ())
    refs, schemas = models_json_schema(
        [(event.model, "serialization") for event in events],
        ref_template="#/components/schemas/{model}",
    )
    paths = {
        EVENT_PREFIX + event.name: {
            "get": {
                "tags": ["events"],
                "summary": f"{module} publishes {event.name}",
                "description": event.description,
                "operationId": f"{module}_{event.name}_event".replace("-", "_"),
                "responses": {
                    "200": {
                        "description": "Successful Response",
                        "content": {
                            "application/json": {"schema": refs[(event.model, "serialization")]}
                        },
                    }
                },
            }
        }
        for event in events
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": f"Relay {module} events",
            "description": EVENTS_DESCRIPTION.format(module=module),
            "version": version,
        },
        "paths": paths,
    }
    if schemas.get("$defs"):
        document["components"] = {"schemas": schemas["$defs"]}
    return document


def documents(module: str) -> dict[str, dict[str, Any]]:
    """The module's published documents as the tree builds them, by file name."""
    api = openapi_document(module)
    version = contract_version(module, api)
    built = {EVENTS_FILE: events_document(module, version)}
    if api is not None:
        built[OPENAPI_FILE] = api
    return built


def major(version: str) -> int:
    """The major of a contract version ("2", "2.1" -> 2); ValueError if it has none."""
    found = re.match(r"\s*v?(\d+)", version)
    if found is None:
        raise ValueError(f"contract version {version!r} does not start with a major number")
    return int(found.group(1))


def comparable(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with every nullable ``anyOf: [X, null]`` written as ``type: [X, "null"]``
    (a ``$ref`` X inlined), which Optic checks field by field (the package's docstring)."""
    schemas = document.get("components", {}).get("schemas", {})

    def rewrite(node: Any) -> Any:
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        if not isinstance(node, dict):
            return node
        variants = node.get("anyOf")
        if isinstance(variants, list) and len(variants) == 2 and {"type": "null"} in variants:
            other = next(v for v in variants if v != {"type": "null"})
            ref = other.get("$ref", "")
            if ref.startswith("#/components/schemas/"):
                other = schemas.get(ref.rsplit("/", 1)[-1], other)
            if isinstance(other.get("type"), str):
                node = {**copy.deepcopy(other), **{k: v for k, v in node.items() if k != "anyOf"}}
                node["type"] = [other["type"], "null"]
                if "enum" in node:
                    node["enum"] = [*node["enum"], None]
        return {key: rewrite(value) for key, value in node.items()}

    rewritten: dict[str, Any] = rewrite(document)
    return rewritten
