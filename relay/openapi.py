"""The mobile API's OpenAPI document, built from the modules' contracts and the route table.

The gateway is a catch-all proxy, so FastAPI cannot describe it. This module builds the
document it publishes instead: for every route of ``gateway/routing/routes.toml`` it takes the
operations of that route's module app (``create_app(...).openapi()``) and adds what only
the gateway knows: bearer authentication, the roles, the gateway's own problem answers
(401, 403, 429, 503), the fallbacks (``Relay-Degraded``, deferred 202) and
``Idempotency-Key`` on writes. The result is checked in as ``gateway/ops/openapi.json`` and
served by the gateway (see :mod:`gateway.ops.apidoc`); ``tests/unit/test_openapi.py`` fails
when it is stale, so every contract change shows up in review as a diff of that file.

    python -m relay.openapi           # (re)write gateway/ops/openapi.json, print what changed
    python -m relay.openapi --check   # exit 1 with a summary if the checked-in file is stale
"""

from __future__ import annotations

import argparse
import copy
import importlib
import inspect
import json
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from gateway.edge import appversion
from gateway.edge.appversion import AppConfig
from gateway.routing.routes import Route, RouteTable
from relay.paths import shown
from shared_contracts import headers
from shared_contracts.degraded import DeferredAccepted
from shared_contracts.errors import Problem
from shared_contracts.identity import Role

ROOT = Path(__file__).resolve().parents[1]
ROUTES_FILE = ROOT / "gateway" / "routing" / "routes.toml"
DOCUMENT_FILE = ROOT / "gateway" / "ops" / "openapi.json"
PYPROJECT = ROOT / "pyproject.toml"

TITLE = "Relay mobile API"
METHODS = ("get", "put", "post", "delete", "patch")
PROBLEM = headers.PROBLEM_MEDIA_TYPE
REF = "#/components/schemas/{model}"
DEGRADED_HEADER = "Relay-Degraded"
IDEMPOTENCY_HEADER = "Idempotency-Key"
IF_NONE_MATCH_HEADER = "If-None-Match"
DESCRIPTION = """\
The API the Relay app calls. Every request goes through the gateway, which authenticates
the bearer token, checks the caller's role, and forwards the call to the module serving
the path. Errors are `application/problem+json` (RFC 9457) with a stable `type`.

When a module is unavailable the gateway may answer from a fallback: such answers carry
the `Relay-Degraded` header (`module=...; fallback=...; age=...`). Writes accept an
`Idempotency-Key`; a retry with the same key gets the first answer, and some writes are
accepted for later (202) while their module is down.

The lists the app polls (and their items) answer with a strong `ETag`: send it back as
`If-None-Match` and an unchanged answer is a 304 without a body, live or degraded alike
(a degraded answer has its own tag, and its 304 carries `Relay-Degraded`).

The app says its version in `Relay-App-Version` (e.g. `5.2.0`; or in its User-Agent,
`RelayApp/5.2.0`). An app older than the oldest one an operation serves gets 426
`upgrade-required` (update the app from its store); a request without a version is served.
A deprecated operation (`deprecated: true`) answers with `Deprecation`, `Sunset` and
`Link: <...>; rel="deprecation"`."""


def _header(description: str, schema_type: str = "string") -> dict[str, Any]:
    return {"description": description, "schema": {"type": schema_type}}


RETRY_AFTER = _header("Seconds to wait before retrying.", "integer")
DEGRADED = _header("present when a fallback served this answer: module=...; fallback=...; age=...")
ETAG = _header(
    "A strong entity tag of this answer (its body, and whether a fallback served it); send "
    "it as If-None-Match on the next poll."
)
CACHE_CONTROL = _header("`private, no-cache`: the device may keep the answer but revalidates it.")
VARY = _header("`Authorization`: the answer is the caller's own.")
AGE = _header("Seconds since a fallback's copy was live (with Relay-Degraded).", "integer")
IF_NONE_MATCH = {
    "name": IF_NONE_MATCH_HEADER,
    "in": "header",
    "required": False,
    "description": "The ETag(s) of the answer the app holds (a list, or `*`; `W/` tags "
    "compare weakly): when the answer would be the same, 304 without a body.",
    "schema": {"type": "string"},
}


APP_VERSION = {
    "name": appversion.HEADER,
    "in": "header",
    "required": False,
    "description": "The app's version, MAJOR.MINOR.PATCH (e.g. `5.2.0`); the app sends it on "
    "every request (or `RelayApp/<version>` in its User-Agent). An older app than the "
    "operation serves gets 426; without it the request is served.",
    "schema": {"type": "string", "pattern": appversion.VERSION_PATTERN},
}


class OpenAPIBuildError(ValueError):
    """The modules' documents cannot be merged into one (e.g. two different schemas, one name)."""


class _Placeholder:
    """Stands in for a module's service and idempotency store: ``create_app`` only stores
    them, and describing the routes never calls them, so no settings, env or AWS are needed."""

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"the OpenAPI builder's placeholder has no {name!r}: "
            "create_app must not use its service while building the app"
        )


# --- inputs --------------------------------------------------------------------------


def load_routes(path: Path = ROUTES_FILE) -> RouteTable:
    """The route table, with every ``${VAR}`` upstream replaced by a placeholder URL."""
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    names = {
        name
        for spec in data.get("modules", {}).values()
        for name in re.findall(r"\$\{(\w+)\}", str(spec.get("upstream", "")))
    }
    return RouteTable.from_dict(data, env=dict.fromkeys(names, "http://placeholder"))


def module_document(module: str) -> dict[str, Any]:
    """``modules.<module>.app.create_app(...)``'s own OpenAPI document, built offline."""
    create_app = importlib.import_module(f"modules.{module}.app").create_app
    placeholders = {
        name: _Placeholder()
        for name in ("service", "idempotency")
        if name in inspect.signature(create_app).parameters
    }
    return create_app(**placeholders).openapi()


def version() -> str:
    with open(PYPROJECT, "rb") as fh:
        return tomllib.load(fh)["project"]["version"]


# --- the document --------------------------------------------------------------------


def build_document(routes: RouteTable | None = None) -> dict[str, Any]:
    """One OpenAPI 3.1 document for every route of the route table (never ``/healthz``)."""
    table = routes or load_routes()
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    for module in sorted({route.module for route in table.routes}):
        doc = module_document(module)
        for path, item in doc.get("paths", {}).items():
            route = table.match(path)
            if route is None or route.module != module:
                continue  # not reachable through the gateway
            for method, op in item.items():
                if method in METHODS:
                    op = _app_versions(_operation(op, method, route), method, route, table.app)
                    paths.setdefault(path, {})[method] = op
        _merge(schemas, doc.get("components", {}).get("schemas", {}), module)
    _merge(schemas, _contract_schemas(Problem, DeferredAccepted), "shared_contracts")
    _add_gateway_routes(paths, schemas)
    _check_operation_ids(paths)
    _check_deprecations(table, paths)
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": version(), "description": DESCRIPTION},
        "paths": paths,
        "components": {
            "schemas": _reachable(schemas, paths),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
        "tags": [{"name": m} for m in sorted({r.module for r in table.routes})],
    }


def _add_gateway_routes(paths: dict[str, dict[str, Any]], schemas: dict[str, Any]) -> None:
    """The mobile routes the gateway answers itself (the state of a deferred write)."""
    from gateway.deferred import tracking

    app = FastAPI()
    app.include_router(tracking.router)
    doc = app.openapi()
    route = Route(prefix="/deferred", module="gateway", roles=frozenset(Role))
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            if method in METHODS:
                op = _operation(op, method, route)
                op["responses"]["422"] = _problem("The tracking id is malformed.")
                op["responses"]["404"] = _problem(
                    "No write with this tracking id (or not the caller's)."
                )
                paths.setdefault(path, {})[method] = op
    _merge(
        schemas,
        {
            name: schema
            for name, schema in doc["components"]["schemas"].items()
            if not name.startswith(("HTTPValidationError", "ValidationError"))
        },
        "gateway",
    )


def _operation(module_op: dict[str, Any], method: str, route: Route) -> dict[str, Any]:
    """A module's operation as the gateway exposes it on ``route``."""
    op = copy.deepcopy(module_op)
    op["tags"] = [route.module]
    notes = [op["description"]] if op.get("description") else []
    responses = op.setdefault("responses", {})
    for response in responses.values():
        _problem_content(response)
    # The identity header is the gateway's to send, never the client's.
    params = [
        p
        for p in op.get("parameters", [])
        if not (p.get("in") == "header" and p.get("name", "").lower() == headers.IDENTITY)
    ]
    if method == "post":
        params = _with_idempotency_key(params)
    conditional = route.etag and method == "get"
    if conditional:
        params = [
            p
            for p in params
            if not (p.get("in") == "header" and p.get("name", "").lower() == "if-none-match")
        ] + [copy.deepcopy(IF_NONE_MATCH)]
    if params:
        op["parameters"] = params
    else:
        op.pop("parameters", None)

    if route.auth == "none":
        notes.append("Public: no bearer token is needed.")
    else:
        roles = ", ".join(sorted(role.value for role in route.roles))
        notes.append(f"Roles: {roles}.")
        op["security"] = [{"bearer": []}]
        responses["401"] = _problem(
            "Missing, malformed or expired bearer token.",
            {"WWW-Authenticate": _header("The bearer challenge.")},
        )
        responses["403"] = _problem(f"Not allowed: this operation is for the roles {roles}.")
    responses["429"] = _problem(
        "Rate limited: retry after `Retry-After` seconds.", {"Retry-After": RETRY_AFTER}
    )
    responses["503"] = _problem(
        "The module is unavailable and no fallback could answer (`unavailable`), or the "
        "gateway is overloaded and sheds this operation's tier (`overloaded`): retry after "
        "`Retry-After` seconds.",
        {"Retry-After": RETRY_AFTER},
    )

    fallback = route.fallback_for(method)
    if fallback == "deferred":
        notes.append(
            "While the module is unavailable a write that carries an "
            "`Idempotency-Key` is accepted with 202 and applied later, in order, "
            f"with that key; the 202 carries `{DEGRADED_HEADER}`."
        )
        responses["202"] = {
            "description": "Accepted for later: the module is unavailable and the write is "
            "queued; `tracking_id` is its Idempotency-Key.",
            "headers": {DEGRADED_HEADER: copy.deepcopy(DEGRADED)},
            "content": {
                "application/json": {
                    "schema": {"$ref": REF.format(model=DeferredAccepted.__name__)}
                }
            },
        }
    elif fallback is not None:
        notes.append(
            f"While the module is unavailable the gateway's `{fallback}` fallback "
            f"may answer (200) instead; such answers carry the `{DEGRADED_HEADER}` "
            "response header."
        )
        success = responses.setdefault("200", _fallback_success(responses))
        success.setdefault("headers", {})[DEGRADED_HEADER] = copy.deepcopy(DEGRADED)
    if conditional:
        notes.append(_conditional(responses, degraded=fallback is not None))
    op["description"] = "\n\n".join(notes)
    return op


def _app_versions(op: dict[str, Any], method: str, route: Route, app: AppConfig) -> dict[str, Any]:
    """What the gateway's app version check adds to an operation it forwards: the
    ``Relay-App-Version`` parameter, the 426 (and 400) it answers, and ``deprecated``."""
    op["parameters"] = [*op.get("parameters", []), copy.deepcopy(APP_VERSION)]
    responses = op["responses"]
    minimum = route.min_app_version or app.min_version
    if minimum is not None:
        responses["426"] = _problem(
            f"The app is older than {minimum}, the oldest this operation serves "
            f"(`upgrade-required`): update the app from its store. `{appversion.HEADER}` "
            "missing is served.",
            {appversion.MIN_VERSION_HEADER: _header("The oldest app version served.")},
        )
    responses.setdefault(
        "400", _problem(f"Malformed `{appversion.HEADER}` (`invalid-app-version`).")
    )
    deprecation = route.deprecated.get(method.upper())
    if deprecation is not None:
        op["deprecated"] = True
        sunset = f", sunset {deprecation.sunset}" if deprecation.sunset else ""
        op["description"] = "\n\n".join(
            filter(
                None,
                [
                    op.get("description"),
                    f"Deprecated since {deprecation.since}{sunset}: every answer carries "
                    f"`Deprecation`, `Sunset` and `Link` ({deprecation.link}).",
                ],
            )
        )
    return op


def _check_deprecations(table: RouteTable, paths: dict[str, dict[str, Any]]) -> None:
    """Every deprecated method of the route table names an operation a module serves."""
    for route in table.routes:
        for method in route.deprecated:
            if not any(
                method.lower() in item and route.matches(path) and table.match(path) is route
                for path, item in paths.items()
            ):
                raise OpenAPIBuildError(
                    f"route {route.prefix} deprecates {method}, which no operation under it has"
                )


def _conditional(responses: dict[str, Any], *, degraded: bool) -> str:
    """The ETag on the 200 and the 304 of a route with ``etag = true``; the note saying so."""
    validators = {"ETag": ETAG, "Cache-Control": CACHE_CONTROL, "Vary": VARY}
    marker = {DEGRADED_HEADER: DEGRADED, "Age": AGE} if degraded else {}
    success = responses.setdefault("200", {"description": "Successful Response"})
    success.setdefault("headers", {}).update(copy.deepcopy({**validators, **marker}))
    responses["304"] = {
        "description": "Not modified: the answer is the one whose ETag was sent in "
        "If-None-Match. No body; the headers say where it came from.",
        "headers": copy.deepcopy({**validators, **marker}),
    }
    return (
        "Conditional: the 200 carries a strong `ETag`; a request whose `If-None-Match` "
        "names it is answered 304 without a body"
        + (
            f" (live or degraded alike; a degraded 304 carries `{DEGRADED_HEADER}`)."
            if degraded
            else "."
        )
    )


def _with_idempotency_key(params: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``params`` with one canonical, optional ``Idempotency-Key`` header parameter."""
    key = IDEMPOTENCY_HEADER.lower()
    listed = [p for p in params if p.get("in") == "header" and p.get("name", "").lower() == key]
    description = listed[0].get("description") if listed else None
    return [p for p in params if p not in listed] + [
        {
            "name": IDEMPOTENCY_HEADER,
            "in": "header",
            "required": False,
            "description": description
            or "A retry with the same key and request gets the "
            "first answer, and the write happens once.",
            "schema": {"type": "string", "pattern": f"^{headers.IDEMPOTENCY_KEY_PATTERN}$"},
        }
    ]


def _problem(description: str, response_headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM: {"schema": {"$ref": REF.format(model=Problem.__name__)}}},
    }
    if response_headers:
        response["headers"] = copy.deepcopy(response_headers)
    return response


def _problem_content(response: dict[str, Any]) -> None:
    """FastAPI files a ``responses=`` model under ``application/json``; the modules answer
    those errors as problem+json only, so the schema moves there."""
    content = response.get("content", {})
    if PROBLEM in content and "schema" not in content[PROBLEM] and "application/json" in content:
        content[PROBLEM] = content.pop("application/json")


def _fallback_success(responses: dict[str, Any]) -> dict[str, Any]:
    """A 200 for fallbacks of operations that answer 201 live (e.g. an already issued pass)."""
    live: dict[str, Any] = next(
        (r for status, r in sorted(responses.items()) if status.startswith("2")), {}
    )
    return {
        "description": "Answered by a fallback while the module is unavailable.",
        **({"content": copy.deepcopy(live["content"])} if "content" in live else {}),
    }


def _contract_schemas(*models: type[BaseModel]) -> dict[str, Any]:
    """The models' schemas exactly as FastAPI renders them in the modules' documents."""
    app = FastAPI()
    for i, model in enumerate(models):
        app.add_api_route(f"/{i}", lambda: None, response_model=model)
    return app.openapi()["components"]["schemas"]


def _merge(into: dict[str, Any], schemas: dict[str, Any], source: str) -> None:
    for name, schema in schemas.items():
        if name in into and into[name] != schema:
            raise OpenAPIBuildError(
                f"schema {name!r} from {source} differs from the one "
                "another module publishes; rename one of them"
            )
        into[name] = schema


def _check_operation_ids(paths: dict[str, dict[str, Any]]) -> None:
    seen: set[str] = set()
    for item in paths.values():
        for op in item.values():
            if (op_id := op.get("operationId")) in seen:
                raise OpenAPIBuildError(f"two operations share the operationId {op_id!r}")
            seen.add(op_id)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value.rsplit("/", 1)[-1]
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _reachable(schemas: dict[str, Any], paths: dict[str, Any]) -> dict[str, Any]:
    """Only the schemas the published operations use, directly or through other schemas."""
    keep: set[str] = set()
    todo = list(_refs(paths))
    while todo:
        name = todo.pop()
        if name not in keep:
            keep.add(name)
            todo.extend(_refs(schemas[name]))
    return {name: schemas[name] for name in sorted(keep)}


# --- the checked-in file -------------------------------------------------------------


def render(document: dict[str, Any]) -> str:
    """The file's text: sorted keys, so a rebuild of an unchanged API is byte-identical."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs, by operation and schema: ``+ GET /loads``, ``~ schema LoadPublic``."""

    def parts(doc: dict[str, Any]) -> dict[str, Any]:
        out = {
            f"{m.upper()} {p}": op
            for p, item in doc.get("paths", {}).items()
            for m, op in item.items()
        }
        for kind, entries in doc.get("components", {}).items():
            out.update({f"{kind} {name}": v for name, v in entries.items()})
        out.update({k: v for k, v in doc.items() if k not in ("paths", "components")})
        return out

    before, after = parts(old), parts(new)
    lines = [f"- {k}" for k in sorted(before.keys() - after.keys())]
    lines += [f"+ {k}" for k in sorted(after.keys() - before.keys())]
    lines += [f"~ {k}" for k in sorted(before.keys() & after.keys()) if before[k] != after[k]]
    return lines


def _compare(path: Path) -> tuple[str, list[str]]:
    """The document's text as built now, and how the file at ``path`` differs from it."""
    document = build_document()
    text = render(document)
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    if current == text:
        return text, []
    try:
        old = json.loads(current) if current else {}
    except ValueError:
        old = {}
    return text, changes(old, document) or ["~ formatting only"]


def check(path: Path = DOCUMENT_FILE) -> list[str]:
    """What ``write`` would change; empty when the checked-in file is current."""
    return _compare(path)[1]


def write(path: Path = DOCUMENT_FILE) -> list[str]:
    """Rewrite ``path`` from the contracts; returns what changed (empty: nothing did)."""
    text, changed = _compare(path)
    if changed:
        path.write_text(text, encoding="utf-8")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m relay.openapi",
        description="Write gateway/ops/openapi.json from the modules' contracts.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if the checked-in document is stale; write nothing",
    )
    parser.add_argument(
        "--path",
        type=Path,
        default=DOCUMENT_FILE,
        help="the document file (default: gateway/ops/openapi.json)",
    )
    args = parser.parse_args(argv)
    name = shown(args.path)
    if args.check:
        stale = check(args.path)
        if stale:
            print(f"{name} is stale; run `make openapi` and commit it:", file=sys.stderr)
            print("\n".join(f"  {line}" for line in stale), file=sys.stderr)
            return 1
        print(f"{name} is up to date")
        return 0
    changed = write(args.path)
    if not changed:
        print(f"{name} unchanged")
    else:
        print(f"wrote {name}:")
        print("\n".join(f"  {line}" for line in changed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
