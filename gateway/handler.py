"""Lambda entry point for the gateway (API Gateway HTTP API, ``$default`` stage)."""

from mangum import Mangum

from .app import create_app

handler = Mangum(create_app(), lifespan="off")
