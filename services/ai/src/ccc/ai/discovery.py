"""Model discovery: poll each provider's model list and merge it into the catalog.

OpenAI-compatible servers answer ``GET /v1/models``, Ollama ``GET /api/tags``. A provider
that stops answering loses its discovered models at the next poll (its static ones stay),
so ``GET /v1/models`` shows what can be served now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .providers import Provider, ProviderError
from .routing import Catalog

log = logging.getLogger(__name__)


class Discovery:
    def __init__(self, catalog: Catalog, interval: float) -> None:
        self.catalog = catalog
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    @property
    def providers(self) -> list[Provider]:
        return [p for p in self.catalog.providers.values() if p.config.discovers]

    async def poll(self) -> None:
        await asyncio.gather(*(self._poll_one(p) for p in self.providers))

    async def _poll_one(self, provider: Provider) -> None:
        try:
            async with asyncio.timeout(max(1.0, self.interval)):
                models = await provider.list_models()
        except (ProviderError, TimeoutError) as exc:
            if self.catalog.discovered.get(provider.name):
                log.warning("provider %s dropped from discovery: %s", provider.name, exc)
            self.catalog.set_discovered(provider.name, [])
            return
        if models != self.catalog.discovered.get(provider.name):
            log.info("provider %s serves %d models", provider.name, len(models))
        self.catalog.set_discovered(provider.name, models)

    async def start(self) -> None:
        if not self.providers:
            return
        await self.poll()
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.poll()
            except Exception:
                log.exception("discovery poll failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
