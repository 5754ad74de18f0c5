"""With CCC_OTLP_ENDPOINT set, a service records real spans and ships them over OTLP/HTTP,
as children of the caller's trace."""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nats
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ccc.common.natsserver import free_port
from ccc.common.testing import subprocess_service, wait_until

HERE = Path(__file__).parent


class Collector(BaseHTTPRequestHandler):
    """A minimal OTLP/HTTP receiver: keeps every exported span."""

    spans: list = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            service = next(
                a.value.string_value
                for a in resource.resource.attributes
                if a.key == "service.name"
            )
            for scope in resource.scope_spans:
                for span in scope.spans:
                    Collector.spans.append((service, span))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


async def test_spans_are_exported_as_children_of_the_callers_trace(nats_url, service_name):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    port = free_port()
    env = {
        "CCC_NATS_URL": nats_url,
        "CCC_OTLP_ENDPOINT": endpoint,
        "CCC_METRICS_PORT": str(port),
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    try:
        with subprocess_service(
            [str(HERE / "fleet_service.py"), service_name], env, ready_port=port
        ):
            nc = await nats.connect(nats_url)
            for _ in range(50):
                try:
                    await nc.request(
                        f"ccc.{service_name}.echo",
                        b'{"text": "traced"}',
                        timeout=2,
                        headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
                    )
                    break
                except nats.errors.NoRespondersError:
                    await asyncio.sleep(0.1)
            await nc.close()
            await wait_until(lambda: Collector.spans, timeout=10)
    finally:
        server.shutdown()
    service, span = next(
        (s, sp) for s, sp in Collector.spans if sp.name == f"ccc.{service_name}.echo"
    )
    assert service == f"ccc-{service_name}"
    assert span.trace_id.hex() == trace_id
    assert span.parent_span_id.hex() == parent_id
    assert span.kind == span.SPAN_KIND_SERVER
