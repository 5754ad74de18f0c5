"""Helpers for tests of services: a real bus, real service instances, a real gateway.

Imported by ``conftest.py`` files; nothing here is used in production paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from .natsserver import free_port, port_open, temporary_server
from .service import Service

__all__ = [
    "free_port",
    "refresh_catalog",
    "register_gateway",
    "running",
    "subprocess_service",
    "temporary_server",
    "wait_until",
]

_gateways: list[Any] = []


def register_gateway(gateway: Any) -> None:
    """Remember an in-process gateway so tests can make it re-read discovery."""
    _gateways.append(gateway)


async def refresh_catalog() -> None:
    """Make every test gateway re-read discovery now (a service just started or stopped)."""
    for gateway in _gateways:
        await gateway.refresh()


@contextlib.asynccontextmanager
async def running(service: Service, nats_url: str, **settings: object) -> AsyncIterator[Service]:
    """Run ``service`` in this event loop against ``nats_url`` until the block ends."""
    # Keep the service's own settings class (it may add fields), with the test's bus.
    settings_class = type(service.settings)
    service.settings = settings_class(nats_url=nats_url, **settings)  # type: ignore[arg-type]
    service._stopped = asyncio.Event()
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


@contextlib.contextmanager
def subprocess_service(
    args: list[str], env: dict[str, str], ready_port: int | None = None, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a service as its own process (for kill -9 and drain tests)."""
    full_env = {**os.environ, **env}
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, *args],
        env=full_env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        if ready_port is not None:
            deadline = time.monotonic() + 20
            while not port_open("127.0.0.1", ready_port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{args} did not come up (exit {proc.poll()})")
                time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


async def wait_until(predicate: object, timeout: float = 10.0, interval: float = 0.05) -> None:
    """Poll an (async) predicate until true; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()  # type: ignore[operator]
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
