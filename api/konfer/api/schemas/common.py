"""Shapes shared by every resource: pagination, plain messages."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """Request bodies refuse unknown fields, so a typo or a forbidden field is an error."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Pagination(BaseModel):
    page: int
    page_size: int
    total: int
    pages: int

    @classmethod
    def of(cls, page: int, page_size: int, total: int) -> Pagination:
        return cls(
            page=page,
            page_size=page_size,
            total=total,
            pages=math.ceil(total / page_size) if total else 0,
        )


class PageParams(BaseModel):
    page: int = Field(default=1, ge=1, le=1_000_000)
    page_size: int = Field(default=20, ge=1, le=100)

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size


class Message(BaseModel):
    message: str


class ErrorBody(BaseModel):
    code: str = Field(examples=["VALIDATION_ERROR"])
    message: str
    details: dict[str, str] | str | None = None
    request_id: str | None = None
    timestamp: str = Field(examples=["2025-10-05T12:00:00Z"])


class ErrorEnvelope(BaseModel):
    """The shape of every error response."""

    error: ErrorBody


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorEnvelope, "description": text}
    for status, text in (
        (400, "Invalid input (VALIDATION_ERROR, per-field details)"),
        (401, "MISSING_TOKEN or INVALID_TOKEN"),
        (403, "INSUFFICIENT_PERMISSIONS"),
        (404, "RESOURCE_NOT_FOUND"),
        (413, "PAYLOAD_TOO_LARGE"),
        (429, "RATE_LIMIT_EXCEEDED, with Retry-After"),
    )
}
