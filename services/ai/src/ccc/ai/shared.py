"""State every ai instance shares through the service's KV bucket, mirrored in memory.

A ``KVMirror`` watches one key prefix and keeps the latest value of each key, so the hot
path reads a dict while a write by any instance reaches every other within milliseconds.
``Cooldowns`` is the provider cooldown of the issue (skipped by all instances, not per
process); budgets and spend per API key live beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from typing import Any

from ccc.common.state import StateStore

log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^-_=A-Za-z0-9]")


def token(name: str) -> str:
    """A KV key token for a name (provider, API key id)."""
    return _UNSAFE.sub("_", name) or "_"


class KVMirror:
    def __init__(self, state: StateStore, prefix: str) -> None:
        self.state = state
        self.prefix = prefix
        self.values: dict[str, Any] = {}
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watcher: Any = None

    async def start(self) -> None:
        self._watcher = await self.state.kv.watch(f"{self.prefix}>")
        self._task = asyncio.create_task(self._follow())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self.ready.wait()

    async def _follow(self) -> None:
        async for entry in self._watcher:
            if entry is None:  # the initial values are in
                self.ready.set()
                continue
            name = entry.key[len(self.prefix) :]
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                self.values.pop(name, None)
                continue
            try:
                self.values[name] = json.loads(entry.value)
            except ValueError:
                log.warning("ignoring unreadable %s%s", self.prefix, name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()


class Cooldowns:
    """``cooldown.<provider>`` = ``{"until": epoch seconds, "reason": ..., "by": instance}``."""

    PREFIX = "cooldown."

    def __init__(self, state: StateStore, instance: str) -> None:
        self.state = state
        self.instance = instance
        self.mirror = KVMirror(state, self.PREFIX)
        self._writes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.mirror.start()

    async def stop(self) -> None:
        if self._writes:
            await asyncio.wait(list(self._writes), timeout=2)
        await self.mirror.stop()

    def record(self, provider: str) -> dict[str, Any] | None:
        """The live cooldown record of ``provider``, or None."""
        return self.mirror.values.get(token(provider)) if self.until(provider) else None

    def until(self, provider: str) -> float | None:
        """When ``provider`` may be used again, or None if it may be used now."""
        record = self.mirror.values.get(token(provider))
        if not isinstance(record, dict):
            return None
        until = float(record.get("until", 0))
        return until if until > time.time() else None

    def trip(self, provider: str, seconds: float, reason: str) -> None:
        """Cool ``provider`` down now here, and for every instance as soon as KV has it."""
        until = time.time() + seconds
        current = self.until(provider)
        if current is not None and current >= until:
            return
        record = {"until": until, "reason": reason[:300], "by": self.instance, "at": time.time()}
        self.mirror.values[token(provider)] = record  # this instance skips it at once
        task = asyncio.create_task(self._write(provider, record))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, provider: str, record: dict[str, Any]) -> None:
        try:
            await self.state.put(self.PREFIX + token(provider), record)
        except Exception:
            log.exception("could not share the cooldown of %s", provider)

    async def clear(self, provider: str) -> None:
        self.mirror.values.pop(token(provider), None)
        await self.state.delete(self.PREFIX + token(provider))
