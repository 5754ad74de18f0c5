"""Versioned definitions in KV, and a live cache of the latest version of each.

``definition.<name>.<version>`` holds a version for good (a run keeps the version it
started with); ``workflow.<name>`` points at the latest and is moved by CAS, so two
concurrent puts get two distinct versions. Every instance follows ``workflow.*``
through a KV watch, which is what the cron and event triggers read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field, PrivateAttr

from ccc.common import Conflict, NotFound
from ccc.common.state import StateStore

from .definition import Definition
from .runstate import Caller
from .validate import digest

log = logging.getLogger(__name__)


class DefinitionRecord(BaseModel):
    name: str
    version: int
    digest: str
    created_at: float
    document: dict[str, Any]
    owner: Caller = Field(
        default_factory=Caller, description="Who stored it: cron and event runs act as them"
    )
    _parsed: Definition | None = PrivateAttr(default=None)

    def parsed(self) -> Definition:
        if self._parsed is None:
            self._parsed = Definition.model_validate(self.document)
        return self._parsed


class Pointer(BaseModel):
    name: str
    latest: int
    updated_at: float


def pointer_key(name: str) -> str:
    return f"workflow.{name}"


def version_key(name: str, version: int) -> str:
    return f"definition.{name}.{version}"


class Library:
    def __init__(self, state: StateStore) -> None:
        self.state = state
        self.latest: dict[str, DefinitionRecord] = {}
        self._versions: dict[tuple[str, int], DefinitionRecord] = {}
        self._watch_task: asyncio.Task[None] | None = None
        self._watcher: Any = None
        self.listeners: list[Callable[[], None]] = []

    async def start(self) -> None:
        self._watcher = await self.state.kv.watch("workflow.>")
        self._watch_task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task

    async def _follow(self) -> None:
        async for entry in self._watcher:
            if entry is None:
                continue
            name = entry.key[len("workflow.") :]
            try:
                if entry.operation in ("DEL", "PURGE") or not entry.value:
                    self.latest.pop(name, None)
                else:
                    pointer = Pointer.model_validate_json(entry.value)
                    current = self.latest.get(name)
                    if current is None or current.version < pointer.latest:
                        self._remember(await self.get(name, pointer.latest))
            except Exception:
                log.exception("could not follow definition %s", name)
            self._changed()

    def _remember(self, record: DefinitionRecord) -> None:
        current = self.latest.get(record.name)
        if current is None or current.version <= record.version:
            self.latest[record.name] = record

    def _changed(self) -> None:
        for listener in self.listeners:
            listener()

    async def put(
        self, name: str, definition: Definition, owner: Caller | None = None
    ) -> tuple[DefinitionRecord, bool]:
        """Store a new version, or return the latest if it is the same document (and owner)."""
        document = definition.model_dump(mode="json", by_alias=True, exclude_none=True)
        fingerprint = digest(document)
        for _ in range(20):
            entry = await self.state.entry(pointer_key(name))
            latest = Pointer.model_validate(entry.value).latest if entry else 0
            if latest:
                current = await self.get(name, latest)
                if current.digest == fingerprint and current.owner == (owner or Caller()):
                    return current, False
            record = DefinitionRecord(
                name=name,
                version=latest + 1,
                digest=fingerprint,
                created_at=time.time(),
                document=document,
                owner=owner or Caller(),
            )
            try:
                await self.state.create(version_key(name, record.version), record)
            except Conflict:
                await asyncio.sleep(0.01)
                continue  # a concurrent put took this version number
            pointer = Pointer(name=name, latest=record.version, updated_at=time.time())
            try:
                if entry is None:
                    await self.state.create(pointer_key(name), pointer)
                else:
                    await self.state.update(pointer_key(name), pointer, entry.revision)
            except Conflict:
                continue
            self._versions[(name, record.version)] = record
            self._remember(record)
            self._changed()
            return record, True
        raise Conflict(f"workflow {name} is being changed concurrently; try again")

    async def get(self, name: str, version: int | None = None) -> DefinitionRecord:
        if version is None:
            entry = await self.state.get(pointer_key(name))
            if entry is None:
                raise NotFound(f"workflow {name!r} does not exist")
            version = Pointer.model_validate(entry).latest
        cached = self._versions.get((name, version))
        if cached is not None:
            return cached
        value = await self.state.get(version_key(name, version))
        if value is None:
            raise NotFound(f"workflow {name!r} has no version {version}")
        record = DefinitionRecord.model_validate(value)
        if len(self._versions) > 512:
            self._versions.clear()
        self._versions[(name, version)] = record
        return record

    async def delete(self, name: str) -> None:
        """Remove the name (no new runs, no triggers); stored versions stay for running runs."""
        if await self.state.get(pointer_key(name)) is None:
            raise NotFound(f"workflow {name!r} does not exist")
        await self.state.delete(pointer_key(name))
        self.latest.pop(name, None)
        self._changed()

    async def names(self) -> list[str]:

        return sorted(k[len("workflow.") :] for k in await self.state.keys("workflow."))
