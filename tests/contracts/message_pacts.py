"""Message pacts: what one component writes and another reads without HTTP (table records,
stream images, queue messages), written and verified like the HTTP pacts (pacts.py).

Pact files are ``contracts/pacts/<consumer>-<provider>-messages.json`` (Pact V4
asynchronous messages), apart from the HTTP ones: each file is written whole by one
consumer test.

A message says only what its consumer needs: :func:`needed` makes the body from the model
the consumer reads with (its required fields, each a type or pattern matcher, examples from
a real document), so a field the consumer does not require is not in the pact, and the
provider stays free to add, drop or change it.

Two encodings are the same data in every pact and verification:

- a table record as boto3's resource reads it (:func:`item_message`): numbers are JSON
  numbers;
- a stream image (``NEW_IMAGE``) as DynamoDB Streams carries it (:func:`image_message`):
  DynamoDB's typed attribute values (``{"S": ...}``, ``{"N": "3"}``), the item
  ``GetItem`` answers.

In both, an attribute holding JSON text (:data:`JSON_ATTRIBUTES`: ``doc``) is shown parsed,
so that the pact can say which of its fields the consumer needs; :func:`message_item` and
:func:`message_image` turn a message back into what the consumer's code is given.
"""

from __future__ import annotations

import json
import os
import types
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

from annotated_types import MinLen
from pact import Verifier, match
from pydantic import BaseModel, StringConstraints

from tests.contracts.pacts import ISO_DATETIME, PACTS, ROOT, VerificationFailedError, comparable
from tests.contracts.states import DRIVER, LOAD, ROUTE

JSON_ATTRIBUTES = ("doc",)
ASYNC_MESSAGE = "Asynchronous/Messages"
CONTENT_TYPE = "application/json"
DIGITS = r"^\d+$"


# --- what a consumer needs ----------------------------------------------------------------


def needed(model: type[BaseModel], example: Mapping[str, Any]) -> dict[str, Any]:
    """A message body of the fields ``model`` requires, each a matcher of its type (an id's
    pattern, an enum's values, a timestamp with its zone), with ``example``'s values."""
    body: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if not field.is_required():
            continue
        key = field.alias or name
        body[key] = _matcher(field.annotation, list(field.metadata), example[key])
    return body


def reader_model(function: Callable[..., Any]) -> type[BaseModel]:
    """The model ``function`` answers with (its return annotation, ``None`` aside): what a
    consumer's reading function parses a record into."""
    answer = get_type_hints(function)["return"]
    found = [a for a in get_args(answer) or (answer,) if a is not type(None)]
    assert len(found) == 1 and issubclass(found[0], BaseModel), answer
    model: type[BaseModel] = found[0]
    return model


def _matcher(annotation: Any, metadata: list[Any], value: Any) -> Any:
    if get_origin(annotation) is Annotated:
        annotation, *more = get_args(annotation)
        metadata = [*metadata, *more]
    if get_origin(annotation) in (Union, types.UnionType):
        if value is None:
            return None
        (annotation, *_) = [a for a in get_args(annotation) if a is not type(None)]
        return _matcher(annotation, metadata, value)
    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        least = max([1, *(m.min_length for m in metadata if isinstance(m, MinLen))])
        return match.each_like(_matcher(item, [], value[0]), min=least)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return needed(annotation, value)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        choices = "|".join(sorted(str(m.value) for m in annotation))
        return match.regex(value, regex=f"^({choices})$")
    if annotation is datetime:
        return match.regex(value, regex=ISO_DATETIME)
    if annotation is bool:
        return match.bool(value)
    if annotation is int:
        return match.int(value)
    if annotation is float:
        return match.number(value)
    if annotation is str:
        return _string(metadata, value)
    return match.like(value)


def _string(metadata: list[Any], value: str) -> Any:
    for m in metadata:
        if isinstance(m, StringConstraints) and m.pattern is not None:
            return match.regex(value, regex=str(m.pattern))
        if isinstance(m, StringConstraints) and (m.min_length or m.max_length):
            least, most = m.min_length or 0, "" if m.max_length is None else m.max_length
            return match.regex(value, regex=rf"^[\s\S]{{{least},{most}}}$")
    return match.str(value)


# --- the two encodings ----------------------------------------------------------------------


def item_message(item: Mapping[str, Any]) -> dict[str, Any]:
    """A record as boto3's resource read it -> its message (numbers as JSON numbers)."""
    return {k: json.loads(v) if k in JSON_ATTRIBUTES else _plain(v) for k, v in item.items()}


def message_item(message: Mapping[str, Any]) -> dict[str, Any]:
    """A record's message -> the item to put with boto3's resource."""
    return {k: json.dumps(v) if k in JSON_ATTRIBUTES else v for k, v in message.items()}


def image_message(image: Mapping[str, Any]) -> dict[str, Any]:
    """A stream image (typed attribute values) -> its message."""
    return {k: {"S": json.loads(v["S"])} if k in JSON_ATTRIBUTES else v for k, v in image.items()}


def message_image(message: Mapping[str, Any]) -> dict[str, Any]:
    """A stream image's message -> the image the stream carries."""
    return {k: {"S": json.dumps(v["S"])} if k in JSON_ATTRIBUTES else v for k, v in message.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | set):
        return [_plain(v) for v in value]
    return value


def body_of(contents: Any) -> dict[str, Any]:
    """The JSON body Pact hands a consumer's handler (text or bytes)."""
    raw = contents.decode() if isinstance(contents, bytes) else str(contents)
    parsed: dict[str, Any] = json.loads(raw)
    return parsed


# --- pact files -----------------------------------------------------------------------------


def message_pact_path(consumer: str, provider: str) -> Path:
    return PACTS / f"{consumer}-{provider}-messages.json"


def write_message_pact(pact: Any, consumer: str, provider: str, scratch: Path) -> str | None:
    """Writes ``pact`` to contracts/pacts/ if it differs from the file there (atomically:
    verifications may be reading it). The reason it was rewritten, or None if unchanged."""
    pact.write_file(scratch, overwrite=True)
    produced = json.loads((scratch / f"{consumer}-{provider}.json").read_text())
    target = message_pact_path(consumer, provider)
    existed = target.exists()
    if existed and comparable(json.loads(target.read_text())) == comparable(produced):
        return None
    PACTS.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{uuid.uuid4().hex}.tmp")
    partial.write_text(json.dumps(produced, indent=2, sort_keys=True) + "\n")
    os.replace(partial, target)
    return (
        f"{target.relative_to(ROOT)} was {'stale' if existed else 'missing'}: "
        "rewritten from the consumer tests; review and commit it"
    )


def message_pact_files(provider: str) -> list[Path]:
    """Every pact file in contracts/pacts/ naming ``provider`` with message interactions."""
    found = []
    for path in sorted(PACTS.glob("*.json")):
        doc = json.loads(path.read_text())
        kinds = {i.get("type") for i in doc.get("interactions", [])}
        if doc.get("provider", {}).get("name") == provider and ASYNC_MESSAGE in kinds:
            found.append(path)
    return found


# --- verification ---------------------------------------------------------------------------

Producer = Callable[[], Mapping[str, Any]]
StateSetup = Callable[[dict[str, Any]], dict[str, Any] | None]


def verify_messages(
    provider: str,
    producers: Mapping[str, Producer],
    states: Mapping[str, StateSetup],
    files: list[Path] | None = None,
) -> list[Path]:
    """Checks every message interaction naming ``provider`` (in ``files``, by default every
    pact file naming it) against what ``producers`` (by the interaction's description)
    produce after the state's setup from ``states``; raises
    :class:`VerificationFailedError` with Pact's output if one does not match. The pact
    files verified."""
    files = message_pact_files(provider) if files is None else files
    assert files, f"no message pact in {PACTS.relative_to(ROOT)} names {provider} as provider"
    failures: list[str] = []

    def set_up(state: str, parameters: dict[str, Any] | None = None) -> None:
        setup = states.get(state)
        if setup is None:
            failures.append(f"no setup for provider state {state!r} of {provider}")
            raise KeyError(state)
        setup(parameters or {})

    def produce(name: str) -> dict[str, Any]:
        produced = producers.get(name)
        if produced is None:
            failures.append(f"{provider} produces no message {name!r}")
            raise KeyError(name)
        contents = json.dumps(produced()).encode()
        return {"contents": contents, "metadata": None, "content_type": CONTENT_TYPE}

    verifier = Verifier(provider, host="127.0.0.1").message_handler(produce).state_handler(set_up)
    for path in files:
        verifier.add_source(path)
    try:
        verifier.verify()
    except RuntimeError:
        raise VerificationFailedError(
            f"{provider} does not produce what its consumers read:\n"
            f"{verifier.output(strip_ansi=True)}" + "".join(f"\n{f}" for f in failures)
        ) from None
    return files


# --- provider states only message pacts use (the others: tests/contracts/states.py) --------

LOAD_EVENT_REPORTED = f"driver {DRIVER} has arrived at the first stop of load {LOAD}"
MESSAGE_TO_DISPATCH = f"driver {DRIVER} has written to dispatch"
FACILITY_STORED = f"facility {ROUTE[0]} is stored"
