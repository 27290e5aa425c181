"""DynamoDB access for navigate. boto3 is injected; nothing connects at import time.

Facilities table (owned here): ``facility_id`` (key), ``cell``, ``doc`` (the
:class:`Destination` JSON). Loads table (owned by the loads module, read-only here):
``load_id`` (key), ``driver_id``, ``status``, ``version``, ``doc`` (the :class:`LoadPublic`
JSON). Storage failures surface as :class:`StorageUnavailableError` so the service can decide
whether to degrade or refuse, without knowing about botocore.
"""

from __future__ import annotations

from typing import Any

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import BotoCoreError, ClientError

from module_kit import aws
from shared_contracts.loads import LoadPublic
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
    """Read-only view of the loads module's table: navigate never writes loads."""

    def __init__(self, settings: NavigateSettings, *, dynamodb: Any = None) -> None:
        super().__init__(settings, dynamodb)

    def get_load_for_driver(self, load_id: str, driver_id: str) -> LoadPublic | None:
        """``load_id`` if it is ``driver_id``'s; None if it is not, or does not exist.

        DynamoDB applies the owner filter on the stored ``driver_id``: another driver's load
        comes back exactly as a missing one does, empty (nothing to decode or parse), so
        neither this module's work nor its timing tells them apart.
        """
        table = self.settings.loads_table
        try:
            items = self.dynamodb.Table(table).query(
                KeyConditionExpression=Key("load_id").eq(load_id),
                FilterExpression=Attr("driver_id").eq(driver_id),
            )["Items"]
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailableError(f"{table}: {exc}") from exc
        item = items[0] if items else None
        if item is None or item.get("driver_id") != driver_id:
            return None
        return LoadPublic.model_validate_json(item["doc"])
