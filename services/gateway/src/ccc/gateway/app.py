"""The FastAPI application: built-in routes, and the edge in front of everything.

Domain routes are not FastAPI routes: the edge matches them against the live route
table and proxies the body untouched. FastAPI serves what belongs to the gateway
itself (health, keys, events, operations, the catalog and its OpenAPI document).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ccc.common import roles as role_rules
from ccc.common import subjects
from ccc.common.contracts.operations import Operation, OperationPage
from ccc.common.discovery import ServiceSummary
from ccc.common.errors import PROBLEM_CONTENT_TYPE, CCCError, Forbidden, Invalid, NotFound

from . import events, openapi
from .edge import Edge
from .gateway import Gateway
from .keys import ApiKey, KeyCreate, KeyCreated, KeyView
from .routes import operation_subject
from .settings import GatewaySettings


class Published(BaseModel):
    subject: str
    stream: str
    seq: int
    duplicate: bool


class CatalogView(BaseModel):
    services: list[ServiceSummary]


def require(*allowed: str) -> Callable[[Request], ApiKey]:
    def check(request: Request) -> ApiKey:
        key: ApiKey = request.state.principal
        if not role_rules.allowed(key.roles, allowed):
            raise Forbidden(f"this route needs one of the roles {sorted(allowed)}")
        return key

    return check


def caller_headers(key: ApiKey) -> dict[str, str]:
    return {subjects.CALLER_HEADER: key.id, subjects.ROLES_HEADER: ",".join(key.roles)}


def create_app(settings: GatewaySettings | None = None) -> Edge:
    settings = settings or GatewaySettings()
    gw = Gateway(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await gw.start()
        yield
        await gw.stop()

    app = FastAPI(
        title="Consciousness Control Center",
        version="0.1.0",
        description="The fleet's HTTP edge. Routes below the built-in ones are announced live "
        "by the services on the bus.",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.gateway = gw
    openapi_cache: dict[str, Any] = {}

    @app.exception_handler(CCCError)
    async def ccc_error(request: Request, exc: CCCError) -> Response:
        headers = {"retry-after": str(round(exc.retry_after + 0.5))} if exc.retry_after else None
        return Response(
            exc.problem_bytes(instance=request.url.path),
            status_code=exc.status,
            media_type=PROBLEM_CONTENT_TYPE,
            headers=headers,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404:
            detail = f"no route {request.method} {request.url.path}; see /openapi.json"
        body = {
            "type": "about:blank",
            "title": detail,
            "status": exc.status_code,
            "detail": detail,
            "instance": request.url.path,
        }
        return JSONResponse(
            body,
            exc.status_code,
            media_type=PROBLEM_CONTENT_TYPE,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        fields = [
            {
                "loc": ".".join(str(p) for p in e["loc"][1:] or e["loc"]),
                "msg": e["msg"],
                "type": e["type"],
            }
            for e in exc.errors()
        ]
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            from ccc.common.errors import BadRequest

            return await ccc_error(request, BadRequest("request body is not valid JSON"))
        where = ", ".join(f"{f['loc']}: {f['msg']}" for f in fields[:5])
        return await ccc_error(
            request, Invalid(f"request does not match the schema: {where}", errors=fields)
        )

    # -- health and docs ----------------------------------------------------------------

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        ready = gw.ready
        body = {
            "ready": ready,
            "nats": gw.nc.is_connected,
            "catalog": gw.catalog_loaded.is_set(),
            "services": len(gw.routes.services),
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_json() -> Response:
        if openapi_cache.get("version") != gw.routes.version:
            base = app.openapi()
            openapi_cache["doc"] = json.dumps(openapi.build(base, gw.routes)).encode()
            openapi_cache["version"] = gw.routes.version
        return Response(openapi_cache["doc"], media_type="application/json")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="CCC API")

    # -- catalog -------------------------------------------------------------------------

    @app.get("/v1/catalog", tags=["gateway"], dependencies=[Depends(require("reader"))])
    async def catalog() -> CatalogView:
        """The live catalog: services, versions, instances and endpoints from discovery."""
        return CatalogView(services=gw.routes.services)

    # -- keys ----------------------------------------------------------------------------

    @app.post(
        "/v1/keys", status_code=201, tags=["gateway"], dependencies=[Depends(require("admin"))]
    )
    async def create_key(spec: KeyCreate) -> KeyCreated:
        """Issue an API key; the secret is in this answer only."""
        return await gw.keys.create(spec)

    @app.get("/v1/keys", tags=["gateway"], dependencies=[Depends(require("admin"))])
    async def list_keys() -> list[KeyView]:
        return await gw.keys.list()

    @app.delete(
        "/v1/keys/{key_id}",
        status_code=204,
        tags=["gateway"],
        dependencies=[Depends(require("admin"))],
    )
    async def revoke_key(key_id: str) -> Response:
        if not re.fullmatch(r"[a-z0-9]{1,64}", key_id):
            raise NotFound(f"key {key_id!r} does not exist")
        if key_id == "admin":
            raise Forbidden(
                "the admin key is set by CCC_ADMIN_KEY or .ccc/admin.key, not revoked here"
            )
        if not await gw.keys.revoke(key_id):
            raise NotFound(f"key {key_id!r} does not exist")
        return Response(status_code=204)

    # -- operations ----------------------------------------------------------------------

    async def operation_call(op_id: str, action: str, key: ApiKey) -> bytes:
        subject = operation_subject(op_id, action)
        if subject is None:
            raise NotFound(f"operation {op_id!r} does not exist (ids look like <domain>-<hex>)")
        return await gw.bus.request_raw(
            subject, json.dumps({"id": op_id}).encode(), headers=caller_headers(key)
        )

    @app.get("/v1/operations/{op_id}", tags=["gateway"], response_model=Operation)
    async def get_operation(
        op_id: str, key: Annotated[ApiKey, Depends(require("reader"))]
    ) -> Response:
        """An operation's record: status, progress, result or error."""
        return Response(await operation_call(op_id, "get", key), media_type="application/json")

    @app.post("/v1/operations/{op_id}/cancel", tags=["gateway"], response_model=Operation)
    async def cancel_operation(
        op_id: str, key: Annotated[ApiKey, Depends(require("operator"))]
    ) -> Response:
        return Response(await operation_call(op_id, "cancel", key), media_type="application/json")

    @app.get("/v1/operations", tags=["gateway"], response_model=OperationPage)
    async def list_operations(
        key: Annotated[ApiKey, Depends(require("reader"))],
        domain: Annotated[str, Query(pattern=r"^[a-z][a-z0-9_]*$")],
        status: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> Response:
        """A service's operations, newest first."""
        try:
            subjects.check_domain(domain)
        except ValueError as exc:
            raise NotFound(f"no service {domain!r}") from exc
        body: dict[str, Any] = {"limit": limit}
        if status:
            body["status"] = status
        data = await gw.bus.request_raw(
            subjects.request_subject(domain, "operation.list"),
            json.dumps(body).encode(),
            headers=caller_headers(key),
        )
        return Response(data, media_type="application/json")

    # -- events --------------------------------------------------------------------------

    @app.post("/v1/events/{subject}", status_code=202, tags=["gateway"])
    async def publish_event(
        subject: str,
        request: Request,
        key: Annotated[ApiKey, Depends(require("operator"))],
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
        ccc_correlation_id: Annotated[str | None, Header(max_length=200)] = None,
    ) -> Published:
        """Publish an event (``ccc.evt.…``) or a durable command (``ccc.cmd.…``).

        ``Idempotency-Key`` becomes ``Nats-Msg-Id``: the same key twice has one effect."""
        events.check_publish_subject(subject, {s.name for s in gw.routes.services})
        body = await request.body()
        events.check_json(body)
        headers = caller_headers(key)
        if ccc_correlation_id:
            headers[subjects.CORRELATION_HEADER] = ccc_correlation_id
        if idempotency_key:
            headers[subjects.MSG_ID_HEADER] = idempotency_key
        ack = await gw.bus.js.publish(subject, body or b"null", headers=headers)
        return Published(
            subject=subject, stream=ack.stream, seq=ack.seq, duplicate=bool(ack.duplicate)
        )

    @app.get("/v1/events", tags=["gateway"], dependencies=[Depends(require("reader"))])
    async def tail_events(
        subject: str = "ccc.evt.>",
        since: str | None = None,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> StreamingResponse:
        """Server-Sent Events from the events stream: from now, a sequence, or a time."""
        events.check_tail_subject(subject)
        start = events.consumer_start(since, last_event_id)
        subscription = await events.subscribe(gw.bus.js, subject, start)
        return StreamingResponse(
            events.sse_stream(subscription, subject),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    return Edge(gw, app)
