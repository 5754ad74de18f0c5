"""Prometheus metrics of one process; the listener starts only when a port is set."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

REQUESTS = Counter(
    "ccc_requests_total", "Requests handled by an endpoint", ["service", "endpoint", "status"]
)
LATENCY = Histogram(
    "ccc_request_seconds",
    "Time spent in an endpoint handler",
    ["service", "endpoint"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
IN_FLIGHT = Gauge("ccc_in_flight", "Requests and commands being handled now", ["service"])
COMMANDS = Counter("ccc_commands_total", "Durable commands handled", ["service", "outcome"])
OPERATIONS = Counter("ccc_operations_total", "Operations finished", ["service", "status"])

_started: set[int] = set()


class EndpointMetrics:
    """An endpoint's metric children, looked up once: ``.labels()`` per request is slow."""

    def __init__(self, service: str, endpoint: str) -> None:
        self.service = service
        self.endpoint = endpoint
        self.latency = LATENCY.labels(service, endpoint)
        self._by_status: dict[int, Counter] = {}

    def count(self, status: int) -> None:
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = REQUESTS.labels(
                self.service, self.endpoint, str(status)
            )
        child.inc()


def serve_metrics(port: int, addr: str = "0.0.0.0") -> None:
    if port and port not in _started:
        start_http_server(port, addr=addr)
        _started.add(port)
