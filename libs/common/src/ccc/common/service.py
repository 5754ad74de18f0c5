"""The service runtime: endpoints on NATS micro, run concurrently with a bound.

One handler, three doors: request-reply on ``ccc.<domain>.<op>`` (NATS micro, queue
group ``q`` shared by all instances), durable commands on ``ccc.cmd.<domain>.<op>``,
and HTTP through the gateway, which builds its route from the metadata announced here.

nats-py runs one callback at a time per subscription, so the micro handler only takes a
slot from a semaphore and spawns a task: an endpoint serves up to ``max_concurrency``
requests at once, and when all slots are busy the subscription waits, which is the
back-pressure we want.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from importlib import metadata as importlib_metadata
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import MaxPayloadError
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointConfig, ServiceConfig
from nats.micro.service import Service as MicroService
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import roles as role_rules
from . import subjects, tracing
from .binary import Binary
from .bus import Bus, connect, ensure_streams
from .context import Caller, Context, ProgressSink
from .contracts.operations import Operation, OperationGet, OperationList, OperationPage
from .endpoint import EndpointSpec, Handler, build_spec
from .errors import CCCError, Forbidden, Internal, NotFound, Timeout, Unavailable
from .logs import setup_logging
from .metrics import COMMANDS, IN_FLIGHT, EndpointMetrics, serve_metrics
from .operations import Operations
from .settings import Settings
from .slots import Slots
from .state import Blobs, StateStore
from .workers import Workers

log = logging.getLogger(__name__)
Hook = Callable[["Service"], Awaitable[None]]


def _package_version(domain: str) -> str:
    try:
        return importlib_metadata.version(f"ccc-{domain.replace('_', '-')}")
    except importlib_metadata.PackageNotFoundError:
        return "0.0.0"


class Service:
    """A domain service: declare endpoints with ``@service.endpoint``, then ``run()``."""

    def __init__(
        self,
        name: str,
        *,
        description: str = "",
        version: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.name = subjects.check_domain(name)
        self.description = description
        self.version = version or _package_version(name)
        self.settings = settings or Settings()
        self.instance = f"{socket.gethostname()}-{os.getpid()}-{id(self) % 10000}"
        self.specs: dict[str, EndpointSpec] = {}
        self._startup: list[Hook] = []
        self._shutdown: list[Hook] = []
        self._workers: Workers[tuple[EndpointSpec, Msg]]
        self._micro: MicroService | None = None
        self._micro_endpoints: dict[str, Any] = {}
        self._blobs: Blobs | None = None
        self._stopped = asyncio.Event()
        self._owns_connection = False
        self.nc: NATS
        self.bus: Bus
        self.state: StateStore
        self.operations: Operations
        self._register_builtin_endpoints()

    # -- declaring ---------------------------------------------------------------

    def endpoint(
        self,
        op: str,
        *,
        http: str | None = None,
        roles: Iterable[str] = ("operator",),
        timeout: float | None = None,
        operation: bool = False,
        resumable: bool = False,
        streams: bool = False,
        precheck: Handler | None = None,
    ) -> Callable[[Handler], Handler]:
        """Expose ``handler(request, ctx) -> response`` as ``<name>.<op>``.

        ``http`` is ``"METHOD /path/{param}"``; omitted, the route is
        ``POST /v1/orchestrate/<name>/<op/with/slashes>``; ``""`` means bus only.
        ``operation=True`` answers 202 with an operation record at once and runs the
        handler in the background (``ctx.progress`` reports progress).
        ``streams=True`` announces that a request with ``"stream": true`` answers with
        frames to the ``Ccc-Stream-Inbox`` it names; the gateway relays them as SSE.
        ``precheck(request, ctx)`` runs before an operation is accepted, so what can be
        refused at once (an unknown collection, an unsupported file) is a 4xx, not a
        failed operation later.
        """

        def register(handler: Handler) -> Handler:
            spec = build_spec(
                self.name,
                op,
                handler,
                http=http,
                roles=roles,
                timeout=timeout or self.settings.request_timeout,
                operation=operation,
                resumable=resumable,
                streams=streams,
                precheck=precheck,
            )
            if op in self.specs:
                raise ValueError(f"{self.name}.{op} is declared twice")
            self.specs[op] = spec
            return handler

        return register

    def on_startup(self, hook: Hook) -> Hook:
        self._startup.append(hook)
        return hook

    def on_shutdown(self, hook: Hook) -> Hook:
        self._shutdown.append(hook)
        return hook

    def _register_builtin_endpoints(self) -> None:
        """Every service answers for its own operations; the gateway routes
        ``/v1/operations/{id}`` here by the domain prefix of the id."""

        def visible(record: Operation, caller: Caller) -> bool:
            """A record holds its request and result: a reader sees only its own key's;
            operators, admins and trusted bus peers see all."""
            if caller.roles is None or role_rules.allowed(caller.roles, {"operator"}):
                return True
            return record.caller is not None and record.caller == caller.key_id

        async def operation_get(req: OperationGet, ctx: Context) -> Operation:
            """Read an operation record."""
            record = await self.operations.get(req.id)
            if not visible(record, ctx.caller):
                raise NotFound(f"operation {req.id!r} does not exist")
            return record

        async def operation_list(req: OperationList, ctx: Context) -> OperationPage:
            """List this service's operations, newest first."""
            records = await self.operations.list(req.status, 10_000)
            mine = [r for r in records if visible(r, ctx.caller)]
            return OperationPage(operations=mine[: req.limit])

        async def operation_cancel(req: OperationGet, ctx: Context) -> Operation:
            """Cancel a running operation."""
            if not visible(await self.operations.get(req.id), ctx.caller):
                raise NotFound(f"operation {req.id!r} does not exist")
            return await self.operations.cancel(req.id)

        self.endpoint("operation.get", http="", roles=("reader",))(operation_get)
        self.endpoint("operation.list", http="", roles=("reader",))(operation_list)
        self.endpoint("operation.cancel", http="", roles=("operator",))(operation_cancel)

    # -- lifecycle -----------------------------------------------------------------

    async def start(self, nc: NATS | None = None) -> None:
        """Connect, make streams and state, announce endpoints, consume commands."""
        tracing.setup_tracing(self.name, self.settings.otlp_endpoint)
        if nc is None:
            nc = await connect(self.settings.nats_url, f"ccc-{self.name}")
            self._owns_connection = True
        self.nc = nc
        self.bus = Bus(nc, self.settings.request_timeout)
        await ensure_streams(self.bus.js, self.settings.events_max_age_days)
        self.state = await StateStore.open(self.bus.js, subjects.state_bucket(self.name))
        self.operations = Operations(
            domain=self.name,
            instance=self.instance,
            state=self.state,
            bus=self.bus,
            lease=self.settings.operation_lease,
            make_context=self._operation_context,
        )
        self._slots = Slots(self.settings.max_concurrency)
        self._workers = Workers(
            self.settings.max_concurrency, self._serve_job, self._slots, abandon=self._abandon
        )
        self._workers.start()
        for hook in self._startup:
            await hook(self)

        self._micro = await add_service(
            nc,
            ServiceConfig(
                name=self.name,
                version=self.version,
                description=self.description,
                metadata={"instance": self.instance},
            ),
        )
        for spec in self.specs.values():
            await self._micro.add_endpoint(
                EndpointConfig(
                    name=spec.name,
                    subject=spec.subject,
                    handler=self._dispatcher(spec),
                    metadata=spec.metadata(),
                )
            )
        self._micro_endpoints = {ep._name: ep for ep in self._micro._endpoints}
        for spec in self.specs.values():
            self._skip_micro_wrapper(spec, self._micro_endpoints[spec.name])
        self._metrics = {op: EndpointMetrics(self.name, op) for op in self.specs}
        IN_FLIGHT.labels(self.name).set_function(lambda: self._slots.busy)

        from .commands import CommandConsumer

        self.commands = CommandConsumer(
            js=self.bus.js,
            domain=self.name,
            ack_wait=self.settings.command_ack_wait,
            max_deliver=self.settings.command_max_deliver,
            slots=self._slots,
            handle=self._handle_command,
        )
        await self.commands.start()
        await self.operations.start_sweeper(self.specs)
        serve_metrics(self.settings.metrics_port)
        await self.bus.publish(
            subjects.event_subject(self.name, "service.started"),
            {"service": self.name, "version": self.version, "instance": self.instance},
        )
        log.info("service %s %s started (%s)", self.name, self.version, self.instance)

    async def stop(self) -> None:
        """Graceful drain: stop taking work, finish what is in flight, then leave."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        timeout = self.settings.drain_timeout
        for ep in self._micro_endpoints.values():
            if ep._subscription is not None:
                with contextlib.suppress(Exception):
                    await ep._subscription.drain()
        await self.commands.stop(timeout)
        await self._workers.drain(timeout)
        await self._workers.stop()
        await self.operations.stop(timeout)
        for hook in self._shutdown:
            try:
                await hook(self)
            except Exception:
                log.exception("shutdown hook failed")
        if self._micro is not None:  # leave discovery before saying so
            for sub in self._micro._subscriptions.values():
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await self.bus.publish(
                subjects.event_subject(self.name, "service.stopped"),
                {"service": self.name, "instance": self.instance},
            )
        if self._owns_connection:
            with contextlib.suppress(Exception):
                await self.nc.drain()
        log.info("service %s stopped", self.name)

    def run(self) -> None:
        """Run until SIGTERM or SIGINT, then drain. The process entry point."""
        setup_logging(self.name, self.settings.log_level, self.settings.log_json)
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
            asyncio.run(self._main())
        else:
            uvloop.run(self._main())

    async def _main(self) -> None:
        await self.start()
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
        await done.wait()
        log.info("signal received: draining %s", self.name)
        for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal: leave at once
            loop.add_signal_handler(sig, lambda: os._exit(1))
        try:
            # Bounded: with the bus gone for good, a drain would wait for ever.
            await asyncio.wait_for(self.stop(), self.settings.drain_timeout + 5)
        except TimeoutError:
            log.error("drain of %s did not finish in time; exiting anyway", self.name)

    # -- serving requests ------------------------------------------------------------

    def _dispatcher(self, spec: EndpointSpec) -> Callable[[Request], Awaitable[None]]:
        async def dispatch(request: Request) -> None:
            await self._workers.submit((spec, request._msg), spec.timeout)

        return dispatch

    def _skip_micro_wrapper(self, spec: EndpointSpec, endpoint: Any) -> None:
        """Hand messages straight to the workers. micro wraps each one in a ``Request``
        and times the call, which here only measures the hand-over; the runtime keeps
        the endpoint's request count, errors and processing time itself (``_serve``).
        These are nats-py internals, hence the ``nats-py==2.16.*`` pin; should they
        change, the endpoint keeps working through micro's own wrapper."""
        subscription = getattr(endpoint, "_subscription", None)
        if subscription is None or not hasattr(endpoint, "_num_requests"):
            return
        offer = self._workers.offer

        def dispatch(msg: Msg) -> asyncio.Future[None]:  # awaited by the subscription
            endpoint._num_requests += 1
            return offer((spec, msg), spec.timeout)

        subscription._cb = dispatch

    async def _abandon(self, job: tuple[EndpointSpec, Msg]) -> None:
        """A request still queued when the drain ran out of time: say so, at once."""
        spec, msg = job
        if msg.reply:
            error = Unavailable(
                f"{self.name} is stopping; {spec.op} was not started: send it again",
                retry_after=1.0,  # safe to repeat: nothing ran; another instance will take it
            )
            with contextlib.suppress(Exception):
                await self.nc.publish(msg.reply, error.problem_bytes(), headers=error.headers())

    def _serve_job(self, job: tuple[EndpointSpec, Msg]) -> Coroutine[Any, Any, None]:
        return self._serve(*job)

    async def _serve(self, spec: EndpointSpec, msg: Msg) -> None:
        started = time.perf_counter()
        headers = msg.headers
        status = 200
        metrics = self._metrics[spec.op]
        with tracing.server_span(spec.subject, headers) as span:
            try:
                body, status, content_type = await self._execute(spec, msg.data, headers, span)
                reply_headers = {subjects.STATUS_HEADER: str(status)} if status != 200 else None
                if content_type is not None:
                    reply_headers = {**(reply_headers or {}), "Content-Type": content_type}
            except CCCError as exc:
                status = exc.status
                body, reply_headers = exc.problem_bytes(), exc.headers()
                span.set_status(Status(StatusCode.ERROR, exc.detail))
            if msg.reply:
                try:  # inline, not through _reply: a coroutine less on the hot path
                    await self.nc.publish(msg.reply, body, headers=reply_headers)
                except Exception as exc:
                    status = await self._reply_failed(msg.reply, body, spec, exc)
        elapsed = time.perf_counter() - started
        metrics.count(status)
        metrics.latency.observe(elapsed)
        ep = self._micro_endpoints.get(spec.name)
        if ep is not None:  # NATS micro counts requests; we add time and errors it cannot see
            ep._processing_time += int(elapsed * 1e9)
            ep._average_processing_time = int(ep._processing_time / max(1, ep._num_requests))
            if status >= 400:
                ep._num_errors += 1
                ep._last_error = f"{status}"

    async def _reply_failed(
        self, reply: str, body: bytes, spec: EndpointSpec, exc: Exception
    ) -> int:
        """An answer that could not travel becomes a problem that can, so the caller
        never waits for a reply that was silently dropped."""
        if isinstance(exc, MaxPayloadError):
            error: CCCError = Internal(
                f"the answer of {self.name}.{spec.op} ({len(body)} bytes) exceeds the bus's "
                f"payload limit ({self.nc.max_payload} bytes); large results belong in the "
                "object store"
            )
        else:
            log.error("%s.%s: reply failed", self.name, spec.op, exc_info=exc)
            error = Internal(f"the answer of {self.name}.{spec.op} could not be sent: {exc}")
        with contextlib.suppress(Exception):
            await self.nc.publish(reply, error.problem_bytes(), headers=error.headers())
        return error.status

    async def _execute(
        self,
        spec: EndpointSpec,
        data: bytes,
        headers: dict[str, str] | None,
        span: trace.Span,
        *,
        correlation_id: str | None = None,
    ) -> tuple[bytes, int, str | None]:
        """Decode, authorise, run; every failure leaves as a typed error. Returns the
        body, the status and, for a ``Binary`` answer, its media type."""
        caller = Caller.from_headers(headers)
        if not caller.may(spec.roles):
            raise Forbidden(f"{self.name}.{spec.op} needs one of the roles {sorted(spec.roles)}")
        request = spec.parse(data, headers)
        try:
            if spec.precheck is not None:
                await spec.precheck(request, self._context(headers, caller))
            if spec.operation:
                record = await self.operations.start(
                    spec,
                    request,
                    dict(headers or {}),
                    idempotency_key=(headers or {}).get(subjects.MSG_ID_HEADER),
                    correlation_id=correlation_id,
                )
                return record.model_dump_json().encode(), 202, None
            ctx = self._context(headers, caller)
            result = await spec.handler(request, ctx)
            if isinstance(result, Binary):
                return result.data, 200, result.content_type
            return spec.dump(result), 200, None
        except CCCError:
            raise
        except asyncio.CancelledError:
            if self._workers.stopping:
                raise Unavailable(f"{self.name} stopped before {spec.op} finished") from None
            if self._workers.expired():
                raise Timeout(f"{self.name}.{spec.op} took longer than {spec.timeout}s") from None
            raise
        except Exception as exc:
            log.exception("%s.%s failed", self.name, spec.op)
            span.record_exception(exc)
            trace_id = tracing.current_trace_id()
            raise Internal(f"{self.name}.{spec.op} failed unexpectedly (trace {trace_id})") from exc

    def _context(
        self,
        headers: dict[str, str] | None,
        caller: Caller | None = None,
        progress: ProgressSink | None = None,
        operation_id: str | None = None,
    ) -> Context:
        return Context(
            domain=self.name,
            bus=self.bus,
            state=self.state,
            blobs=self.blobs,
            headers=headers,
            caller=caller,
            progress=progress,
            operation_id=operation_id,
        )

    def _operation_context(
        self, headers: dict[str, str], progress: ProgressSink, op_id: str
    ) -> Context:
        return self._context(headers, progress=progress, operation_id=op_id)

    async def blobs(self) -> Blobs:
        if self._blobs is None:
            self._blobs = await Blobs.open(self.bus.js, subjects.state_bucket(self.name))
        return self._blobs

    # -- serving durable commands -------------------------------------------------------

    async def _handle_command(self, msg: Msg) -> None:
        prefix = f"ccc.cmd.{self.name}."
        op = msg.subject[len(prefix) :]
        headers = dict(msg.headers or {})
        meta = msg.metadata
        correlation_id = (
            headers.get(subjects.CORRELATION_HEADER)
            or headers.get(subjects.MSG_ID_HEADER)
            or f"{self.name}-cmd-{meta.sequence.stream}"
        )
        headers.setdefault(subjects.MSG_ID_HEADER, correlation_id)
        spec = self.specs.get(op)
        with tracing.server_span(f"command {msg.subject}", headers, SpanKind.CONSUMER) as span:
            try:
                if spec is None:
                    raise NotFound(f"{self.name} has no endpoint {op!r}")
                try:
                    async with asyncio.timeout(spec.timeout):
                        body, status, content_type = await self._execute(
                            spec, msg.data, headers, span, correlation_id=correlation_id
                        )
                except TimeoutError as exc:
                    raise Timeout(f"{self.name}.{op} took longer than {spec.timeout}s") from exc
            except CCCError as exc:
                if exc.status >= 500 and meta.num_delivered < self.settings.command_max_deliver:
                    COMMANDS.labels(self.name, "retried").inc()
                    await msg.nak(delay=min(30.0, 0.5 * 2**meta.num_delivered))
                    return
                await self._command_result(op, correlation_id, error=exc.problem())
                COMMANDS.labels(self.name, "failed").inc()
                await msg.ack()
                return
            if status != 202:  # an operation reports its own completion when it ends
                if content_type is not None:
                    body = self._binary_summary(body, content_type)
                await self._command_result(op, correlation_id, result=body)
            COMMANDS.labels(self.name, "completed").inc()
            await msg.ack()

    def _binary_summary(self, data: bytes, content_type: str) -> bytes:
        """A ``Binary`` answer inside a JSON event: base64 with its media type and digest,
        or, when that would not fit in one bus message, the digest alone (the bytes are
        for request-reply callers; an event is not a file transfer)."""
        summary: dict[str, Any] = {
            "content_type": content_type,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        if len(data) * 4 // 3 + 1024 < self.nc.max_payload:
            summary["data_base64"] = base64.b64encode(data).decode()
        else:
            summary["omitted"] = "too large for an event; call the endpoint for the bytes"
        return json.dumps(summary).encode()

    async def _command_result(
        self,
        op: str,
        correlation_id: str,
        *,
        result: bytes | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        """Publish the outcome durably, deduplicated by correlation id: a command
        redelivered after a crash between publish and ack yields one result event."""
        outcome = "failed" if error is not None else "completed"
        head = b'{"correlation_id":' + json.dumps(correlation_id).encode()
        if error is not None:
            payload = head + b',"error":' + json.dumps(error, default=str).encode() + b"}"
        else:
            payload = head + b',"result":' + (result or b"null") + b"}"
        await self.bus.publish_durable(
            subjects.event_subject(self.name, f"{op}.{outcome}"),
            payload,
            msg_id=f"{self.name}:{correlation_id}:{outcome}",
            headers={subjects.CORRELATION_HEADER: correlation_id},
        )
