"""Domain errors that carry their HTTP status and public error code.

Services raise these; the api's single exception handler turns them into the documented
envelope ``{"error": {code, message, details, request_id, timestamp}}``. Other components
(SFU control API, model servers) reuse the same types so every Konfer surface speaks one
error language.
"""

from __future__ import annotations

from typing import Any, ClassVar


class KonferError(Exception):
    """Base of every error that reaches a user; subclasses fix status and code."""

    status_code: int = 500
    code: str = "INTERNAL_SERVER_ERROR"
    default_message: ClassVar[str] = "An unexpected error occurred. Please try again later."

    def __init__(
        self,
        message: str | None = None,
        *,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.details = details
        self.headers = headers or {}
        super().__init__(self.message)


class ValidationFailed(KonferError):
    status_code = 400
    code = "VALIDATION_ERROR"
    default_message = "Invalid request parameters"


class MissingToken(KonferError):
    status_code = 401
    code = "MISSING_TOKEN"
    default_message = "Authorization token is required"

    def __init__(self, message: str | None = None, **kw: Any) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message, **kw)


class InvalidToken(KonferError):
    status_code = 401
    code = "INVALID_TOKEN"
    default_message = "Invalid or expired authentication token"

    def __init__(self, message: str | None = None, **kw: Any) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        super().__init__(message, **kw)


class InvalidCredentials(KonferError):
    status_code = 401
    code = "INVALID_CREDENTIALS"
    default_message = "Invalid username or password"


class AccountBanned(KonferError):
    status_code = 403
    code = "ACCOUNT_BANNED"
    default_message = "This account has been banned"


class InsufficientPermissions(KonferError):
    status_code = 403
    code = "INSUFFICIENT_PERMISSIONS"
    default_message = "You do not have permission to access this resource"


class NotFound(KonferError):
    status_code = 404
    code = "RESOURCE_NOT_FOUND"
    default_message = "Resource not found"


class MethodNotAllowed(KonferError):
    status_code = 405
    code = "METHOD_NOT_ALLOWED"
    default_message = "Method not allowed for this resource"


class Conflict(KonferError):
    status_code = 409
    code = "RESOURCE_CONFLICT"
    default_message = "Resource already exists"


class MeetingEnded(Conflict):
    """The meeting is over: nothing can join, change or be said in it any more."""

    code = "MEETING_ENDED"
    default_message = "This meeting has ended"


class RoomFull(Conflict):
    """409 rather than 403 or 503: the request is fine, the room's state refuses it now."""

    code = "ROOM_FULL"
    default_message = "The meeting has reached its maximum number of participants"


class PayloadTooLarge(KonferError):
    status_code = 413
    code = "PAYLOAD_TOO_LARGE"
    default_message = "Request body exceeds the size limit"


class UnsupportedMediaType(KonferError):
    status_code = 415
    code = "UNSUPPORTED_MEDIA_TYPE"
    default_message = "Unsupported content type"


class RateLimitExceeded(KonferError):
    status_code = 429
    code = "RATE_LIMIT_EXCEEDED"
    default_message = "Too many requests. Please try again later."

    def __init__(self, retry_after: int, message: str | None = None, **kw: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kw)


class ServiceUnavailable(KonferError):
    """A dependency is down; the request may succeed when retried."""

    status_code = 503
    code = "SERVICE_UNAVAILABLE"
    default_message = "Service is temporarily unavailable. Please try again later."


class RangeNotSatisfiable(KonferError):
    """A download's ``Range`` cannot be served; carries ``Content-Range: bytes */size``."""

    status_code = 416
    code = "RANGE_NOT_SATISFIABLE"
    default_message = "The requested byte range cannot be satisfied"
