"""Typed errors that cross the bus as ADR-32 error headers plus an RFC 9457 problem body.

A handler raises one of these; the runtime turns it into the reply headers
``Nats-Service-Error`` / ``Nats-Service-Error-Code`` (the HTTP status) and a
problem+json body. The bus client turns such a reply back into the same class,
so an error keeps its meaning across any number of hops, and the gateway answers
with the status code unchanged.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

ERROR_HEADER = "Nats-Service-Error"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"
PROBLEM_CONTENT_TYPE = "application/problem+json"


class CCCError(Exception):
    """Base of every error a handler may raise on purpose."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal Server Error"
    slug: ClassVar[str] = "internal"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        retry_after: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.retry_after = retry_after
        self.extra = extra or {}

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        """The RFC 9457 problem document for this error."""
        body: dict[str, Any] = {
            "type": f"urn:ccc:problem:{self.slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = self.errors
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        body.update(self.extra)
        return body

    def problem_bytes(self, instance: str | None = None) -> bytes:
        return json.dumps(self.problem(instance), default=str).encode()

    def headers(self) -> dict[str, str]:
        """ADR-32 error headers; the description is one line, as headers require."""
        description = " ".join(self.detail.split())[:512] or self.title
        return {
            ERROR_HEADER: description,
            ERROR_CODE_HEADER: str(self.status),
            "Content-Type": PROBLEM_CONTENT_TYPE,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.detail!r})"


class BadRequest(CCCError):
    status, title, slug = 400, "Bad Request", "bad-request"


class Unauthorized(CCCError):
    status, title, slug = 401, "Unauthorized", "unauthorized"


class Forbidden(CCCError):
    status, title, slug = 403, "Forbidden", "forbidden"


class NotFound(CCCError):
    status, title, slug = 404, "Not Found", "not-found"


class Conflict(CCCError):
    status, title, slug = 409, "Conflict", "conflict"


class PayloadTooLarge(CCCError):
    status, title, slug = 413, "Content Too Large", "payload-too-large"


class UnsupportedMediaType(CCCError):
    status, title, slug = 415, "Unsupported Media Type", "unsupported-media-type"


class Invalid(CCCError):
    status, title, slug = 422, "Unprocessable Content", "invalid"


class RateLimited(CCCError):
    status, title, slug = 429, "Too Many Requests", "rate-limited"


class Internal(CCCError):
    status, title, slug = 500, "Internal Server Error", "internal"


class Unavailable(CCCError):
    status, title, slug = 503, "Service Unavailable", "unavailable"


class Timeout(CCCError):
    status, title, slug = 504, "Gateway Timeout", "timeout"


_BY_STATUS: dict[int, type[CCCError]] = {
    cls.status: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        PayloadTooLarge,
        UnsupportedMediaType,
        Invalid,
        RateLimited,
        Internal,
        Unavailable,
        Timeout,
    )
}


def error_for_status(status: int, detail: str, problem: dict[str, Any] | None = None) -> CCCError:
    """Rebuild the typed error for a status code received from the bus or an HTTP peer."""
    cls = _BY_STATUS.get(status)
    problem = problem or {}
    known = {"type", "title", "status", "detail", "instance", "errors", "retry_after"}
    extra = {k: v for k, v in problem.items() if k not in known}
    if cls is None:
        err: CCCError = Internal(detail, extra=extra)
        err.status = status  # type: ignore[misc]  # keep an unusual code as sent
        return err
    return cls(
        problem.get("detail", detail),
        errors=problem.get("errors"),
        retry_after=problem.get("retry_after"),
        extra=extra,
    )


def error_from_reply(headers: dict[str, str] | None, data: bytes) -> CCCError | None:
    """The typed error carried by a reply, or None when the reply is a success."""
    if not headers or ERROR_CODE_HEADER not in headers:
        return None
    try:
        status = int(headers[ERROR_CODE_HEADER])
    except ValueError:
        status = 500
    problem: dict[str, Any] | None = None
    if data:
        try:
            parsed = json.loads(data)
            problem = parsed if isinstance(parsed, dict) else None
        except ValueError:
            problem = None
    return error_for_status(status, headers.get(ERROR_HEADER, ""), problem)
