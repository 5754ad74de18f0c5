"""Prometheus metrics of one process; the listener starts only when a port is set.

The per-request metrics (requests by status, latency) are counted in plain numbers and
turned into Prometheus families only when scraped: prometheus_client takes a lock on
every ``inc`` and ``observe``, which cost 1.3 µs a request here — as much as decoding
the request. Counting happens on the event loop thread; a scrape from the listener's
thread reads numbers that may be one request apart, which Prometheus tolerates.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from prometheus_client import REGISTRY, Counter, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
)


Cell = TypeVar("Cell")


class CounterCell:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        self.value += 1


class HistogramCell:
    __slots__ = ("_bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self._bounds, value)] += 1
        self.total += value


class _Labelled(Collector, Generic[Cell]):
    """A labelled family of plain-number cells, registered with the default registry."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        new_cell: Callable[[], Cell],
    ) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self._new_cell = new_cell
        self._cells: dict[tuple[str, ...], Cell] = {}
        REGISTRY.register(self)

    def labels(self, *values: str) -> Cell:
        cell = self._cells.get(values)
        if cell is None:
            cell = self._cells[values] = self._new_cell()
        return cell


class FastCounter(_Labelled[CounterCell]):
    """A labelled counter whose cells are plain integers (see the module's docstring)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        super().__init__(name, documentation, labelnames, CounterCell)

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, cell in list(self._cells.items()):
            family.add_metric(list(values), cell.value)
        yield family


class FastHistogram(_Labelled[HistogramCell]):
    """A labelled histogram whose cells are plain numbers (see the module's docstring)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        self.bounds = tuple(sorted(buckets))
        super().__init__(name, documentation, labelnames, lambda: HistogramCell(self.bounds))

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, cell in list(self._cells.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*self.bounds, float("inf")), list(cell.counts), strict=True):
                cumulative += count
                buckets.append((floatToGoString(bound), float(cumulative)))  # type: ignore[no-untyped-call]
            family.add_metric(list(values), buckets, cell.total)
        yield family


REQUESTS = FastCounter(
    "ccc_requests", "Requests handled by an endpoint", ["service", "endpoint", "status"]
)
LATENCY = FastHistogram(
    "ccc_request_seconds", "Time spent in an endpoint handler", ["service", "endpoint"]
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
        self._by_status: dict[int, CounterCell] = {}

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
