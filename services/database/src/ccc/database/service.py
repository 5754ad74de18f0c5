"""The ``database`` service: registry, provisioning, backups, schedules, performance, HA.

Endpoints are thin: each checks the registry, calls the engine module, records the
outcome in KV and emits an event. Engines live in ``engines/``, backup mechanics in
``backups.py``, the scheduler in ``schedules.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from ccc.common import CCCError, Conflict, Context, Invalid, NotFound, Service

from . import backups, ha, metrics, schedules
from .engines import ENGINES
from .engines.base import generate_password
from .engines.redis import Redis
from .models import (
    DEFAULT_PORTS,
    BackupList,
    BackupQuery,
    BackupRef,
    BackupView,
    CreateBackup,
    CreateDatabase,
    CreateRedisUser,
    CreateSchedule,
    Credential,
    DatabaseList,
    DatabaseRef,
    DatabaseView,
    Deleted,
    Empty,
    Health,
    ListByServer,
    MetricsText,
    PasswordReset,
    Performance,
    PruneRequest,
    PruneResult,
    RedisUserRef,
    RedisUserView,
    RegisterServer,
    RestoreBackup,
    RestoreResult,
    ScheduleList,
    ScheduleRef,
    ScheduleView,
    ServerList,
    ServerRef,
    ServerView,
    VerifyResult,
)
from .registry import load_server, resolve, runtime, server_key, target_of, view_of
from .settings import settings

log = logging.getLogger(__name__)

service = Service(
    "database",
    description="PostgreSQL, MariaDB and Redis: registry, provisioning, verified backups, "
    "schedules, performance and HA manifests",
)
_background: list[asyncio.Task[None]] = []
ADMIN_USERS = {"postgres": "postgres", "mariadb": "root", "redis": "default"}


# -- servers ----------------------------------------------------------------------------


@service.endpoint("server.register", http="POST /v1/database/servers", roles=("operator",))
async def register_server(req: RegisterServer, ctx: Context) -> ServerView:
    """Register a server after checking that it answers with the given admin credentials.
    Registering the same spec again is a no-op; a different spec under the name is 409."""
    port = req.port or DEFAULT_PORTS[req.engine]
    user = req.admin_user or ADMIN_USERS[req.engine]
    password = req.admin_password.get_secret_value() if req.admin_password else None
    existing = await ctx.state.get(server_key(req.name))
    if existing is not None:
        same = (existing["engine"], existing["host"], existing["port"], existing["admin_user"]) == (
            req.engine,
            req.host,
            port,
            user,
        ) and target_of(existing).password == password
        if not same:
            raise Conflict(f"server {req.name!r} is registered with another spec; delete it first")
        return view_of(existing)
    record: dict[str, Any] = {
        "name": req.name,
        "engine": req.engine,
        "host": req.host,
        "port": port,
        "admin_user": user,
        "admin_password": runtime.vault.seal(password) if password else None,
        "created_at": runtime.now().isoformat(),
    }
    health = await ENGINES[req.engine].health(target_of(record))
    record["health"] = health.model_dump(mode="json")
    await ctx.state.create(server_key(req.name), record)
    await ctx.emit("server.registered", view_of(record))
    return view_of(record)


@service.endpoint("server.list", http="GET /v1/database/servers", roles=("reader",))
async def list_servers(req: Empty, ctx: Context) -> ServerList:
    """Registered servers with their last known health (no credentials)."""
    return ServerList(servers=[view_of(e.value) async for e in ctx.state.items("server.")])


@service.endpoint("server.get", http="GET /v1/database/servers/{name}", roles=("reader",))
async def get_server(req: ServerRef, ctx: Context) -> ServerView:
    """A server with its health checked now: an unreachable server reports ok=false."""
    record, target, engine = await resolve(ctx.state, req.name)
    try:
        health = await engine.health(target)
    except CCCError as exc:
        health = Health(ok=False, error=exc.detail, checked_at=runtime.now())
    entry = await ctx.state.entry(server_key(req.name))
    if entry is not None:  # record the health unless the server changed meanwhile
        with contextlib.suppress(Conflict):
            await ctx.state.update(
                entry.key, {**entry.value, "health": health.model_dump(mode="json")}, entry.revision
            )
    return view_of({**record, "health": health.model_dump(mode="json")})


@service.endpoint("server.delete", http="DELETE /v1/database/servers/{name}", roles=("admin",))
async def delete_server(req: ServerRef, ctx: Context) -> Deleted:
    """Forget a server that has no managed databases or Redis users left (its backups
    stay, restorable once it is registered again)."""
    await load_server(ctx.state, req.name)
    managed = [
        *await ctx.state.keys(f"database.{req.name}."),
        *await ctx.state.keys(f"redisuser.{req.name}."),
    ]
    if managed:
        raise Conflict(
            f"server {req.name!r} still has {len(managed)} managed databases or users: "
            "drop them first"
        )
    await ctx.state.delete(server_key(req.name))
    await ctx.emit("server.deleted", {"name": req.name})
    return Deleted(deleted=req.name)


# -- provisioning ----------------------------------------------------------------------------


def _database_key(server: str, name: str) -> str:
    return f"database.{server}.{name}"


@service.endpoint(
    "database.create", http="POST /v1/database/servers/{server}/databases", roles=("operator",)
)
async def create_database(req: CreateDatabase, ctx: Context) -> DatabaseView:
    """Create a database, its owner and granted users with generated passwords (shown
    once here, stored encrypted). The same spec again is a no-op; another spec is 409."""
    server, target, engine = await resolve(ctx.state, req.server)
    if isinstance(engine, Redis):
        raise Invalid("Redis servers have no named databases; POST .../users for ACL users")
    owner = req.owner or req.name
    grants = [g.model_dump() for g in req.grants]
    if len({owner, *(g.user for g in req.grants)}) != 1 + len(req.grants):
        raise Invalid("owner and granted users must all be different names")
    key = _database_key(req.server, req.name)
    existing = await ctx.state.get(key)
    if existing is not None:
        if existing["owner"] != owner or existing["grants"] != grants:
            raise Conflict(
                f"database {req.name!r} on {req.server!r} exists with another owner or grants"
            )
        return _view(existing, server, created=False, creds=[])
    creds = await engine.create_database(target, req.name, owner, req.grants)
    record = {
        "server": req.server,
        "engine": server["engine"],
        "name": req.name,
        "owner": owner,
        "grants": grants,
        "passwords": {c.user: runtime.vault.seal(c.password or "") for c in creds},
        "access": {c.user: c.access for c in creds},
        "created_at": runtime.now().isoformat(),
    }
    try:
        await ctx.state.create(key, record)
    except Conflict:
        await engine.drop_database(target, req.name, [c.user for c in creds])
        raise
    view = _view(record, server, created=True, creds=creds)
    await ctx.emit("database.created", view.model_copy(update={"credentials": []}))
    return view


def _view(
    record: dict[str, Any], server: dict[str, Any], *, created: bool, creds: list[Credential]
) -> DatabaseView:
    engine = ENGINES[server["engine"]]
    return DatabaseView(
        server=record["server"],
        name=record["name"],
        owner=record["owner"],
        grants=record["grants"],
        created=created,
        credentials=creds
        or [Credential(user=u, access=a) for u, a in record.get("access", {}).items()],
        dsn=engine.dsn(target_of(server), record["name"], record["owner"]),
    )


@service.endpoint(
    "database.list", http="GET /v1/database/servers/{server}/databases", roles=("reader",)
)
async def list_databases(req: ListByServer, ctx: Context) -> DatabaseList:
    """Databases this service provisioned on a server (passwords are never shown again)."""
    server = await load_server(ctx.state, req.server)
    return DatabaseList(
        databases=[
            _view(e.value, server, created=False, creds=[])
            async for e in ctx.state.items(f"database.{req.server}.")
        ]
    )


@service.endpoint(
    "database.drop",
    http="DELETE /v1/database/servers/{server}/databases/{name}",
    roles=("admin",),
)
async def drop_database(req: DatabaseRef, ctx: Context) -> Deleted:
    """Drop a provisioned database with its owner and granted users. Backups stay."""
    _, target, engine = await resolve(ctx.state, req.server)
    key = _database_key(req.server, req.name)
    record = await ctx.state.get(key)
    if record is None:
        raise NotFound(f"database {req.name!r} on {req.server!r} is not managed by this service")
    await engine.drop_database(target, req.name, list(record.get("access", {})))
    await ctx.state.delete(key)
    await ctx.emit("database.dropped", {"server": req.server, "name": req.name})
    return Deleted(deleted=f"{req.server}/{req.name}")


@service.endpoint(
    "password.reset",
    http="POST /v1/database/servers/{server}/databases/{name}/password",
    roles=("admin",),
)
async def reset_password(req: PasswordReset, ctx: Context) -> Credential:
    """Give a managed user (database owner or grantee, or a Redis ACL user) a new generated
    password, shown once: the way back when the first one was lost."""
    _, target, engine = await resolve(ctx.state, req.server)
    if isinstance(engine, Redis):
        key, user = f"redisuser.{req.server}.{req.name}", req.name
    else:
        key, user = _database_key(req.server, req.name), req.user or ""
    entry = await ctx.state.entry(key)
    if entry is None:
        raise NotFound(f"{req.name!r} on {req.server!r} is not managed by this service")
    record = dict(entry.value)
    user = user or record.get("owner", "")
    access = "redis" if isinstance(engine, Redis) else record.get("access", {}).get(user)
    if access is None:
        raise NotFound(f"user {user!r} is not a managed user of {req.name!r}")
    password = generate_password()
    await engine.set_password(target, user, password)
    if isinstance(engine, Redis):
        record["password"] = runtime.vault.seal(password)
    else:
        record["passwords"] = {**record.get("passwords", {}), user: runtime.vault.seal(password)}
    await ctx.state.put(key, record)
    await ctx.emit("password.reset", {"server": req.server, "name": req.name, "user": user})
    return Credential(user=user, password=password, access=access)


@service.endpoint(
    "redis_user.create", http="POST /v1/database/servers/{server}/users", roles=("operator",)
)
async def create_redis_user(req: CreateRedisUser, ctx: Context) -> RedisUserView:
    """A Redis ACL user limited to key patterns and command rules; password shown once."""
    _, target, engine = await resolve(ctx.state, req.server)
    if not isinstance(engine, Redis):
        raise Invalid(f"ACL users are for Redis servers; {req.server!r} is {engine.name}")
    key = f"redisuser.{req.server}.{req.name}"
    spec = {"key_patterns": req.key_patterns, "commands": req.commands}
    existing = await ctx.state.get(key)
    if existing is not None:
        if {k: existing[k] for k in spec} != spec:
            raise Conflict(f"Redis user {req.name!r} exists with other rules")
        return RedisUserView(server=req.server, name=req.name, created=False, **spec)
    if await engine.user_exists(target, req.name):
        raise Conflict(f"Redis user {req.name!r} exists on {req.server!r} (not managed here)")
    password = await engine.create_user(target, req.name, req.key_patterns, req.commands)
    await ctx.state.create(
        key,
        {
            "server": req.server,
            "name": req.name,
            **spec,
            "password": runtime.vault.seal(password),
            "created_at": runtime.now().isoformat(),
        },
    )
    await ctx.emit("redis_user.created", {"server": req.server, "name": req.name, **spec})
    return RedisUserView(server=req.server, name=req.name, created=True, password=password, **spec)


@service.endpoint(
    "redis_user.delete",
    http="DELETE /v1/database/servers/{server}/users/{name}",
    roles=("admin",),
)
async def delete_redis_user(req: RedisUserRef, ctx: Context) -> Deleted:
    """Delete a managed Redis ACL user."""
    _, target, engine = await resolve(ctx.state, req.server)
    key = f"redisuser.{req.server}.{req.name}"
    if await ctx.state.get(key) is None or not isinstance(engine, Redis):
        raise NotFound(f"Redis user {req.name!r} on {req.server!r} is not managed here")
    await engine.drop_user(target, req.name)
    await ctx.state.delete(key)
    return Deleted(deleted=f"{req.server}/{req.name}")


# -- backups ---------------------------------------------------------------------------------


@service.endpoint(
    "backup.create", http="POST /v1/database/backups", roles=("operator",), operation=True
)
async def create_backup(req: CreateBackup, ctx: Context) -> BackupView:
    """Back up a database (pg_dump custom format, mariadb-dump) or a Redis server (RDB)
    into the object store, with SHA-256, size, duration and per-table row counts."""
    backup = await backups.create_backup(req, ctx)
    metrics.record_backup(backup)
    if req.schedule:
        schedule = await ctx.state.get_model(schedules.schedule_key(req.schedule), ScheduleView)
        if schedule is not None:
            pruned = await backups.apply_retention(
                ctx.state, await ctx.blobs(), backup.server, backup.database, schedule.retention
            )
            if pruned.deleted:
                await ctx.emit("backup.pruned", pruned)
    return backup


@service.endpoint("backup.list", http="GET /v1/database/backups", roles=("reader",))
async def list_backups(req: BackupQuery, ctx: Context) -> BackupList:
    """Backups, newest first, optionally of one server and database."""
    found = await backups.list_backups(ctx.state, req.server, req.database)
    return BackupList(backups=found[: req.limit])


@service.endpoint("backup.get", http="GET /v1/database/backups/{id}", roles=("reader",))
async def get_backup(req: BackupRef, ctx: Context) -> BackupView:
    """One backup record."""
    return await backups.load_backup(ctx.state, req.id)


@service.endpoint("backup.delete", http="DELETE /v1/database/backups/{id}", roles=("admin",))
async def delete_backup(req: BackupRef, ctx: Context) -> Deleted:
    """Delete a backup's object and record."""
    backup = await backups.load_backup(ctx.state, req.id)
    await backups.delete_backup(ctx.state, await ctx.blobs(), backup)
    return Deleted(deleted=req.id)


@service.endpoint(
    "backup.restore",
    http="POST /v1/database/backups/{id}/restore",
    roles=("operator",),
    operation=True,
)
async def restore_backup(req: RestoreBackup, ctx: Context) -> RestoreResult:
    """Restore into the backup's database or a new one (created when absent). An existing
    database is only overwritten with replace=true; a corrupt backup is never applied."""
    return await backups.restore_backup(req, ctx)


@service.endpoint(
    "backup.verify",
    http="POST /v1/database/backups/{id}/verify",
    roles=("operator",),
    operation=True,
)
async def verify_backup(req: BackupRef, ctx: Context) -> VerifyResult:
    """Check the SHA-256, restore into a scratch database, compare row counts per table."""
    result = await backups.verify_backup(req.id, ctx)
    entry = await ctx.state.entry(backups.backup_key(req.id))
    if entry is not None:
        with contextlib.suppress(Conflict):
            await ctx.state.update(
                entry.key,
                {**entry.value, "verified_at": runtime.now().isoformat(), "verified_ok": result.ok},
                entry.revision,
            )
    return result


@service.endpoint("backup.prune", http="POST /v1/database/retention", roles=("admin",))
async def prune_backups(req: PruneRequest, ctx: Context) -> PruneResult:
    """Apply a retention rule (keep N newest and/or those younger than N days) now."""
    if req.retention.keep_last is None and req.retention.keep_days is None:
        raise Invalid("retention needs keep_last or keep_days")
    result = await backups.apply_retention(
        ctx.state, await ctx.blobs(), req.server, req.database, req.retention
    )
    await ctx.emit("backup.pruned", result)
    return result


# -- schedules -------------------------------------------------------------------------------


@service.endpoint("schedule.create", http="POST /v1/database/schedules", roles=("operator",))
async def create_schedule(req: CreateSchedule, ctx: Context) -> ScheduleView:
    """A cron schedule (UTC) of backups with its retention. Same spec again is a no-op."""
    server = await load_server(ctx.state, req.server)
    if (server["engine"] == "redis") != (req.database is None):
        raise Invalid("give 'database' for PostgreSQL/MariaDB and leave it out for Redis")
    schedule = schedules.new_schedule(req)
    existing = await ctx.state.get_model(schedules.schedule_key(req.name), ScheduleView)
    if existing is not None:
        fields = ("server", "database", "cron", "retention")
        if any(getattr(existing, f) != getattr(schedule, f) for f in fields):
            raise Conflict(f"schedule {req.name!r} exists with another spec")
        return existing
    await ctx.state.create(schedules.schedule_key(req.name), schedule)
    await ctx.emit("schedule.created", schedule)
    return schedule


@service.endpoint("schedule.list", http="GET /v1/database/schedules", roles=("reader",))
async def list_schedules(req: Empty, ctx: Context) -> ScheduleList:
    """Schedules with their next and last run."""
    return ScheduleList(
        schedules=[ScheduleView.model_validate(e.value) async for e in ctx.state.items("schedule.")]
    )


@service.endpoint(
    "schedule.delete", http="DELETE /v1/database/schedules/{name}", roles=("operator",)
)
async def delete_schedule(req: ScheduleRef, ctx: Context) -> Deleted:
    """Stop a schedule (its backups stay)."""
    if await ctx.state.get(schedules.schedule_key(req.name)) is None:
        raise NotFound(f"schedule {req.name!r} does not exist")
    await ctx.state.delete(schedules.schedule_key(req.name))
    return Deleted(deleted=req.name)


# -- performance -------------------------------------------------------------------------------


@service.endpoint(
    "performance", http="GET /v1/database/servers/{name}/performance", roles=("reader",)
)
async def performance(req: ServerRef, ctx: Context) -> Performance:
    """Connections, sizes, cache hit ratio, slowest queries (pg_stat_statements or
    performance_schema when enabled, SLOWLOG for Redis) and lock waits, now."""
    record, target, engine = await resolve(ctx.state, req.name)
    try:
        perf = await engine.performance(target)
    except CCCError:
        metrics.record_down(record["name"], record["engine"])
        raise
    metrics.record(perf)
    return perf


@service.endpoint("metrics", http="GET /v1/database/metrics", roles=("reader",))
async def prometheus_metrics(req: Empty, ctx: Context) -> MetricsText:
    """The ccc_database_* gauges in Prometheus text format (also on the process /metrics)."""
    return MetricsText(content_type="text/plain; version=0.0.4", text=metrics.exposition())


async def collect_all(svc: Service) -> None:
    async for entry in svc.state.items("server."):
        record = entry.value
        try:
            metrics.record(await ENGINES[record["engine"]].performance(target_of(record)))
        except CCCError:
            metrics.record_down(record["name"], record["engine"])


# -- HA manifests -------------------------------------------------------------------------------


@service.endpoint("ha.cloudnativepg", http="POST /v1/database/ha/cloudnativepg", roles=("reader",))
async def cloudnativepg(req: ha.CnpgRequest, ctx: Context) -> ha.Manifests:
    """CloudNativePG Cluster (+ object-store backups, + PgBouncer Pooler) manifests,
    validated against the CRD schemas."""
    return ha.cloudnativepg(req)


@service.endpoint("ha.patroni", http="POST /v1/database/ha/patroni", roles=("reader",))
async def patroni(req: ha.PatroniRequest, ctx: Context) -> ha.Manifests:
    """Patroni configuration for each VM of a cluster, validated by Patroni's validator."""
    return ha.patroni(req)


# -- background work ------------------------------------------------------------------------------


async def _every(interval: float, job: Any, name: str) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed", name)


@service.on_startup
async def _start(svc: Service) -> None:
    runtime.vault  # noqa: B018  - fail at start, not at the first request, on a bad key
    if settings.schedule_interval > 0:
        _background.append(
            asyncio.create_task(
                schedules.run_forever(svc.state, svc.bus, settings.schedule_interval)
            )
        )

    async def reap() -> None:
        await backups.reap_interrupted(svc.state, await svc.blobs())
        await backups.drop_stale_scratch(svc.state)

    _background.append(
        asyncio.create_task(_every(max(svc.settings.operation_lease, 5.0), reap, "reaper"))
    )
    if settings.metrics_interval > 0:
        _background.append(
            asyncio.create_task(
                _every(settings.metrics_interval, lambda: collect_all(svc), "metrics")
            )
        )


@service.on_shutdown
async def _stop(svc: Service) -> None:
    for task in _background:
        task.cancel()
    for task in _background:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    _background.clear()
