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

Nothing here talks to AWS at import time; the DynamoDB client is made on first use.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from datetime import timedelta
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

from . import headers
from .errors import BadRequestError, ConflictError, ProblemError, UnavailableError
from .http import Identity

log = logging.getLogger("relay.idempotency")

IDEMPOTENCY_EXPIRY = timedelta(hours=24)
# Under uvicorn there is no Lambda context to say how long the request may still run; an
# INPROGRESS record left by a crash blocks its key this long (the functions' Timeout).
LOCAL_IN_PROGRESS_TIMEOUT = timedelta(seconds=10)
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_PATTERN = re.compile(headers.IDEMPOTENCY_KEY_PATTERN)

M = TypeVar("M", bound=BaseModel)


class InvalidIdempotencyKeyError(BadRequestError):
    code, title = "invalid-idempotency-key", "Invalid idempotency key"


class IdempotencyKeyReusedError(ProblemError):
    status, code, title = 422, "idempotency-key-reused", "Idempotency key reused"


class IdempotencyInProgressError(ConflictError):
    code, title = "idempotency-in-progress", "Request already in progress"

    def __init__(self, detail: str | None = None, **kw: Any) -> None:
        kw.setdefault("headers", {"Retry-After": "1"})
        super().__init__(detail, **kw)


class _LocalDeadline:
    """Stands in for the Lambda context outside Lambda (Powertools only asks the time left)."""

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return int(LOCAL_IN_PROGRESS_TIMEOUT.total_seconds() * 1000)


class IdempotencyStore:
    """One module's idempotency table (key ``id``, TTL ``expiration``)."""

    def __init__(self, table_name: str, *, prefix: str, dynamodb: Any = None,
                 expires_after: timedelta = IDEMPOTENCY_EXPIRY) -> None:
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
                    table_name=self.table_name, key_attr="id", expiry_attr="expiration",
                    boto3_client=self._client)
            return self._layer

    def run(self, model: type[M], operation: Callable[[], M], *, scope: str, request: Any,
            lambda_context: Any = None) -> tuple[M, bool]:
        """``operation()``'s result once per ``scope``, and whether it was replayed."""
        replayed = False

        def mark_replayed(response: M, _record: Any) -> M:
            nonlocal replayed
            replayed = True
            return response

        # Powertools configures the persistence layer from the first config it sees; every
        # call builds the same one, only the Lambda context and the replay hook differ.
        config = IdempotencyConfig(
            event_key_jmespath="scope", payload_validation_jmespath="request",
            raise_on_no_idempotency_key=True, hash_function="sha256",
            expires_after_seconds=int(self.expires_after.total_seconds()),
            response_hook=mark_replayed,
        )
        config.register_lambda_context(lambda_context or _LocalDeadline())

        @idempotent_function(data_keyword_argument="call", persistence_store=self.persistence,
                             config=config, output_serializer=PydanticSerializer(model),
                             key_prefix=self.prefix)
        def once(call: dict[str, Any]) -> M:
            return operation()

        try:
            result = once(call={"scope": scope, "request": to_jsonable_python(request)})
        except IdempotencyValidationError:
            raise IdempotencyKeyReusedError(
                "this Idempotency-Key was already used with a different request; "
                "use a new key for a new request") from None
        except (IdempotencyAlreadyInProgressError, IdempotencyInconsistentStateError):
            raise IdempotencyInProgressError(
                "a request with this Idempotency-Key is still being processed; "
                "retry shortly for its result") from None
        except IdempotencyPersistenceLayerError:
            log.exception("idempotency table %s failed", self.table_name)
            raise UnavailableError("the idempotency record of this write could not be read or "
                                   "written; retry with the same Idempotency-Key",
                                   retry_after=1) from None
        return result, replayed


class IdempotentCall:
    """A write route's work, run once per ``Idempotency-Key`` (see the module docstring)."""

    def __init__(self, store: IdempotencyStore, key: str | None, scope: str,
                 path_params: dict[str, Any], lambda_context: Any, response: Response) -> None:
        self.store = store
        self.key = key
        self.scope = scope
        self.path_params = path_params
        self.lambda_context = lambda_context
        self.response = response

    def __call__(self, model: type[M], body: BaseModel | None, operation: Callable[[], M]) -> M:
        if self.key is None:
            return operation()
        result, replayed = self.store.run(
            model, operation, scope=self.scope,
            request={"path": self.path_params, "body": body},
            lambda_context=self.lambda_context)
        if replayed:
            self.response.headers[REPLAYED_HEADER] = "true"
        return result


def idempotent_call(
    request: Request, response: Response, identity: Identity,
    key: Annotated[str | None, Header(
        alias=headers.IDEMPOTENCY_KEY,
        description="8-64 characters of A-Z a-z 0-9 _ -: a retry with the same key and "
                    "request gets the first answer")] = None,
) -> IdempotentCall:
    """The route's :class:`IdempotentCall`; the app keeps its store at ``app.state.idempotency``."""
    if key is not None and not KEY_PATTERN.fullmatch(key):
        raise InvalidIdempotencyKeyError(
            "Idempotency-Key must be 8 to 64 characters of A-Z, a-z, 0-9, '_' and '-'")
    route = request.scope.get("route")
    operation = f"{request.method} {getattr(route, 'path', request.url.path)}"
    return IdempotentCall(
        store=request.app.state.idempotency, key=key,
        scope=f"{identity.sub}:{operation}:{key}", path_params=dict(request.path_params),
        lambda_context=request.scope.get("aws.context"),  # set by Mangum under Lambda
        response=response)


Idempotent = Annotated[IdempotentCall, Depends(idempotent_call)]
