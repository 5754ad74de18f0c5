"""OpenTelemetry tracing carried in NATS headers (W3C ``traceparent``).

The gateway injects the HTTP request's context into the bus message; the service
extracts it, so one trace spans edge and services. Spans are exported over OTLP/HTTP
only when ``CCC_OTLP_ENDPOINT`` is set; otherwise they are still created, so trace ids
reach the logs and the reply headers.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context as OtelContext
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_configured = False


def setup_tracing(service_name: str, otlp_endpoint: str | None) -> None:
    """Install the process-wide tracer provider once."""
    global _configured
    if _configured:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": f"ccc-{service_name}"}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    _configured = True


def tracer(name: str = "ccc") -> trace.Tracer:
    return trace.get_tracer(name)


def inject(headers: MutableMapping[str, str], context: OtelContext | None = None) -> None:
    """Write the current (or given) trace context into message headers."""
    propagate.inject(headers, context=context)


def extract(headers: Mapping[str, str] | None) -> OtelContext:
    return propagate.extract(headers or {})


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None
