"""Backups: dump straight into the object store, restore, verify, retention.

A dump is piped from the client binary into the JetStream object store while it is
hashed; nothing touches local disk on the way in. When the binary fails, the upload
fails or the operation is cancelled, the object is deleted, so no partial backup is
ever listed or restorable. Restore and verify download to a private temporary
directory first and check the SHA-256 before anything is applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from ccc.common import CCCError, Conflict, Context, Invalid, NotFound
from ccc.common.state import Blobs, StateStore

from . import stores
from .engines import Engine, Target
from .models import (
    BackupView,
    CreateBackup,
    PruneResult,
    RestoreBackup,
    RestoreResult,
    Retention,
    TableCheck,
    VerifyResult,
)
from .registry import resolve, runtime
from .settings import settings
from .stores import Store
from .tools import HashingReader, HashingWriter, Process, ToolFailed, tool_error

Downloaded = tuple[Path, str, int]


def backup_key(backup_id: str) -> str:
    return f"backup.{backup_id}"


@contextlib.contextmanager
def workdir() -> Any:
    scratch = settings.scratch_dir
    if scratch is not None:
        Path(scratch).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ccc-db-", dir=scratch) as tmp:
        yield Path(tmp)


async def load_backup(state: StateStore, backup_id: str) -> BackupView:
    backup = await state.get_model(backup_key(backup_id), BackupView)
    if backup is None:
        raise NotFound(f"backup {backup_id!r} does not exist")
    return backup


async def list_backups(
    state: StateStore, server: str | None = None, database: str | None = None
) -> list[BackupView]:
    out = []
    async for entry in state.items("backup."):
        b = BackupView.model_validate(entry.value)
        if server is not None and b.server != server:
            continue
        if database is not None and b.database != database:
            continue
        out.append(b)
    out.sort(key=lambda b: b.started_at, reverse=True)
    return out


async def create_backup(req: CreateBackup, ctx: Context) -> BackupView:
    _, target, engine = await resolve(ctx.state, req.server)
    database = _database_for(engine, req.database)
    if database is not None and not await engine.database_exists(target, database):
        raise NotFound(f"database {database!r} does not exist on {req.server!r}")
    backup_id = uuid.uuid4().hex
    _, location = stores.for_new_backup(await ctx.blobs())
    backup = BackupView(
        id=backup_id,
        server=req.server,
        engine=engine.name,
        database=database,
        status="running",
        format=engine.dump_format,
        object=f"backups/{req.server}/{database or '_all'}/{backup_id}",
        started_at=runtime.now(),
        schedule=req.schedule,
        operation=ctx.operation_id,
        location=location,
    )
    await ctx.state.put(backup_key(backup_id), backup)
    started = time.perf_counter()
    store = stores.for_record(await ctx.blobs(), backup.location)
    try:
        sha, size, counts = await _dump_into(store, backup.object, engine, target, database, ctx)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            await store.delete(backup.object)
        failed = backup.model_copy(
            update={
                "status": "failed",
                "finished_at": runtime.now(),
                "duration_s": round(time.perf_counter() - started, 3),
                "error": _describe(exc),
            }
        )
        with contextlib.suppress(Exception):
            await ctx.state.put(backup_key(backup_id), failed)
            await ctx.emit("backup.failed", failed)
        raise
    done = backup.model_copy(
        update={
            "status": "succeeded",
            "sha256": sha,
            "size_bytes": size,
            "row_counts": counts,
            "finished_at": runtime.now(),
            "duration_s": round(time.perf_counter() - started, 3),
        }
    )
    await ctx.state.put(backup_key(backup_id), done)
    await ctx.emit("backup.succeeded", done)
    return done


def _describe(exc: BaseException) -> str:
    if isinstance(exc, CCCError):
        return exc.detail
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return f"{type(exc).__name__}: {exc}"


def _database_for(engine: Engine, database: str | None) -> str | None:
    if engine.name == "redis":
        if database is not None:
            raise Invalid("a Redis backup covers the whole server; leave 'database' out")
        return None
    if database is None:
        raise Invalid(f"'database' is required to back up a {engine.name} server")
    return database


async def _dump_into(
    store: Store, name: str, engine: Engine, target: Target, database: str | None, ctx: Context
) -> tuple[str, int, dict[str, int]]:
    with workdir() as tmp:
        async with engine.dump(target, database, tmp) as plan:
            await ctx.progress(0.05, f"running {Path(plan.argv[0]).name}")
            proc = Process(plan.argv, plan.env, stdout=subprocess.PIPE, workdir=tmp)
            assert proc.proc.stdout is not None
            reader = HashingReader(proc.proc.stdout)
            reporter = asyncio.create_task(_report(ctx, reader))
            try:
                await store.put(name, reader)
                rc = await proc.wait()
                stderr = proc.stderr()
            finally:
                reporter.cancel()
                proc.close()
            if rc != 0:
                raise tool_error(target.server, ToolFailed(proc.name, rc, stderr))
            if reader.size == 0:
                raise tool_error(target.server, ToolFailed(proc.name, rc, stderr or "empty output"))
            return reader.sha256.hexdigest(), reader.size, plan.row_counts


async def _report(ctx: Context, reader: HashingReader) -> None:
    """Bytes so far as progress; a failed progress write never fails the backup."""
    while True:
        await asyncio.sleep(1.0)
        with contextlib.suppress(Exception):
            await ctx.progress(0.5, f"{reader.size / 1e6:.1f} MB dumped")


@contextlib.asynccontextmanager
async def downloaded(store: Store, backup: BackupView, tmp: Path) -> AsyncIterator[Downloaded]:
    """The backup's object in a private file, with the SHA-256 and size actually read."""
    path = tmp / "backup.bin"
    f = await asyncio.to_thread(path.open, "wb")
    try:
        writer = HashingWriter(f)
        await store.get_into(backup.object, writer)
    finally:
        f.close()
    yield path, writer.sha256.hexdigest(), writer.size


async def restore_backup(req: RestoreBackup, ctx: Context) -> RestoreResult:
    backup = await load_backup(ctx.state, req.id)
    if backup.status != "succeeded":
        raise Conflict(f"backup {backup.id} is {backup.status}; only a succeeded backup restores")
    _, target, engine = await resolve(ctx.state, backup.server)
    database = None if engine.name == "redis" else (req.target_database or backup.database)
    managed = await ctx.state.get(f"database.{backup.server}.{database}") if database else None
    owner = managed["owner"] if managed else None
    started = time.perf_counter()
    blobs = await ctx.blobs()
    with workdir() as tmp:
        await ctx.progress(0.1, "downloading")
        async with downloaded(stores.for_record(blobs, backup.location), backup, tmp) as (
            path,
            sha,
            size,
        ):
            if sha != backup.sha256 or size != backup.size_bytes:
                raise Conflict(
                    f"backup {backup.id} is corrupt: SHA-256 {sha} ({size} bytes) does not match "
                    f"the recorded {backup.sha256} ({backup.size_bytes} bytes); nothing restored"
                )
            created = False
            if database is not None:
                created = await engine.ensure_database(target, database, owner)
                if not created and not req.replace:
                    raise Conflict(
                        f"database {database!r} exists on {backup.server!r}; restore into a new "
                        f"database or pass replace=true"
                    )
            await ctx.progress(0.3, f"restoring into {database or backup.server}")
            try:
                await engine.restore(target, database, path, tmp, owner, req.replace)
            except BaseException:
                if created and database is not None:
                    with contextlib.suppress(Exception):
                        await engine.drop_database(target, database, [])
                raise
    counts = await engine.row_counts(target, database)
    result = RestoreResult(
        backup=backup.id,
        server=backup.server,
        database=database,
        created_database=created,
        bytes=size,
        duration_s=round(time.perf_counter() - started, 3),
        row_counts=counts,
    )
    await ctx.emit("backup.restored", result)
    return result


async def verify_backup(backup_id: str, ctx: Context) -> VerifyResult:
    """Restore into a scratch database (or a private redis-server) and compare the row
    counts per table with those recorded when the backup was taken."""
    backup = await load_backup(ctx.state, backup_id)
    if backup.status != "succeeded":
        raise Conflict(f"backup {backup.id} is {backup.status}; nothing to verify")
    _, target, engine = await resolve(ctx.state, backup.server)
    started = time.perf_counter()
    blobs = await ctx.blobs()
    restored_counts: dict[str, int] | None = None
    error: str | None = None
    mismatches: list[str] = []
    with workdir() as tmp:
        async with downloaded(stores.for_record(blobs, backup.location), backup, tmp) as (
            path,
            sha,
            size,
        ):
            checksum_ok = sha == backup.sha256 and size == backup.size_bytes
            if not checksum_ok:
                mismatches.append(
                    f"checksum: recorded {backup.sha256} ({backup.size_bytes} bytes), "
                    f"stored object has {sha} ({size} bytes)"
                )
            else:
                await ctx.progress(0.3, "restoring into a scratch database")
                try:
                    async with engine.scratch(target, path, tmp) as counts:
                        restored_counts = counts
                except CCCError as exc:
                    error = exc.detail
                    mismatches.append(f"restore failed: {exc.detail}")
    tables: list[TableCheck] = []
    if restored_counts is not None:
        for table in sorted(set(backup.row_counts) | set(restored_counts)):
            expected, got = backup.row_counts.get(table), restored_counts.get(table)
            tables.append(TableCheck(table=table, expected=expected, restored=got))
            if expected != got:
                mismatches.append(f"{table}: expected {expected} rows, restored {got}")
    result = VerifyResult(
        backup=backup.id,
        ok=not mismatches,
        checksum_ok=checksum_ok,
        restored=restored_counts is not None,
        tables=tables,
        mismatches=mismatches,
        error=error,
        duration_s=round(time.perf_counter() - started, 3),
    )
    await ctx.emit("backup.verified", result)
    return result


async def delete_backup(state: StateStore, blobs: Blobs, backup: BackupView) -> None:
    await stores.for_record(blobs, backup.location).delete(backup.object)
    await state.delete(backup_key(backup.id))


async def reap_interrupted(state: StateStore, blobs: Blobs) -> list[str]:
    """Backups left ``running`` by an instance that died: once their operation is no
    longer running (the runtime fails it when the lease runs out), delete whatever
    object exists and record the backup as failed."""
    reaped = []
    async for entry in state.items("backup."):
        backup = BackupView.model_validate(entry.value)
        if backup.status != "running":
            continue
        op = await state.get(f"operation.{backup.operation}") if backup.operation else None
        if op is not None and op.get("status") in ("running", "pending"):
            continue
        await stores.for_record(blobs, backup.location).delete(backup.object)
        failed = backup.model_copy(
            update={
                "status": "failed",
                "finished_at": runtime.now(),
                "error": "interrupted: the instance running it stopped; partial object removed",
            }
        )
        with contextlib.suppress(Conflict):
            await state.update(entry.key, failed.model_dump(mode="json"), entry.revision)
            reaped.append(backup.id)
    return reaped


SCRATCH_MAX_AGE = 6 * 3600.0


async def drop_stale_scratch(state: StateStore) -> list[str]:
    """Scratch databases older than any verification could run, on every server."""
    from .engines import ENGINES
    from .registry import target_of

    dropped = []
    async for entry in state.items("server."):
        engine = ENGINES[entry.value["engine"]]
        with contextlib.suppress(CCCError):
            dropped += await engine.drop_stale_scratch(target_of(entry.value), SCRATCH_MAX_AGE)
    return dropped


async def apply_retention(
    state: StateStore, blobs: Blobs, server: str, database: str | None, retention: Retention
) -> PruneResult:
    """Keep the newest ``keep_last`` and those younger than ``keep_days``; the newest
    succeeded backup is always kept. Failed attempts have no object and stay as history."""
    backups = [
        b
        for b in await list_backups(state, server)
        if b.database == database and b.status == "succeeded"
    ]
    now = runtime.now()
    deleted, kept = [], []
    for i, b in enumerate(backups):
        too_many = retention.keep_last is not None and i >= retention.keep_last
        too_old = retention.keep_days is not None and b.started_at < now - timedelta(
            days=retention.keep_days
        )
        if i > 0 and (too_many or too_old):
            await delete_backup(state, blobs, b)
            deleted.append(b.id)
        else:
            kept.append(b.id)
    return PruneResult(deleted=deleted, kept=kept)
