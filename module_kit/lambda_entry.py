"""A Lambda entry point for an ASGI app: Mangum, with the API stage's path prefix removed.

Every function that serves HTTP (the gateway and each module) builds its handler here::

    handler = lambda_handler(create_app())

The same app is reached through four kinds of event, and the path the app sees must be the
same in all of them:

- a function URL (payload 2.0): ``rawPath`` is the request's path;
- an HTTP API on its ``$default`` stage (payload 2.0): the same;
- an HTTP API on a named stage, e.g. ``prod`` (payload 2.0): ``rawPath`` and
  ``requestContext.http.path`` start with ``/prod``, which the app's routes do not know;
- a REST API (payload 1.0): ``path`` is already without the stage.

Mangum strips one fixed base path, set when the handler is built; the stage is known only
from the event, so the prefix is removed here, per event, before Mangum reads it.

Every invocation also records how the function version that ran it answered, as
CloudWatch Embedded Metric Format (Powertools ``Metrics``, flushed before the handler
returns): in namespace :data:`NAMESPACE`, dimensions ``service`` (``POWERTOOLS_SERVICE_NAME``)
and ``function_version`` (the Lambda context's, the version number an alias ran),

- :data:`ANSWERS`: 1 per answer;
- :data:`ANSWERS_5XX`: 1 if it was a 5xx (a Mangum failure to answer counts as one);
- :data:`ANSWERS_401`: 1 if it was a 401. A module answering 401 refused the gateway's
  signed identity: a broken release (an empty public key, a wrong audience), never a
  driver's mistake, which the gateway answers itself.

Lambda's own ``Errors`` never see these: the app answers its failures. The canary alarms
and the post-traffic hook judge a new version by them (docs/deploy.md, Canary releases).
Nothing is recorded without a Lambda context (local processes run the app under uvicorn,
not this handler) nor for the deploy hooks' smoke requests (events carrying
:data:`SMOKE_MARKER`, which no HTTP caller can set): the hooks judge those themselves.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
    AmazonCloudWatchEMFProvider,
)
from mangum import Mangum

from .http import LAMBDA_TEXT_MIME_TYPES

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]

NAMESPACE = "Relay"
ANSWERS = "Answers"
ANSWERS_5XX = "Answers5xx"
ANSWERS_401 = "Answers401"
VERSION_DIMENSION = "function_version"
SERVICE_VARIABLE = "POWERTOOLS_SERVICE_NAME"
# A top-level event key only a direct invocation can carry (a function URL, HTTP API or
# REST API builds the event itself): set by module_kit.deploy_hooks on its smoke requests.
SMOKE_MARKER = "relaySmoke"


def without_stage_prefix(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` with a named stage's ``/<stage>`` removed from its paths (payload 2.0).

    A function URL, a ``$default`` stage and REST (1.0) events come back unchanged; so does
    a path that does not start with the stage (a custom domain's API mapping already
    removed it). The event is not modified; a changed copy is returned.
    """
    if event.get("version") != "2.0":
        return event
    context = event.get("requestContext") or {}
    stage = context.get("stage")
    if not stage or stage == "$default":
        return event
    prefix = f"/{stage}"
    http = context.get("http") or {}
    raw_path = event.get("rawPath", "")
    if not _under(raw_path, prefix):
        return event
    stripped = {"rawPath": raw_path[len(prefix) :] or "/"}
    path = http.get("path", raw_path)
    if _under(path, prefix):
        context = {**context, "http": {**http, "path": path[len(prefix) :] or "/"}}
    return {**event, **stripped, "requestContext": context}


def lambda_handler(app: Any, *, service: str | None = None) -> LambdaHandler:
    """The Lambda handler for ``app``: problem+json goes out as text, no lifespan, and the
    answer counted per function version (module docstring). ``service`` names the
    ``service`` dimension; by default ``POWERTOOLS_SERVICE_NAME``, read per invocation."""
    mangum = Mangum(app, lifespan="off", text_mime_types=LAMBDA_TEXT_MIME_TYPES)

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        try:
            response: dict[str, Any] = mangum(without_stage_prefix(event), context)
        except Exception:
            record_answer(event, context, 500, service=service)  # the caller gets a 502
            raise
        record_answer(event, context, response.get("statusCode", 500), service=service)
        return response

    return handler


def record_answer(event: dict[str, Any], context: Any, status: int, *, service: str | None) -> None:
    """Emit one invocation's answer metrics (EMF on stdout), unless outside Lambda."""
    version = getattr(context, "function_version", None)
    if not isinstance(version, str) or not version or event.get(SMOKE_MARKER):
        return
    name = service or os.environ.get(SERVICE_VARIABLE) or "unknown"
    # Its own provider: the metric set is this invocation's, whatever else uses Metrics.
    metrics = Metrics(provider=AmazonCloudWatchEMFProvider(namespace=NAMESPACE, service=name))
    metrics.add_dimension(VERSION_DIMENSION, version)
    metrics.add_metric(ANSWERS, MetricUnit.Count, 1)
    metrics.add_metric(ANSWERS_5XX, MetricUnit.Count, 1 if status >= 500 else 0)
    metrics.add_metric(ANSWERS_401, MetricUnit.Count, 1 if status == 401 else 0)
    metrics.flush_metrics()


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")
