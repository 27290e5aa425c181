"""Lambda entry point for the gateway (API Gateway HTTP API, ``$default`` stage)."""

from mangum import Mangum

from gateway.app import create_app
from module_kit.http import LAMBDA_TEXT_MIME_TYPES

handler = Mangum(create_app(), lifespan="off", text_mime_types=LAMBDA_TEXT_MIME_TYPES)
