"""Providers of messages: every message interaction of every pact in contracts/pacts/
naming a module as provider, checked against what that module's own code writes, alone,
over moto in-process. The provider state's setup (tests/contracts/states.py, and the few
only message pacts use, here) runs the module's service; the message is then read back
where its consumer reads it: the record from the table (boto3's resource), the stream
image as the item ``GetItem`` answers in DynamoDB's typed values (what a ``NEW_IMAGE``
carries), the notification from the notifications queue. Nothing is written by hand."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping
from typing import Any

import boto3
import pytest

from module_kit.metrics import ModuleMetrics
from modules.gatepass.config import GatepassSettings
from modules.gatepass.repository import KEYS_ITEM, GatepassRepository
from modules.gatepass.service import GatepassService
from modules.gatepass.signing import KmsSigner
from modules.loads.config import LoadsSettings
from modules.loads.repository import LoadsRepository
from modules.loads.service import LoadsService
from modules.message.config import MessageSettings
from modules.message.repository import MessageRepository
from modules.message.service import MessageService
from modules.navigate.config import NavigateSettings
from modules.navigate.repository import FacilitiesRepository
from relay import demo
from shared_contracts.loads import LoadEventCreate, LoadEventKind
from shared_contracts.message import MessageCreate
from tests.contracts import states
from tests.contracts.message_pacts import (
    FACILITY_STORED,
    LOAD_EVENT_REPORTED,
    MESSAGE_TO_DISPATCH,
    Producer,
    StateSetup,
    image_message,
    item_message,
    message_pact_path,
    verify_messages,
)
from tests.contracts.pacts import VerificationFailedError


def quiet(module: str) -> ModuleMetrics:
    return ModuleMetrics(module, stream=io.StringIO())


def remembered(setups: Mapping[str, StateSetup], values: dict[str, Any]) -> dict[str, StateSetup]:
    """``setups`` whose returned values (a pass id, a message id) are kept in ``values``,
    for the producers to find what the state made."""

    def keep(setup: StateSetup) -> StateSetup:
        def run(params: dict[str, Any]) -> dict[str, Any] | None:
            got = setup(params)
            values.update(got or {})
            return got

        return run

    return {name: keep(setup) for name, setup in setups.items()}


def image(table: str, key: dict[str, str]) -> dict[str, Any]:
    """The item under ``key`` as the table's stream carries it (``NEW_IMAGE``)."""
    item = boto3.client("dynamodb").get_item(
        TableName=table, Key={k: {"S": v} for k, v in key.items()}, ConsistentRead=True
    )["Item"]
    return image_message(item)


def record(table: str, key: dict[str, str]) -> dict[str, Any]:
    """The item under ``key`` as a reader of the table gets it (boto3's resource)."""
    item = boto3.resource("dynamodb").Table(table).get_item(Key=key, ConsistentRead=True)["Item"]
    return item_message(item)


def queued(queue_url: str, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The last notification on the queue ``wanted`` picks (the queue is read to its end)."""
    sqs = boto3.client("sqs")
    found: list[dict[str, Any]] = []
    while batch := sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
    ).get("Messages", []):
        found += [body for m in batch if wanted(body := json.loads(m["Body"]))]
    assert found, "no such notification on the queue"
    return found[-1]


def test_loads_produces_what_its_consumers_read(module_env):
    env = module_env("LoadsFunction")
    service = LoadsService(LoadsRepository(LoadsSettings()), metrics_writer=quiet("loads"))
    setups = states.loads_states(service, env)

    def arrived(params: dict[str, Any]) -> dict[str, Any] | None:
        values = setups[states.LOAD_ASSIGNED](params)
        event = LoadEventCreate(kind=LoadEventKind.ARRIVED, stop_seq=1)
        service.record_event(states.DRIVER, states.LOAD, event)
        return values

    key = {"load_id": states.LOAD}
    producers: dict[str, Producer] = {
        "a load as the loads table keeps it": lambda: record(env["LOADS_TABLE"], key),
        "a load's stream image when it is assigned": lambda: image(env["LOADS_TABLE"], key),
        "a load's stream image after its driver reports an event": lambda: image(
            env["LOADS_TABLE"], key
        ),
        "a push notification of an assigned load": lambda: queued(
            env["NOTIFICATIONS_QUEUE_URL"], lambda n: n["data"].get("load_id") == states.LOAD
        ),
    }
    verified = verify_messages("loads", producers, {**setups, LOAD_EVENT_REPORTED: arrived})
    assert {p.name for p in verified} == {
        f"{consumer}-loads-messages.json"
        for consumer in ("gateway", "gatepass", "navigate", "notifications")
    }


def test_gatepass_produces_what_its_consumers_read(module_env):
    env = module_env("GatepassFunction")
    settings = GatepassSettings()

    def new_process() -> GatepassService:
        return GatepassService(
            GatepassRepository(settings),
            KmsSigner(settings.gatepass_signing_key_id),
            metrics_writer=quiet("gatepass"),
        )

    values: dict[str, Any] = {}
    setups = remembered(states.gatepass_states(new_process(), env), values)

    def keys_published(params: dict[str, Any]) -> None:
        # Each process publishes its keys once, on its first use of them; the states above
        # empty the table, so a process of its own publishes them here.
        new_process().jwks()

    table = env["GATEPASS_TABLE"]
    producers: dict[str, Producer] = {
        "a gate pass's stream image": lambda: image(table, {"pass_id": values["pass_id"]}),
        "a revoked gate pass's stream image": lambda: image(table, {"pass_id": values["pass_id"]}),
        "the published keys' stream image": lambda: image(table, {"pass_id": KEYS_ITEM}),
    }
    verified = verify_messages(
        "gatepass", producers, {**setups, states.KEYS_PUBLISHED: keys_published}
    )
    assert {p.name for p in verified} == {"gateway-gatepass-messages.json"}


def test_navigate_produces_what_its_consumers_read(module_env):
    env = module_env("NavigateFunction")
    facilities = FacilitiesRepository(NavigateSettings())
    facility = next(f for f in demo.FACILITIES if f["facility_id"] == states.ROUTE[0])

    def facility_stored(params: dict[str, Any]) -> None:
        facilities.put(demo.destination(facility["facility_id"]), facility["cell"])

    producers: dict[str, Producer] = {
        "a facility's stream image": lambda: image(
            env["FACILITIES_TABLE"], {"facility_id": facility["facility_id"]}
        ),
    }
    verified = verify_messages("navigate", producers, {FACILITY_STORED: facility_stored})
    assert {p.name for p in verified} == {"gateway-navigate-messages.json"}


def test_message_produces_what_its_consumers_read(module_env):
    env = module_env("MessageFunction")
    service = MessageService(MessageRepository(MessageSettings()), metrics_writer=quiet("message"))
    values: dict[str, Any] = {}
    setups = remembered(states.message_states(service, env), values)

    def to_dispatch(params: dict[str, Any]) -> None:
        sent = service.send_to_dispatch(
            states.DRIVER, MessageCreate(body="Running 20 minutes late", load_id=states.LOAD)
        )
        values["message_id"] = sent.message_id

    def notification() -> dict[str, Any]:
        return queued(
            env["NOTIFICATIONS_QUEUE_URL"],
            lambda n: n["notification_id"] == values["message_id"],
        )

    producers: dict[str, Producer] = {
        "a push notification of a message from dispatch": notification,
        "a push notification of a message to dispatch": notification,
    }
    verified = verify_messages("message", producers, {**setups, MESSAGE_TO_DISPATCH: to_dispatch})
    assert {p.name for p in verified} == {"notifications-message-messages.json"}


# --- the verification itself: it refuses what a consumer could not read --------------------


def test_a_record_without_a_field_its_consumer_reads_fails_verification():
    # GIVEN loads writing its records without the current stop, and a stop time without zone
    pact = message_pact_path("navigate", "loads")
    (interaction,) = json.loads(pact.read_text())["interactions"]
    written = json.loads(json.dumps(interaction["contents"]["content"]))
    del written["doc"]["current_stop"]
    written["doc"]["stops"][0]["window_start"] = "2026-11-22T09:00:00"
    # WHEN navigate's pact is verified against it
    with pytest.raises(VerificationFailedError) as failed:
        verify_messages(
            "loads",
            {interaction["description"]: lambda: written},
            {interaction["providerStates"][0]["name"]: lambda params: None},
            [pact],
        )
    # THEN Pact names both: the record navigate could not read is caught before it ships
    assert "$.doc -> Actual map is missing the following keys: current_stop" in str(failed.value)
    assert "$.doc.stops[0].window_start -> Expected '2026-11-22T09:00:00'" in str(failed.value)
