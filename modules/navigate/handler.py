"""Lambda entry point: function URL, HTTP API (any stage) and REST API events."""

from module_kit.lambda_entry import lambda_handler

from .app import create_app

handler = lambda_handler(create_app())
