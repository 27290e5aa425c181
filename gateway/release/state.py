"""A module's release: which version is stable, which is the canary, and how many drivers
the canary serves, in the control table where every gateway instance reads it.

One item per module (``kind = "release"``, ``name`` = module; ``ControlTable`` in
template.yaml). The release controller (``relay deploy``, ``relay release``) writes it at
each step; every gateway instance keeps a copy (:class:`gateway.release.router.Releases`)
and routes by it. Writes are conditional on the item's ``revision``, so an operator's
rollback is never overwritten by a controller that did not see it. A finished release
stays in the item (its phase says so) until the next one replaces it, and a copy of it is
kept under ``kind = "release-history"`` for the record.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from typing import Any, Literal, Protocol

from gateway import aws_calls

Phase = Literal["running", "promoted", "rolled-back"]
DEFAULT_STEPS: tuple[float, ...] = (1.0, 10.0, 50.0, 100.0)
HISTORY_TTL_SECONDS = 90 * 86_400  # a finished release's record is kept 90 days


@dataclass(frozen=True, slots=True)
class Release:
    """One release of one module. Times are wall-clock epoch seconds."""

    module: str
    release_id: str
    stable_version: str
    canary_version: str
    canary_url: str
    stable_url: str | None = None  # None: the route table's (or directory's) URL is stable
    steps: tuple[float, ...] = DEFAULT_STEPS
    step: int = 0  # index into steps while running
    weight: float = 0.0  # percent of drivers on the canary now (0..100)
    phase: Phase = "running"
    started_at: float = 0.0
    updated_at: float = 0.0
    updated_by: str = ""
    revision: int = 0  # bumped by every write
    evidence: tuple[dict[str, Any], ...] = field(default=())  # one entry per verdict

    @property
    def routing(self) -> bool:
        """The canary takes traffic: the release is running at a weight above 0."""
        return self.phase == "running" and self.weight > 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Release:
        data = json.loads(text)
        data["steps"] = tuple(float(s) for s in data.get("steps", DEFAULT_STEPS))
        data["evidence"] = tuple(data.get("evidence", ()))
        return cls(**data)

    def view(self) -> dict[str, Any]:
        """As ``/ops/status`` shows it (the evidence stays in the store)."""
        out = asdict(self)
        out.pop("evidence")
        out["verdicts"] = len(self.evidence)
        return out


class ReleaseSource(Protocol):
    """What a gateway needs of the releases: to read them all (it never writes one).
    Synchronous (boto3): called on the AWS thread pool with a deadline."""

    def load(self) -> dict[str, Release]: ...


class ReleaseStore(ReleaseSource, Protocol):
    """Where releases live, as the controller reads and writes them."""

    def get(self, module: str) -> Release | None: ...

    def put(self, release: Release, *, expected_revision: int | None) -> Release | None: ...


class ControlTableReleases(aws_calls.DynamoTable):
    """Releases in the control table: ``kind = "release"``, ``name`` = module, the release
    as JSON in ``record`` and its ``revision`` beside it for the conditional writes."""

    KIND = "release"
    HISTORY = "release-history"

    def get(self, module: str) -> Release | None:
        item = self.table.get_item(
            Key={"kind": self.KIND, "name": module}, ConsistentRead=True
        ).get("Item")
        return None if item is None else Release.from_json(item["record"])

    def load(self) -> dict[str, Release]:
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "kind = :k",
            "ExpressionAttributeValues": {":k": self.KIND},
            "ConsistentRead": True,
        }
        out: dict[str, Release] = {}
        while True:
            page = self.table.query(**kwargs)
            for item in page.get("Items", []):
                release = Release.from_json(item["record"])
                out[release.module] = release
            if "LastEvaluatedKey" not in page:
                return out
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def put(self, release: Release, *, expected_revision: int | None) -> Release | None:
        """Write ``release`` as the next revision if the stored one is ``expected_revision``
        (None: there must be none); the stored release, or None if someone else wrote
        first. A finished release is also kept in the history."""
        stored = replace(release, revision=(expected_revision or 0) + 1)
        if expected_revision is None:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(#n)"}
            condition["ExpressionAttributeNames"] = {"#n": "name"}
        else:
            condition = {
                "ConditionExpression": "revision = :expected",
                "ExpressionAttributeValues": {":expected": expected_revision},
            }
        try:
            self.table.put_item(
                Item={
                    "kind": self.KIND,
                    "name": release.module,
                    "revision": stored.revision,
                    "record": stored.to_json(),
                },
                **condition,
            )
        except Exception as exc:
            code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code")
            if code == "ConditionalCheckFailedException":
                return None
            raise
        if stored.phase != "running":
            self.table.put_item(
                Item={
                    "kind": self.HISTORY,
                    "name": f"{stored.module}#{stored.release_id}",
                    "record": stored.to_json(),
                    "expires_at": int(Decimal(str(stored.updated_at))) + HISTORY_TTL_SECONDS,
                }
            )
        return stored

    def history(self, module: str) -> list[Release]:
        """The module's finished releases, oldest first."""
        page = self.table.query(
            KeyConditionExpression="kind = :k AND begins_with(#n, :m)",
            ExpressionAttributeNames={"#n": "name"},
            ExpressionAttributeValues={":k": self.HISTORY, ":m": f"{module}#"},
        )
        found = [Release.from_json(item["record"]) for item in page.get("Items", [])]
        return sorted(found, key=lambda r: r.updated_at)
