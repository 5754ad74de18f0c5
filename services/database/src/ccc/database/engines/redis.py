"""Redis: redis-py for ACL users and stats, ``redis-cli --rdb`` for RDB backups.

An RDB cannot be loaded into a running server, so restore and verify start a private
``redis-server`` on the backup file (loopback, a free port, no persistence) and copy
every key with DUMP/RESTORE (TTL kept) into the target, or count keys for verification.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeout

from ccc.common import BadRequest, Internal, Invalid, Unavailable
from ccc.common.natsserver import free_port

from ..models import Credential, DatabaseSize, Grant, Health, Performance, SlowQuery
from ..settings import settings
from ..tools import Process, binary
from .base import DumpPlan, Target, generate_password

KEYSPACE = re.compile(r"^db(\d+)$")


async def command(r: aioredis.Redis, *args: str | int) -> Any:
    """``execute_command`` with a type: redis-py leaves it untyped."""
    return await r.execute_command(*args)  # type: ignore[no-untyped-call]


def client(t: Target, db: int = 0) -> aioredis.Redis:
    return aioredis.Redis(
        host=t.host,
        port=t.port,
        username=t.user if t.user != "default" else None,
        password=t.password,
        db=db,
        socket_connect_timeout=settings.connect_timeout,
        socket_timeout=max(30.0, settings.connect_timeout),
    )


@contextlib.asynccontextmanager
async def connect(t: Target, db: int = 0) -> AsyncIterator[aioredis.Redis]:
    r = client(t, db)
    try:
        try:
            await r.ping()
        except (AuthenticationError, AuthenticationWrongNumberOfArgsError) as exc:
            raise BadRequest(f"server {t.server!r} refused the credentials: {exc}") from exc
        except ResponseError as exc:
            if "WRONGPASS" in str(exc) or "NOAUTH" in str(exc) or "NOPERM" in str(exc):
                raise BadRequest(f"server {t.server!r} refused the credentials: {exc}") from exc
            raise
        except (RedisConnectionError, RedisTimeout, OSError) as exc:
            raise Unavailable(
                f"server {t.server!r} ({t.host}:{t.port}) is unreachable: {exc}"
            ) from exc
        yield r
    finally:
        await r.aclose()


def _keyspace(info: dict[str, Any]) -> dict[str, int]:
    return {
        name: int(value["keys"])
        for name, value in info.items()
        if KEYSPACE.match(name) and isinstance(value, dict)
    }


class Redis:
    name = "redis"
    dump_format = "redis rdb"

    async def health(self, t: Target) -> Health:
        started = time.perf_counter()
        async with connect(t) as r:
            info = await r.info("server")
        return Health(
            ok=True,
            version=f"Redis {info.get('redis_version', '?')}",
            latency_ms=round((time.perf_counter() - started) * 1000, 2),
            checked_at=datetime.now(UTC),
        )

    def dsn(self, t: Target, db: str, user: str) -> str:
        return f"redis://{user}@{t.host}:{t.port}/0"

    # Redis has no databases to provision; ACL users are its unit of access.
    async def database_exists(self, t: Target, db: str) -> bool:
        raise Invalid("Redis servers have no named databases; create ACL users instead")

    async def create_database(
        self, t: Target, db: str, owner: str, grants: list[Grant]
    ) -> list[Credential]:
        raise Invalid("Redis servers have no named databases; create ACL users instead")

    async def drop_database(self, t: Target, db: str, users: list[str]) -> None:
        raise Invalid("Redis servers have no named databases")

    async def ensure_database(self, t: Target, db: str, owner: str | None) -> bool:
        raise Invalid("Redis servers have no named databases")

    async def user_exists(self, t: Target, name: str) -> bool:
        async with connect(t) as r:
            return await command(r, "ACL", "GETUSER", name) is not None

    async def create_user(
        self, t: Target, name: str, key_patterns: list[str], commands: list[str]
    ) -> str:
        password = generate_password()
        rules = ["reset", "on", f">{password}", *(f"~{p}" for p in key_patterns), *commands]
        async with connect(t) as r:
            try:
                await command(r, "ACL", "SETUSER", name, *rules)
            except ResponseError as exc:
                raise Invalid(f"Redis rejected the ACL rules: {exc}") from exc
            await _persist_acl(r)
        return password

    async def drop_stale_scratch(self, t: Target, older_than: float) -> list[str]:
        return []  # verification loads a private redis-server, never the managed one

    async def set_password(self, t: Target, user: str, password: str) -> None:
        async with connect(t) as r:
            await command(r, "ACL", "SETUSER", user, "resetpass", f">{password}")
            await _persist_acl(r)

    async def drop_user(self, t: Target, name: str) -> None:
        async with connect(t) as r:
            await command(r, "ACL", "DELUSER", name)
            await _persist_acl(r)

    async def row_counts(self, t: Target, db: str | None) -> dict[str, int]:
        async with connect(t) as r:
            return _keyspace(await r.info("keyspace"))

    @contextlib.asynccontextmanager
    async def dump(self, t: Target, db: str | None, workdir: Path) -> AsyncIterator[DumpPlan]:
        """``redis-cli --rdb -``: the server forks and streams a point-in-time RDB. With
        diskless sync (the default since Redis 7) the server first waits
        ``repl-diskless-sync-delay`` (5 s by default) for other replicas to join."""
        counts = await self.row_counts(t, None)
        argv = [binary("redis-cli"), "-h", t.host, "-p", str(t.port)]
        if t.user != "default":
            argv += ["--user", t.user]
        argv += ["--no-auth-warning", "--rdb", "-"]
        env = {"REDISCLI_AUTH": t.password} if t.password else {}
        yield DumpPlan(argv=argv, env=env, row_counts=counts, format=self.dump_format)

    async def restore(
        self, t: Target, db: str | None, path: Path, workdir: Path, owner: str | None, replace: bool
    ) -> None:
        async with _loaded(path, workdir) as source, connect(t) as target:
            info = _keyspace(await source.info("keyspace"))
            for name in info:
                index = int(name[2:])
                await command(source, "SELECT", index)
                await command(target, "SELECT", index)
                async for key in source.scan_iter(count=500):
                    data = await source.dump(key)
                    ttl = await source.pttl(key)
                    if data is None:
                        continue
                    try:
                        await target.restore(key, max(ttl, 0), data, replace=replace)
                    except ResponseError as exc:
                        if "BUSYKEY" in str(exc):
                            raise BadRequest(
                                f"key {key!r} exists on {t.server!r}; restore with replace=true"
                            ) from exc
                        raise

    @contextlib.asynccontextmanager
    async def scratch(self, t: Target, path: Path, workdir: Path) -> AsyncIterator[dict[str, int]]:
        async with _loaded(path, workdir) as source:
            yield _keyspace(await source.info("keyspace"))

    async def performance(self, t: Target) -> Performance:
        async with connect(t) as r:
            info = await r.info()
            slow = await r.slowlog_get(10)
            maxclients = await r.config_get("maxclients")
        hits, misses = int(info.get("keyspace_hits", 0)), int(info.get("keyspace_misses", 0))
        return Performance(
            server=t.server,
            engine="redis",
            connections=int(info.get("connected_clients", 0)),
            max_connections=int(maxclients.get("maxclients") or 0) or None,
            cache_hit_ratio=round(hits / (hits + misses), 6) if hits + misses else None,
            sizes=[DatabaseSize(name="memory", size_bytes=int(info.get("used_memory", 0)))],
            slow_queries=[
                SlowQuery(
                    query=" ".join(
                        a.decode(errors="replace") if isinstance(a, bytes) else str(a)
                        for a in (s.get("command") or b"",)
                    )[:1000],
                    calls=1,
                    mean_ms=s["duration"] / 1000,
                    total_ms=s["duration"] / 1000,
                )
                for s in slow
            ],
            slow_queries_source="SLOWLOG",
            locks=[],
            extra={
                "keys": sum(_keyspace(info).values()),
                "evicted_keys": int(info.get("evicted_keys", 0)),
                "blocked_clients": int(info.get("blocked_clients", 0)),
            },
            collected_at=datetime.now(UTC),
        )


async def _persist_acl(r: aioredis.Redis) -> None:
    """Write the ACL file when the server has one; otherwise users live until restart."""
    with contextlib.suppress(ResponseError):
        await command(r, "ACL", "SAVE")


@contextlib.asynccontextmanager
async def _loaded(path: Path, workdir: Path) -> AsyncIterator[aioredis.Redis]:
    """A private redis-server on loopback serving the RDB file, stopped afterwards."""
    port = free_port()
    rdb_dir = workdir / f"redis-{port}"
    log_file = rdb_dir / "redis.log"
    await asyncio.to_thread(rdb_dir.mkdir)
    source = await asyncio.to_thread(path.resolve)
    await asyncio.to_thread((rdb_dir / "dump.rdb").symlink_to, source)
    argv = [binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
            "--dir", str(rdb_dir), "--dbfilename", "dump.rdb", "--save", "",
            "--appendonly", "no", "--logfile", str(log_file)]  # fmt: skip
    proc = Process(argv, {}, workdir=rdb_dir)
    r = aioredis.Redis(host="127.0.0.1", port=port)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.proc.poll() is not None:
                out = log_file.read_text(errors="replace")[-1500:] if log_file.exists() else ""
                raise Internal(f"redis-server could not load the RDB file: {out}")
            try:
                if (await r.info("persistence")).get("loading") == 0:
                    break
            except (RedisConnectionError, ResponseError):
                pass
            if time.monotonic() > deadline:
                raise Internal("redis-server did not finish loading the RDB within 60 s")
            await asyncio.sleep(0.05)
        yield r
    finally:
        await r.aclose()
        proc.close()
