"""The fallback store: what the critical fallbacks serve while a module is down, for every
gateway instance (``FallbackStoreTable``, owned by the gateway stack).

Kept current by :mod:`gateway.fallbackstore.projector` from the modules' table streams;
the gateway only reads it, each read under a deadline (:mod:`gateway.aws_calls`).

Items (``pk``, ``sk``; every item has ``projected_at``, epoch seconds, when the projector
wrote it, and ``changed_at``, when the module made the change):

- ``driver#<driver id>`` / ``load#<load id>``: a load (``doc``: ``LoadPublic`` JSON),
  with ``version``, the load's own (a lower one never overwrites it);
- ``driver#<driver id>`` / ``pass#<pass id>``: a gate pass (``doc``: ``GatePassPublic``
  JSON), with ``revoked``, ``seq`` and ``expires_at`` (TTL: its ``valid_until``);
- ``revoked#<pass id>`` / ``-``: a revoked pass, with ``valid_until`` and ``expires_at``;
- ``gatepass`` / ``jwks``: the published keys (``doc``: ``Jwks`` JSON), with
  ``published_at`` (epoch ms, the module's: lower never overwrites);
- ``facility#<facility id>`` / ``-``: a facility's entry data (``doc``: ``Destination``
  JSON), with ``seq``.

``seq`` is the stream record's sequence number, zero-padded to :data:`SEQ_WIDTH` digits so
that DynamoDB's string order is their numeric order: a record older than the stored one
never overwrites it. A revoked pass is never made valid again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Key
from botocore.exceptions import BotoCoreError, ClientError

from gateway import aws_calls

log = logging.getLogger("relay.gateway.fallbackstore")

SEQ_WIDTH = 40  # DynamoDB Streams sequence numbers have at most 40 digits
NO_SORT = "-"
JWKS_KEY = {"pk": "gatepass", "sk": "jwks"}
DEFAULT_TIMEOUT_SECONDS = 0.5


def driver_pk(driver_id: str) -> str:
    return f"driver#{driver_id}"


def revoked_key(pass_id: str) -> dict[str, str]:
    return {"pk": f"revoked#{pass_id}", "sk": NO_SORT}


def facility_key(facility_id: str) -> dict[str, str]:
    return {"pk": f"facility#{facility_id}", "sk": NO_SORT}


def padded_seq(sequence_number: str) -> str:
    return sequence_number.zfill(SEQ_WIDTH)


class StoreUnavailable(Exception):
    """The store did not answer in time, or failed: the fallback has no answer (503)."""


@dataclass(frozen=True)
class StoredCopy:
    """One document as the store holds it, and when the projector wrote it."""

    doc: str
    projected_at: float


class FallbackStore:
    """Reads (async, each under ``timeout_seconds``) for the gateway's fallbacks, and the
    conditional writes the projector makes (sync: it runs in its own Lambda function)."""

    def __init__(
        self,
        table_name: str,
        *,
        dynamodb: Any = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._table = aws_calls.DynamoTable(table_name, dynamodb=dynamodb)
        self.table_name = table_name
        self.timeout_seconds = timeout_seconds
        self.clock = clock

    @property
    def table(self) -> Any:
        return self._table.table

    # --- reads (the gateway) ----------------------------------------------------------

    async def _call(self, fn: Callable[[], Any], what: str) -> Any:
        try:
            return await aws_calls.call(fn, timeout=self.timeout_seconds, what=what)
        except (aws_calls.DependencyTimeout, BotoCoreError, ClientError) as exc:
            raise StoreUnavailable(f"{what}: {exc}") from exc

    async def _get(self, key: dict[str, str], what: str) -> dict[str, Any] | None:
        def get() -> dict[str, Any] | None:
            item: dict[str, Any] | None = self.table.get_item(Key=key).get("Item")
            return item

        result: dict[str, Any] | None = await self._call(get, what)
        return result

    async def _query(self, pk: str, prefix: str, what: str) -> list[dict[str, Any]]:
        def query() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = []
            kwargs: dict[str, Any] = {
                "KeyConditionExpression": Key("pk").eq(pk) & Key("sk").begins_with(prefix)
            }
            while True:
                page = self.table.query(**kwargs)
                items.extend(page.get("Items", []))
                if "LastEvaluatedKey" not in page:
                    return items
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

        result: list[dict[str, Any]] = await self._call(query, what)
        return result

    @staticmethod
    def _copy(item: dict[str, Any] | None) -> StoredCopy | None:
        if item is None or not isinstance(item.get("doc"), str):
            return None
        return StoredCopy(item["doc"], float(item.get("projected_at", 0)))

    async def loads(self, driver_id: str) -> list[StoredCopy]:
        """The driver's loads as projected (``LoadPublic`` JSON each)."""
        items = await self._query(driver_pk(driver_id), "load#", "fallback store (loads)")
        return [c for c in map(self._copy, items) if c is not None]

    async def load(self, driver_id: str, load_id: str) -> StoredCopy | None:
        key = {"pk": driver_pk(driver_id), "sk": f"load#{load_id}"}
        return self._copy(await self._get(key, "fallback store (load)"))

    async def passes(self, driver_id: str) -> list[StoredCopy]:
        """The driver's passes as projected (``GatePassPublic`` JSON each), expired ones
        included until TTL removes them: the caller checks validity."""
        items = await self._query(driver_pk(driver_id), "pass#", "fallback store (passes)")
        return [c for c in map(self._copy, items) if c is not None]

    async def gate_pass(self, driver_id: str, pass_id: str) -> StoredCopy | None:
        key = {"pk": driver_pk(driver_id), "sk": f"pass#{pass_id}"}
        return self._copy(await self._get(key, "fallback store (pass)"))

    async def jwks(self) -> StoredCopy | None:
        return self._copy(await self._get(JWKS_KEY, "fallback store (keys)"))

    async def is_revoked(self, pass_id: str) -> bool:
        return await self._get(revoked_key(pass_id), "fallback store (revocation)") is not None

    async def facility(self, facility_id: str) -> StoredCopy | None:
        return self._copy(await self._get(facility_key(facility_id), "fallback store (facility)"))

    # --- writes (the projector) -------------------------------------------------------

    def _put_if(self, item: dict[str, Any], condition: str, values: dict[str, Any]) -> bool:
        """Put ``item`` if the stored one is older (``condition``); False if it was not
        (a replayed or late record: nothing to do)."""
        item = {**item, "projected_at": Decimal(str(round(self.clock(), 3)))}
        kwargs: dict[str, Any] = {"Item": item}
        if condition:
            kwargs["ConditionExpression"] = f"attribute_not_exists(pk) OR ({condition})"
            kwargs["ExpressionAttributeValues"] = values
        return _if_held(self.table.put_item, **kwargs)

    def put_load(
        self, driver_id: str, load_id: str, doc: str, version: int, changed_at: Decimal
    ) -> bool:
        item = {
            "pk": driver_pk(driver_id),
            "sk": f"load#{load_id}",
            "doc": doc,
            "version": version,
            "changed_at": changed_at,
        }
        return self._put_if(item, "version < :v", {":v": version})

    def put_pass(
        self,
        driver_id: str,
        pass_id: str,
        doc: str,
        *,
        revoked: bool,
        expires_at: int,
        seq: str,
        changed_at: Decimal,
    ) -> bool:
        item = {
            "pk": driver_pk(driver_id),
            "sk": f"pass#{pass_id}",
            "doc": doc,
            "revoked": revoked,
            "expires_at": expires_at,
            "seq": seq,
            "changed_at": changed_at,
        }
        return self._put_if(item, "revoked = :f AND seq < :s", {":f": False, ":s": seq})

    def put_revoked(
        self, pass_id: str, valid_until: str, expires_at: int, changed_at: Decimal
    ) -> bool:
        item = {
            **revoked_key(pass_id),
            "valid_until": valid_until,
            "expires_at": expires_at,
            "changed_at": changed_at,
        }
        return self._put_if(item, "", {})  # the same fact each time: idempotent as it is

    def put_jwks(self, doc: str, published_at: int, changed_at: Decimal) -> bool:
        item = {**JWKS_KEY, "doc": doc, "published_at": published_at, "changed_at": changed_at}
        return self._put_if(item, "published_at < :p", {":p": published_at})

    def put_facility(self, facility_id: str, doc: str, seq: str, changed_at: Decimal) -> bool:
        item = {**facility_key(facility_id), "doc": doc, "seq": seq, "changed_at": changed_at}
        return self._put_if(item, "seq < :s", {":s": seq})

    def delete_facility(self, facility_id: str, seq: str) -> bool:
        return _if_held(
            self.table.delete_item,
            Key=facility_key(facility_id),
            ConditionExpression="attribute_not_exists(pk) OR seq < :s",
            ExpressionAttributeValues={":s": seq},
        )


def _if_held(write: Any, **kwargs: Any) -> bool:
    """``write(**kwargs)``; False if its condition did not hold (nothing to do)."""
    try:
        write(**kwargs)
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return False
        raise
    return True
