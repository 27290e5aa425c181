"""Which cell of a celled module holds a partition key: a deterministic default, and the
explicit placements operators make (``relay cells move``) in the placement table.

The default spreads keys over a module's cells by rendezvous hashing: each (cell, key) pair
gets a score (BLAKE2b of both), and the key lives in the cell with the highest one. It
needs no table, is the same on every instance and in every tool, and when a cell joins,
only the keys whose new highest score is the new cell's (about 1/N of them) change their
default, so they can be moved first (docs/cells.md).

An explicit placement is one item in the placement table (``CellPlacementTable`` in
template.yaml): ``module`` (hash key), ``key`` (range key), ``cell``, ``state`` and
``revision``. ``state = "moving"`` while ``relay cells move`` copies the key's data to
``to``: the gateways keep reading from ``cell`` and defer the key's writes until the move
flips the item to ``{cell: to, state: placed}``. Every write is conditional on the
``revision`` it read, so two moves of one key never interleave.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, Protocol

from gateway import aws_calls

State = Literal["placed", "moving"]


def default_cell(key: str, cells: Sequence[str]) -> str:
    """The cell ``key`` lives in when nothing is placed explicitly (rendezvous hashing)."""

    def score(cell: str) -> bytes:
        return hashlib.blake2b(f"{cell}\x00{key}".encode(), digest_size=8).digest()

    return max(cells, key=score)


@dataclass(frozen=True, slots=True)
class Placement:
    """An explicit placement of one key of one module. Times are wall-clock epoch seconds."""

    module: str
    key: str
    cell: str  # where the key's data is read from (and written to once placed)
    state: State = "placed"
    to: str | None = None  # while moving: the cell its data is being copied to
    revision: int = 0  # bumped by every write
    updated_by: str = ""
    reason: str = ""
    updated_at: float = 0.0

    @property
    def moving(self) -> bool:
        return self.state == "moving"

    def view(self) -> dict[str, Any]:
        return asdict(self)


class PlacementSource(Protocol):
    """What a gateway needs: every explicit placement of a module (it never writes one).
    Synchronous (boto3): called on the AWS thread pool with a deadline."""

    def load(self, module: str) -> dict[str, Placement]: ...


class PlacementStore(PlacementSource, Protocol):
    """The placements as ``relay cells`` reads and writes them."""

    def get(self, module: str, key: str) -> Placement | None: ...

    def put(self, placement: Placement, *, expected_revision: int | None) -> Placement | None: ...


class PlacementTable(aws_calls.DynamoTable):
    """The placement table (``RELAY_PLACEMENT_TABLE``)."""

    def get(self, module: str, key: str) -> Placement | None:
        item = self.table.get_item(Key={"module": module, "key": key}, ConsistentRead=True).get(
            "Item"
        )
        return None if item is None else _placement(item)

    def load(self, module: str) -> dict[str, Placement]:
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "#m = :m",
            "ExpressionAttributeNames": {"#m": "module"},
            "ExpressionAttributeValues": {":m": module},
            "ConsistentRead": True,
        }
        out: dict[str, Placement] = {}
        while True:
            page = self.table.query(**kwargs)
            for item in page.get("Items", []):
                placement = _placement(item)
                out[placement.key] = placement
            if "LastEvaluatedKey" not in page:
                return out
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def put(self, placement: Placement, *, expected_revision: int | None) -> Placement | None:
        """Write ``placement`` as the next revision if the stored one is ``expected_revision``
        (None: there must be none); the stored placement, or None if another write came
        first."""
        stored = replace(
            placement,
            revision=(expected_revision or 0) + 1,
            updated_at=placement.updated_at or time.time(),
        )
        if expected_revision is None:
            condition: dict[str, Any] = {
                "ConditionExpression": "attribute_not_exists(#k)",
                "ExpressionAttributeNames": {"#k": "key"},
            }
        else:
            condition = {
                "ConditionExpression": "revision = :expected",
                "ExpressionAttributeValues": {":expected": expected_revision},
            }
        item = {k: v for k, v in asdict(stored).items() if v is not None}
        item["updated_at"] = str(stored.updated_at)  # no float in DynamoDB's resource API
        try:
            self.table.put_item(Item=item, **condition)
        except Exception as exc:
            code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code")
            if code == "ConditionalCheckFailedException":
                return None
            raise
        return stored


def _placement(item: dict[str, Any]) -> Placement:
    return Placement(
        module=item["module"],
        key=item["key"],
        cell=item["cell"],
        state=item.get("state", "placed"),
        to=item.get("to"),
        revision=int(item.get("revision", 0)),
        updated_by=item.get("updated_by", ""),
        reason=item.get("reason", ""),
        updated_at=float(item.get("updated_at", 0)),
    )
