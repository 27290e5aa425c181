"""Lambda entry point for the gateway: HTTP API events on any stage (and function URLs)."""

from gateway.app import create_app
from module_kit.lambda_entry import lambda_handler

handler = lambda_handler(create_app())
