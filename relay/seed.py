"""Seed the local stack with demo drivers' facilities and loads, through the modules' own code."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

from . import demo


def seed_demo_data(
    function_env: Callable[[str], dict[str, str]],
    *,
    dynamodb: Any,
    sqs: Any,
    now: datetime | None = None,
    loads_cells: dict[str, dict[str, str]] | None = None,
    metrics_stream: IO[str] | None = None,
) -> None:
    """Write demo facilities and loads with the modules' own repositories and services.

    ``function_env(logical_id)`` gives a function's resolved environment (table names...).
    ``loads_cells`` (a celled stage: each loads cell's function environment, by cell) puts
    each driver's loads in the driver's cell: its default
    (:func:`gateway.cells.placement.default_cell`), as nothing is placed explicitly yet.
    ``metrics_stream``: where the loads service's metric lines go (the demo assignments
    count as created, as the module's own would), not the terminal; by default, nowhere.
    """
    from gateway.cells.placement import default_cell
    from module_kit.metrics import ModuleMetrics
    from modules.loads.config import LoadsSettings
    from modules.loads.repository import LoadsRepository
    from modules.loads.service import LoadsService
    from modules.navigate.config import NavigateSettings
    from modules.navigate.repository import FacilitiesRepository

    now = now or datetime.now(UTC)

    facilities = FacilitiesRepository(
        NavigateSettings.model_validate(_fields(function_env("NavigateFunction"))),
        dynamodb=dynamodb,
    )
    for f in demo.FACILITIES:
        facilities.put(demo.destination(f["facility_id"]), f["cell"])

    def service(env: dict[str, str]) -> LoadsService:
        settings = LoadsSettings.model_validate(_fields(env))
        return LoadsService(
            LoadsRepository(settings, dynamodb=dynamodb, sqs=sqs),
            metrics_writer=ModuleMetrics("loads", stream=metrics_stream or io.StringIO()),
        )

    if loads_cells:
        cells = {cell: service(env) for cell, env in loads_cells.items()}
        for assignment in demo.loads(now):
            cells[default_cell(assignment.driver_id, list(cells))].assign(assignment)
        return
    loads = service(function_env("LoadsFunction"))
    for assignment in demo.loads(now):
        loads.assign(assignment)


def _fields(env: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in env.items()}
