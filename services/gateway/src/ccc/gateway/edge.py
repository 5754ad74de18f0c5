"""The edge: every HTTP request passes here before anything else.

Order of checks: public path? → API key (401) → rate limit (429) → body size (413) →
route from discovery (proxied to the bus without parsing the body) or a built-in
FastAPI route. Each call is audited as ``ccc.evt.gateway.audit`` after the answer
is sent, off the caller's latency.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from ccc.common import roles as role_rules
from ccc.common import streaming, subjects, tracing
from ccc.common.errors import (
    ERROR_CODE_HEADER,
    PROBLEM_CONTENT_TYPE,
    CCCError,
    Forbidden,
    Internal,
    NotFound,
    RateLimited,
    Timeout,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from ccc.common.metrics import FastCounter, FastHistogram

from .http import (
    Message,
    Receive,
    Scope,
    Send,
    form_fields,
    header,
    read_body,
    replay,
    respond,
    respond_problem,
)
from .keys import ApiKey
from .routes import Route
from .uploads import multipart_to_json, urlencoded_to_json

if TYPE_CHECKING:
    from .gateway import Gateway

log = logging.getLogger(__name__)

# curl -d sends form-urlencoded and some clients text/plain for a JSON body; take those as
# JSON too (the service validates it). multipart/form-data is converted (uploads.py);
# anything else (xml, octet-stream, ...) is refused with 415.
JSON_LIKE = ("application/x-www-form-urlencoded", "text/plain")
PUBLIC_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/docs/oauth2-redirect"}
)
HTTP_REQUESTS = FastCounter("ccc_gateway_requests", "HTTP requests", ["route", "status"])
HTTP_LATENCY = FastHistogram(
    "ccc_gateway_request_seconds", "HTTP request latency at the edge", ["route"]
)


class Edge:
    def __init__(self, gateway: Gateway, app: Any) -> None:
        self.gw = gateway
        self.app = app
        self._counters: dict[tuple[str, int], Any] = {}
        self._histograms: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def tracked_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        method, path = scope["method"], scope["path"]
        key: ApiKey | None = None
        label = "unmatched"
        with tracing.server_span(f"{method} {path}", _trace_headers(scope)) as span:
            trace_id = tracing.current_trace_id() or ""
            trace_header = [(b"x-trace-id", trace_id.encode())]
            try:
                key = self._authenticate(scope)
                wait = self.gw.limiter.take(key.id, key.rate_limit_rps)
                if wait > 0:
                    raise RateLimited(
                        f"key {key.id} is over its rate limit; retry in {wait:.2f}s",
                        retry_after=wait,
                    )
                scope.setdefault("state", {})["principal"] = key
                matched = self.gw.routes.match(method, path)
                if matched is not None:
                    route, params = matched
                    label = f"{route.method} {route.path}"
                    span.update_name(label)
                    await self._proxy(
                        scope, receive, tracked_send, route, params, key, trace_header
                    )
                else:
                    gone = self.gw.routes.match_gone(method, path)
                    if gone is not None:
                        label = f"{gone.method} {gone.path}"
                        raise Unavailable(f"service {gone.domain!r} has no live instance")
                    label = "builtin"
                    if method in ("GET", "HEAD", "DELETE"):
                        await self.app(scope, receive, tracked_send)
                    else:
                        body = await read_body(scope, receive, self.gw.settings.max_body_bytes)
                        await self.app(scope, replay(body, receive), tracked_send)
            except CCCError as exc:
                span.set_status(Status(StatusCode.ERROR, exc.detail))
                await respond_problem(tracked_send, exc, path, trace_header)
            except Exception as exc:  # a defect: still a problem+json answer, and audited
                log.exception("unhandled error on %s %s", method, path)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                if status == 0:  # nothing sent yet
                    error = Internal(f"the gateway failed on this request (trace {trace_id})")
                    await respond_problem(tracked_send, error, path, trace_header)
            span.set_attribute("http.status_code", status)
        elapsed = time.perf_counter() - started
        self._observe(label, status, elapsed)
        await self.gw.audit(
            {
                "key_id": key.id if key else None,
                "method": method,
                "route": label,
                "path": path,
                "status": status,
                "latency_ms": round(elapsed * 1000, 3),
                "trace_id": trace_id,
                "ts": time.time(),
            }
        )

    def _observe(self, label: str, status: int, elapsed: float) -> None:
        """Metrics with children cached per label: ``.labels()`` per request is slow."""
        counter = self._counters.get((label, status))
        if counter is None:
            counter = self._counters[(label, status)] = HTTP_REQUESTS.labels(label, str(status))
        counter.inc()
        histogram = self._histograms.get(label)
        if histogram is None:
            histogram = self._histograms[label] = HTTP_LATENCY.labels(label)
        histogram.observe(elapsed)

    def _authenticate(self, scope: Scope) -> ApiKey:
        token = header(scope, b"x-api-key")
        if token is None:
            auth = header(scope, b"authorization")
            if auth is not None and auth[:7].lower() == "bearer ":
                token = auth[7:].strip()
        if not token:
            raise Unauthorized(
                "an API key is required: 'Authorization: Bearer <key>' or 'X-API-Key'"
            )
        key = self.gw.keys.verify(token)
        if key is None:
            raise Unauthorized("the API key is not valid (unknown or revoked)")
        return key

    async def _proxy(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        route: Route,
        params: dict[str, str],
        key: ApiKey,
        trace_header: list[tuple[bytes, bytes]],
    ) -> None:
        if not role_rules.allowed(key.roles, route.roles):
            raise Forbidden(
                f"{route.method} {route.path} needs one of the roles {sorted(route.roles)}; "
                f"key {key.id} has {sorted(key.roles)}"
            )
        body = b""
        if scope["method"] not in ("GET", "HEAD", "DELETE"):
            body = await read_body(scope, receive, self.gw.settings.max_body_bytes)
            if body:
                content_type = (header(scope, b"content-type") or "application/json").lower()
                if content_type.startswith("multipart/form-data"):
                    body = await multipart_to_json(
                        scope, receive, body, self.gw.settings.max_body_bytes
                    )
                elif content_type.startswith("application/x-www-form-urlencoded"):
                    body = urlencoded_to_json(body)
                elif not content_type.startswith(JSON_LIKE) and "json" not in content_type:
                    raise UnsupportedMediaType(
                        f"content type {content_type!r} is not supported; send application/json"
                    )
        headers = {
            subjects.CALLER_HEADER: key.id,
            subjects.ROLES_HEADER: ",".join(key.roles),
        }
        merged = _query_params(scope)
        merged.update(params)
        if merged:
            headers[subjects.PARAMS_HEADER] = json.dumps(merged)
        tracing.inject(headers)
        if route.streams and _wants_stream(body):
            await self._relay_stream(send, route, body, headers, trace_header)
            return
        msg = await self._request(route, body, headers)
        reply_headers = msg.headers or {}
        code = reply_headers.get(ERROR_CODE_HEADER)
        extra = list(trace_header)
        if code is not None:
            status, content_type = int(code), PROBLEM_CONTENT_TYPE
            trace.get_current_span().set_status(Status(StatusCode.ERROR))
            if status in (429, 503):
                extra.extend(_retry_after(msg.data))
        else:
            status = int(reply_headers.get(subjects.STATUS_HEADER, 200))
            content_type = reply_headers.get("Content-Type", "application/json")
        if status == 202:
            extra.append((b"location", f"/v1/operations/{_operation_id(msg.data)}".encode()))
        await respond(send, status, msg.data, content_type, extra)

    async def _relay_stream(
        self,
        send: Send,
        route: Route,
        body: bytes,
        headers: dict[str, str],
        trace_header: list[tuple[bytes, bytes]],
    ) -> None:
        """Bus stream frames → Server-Sent Events (``data: <frame>``, then ``[DONE]``).

        Until the first frame nothing is sent, so a stream that cannot start is an
        ordinary problem+json answer. A stream that breaks later ends with an explicit
        ``data: {"error": ...}`` event, never a silently truncated 200."""
        frames = streaming.open_stream(
            self.gw.bus,
            route.subject,
            body,
            headers=headers,
            idle_timeout=route.timeout,
            timeout=max(route.timeout, 600.0),
        )
        try:
            first: bytes | None = await anext(frames)
        except StopAsyncIteration:
            first = None
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                    *trace_header,
                ],
            }
        )
        try:
            if first is not None:
                await send(_sse(first))
                async for frame in frames:
                    await send(_sse(frame))
            await send(_sse(b"[DONE]", more=False))
        except CCCError as exc:
            problem = exc.problem()
            event = {
                "error": {"message": exc.detail, "type": exc.slug, "code": exc.status, **problem}
            }
            await send(_sse(json.dumps(event).encode(), more=False))
        finally:
            await frames.aclose()

    async def _request(self, route: Route, body: bytes, headers: dict[str, str]) -> Any:
        """One retry on no-responders, so a draining instance's sibling takes over."""
        for attempt in (1, 2):
            try:
                return await self.gw.nc.request(
                    route.subject, body, timeout=route.timeout, headers=headers
                )
            except NoRespondersError:
                if attempt == 2:
                    raise Unavailable(f"service {route.domain!r} has no live instance") from None
                await asyncio.sleep(self.gw.settings.no_responders_retry_delay)
            except NatsTimeout:
                raise Timeout(
                    f"{route.domain}.{route.op} did not answer within {route.timeout}s"
                ) from None
        raise NotFound("unreachable")  # pragma: no cover


def _retry_after(problem: bytes) -> list[tuple[bytes, bytes]]:
    """``Retry-After`` from a problem's ``retry_after``, so HTTP clients back off right."""
    try:
        seconds = json.loads(problem).get("retry_after")
    except (ValueError, AttributeError):
        return []
    if not isinstance(seconds, int | float) or seconds < 0:
        return []
    return [(b"retry-after", str(max(1, round(seconds + 0.499))).encode())]


def _wants_stream(body: bytes) -> bool:
    """Only stream-capable routes get here, so only their bodies are ever parsed."""
    try:
        parsed = json.loads(body or b"{}")
    except ValueError:
        return False  # the service answers the 400
    return isinstance(parsed, dict) and parsed.get("stream") is True


def _sse(data: bytes, more: bool = True) -> dict[str, Any]:
    return {"type": "http.response.body", "body": b"data: " + data + b"\n\n", "more_body": more}


def _trace_headers(scope: Scope) -> dict[str, str] | None:
    for key, value in scope["headers"]:
        if key == b"traceparent":
            return {"traceparent": value.decode("latin-1")}
    return None


def _query_params(scope: Scope) -> dict[str, Any]:
    raw = scope.get("query_string", b"")
    return form_fields(raw.decode("latin-1")) if raw else {}


def _operation_id(data: bytes) -> str:
    try:
        return str(json.loads(data).get("id", ""))
    except (ValueError, AttributeError):
        return ""
