"""A service's own state: one JetStream KV bucket of JSON values, plus its object store.

Keys are ``<entity>.<id>``. ``update`` is compare-and-swap on the revision, for the
places where two instances may write the same key; a lost race is a ``Conflict``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, TypeVar

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, ObjectStoreConfig, StorageType
from nats.js.errors import (
    BadRequestError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
    ObjectNotFoundError,
)
from nats.js.errors import (
    BucketNotFoundError as BucketNotFound,
)
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue
from nats.js.object_store import ObjectStore
from pydantic import BaseModel

from .errors import Conflict, Unavailable

M = TypeVar("M", bound=BaseModel)
SNAPSHOT_TIMEOUT = 30.0
SNAPSHOT_GRACE = 1.0


@dataclass(frozen=True)
class Entry:
    key: str
    value: Any
    revision: int


class StateStore:
    """Typed JSON access to a KV bucket."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str, history: int = 1) -> StateStore:
        try:
            kv = await js.key_value(bucket)
        except (BucketNotFound, NotFoundError):
            kv = await js.create_key_value(
                KeyValueConfig(bucket=bucket, history=history, storage=StorageType.FILE)
            )
        return cls(kv)

    async def entry(self, key: str) -> Entry | None:
        try:
            e = await self.kv.get(key)
        except KeyNotFoundError:
            return None
        if e.value is None:
            return None
        return Entry(key, json.loads(e.value), e.revision or 0)

    async def get(self, key: str) -> Any | None:
        e = await self.entry(key)
        return None if e is None else e.value

    async def get_model(self, key: str, model: type[M]) -> M | None:
        value = await self.get(key)
        return None if value is None else model.model_validate(value)

    async def put(self, key: str, value: Any) -> int:
        return await self.kv.put(key, _dump(value))

    async def create(self, key: str, value: Any) -> int:
        """Write only if the key does not exist (or was deleted)."""
        try:
            return await self.kv.create(key, _dump(value))
        except (KeyWrongLastSequenceError, BadRequestError) as exc:
            raise Conflict(f"{key} already exists") from exc

    async def update(self, key: str, value: Any, revision: int) -> int:
        """Compare-and-swap: write only if the key is still at ``revision``."""
        try:
            return await self.kv.update(key, _dump(value), last=revision)
        except (KeyWrongLastSequenceError, BadRequestError) as exc:
            raise Conflict(f"{key} changed since revision {revision}") from exc

    async def delete(self, key: str) -> None:
        await self.kv.delete(key)

    async def snapshot(self, prefix: str = "", *, values: bool = True) -> list[KeyValue.Entry]:
        """Every live key under ``prefix`` (a dotted prefix like ``run.``) with its latest
        value (only the key and revision when ``values`` is false), each once.

        A watch of ``<prefix>>`` with one message per key, filtered by the server
        (nats-py's ``keys(filters=...)`` matches substrings on the client after fetching
        every key). nats-py's end marker is not enough to know the listing is complete:
        it can come before the entries, and a key rewritten while the watch runs loses
        its old message before the watch reaches it, its new one arriving after the
        point where nothing seemed pending (an independent review missed up to 154 of
        2 000 keys that way). So the keys the stream holds right after the watch starts
        are asked for, and the listing ends only when each of them has been seen, or
        when a key that vanished meanwhile has been waited for ``SNAPSHOT_GRACE``.
        """
        pattern = f"{prefix}>" if prefix else ">"
        watcher = await self.kv.watch(pattern, meta_only=not values)
        found: dict[str, KeyValue.Entry] = {}
        try:
            missing = await self._subjects(pattern)
            caught_up = not missing
            async with asyncio.timeout(SNAPSHOT_TIMEOUT):
                while missing or not caught_up:
                    # asyncio.timeout, not the watcher's updates(timeout=): that one is
                    # asyncio.wait_for, which on 3.11 can swallow a cancellation arriving
                    # as an entry does, and a cancelled caller (a stopping sweeper) then
                    # never ends.
                    try:
                        async with asyncio.timeout(SNAPSHOT_GRACE if caught_up else None):
                            entry = await anext(watcher)
                    except TimeoutError:
                        break  # caught up; what is still missing left the stream meanwhile
                    except StopAsyncIteration:
                        break
                    if entry is None:
                        caught_up = True
                        continue
                    missing.discard(entry.key)
                    if not entry.delta:
                        caught_up = True
                    if entry.operation in (KV_DEL, KV_PURGE):
                        found.pop(entry.key, None)
                    else:
                        found[entry.key] = entry
        except TimeoutError as exc:
            raise Unavailable(
                f"listing {prefix or 'all'} keys took over {SNAPSHOT_TIMEOUT}s"
            ) from exc
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return list(found.values())

    async def _subjects(self, pattern: str) -> set[str]:
        """The keys matching ``pattern`` that the bucket's stream holds messages for."""
        kv: Any = self.kv  # the stream name and subject prefix are nats-py internals
        info = await kv._js.stream_info(kv._stream, subjects_filter=f"{kv._pre}{pattern}")
        return {subject[len(kv._pre) :] for subject in info.state.subjects or {}}

    async def keys(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix``, sorted."""
        return sorted(e.key for e in await self.snapshot(prefix, values=False))

    async def items(self, prefix: str = "") -> AsyncIterator[Entry]:
        for e in sorted(await self.snapshot(prefix), key=lambda e: e.key):
            if e.value is not None:
                yield Entry(e.key, json.loads(e.value), e.revision or 0)


class Blobs:
    """The service's JetStream object store, for blobs over the 1 MB message limit."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str) -> Blobs:
        try:
            store = await js.object_store(bucket)
        except (BucketNotFound, NotFoundError):
            store = await js.create_object_store(
                bucket, ObjectStoreConfig(bucket=bucket, storage=StorageType.FILE)
            )
        return cls(store)

    async def put(self, name: str, data: bytes) -> Any:
        return await self.store.put(name, data)

    async def get(self, name: str) -> bytes | None:
        try:
            result = await self.store.get(name)
        except ObjectNotFoundError:
            return None
        return result.data

    async def delete(self, name: str) -> None:
        try:
            await self.store.delete(name)
        except ObjectNotFoundError:
            return


def _dump(value: Any) -> bytes:
    if isinstance(value, BaseModel):
        return value.model_dump_json().encode()
    return json.dumps(value, default=str).encode()
