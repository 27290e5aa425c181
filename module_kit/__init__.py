"""The runtime every Relay module is built on; the gateway uses parts of it too.

One file per capability (the contracts they speak are in :mod:`shared_contracts`, which
stays cheap to import):

- :mod:`module_kit.app`: the part of ``create_app`` every module shares.
- :mod:`module_kit.http`: the problem+json error handlers, the request guard middleware
  (request ids, header and body limits), the identity dependencies of routes.
- :mod:`module_kit.signed_context`: signing (gateway) and verifying (modules) identity contexts.
- :mod:`module_kit.idempotency`: ``Idempotency-Key`` writes on Powertools and DynamoDB,
  and the gateway's accepted-at stamp.
- :mod:`module_kit.aws`: boto3 clients and resources with deadlines.
- :mod:`module_kit.pager`: every page of a DynamoDB query.
- :mod:`module_kit.lambda_entry`: the Lambda handler of every HTTP function (Mangum, a
  named stage's prefix removed, each answer counted per function version as EMF).
- :mod:`module_kit.deploy_hooks`: the CodeDeploy pre/post-traffic hooks that smoke a new
  version with its function's smoke list (``modules/<name>/smoke.py``).
- :mod:`module_kit.etag`: strong ETags of GET answers (``tagged_get``), made by the
  module; the gateway passes them on and answers ``If-None-Match``.
- :mod:`module_kit.metrics`: a module's metrics, one EMF line per event.

The names below are importable from the package itself; each is loaded with its own file
on first use, so ``import module_kit`` costs nothing and the gateway, which needs only
the HTTP glue and the signer, never loads Powertools or boto3 through it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import app_service, module_app
    from .aws import client, client_config, resource
    from .http import (
        LAMBDA_TEXT_MIME_TYPES,
        DispatchIdentity,
        DriverIdentity,
        HeaderLimits,
        Identity,
        RequestGuard,
        install,
        json_error_responses,
        problem_response,
        require_role,
    )
    from .idempotency import IdempotencyStore, Idempotent, accepted_time, derived_id
    from .pager import query_items
    from .signed_context import IdentitySigner, IdentityVerifier, generate_key_pair

_EXPORTS = {
    "app_service": "app",
    "module_app": "app",
    "client": "aws",
    "client_config": "aws",
    "resource": "aws",
    "LAMBDA_TEXT_MIME_TYPES": "http",
    "DispatchIdentity": "http",
    "DriverIdentity": "http",
    "HeaderLimits": "http",
    "Identity": "http",
    "RequestGuard": "http",
    "install": "http",
    "json_error_responses": "http",
    "problem_response": "http",
    "require_role": "http",
    "IdempotencyStore": "idempotency",
    "Idempotent": "idempotency",
    "accepted_time": "idempotency",
    "derived_id": "idempotency",
    "IdentitySigner": "signed_context",
    "IdentityVerifier": "signed_context",
    "generate_key_pair": "signed_context",
    "query_items": "pager",
}

__all__ = [
    "LAMBDA_TEXT_MIME_TYPES",
    "DispatchIdentity",
    "DriverIdentity",
    "HeaderLimits",
    "IdempotencyStore",
    "Idempotent",
    "Identity",
    "IdentitySigner",
    "IdentityVerifier",
    "RequestGuard",
    "accepted_time",
    "app_service",
    "client",
    "client_config",
    "derived_id",
    "generate_key_pair",
    "install",
    "json_error_responses",
    "module_app",
    "problem_response",
    "query_items",
    "require_role",
    "resource",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
