"""Idempotent writes: a retried POST answers what the first delivery answered, and writes once.

Phones retry on flaky networks, the gateway retries writes that carry a key, and it replays
writes it deferred while a module was down, all with the same ``Idempotency-Key``. A write
route takes the :data:`Idempotent` dependency and runs its work through it::

    def report_event(..., identity: DriverIdentity, svc: Service, once: Idempotent):
        return once(LoadEventPublic, event, lambda: svc.record_event(...))

The rules (AWS Lambda Powertools idempotency, DynamoDB persistence, one table per module):

- No header: the work simply runs, as it always did.
- The record key is ``<caller sub>:<METHOD route template>:<key>``, so two callers, or two
  operations, using the same key never meet. Powertools stores its SHA-256 in ``id``.
- The request (path parameters and parsed body) is hashed as well: the same key with a
  different request is refused with 422 ``idempotency-key-reused``.
- While the first delivery runs the record is INPROGRESS: a duplicate gets 409
  ``idempotency-in-progress`` with ``Retry-After: 1``.
- If the work raises (a 404, a 409, an outage), Powertools deletes the record: only
  successes are remembered, so the same request can be retried once the state changed.
- A success is kept for :data:`IDEMPOTENCY_EXPIRY` (TTL attribute ``expiration``) and
  replayed with the route's status code and the same body, plus ``Idempotent-Replayed: true``.

Deliveries that outlive the lease
---------------------------------
The INPROGRESS record is a *lease*: under Lambda it lasts the invocation's remaining time,
elsewhere :data:`LOCAL_IN_PROGRESS_TIMEOUT` (the functions' Timeout). A delivery stuck
longer than that (storage frozen for 25 s in a game day) loses it, and the next delivery
with the same key runs the work again. Worse, a write storage received before the stall is
applied when it resumes, after the client gave up and Powertools deleted the record. No
timeout closes that gap, so the lease is an optimisation and the writes themselves are
idempotent: a route passes :attr:`IdempotentCall.key` to its service, which derives the
stored ids from it (:func:`derived_id`) and writes with a condition, so a second
application finds the first and answers with it (message: message id from caller and
key, put with ``attribute_not_exists``; loads: the keys of applied events kept on the load
item and checked in the same transaction; gatepass: pass id from driver and key, put with
``attribute_not_exists``). Without a key, nothing changes.

Deadlines on AWS calls
----------------------
Still, a delivery should normally end well within its lease, so the idempotency table's
client, like every module's, is made with :func:`module_kit.aws.client_config`: a stalled
call gives up within 4 s, and a delivery whose storage stalls ends within 8 s, inside the
10 s lease (see :mod:`module_kit.aws`).

When the write was accepted
---------------------------
The gateway sends ``x-relay-accepted-at`` (:data:`shared_contracts.headers.ACCEPTED_AT`,
RFC 3339) with every write it forwards, and keeps it on a deferred replay: the time it
accepted the write, which modules stamp instead of the time a late delivery arrives.
Modules are reachable only through the gateway (function URLs with IAM auth), which drops
every client-supplied ``x-relay-*`` header and adds a signed identity context, so the
header is the gateway's, not the client's. It is still checked (:func:`accepted_time`):
an absent or malformed stamp, one further in the future than
:data:`ACCEPTED_AT_MAX_SKEW`, or one older than :data:`ACCEPTED_AT_MAX_AGE` (the
deferred queue's retention: no delivery can be older) is ignored with a warning and the
module's clock is used, as before. Refusing instead would drop a deferred write for
good over a clock problem that is not the caller's; the worst an ignored stamp does is
what every write did before the header existed. A stamp is never later than the module's
clock: within the skew it is clamped to "now".

Nothing here talks to AWS at import time; the DynamoDB client is made on first use.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyInconsistentStateError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.idempotency.serialization.pydantic import PydanticSerializer
from fastapi import Depends, Header, Request, Response
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from shared_contracts import headers
from shared_contracts.errors import (
    IdempotencyInProgressError,
    IdempotencyKeyReusedError,
    InvalidIdempotencyKeyError,
    UnavailableError,
)

from .aws import client_config
from .http import Identity

log = logging.getLogger("relay.idempotency")

IDEMPOTENCY_EXPIRY = timedelta(hours=24)
# Under uvicorn there is no Lambda context to say how long the request may still run; an
# INPROGRESS record left by a crash blocks its key this long (the functions' Timeout).
LOCAL_IN_PROGRESS_TIMEOUT = timedelta(seconds=10)
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_PATTERN = re.compile(headers.IDEMPOTENCY_KEY_PATTERN)

# The accepted-at stamp (see "When the write was accepted" above). The age limit is the
# deferred queue's retention (MessageRetentionPeriod of DeferredWritesQueue, 14 days).
ACCEPTED_AT_MAX_SKEW = timedelta(minutes=5)
ACCEPTED_AT_MAX_AGE = timedelta(days=14)
_ACCEPTED_AT_MAX_CHARS = 40
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})", re.IGNORECASE
)

M = TypeVar("M", bound=BaseModel)


def derived_id(*parts: str, length: int = 32) -> str:
    """A stable id for a keyed write: hex SHA-256 of ``parts``, so a second application of
    the same key computes the same id, and neither the key nor the caller can be read back."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:length]


def parse_accepted_at(raw: str | None) -> datetime | None:
    """The ``x-relay-accepted-at`` header as an aware UTC datetime; None if absent or malformed."""
    if raw is None:
        return None
    match = _RFC3339.fullmatch(raw) if len(raw) <= _ACCEPTED_AT_MAX_CHARS else None
    if match is None:
        log.warning(
            "ignoring a malformed %s header: %r", headers.ACCEPTED_AT, raw[:_ACCEPTED_AT_MAX_CHARS]
        )
        return None
    stamp, fraction, zone = match.groups()
    text = (
        stamp
        + (f".{fraction[:6].ljust(6, '0')}" if fraction else "")
        + ("+00:00" if zone.upper() == "Z" else zone)
    )
    try:
        return datetime.fromisoformat(text.replace("t", "T")).astimezone(UTC)
    except ValueError:  # well-formed, but no such time (month 13, 25:00...)
        log.warning("ignoring an impossible %s header: %r", headers.ACCEPTED_AT, raw)
        return None


def accepted_time(
    accepted_at: datetime | None,
    now: datetime,
    *,
    max_skew: timedelta = ACCEPTED_AT_MAX_SKEW,
    max_age: timedelta = ACCEPTED_AT_MAX_AGE,
) -> datetime:
    """When a write was accepted: the gateway's stamp if it is plausible, else ``now``.

    Never later than ``now`` (a stamp ahead within ``max_skew`` is clamped); a stamp
    further ahead, or older than ``max_age``, is ignored (see the module docstring).
    """
    if accepted_at is None:
        return now
    if accepted_at - now > max_skew:
        log.warning(
            "ignoring %s %s: more than %s ahead of this module's clock (%s)",
            headers.ACCEPTED_AT,
            accepted_at.isoformat(),
            max_skew,
            now.isoformat(),
        )
        return now
    if now - accepted_at > max_age:
        log.warning(
            "ignoring %s %s: older than %s, no delivery can be",
            headers.ACCEPTED_AT,
            accepted_at.isoformat(),
            max_age,
        )
        return now
    return min(accepted_at, now)


class _LocalDeadline:
    """Stands in for the Lambda context outside Lambda (Powertools only asks the time left)."""

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return int(LOCAL_IN_PROGRESS_TIMEOUT.total_seconds() * 1000)


class IdempotencyStore:
    """One module's idempotency table (key ``id``, TTL ``expiration``)."""

    def __init__(
        self,
        table_name: str,
        *,
        prefix: str,
        dynamodb: Any = None,
        expires_after: timedelta = IDEMPOTENCY_EXPIRY,
    ) -> None:
        self.table_name = table_name
        self.prefix = prefix  # stored ids read "<prefix>#<sha256>"
        self.expires_after = expires_after
        self._client = dynamodb  # a boto3 DynamoDB *client*; None: Powertools makes one
        self._layer: DynamoDBPersistenceLayer | None = None
        self._lock = threading.Lock()

    @property
    def persistence(self) -> DynamoDBPersistenceLayer:
        with self._lock:
            if self._layer is None:
                self._layer = DynamoDBPersistenceLayer(
                    table_name=self.table_name,
                    key_attr="id",
                    expiry_attr="expiration",
                    boto_config=client_config(),
                    boto3_client=self._client,
                )
            return self._layer

    def run(
        self,
        model: type[M],
        operation: Callable[[], M],
        *,
        scope: str,
        request: Any,
        lambda_context: Any = None,
    ) -> tuple[M, bool]:
        """``operation()``'s result once per ``scope``, and whether it was replayed."""
        replayed = False

        def mark_replayed(response: M, _record: Any) -> M:
            nonlocal replayed
            replayed = True
            return response

        # Powertools configures the persistence layer from the first config it sees; every
        # call builds the same one, only the Lambda context and the replay hook differ.
        config = IdempotencyConfig(
            event_key_jmespath="scope",
            payload_validation_jmespath="request",
            raise_on_no_idempotency_key=True,
            hash_function="sha256",
            expires_after_seconds=int(self.expires_after.total_seconds()),
            response_hook=mark_replayed,  # type: ignore[arg-type]  # typed for dicts; any value
        )
        # Under Lambda, Mangum's context; elsewhere a stand-in with the one method it reads.
        config.register_lambda_context(lambda_context or _LocalDeadline())  # type: ignore[arg-type]

        @idempotent_function(
            data_keyword_argument="call",
            persistence_store=self.persistence,
            config=config,
            output_serializer=PydanticSerializer(model),
            key_prefix=self.prefix,
        )
        def once(call: dict[str, Any]) -> M:
            return operation()

        try:
            result = once(call={"scope": scope, "request": to_jsonable_python(request)})
        except IdempotencyValidationError:
            raise IdempotencyKeyReusedError(
                "this Idempotency-Key was already used with a different request; "
                "use a new key for a new request"
            ) from None
        except (IdempotencyAlreadyInProgressError, IdempotencyInconsistentStateError):
            raise IdempotencyInProgressError(
                "a request with this Idempotency-Key is still being processed; "
                "retry shortly for its result"
            ) from None
        except IdempotencyPersistenceLayerError:
            log.exception("idempotency table %s failed", self.table_name)
            raise UnavailableError(
                "the idempotency record of this write could not be read or "
                "written; retry with the same Idempotency-Key",
                retry_after=1,
            ) from None
        return result, replayed


class IdempotentCall:
    """A write route's work, run once per ``Idempotency-Key`` (see the module docstring).

    ``key`` is the request's key (None without one): services derive stored ids from it so
    that a second application of the work finds the first. ``accepted_at`` is the gateway's
    ``x-relay-accepted-at`` stamp, parsed but not yet judged: services pass it through
    :func:`accepted_time` with their own clock.
    """

    def __init__(
        self,
        store: IdempotencyStore,
        key: str | None,
        scope: str,
        path_params: dict[str, Any],
        lambda_context: Any,
        response: Response,
        accepted_at: datetime | None = None,
    ) -> None:
        self.store = store
        self.key = key
        self.accepted_at = accepted_at
        self.scope = scope
        self.path_params = path_params
        self.lambda_context = lambda_context
        self.response = response

    def __call__(self, model: type[M], body: BaseModel | None, operation: Callable[[], M]) -> M:
        if self.key is None:
            return operation()
        result, replayed = self.store.run(
            model,
            operation,
            scope=self.scope,
            request={"path": self.path_params, "body": body},
            lambda_context=self.lambda_context,
        )
        if replayed:
            self.response.headers[REPLAYED_HEADER] = "true"
        return result


def idempotent_call(
    request: Request,
    response: Response,
    identity: Identity,
    key: Annotated[
        str | None,
        Header(
            alias=headers.IDEMPOTENCY_KEY,
            description="8-64 characters of A-Z a-z 0-9 _ -: a retry with the same key and "
            "request gets the first answer",
        ),
    ] = None,
) -> IdempotentCall:
    """The route's :class:`IdempotentCall`; the app keeps its store at ``app.state.idempotency``."""
    if key is not None and not KEY_PATTERN.fullmatch(key):
        raise InvalidIdempotencyKeyError(
            "Idempotency-Key must be 8 to 64 characters of A-Z, a-z, 0-9, '_' and '-'"
        )
    route = request.scope.get("route")
    operation = f"{request.method} {getattr(route, 'path', request.url.path)}"
    return IdempotentCall(
        store=request.app.state.idempotency,
        key=key,
        scope=f"{identity.sub}:{operation}:{key}",
        path_params=dict(request.path_params),
        lambda_context=request.scope.get("aws.context"),  # set by Mangum under Lambda
        response=response,
        # Set by the gateway, not a client (it drops client x-relay-* headers): read here
        # rather than declared, so it stays out of the published contract.
        accepted_at=parse_accepted_at(request.headers.get(headers.ACCEPTED_AT)),
    )


Idempotent = Annotated[IdempotentCall, Depends(idempotent_call)]
