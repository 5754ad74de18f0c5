"""A service's own state: one JetStream KV bucket of JSON values, plus its object store.

Keys are ``<entity>.<id>``. ``update`` is compare-and-swap on the revision, for the
places where two instances may write the same key; a lost race is a ``Conflict``.
"""

from __future__ import annotations

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
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore
from pydantic import BaseModel

from .errors import Conflict

M = TypeVar("M", bound=BaseModel)


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

    async def keys(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix`` (a dotted prefix like ``operation.``), filtered by the
        server through a watch on ``<prefix>>``. (nats-py's ``keys(filters=...)``
        matches substrings on the client after fetching every key.)"""
        watcher = await self.kv.watch(
            f"{prefix}>" if prefix else ">", ignore_deletes=True, meta_only=True
        )
        keys: list[str] = []
        try:
            async for entry in watcher:
                if entry is None:  # the end of what exists now
                    break
                if entry.key.startswith(prefix):
                    keys.append(entry.key)
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return sorted(keys)

    async def items(self, prefix: str = "") -> AsyncIterator[Entry]:
        for key in await self.keys(prefix):
            e = await self.entry(key)
            if e is not None:
                yield e


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
