"""Session-wide fixtures: one real JetStream server for the whole test run."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "tests"))  # `import fakes`

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("CCC_LOG_JSON", "false")


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    """A fresh ``nats-server -js`` on a free port (tests never touch the machine's bus)."""
    from ccc.common.testing import temporary_server

    with temporary_server() as url:
        yield url


@pytest.fixture(scope="session")
async def gateway(nats_url: str) -> AsyncIterator[dict[str, str]]:
    """The real gateway (uvicorn, in this event loop) on a free port, against ``nats_url``.

    Yields ``{"url": ..., "admin_key": ...}``. Routes appear as services start; call
    ``await ccc.common.testing.refresh_catalog()`` to see a new service at once.
    """
    import asyncio

    import uvicorn
    from pydantic import SecretStr

    from ccc.common.natsserver import free_port
    from ccc.common.testing import register_gateway
    from ccc.gateway.app import create_app
    from ccc.gateway.settings import GatewaySettings

    port = free_port()
    settings = GatewaySettings(
        nats_url=nats_url,
        gateway_port=port,
        admin_key=SecretStr("test-admin-key"),
        discovery_interval=0.5,
        rate_limit_rps=10_000,
        rate_limit_burst=10_000,
    )
    edge = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(
            edge, host="127.0.0.1", port=port, lifespan="on", log_config=None, access_log=False
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    register_gateway(edge.gw)
    yield {"url": f"http://127.0.0.1:{port}", "admin_key": "test-admin-key"}
    server.should_exit = True
    await task


# Older tests import it from here; new ones use ccc.common.testing.refresh_catalog.
from ccc.common.testing import refresh_catalog  # noqa: E402,F401
