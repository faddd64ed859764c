"""Domain errors. Each knows its HTTP status; the apps map them to CONTRACT §3's JSON shape in one place."""

from __future__ import annotations

from typing import Any


class DispatchError(Exception):
    """Base of every error the domain raises on purpose."""

    http_status = 400
    default_message = "Bad request"

    def __init__(self, message: str | None = None, *, errors: Any = None, **extra: Any) -> None:
        self.message = message or self.default_message
        self.errors = errors
        self.extra = extra
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.http_status, "message": self.message}
        if self.errors is not None:
            body["errors"] = self.errors
        body.update(self.extra)
        return body


class ValidationError(DispatchError):
    """Input that parses but breaks a domain rule; ``errors`` maps fields to messages."""

    http_status = 422
    default_message = "Validation failed"


class AuthenticationError(DispatchError):
    http_status = 401
    default_message = "Missing or invalid credentials"


class PermissionDenied(DispatchError):
    http_status = 403
    default_message = "Not allowed"


class NotFound(DispatchError):
    """Unknown, or not visible to the caller (CONTRACT §3: both are 404)."""

    http_status = 404
    default_message = "Not found"


class Conflict(DispatchError):
    http_status = 409
    default_message = "Conflict"


class InvalidTransition(Conflict):
    """An action that the order's current status does not allow."""

    default_message = "Illegal state transition"

    def __init__(self, action: str, status: str, message: str | None = None, **extra: Any) -> None:
        super().__init__(
            message or f"Cannot {action} an order that is {status}", status=status, action=action, **extra
        )


class PreconditionFailed(Conflict):
    """The transition is legal but its prerequisites are missing (named in ``missing``)."""

    default_message = "Prerequisites missing"


class IdempotencyConflict(Conflict):
    default_message = "Idempotency-Key was already used with a different request"


class ServiceUnavailable(DispatchError):
    http_status = 503
    default_message = "Service temporarily unavailable"
