"""Lambda entry point: API Gateway / function URL events through Mangum."""

from mangum import Mangum

from module_kit.http import LAMBDA_TEXT_MIME_TYPES

from .app import create_app

handler = Mangum(create_app(), lifespan="off", text_mime_types=LAMBDA_TEXT_MIME_TYPES)
