"""The emergency levers for operators (role ``ops``): list, pull, release
(docs/operations.md, Levers).

``GET /ops/levers`` the levers in force and the newest changes; ``POST /ops/levers``
``{type, target, reason, ttl_seconds?}`` pulls one (201); ``DELETE /ops/levers/{id}`` (or
``POST /ops/levers/{id}/release``) lets it go early (204). A safety rule's refusal is 409
``lever-refused`` naming the rule; a type or target this stage does not have, 422; a lever
not in force, 404.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Path, Request, Response

from gateway.levers import (
    InvalidLeverError,
    LeverConflictError,
    LeverControl,
    LeverRefusedError,
    UnknownLeverError,
)
from gateway.ops.operators import Operator, _controlled
from shared_contracts.errors import (
    ConflictError,
    NotFoundError,
    UnavailableError,
    ValidationFailedError,
)
from shared_contracts.levers import Lever, LeverPull, LeverRelease

router = APIRouter(prefix="/ops", tags=["ops"])
T = TypeVar("T")
LeverId = Annotated[str, Path(pattern=r"^[a-z]+:[a-z0-9][a-z0-9:/_-]*$", max_length=100)]
AUDIT_SHOWN = 20


def _control(request: Request) -> LeverControl:
    control: LeverControl | None = request.app.state.lever_control
    if control is None:
        raise NotFoundError("levers are not configured here (no routing-control table)")
    return control


async def _call(request: Request, fn: Callable[..., T], *args: Any) -> T:
    try:
        return await _controlled(request, fn, *args)
    except LeverRefusedError as exc:
        raise ConflictError(str(exc), code="lever-refused") from None
    except LeverConflictError as exc:
        raise ConflictError(str(exc), code="changed-meanwhile") from None
    except InvalidLeverError as exc:
        raise ValidationFailedError(str(exc)) from None
    except UnknownLeverError as exc:
        raise NotFoundError(str(exc)) from None


@router.get("/levers")
async def list_levers(request: Request, _: Operator) -> dict[str, Any]:
    """The levers in force (from the table itself) and the newest pulls and releases."""
    control = _control(request)
    active = await _call(request, control.active)
    try:
        audit: Any = [a.model_dump() for a in await _call(request, control.audit, AUDIT_SHOWN)]
    except UnavailableError as exc:
        audit = {"error": exc.detail}
    return {"levers": [lever.model_dump() for lever in active], "audit": audit}


@router.post("/levers", status_code=201, response_model=Lever)
async def pull_lever(pull: LeverPull, request: Request, operator: Operator) -> Lever:
    """Pull a lever (again: renewed from now). 409 ``lever-refused`` when a safety rule
    refuses it."""
    lever = await _call(request, partial(_control(request).pull, pull, operator.sub))
    await _took_effect(request)
    return lever


@router.delete("/levers/{lever_id:path}", status_code=204)
@router.post("/levers/{lever_id:path}/release", status_code=204)
async def release_lever(
    lever_id: LeverId,
    request: Request,
    operator: Operator,
    change: Annotated[LeverRelease | None, Body()] = None,
) -> Response:
    """Let a lever go before it expires (``POST .../release`` is the same, for clients
    that send no body with a DELETE)."""
    await _release(request, lever_id, operator.sub, change)
    return Response(status_code=204)


async def _release(request: Request, lever_id: str, who: str, change: LeverRelease | None) -> None:
    why = (change or LeverRelease()).reason
    await _call(request, partial(_control(request).release, lever_id, who, why))
    await _took_effect(request)


async def _took_effect(request: Request) -> None:
    """This instance acts on the change at once (the others within their refresh)."""
    state = request.app.state
    with contextlib.suppress(UnavailableError):  # else the next background refresh reads it
        await _controlled(request, state.levers.refresh)
    if state.regions is not None:
        state.regions.copy.started_at = float("-inf")  # an evacuation: read it next request
