"""Operator views and levers: breaker states, bulkheads, faults. Role ``ops`` only."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response

from shared_contracts.errors import ForbiddenError, NotFoundError
from shared_contracts.identity import IdentityContext, Role

from .faults import ActiveFault, FaultSpec


async def _operator(request: Request) -> IdentityContext:
    state = request.app.state
    identity = await state.authenticator.authenticate(request.headers.get("authorization"))
    if identity.role is not Role.OPS:
        raise ForbiddenError("operator routes need the ops role")
    state.limiter.check(identity.sub, "/ops", state.limits[Role.OPS.value])
    return identity


Operator = Annotated[IdentityContext, Depends(_operator)]
ModuleName = Annotated[str, Path(pattern=r"^[a-z][a-z0-9-]{0,31}$")]

router = APIRouter(prefix="/ops", tags=["ops"])


@router.get("/status")
def status(request: Request, _: Operator) -> dict[str, Any]:
    state = request.app.state
    return {
        "modules": {
            name: {
                "tier": up.module.tier.value,
                "breaker": asdict(up.breaker.snapshot()),
                "bulkhead": {"in_flight": up.bulkhead.in_flight,
                             "max_concurrent": up.bulkhead.config.max_concurrent,
                             "rejected": up.bulkhead.rejected},
            }
            for name, up in state.upstreams.items()
        },
        "fallbacks_served": dict(state.forwarder.served),
        "unavailable": dict(state.forwarder.unavailable),
        "fallback_errors": dict(state.forwarder.fallback_errors),
        "faults": [f.model_dump() for f in state.faults.list()],
    }


def _known(request: Request, module: str) -> None:
    if module not in request.app.state.upstreams:
        raise NotFoundError(f"no module {module}")


@router.put("/faults/{module}", response_model=ActiveFault)
def set_fault(module: ModuleName, spec: FaultSpec, request: Request,
              operator: Operator) -> ActiveFault:
    _known(request, module)
    return request.app.state.faults.set(module, spec, set_by=operator.sub)


@router.delete("/faults/{module}", status_code=204)
def clear_fault(module: ModuleName, request: Request, operator: Operator) -> Response:
    _known(request, module)
    request.app.state.faults.clear(module, cleared_by=operator.sub)
    return Response(status_code=204)
