"""``GET /openapi.json``: the mobile API's document, as checked in next to this file.

The gateway is a catch-all proxy, so FastAPI's generated schema would describe nothing
useful; create the gateway app with ``openapi_url=None`` and install this instead. The
document is built from the modules' contracts by ``relay.openapi`` (``make openapi``) and
read once here at start-up: the gateway is deployed without the modules' code, and a
missing or broken file stops start-up rather than failing requests.
"""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import FastAPI
from starlette.responses import Response

DOCUMENT_FILE = Path(__file__).with_name("openapi.json")
# The document changes only with a deployment; clients may keep it a few minutes.
CACHE_CONTROL = "public, max-age=300"


def install_openapi(app: FastAPI, path: Path = DOCUMENT_FILE) -> None:
    """Serve ``path`` at ``GET /openapi.json``: a route of the gateway's own, which the
    pipeline's ``LocalRoutes`` step reads from the app's routes and never forwards."""
    body = path.read_bytes()
    json.loads(body)  # fail at start-up, not per request, if the file is not JSON

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_document() -> Response:
        return Response(
            body, media_type="application/json", headers={"Cache-Control": CACHE_CONTROL}
        )
