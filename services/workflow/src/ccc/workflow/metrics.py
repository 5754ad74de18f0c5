"""Prometheus metrics of the engine (served by the runtime's ``/metrics`` listener)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RUNS = Counter("ccc_workflow_runs_total", "Runs that ended", ["status"])
STARTED = Counter("ccc_workflow_runs_started_total", "Runs started or taken over", ["how"])
ATTEMPTS = Counter("ccc_workflow_step_attempts_total", "Step attempts that ended", ["outcome"])
OWNED = Gauge("ccc_workflow_runs_owned", "Runs this instance holds the lease of")
WRITE = Histogram(
    "ccc_workflow_persist_seconds",
    "One durable batch: run record CAS plus history append",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
