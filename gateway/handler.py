"""Lambda entry point for the gateway (API Gateway HTTP API, ``$default`` stage)."""

from mangum import Mangum

from module_kit.http import LAMBDA_TEXT_MIME_TYPES

from .app import create_app

handler = Mangum(create_app(), lifespan="off", text_mime_types=LAMBDA_TEXT_MIME_TYPES)
