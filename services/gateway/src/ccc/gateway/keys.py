"""API keys: issued as ``ccc_<id>_<secret>``, stored only as a SHA-256 hash in KV.

The secret is 32 random bytes, so a fast hash is enough (there is nothing to brute-force,
unlike a password) and verifying costs microseconds on the request path. Keys live in
the gateway's KV bucket and every gateway replica follows changes through a KV watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from ccc.common.roles import ROLES
from ccc.common.state import StateStore

log = logging.getLogger(__name__)
PREFIX = "apikey."


class ApiKey(BaseModel):
    id: str
    name: str
    roles: list[str]
    hash: str
    created_at: datetime
    rate_limit_rps: float | None = None


class KeyCreate(BaseModel):
    name: str = Field(..., min_length=1, max_length=100)
    roles: list[str] = Field(..., min_length=1)
    rate_limit_rps: float | None = Field(None, gt=0)

    def model_post_init(self, _context: object) -> None:
        unknown = set(self.roles) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown roles {sorted(unknown)}; roles are {list(ROLES)}")


class KeyCreated(BaseModel):
    id: str
    name: str
    roles: list[str]
    key: str = Field(description="The secret, shown this once")


class KeyView(BaseModel):
    id: str
    name: str
    roles: list[str]
    created_at: datetime
    rate_limit_rps: float | None = None


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class KeyRing:
    """Hashed keys in KV, mirrored in memory for the request path."""

    def __init__(self, state: StateStore) -> None:
        self.state = state
        self._by_hash: dict[str, ApiKey] = {}
        self._watch: asyncio.Task[None] | None = None

    async def start(self, admin_token: str) -> None:
        admin = ApiKey(
            id="admin",
            name="admin",
            roles=["admin"],
            hash=digest(admin_token),
            created_at=datetime.now(UTC),
        )
        current = await self.state.get_model(PREFIX + "admin", ApiKey)
        if current is None or current.hash != admin.hash:
            await self.state.put(PREFIX + "admin", admin)
        async for entry in self.state.items(PREFIX):
            key = ApiKey.model_validate(entry.value)
            self._by_hash[key.hash] = key
        self._watch = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        """Apply puts and deletes made by any gateway replica."""
        while True:
            try:
                watcher = await self.state.kv.watch(PREFIX + ">", include_history=False)
                async for entry in watcher:
                    if entry is None:
                        continue
                    self._apply(entry.key, entry.value, entry.operation)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("key watch failed; restarting")
                await asyncio.sleep(1)

    def _apply(self, kv_key: str, value: bytes | None, operation: str | None) -> None:
        key_id = kv_key[len(PREFIX) :]
        for h, known in list(self._by_hash.items()):
            if known.id == key_id:
                del self._by_hash[h]
        if operation in (None, "PUT") and value:
            key = ApiKey.model_validate(json.loads(value))
            self._by_hash[key.hash] = key

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch

    def verify(self, token: str) -> ApiKey | None:
        h = digest(token)
        key = self._by_hash.get(h)
        if key is not None and hmac.compare_digest(key.hash, h):
            return key
        return None

    async def create(self, spec: KeyCreate) -> KeyCreated:
        key_id = secrets.token_hex(6)
        token = f"ccc_{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(
            id=key_id,
            name=spec.name,
            roles=sorted(set(spec.roles)),
            hash=digest(token),
            created_at=datetime.now(UTC),
            rate_limit_rps=spec.rate_limit_rps,
        )
        await self.state.create(PREFIX + key_id, record)
        self._by_hash[record.hash] = record
        return KeyCreated(id=key_id, name=record.name, roles=record.roles, key=token)

    async def list(self) -> list[KeyView]:
        out = []
        async for entry in self.state.items(PREFIX):
            out.append(KeyView.model_validate(entry.value))
        return out

    async def revoke(self, key_id: str) -> bool:
        if await self.state.get(PREFIX + key_id) is None:
            return False
        await self.state.delete(PREFIX + key_id)
        self._apply(PREFIX + key_id, None, "DEL")
        return True
