"""The projector: the modules' table streams -> the fallback store (``FallbackProjectorFunction``).

Lambda invokes :func:`handler` with batches of DynamoDB Streams records (``NEW_IMAGE``) of
the loads table, the gate pass table and the facilities table (template.yaml; locally
:mod:`relay.eventsource`). Each record's new image becomes one or two store items
(:mod:`gateway.fallbackstore.store`):

- a load (``load_id``, ``driver_id``, ``version``, ``doc``): the driver's load, kept only
  if its ``version`` is newer than the stored one;
- a gate pass (``pass_id``, ``driver_id``, ``doc``): the driver's pass until it expires
  (TTL), and, once revoked, a ``revoked#`` item every gateway checks offline; a revoked
  pass stays revoked whatever record comes late;
- the published keys (``pass_id`` = ``keys#jwks``): kept if published later than the
  stored ones;
- a facility (``facility_id``, ``doc``): its entry data; a facility removed is removed.

Every write is conditional on the stored item being older (the item's own version, or the
record's sequence number), so a record delivered twice, or late after a newer one, changes
nothing: projection is idempotent and order-safe per key, whatever Lambda's retries and
bisections do. Records of another shape are skipped with a warning. A record that cannot
be projected (a document that does not fit its contract, the store failing) is reported
as a batch item failure (Powertools ``BatchProcessor``): Lambda retries from it, bisects,
and after its last attempt sends the batch's description to the on-failure queue.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from decimal import Decimal
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import (
    DynamoDBRecord,
    DynamoDBRecordEventName,
)

from shared_contracts.gatepass import GatePassPublic, Jwks
from shared_contracts.loads import LoadView
from shared_contracts.navigate import Destination

from .store import FallbackStore, padded_seq

log = logging.getLogger("relay.gateway.projector")

KEYS_ITEM = "keys#jwks"  # modules/gatepass/repository.py: the published keys' item
STORE_TABLE_VARIABLE = "RELAY_FALLBACK_STORE_TABLE"


class Projector:
    def __init__(self, store: FallbackStore) -> None:
        self.store = store

    def project(self, record: DynamoDBRecord) -> str:
        """Project one record; returns what it did (``load``, ``pass``, ``skipped``...)."""
        change = record.dynamodb
        if change is None or change.sequence_number is None:
            return "skipped"
        seq = padded_seq(change.sequence_number)
        changed_at = Decimal(int(change.approximate_creation_date_time or 0))
        if record.event_name is DynamoDBRecordEventName.REMOVE:
            keys = change.keys or {}
            if isinstance(keys.get("facility_id"), str):
                self.store.delete_facility(keys["facility_id"], seq)
                return "facility-removed"
            # Loads are never deleted; passes leave the store by TTL with their validity.
            return "skipped"
        image = change.new_image or {}
        if isinstance(image.get("pass_id"), str):
            if image["pass_id"] == KEYS_ITEM:
                jwks = Jwks.model_validate_json(image["doc"])
                self.store.put_jwks(jwks.model_dump_json(), int(image["published_at"]), changed_at)
                return "keys"
            return self._pass(image, seq, changed_at)
        if isinstance(image.get("load_id"), str) and "version" in image:
            load = LoadView.model_validate_json(image["doc"])
            self.store.put_load(
                load.driver_id, load.load_id, image["doc"], int(image["version"]), changed_at
            )
            return "load"
        if isinstance(image.get("facility_id"), str) and "doc" in image:
            facility = Destination.model_validate_json(image["doc"])
            self.store.put_facility(
                facility.facility_id, facility.model_dump_json(), seq, changed_at
            )
            return "facility"
        log.warning("stream record %s of an unknown shape: skipped", change.sequence_number)
        return "skipped"

    def _pass(self, image: dict[str, Any], seq: str, changed_at: Decimal) -> str:
        gate_pass = GatePassPublic.model_validate_json(image["doc"])
        revoked = gate_pass.revoked or image.get("revoked") is True
        expires_at = _epoch(gate_pass.valid_until) + 1
        if revoked:
            self.store.put_revoked(
                gate_pass.pass_id, gate_pass.valid_until.isoformat(), expires_at, changed_at
            )
            gate_pass = gate_pass.model_copy(update={"revoked": True})
        self.store.put_pass(
            gate_pass.driver_id,
            gate_pass.pass_id,
            gate_pass.model_dump_json(),
            revoked=revoked,
            expires_at=expires_at,
            seq=seq,
            changed_at=changed_at,
        )
        return "revoked" if revoked else "pass"


def _epoch(at: datetime) -> int:
    return int(at.timestamp())


def make_handler(projector: Projector) -> Any:
    """A Lambda handler reporting partial batch failures, for ``projector``."""
    processor = BatchProcessor(event_type=EventType.DynamoDBStreams)

    def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return dict(
            process_partial_response(
                event=event, record_handler=projector.project, processor=processor, context=context
            )
        )

    return handle


_handler: Any = None


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda's entry point: the store is made on the first batch, never at import."""
    global _handler
    if _handler is None:
        _handler = make_handler(Projector(FallbackStore(os.environ[STORE_TABLE_VARIABLE])))
    result: dict[str, Any] = _handler(event, context)
    return result
