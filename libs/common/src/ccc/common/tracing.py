"""OpenTelemetry tracing carried in NATS headers (W3C ``traceparent``).

The gateway injects the HTTP request's context into the bus message; the service
extracts it, so one trace spans edge and services. Spans are exported over OTLP/HTTP
only when ``CCC_OTLP_ENDPOINT`` is set; otherwise they are still created, so trace ids
reach the logs and the reply headers.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Mapping, MutableMapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context as OtelContext
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

_configured = False
_exporting = False


def setup_tracing(service_name: str, otlp_endpoint: str | None) -> None:
    """Install the process-wide tracer provider once."""
    global _configured, _exporting
    if _configured:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": f"ccc-{service_name}"}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        _exporting = True
    trace.set_tracer_provider(provider)
    _configured = True


def tracer(name: str = "ccc") -> trace.Tracer:
    return trace.get_tracer(name)


def inject(headers: MutableMapping[str, str], context: OtelContext | None = None) -> None:
    """Write the current (or given) trace context into message headers.

    Without an exporter only ``traceparent`` matters, and formatting it directly is
    several times cheaper than the generic propagators (run on every bus call)."""
    if _exporting or context is not None:
        propagate.inject(headers, context=context)
        return
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        headers["traceparent"] = (
            f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}"
            f"-{span_context.trace_flags:02x}"
        )


def extract(headers: Mapping[str, str] | None) -> OtelContext:
    return propagate.extract(headers or {})


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


@contextlib.contextmanager
def server_span(
    name: str, headers: Mapping[str, str] | None, kind: SpanKind = SpanKind.SERVER
) -> Iterator[trace.Span]:
    """The span of one request handled here, child of the caller's context.

    With an exporter configured this is a real, recorded span. Without one, recording
    spans nobody will read costs more than the rest of a small request, so the
    caller's context is made current as it is (or, without one, a fresh trace id):
    logs and onward calls still carry the trace id, and nothing is recorded.
    """
    if _exporting:
        with tracer("ccc").start_as_current_span(name, context=extract(headers), kind=kind) as span:
            yield span
        return
    remote = _remote_span(headers.get("traceparent") if headers else None)
    span = remote or NonRecordingSpan(
        SpanContext(
            trace_id=random.getrandbits(128) or 1,
            span_id=random.getrandbits(64) or 1,
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
    )
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield span
    finally:
        otel_context.detach(token)


def _remote_span(traceparent: str | None) -> NonRecordingSpan | None:
    """The caller's span from a W3C ``traceparent`` (version 00), parsed without the
    generic propagator machinery; None when absent or malformed."""
    if not traceparent or len(traceparent) < 55:
        return None
    parts = traceparent.split("-")
    if len(parts) < 4 or parts[0] != "00" or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3][:2], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return NonRecordingSpan(
        SpanContext(
            trace_id=trace_id, span_id=span_id, is_remote=True, trace_flags=TraceFlags(flags)
        )
    )
