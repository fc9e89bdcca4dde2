"""The one place where exceptions become the documented error envelope.

Domain errors carry status and code (``konfer.core.errors``); the framework's own 404/405
and request-validation errors are mapped here too, so a client never sees FastAPI's
default ``{"detail": …}`` shape or a 422.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from konfer.core.errors import (
    KonferError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RateLimitExceeded,
    ValidationFailed,
)
from konfer.core.timeutil import isoformat, utcnow

log = logging.getLogger(__name__)

_STATUS_CODES: dict[int, type[KonferError]] = {
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    400: ValidationFailed,
}


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def error_body(err: KonferError, request_id: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": err.code, "message": err.message}
    if err.details is not None:
        body["details"] = err.details
    if isinstance(err, RateLimitExceeded):
        body["retry_after"] = err.retry_after
    body["request_id"] = request_id
    body["timestamp"] = isoformat(utcnow())
    return {"error": body}


def error_response(err: KonferError, request_id: str | None) -> JSONResponse:
    headers = dict(err.headers)
    if isinstance(err, RateLimitExceeded):
        headers["Retry-After"] = str(err.retry_after)
    return JSONResponse(error_body(err, request_id), status_code=err.status_code, headers=headers)


def _field_name(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts) or "body"


def validation_details(errors: list[dict[str, Any]]) -> dict[str, str]:
    details: dict[str, str] = {}
    for e in errors:
        name = _field_name(tuple(e.get("loc", ())))
        msg = str(e.get("msg", "Invalid value"))
        if e.get("type") == "missing":
            msg = "Field required"
        elif e.get("type") == "json_invalid":
            name, msg = "body", "Malformed JSON"
        msg = msg.removeprefix("Value error, ")
        details.setdefault(name, msg)
    return details


async def _konfer_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, KonferError)
    if exc.status_code >= 500:
        log.error("request failed", extra={"code": exc.code, "error": exc.message})
    return error_response(exc, request_id_of(request))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    err = ValidationFailed(details=validation_details(list(exc.errors())))
    return error_response(err, request_id_of(request))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kind = _STATUS_CODES.get(exc.status_code)
    if kind is not None:
        message = kind.default_message
        if kind is NotFound:
            message = f"No route for {request.method} {request.url.path}"
        elif kind is PayloadTooLarge and isinstance(exc.detail, str):
            message = exc.detail
        err: KonferError = kind(message, headers=dict(exc.headers or {}))
    else:
        err = KonferError(str(exc.detail), headers=dict(exc.headers or {}))
        err.status_code = exc.status_code
        err.code = "BAD_REQUEST" if exc.status_code < 500 else err.code
    return error_response(err, request_id_of(request))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", extra={"request_id": request_id_of(request)})
    return error_response(KonferError(), request_id_of(request))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(KonferError, _konfer_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
