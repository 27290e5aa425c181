"""Each published document against its released baseline (``contracts/baseline``): the
check, and the release that rewrites the baselines."""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..paths import ROOT, shown
from . import constraints
from .exceptions import ContractsError
from .optic import Finding, Optic
from .pacts import PACTS_DIR, Interaction, consumers, load_pacts
from .published import (
    CONTRACT_VERSION_ATTRIBUTE,
    EVENT_PREFIX,
    comparable,
    documents,
    major,
    modules,
)

BASELINE_DIR = ROOT / "contracts" / "baseline"
DEFAULT_WORKERS = 2


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
        judged = pool.map(lambda ba: optic.breaking(*ba) + constraints.changed(*ba), to_diff)
        found = iter([_outermost(f) for f in judged])
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
    from ..openapi import render

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
