"""Navigate HTTP API. ``create_app()`` builds it; nothing talks to AWS until a request needs it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Query

from module_kit import http
from module_kit.app import app_service, module_app
from module_kit.http import DriverIdentity
from shared_contracts import ID_PATTERN
from shared_contracts.navigate import Directions

from .config import NavigateSettings
from .engine import RoutingEngine
from .repository import FacilitiesRepository, LoadsReader
from .service import NavigateService

LoadIdQuery = Annotated[str, Query(pattern=ID_PATTERN)]
LatQuery = Annotated[
    float, Query(ge=-90, le=90, allow_inf_nan=False, description="Driver's current latitude")
]
LonQuery = Annotated[
    float, Query(ge=-180, le=180, allow_inf_nan=False, description="Driver's current longitude")
]


Service = Annotated[NavigateService, Depends(app_service)]


def create_app(
    settings: NavigateSettings | None = None,
    *,
    service: NavigateService | None = None,
    engine: RoutingEngine | None = None,
) -> FastAPI:
    """``engine`` plugs in a real routing engine; the default is the straight-line estimate."""
    if service is None:
        settings = settings or NavigateSettings()
        service = NavigateService(
            FacilitiesRepository(settings), LoadsReader(settings), engine=engine
        )
    app = module_app("navigate", title="Relay navigate", service=service)
    errors = http.json_error_responses(401, 404, 409, 422, 503)

    @app.get("/navigate", response_model=Directions, responses=errors)
    def navigate(
        load_id: LoadIdQuery, lat: LatQuery, lon: LonQuery, identity: DriverIdentity, svc: Service
    ) -> Directions:
        return svc.directions(identity, load_id, (lat, lon))

    return app
