"""Lambda entry point for the gateway: HTTP API events on any stage (and function URLs).

Nothing scrapes ``/metrics`` in Lambda: each invocation's request goes out as EMF instead
(:func:`gateway.ops.metrics.emit_last`), under the same metric names."""

from typing import Any

from gateway.app import create_app
from gateway.ops.metrics import emit_last
from module_kit.lambda_entry import lambda_handler

app = create_app()
_handle = lambda_handler(app)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        return _handle(event, context)
    finally:
        emit_last(app.state.metrics.requests)
