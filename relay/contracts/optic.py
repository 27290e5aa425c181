"""Optic (``@useoptic/optic``) and what it finds: the breaking changes between two
documents."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..paths import ROOT, shown
from .exceptions import ContractsError

OPTIC = ROOT / ".tools" / "optic" / "node_modules" / ".bin" / "optic"
STANDARD_FILE = ROOT / "tools" / "optic" / "standard.yml"
# Optic offline and quiet: no telemetry, no update check; CI mode writes its results as
# JSON (ci-run-details.json in its working directory), which is what is read.
OPTIC_ENV = {"OPTIC_TELEMETRY_LEVEL": "off", "NO_UPDATE_NOTIFIER": "1", "CI": "true"}
OPTIC_RESULTS_FILE = "ci-run-details.json"
DEFAULT_TIMEOUT_SECONDS = 120.0
METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options", "trace"})


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
