"""Small ASGI helpers for the hot path: headers, bodies with a limit, problem replies."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from ccc.common.errors import PROBLEM_CONTENT_TYPE, CCCError, PayloadTooLarge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it is known to exceed ``limit``."""
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the {limit}-byte limit")
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"request body exceeds the {limit}-byte limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands an already-read body to the next ASGI app, then passes
    through to the real one (so a streaming response still notices the disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str = "application/json",
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def respond_problem(
    send: Send, error: CCCError, path: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = list(extra or [])
    if error.retry_after is not None:
        headers.append((b"retry-after", str(max(1, round(error.retry_after + 0.499))).encode()))
    await respond(
        send, error.status, error.problem_bytes(instance=path), PROBLEM_CONTENT_TYPE, headers
    )


def problem_json(status: int, title: str, detail: str, instance: str | None = None) -> bytes:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    return json.dumps(body).encode()


def form_fields(raw: str) -> dict[str, Any]:
    """``a=1&b=2&b=3`` → ``{"a": "1", "b": ["2", "3"]}``: query strings and url-encoded forms."""
    out: dict[str, Any] = {}
    for name, value in parse_qsl(raw, keep_blank_values=True):
        if name in out:
            existing = out[name]
            out[name] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            out[name] = value
    return out
