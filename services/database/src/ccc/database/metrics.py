"""Prometheus gauges of the managed servers, in the process registry.

They are served on the process's ``/metrics`` (``CCC_METRICS_PORT``) and, for callers
that only reach the gateway, as text by ``GET /v1/database/metrics``. A refresher task
collects every registered server each ``CCC_METRICS_INTERVAL`` seconds.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Gauge, generate_latest

from .models import BackupView, Performance

LABELS = ["server", "engine"]
UP = Gauge("ccc_database_up", "1 when the server answered the last collection", LABELS)
CONNECTIONS = Gauge("ccc_database_connections", "Open client connections", LABELS)
MAX_CONNECTIONS = Gauge("ccc_database_max_connections", "Configured connection limit", LABELS)
CACHE_HIT = Gauge("ccc_database_cache_hit_ratio", "Buffer cache / keyspace hit ratio", LABELS)
LOCK_WAITS = Gauge("ccc_database_lock_waits", "Sessions waiting for a lock", LABELS)
SLOWEST = Gauge("ccc_database_slowest_query_mean_ms", "Mean time of the slowest query", LABELS)
SIZE = Gauge("ccc_database_size_bytes", "Size of each database", ["server", "engine", "database"])
BACKUP_SIZE = Gauge(
    "ccc_database_last_backup_size_bytes", "Size of the last backup", ["server", "database"]
)
BACKUP_TIME = Gauge(
    "ccc_database_last_backup_timestamp_seconds",
    "When the last successful backup finished",
    ["server", "database"],
)
BACKUP_SECONDS = Gauge(
    "ccc_database_last_backup_duration_seconds",
    "Duration of the last backup",
    ["server", "database"],
)


def record(perf: Performance) -> None:
    labels = (perf.server, perf.engine)
    UP.labels(*labels).set(1)
    CONNECTIONS.labels(*labels).set(perf.connections)
    if perf.max_connections is not None:
        MAX_CONNECTIONS.labels(*labels).set(perf.max_connections)
    if perf.cache_hit_ratio is not None:
        CACHE_HIT.labels(*labels).set(perf.cache_hit_ratio)
    LOCK_WAITS.labels(*labels).set(len(perf.locks))
    SLOWEST.labels(*labels).set(max((q.mean_ms for q in perf.slow_queries), default=0.0))
    for size in perf.sizes:
        SIZE.labels(perf.server, perf.engine, size.name).set(size.size_bytes)


def record_down(server: str, engine: str) -> None:
    UP.labels(server, engine).set(0)


def record_backup(backup: BackupView) -> None:
    labels = (backup.server, backup.database or "")
    BACKUP_SIZE.labels(*labels).set(backup.size_bytes)
    BACKUP_SECONDS.labels(*labels).set(backup.duration_s)
    if backup.finished_at is not None:
        BACKUP_TIME.labels(*labels).set(backup.finished_at.timestamp())


def exposition() -> str:
    """The ``ccc_database_*`` families in Prometheus text format."""
    text = generate_latest(REGISTRY).decode()
    keep: list[str] = []
    for line in text.splitlines():
        name = line.split(" ", 3)[2] if line.startswith("#") else line
        if name.startswith("ccc_database_"):
            keep.append(line)
    return "\n".join(keep) + "\n"
