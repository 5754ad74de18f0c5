"""Settings shared by every process: pydantic-settings with the ``CCC_`` prefix.

Every field has a default that works on one laptop with nothing configured.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CCC_", extra="ignore")

    nats_url: str = "nats://127.0.0.1:4222"
    data_dir: Path = Path(".ccc")
    log_level: str = "INFO"
    log_json: bool = True
    otlp_endpoint: str | None = None
    metrics_port: int = 0
    """Port of this process's Prometheus ``/metrics``; 0 turns the listener off."""
    max_concurrency: int = 256
    """Requests a service instance handles at once; the next one waits (back-pressure)."""
    command_ack_wait: float = 30.0
    """Seconds a durable command may run unacknowledged before JetStream redelivers it."""
    command_max_deliver: int = 5
    operation_lease: float = 15.0
    """Seconds an instance's claim on a running operation lasts without a heartbeat."""
    drain_timeout: float = 20.0
    events_max_age_days: float = 7.0
    request_timeout: float = 10.0
    master_key: SecretStr | None = None
    """Fernet key (or passphrase) sealing secrets at rest; unset, one is generated
    under ``<data_dir>/master.key`` (mode 0600)."""
