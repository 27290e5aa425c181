"""``GET /deferred/{tracking_id}``: a caller asks what became of a write accepted with 202.

The answer comes from the deferred-writes ledger (:mod:`gateway.deferred.ledger`), shared by every
gateway instance and the replayer: pending, applied, or refused with the module's reason.
A caller only ever sees their own writes; another caller's tracking id is a 404, the same
as one that does not exist.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from gateway import aws_calls
from gateway.deferred.ledger import LedgerError
from shared_contracts import headers
from shared_contracts.degraded import DeferredWriteStatus
from shared_contracts.errors import NotFoundError, UnavailableError
from shared_contracts.identity import IdentityContext

STATUS_RETRY_AFTER_SECONDS = 2


async def _caller(request: Request) -> IdentityContext:
    state = request.app.state
    identity: IdentityContext = await state.authenticator.authenticate(
        request.headers.get("authorization")
    )
    state.limiter.check(identity.sub, "/deferred", state.limits[identity.role.value])
    return identity


Caller = Annotated[IdentityContext, Depends(_caller)]
TrackingId = Annotated[str, Path(pattern=f"^{headers.IDEMPOTENCY_KEY_PATTERN}$")]

router = APIRouter(tags=["deferred"])


@router.get("/deferred/{tracking_id}", response_model=DeferredWriteStatus)
async def deferred_status(
    tracking_id: TrackingId, request: Request, caller: Caller
) -> DeferredWriteStatus:
    ledger = request.app.state.ledger
    if ledger is None:
        raise NotFoundError(f"no deferred write {tracking_id}")
    try:
        found = await aws_calls.call(
            ledger.status,
            caller.sub,
            tracking_id,
            timeout=request.app.state.settings.store_timeout_seconds,
            what="deferred ledger",
        )
    except (aws_calls.DependencyTimeout, LedgerError):
        raise UnavailableError(
            "the state of deferred writes cannot be read right now",
            retry_after=STATUS_RETRY_AFTER_SECONDS,
        ) from None
    if found is None:
        raise NotFoundError(f"no deferred write {tracking_id}")
    return found
