"""Provider states, one table per module: the state's name as pacts say it -> its setup.

Each setup starts the module's data over (its tables emptied) and seeds what the state
says through the module's own service or repository, against moto in-process, at the time
the verification runs. It may return values for the interaction (Pact's provider-state
values, e.g. the token of the pass it issued). Every pact naming a module as provider
draws its states from that module's table here: a state a pact names that is missing
fails its verification.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3

from modules.gatepass.service import GatepassService
from modules.loads.repository import LoadsRepository
from modules.loads.service import LoadsService, assigned_load
from modules.message.service import MessageService
from modules.navigate.repository import FacilitiesRepository
from relay import demo
from shared_contracts.gatepass import GatePassCreate
from shared_contracts.loads import LoadPublic, LoadStatus
from shared_contracts.message import DispatchMessageCreate

StateSetup = Callable[[dict[str, Any]], dict[str, Any] | None]

DRIVER = "D-1001"
LOAD = "L-1"
ROUTE = ["F-CHI", "F-IND"]  # pickup F-CHI (window in 1 h), delivery F-IND (in 5 h)
DISPATCHER = "dispatch-1"

# The state names pacts use (constants so that consumers and providers agree).
LOAD_ASSIGNED = f"driver {DRIVER} has an assigned load {LOAD}"
PASS_ISSUED = f"driver {DRIVER} has a gate pass for load {LOAD} at {ROUTE[0]}"
PASS_REVOKED = f"the gate pass of driver {DRIVER} for load {LOAD} at {ROUTE[0]} is revoked"
KEYS_PUBLISHED = "the gate pass signing key is published"
DRIVING_TO_PICKUP = f"driver {DRIVER} is driving load {LOAD} to {ROUTE[0]}"
MESSAGE_FROM_DISPATCH = f"driver {DRIVER} has a message from dispatch"


def now() -> datetime:
    return datetime.now(UTC)


def empty(*tables: str) -> None:
    """Deletes every item of ``tables`` (moto's: a handful of items each)."""
    dynamodb = boto3.resource("dynamodb")
    for name in tables:
        table = dynamodb.Table(name)
        keys = [k["AttributeName"] for k in table.key_schema]
        scan = table.scan()
        with table.batch_writer() as batch:
            for item in scan["Items"]:
                batch.delete_item(Key={k: item[k] for k in keys})


def load_record(table: str, at: datetime, status: LoadStatus = LoadStatus.ASSIGNED) -> LoadPublic:
    """L-1 of D-1001 in the loads table ``table``, as the loads module stores a load
    (the record gatepass and navigate read)."""
    load = assigned_load(demo.assignment(LOAD, DRIVER, ROUTE, at), at)
    load = load.model_copy(update={"status": status})
    boto3.resource("dynamodb").Table(table).put_item(Item=LoadsRepository.item_of(load))
    return load


def loads_states(service: LoadsService, env: dict[str, str]) -> dict[str, StateSetup]:
    tables = env["LOADS_TABLE"], env["LOAD_EVENTS_TABLE"], env["IDEMPOTENCY_TABLE"]

    def load_assigned(params: dict[str, Any]) -> dict[str, Any]:
        empty(*tables)
        service.assign(demo.assignment(LOAD, DRIVER, ROUTE, now()))
        return {"load_id": LOAD}

    return {LOAD_ASSIGNED: load_assigned}


def gatepass_states(service: GatepassService, env: dict[str, str]) -> dict[str, StateSetup]:
    tables = env["LOADS_TABLE"], env["GATEPASS_TABLE"], env["IDEMPOTENCY_TABLE"]

    def load_assigned(params: dict[str, Any]) -> dict[str, Any]:
        empty(*tables)
        load_record(env["LOADS_TABLE"], now())
        return {"load_id": LOAD}

    def pass_issued(params: dict[str, Any]) -> dict[str, Any]:
        load_assigned(params)
        issued = service.issue(DRIVER, GatePassCreate(load_id=LOAD, facility_id=ROUTE[0]))
        return {"pass_id": issued.pass_id, "token": issued.token}

    def pass_revoked(params: dict[str, Any]) -> dict[str, Any]:
        values = pass_issued(params)
        service.revoke(values["pass_id"])
        return values

    def keys_published(params: dict[str, Any]) -> dict[str, Any]:
        service.jwks()  # the current key's public half, read from KMS and published
        return {}

    return {
        LOAD_ASSIGNED: load_assigned,
        PASS_ISSUED: pass_issued,
        PASS_REVOKED: pass_revoked,
        KEYS_PUBLISHED: keys_published,
    }


def navigate_states(facilities: FacilitiesRepository, env: dict[str, str]) -> dict[str, StateSetup]:
    def driving_to_pickup(params: dict[str, Any]) -> dict[str, Any]:
        empty(env["LOADS_TABLE"], env["FACILITIES_TABLE"])
        for f in demo.FACILITIES:
            if f["facility_id"] in ROUTE:
                facilities.put(demo.destination(f["facility_id"]), f["cell"])
        load_record(env["LOADS_TABLE"], now() - timedelta(minutes=30))
        return {"load_id": LOAD}

    return {DRIVING_TO_PICKUP: driving_to_pickup}


def message_states(service: MessageService, env: dict[str, str]) -> dict[str, StateSetup]:
    def message_from_dispatch(params: dict[str, Any]) -> dict[str, Any]:
        empty(env["MESSAGES_TABLE"], env["IDEMPOTENCY_TABLE"])
        sent = service.send_to_driver(
            DispatchMessageCreate(
                driver_id=DRIVER, body="Dock 4 is free, come straight in", load_id=LOAD
            ),
            sender=DISPATCHER,
        )
        return {"message_id": sent.message_id}

    return {MESSAGE_FROM_DISPATCH: message_from_dispatch}
