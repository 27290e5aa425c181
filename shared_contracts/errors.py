"""The one error envelope: RFC 9457 problem details, everywhere.

Modules and the gateway raise :class:`ProblemError` (or a subclass); the FastAPI glue in
:mod:`module_kit.http` turns it into an ``application/problem+json`` response.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

PROBLEM_TYPE_PREFIX = "urn:relay:problem:"


class FieldError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    location: str = Field(description="Where the bad value is, e.g. body.stops.0.lat")
    message: str


class Problem(BaseModel):
    """``application/problem+json`` body. ``type`` is a stable, machine-readable code."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(examples=["urn:relay:problem:not-found"])
    title: str
    status: int = Field(ge=400, le=599)
    detail: str | None = None
    request_id: str | None = None
    errors: list[FieldError] | None = None


class ProblemError(Exception):
    """An error that is answered to the caller as a :class:`Problem`."""

    status = 500
    code = "internal"
    title = "Internal error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        status: int | None = None,
        code: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        errors: list[FieldError] | None = None,
    ) -> None:
        super().__init__(detail or title or self.title)
        self.detail = detail
        self.status = status or self.status
        self.code = code or self.code
        self.title = title or self.title
        self.headers = headers or {}
        self.errors = errors

    def to_problem(self, request_id: str | None = None) -> Problem:
        return Problem(
            type=PROBLEM_TYPE_PREFIX + self.code,
            title=self.title,
            status=self.status,
            detail=self.detail,
            request_id=request_id,
            errors=self.errors,
        )


class BadRequestError(ProblemError):
    status, code, title = 400, "bad-request", "Bad request"


class UnauthorizedError(ProblemError):
    status, code, title = 401, "unauthorized", "Authentication required"

    def __init__(self, detail: str | None = None, **kw: Any) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": 'Bearer realm="relay"'})
        super().__init__(detail, **kw)


class ForbiddenError(ProblemError):
    status, code, title = 403, "forbidden", "Not allowed"


class NotFoundError(ProblemError):
    status, code, title = 404, "not-found", "Not found"


class RequestTimeoutError(ProblemError):
    """The client did not send its request (headers or body) in time; the connection closes."""

    status, code, title = 408, "request-timeout", "Request timeout"


class ConflictError(ProblemError):
    status, code, title = 409, "conflict", "Conflict"


class PayloadTooLargeError(ProblemError):
    status, code, title = 413, "payload-too-large", "Payload too large"


class UnsupportedMediaTypeError(ProblemError):
    status, code, title = 415, "unsupported-media-type", "Unsupported media type"


class RequestHeaderFieldsTooLargeError(ProblemError):
    """Too many request headers, one too large, or all of them together (RFC 6585)."""

    status, code, title = 431, "request-header-fields-too-large", "Request header fields too large"


class ValidationFailedError(ProblemError):
    status, code, title = 422, "validation", "Request is not valid"


class UnavailableError(ProblemError):
    status, code, title = 503, "unavailable", "Temporarily unavailable"

    def __init__(self, detail: str | None = None, *, retry_after: int = 5, **kw: Any) -> None:
        kw.setdefault("headers", {"Retry-After": str(retry_after)})
        super().__init__(detail, **kw)


class OverloadedError(UnavailableError):
    """The gateway process is near its capacity and sheds this request's tier (load
    shedding, before anything else runs): retry after ``Retry-After`` seconds."""

    code, title = "overloaded", "Overloaded"

    def __init__(self, detail: str | None = None, *, retry_after: int = 1, **kw: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **kw)


class InvalidAppVersionError(BadRequestError):
    """``Relay-App-Version`` (or the ``RelayApp/`` version in User-Agent) is malformed."""

    code, title = "invalid-app-version", "Invalid app version"


class UpgradeRequiredError(ProblemError):
    """The app is older than the oldest one the operation serves: the detail names that
    minimum (also in ``Relay-App-Min-Version``) and says to update the app from its store."""

    status, code, title = 426, "upgrade-required", "App update required"


class UpstreamTimeoutError(ProblemError):
    status, code, title = 504, "upstream-timeout", "Upstream did not answer in time"


# Idempotent writes (``Idempotency-Key``; the runtime is :mod:`module_kit.idempotency`).


class InvalidIdempotencyKeyError(BadRequestError):
    code, title = "invalid-idempotency-key", "Invalid idempotency key"


class IdempotencyKeyReusedError(ProblemError):
    status, code, title = 422, "idempotency-key-reused", "Idempotency key reused"


class IdempotencyInProgressError(ConflictError):
    code, title = "idempotency-in-progress", "Request already in progress"

    def __init__(self, detail: str | None = None, **kw: Any) -> None:
        kw.setdefault("headers", {"Retry-After": "1"})
        super().__init__(detail, **kw)
