"""Gateway settings (``CCC_`` prefix, like the rest of the fleet)."""

from __future__ import annotations

from pydantic import SecretStr

from ccc.common.settings import Settings


class GatewaySettings(Settings):
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    admin_key: SecretStr | None = None
    """The admin API key; unset, one is generated on first start and kept in ``.ccc/``."""
    max_body_bytes: int = 1_000_000
    """Request bodies above this are refused with 413 (NATS's default max payload is 1 MiB)."""
    rate_limit_rps: float = 200.0
    rate_limit_burst: int = 400
    discovery_interval: float = 2.0
    discovery_window: float = 0.2
    no_responders_retry_delay: float = 0.05
