"""Seed the local stack with demo drivers' facilities and loads, through the modules' own code."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from . import demo


def seed_demo_data(
    function_env: Callable[[str], dict[str, str]],
    *,
    dynamodb: Any,
    sqs: Any,
    now: datetime | None = None,
) -> None:
    """Write demo facilities and loads with the modules' own repositories and services.

    ``function_env(logical_id)`` gives a function's resolved environment (table names...).
    """
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

    loads = LoadsService(
        LoadsRepository(
            LoadsSettings.model_validate(_fields(function_env("LoadsFunction"))),
            dynamodb=dynamodb,
            sqs=sqs,
        )
    )
    for assignment in demo.loads(now):
        loads.assign(assignment)


def _fields(env: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in env.items()}
