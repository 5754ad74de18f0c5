"""The database service against the machine's real PostgreSQL and MariaDB, and a
private redis-server, over a real NATS bus (and once through the real gateway)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomysql
import asyncpg
import httpx
import pymysql
import pytest
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError

from ccc.common import BadRequest, Conflict, Invalid, Unavailable
from ccc.common.natsserver import free_port
from ccc.common.testing import refresh_catalog, running, wait_until
from ccc.database import schedules
from ccc.database.registry import runtime
from ccc.database.service import service
from ccc.database.settings import settings

RUN = uuid.uuid4().hex[:8]
PG = {"engine": "postgres", "host": "127.0.0.1", "port": 5432, "admin_user": "postgres"}
MARIA = {"engine": "mariadb", "host": "127.0.0.1", "port": 3306, "admin_user": "root"}


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    """A private redis-server: restore writes keys, so never into a shared server."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                tmp,
                "--save",
                "",
                "--appendonly",
                "no",
                # an RDB over diskless sync otherwise waits 5 s for more replicas
                "--repl-diskless-sync-delay",
                "0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield port
        finally:
            proc.terminate()
            proc.wait(10)


@pytest.fixture(scope="module")
async def db(nats_url: str, redis_port: int) -> AsyncIterator[Any]:
    tmp = tempfile.TemporaryDirectory()
    settings.data_dir = Path(tmp.name)
    settings.schedule_interval = 0
    settings.metrics_interval = 0
    runtime.reset_vault()
    async with running(service, nats_url) as svc:
        yield svc
    with contextlib.suppress(Exception):
        await _drop_leftovers()
    tmp.cleanup()


async def _drop_leftovers() -> None:
    conn = await asyncpg.connect(host="127.0.0.1", user="postgres", database="postgres")
    try:
        for r in await conn.fetch(
            "select datname from pg_database where datname like $1", f"%{RUN}%"
        ):
            await conn.execute(f'drop database if exists "{r["datname"]}" with (force)')
        for r in await conn.fetch("select rolname from pg_roles where rolname like $1", f"%{RUN}%"):
            await conn.execute(f'drop role if exists "{r["rolname"]}"')
    finally:
        await conn.close()
    m = await aiomysql.connect(host="127.0.0.1", user="root", password="", autocommit=True)
    try:
        async with m.cursor() as cur:
            await cur.execute("select schema_name from information_schema.schemata")
            for (name,) in await cur.fetchall():
                if RUN in name:
                    await cur.execute(f"drop database if exists `{name}`")
            await cur.execute("select user, host from mysql.user")
            for user, host in await cur.fetchall():
                if RUN in user:
                    await cur.execute("drop user if exists %s@%s", (user, host))
    finally:
        m.close()


async def call(svc: Any, op: str, payload: dict[str, Any] | None = None) -> Any:
    return await svc.bus.call(f"database.{op}", payload or {})


async def finish(svc: Any, op_record: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
    """Wait for an operation to end; return its record."""
    record: dict[str, Any] = {}

    async def done() -> bool:
        nonlocal record
        record = await call(svc, "operation.get", {"id": op_record["id"]})
        return record["status"] in ("succeeded", "failed", "cancelled")

    await wait_until(done, timeout=timeout, interval=0.1)
    return record


async def register_pg(svc: Any) -> str:
    name = f"pg{RUN}"
    await call(svc, "server.register", {"name": name, **PG})
    return name


async def test_postgres_provision_backup_drop_restore_verify(db: Any) -> None:
    server = await register_pg(db)
    dbname, reader = f"shop_{RUN}", f"shop_ro_{RUN}"
    spec = {"server": server, "name": dbname, "grants": [{"user": reader, "access": "read"}]}
    created = await call(db, "database.create", spec)
    assert created["created"] is True
    passwords = {c["user"]: c["password"] for c in created["credentials"]}
    assert len(passwords[dbname]) >= 24 and passwords[reader]

    again = await call(db, "database.create", spec)  # same spec: a no-op, no password again
    assert again["created"] is False
    assert all(c["password"] is None for c in again["credentials"])
    with pytest.raises(Conflict):
        await call(db, "database.create", {**spec, "grants": []})

    # the owner connects with its generated password and writes rows; the reader only reads
    owner = await asyncpg.connect(
        host="127.0.0.1", user=dbname, password=passwords[dbname], database=dbname
    )
    await owner.execute("create table items (id serial primary key, name text)")
    await owner.execute(
        "insert into items (name) select 'item ' || g from generate_series(1, 1500) g"
    )
    await owner.execute("create table tags (tag text)")
    await owner.execute("insert into tags values ('a'), ('b')")
    await owner.close()
    ro = await asyncpg.connect(
        host="127.0.0.1", user=reader, password=passwords[reader], database=dbname
    )
    assert await ro.fetchval("select count(*) from items") == 1500
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await ro.execute("insert into items (name) values ('x')")
    await ro.close()

    op = await finish(db, await call(db, "backup.create", {"server": server, "database": dbname}))
    assert op["status"] == "succeeded", op.get("error")
    backup = op["result"]
    assert backup["row_counts"] == {"public.items": 1500, "public.tags": 2}
    assert len(backup["sha256"]) == 64 and backup["size_bytes"] > 1000
    assert backup["format"] == "pg_dump custom"

    await call(db, "database.drop", {"server": server, "name": dbname})
    with pytest.raises(asyncpg.InvalidCatalogNameError):
        await asyncpg.connect(host="127.0.0.1", user="postgres", database=dbname)

    op = await finish(db, await call(db, "backup.restore", {"id": backup["id"]}))
    assert op["status"] == "succeeded", op.get("error")
    assert op["result"]["created_database"] is True
    admin = await asyncpg.connect(host="127.0.0.1", user="postgres", database=dbname)
    assert await admin.fetchval("select count(*) from items") == 1500
    assert await admin.fetchval("select max(name) from items where id = 1500") == "item 1500"
    await admin.close()

    # restoring over an existing database needs replace=true
    op = await finish(db, await call(db, "backup.restore", {"id": backup["id"]}))
    assert op["status"] == "failed" and op["error"]["status"] == 409

    verified = await finish(db, await call(db, "backup.verify", {"id": backup["id"]}))
    assert verified["status"] == "succeeded"
    assert verified["result"]["ok"] is True, verified["result"]

    # restore over a provisioned database: its owner owns what was restored and can write
    copy = f"shop_copy_{RUN}"
    fresh = await call(db, "database.create", {"server": server, "name": copy})
    op = await finish(
        db,
        await call(
            db, "backup.restore", {"id": backup["id"], "target_database": copy, "replace": True}
        ),
    )
    assert op["status"] == "succeeded", op.get("error")
    assert op["result"]["row_counts"]["public.items"] == 1500
    copy_owner = await asyncpg.connect(
        host="127.0.0.1", user=copy, password=fresh["credentials"][0]["password"], database=copy
    )
    await copy_owner.execute("insert into items (name) values ('after restore')")
    assert (
        await copy_owner.fetchval(
            "select pg_get_userbyid(relowner) from pg_class where relname = 'items'"
        )
        == copy
    )
    await copy_owner.close()
    await call(db, "database.drop", {"server": server, "name": copy})
    assert {t["table"] for t in verified["result"]["tables"]} == {"public.items", "public.tags"}

    # corrupt the stored object: verify says so, restore refuses to apply it
    blobs = await db.blobs()
    data = bytearray((await blobs.get(backup["object"])) or b"")
    data[len(data) // 2] ^= 0xFF
    await blobs.put(backup["object"], bytes(data))
    verified = await finish(db, await call(db, "backup.verify", {"id": backup["id"]}))
    assert verified["result"]["ok"] is False
    assert verified["result"]["checksum_ok"] is False
    assert "checksum" in verified["result"]["mismatches"][0]
    restore = await finish(
        db, await call(db, "backup.restore", {"id": backup["id"], "target_database": f"x_{RUN}"})
    )
    assert restore["status"] == "failed" and "corrupt" in restore["error"]["detail"]


async def test_verify_catches_a_backup_that_does_not_hold_the_recorded_rows(db: Any) -> None:
    """A well-formed dump whose content differs from what was recorded (rows lost)."""
    server = await register_pg(db)
    dbname = f"ledger_{RUN}"
    await call(db, "database.create", {"server": server, "name": dbname})
    admin = await asyncpg.connect(host="127.0.0.1", user="postgres", database=dbname)
    await admin.execute(
        "create table entries (n int); insert into entries select generate_series(1, 50)"
    )
    await admin.close()
    op = await finish(db, await call(db, "backup.create", {"server": server, "database": dbname}))
    backup = op["result"]
    # the record says 50 rows; pretend the dump lost some by raising the expectation
    entry = await db.state.entry(f"backup.{backup['id']}")
    await db.state.update(
        entry.key, {**entry.value, "row_counts": {"public.entries": 60}}, entry.revision
    )
    verified = await finish(db, await call(db, "backup.verify", {"id": backup["id"]}))
    result = verified["result"]
    assert result["ok"] is False and result["checksum_ok"] is True and result["restored"] is True
    assert result["mismatches"] == ["public.entries: expected 60 rows, restored 50"]
    await call(db, "database.drop", {"server": server, "name": dbname})


async def test_mariadb_provision_backup_restore_into_new_database(db: Any) -> None:
    server = f"maria{RUN}"
    await call(db, "server.register", {"name": server, **MARIA})
    dbname = f"crm_{RUN}"
    created = await call(db, "database.create", {"server": server, "name": dbname})
    password = created["credentials"][0]["password"]
    conn = await aiomysql.connect(
        host="127.0.0.1", user=dbname, password=password, db=dbname, autocommit=True
    )
    async with conn.cursor() as cur:
        await cur.execute("create table people (id int primary key, name varchar(50))")
        await cur.executemany(
            "insert into people values (%s, %s)", [(i, f"p{i}") for i in range(1, 301)]
        )
    conn.close()
    op = await finish(db, await call(db, "backup.create", {"server": server, "database": dbname}))
    assert op["status"] == "succeeded", op.get("error")
    backup = op["result"]
    assert backup["row_counts"] == {"people": 300}

    copy = f"crm_copy_{RUN}"
    op = await finish(
        db, await call(db, "backup.restore", {"id": backup["id"], "target_database": copy})
    )
    assert op["status"] == "succeeded", op.get("error")
    assert op["result"]["row_counts"] == {"people": 300}
    verified = await finish(db, await call(db, "backup.verify", {"id": backup["id"]}))
    assert verified["result"]["ok"] is True, verified["result"]
    perf = await call(db, "performance", {"name": server})
    assert perf["engine"] == "mariadb" and perf["connections"] >= 1
    assert any(s["name"] == dbname for s in perf["sizes"])
    assert perf["slow_queries_source"]  # performance_schema, or why not

    # a lost password is replaced, never shown again: the old one stops working
    fresh = await call(db, "password.reset", {"server": server, "name": dbname})
    assert fresh["user"] == dbname and fresh["password"] != password
    conn = await aiomysql.connect(
        host="127.0.0.1", user=dbname, password=fresh["password"], db=dbname
    )
    conn.close()
    with pytest.raises(pymysql.err.OperationalError):
        await aiomysql.connect(host="127.0.0.1", user=dbname, password=password, db=dbname)
    await call(db, "database.drop", {"server": server, "name": dbname})


async def test_redis_acl_user_and_rdb_backup_restore(db: Any, redis_port: int) -> None:
    server = f"redis{RUN}"
    await call(db, "server.register", {"name": server, "engine": "redis", "port": redis_port})
    user = await call(
        db,
        "redis_user.create",
        {"server": server, "name": "app", "key_patterns": ["app:*"], "commands": ["+@all"]},
    )
    assert user["created"] and user["password"]
    r = aioredis.Redis(port=redis_port, username="app", password=user["password"])
    await r.set("app:1", "one")
    await r.set("app:2", "two", px=600_000)
    with pytest.raises(NoPermissionError):
        await r.set("other:1", "x")
    await r.aclose()
    with pytest.raises(Conflict):
        await call(
            db, "redis_user.create", {"server": server, "name": "app", "key_patterns": ["x:*"]}
        )

    op = await finish(db, await call(db, "backup.create", {"server": server}))
    assert op["status"] == "succeeded", op.get("error")
    backup = op["result"]
    assert backup["format"] == "redis rdb" and backup["row_counts"] == {"db0": 2}
    admin = aioredis.Redis(port=redis_port)
    await admin.flushall()
    op = await finish(db, await call(db, "backup.restore", {"id": backup["id"]}))
    assert op["status"] == "succeeded", op.get("error")
    assert await admin.get("app:1") == b"one"
    assert 0 < await admin.pttl("app:2") <= 600_000
    await admin.aclose()
    verified = await finish(db, await call(db, "backup.verify", {"id": backup["id"]}))
    assert verified["result"]["ok"] is True, verified["result"]
    perf = await call(db, "performance", {"name": server})
    assert perf["engine"] == "redis" and perf["extra"]["keys"] == 2
    assert perf["slow_queries_source"] == "SLOWLOG"
    with pytest.raises(BadRequest) as refused:
        await call(
            db,
            "server.register",
            {
                "name": f"r2{RUN}",
                "engine": "redis",
                "port": redis_port,
                "admin_user": "app",
                "admin_password": "wrong",
            },
        )
    assert (
        "WRONGPASS" in refused.value.detail or "invalid username-password" in refused.value.detail
    )


async def test_bad_input_is_refused_before_anything_runs(db: Any) -> None:
    server = await register_pg(db)
    evil = 'x"; drop database postgres; --'
    with pytest.raises(Invalid) as err:
        await call(db, "database.create", {"server": server, "name": evil})
    assert "name" in str(err.value.errors)
    with pytest.raises(Invalid):
        await call(db, "database.create", {"server": server, "name": "ok_name", "owner": "a b"})
    with pytest.raises(Invalid):
        await call(db, "server.register", {"name": "s1", **PG, "host": "127.0.0.1; rm -rf /"})
    conn = await asyncpg.connect(host="127.0.0.1", user="postgres", database="postgres")
    assert not await conn.fetchval("select 1 from pg_roles where rolname = 'a b'")
    await conn.close()

    with pytest.raises(BadRequest) as refused:
        await call(db, "server.register", {"name": f"m{RUN}", **MARIA, "admin_password": "wrong"})
    assert "Access denied" in refused.value.detail
    with pytest.raises(BadRequest) as refused:
        await call(db, "server.register", {"name": f"p{RUN}", **PG, "admin_user": f"nobody_{RUN}"})
    assert "refused the credentials" in refused.value.detail
    with pytest.raises(Unavailable):
        await call(db, "server.register", {"name": f"d{RUN}", **PG, "port": free_port()})
    assert await db.state.get(f"server.d{RUN}") is None
    with pytest.raises(Invalid):
        await call(
            db,
            "schedule.create",
            {"name": "bad", "server": server, "database": "d", "cron": "61 * * * *"},
        )


async def test_failed_backup_leaves_no_object_behind(db: Any, tmp_path: Path) -> None:
    server = await register_pg(db)
    dbname = f"fail_{RUN}"
    await call(db, "database.create", {"server": server, "name": dbname})
    tools = tmp_path / "tools"
    tools.mkdir()
    settings.tools_dir = tools
    try:
        op = await finish(
            db, await call(db, "backup.create", {"server": server, "database": dbname})
        )
        assert op["status"] == "failed" and op["error"]["status"] == 503
        assert "pg_dump" in op["error"]["detail"]

        # a pg_dump that dies after writing 300 kB: the partial upload must vanish
        script = tools / "pg_dump"
        script.write_text(
            "#!/bin/sh\nhead -c 300000 /dev/zero\n"
            "echo 'pg_dump: error: Dumping the contents of table failed' >&2\nexit 1\n"
        )
        script.chmod(0o755)
        op = await finish(
            db, await call(db, "backup.create", {"server": server, "database": dbname})
        )
        assert op["status"] == "failed" and "Dumping the contents" in op["error"]["detail"]
        # a backup cancelled while its dump is still streaming: the object goes too
        script.write_text("#!/bin/sh\nhead -c 500000 /dev/zero\nsleep 30\n")
        op = await call(db, "backup.create", {"server": server, "database": dbname})

        async def streaming() -> bool:
            record = await call(db, "operation.get", {"id": op["id"]})
            return "running pg_dump" in record["message"] or "MB dumped" in record["message"]

        await wait_until(streaming, timeout=10)
        await call(db, "operation.cancel", {"id": op["id"]})

        async def settled() -> bool:
            found = await call(db, "backup.list", {"server": server, "database": dbname})
            return [b["status"] for b in found["backups"]] == ["failed"] * 3

        await wait_until(settled, timeout=10)
    finally:
        settings.tools_dir = None
    failed = (await call(db, "backup.list", {"server": server, "database": dbname}))["backups"]
    assert [b["status"] for b in failed] == ["failed", "failed", "failed"]
    assert failed[0]["error"] == "cancelled"
    blobs = await db.blobs()
    for b in failed:
        assert await blobs.get(b["object"]) is None
    await call(db, "database.drop", {"server": server, "name": dbname})


async def test_schedule_runs_on_the_clock_and_keeps_the_newest(db: Any) -> None:
    server = await register_pg(db)
    dbname = f"sched_{RUN}"
    await call(db, "database.create", {"server": server, "name": dbname})
    now = datetime(2030, 1, 1, 2, 0, tzinfo=UTC)
    runtime.clock = lambda: now
    try:
        await call(
            db,
            "schedule.create",
            {
                "name": f"nightly{RUN}",
                "server": server,
                "database": dbname,
                "cron": "0 3 * * *",
                "retention": {"keep_last": 2},
            },
        )
        now = datetime(2030, 1, 1, 2, 59, tzinfo=UTC)
        assert await schedules.tick(db.state, db.bus) == []
        ids = []
        for day in range(3):
            now = datetime(2030, 1, 1 + day, 3, 0, 20, tzinfo=UTC)
            # two instances ticking at once: the CAS on next_run lets exactly one start it
            ticks = await asyncio.gather(
                schedules.tick(db.state, db.bus), schedules.tick(db.state, db.bus)
            )
            started = [op_id for t in ticks for op_id in t]
            assert len(started) == 1
            assert await schedules.tick(db.state, db.bus) == []  # once per due time
            op = await finish(db, {"id": started[0]})
            assert op["status"] == "succeeded", op.get("error")
            ids.append(op["result"]["id"])
        listed = (await call(db, "backup.list", {"server": server, "database": dbname}))["backups"]
        assert [b["id"] for b in listed] == [ids[2], ids[1]]
        assert listed[0]["schedule"] == f"nightly{RUN}"
        view = (await call(db, "schedule.list"))["schedules"]
        mine = next(s for s in view if s["name"] == f"nightly{RUN}")
        assert mine["next_run"].startswith("2030-01-04T03:00")

        now = now + timedelta(days=10)
        pruned = await call(
            db,
            "backup.prune",
            {"server": server, "database": dbname, "retention": {"keep_days": 5}},
        )
        assert pruned == {"deleted": [ids[1]], "kept": [ids[2]]}
    finally:
        runtime.clock = lambda: datetime.now(UTC)
        await call(db, "schedule.delete", {"name": f"nightly{RUN}"})
    await call(db, "database.drop", {"server": server, "name": dbname})


async def test_performance_and_metrics(db: Any) -> None:
    server = await register_pg(db)
    perf = await call(db, "performance", {"name": server})
    assert perf["connections"] >= 1 and perf["max_connections"] >= perf["connections"]
    assert 0 <= perf["cache_hit_ratio"] <= 1
    assert any(s["name"] == "postgres" for s in perf["sizes"])
    text = (await call(db, "metrics"))["text"]
    assert f'ccc_database_connections{{engine="postgres",server="{server}"}}' in text

    # a session waiting on a lock shows up, with the pid that blocks it
    dbname = f"locks_{RUN}"
    await call(db, "database.create", {"server": server, "name": dbname})
    holder = await asyncpg.connect(host="127.0.0.1", user="postgres", database=dbname)
    waiter = await asyncpg.connect(host="127.0.0.1", user="postgres", database=dbname)
    await holder.execute("create table accounts (id int)")
    tx = holder.transaction()
    await tx.start()
    await holder.execute("lock table accounts in access exclusive mode")
    blocked = asyncio.create_task(waiter.fetchval("select count(*) from accounts"))
    try:
        locks: list[dict[str, Any]] = []

        async def waiting() -> bool:
            nonlocal locks
            locks = (await call(db, "performance", {"name": server}))["locks"]
            return any(lk["relation"] == f"{dbname}.accounts" for lk in locks)

        await wait_until(waiting, timeout=10, interval=0.1)
        lock = next(lk for lk in locks if lk["relation"] == f"{dbname}.accounts")
        assert lock["waiting_for"] == str(holder.get_server_pid())
        assert lock["mode"] == "AccessShareLock"
    finally:
        await tx.rollback()
        await blocked
        await holder.close()
        await waiter.close()
    text = (await call(db, "metrics"))["text"]
    assert f'ccc_database_lock_waits{{engine="postgres",server="{server}"}}' in text
    await call(db, "database.drop", {"server": server, "name": dbname})
    # the server refuses a reserved role name: 422 with its reason, nothing left behind
    with pytest.raises(Invalid) as err:
        await call(db, "database.create", {"server": server, "name": f"r_{RUN}", "owner": "pg_x"})
    assert "reserved" in err.value.detail
    assert await db.state.get(f"database.{server}.r_{RUN}") is None


async def test_through_the_gateway(db: Any, gateway: dict[str, str]) -> None:
    await refresh_catalog()
    auth = {"Authorization": f"Bearer {gateway['admin_key']}"}
    async with httpx.AsyncClient(base_url=gateway["url"], headers=auth, timeout=30) as http:
        r = await http.post("/v1/database/servers", json={"name": f"gw{RUN}", **PG})
        assert r.status_code == 200, r.text
        r = await http.post(
            f"/v1/database/servers/gw{RUN}/databases", json={"name": "x'; drop table t; --"}
        )
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        r = await http.post(f"/v1/database/servers/gw{RUN}/databases", json={"name": f"gw_{RUN}"})
        assert r.status_code == 200 and r.json()["created"] is True
        r = await http.post(
            "/v1/database/backups", json={"server": f"gw{RUN}", "database": f"gw_{RUN}"}
        )
        assert r.status_code == 202, r.text
        location = r.headers["location"]

        async def finished() -> bool:
            return (await http.get(location)).json()["status"] == "succeeded"

        await wait_until(finished, timeout=30, interval=0.1)
        backup = (await http.get(location)).json()["result"]
        r = await http.get(f"/v1/database/backups/{backup['id']}")
        assert r.status_code == 200 and r.json()["sha256"] == backup["sha256"]
        r = await http.get(f"/v1/database/servers/gw{RUN}/performance")
        assert r.status_code == 200 and r.json()["engine"] == "postgres"
        r = await http.get("/v1/database/servers/nosuch")
        assert r.status_code == 404
        r = await http.post(
            f"/v1/database/servers/gw{RUN}/databases",
            json={"name": f"gw_{RUN}", "owner": "someone_else"},
        )
        assert r.status_code == 409, r.text
        r = await http.post(
            "/v1/database/servers", json={"name": f"gwdown{RUN}", **PG, "port": free_port()}
        )
        assert r.status_code == 503 and "unreachable" in r.json()["detail"]
        r = await http.post(
            "/v1/database/servers", json={"name": f"gwbad{RUN}", **MARIA, "admin_password": "nope"}
        )
        assert r.status_code == 400 and "Access denied" in r.json()["detail"]
        r = await http.delete(f"/v1/database/servers/gw{RUN}/databases/gw_{RUN}")
        assert r.status_code == 200, r.text


async def test_credentials_are_encrypted_at_rest(db: Any) -> None:
    from cryptography.fernet import Fernet

    name = f"enc{RUN}"
    secret = f"s3cret-{RUN}"  # the machine's PostgreSQL trusts loopback, so any password works
    await call(db, "server.register", {"name": name, **PG, "admin_password": secret})
    raw = (await db.state.kv.get(f"server.{name}")).value
    assert secret.encode() not in raw
    key_file = Path(settings.data_dir) / "master.key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    sealed = json.loads(raw)["admin_password"]
    assert Fernet(key_file.read_bytes()).decrypt(sealed.encode()).decode() == secret
    listed = await call(db, "server.list")
    assert secret not in json.dumps(listed) and "admin_password" not in json.dumps(listed)
    # the same spec again is a no-op; a different password under the name is a conflict
    await call(db, "server.register", {"name": name, **PG, "admin_password": secret})
    with pytest.raises(Conflict):
        await call(db, "server.register", {"name": name, **PG, "admin_password": "other"})


async def test_interrupted_backup_is_reaped(db: Any) -> None:
    from ccc.database import backups

    blobs = await db.blobs()
    backup_id = uuid.uuid4().hex
    obj = f"backups/x/y/{backup_id}"
    await blobs.put(obj, b"half a dump")
    await db.state.put(
        f"backup.{backup_id}",
        {
            "id": backup_id,
            "server": "x",
            "engine": "postgres",
            "database": "y",
            "status": "running",
            "format": "pg_dump custom",
            "object": obj,
            "started_at": datetime.now(UTC).isoformat(),
            "operation": "database-" + "0" * 32,
        },
    )
    assert backup_id in await backups.reap_interrupted(db.state, blobs)
    assert await blobs.get(obj) is None
    record = await call(db, "backup.get", {"id": backup_id})
    assert record["status"] == "failed" and "interrupted" in record["error"]


async def test_cloudnativepg_and_patroni_manifests(db: Any, tmp_path: Path) -> None:
    import yaml

    out = await call(
        db,
        "ha.cloudnativepg",
        {
            "name": "orders",
            "namespace": "prod",
            "instances": 3,
            "storage_size": "50Gi",
            "backup": {
                "destination_path": "s3://backups/orders",
                "credentials_secret": "s3-creds",
                "retention_days": 14,
            },
            "pooler": {"instances": 2, "pool_mode": "transaction"},
        },
    )
    docs = list(yaml.safe_load_all(out["yaml"]))
    assert [d["kind"] for d in docs] == ["Cluster", "ScheduledBackup", "Pooler"]
    cluster = docs[0]["spec"]
    assert cluster["instances"] == 3 and cluster["storage"]["size"] == "50Gi"
    assert cluster["backup"]["retentionPolicy"] == "14d"
    assert docs[2]["spec"]["pgbouncer"]["poolMode"] == "transaction"
    with pytest.raises(Invalid):
        await call(db, "ha.cloudnativepg", {"name": "Bad_Name"})
    with pytest.raises(Invalid):
        await call(db, "ha.cloudnativepg", {"name": "x", "instances": 2, "synchronous_replicas": 2})

    # with CRD files configured, their openAPIV3Schema is what validates
    crd = {
        "spec": {
            "versions": [
                {
                    "name": "v1",
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"instances": {"type": "integer", "maximum": 2}},
                                }
                            },
                        }
                    },
                }
            ]
        }
    }
    for file in ("clusters", "scheduledbackups", "poolers"):
        (tmp_path / f"postgresql.cnpg.io_{file}.yaml").write_text(yaml.safe_dump(crd))
    settings.cnpg_crd_dir = tmp_path
    try:
        ok = await call(db, "ha.cloudnativepg", {"name": "small", "instances": 2})
        assert str(tmp_path) in ok["validated_against"]
        with pytest.raises(Invalid) as err:
            await call(db, "ha.cloudnativepg", {"name": "big", "instances": 3})
        assert "Cluster.spec.instances" in str(err.value.errors)
    finally:
        settings.cnpg_crd_dir = None

    patroni = await call(
        db,
        "ha.patroni",
        {
            "scope": "orders",
            "nodes": ["10.0.0.11", "10.0.0.12", "10.0.0.13"],
            "etcd_hosts": ["10.0.0.21:2379"],
            "postgres_version": 15,
        },
    )
    nodes = [yaml.safe_load(d["yaml"]) for d in patroni["documents"]]
    assert [n["name"] for n in nodes] == ["orders-1", "orders-2", "orders-3"]
    assert nodes[1]["postgresql"]["connect_address"] == "10.0.0.12:5432"
    assert "patroni" in patroni["validated_against"]
    assert "password" not in patroni["yaml"]
    with pytest.raises(Invalid):
        await call(db, "ha.patroni", {"scope": "o", "nodes": ["a b"], "etcd_hosts": ["e:1"]})


async def test_backups_to_s3_when_configured(db: Any, tmp_path: Path, monkeypatch: Any) -> None:
    """S3 through a local moto server (a protocol-faithful fake of the S3 API)."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    s3_server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    s3_server.start()
    for var, value in (
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(var, value)
    endpoint = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket="ccc-backups")
    settings.backup_url, settings.s3_endpoint_url = "s3://ccc-backups/prod", endpoint
    server = await register_pg(db)
    dbname = f"s3_{RUN}"
    try:
        await call(db, "database.create", {"server": server, "name": dbname})
        admin = await asyncpg.connect(host="127.0.0.1", user="postgres", database=dbname)
        await admin.execute("create table t (n int); insert into t select generate_series(1, 77)")
        await admin.close()
        op = await finish(
            db, await call(db, "backup.create", {"server": server, "database": dbname})
        )
        assert op["status"] == "succeeded", op.get("error")
        backup = op["result"]
        assert backup["location"] == "s3://ccc-backups/prod"
        head = s3.head_object(Bucket="ccc-backups", Key=f"prod/{backup['object']}")
        assert head["ContentLength"] == backup["size_bytes"]
        assert await (await db.blobs()).get(backup["object"]) is None  # not in NATS

        copy = f"s3_copy_{RUN}"
        op = await finish(
            db, await call(db, "backup.restore", {"id": backup["id"], "target_database": copy})
        )
        assert op["status"] == "succeeded" and op["result"]["row_counts"] == {"public.t": 77}
        verified = await finish(db, await call(db, "backup.verify", {"id": backup["id"]}))
        assert verified["result"]["ok"] is True

        # a dump that fails half-way leaves neither an object nor an open multipart upload
        tools = tmp_path / "tools"
        tools.mkdir()
        (tools / "pg_dump").write_text("#!/bin/sh\nhead -c 20000000 /dev/zero\nexit 1\n")
        (tools / "pg_dump").chmod(0o755)
        settings.tools_dir = tools
        op = await finish(
            db, await call(db, "backup.create", {"server": server, "database": dbname})
        )
        settings.tools_dir = None
        assert op["status"] == "failed"
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="ccc-backups").get("Contents", [])]
        assert keys == [f"prod/{backup['object']}"]
        assert not s3.list_multipart_uploads(Bucket="ccc-backups").get("Uploads")

        await call(db, "backup.delete", {"id": backup["id"]})
        assert not s3.list_objects_v2(Bucket="ccc-backups").get("Contents")
        await call(db, "database.drop", {"server": server, "name": dbname})
    finally:
        settings.backup_url = settings.s3_endpoint_url = None
        settings.tools_dir = None
        s3_server.stop()


async def test_runs_as_its_own_process(nats_url: str, tmp_path: Path) -> None:
    """``python -m ccc.database``: the entry point starts, answers on the bus, drains."""
    import nats

    from ccc.common.testing import subprocess_service

    port = free_port()
    env = {
        "CCC_NATS_URL": nats_url,
        "CCC_METRICS_PORT": str(port),
        "CCC_DATA_DIR": str(tmp_path),
        "CCC_LOG_JSON": "false",
    }
    with subprocess_service(["-m", "ccc.database"], env, ready_port=port) as proc:
        nc = await nats.connect(nats_url)
        try:  # every instance answers $SRV.INFO; find the one of this process
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox)
            await nc.publish("$SRV.INFO.database", b"", reply=inbox)
            answers = []
            with contextlib.suppress(TimeoutError):
                while True:
                    answers.append(json.loads((await sub.next_msg(timeout=1)).data))
            mine = [a for a in answers if f"-{proc.pid}-" in a["metadata"]["instance"]]
            assert len(mine) == 1
            assert "backup_create" in {e["name"] for e in mine[0]["endpoints"]}
        finally:
            await nc.close()
        assert proc.poll() is None
    assert (tmp_path / "master.key").exists()


async def test_scratch_databases_left_by_a_crash_are_dropped(db: Any) -> None:
    from ccc.database import backups

    await register_pg(db)  # both engines registered: the sweep visits every server
    await call(db, "server.register", {"name": f"maria{RUN}", **MARIA})
    old = f"ccc_verify_{int(datetime.now(UTC).timestamp()) - 7 * 3600}_{RUN}"
    new = f"ccc_verify_{int(datetime.now(UTC).timestamp())}_{RUN}"
    conn = await asyncpg.connect(host="127.0.0.1", user="postgres", database="postgres")
    m = await aiomysql.connect(host="127.0.0.1", user="root", password="", autocommit=True)
    try:
        for name in (old, new):
            await conn.execute(f'create database "{name}"')
            async with m.cursor() as cur:
                await cur.execute(f"create database `{name}`")
        dropped = await backups.drop_stale_scratch(db.state)
        assert dropped.count(old) == 2 and new not in dropped
        assert not await conn.fetchval("select 1 from pg_database where datname = $1", old)
        assert await conn.fetchval("select 1 from pg_database where datname = $1", new)
    finally:
        await conn.execute(f'drop database if exists "{new}"')
        await conn.close()
        async with m.cursor() as cur:
            await cur.execute(f"drop database if exists `{new}`")
        m.close()
