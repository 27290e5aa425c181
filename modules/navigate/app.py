"""Navigate HTTP API. ``create_app()`` builds it; nothing talks to AWS until a request needs it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Query, Request

from module_kit import http
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


def _service(request: Request) -> NavigateService:
    return request.app.state.service


Service = Annotated[NavigateService, Depends(_service)]


def create_app(
    settings: NavigateSettings | None = None,
    *,
    service: NavigateService | None = None,
    engine: RoutingEngine | None = None,
) -> FastAPI:
    """``engine`` plugs in a real routing engine; the default is the straight-line estimate."""
    app = FastAPI(title="Relay navigate", version="1", docs_url=None, redoc_url=None)
    if service is None:
        settings = settings or NavigateSettings()
        service = NavigateService(
            FacilitiesRepository(settings), LoadsReader(settings), engine=engine
        )
    app.state.service = service
    http.install(app, audience="navigate")
    errors = http.json_error_responses(401, 404, 409, 422, 503)

    @app.get("/healthz", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/navigate", response_model=Directions, responses=errors)
    def navigate(
        load_id: LoadIdQuery, lat: LatQuery, lon: LonQuery, identity: DriverIdentity, svc: Service
    ) -> Directions:
        return svc.directions(identity.driver, load_id, (lat, lon))

    return app
