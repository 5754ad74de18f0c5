"""``python -m ccc.gateway``: serve the edge with uvicorn (uvloop, httptools, one worker)."""

from __future__ import annotations

import uvicorn

from ccc.common.logs import setup_logging

from .app import create_app
from .settings import GatewaySettings


def main() -> None:
    settings = GatewaySettings()
    setup_logging("gateway", settings.log_level, settings.log_json)
    uvicorn.run(
        create_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        proxy_headers=False,  # the edge reads no X-Forwarded-*; skip the middleware
        log_config=None,
        timeout_graceful_shutdown=int(settings.drain_timeout),
    )


if __name__ == "__main__":
    main()
