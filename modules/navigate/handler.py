"""Lambda entry point: API Gateway / function URL events through Mangum."""

from mangum import Mangum

from .app import create_app

handler = Mangum(create_app(), lifespan="off")
