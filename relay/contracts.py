"""Breaking-change check: each module's published contract against its released baseline.

A module publishes two documents, both OpenAPI 3.1 so one checker reads them:

- ``openapi.json``: its HTTP API, ``create_app(...).openapi()`` built offline
  (:func:`relay.openapi.module_document`);
- ``events.json``: what it publishes to other components (table records and their stream
  images, queue and topic messages, :data:`EVENTS`), one pseudo-operation
  ``GET /events/<name>`` per event whose 200 body is the event's schema. Nothing serves
  those paths; the form only lets the same rules judge events as answers.

The released baselines are committed under ``contracts/baseline/<module>/``. The check
compares each document with its baseline through Optic (``@useoptic/optic``, pinned by
``tools/optic/package-lock.json``, installed in ``.tools/optic`` by ``make optic``; it runs
offline, telemetry off) and its ``breaking-changes`` rules (``tools/optic/standard.yml``):
a removed operation, status code or response field, a response field made optional, a
changed type, an enum value added to an answer or removed from a request, a new required
request field or parameter.
Each refusal names the module, the operation and field, and the consumers whose pacts
(``contracts/pacts/*.json``) call that operation or read that field.

A module breaks its contract on purpose by declaring a new major: its contract version is
its app's ``info.version`` (FastAPI's ``version=``, ``module_kit.app.API_VERSION`` unless
the module sets its own; a module without an app, notifications, declares
``CONTRACT_VERSION`` in its package). A current major above the baseline's is allowed to
break, and the check reports what it breaks and whom; ``release`` then records it.

Nullable fields (``X | None``, rendered ``anyOf: [X, {type: null}]``) are compared as the
equivalent OpenAPI 3.1 type list (``type: [X, "null"]``): Optic treats every ``anyOf`` as
a union and skips the removal of a union-typed property, which would hide the removal of
any optional field.

    python -m relay.contracts --check [module ...]     # exit 1 on a refused change
    python -m relay.contracts --release [module ...]   # rewrite the baselines from the tree
    relay contracts check|release [module]
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel

from shared_contracts.gatepass import GatePassPublic, Jwks
from shared_contracts.loads import LoadPublic
from shared_contracts.navigate import Destination
from shared_contracts.notifications import Notification

from .paths import ROOT, shown

# FastAPI and relay.openapi are imported where the documents are built: every `relay`
# command imports this module, and only these two need them.

BASELINE_DIR = ROOT / "contracts" / "baseline"
PACTS_DIR = ROOT / "contracts" / "pacts"
OPTIC = ROOT / ".tools" / "optic" / "node_modules" / ".bin" / "optic"
STANDARD_FILE = ROOT / "tools" / "optic" / "standard.yml"
OPENAPI_FILE = "openapi.json"
EVENTS_FILE = "events.json"
# Optic offline and quiet: no telemetry, no update check; CI mode writes its results as
# JSON (ci-run-details.json in its working directory), which is what is read.
OPTIC_ENV = {"OPTIC_TELEMETRY_LEVEL": "off", "NO_UPDATE_NOTIFIER": "1", "CI": "true"}
OPTIC_RESULTS_FILE = "ci-run-details.json"
DEFAULT_TIMEOUT_SECONDS = 120.0
DEFAULT_WORKERS = 2
CONTRACT_VERSION_ATTRIBUTE = "CONTRACT_VERSION"
EVENT_PREFIX = "/events/"
METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options", "trace"})
# A message is about an event when at least this share of its document's fields are the
# event's (a consumer's pact holds only the fields it reads, maybe one the event dropped).
EVENT_MATCH_SHARE = 0.75


class ContractsError(RuntimeError):
    """The check could not run (Optic missing or failing, a file unreadable), or a release
    was refused."""


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


# --- the documents -------------------------------------------------------------------


def modules() -> tuple[str, ...]:
    """Every module with a published contract: an HTTP app or events."""
    apps = {p.parent.name for p in (ROOT / "modules").glob("*/app.py")}
    return tuple(sorted(apps | set(EVENTS)))


def openapi_document(module: str) -> dict[str, Any] | None:
    """The module's HTTP API document, or None if it has no app."""
    from .openapi import module_document

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
    """The module's events (:data:`EVENTS`) as an OpenAPI document of pseudo-operations."""
    from fastapi import FastAPI

    app = FastAPI(
        title=f"Relay {module} events",
        version=version,
        description=EVENTS_DESCRIPTION.format(module=module),
    )
    for event in EVENTS.get(module, ()):
        app.add_api_route(
            EVENT_PREFIX + event.name,
            _not_served,
            methods=["GET"],
            response_model=event.model,
            summary=f"{module} publishes {event.name}",
            description=event.description,
            operation_id=f"{module}_{event.name}_event".replace("-", "_"),
            tags=["events"],
        )
    return app.openapi()


def _not_served() -> None:  # pragma: no cover - the events' pseudo-operations are never called
    raise NotImplementedError


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
    (a ``$ref`` X inlined), which Optic checks field by field (module docstring)."""
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


# --- Optic ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One breaking change Optic found: where (a JSON pointer into the documents) and why."""

    pointer: str
    rule: str
    message: str
    spec: str = "before"  # the document the pointer is into: "before" or "after"

    @property
    def parts(self) -> list[str]:
        return [p.replace("~1", "/").replace("~0", "~") for p in self.pointer.split("/")[1:]]

    @property
    def operation(self) -> tuple[str, str] | None:
        """(METHOD, path template), if the change is within an operation."""
        parts = self.parts
        if len(parts) >= 3 and parts[0] == "paths" and parts[2] in METHODS:
            return parts[2].upper(), parts[1]
        return None

    @property
    def status(self) -> str | None:
        parts = self.parts
        return parts[4] if len(parts) >= 5 and parts[3] == "responses" else None

    @property
    def side(self) -> str:
        """``response``, ``request`` (body or parameters) or ``operation``."""
        parts = self.parts
        if len(parts) <= 3:
            return "operation"
        return "response" if parts[3] == "responses" else "request"

    @property
    def field(self) -> str | None:
        """The field as a dotted path (``load.version``, ``items[].version``), if any."""
        parts = self.parts
        if "schema" not in parts:
            return None
        names: list[str] = []
        walk = iter(parts[parts.index("schema") + 1 :])
        for part in walk:
            if part == "properties":
                names.append(next(walk, ""))
            elif part == "items" and names:
                names[-1] += "[]"
        return ".".join(names) or None


class Optic:
    """``optic diff <before> <after> --check`` with the breaking-changes standard."""

    def __init__(
        self,
        executable: Path = OPTIC,
        standard: Path = STANDARD_FILE,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.executable = executable
        self.standard = standard
        self.timeout_seconds = timeout_seconds

    def breaking(self, before: dict[str, Any], after: dict[str, Any]) -> list[Finding]:
        """The breaking changes from ``before`` to ``after`` (Optic's failed checks)."""
        if not self.executable.exists():
            raise ContractsError(
                f"Optic is not installed ({shown(self.executable)}): run `make optic`"
            )
        with tempfile.TemporaryDirectory(prefix="relay-contracts-") as tmp:
            work = Path(tmp)
            (work / "before.json").write_text(json.dumps(before), encoding="utf-8")
            (work / "after.json").write_text(json.dumps(after), encoding="utf-8")
            command = [str(self.executable), "diff", "before.json", "after.json", "--check"]
            command += ["--standard", str(self.standard.resolve()), "--severity", "error"]
            try:
                done = subprocess.run(
                    command,
                    cwd=work,
                    env={**os.environ, **OPTIC_ENV},
                    capture_output=True,
                    text=True,
                    timeout=self.timeout_seconds,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise ContractsError(f"Optic took over {self.timeout_seconds:g} s") from None
            results = work / OPTIC_RESULTS_FILE
            if done.returncode not in (0, 1) or not results.exists():
                output = (done.stderr or done.stdout).strip()[-2000:]
                raise ContractsError(f"Optic failed (exit {done.returncode}): {output}")
            details = json.loads(results.read_text(encoding="utf-8"))
        if details.get("failed"):
            raise ContractsError(f"Optic could not compare: {details['failed']}")
        return [
            Finding(
                pointer=result["location"]["jsonPath"],
                rule=result.get("name", ""),
                message=_sentence(result.get("error") or result.get("where", "")),
                spec=result["location"].get("spec", "before"),
            )
            for run in details.get("completed", [])
            for result in run["comparison"]["results"]
            if not result.get("passed") and not result.get("exempted")
        ]


def _sentence(message: str) -> str:
    """Optic's message without its refrain (every finding is a breaking change)."""
    return message.replace(" This is a breaking change.", "").strip()


# --- consumers, from the pact files --------------------------------------------------


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


# --- the check -----------------------------------------------------------------------


@dataclass(frozen=True)
class BreakingChange:
    module: str
    document: str
    operation: str  # "GET /loads/{load_id}", "event load"
    field: str | None
    side: str  # "response", "request", "operation" or "<in> parameter" ("query parameter")
    status: str | None  # the response's status code
    rule: str
    message: str
    consumers: tuple[str, ...]

    def describe(self) -> str:
        where = self.operation
        if self.operation.startswith("event "):
            where += f" field `{self.field}`" if self.field else ""
        else:
            if self.side == "response" and self.status:
                where += f" {self.status}"
            if self.side.endswith("parameter"):
                where += f" {self.side} `{self.field}`"
            elif self.field:
                where += f" {self.side} field `{self.field}`"
        readers = ", ".join(self.consumers) if self.consumers else "none in contracts/pacts"
        return f"{where}: {self.message} [{self.rule}]; consumers: {readers}"


@dataclass(frozen=True)
class DocumentCheck:
    """One published document against its baseline."""

    module: str
    document: str
    released: str | None  # the baseline's info.version; None: no baseline
    current: str | None  # None: no longer published
    changed: bool
    breaking: tuple[BreakingChange, ...] = field(default=())

    @property
    def new_major(self) -> bool:
        return (
            self.released is not None
            and self.current is not None
            and major(self.current) > major(self.released)
        )

    @property
    def backwards(self) -> bool:
        return (
            self.released is not None
            and self.current is not None
            and major(self.current) < major(self.released)
        )

    @property
    def ok(self) -> bool:
        if self.released is None or self.current is None or self.backwards:
            return False
        return not self.breaking or self.new_major

    def describe(self) -> list[str]:
        name = f"{self.module}/{self.document}"
        if self.released is None:
            return [
                f"{name}: no released baseline; release it: relay contracts release {self.module}"
            ]
        if self.current is None:
            return [
                f"{name}: released {self.released}, no longer published: a breaking change; "
                f"once no consumer reads it, remove {shown(BASELINE_DIR / self.module)} by hand"
            ]
        if self.backwards:
            return [f"{name}: contract {self.current} is below the released {self.released}"]
        if not self.changed:
            return [f"{name}: as released ({self.released})"]
        if not self.breaking:
            return [
                f"{name}: changed compatibly since release {self.released}; "
                f"`relay contracts release {self.module}` records it"
            ]
        lines = [f"  {change.describe()}" for change in self.breaking]
        if self.new_major:
            head = (
                f"{name}: new major {self.current} (released {self.released}) breaks "
                f"{len(self.breaking)} thing(s), allowed; release it with "
                f"`relay contracts release {self.module}`:"
            )
            return [head, *lines]
        head = (
            f"{name}: {len(self.breaking)} breaking change(s) refused (contract "
            f"{self.current}, as released):"
        )
        tail = (
            f"  Keep the old shape, or declare contract {major(self.released) + 1} (the "
            f"module app's version, or its package's {CONTRACT_VERSION_ATTRIBUTE}) and "
            f"release it: relay contracts release {self.module}"
        )
        return [head, *lines, tail]


def read_baseline(module: str, document: str, baseline_dir: Path) -> dict[str, Any] | None:
    path = baseline_dir / module / document
    if not path.exists():
        return None
    try:
        loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ContractsError(f"{shown(path)} is not JSON: {exc}") from None
    return loaded


def check(
    names: Iterable[str] | None = None,
    *,
    baseline_dir: Path = BASELINE_DIR,
    pacts_dir: Path = PACTS_DIR,
    optic: Optic | None = None,
    built: dict[str, dict[str, dict[str, Any]]] | None = None,
    workers: int = DEFAULT_WORKERS,
) -> list[DocumentCheck]:
    """Every published document of ``names`` (default: every module, and every baseline's
    module) against its baseline. ``built`` replaces the tree's documents (tests)."""
    optic = optic or Optic()
    selected = _selected(names, baseline_dir)
    current = built if built is not None else {m: documents(m) for m in selected}
    pairs: list[tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]] = []
    for module in selected:
        files = set(current.get(module, {}))
        if (baseline_dir / module).is_dir():
            files |= {p.name for p in (baseline_dir / module).glob("*.json")}
        for document in sorted(files):
            before = read_baseline(module, document, baseline_dir)
            pairs.append((module, document, before, current.get(module, {}).get(document)))
    compared = [
        (pair, comparable(pair[2]), comparable(pair[3]))
        for pair in pairs
        if pair[2] is not None and pair[3] is not None
    ]
    to_diff = [(before, after) for _, before, after in compared if before != after]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        found = iter([_outermost(f) for f in pool.map(lambda ba: optic.breaking(*ba), to_diff)])
    interactions = load_pacts(pacts_dir) if to_diff and pacts_dir.is_dir() else []
    findings = {
        (pair[0], pair[1]): next(found) for pair, before, after in compared if before != after
    }
    checks = []
    for module, document, before, after in pairs:
        changes = findings.get((module, document), [])
        checks.append(
            DocumentCheck(
                module=module,
                document=document,
                released=_version(before),
                current=_version(after),
                changed=(module, document) in findings,
                breaking=tuple(
                    _breaking(module, document, f, before or {}, after or {}, interactions)
                    for f in changes
                ),
            )
        )
    return checks


def _outermost(findings: list[Finding]) -> list[Finding]:
    """Without the findings inside another one: a removed operation, status code or object
    field is one change, not one more per field it held."""
    pointers = {f.pointer for f in findings}

    def inside(pointer: str) -> bool:
        parts = pointer.split("/")
        return any("/".join(parts[:n]) in pointers for n in range(2, len(parts)))

    return [f for f in findings if not inside(f.pointer)]


def _version(document: dict[str, Any] | None) -> str | None:
    return None if document is None else str(document["info"]["version"])


def _selected(names: Iterable[str] | None, baseline_dir: Path) -> list[str]:
    known = set(modules())
    if names is not None:
        chosen = list(dict.fromkeys(names))
        unknown = [n for n in chosen if n not in known and not (baseline_dir / n).is_dir()]
        if unknown:
            raise ContractsError(f"no such module: {', '.join(unknown)}")
        return chosen
    released = (
        {p.name for p in baseline_dir.iterdir() if p.is_dir()} if baseline_dir.is_dir() else set()
    )
    return sorted(known | released)


def _breaking(
    module: str,
    document: str,
    finding: Finding,
    before: dict[str, Any],
    after: dict[str, Any],
    interactions: list[Interaction],
) -> BreakingChange:
    operation = finding.operation
    shown_op = "?" if operation is None else f"{operation[0]} {operation[1]}"
    properties: list[str] = []
    if operation is not None and operation[1].startswith(EVENT_PREFIX):
        shown_op = "event " + operation[1].removeprefix(EVENT_PREFIX)
        properties = _properties(before, operation)
    side, name = finding.side, finding.field
    parameter = _parameter(before if finding.spec == "before" else after, finding.parts)
    if parameter is not None:
        side, name = f"{parameter.get('in', '')} parameter", str(parameter.get("name"))
    return BreakingChange(
        module=module,
        document=document,
        operation=shown_op,
        field=name,
        side=side,
        status=finding.status,
        rule=finding.rule,
        message=finding.message,
        consumers=consumers(finding, module, interactions, event_properties=properties),
    )


def _parameter(document: dict[str, Any], parts: list[str]) -> dict[str, Any] | None:
    """The parameter a finding points into (``paths/<path>/<method>/parameters/<i>``)."""
    if len(parts) < 5 or parts[0] != "paths" or parts[3] != "parameters":
        return None
    try:
        found = document["paths"][parts[1]][parts[2]]["parameters"][int(parts[4])]
    except (KeyError, IndexError, ValueError, TypeError):
        return None
    return found if isinstance(found, dict) else None


def _properties(document: dict[str, Any], operation: tuple[str, str]) -> list[str]:
    """The top-level fields of an event's schema in ``document``."""
    method, path = operation
    try:
        response = document["paths"][path][method.lower()]["responses"]["200"]
        schema = response["content"]["application/json"]["schema"]
        while "$ref" in schema:
            schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    except KeyError:
        return []
    return list(schema.get("properties", {}))


def ok(checks: Iterable[DocumentCheck]) -> bool:
    return all(c.ok for c in checks)


# --- releasing -----------------------------------------------------------------------


def release(
    names: Iterable[str] | None = None,
    *,
    baseline_dir: Path = BASELINE_DIR,
    pacts_dir: Path = PACTS_DIR,
    optic: Optic | None = None,
) -> list[Path]:
    """Rewrite the baselines of ``names`` (default: every module) from the tree; returns
    the files written. Refused (ContractsError, nothing written) while a module breaks its
    released contract without a new major, or has gone back to a lower one."""
    from .openapi import render

    selected = _selected(names, baseline_dir)
    built = {m: documents(m) for m in selected if m in modules()}
    checks = check(
        selected, baseline_dir=baseline_dir, pacts_dir=pacts_dir, optic=optic, built=built
    )
    refused = [c for c in checks if c.released and not c.ok]
    if refused:
        lines = [line for c in refused for line in c.describe()]
        raise ContractsError("not released:\n" + "\n".join(lines))
    written = []
    for check_ in checks:
        path = baseline_dir / check_.module / check_.document
        document = built[check_.module][check_.document]  # every released one is built
        text = render(document)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


# --- command line --------------------------------------------------------------------


def run_check(names: list[str] | None) -> int:
    try:
        checks = check(names or None)
    except ContractsError as exc:
        print(f"contracts: {exc}", file=sys.stderr)
        return 2
    for c in checks:
        if c.changed or not c.ok:
            print("\n".join(c.describe()))
    same = sum(1 for c in checks if c.ok and not c.changed)
    print(f"contracts: {same} of {len(checks)} published documents as released", flush=True)
    if not ok(checks):
        print("contracts: check failed (docs/contracts.md, Breaking-change check)", file=sys.stderr)
        return 1
    return 0


def run_release(names: list[str] | None) -> int:
    try:
        written = release(names or None)
    except ContractsError as exc:
        print(f"contracts: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {shown(path)}")
    if not written:
        print("contracts: every baseline is current")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m relay.contracts",
        description="Check the modules' published contracts against their released baselines.",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="exit 1 on a refused change")
    action.add_argument(
        "--release", action="store_true", help="rewrite the baselines from the tree"
    )
    parser.add_argument("modules", nargs="*", help="the modules (default: all)")
    args = parser.parse_args(argv)
    return run_check(args.modules) if args.check else run_release(args.modules)


contracts_app = typer.Typer(
    help="The modules' published contracts against their released baselines.",
    no_args_is_help=True,
)
ModuleArg = Annotated[str | None, typer.Argument(help="One module (default: all)")]


@contracts_app.command("check")
def check_command(module: ModuleArg = None) -> None:
    """Refuse breaking changes to a released contract (exit 1), naming their consumers."""
    raise typer.Exit(run_check([module] if module else None))


@contracts_app.command("release")
def release_command(module: ModuleArg = None) -> None:
    """Record the tree's contracts as the released baselines."""
    raise typer.Exit(run_release([module] if module else None))


if __name__ == "__main__":
    sys.exit(main())
