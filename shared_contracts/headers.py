"""Header names the gateway and the modules agree on."""

REQUEST_ID = "x-request-id"
IDENTITY = "x-relay-identity"
IDEMPOTENCY_KEY = "idempotency-key"
DEGRADED = "relay-degraded"

PROBLEM_MEDIA_TYPE = "application/problem+json"
