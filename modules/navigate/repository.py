"""DynamoDB access for navigate. boto3 is injected; nothing connects at import time.

Facilities table (owned here): ``facility_id`` (key), ``cell``, ``doc`` (the
:class:`Destination` JSON). Loads table (owned by the loads module, read-only here):
``load_id`` (key), ``driver_id``, ``status``, ``version``, ``doc`` (the load JSON, read
through the tolerant :class:`~shared_contracts.loads.LoadView`); on a celled stage one
table per cell, and a request reads the one its identity's cell names
(:mod:`module_kit.cells`): a driver's read never leaves their cell. Storage failures
surface as :class:`StorageUnavailableError` so the service can decide whether to degrade or
refuse, without knowing about botocore.
"""

from __future__ import annotations

from typing import Any

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import BotoCoreError, ClientError

from module_kit import aws
from module_kit.cells import CellTables
from shared_contracts.identity import IdentityContext, Role
from shared_contracts.loads import LoadView
from shared_contracts.navigate import Destination

from .config import NavigateSettings


class StorageUnavailableError(Exception):
    """DynamoDB could not be read (throttled, missing table, network)."""


class _Table:
    """Lazy boto3 resource shared by the two repositories below."""

    def __init__(self, settings: NavigateSettings, dynamodb: Any) -> None:
        self.settings = settings
        self._dynamodb = dynamodb

    @property
    def dynamodb(self) -> Any:
        if self._dynamodb is None:
            self._dynamodb = aws.resource("dynamodb")
        return self._dynamodb

    def _get_item(self, table: str, key: dict[str, str]) -> dict[str, Any] | None:
        try:
            return self.dynamodb.Table(table).get_item(Key=key).get("Item")
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailableError(f"{table}: {exc}") from exc


class FacilitiesRepository(_Table):
    """Facility destinations: address, coordinates, entry instructions and dock hours."""

    def __init__(self, settings: NavigateSettings, *, dynamodb: Any = None) -> None:
        super().__init__(settings, dynamodb)

    def put(self, destination: Destination, cell: str) -> None:
        """Create or replace a facility. ``cell`` is the deployment cell it belongs to."""
        self.dynamodb.Table(self.settings.facilities_table).put_item(
            Item={
                "facility_id": destination.facility_id,
                "cell": cell,
                "doc": destination.model_dump_json(),
            }
        )

    def get(self, facility_id: str) -> Destination | None:
        item = self._get_item(self.settings.facilities_table, {"facility_id": facility_id})
        return Destination.model_validate_json(item["doc"]) if item else None


class LoadsReader(_Table):
    """Read-only view of the loads module's table(s): navigate never writes loads."""

    def __init__(self, settings: NavigateSettings, *, dynamodb: Any = None) -> None:
        super().__init__(settings, dynamodb)
        self.tables: CellTables = settings.loads_tables

    def get_load(self, load_id: str, identity: IdentityContext) -> LoadView | None:
        """``load_id`` as ``identity`` may see it; None if it may not, or it does not exist.

        A driver sees their own loads only, read from their cell's table alone: DynamoDB
        applies the owner filter on the stored ``driver_id``, so another driver's load (or
        one in another cell) comes back exactly as a missing one does, empty (nothing to
        decode or parse), and neither this module's work nor its timing tells them apart.
        Staff see any driver's, from every cell in turn on a celled stage.
        """
        owner = identity.driver if identity.role is Role.DRIVER else None

        def read(table: str) -> dict[str, Any] | None:
            if owner is None:
                return self._get_item(table, {"load_id": load_id})
            try:
                items = self.dynamodb.Table(table).query(
                    KeyConditionExpression=Key("load_id").eq(load_id),
                    FilterExpression=Attr("driver_id").eq(owner),
                )["Items"]
            except (BotoCoreError, ClientError) as exc:
                raise StorageUnavailableError(f"{table}: {exc}") from exc
            item: dict[str, Any] | None = items[0] if items else None
            return item if item is not None and item.get("driver_id") == owner else None

        item = self.tables.read(identity, read)
        return LoadView.model_validate_json(item["doc"]) if item else None
