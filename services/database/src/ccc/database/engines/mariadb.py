"""MariaDB / MySQL: aiomysql for SQL, mariadb-dump and the mariadb client for backups."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomysql
import pymysql

from ccc.common import BadRequest, Conflict, Internal, Invalid, NotFound, Unavailable

from ..models import Credential, DatabaseSize, Grant, Health, LockWait, Performance, SlowQuery
from ..settings import settings
from ..tools import ToolFailed, binary, run
from .base import DumpPlan, Target, generate_password, scratch_name, stale_scratch

ACCESS_DENIED = {1044, 1045, 1698}
UNREACHABLE = {2002, 2003, 2005, 2006, 2013}


def quote_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


@contextlib.asynccontextmanager
async def connect(t: Target, database: str | None = None) -> AsyncIterator[Any]:
    try:
        conn = await aiomysql.connect(
            host=t.host,
            port=t.port,
            user=t.user,
            password=t.password or "",
            db=database,
            connect_timeout=settings.connect_timeout,
            autocommit=True,
        )
    except pymysql.err.OperationalError as exc:
        code = exc.args[0] if exc.args else 0
        reason = exc.args[1] if len(exc.args) > 1 else str(exc)
        if code in ACCESS_DENIED:
            raise BadRequest(f"server {t.server!r} refused the credentials: {reason}") from exc
        if code == 1049:
            raise NotFound(f"database {database!r} does not exist on {t.server!r}") from exc
        raise Unavailable(
            f"server {t.server!r} ({t.host}:{t.port}) is unreachable: {reason}"
        ) from exc
    except (OSError, TimeoutError) as exc:
        raise Unavailable(f"server {t.server!r} ({t.host}:{t.port}) is unreachable: {exc}") from exc
    try:
        yield conn
    finally:
        conn.close()


async def _all(conn: Any, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    async with conn.cursor() as cur:
        await cur.execute(sql, args)
        return list(await cur.fetchall())


async def _one(conn: Any, sql: str, args: Any = None) -> Any:
    rows = await _all(conn, sql, args)
    return rows[0][0] if rows else None


def _defaults_file(t: Target, workdir: Path) -> Path:
    """Credentials in an option file (mode 0600), never on the command line."""
    path = workdir / f"client-{uuid.uuid4().hex[:8]}.cnf"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    lines = ["[client]", f"host={t.host}", f"port={t.port}", f"user={t.user}"]
    if t.password:
        escaped = t.password.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'password="{escaped}"')
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def _tool_error(t: Target, exc: ToolFailed) -> Exception:
    text = exc.stderr
    if "Can't connect" in text or "(2003" in text or "(2002" in text:
        return Unavailable(f"{exc.name} could not reach {t.server!r}: {text}")
    if "Access denied" in text:
        return BadRequest(f"{exc.name} was refused by {t.server!r}: {text}")
    return Internal(f"{exc.name} failed (exit {exc.rc}): {text}")


class MariaDB:
    name = "mariadb"
    dump_format = "mariadb-dump sql"

    async def health(self, t: Target) -> Health:
        started = time.perf_counter()
        async with connect(t) as conn:
            version = await _one(conn, "select version()")
        return Health(
            ok=True,
            version=f"MariaDB {version}",
            latency_ms=round((time.perf_counter() - started) * 1000, 2),
            checked_at=datetime.now(UTC),
        )

    def dsn(self, t: Target, db: str, user: str) -> str:
        return f"mysql://{user}@{t.host}:{t.port}/{db}"

    async def database_exists(self, t: Target, db: str) -> bool:
        async with connect(t) as conn:
            return bool(
                await _one(
                    conn, "select 1 from information_schema.schemata where schema_name=%s", (db,)
                )
            )

    async def create_database(
        self, t: Target, db: str, owner: str, grants: list[Grant]
    ) -> list[Credential]:
        creds: list[Credential] = []
        users = [owner, *(g.user for g in grants)]
        async with connect(t) as conn:
            marks = ",".join(["%s"] * len(users))
            taken = await _all(
                conn, f"select distinct user from mysql.user where user in ({marks})", users
            )
            if taken:
                raise Conflict(
                    f"user(s) {', '.join(r[0] for r in taken)} already exist on {t.server!r}"
                )
            if await _one(
                conn, "select 1 from information_schema.schemata where schema_name=%s", (db,)
            ):
                raise Conflict(f"database {db!r} already exists on {t.server!r} (not managed here)")
            created: list[str] = []
            try:
                await _all(conn, f"create database {quote_ident(db)}")
                for user, access in [(owner, "owner"), *((g.user, g.access) for g in grants)]:
                    password = generate_password()
                    await _all(conn, "create user %s@'%%' identified by %s", (user, password))
                    created.append(user)
                    privs = {
                        "owner": "all privileges",
                        "write": "select, insert, update, delete",
                        "read": "select",
                    }[access]
                    await _all(conn, f"grant {privs} on {quote_ident(db)}.* to %s@'%%'", (user,))
                    creds.append(Credential(user=user, password=password, access=access))
            except BaseException as exc:
                for user in created:
                    with contextlib.suppress(Exception):
                        await _all(conn, "drop user if exists %s@'%%'", (user,))
                with contextlib.suppress(Exception):
                    await _all(conn, f"drop database if exists {quote_ident(db)}")
                if isinstance(exc, pymysql.err.MySQLError):
                    raise Invalid(f"{t.server!r} refused to provision {db!r}: {exc}") from exc
                raise
        return creds

    async def drop_database(self, t: Target, db: str, users: list[str]) -> None:
        async with connect(t) as conn:
            await _all(conn, f"drop database if exists {quote_ident(db)}")
            for user in users:
                await _all(conn, "drop user if exists %s@'%%'", (user,))

    async def drop_stale_scratch(self, t: Target, older_than: float) -> list[str]:
        """Drop verification databases a crashed verify left behind."""
        async with connect(t) as conn:
            rows = await _all(
                conn,
                "select schema_name from information_schema.schemata "
                "where schema_name like 'ccc\\_verify\\_%'",
            )
            stale = stale_scratch([r[0] for r in rows], older_than)
            for name in stale:
                await _all(conn, f"drop database if exists {quote_ident(name)}")
        return stale

    async def set_password(self, t: Target, user: str, password: str) -> None:
        async with connect(t) as conn:
            await _all(conn, "alter user %s@'%%' identified by %s", (user, password))

    async def ensure_database(self, t: Target, db: str, owner: str | None) -> bool:
        async with connect(t) as conn:
            if await _one(
                conn, "select 1 from information_schema.schemata where schema_name=%s", (db,)
            ):
                return False
            await _all(conn, f"create database {quote_ident(db)}")
            return True

    async def row_counts(self, t: Target, db: str | None) -> dict[str, int]:
        assert db is not None
        async with connect(t) as conn:
            return await _count_rows(conn, db)

    @contextlib.asynccontextmanager
    async def dump(self, t: Target, db: str | None, workdir: Path) -> AsyncIterator[DumpPlan]:
        """Rows are counted in a consistent snapshot taken just before the dump's own
        (``--single-transaction``): writes landing between the two can differ."""
        assert db is not None
        cnf = _defaults_file(t, workdir)
        async with connect(t) as conn:
            await _all(conn, "start transaction with consistent snapshot, read only")
            counts = await _count_rows(conn, db)
            await _all(conn, "commit")
        argv = [
            binary("mariadb-dump"),
            f"--defaults-extra-file={cnf}",
            "--single-transaction",
            "--routines",
            "--triggers",
            "--hex-blob",
            "--skip-add-locks",
            db,
        ]
        try:
            yield DumpPlan(argv=argv, env={}, row_counts=counts, format=self.dump_format)
        finally:
            cnf.unlink(missing_ok=True)

    async def restore(
        self, t: Target, db: str | None, path: Path, workdir: Path, owner: str | None, replace: bool
    ) -> None:
        assert db is not None
        await self._load(t, db, path, workdir)

    async def _load(self, t: Target, db: str, path: Path, workdir: Path) -> None:
        cnf = _defaults_file(t, workdir)
        dump = await asyncio.to_thread(path.open, "rb")
        try:
            with dump:
                await run(
                    [
                        binary("mariadb"),
                        f"--defaults-extra-file={cnf}",
                        "--batch",
                        f"--connect-timeout={max(1, int(settings.connect_timeout))}",
                        db,
                    ],
                    {},
                    workdir,
                    stdin=dump,
                )
        except ToolFailed as exc:
            raise _tool_error(t, exc) from exc
        finally:
            cnf.unlink(missing_ok=True)

    @contextlib.asynccontextmanager
    async def scratch(self, t: Target, path: Path, workdir: Path) -> AsyncIterator[dict[str, int]]:
        name = scratch_name()
        async with connect(t) as conn:
            await _all(conn, f"create database {quote_ident(name)}")
        try:
            await self._load(t, name, path, workdir)
            async with connect(t) as conn:
                counts = await _count_rows(conn, name)
            yield counts
        finally:
            async with connect(t) as conn:
                await _all(conn, f"drop database if exists {quote_ident(name)}")

    async def performance(self, t: Target) -> Performance:
        async with connect(t) as conn:
            status = dict(await _all(conn, "show global status"))
            variables = dict(
                await _all(
                    conn,
                    "show global variables where variable_name in "
                    "('max_connections', 'performance_schema')",
                )
            )
            sizes = [
                DatabaseSize(name=r[0], size_bytes=int(r[1] or 0))
                for r in await _all(
                    conn,
                    "select table_schema, sum(data_length + index_length) from "
                    "information_schema.tables group by table_schema order by 2 desc",
                )
            ]
            slow: list[SlowQuery] = []
            if variables.get("performance_schema", "OFF").upper() == "ON":
                source = "performance_schema.events_statements_summary_by_digest"
                rows = await _all(
                    conn,
                    "select digest_text, count_star, avg_timer_wait/1e9, sum_timer_wait/1e9 "
                    "from performance_schema.events_statements_summary_by_digest "
                    "where digest_text is not null order by avg_timer_wait desc limit 10",
                )
                slow = [
                    SlowQuery(
                        query=r[0][:1000], calls=r[1], mean_ms=float(r[2]), total_ms=float(r[3])
                    )
                    for r in rows
                ]
            else:
                source = "unavailable: performance_schema is OFF on this server"
            locks = [
                LockWait(
                    pid=r[0], mode=r[1], relation=r[2], waiting_for=str(r[3]), query=r[4] or ""
                )
                for r in await _all(
                    conn,
                    "select r.trx_mysql_thread_id, l.lock_mode, l.lock_table, "
                    "b.trx_mysql_thread_id, r.trx_query "
                    "from information_schema.innodb_lock_waits w "
                    "join information_schema.innodb_trx r on r.trx_id = w.requesting_trx_id "
                    "join information_schema.innodb_trx b on b.trx_id = w.blocking_trx_id "
                    "join information_schema.innodb_locks l on l.lock_id = w.requested_lock_id",
                )
            ]
        requests = int(status.get("Innodb_buffer_pool_read_requests", 0))
        reads = int(status.get("Innodb_buffer_pool_reads", 0))
        return Performance(
            server=t.server,
            engine="mariadb",
            connections=int(status.get("Threads_connected", 0)),
            max_connections=int(variables.get("max_connections", 0)) or None,
            cache_hit_ratio=round(1 - reads / requests, 6) if requests else None,
            sizes=sizes,
            slow_queries=slow,
            slow_queries_source=source,
            locks=locks,
            extra={
                k: int(status.get(k, 0))
                for k in ("Questions", "Slow_queries", "Aborted_connects", "Threads_running")
            },
            collected_at=datetime.now(UTC),
        )


async def _count_rows(conn: Any, db: str) -> dict[str, int]:
    tables = await _all(
        conn,
        "select table_name from information_schema.tables "
        "where table_schema=%s and table_type='BASE TABLE' order by 1",
        (db,),
    )
    counts: dict[str, int] = {}
    for (table,) in tables:
        counts[table] = int(
            await _one(conn, f"select count(*) from {quote_ident(db)}.{quote_ident(table)}")
        )
    return counts
