"""Settings of the database service (``CCC_`` prefix, working local defaults).

The runtime's ``Service.settings`` is the shared base class (tests replace it with a
plain ``Settings``), so the database-only knobs live in their own object, read once.
"""

from __future__ import annotations

from pathlib import Path

from ccc.common.settings import Settings


class DatabaseSettings(Settings):
    """The fleet's settings (incl. ``CCC_MASTER_KEY``) plus the database-only knobs."""

    schedule_interval: float = 30.0
    """Seconds between two scheduler ticks; 0 turns the background scheduler off."""
    metrics_interval: float = 60.0
    """Seconds between two refreshes of the Prometheus gauges; 0 turns it off."""
    connect_timeout: float = 5.0
    """Seconds to reach a managed server before answering 503."""
    tools_dir: Path | None = None
    """Where pg_dump, pg_restore, mariadb-dump, mariadb, redis-cli, redis-server live;
    unset means ``PATH``."""
    scratch_dir: Path | None = None
    """Temporary space for verification (Redis RDB loads); unset means the system's."""
    backup_url: str | None = None
    """``s3://bucket/prefix`` sends new backups to S3; unset keeps them in the JetStream
    object store."""
    s3_endpoint_url: str | None = None
    """S3-compatible endpoint (MinIO, Ceph RGW, ...); unset means AWS."""
    cnpg_crd_dir: Path | None = None
    """Directory holding the CloudNativePG CRD files (``postgresql.cnpg.io_*.yaml``) to
    validate generated manifests against; unset uses the built-in constraints."""


settings = DatabaseSettings()
