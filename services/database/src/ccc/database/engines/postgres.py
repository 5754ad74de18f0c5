"""PostgreSQL: asyncpg for SQL, pg_dump/pg_restore (custom format) for backups."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from ccc.common import BadRequest, Conflict, Internal, Invalid, NotFound, Unavailable

from ..models import Credential, DatabaseSize, Grant, Health, LockWait, Performance, SlowQuery
from ..settings import settings
from ..tools import ToolFailed, pg_binary, run
from .base import DumpPlan, Target, generate_password, scratch_name, stale_scratch


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _env(t: Target) -> dict[str, str]:
    env = {"PGCONNECT_TIMEOUT": str(max(1, int(settings.connect_timeout)))}
    if t.password:
        env["PGPASSWORD"] = t.password
    return env


def _conn_args(t: Target, db: str) -> list[str]:
    return ["-h", t.host, "-p", str(t.port), "-U", t.user, "-d", db, "--no-password"]


@contextlib.asynccontextmanager
async def connect(t: Target, database: str = "postgres") -> AsyncIterator[asyncpg.Connection]:
    try:
        conn = await asyncpg.connect(
            host=t.host,
            port=t.port,
            user=t.user,
            password=t.password,
            database=database,
            timeout=settings.connect_timeout,
        )
    except (
        asyncpg.InvalidPasswordError,
        asyncpg.InvalidAuthorizationSpecificationError,
    ) as exc:
        raise BadRequest(f"server {t.server!r} refused the credentials: {exc}") from exc
    except asyncpg.InvalidCatalogNameError as exc:
        raise NotFound(f"database {database!r} does not exist on {t.server!r}") from exc
    except (OSError, TimeoutError, asyncpg.CannotConnectNowError) as exc:
        raise Unavailable(
            f"server {t.server!r} ({t.host}:{t.port}) is unreachable: {exc or type(exc).__name__}"
        ) from exc
    try:
        yield conn
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(), 5)


def _tool_error(t: Target, exc: ToolFailed) -> Exception:
    text = exc.stderr
    if "Connection refused" in text or "could not connect" in text or "timeout expired" in text:
        return Unavailable(f"{exc.name} could not reach {t.server!r}: {text}")
    if "authentication failed" in text or ("does not exist" in text and "role" in text):
        return BadRequest(f"{exc.name} was refused by {t.server!r}: {text}")
    return Internal(f"{exc.name} failed (exit {exc.rc}): {text}")


class Postgres:
    name = "postgres"
    dump_format = "pg_dump custom"

    async def health(self, t: Target) -> Health:
        started = time.perf_counter()
        async with connect(t) as conn:
            version = await conn.fetchval("show server_version")
        return Health(
            ok=True,
            version=f"PostgreSQL {version}",
            latency_ms=round((time.perf_counter() - started) * 1000, 2),
            checked_at=datetime.now(UTC),
        )

    def dsn(self, t: Target, db: str, user: str) -> str:
        return f"postgresql://{user}@{t.host}:{t.port}/{db}"

    async def database_exists(self, t: Target, db: str) -> bool:
        async with connect(t) as conn:
            return bool(await conn.fetchval("select 1 from pg_database where datname=$1", db))

    async def create_database(
        self, t: Target, db: str, owner: str, grants: list[Grant]
    ) -> list[Credential]:
        creds: list[Credential] = []
        created_roles: list[str] = []
        async with connect(t) as conn:
            users = [owner, *(g.user for g in grants)]
            taken = await conn.fetch("select rolname from pg_roles where rolname = any($1)", users)
            if taken:
                names = ", ".join(r["rolname"] for r in taken)
                raise Conflict(f"role(s) {names} already exist on {t.server!r}; choose other names")
            if await conn.fetchval("select 1 from pg_database where datname=$1", db):
                raise Conflict(f"database {db!r} already exists on {t.server!r} (not managed here)")
            try:
                for user, access in [(owner, "owner"), *((g.user, g.access) for g in grants)]:
                    password = generate_password()
                    await conn.execute(
                        f"create role {quote_ident(user)} login password {quote_literal(password)}"
                    )
                    created_roles.append(user)
                    creds.append(Credential(user=user, password=password, access=access))
                await conn.execute(f"create database {quote_ident(db)} owner {quote_ident(owner)}")
                await conn.execute(f"revoke all on database {quote_ident(db)} from public")
                for g in grants:
                    await conn.execute(
                        f"grant connect on database {quote_ident(db)} to {quote_ident(g.user)}"
                    )
                if grants:
                    async with connect(t, db) as in_db:
                        for g in grants:
                            await in_db.execute(_grant_sql(owner, g))
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    await conn.execute(f"drop database if exists {quote_ident(db)} with (force)")
                for user in created_roles:
                    with contextlib.suppress(Exception):
                        await conn.execute(f"drop role if exists {quote_ident(user)}")
                if isinstance(exc, asyncpg.PostgresError):
                    raise Invalid(f"{t.server!r} refused to provision {db!r}: {exc}") from exc
                raise
        return creds

    async def drop_database(self, t: Target, db: str, users: list[str]) -> None:
        async with connect(t) as conn:
            await conn.execute(f"drop database if exists {quote_ident(db)} with (force)")
            for user in users:
                try:
                    await conn.execute(f"drop role if exists {quote_ident(user)}")
                except asyncpg.DependentObjectsStillExistError as exc:
                    raise Conflict(
                        f"role {user!r} still owns objects elsewhere on {t.server!r}: {exc}"
                    ) from exc

    async def drop_stale_scratch(self, t: Target, older_than: float) -> list[str]:
        """Drop verification databases a crashed verify left behind."""
        async with connect(t) as conn:
            names = [
                r["datname"]
                for r in await conn.fetch(
                    "select datname from pg_database where datname like 'ccc\\_verify\\_%'"
                )
            ]
            stale = stale_scratch(names, older_than)
            for name in stale:
                await conn.execute(f"drop database if exists {quote_ident(name)} with (force)")
        return stale

    async def set_password(self, t: Target, user: str, password: str) -> None:
        async with connect(t) as conn:
            await conn.execute(f"alter role {quote_ident(user)} password {quote_literal(password)}")

    async def ensure_database(self, t: Target, db: str, owner: str | None) -> bool:
        async with connect(t) as conn:
            if await conn.fetchval("select 1 from pg_database where datname=$1", db):
                return False
            owner_sql = f" owner {quote_ident(owner)}" if owner else ""
            await conn.execute(f"create database {quote_ident(db)}{owner_sql}")
            return True

    async def row_counts(self, t: Target, db: str | None) -> dict[str, int]:
        assert db is not None
        async with connect(t, db) as conn:
            return await _count_rows(conn)

    @contextlib.asynccontextmanager
    async def dump(self, t: Target, db: str | None, workdir: Path) -> AsyncIterator[DumpPlan]:
        """pg_dump in the snapshot in which the rows were counted, so verification
        compares the backup with exactly the state it holds."""
        assert db is not None
        async with (
            connect(t, db) as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            major = conn.get_server_version().major
            argv = [pg_binary("pg_dump", major), "-Fc", *_conn_args(t, db)]
            snapshot = await conn.fetchval("select pg_export_snapshot()")
            counts = await _count_rows(conn)
            yield DumpPlan(
                argv=[*argv, f"--snapshot={snapshot}"],
                env=_env(t),
                row_counts=counts,
                format=self.dump_format,
            )

    async def restore(
        self, t: Target, db: str | None, path: Path, workdir: Path, owner: str | None, replace: bool
    ) -> None:
        assert db is not None
        async with connect(t) as conn:
            major = conn.get_server_version().major
        argv = [
            pg_binary("pg_restore", major),
            *_conn_args(t, db),
            "--no-owner",
            "--no-acl",
            "--exit-on-error",
            "--single-transaction",
        ]
        if owner:
            argv.append(f"--role={owner}")
        if replace:
            argv += ["--clean", "--if-exists"]
        try:
            await run([*argv, str(path)], _env(t), workdir)
        except ToolFailed as exc:
            raise _tool_error(t, exc) from exc

    @contextlib.asynccontextmanager
    async def scratch(self, t: Target, path: Path, workdir: Path) -> AsyncIterator[dict[str, int]]:
        """Restore into a throwaway database, yield its row counts, drop it."""
        name = scratch_name()
        async with connect(t) as conn:
            major = conn.get_server_version().major
            await conn.execute(f"create database {quote_ident(name)}")
        try:
            argv = [pg_binary("pg_restore", major), *_conn_args(t, name), "--no-owner", "--no-acl",
                    "--exit-on-error", "--single-transaction", str(path)]  # fmt: skip
            try:
                await run(argv, _env(t), workdir)
            except ToolFailed as exc:
                raise _tool_error(t, exc) from exc
            async with connect(t, name) as conn:
                counts = await _count_rows(conn)
            yield counts
        finally:
            async with connect(t) as conn:
                await conn.execute(f"drop database if exists {quote_ident(name)} with (force)")

    async def performance(self, t: Target) -> Performance:
        async with connect(t) as conn:
            connections = await conn.fetchval("select count(*) from pg_stat_activity")
            max_conn = int(await conn.fetchval("show max_connections"))
            hit = await conn.fetchval(
                "select sum(blks_hit)::float8 / nullif(sum(blks_hit) + sum(blks_read), 0) "
                "from pg_stat_database"
            )
            sizes = [
                DatabaseSize(name=r["datname"], size_bytes=r["size"])
                for r in await conn.fetch(
                    "select datname, pg_database_size(datname) as size from pg_database "
                    "where not datistemplate order by size desc"
                )
            ]
            slow, source = await _slow_queries(conn)
            waits = await conn.fetch(
                "select l.pid, l.mode, l.relation, d.datname, "
                "pg_blocking_pids(l.pid) as blocked_by, a.query "
                "from pg_locks l join pg_stat_activity a on a.pid = l.pid "
                "left join pg_database d on d.oid = l.database where not l.granted"
            )
            names = await _relation_names(t, waits)
            locks = [
                LockWait(
                    pid=r["pid"],
                    mode=r["mode"],
                    relation=names.get((r["datname"], r["relation"])),
                    waiting_for=",".join(str(p) for p in r["blocked_by"]) or None,
                    query=(r["query"] or "")[:500],
                )
                for r in waits
            ]
            extra = dict(
                await conn.fetchrow(
                    "select sum(xact_commit) as commits, sum(xact_rollback) as rollbacks, "
                    "sum(deadlocks) as deadlocks from pg_stat_database"
                )
                or {}
            )
        return Performance(
            server=t.server,
            engine="postgres",
            connections=connections,
            max_connections=max_conn,
            cache_hit_ratio=None if hit is None else round(hit, 6),
            sizes=sizes,
            slow_queries=slow,
            slow_queries_source=source,
            locks=locks,
            extra={k: int(v or 0) for k, v in extra.items()},
            collected_at=datetime.now(UTC),
        )


def _grant_sql(owner: str, g: Grant) -> str:
    user, own = quote_ident(g.user), quote_ident(owner)
    privs = "select" if g.access == "read" else "select, insert, update, delete"
    seq = "select" if g.access == "read" else "usage, select, update"
    default = f"alter default privileges for role {own} in schema public grant"
    return (
        f"grant usage on schema public to {user};"
        f"grant {privs} on all tables in schema public to {user};"
        f"grant {seq} on all sequences in schema public to {user};"
        f"{default} {privs} on tables to {user};"
        f"{default} {seq} on sequences to {user};"
    )


async def _count_rows(conn: asyncpg.Connection) -> dict[str, int]:
    tables = await conn.fetch(
        "select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema') "
        "and n.nspname not like 'pg_toast%' and not c.relispartition order by 1, 2"
    )
    counts: dict[str, int] = {}
    for r in tables:
        name = f"{quote_ident(r['nspname'])}.{quote_ident(r['relname'])}"
        counts[f"{r['nspname']}.{r['relname']}"] = await conn.fetchval(
            f"select count(*) from {name}"
        )
    return counts


async def _relation_names(
    t: Target, waits: list[asyncpg.Record]
) -> dict[tuple[str | None, int | None], str]:
    """Relation OIDs resolve only inside their own database: ask each one once."""
    names: dict[tuple[str | None, int | None], str] = {}
    by_db: dict[str, set[int]] = {}
    for r in waits:
        if r["relation"] is not None and r["datname"] is not None:
            by_db.setdefault(r["datname"], set()).add(r["relation"])
    for datname, oids in by_db.items():
        try:
            async with connect(t, datname) as conn:
                for oid in oids:
                    name = await conn.fetchval("select $1::oid::regclass::text", oid)
                    names[(datname, oid)] = f"{datname}.{name}"
        except (NotFound, asyncpg.PostgresError):
            continue
    return names


async def _slow_queries(conn: asyncpg.Connection) -> tuple[list[SlowQuery], str]:
    installed = await conn.fetchval(
        "select 1 from pg_extension where extname = 'pg_stat_statements'"
    )
    if not installed:
        return [], "unavailable: pg_stat_statements is not installed in the 'postgres' database"
    try:
        rows = await conn.fetch(
            "select query, calls, mean_exec_time, total_exec_time from pg_stat_statements "
            "order by mean_exec_time desc limit 10"
        )
    except asyncpg.PostgresError as exc:
        return [], f"unavailable: {exc}"
    return [
        SlowQuery(
            query=r["query"][:1000],
            calls=r["calls"],
            mean_ms=round(r["mean_exec_time"], 3),
            total_ms=round(r["total_exec_time"], 3),
        )
        for r in rows
    ], "pg_stat_statements"
