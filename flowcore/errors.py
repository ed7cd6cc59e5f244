"""The one exception tree of the server side.

Every error a service raises on purpose derives from :class:`FlowError`. Third-party errors
(redis, aiodocker, httpx) are translated at the boundary with ``raise ... from exc`` so that
callers only ever handle these types. ``status_code`` is what the gateway answers with.
"""

from __future__ import annotations

from typing import Any


class FlowError(Exception):
    """Root of every error Agentainer Flow raises on purpose."""

    status_code: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, field: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.details is not None:
            body["details"] = self.details
        return body


class InvalidInput(FlowError):
    """A request or definition a user sent does not make sense (400/422)."""

    status_code = 422
    code = "invalid_input"


class MalformedBody(InvalidInput):
    """The body is not parseable JSON or YAML."""

    status_code = 400
    code = "malformed_body"


class BodyTooLarge(InvalidInput):
    status_code = 413
    code = "body_too_large"


class DocumentTooComplex(InvalidInput):
    """A JSON or YAML document within the size cap that nests too deep or expands to too many values."""

    status_code = 413
    code = "document_too_complex"


class Unauthorized(FlowError):
    status_code = 401
    code = "unauthorized"


class Forbidden(FlowError):
    status_code = 403
    code = "forbidden"


class NotFound(FlowError):
    status_code = 404
    code = "not_found"


class Conflict(FlowError):
    """The request clashes with the current status (starting twice, deleting a running workflow)."""

    status_code = 409
    code = "conflict"


class TooManyRequests(FlowError):
    """A client holds more than its share of a bounded resource (live streams); it may retry later."""

    status_code = 429
    code = "too_many_requests"


class ServiceUnavailable(FlowError):
    """A dependency (Redis, the pool service, the Docker engine) cannot be reached."""

    status_code = 503
    code = "service_unavailable"


class ConfigError(FlowError):
    """The process configuration is unsafe or inconsistent; the process refuses to start."""

    code = "config_error"


class RuntimeFailure(FlowError):
    """The container runtime failed to do what it was asked (not the step's own failure)."""

    status_code = 502
    code = "runtime_failure"


class ImageNotFound(RuntimeFailure):
    status_code = 422
    code = "image_not_found"


class PoolExhausted(RuntimeFailure):
    status_code = 503
    code = "pool_exhausted"
