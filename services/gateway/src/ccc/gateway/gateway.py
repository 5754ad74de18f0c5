"""The gateway's process state: one NATS connection, the key ring, the live route table."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from nats.aio.client import Client as NATS

from ccc.common import localsecrets, subjects, tracing
from ccc.common.bus import Bus, connect, ensure_streams
from ccc.common.discovery import discover
from ccc.common.state import StateStore

from .keys import KeyRing
from .ratelimit import RateLimiter
from .routes import RouteTable
from .settings import GatewaySettings

log = logging.getLogger(__name__)
AUDIT_SUBJECT = subjects.event_subject("gateway", "audit")
AUDIT_FLUSH_SECONDS = 0.05
AUDIT_BATCH = 256
AUDIT_BUFFER_LIMIT = 100_000


class Gateway:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.routes = RouteTable()
        self.limiter = RateLimiter(settings.rate_limit_rps, settings.rate_limit_burst)
        self.catalog_loaded = asyncio.Event()
        self.admin_token = ""
        self.admin_generated = False
        self._refresh_now = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._audit_buffer: list[dict[str, Any]] = []
        self.nc: NATS
        self.bus: Bus
        self.keys: KeyRing

    async def start(self) -> None:
        tracing.setup_tracing("gateway", self.settings.otlp_endpoint)
        self.nc = await connect(self.settings.nats_url, "ccc-gateway")
        self.bus = Bus(self.nc, self.settings.request_timeout)
        await ensure_streams(self.bus.js, self.settings.events_max_age_days)
        state = await StateStore.open(self.bus.js, subjects.state_bucket("gateway"))
        if self.settings.admin_key is not None:
            self.admin_token = self.settings.admin_key.get_secret_value()
        else:
            self.admin_token, self.admin_generated = localsecrets.admin_key(self.settings.data_dir)
            if self.admin_generated:
                log.info("generated the admin key in %s/admin.key", self.settings.data_dir)
        self.keys = KeyRing(state)
        await self.keys.start(self.admin_token)
        # A service starting or stopping triggers a refresh at once, not at the next tick.
        await self.nc.subscribe("ccc.evt.*.service.*", cb=self._on_lifecycle)
        await self.refresh()
        self._tasks.append(asyncio.create_task(self._refresh_forever()))
        self._tasks.append(asyncio.create_task(self._audit_forever()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.keys.stop()
        with contextlib.suppress(Exception):
            await self._flush_audit()
            await self.nc.drain()

    async def _on_lifecycle(self, _msg: Any) -> None:
        self._refresh_now.set()

    async def refresh(self) -> None:
        services = await discover(self.nc, self.settings.discovery_window)
        if self.routes.rebuild(services):
            log.info(
                "catalog changed: %s",
                ", ".join(f"{s.name} x{len(s.instances)}" for s in services) or "(empty)",
            )
        self.catalog_loaded.set()

    async def _refresh_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refresh_now.wait(), self.settings.discovery_interval)
            if self._refresh_now.is_set():
                await asyncio.sleep(0.1)  # let a burst of lifecycle events settle
                self._refresh_now.clear()
            try:
                await self.refresh()
            except Exception:
                log.exception("catalog refresh failed")

    async def audit(self, record: dict[str, Any]) -> None:
        """Queue one audit event per call; they leave in batches (one socket write per
        batch instead of one per request), at most ``AUDIT_FLUSH_SECONDS`` later."""
        self._audit_buffer.append(record)
        if len(self._audit_buffer) >= AUDIT_BATCH:
            await self._flush_audit()

    async def _flush_audit(self) -> None:
        """Publish the queued records. While NATS reconnects nats-py buffers them; if
        publishing fails, they stay queued (bounded) for the next flush."""
        if not self._audit_buffer or self.nc.is_closed:
            return
        records, self._audit_buffer = self._audit_buffer, []
        for i, record in enumerate(records):
            try:
                await self.nc.publish(AUDIT_SUBJECT, json.dumps(record).encode())
            except Exception:
                kept = records[i:] + self._audit_buffer
                dropped = max(0, len(kept) - AUDIT_BUFFER_LIMIT)
                if dropped:
                    log.error("audit buffer full: %d audit records dropped", dropped)
                self._audit_buffer = kept[dropped:]
                raise

    async def _audit_forever(self) -> None:
        while True:
            await asyncio.sleep(AUDIT_FLUSH_SECONDS)
            try:
                await self._flush_audit()
            except Exception:
                log.exception("audit flush failed")

    @property
    def ready(self) -> bool:
        return self.nc.is_connected and self.catalog_loaded.is_set()
