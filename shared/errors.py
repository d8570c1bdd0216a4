"""The one error tree. Adapters raise these; the coordinator's middleware maps them to HTTP."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class FieldError(BaseModel):
    """One problem with one field of an input, e.g. ``{"field": "rollout.canary", ...}``."""

    model_config = ConfigDict(frozen=True)

    field: str
    message: str


class ErrorInfo(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    """Every 4xx/5xx body: ``{"error": {"code", "message", "details"}}``."""

    error: ErrorInfo


class FleetwaveError(Exception):
    """Base of every expected failure; ``status`` is the HTTP status it maps to.

    A 503 also says when to try again: ``retry_after`` seconds (the ``Retry-After`` header).
    """

    status = 500
    code = "internal"
    retry_after = 1

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def body(self) -> ErrorBody:
        return ErrorBody(
            error=ErrorInfo(code=self.code, message=self.message, details=self.details)
        )


class BadRequest(FleetwaveError):
    status = 400
    code = "bad_request"


class ValidationFailed(BadRequest):
    """The input parsed but broke rules; ``details.errors`` lists every ``{field, message}``."""

    code = "validation_failed"

    def __init__(self, errors: list[FieldError], message: str | None = None) -> None:
        summary = message or "; ".join(f"{e.field}: {e.message}" for e in errors[:5])
        super().__init__(summary, {"errors": [e.model_dump() for e in errors]})
        self.errors = errors


class Unauthorized(FleetwaveError):
    status = 401
    code = "unauthorized"


class ClientCertificateRequired(Unauthorized):
    """mTLS: an agent endpoint was called over a connection without a verified client
    certificate. Not a token problem: an agent must keep its identity and only retry."""

    code = "client_certificate_required"


class NodeRevoked(Unauthorized):
    """A revoked node's token: refused for good (the agent must not register again)."""

    code = "node_revoked"


class NodeTokenExpired(Unauthorized):
    """A node token past its expiry: the agent registers again (its node key keeps its id)."""

    code = "node_token_expired"


class Forbidden(FleetwaveError):
    status = 403
    code = "forbidden"


class NotFound(FleetwaveError):
    status = 404
    code = "not_found"


class MethodNotAllowed(FleetwaveError):
    status = 405
    code = "method_not_allowed"


class RequestTimeout(FleetwaveError):
    """The request (its body) did not arrive in time."""

    status = 408
    code = "request_timeout"


class Conflict(FleetwaveError):
    status = 409
    code = "conflict"


class PreconditionFailed(FleetwaveError):
    status = 412
    code = "precondition_failed"


class PayloadTooLarge(FleetwaveError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(FleetwaveError):
    status = 415
    code = "unsupported_media_type"


class StoreError(FleetwaveError):
    """The store could not do what was asked (I/O, corruption); a bug or an outage, never input."""

    code = "store_error"


class Overloaded(FleetwaveError):
    """More agent requests than the coordinator works on at once (after its restart the whole
    fleet calls together): nothing was done; retry after ``Retry-After`` seconds, which the
    coordinator draws at random so the shed agents do not come back together."""

    status = 503
    code = "overloaded"


class StoreUnavailable(StoreError):
    """The store cannot write now (disk full, I/O error, read-only, locked past the busy
    timeout); the failed write changed nothing, and may succeed after ``retry_after`` seconds."""

    status = 503
    code = "store_unavailable"
    retry_after = 2


class OutcomeUnknown(StoreUnavailable):
    """The connection to the database broke while it committed: the write may or may not
    have been applied. Read the state before retrying a change (clients never resend it
    blindly: the code differs from ``store_unavailable``)."""

    code = "outcome_unknown"
