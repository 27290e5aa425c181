"""Consumers of messages: each message of a pact goes through the consumer's own reading
code (navigate's and gatepass's loads readers over moto, the gateway's stream projector,
the notifications worker), and the pact, saying only what that code requires, is written to
contracts/pacts/<consumer>-<provider>-messages.json (message_pacts.py). A pact that changed
fails its test once, so that the change is reviewed and committed."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from pact import Pact, match
from pact.error import PactVerificationError

from gateway.fallbackstore.projector import KEYS_ITEM, Projector, make_handler
from module_kit.metrics import ModuleMetrics
from modules.gatepass.config import GatepassSettings
from modules.gatepass.repository import GatepassRepository
from modules.loads.service import assigned_load
from modules.navigate.config import NavigateSettings
from modules.navigate.repository import LoadsReader
from modules.notifications.config import NotificationsSettings
from modules.notifications.handler import make_handler as notifications_handler
from modules.notifications.pause import NotificationsPause
from modules.notifications.publisher import PushPublisher
from relay import demo
from shared_contracts import ID_PATTERN
from shared_contracts.gatepass import GatePassPublic, Jwk, Jwks
from shared_contracts.identity import Role
from shared_contracts.loads import LoadView
from shared_contracts.navigate import Destination
from shared_contracts.notifications import Notification, NotificationKind
from tests.conftest import identity_context
from tests.contracts import states
from tests.contracts.message_pacts import (
    CONTENT_TYPE,
    DIGITS,
    FACILITY_STORED,
    LOAD_EVENT_REPORTED,
    MESSAGE_TO_DISPATCH,
    body_of,
    message_image,
    message_item,
    message_pact_path,
    needed,
    reader_model,
    write_message_pact,
)
from tests.contracts.pacts import EXAMPLE_TIME
from tests.modules.notifications.conftest import sqs_event

# --- the examples: documents as their providers write them ----------------------------------


def example_load() -> dict[str, Any]:
    plan = demo.assignment(states.LOAD, states.DRIVER, states.ROUTE, EXAMPLE_TIME)
    return assigned_load(plan, EXAMPLE_TIME).model_dump(mode="json")


EXAMPLE_KID = "Qm9y2vdjJ3zW1QmZb6l6r3o8c9RrM5V0x1Cq0sYkFhE"
EXAMPLE_TOKEN = "eyJhbGciOiJFUzI1NiIsImtpZCI6IlFtOXkyIn0.eyJqdGkiOiJHUC0xIn0.c2lnbmF0dXJl"


def example_pass() -> dict[str, Any]:
    return GatePassPublic(
        pass_id="GP-5b0c7f2e9a1d4c3b8e6f0a2d4c6e8f10",
        driver_id=states.DRIVER,
        load_id=states.LOAD,
        facility_id=states.ROUTE[0],
        valid_from=EXAMPLE_TIME,
        valid_until=EXAMPLE_TIME + timedelta(hours=5),
        issued_at=EXAMPLE_TIME,
        kid=EXAMPLE_KID,
        token=EXAMPLE_TOKEN,
        qr_payload=EXAMPLE_TOKEN,
    ).model_dump(mode="json")


def example_keys() -> dict[str, Any]:
    jwk = Jwk(
        kty="EC",
        crv="P-256",
        x="f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        y="x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
        kid=EXAMPLE_KID,
        alg="ES256",
        use="sig",
    )
    return Jwks(keys=[jwk]).model_dump(mode="json")


def example_notification(kind: NotificationKind, title: str, body: str) -> dict[str, Any]:
    return Notification(
        notification_id="3f6c1e0a9b2d4e8f8a7b6c5d4e3f2a1b",
        kind=kind,
        driver_id=states.DRIVER,
        title=title,
        body=body,
        data={"load_id": states.LOAD},
    ).model_dump(mode="json")


def an_id(example: str) -> Any:
    """An id as every contract spells one (``shared_contracts.ID_PATTERN``)."""
    return match.regex(example, regex=ID_PATTERN)


# --- a consumer's pact --------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """A message the consumer reads: what it needs of it (``body``, matchers), the
    provider's state it comes from, and ``read``: the consumer's code run on it."""

    description: str
    state: str
    body: dict[str, Any]
    read: Callable[[dict[str, Any]], None]


def declare(pact: Pact, expected: Expected) -> None:
    (
        pact.upon_receiving(expected.description, "Async")
        .given(expected.state)
        .with_body(expected.body, CONTENT_TYPE)
    )


def consumer_pact(consumer: str, provider: str, expected: list[Expected], scratch: Path) -> None:
    """Each message through its reader (Pact hands it the example), then the pact written;
    fails if the file changed."""
    for one in expected:
        alone = Pact(consumer, provider)
        declare(alone, one)
        alone.verify(lambda contents, _metadata, one=one: one.read(body_of(contents)), "Async")
    whole = Pact(consumer, provider)
    for one in expected:
        declare(whole, one)
    changed = write_message_pact(whole, consumer, provider, scratch)
    if changed:
        pytest.fail(changed)


# --- navigate and gatepass read the loads table ------------------------------------------


def load_record(reader: Callable[..., Any]) -> dict[str, Any]:
    """A loads record as ``reader`` needs it: the key and owner it queries by, and the
    ``doc`` fields of the view it parses (its return annotation)."""
    return {
        "load_id": an_id(states.LOAD),
        "driver_id": an_id(states.DRIVER),
        "doc": needed(reader_model(reader), example_load()),
    }


def reads_loads(get_load: Callable[..., Any], table: Any) -> Callable[[dict[str, Any]], None]:
    def read(message: dict[str, Any]) -> None:
        table.put_item(Item=message_item(message))
        doc = message["doc"]
        owner = identity_context(Role.DRIVER, message["driver_id"])
        other = identity_context(Role.DRIVER, "D-9999")
        staff = identity_context(Role.OPS, None)
        for identity in (owner, staff):
            load = get_load(message["load_id"], identity)
            assert load is not None, identity
            assert (load.load_id, load.driver_id) == (doc["load_id"], doc["driver_id"])
            assert [s.facility.facility_id for s in load.stops] == [
                s["facility"]["facility_id"] for s in doc["stops"]
            ]
            assert load.current_stop == doc["current_stop"] and not load.delivered
        assert get_load(message["load_id"], other) is None

    return read


def test_navigate_reads_loads_records(module_env, tmp_path):
    env = module_env("NavigateFunction")
    reader = LoadsReader(NavigateSettings())
    table = boto3.resource("dynamodb").Table(env["LOADS_TABLE"])
    consumer_pact(
        "navigate",
        "loads",
        [
            Expected(
                "a load as the loads table keeps it",
                states.LOAD_ASSIGNED,
                load_record(LoadsReader.get_load),
                reads_loads(reader.get_load, table),
            )
        ],
        tmp_path,
    )


def test_gatepass_reads_loads_records(module_env, tmp_path):
    env = module_env("GatepassFunction")
    repository = GatepassRepository(GatepassSettings())
    table = boto3.resource("dynamodb").Table(env["LOADS_TABLE"])
    consumer_pact(
        "gatepass",
        "loads",
        [
            Expected(
                "a load as the loads table keeps it",
                states.LOAD_ASSIGNED,
                load_record(GatepassRepository.get_load),
                reads_loads(repository.get_load, table),
            )
        ],
        tmp_path,
    )


# --- the gateway's projector reads the tables' streams ------------------------------------


class RecordingStore:
    """The fallback store's writes, recorded: what the projector made of a record."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Callable[..., bool]:
        def write(*args: Any, **kwargs: Any) -> bool:
            self.calls.append((name, args, kwargs))
            return True

        return write


def projected(message: dict[str, Any]) -> RecordingStore:
    """``message`` (a ``NEW_IMAGE``) as the stream delivers it, through the projector's
    Lambda handler: the store's writes (it must not fail the record)."""
    store = RecordingStore()
    record = {
        "eventID": "1",
        "eventName": "MODIFY",
        "eventSource": "aws:dynamodb",
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/x",
        "dynamodb": {
            "SequenceNumber": "100",
            "ApproximateCreationDateTime": int(EXAMPLE_TIME.timestamp()),
            "StreamViewType": "NEW_IMAGE",
            "Keys": {},
            "NewImage": message_image(message),
        },
    }
    answer = make_handler(Projector(store))({"Records": [record]}, None)  # type: ignore[arg-type]
    assert answer == {"batchItemFailures": []}
    return store


def projects_load(message: dict[str, Any]) -> None:
    store = projected(message)
    ((name, args, _),) = store.calls
    doc = message["doc"]["S"]
    assert name == "put_load"
    assert args[:2] == (doc["driver_id"], doc["load_id"])
    assert json.loads(args[2])["stops"] == doc["stops"]


def projects_pass(message: dict[str, Any]) -> None:
    store = projected(message)
    ((name, args, kwargs),) = store.calls
    doc = message["doc"]["S"]
    assert name == "put_pass" and args[:2] == (doc["driver_id"], doc["pass_id"])
    assert kwargs["revoked"] is False


def projects_revocation(message: dict[str, Any]) -> None:
    store = projected(message)
    assert [c[0] for c in store.calls] == ["put_revoked", "put_pass"]
    assert store.calls[0][1][0] == message["doc"]["S"]["pass_id"]
    assert store.calls[1][2]["revoked"] is True


def projects_keys(message: dict[str, Any]) -> None:
    store = projected(message)
    ((name, args, _),) = store.calls
    assert name == "put_jwks" and args[1] == int(message["published_at"]["N"])
    assert json.loads(args[0])["keys"][0]["kid"] == message["doc"]["S"]["keys"][0]["kid"]


def projects_facility(message: dict[str, Any]) -> None:
    store = projected(message)
    ((name, args, _),) = store.calls
    assert name == "put_facility" and args[0] == message["doc"]["S"]["facility_id"]


def load_image() -> dict[str, Any]:
    return {
        "load_id": {"S": an_id(states.LOAD)},
        "version": {"N": match.regex("1", regex=DIGITS)},
        "doc": {"S": needed(LoadView, example_load())},
    }


def pass_image(*, revoked: bool) -> dict[str, Any]:
    example = example_pass()
    doc = needed(GatePassPublic, example)
    if revoked:
        doc["revoked"] = True  # exactly: what makes the projector record a revocation
    return {"pass_id": {"S": an_id(example["pass_id"])}, "doc": {"S": doc}}


def test_gateway_projects_loads_stream_images(tmp_path):
    consumer_pact(
        "gateway",
        "loads",
        [
            Expected(
                "a load's stream image when it is assigned",
                states.LOAD_ASSIGNED,
                load_image(),
                projects_load,
            ),
            Expected(
                "a load's stream image after its driver reports an event",
                LOAD_EVENT_REPORTED,
                load_image(),
                projects_load,
            ),
        ],
        tmp_path,
    )


def test_gateway_projects_gatepass_stream_images(tmp_path):
    keys_image = {
        "pass_id": {"S": KEYS_ITEM},
        "doc": {"S": needed(Jwks, example_keys())},
        "published_at": {"N": match.regex("1795334400000", regex=DIGITS)},
    }
    consumer_pact(
        "gateway",
        "gatepass",
        [
            Expected(
                "a gate pass's stream image",
                states.PASS_ISSUED,
                pass_image(revoked=False),
                projects_pass,
            ),
            Expected(
                "a revoked gate pass's stream image",
                states.PASS_REVOKED,
                pass_image(revoked=True),
                projects_revocation,
            ),
            Expected(
                "the published keys' stream image",
                states.KEYS_PUBLISHED,
                keys_image,
                projects_keys,
            ),
        ],
        tmp_path,
    )


def test_gateway_projects_navigate_stream_images(tmp_path):
    facility = demo.destination(states.ROUTE[0]).model_dump(mode="json")
    consumer_pact(
        "gateway",
        "navigate",
        [
            Expected(
                "a facility's stream image",
                FACILITY_STORED,
                {
                    "facility_id": {"S": an_id(facility["facility_id"])},
                    "doc": {"S": needed(Destination, facility)},
                },
                projects_facility,
            )
        ],
        tmp_path,
    )


# --- notifications reads the notifications queue ------------------------------------------


class RecordingSns:
    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []

    def publish(self, **request: Any) -> dict[str, str]:
        self.published.append(request)
        return {"MessageId": f"sns-{len(self.published)}"}


def pushes(message: dict[str, Any]) -> None:
    """``message`` as an SQS record's body, through the notifications worker's handler:
    published to the push topic once, with the attributes subscribers filter on."""
    sns = RecordingSns()
    settings = NotificationsSettings(push_topic_arn="arn:aws:sns:us-east-1:123456789012:push")
    handler = notifications_handler(
        PushPublisher(settings, sns=sns),
        metrics_writer=ModuleMetrics("notifications", stream=io.StringIO()),
        pause=NotificationsPause(None),
    )
    assert handler(sqs_event(json.dumps(message)), None) == {"batchItemFailures": []}
    ((published,),) = [sns.published]
    pushed = json.loads(published["Message"])
    assert pushed["notification_id"] == message["notification_id"]
    attributes = published["MessageAttributes"]
    assert attributes["driver_id"]["StringValue"] == message["driver_id"]
    assert attributes["kind"]["StringValue"] == message["kind"]


def notification(kind: NotificationKind, title: str, body: str) -> dict[str, Any]:
    return needed(Notification, example_notification(kind, title, body))


def test_notifications_reads_loads_notifications(tmp_path):
    consumer_pact(
        "notifications",
        "loads",
        [
            Expected(
                "a push notification of an assigned load",
                states.LOAD_ASSIGNED,
                notification(
                    NotificationKind.LOAD_ASSIGNED,
                    "New load assigned",
                    "Load L-1: Chicago Cross-Dock to Indianapolis DC",
                ),
                pushes,
            )
        ],
        tmp_path,
    )


def test_notifications_reads_message_notifications(tmp_path):
    consumer_pact(
        "notifications",
        "message",
        [
            Expected(
                "a push notification of a message from dispatch",
                states.MESSAGE_FROM_DISPATCH,
                notification(
                    NotificationKind.MESSAGE_TO_DRIVER,
                    "Message from dispatch",
                    "Dock 4 is free, come straight in",
                ),
                pushes,
            ),
            Expected(
                "a push notification of a message to dispatch",
                MESSAGE_TO_DISPATCH,
                notification(
                    NotificationKind.MESSAGE_TO_DISPATCH,
                    f"Message from driver {states.DRIVER}",
                    "Running 20 minutes late",
                ),
                pushes,
            ),
        ],
        tmp_path,
    )


# --- the consumer tests themselves: a pact must hold what the reader needs -----------------


def test_a_pact_without_a_field_the_reader_needs_fails_before_it_is_written(tmp_path):
    # GIVEN the gateway's pact of load images, without the stops the projector reads
    body = load_image()
    del body["doc"]["S"]["stops"]
    before = message_pact_path("gateway", "loads").read_text()
    # WHEN its consumer test gives the projector the pact's example
    with pytest.raises(PactVerificationError) as failed:
        consumer_pact(
            "gateway",
            "loads",
            [Expected("a load's stream image", states.LOAD_ASSIGNED, body, projects_load)],
            tmp_path,
        )
    # THEN the projector's refusal fails it, and the pact file is left as it was
    ((refused,),) = [failed.value.errors]
    assert refused.description == "a load's stream image"
    assert isinstance(refused.error, BatchProcessingError)  # the record failed, to be retried
    assert "stops\n  Field required" in str(refused.error)
    assert message_pact_path("gateway", "loads").read_text() == before
