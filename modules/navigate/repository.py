"""DynamoDB access for navigate. boto3 is injected; nothing connects at import time.

Facilities table (owned here): ``facility_id`` (key), ``cell``, ``doc`` (the
:class:`Destination` JSON). Loads table (owned by the loads module, read-only here):
``load_id`` (key), ``driver_id``, ``status``, ``version``, ``doc`` (the :class:`LoadPublic`
JSON). Storage failures surface as :class:`StorageUnavailableError` so the service can decide
whether to degrade or refuse, without knowing about botocore.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

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
            self._dynamodb = boto3.resource("dynamodb")
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
        self.dynamodb.Table(self.settings.facilities_table).put_item(Item={
            "facility_id": destination.facility_id,
            "cell": cell,
            "doc": destination.model_dump_json(),
        })

    def get(self, facility_id: str) -> Destination | None:
        item = self._get_item(self.settings.facilities_table, {"facility_id": facility_id})
        return Destination.model_validate_json(item["doc"]) if item else None


class LoadsReader(_Table):
    """Read-only view of the loads module's table: navigate never writes loads."""

    def __init__(self, settings: NavigateSettings, *, dynamodb: Any = None) -> None:
        super().__init__(settings, dynamodb)

    def get_load(self, load_id: str) -> LoadPublic | None:
        item = self._get_item(self.settings.loads_table, {"load_id": load_id})
        return LoadPublic.model_validate_json(item["doc"]) if item else None
