"""Operator views and levers: breaker states, bulkheads, faults, regions. Role ``ops`` only."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Path, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from gateway import aws_calls
from gateway.deferred.ledger import LedgerError
from gateway.ops.metrics import summary
from gateway.regions.control import REGION_NAME, ControlConflict, SafetyRuleError
from gateway.resilience.faults import ActiveFault, FaultSpec
from shared_contracts.degraded import DeferredState
from shared_contracts.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    UnavailableError,
)
from shared_contracts.identity import IdentityContext, Role


async def _operator(request: Request) -> IdentityContext:
    state = request.app.state
    identity = await state.authenticator.authenticate(request.headers.get("authorization"))
    if identity.role is not Role.OPS:
        raise ForbiddenError("operator routes need the ops role")
    state.limiter.check(identity.sub, "/ops", state.limits[Role.OPS.value])
    return identity


Operator = Annotated[IdentityContext, Depends(_operator)]
# A module ("loads"), one cell of a celled module ("loads/cell-1"), or either as a peer
# region serves it to this gateway ("us-west-2:loads", "us-west-2:loads/cell-1").
ModuleName = Annotated[
    str,
    Path(pattern=r"^([a-z]{2}(-[a-z]+)+-\d:)?[a-z][a-z0-9-]{0,31}(/[a-z][a-z0-9-]{0,15})?$"),
]

RegionName = Annotated[str, Path(pattern=REGION_NAME)]

router = APIRouter(prefix="/ops", tags=["ops"])
# ``GET /metrics``: where Prometheus looks by convention; the ops token all the same
metrics_router = APIRouter(tags=["ops"])
T = TypeVar("T")


async def _deferred(request: Request) -> dict[str, Any]:
    """Writes accepted with 202 and not applied: pending (queued) and refused for good."""
    ledger = request.app.state.ledger
    if ledger is None:
        return {"ledger": "not configured"}
    out: dict[str, Any] = {}
    for state in (DeferredState.PENDING, DeferredState.REFUSED):
        try:
            count, complete, newest = await aws_calls.call(
                ledger.open_writes,
                state,
                timeout=request.app.state.settings.store_timeout_seconds * 4,
                what="deferred ledger",
            )
        except (aws_calls.DependencyTimeout, LedgerError) as exc:
            out[state.value] = {"error": str(exc)}
            continue
        out[state.value] = {
            "count": count if complete else f"{count}+",
            "newest": [w.model_dump(mode="json") for w in newest],
        }
    return out


@router.get("/status")
async def status(request: Request, _: Operator) -> dict[str, Any]:
    state = request.app.state
    state.cells.keep_current()  # an idle instance's placements: as fresh as its releases
    fleet = state.fleet
    return {
        "modules": {
            name: {
                "tier": up.module.tier.value,
                **(
                    {"module": up.module.name, "cell": name.split("/", 1)[1]} if "/" in name else {}
                ),
                "breaker": asdict(up.breaker.snapshot()),
                # the fleet's state of the breaker, as this instance last read it
                **({"fleet": fleet.status(name)} if fleet is not None else {}),
                "bulkhead": {
                    "in_flight": up.bulkhead.in_flight,
                    "max_concurrent": up.bulkhead.config.max_concurrent,
                    "rejected": up.bulkhead.rejected,
                },
            }
            for name, up in state.upstreams.items()
        },
        # each module's release as this instance last read it, its canary's breaker and
        # bulkhead, this instance's calls per version, and the answers by version header
        **(
            {
                "releases": state.releases.view(),
                "canary_retries": dict(state.forwarder.canary_retries),
                "versions_served": state.forwarder.versions_view(),
            }
            if state.releases is not None
            else {}
        ),
        # the celled modules' cells, keys placed explicitly and keys moving now
        **({"cells": state.cells.view()} if state.cells.modules else {}),
        # this region, its peers, the routing controls and the calls sent to peers
        **({"regions": state.regions.view()} if state.regions.peers else {}),
        "fallbacks_served": dict(state.forwarder.served),
        "unavailable": dict(state.forwarder.unavailable),
        "fallback_errors": dict(state.forwarder.fallback_errors),
        "faults": [f.model_dump() for f in state.faults.list()],
        # the operators' levers in force (as this instance last read them) and time left
        **({"levers": state.levers.view()} if hasattr(state, "levers") else {}),
        # load shedding: in flight, the loop's lag, the tiers shed now and the counts
        **({"shedding": state.shedder.view()} if hasattr(state, "shedder") else {}),
        **({"breaker_fleet": fleet.summary()} if fleet is not None else {}),
        "deferred": await _deferred(request),
    }


@router.get("/routes")
async def routes(request: Request, _: Operator) -> dict[str, Any]:
    """The route table as this instance runs it: each route's module, fallbacks and
    partition key, and each module's upstreams (its cells, for a celled one) with their
    breaker states."""
    state = request.app.state
    table = state.routes
    return {
        "routes": [
            {
                "prefix": r.prefix,
                "module": r.module,
                "roles": sorted(r.roles),
                "fallback": r.fallback,
                **({"cell_key": r.cell_key} if table.modules[r.module].celled else {}),
            }
            for r in table.routes
        ],
        "modules": {
            name: {
                "tier": m.tier.value,
                "upstreams": {
                    unit: {"url": up.base_url, "breaker": up.breaker.snapshot().state}
                    for unit, up in state.upstreams.items()
                    if unit == name or unit.startswith(name + "/")
                },
            }
            for name, m in table.modules.items()
        },
    }


def _known(request: Request, module: str) -> None:
    state = request.app.state
    region, _, name = module.rpartition(":")
    if region and region not in state.regions.peers:
        raise NotFoundError(f"no peer region {region}")
    if name not in state.upstreams and name not in state.routes.modules:
        raise NotFoundError(f"no module {module}")


@router.put("/faults/{module:path}", response_model=ActiveFault)
async def set_fault(
    module: ModuleName, spec: FaultSpec, request: Request, operator: Operator
) -> ActiveFault:
    _known(request, module)
    faults = request.app.state.faults
    return await _controlled(request, faults.set, module, spec, operator.sub)


@router.delete("/faults/{module:path}", status_code=204)
async def clear_fault(module: ModuleName, request: Request, operator: Operator) -> Response:
    _known(request, module)
    await _controlled(request, request.app.state.faults.clear, module, operator.sub)
    return Response(status_code=204)


async def _controlled(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """An operator's change, written through to the control table within a deadline."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return await aws_calls.call(
            fn,
            *args,
            what="control table",
            timeout=request.app.state.settings.store_timeout_seconds * 4,
        )
    except (aws_calls.DependencyTimeout, BotoCoreError, ClientError) as exc:
        raise UnavailableError(f"the change was not made: {exc}", retry_after=2) from None


class RoutingChange(BaseModel):
    """Why an operator evacuates or restores a region (kept in the audit trail)."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=3, max_length=300)


@router.get("/regions")
async def regions(request: Request, _: Operator) -> dict[str, Any]:
    """This gateway's region and peers, the routing controls as this instance last read
    them, the requests it sent to peer regions, and the newest routing changes."""
    state = request.app.state
    state.regions.copy.keep_current()
    audit: Any = []
    if state.routing_store is not None:
        try:
            audit = [a.view() for a in await _controlled(request, state.routing_store.audit, 20)]
        except UnavailableError as exc:
            audit = {"error": exc.detail}
    return {**state.regions.view(), "audit": audit}


@router.post("/regions/{region}/evacuate")
async def evacuate_region(
    region: RegionName, change: RoutingChange, request: Request, operator: Operator
) -> dict[str, Any]:
    """Move 100% of ``region``'s traffic to the other regions: the front door stops sending
    it requests, and its gateways send their critical modules' calls to a serving peer.
    Refused (409 ``safety-rule``) if no other region serves."""
    return await _routing_change(request, "evacuate", region, change.reason, operator.sub)


@router.post("/regions/{region}/restore")
async def restore_region(
    region: RegionName, change: RoutingChange, request: Request, operator: Operator
) -> dict[str, Any]:
    """Let ``region`` serve again."""
    return await _routing_change(request, "restore", region, change.reason, operator.sub)


async def _routing_change(
    request: Request, action: str, region: str, reason: str, who: str
) -> dict[str, Any]:
    state = request.app.state
    store, regions = state.routing_store, state.regions
    if store is None:
        raise NotFoundError("regions are not configured here (no routing-control table)")
    if region not in regions.regions:
        raise NotFoundError(f"{region} is not one of {', '.join(regions.regions)}")
    change = store.evacuate if action == "evacuate" else store.restore
    try:
        control = await _controlled(
            request, partial(change, region, regions=regions.regions, who=who, why=reason)
        )
    except SafetyRuleError as exc:
        raise ConflictError(str(exc), code="safety-rule") from None
    except ControlConflict as exc:
        raise ConflictError(str(exc), code="changed-meanwhile") from None
    regions.controls = {**regions.controls, region: control}  # this instance acts at once
    return {"control": control.view(), "regions": regions.view()}


@metrics_router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, _: Operator) -> Response:
    """This instance's metrics in Prometheus' text format (docs/operations.md, "Metrics")."""
    return Response(
        generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST
    )


@router.get("/metrics/summary")
async def metrics_summary(request: Request, _: Operator) -> dict[str, Any]:
    """The counts the operators' dashboard charts: requests by module, unit and outcome
    (cumulative: rates come from two reads), breaker states, in-flight and shed requests."""
    return summary(request.app.state.metrics, f"{socket.gethostname()}:{os.getpid()}")
