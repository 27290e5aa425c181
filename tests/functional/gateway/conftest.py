"""The gateway's fixtures (settings, a dev issuer's tokens, respx upstreams), shared with
the unit tier's gateway tests."""

from tests.unit.gateway.conftest import (  # noqa: F401 - fixtures, registered by import
    bearer,
    gateway,
    jwks_file,
    settings,
    tokens,
    upstream,
)
