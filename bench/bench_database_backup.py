"""Backup and restore throughput of the database service vs pg_dump/pg_restore directly.

Fills a PostgreSQL database on the machine's server (127.0.0.1:5432, user postgres),
then, in the same run:
  direct   pg_dump -Fc to a local file; pg_restore into a fresh database
  service  backup.create (pg_dump streamed into the JetStream object store) and
           backup.restore (object store -> checksum -> pg_restore) as operations
MB/s is the database's on-disk size (pg_database_size) over wall time. Prints numbers
and asserts nothing. Size: CCC_BENCH_DB_MB (default 100).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from ccc.common.testing import running, temporary_server
from ccc.database.registry import runtime
from ccc.database.service import service
from ccc.database.settings import settings

TARGET_MB = float(os.environ.get("CCC_BENCH_DB_MB", "100"))
RUN = uuid.uuid4().hex[:6]
SOURCE, DIRECT_COPY, SERVICE_COPY = f"bench_{RUN}", f"bench_direct_{RUN}", f"bench_svc_{RUN}"
PG = ["-h", "127.0.0.1", "-p", "5432", "-U", "postgres"]


async def admin(database: str = "postgres") -> asyncpg.Connection:
    return await asyncpg.connect(host="127.0.0.1", user="postgres", database=database)


async def fill() -> int:
    conn = await admin()
    await conn.execute(f'create database "{SOURCE}"')
    await conn.close()
    conn = await admin(SOURCE)
    await conn.execute(
        "create table events (id bigint primary key, at timestamptz, kind text, body text)"
    )
    rows = int(TARGET_MB * 1e6 / 330)
    step = 200_000
    for start in range(1, rows + 1, step):
        end = min(rows, start + step - 1)
        await conn.execute(
            "insert into events select g, now() - g * interval '1 second', "
            "'kind' || (g % 17), md5(g::text) || repeat(md5((g * 7)::text), 7) "
            f"from generate_series({start}, {end}) g"
        )
    await conn.execute("create index on events (kind)")
    await conn.execute("vacuum analyze events")
    size = int(await conn.fetchval("select pg_database_size(current_database())"))
    await conn.close()
    return size


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, env={**os.environ, "PGPASSWORD": ""})
    return time.perf_counter() - started


async def wait_op(svc: Any, op: dict[str, Any]) -> dict[str, Any]:
    while True:
        record: dict[str, Any] = await svc.bus.call("database.operation.get", {"id": op["id"]})
        if record["status"] != "running":
            if record["status"] != "succeeded":
                raise RuntimeError(record["error"])
            return record
        await asyncio.sleep(0.05)


async def main() -> None:
    print(f"filling a ~{TARGET_MB:.0f} MB database ...", flush=True)
    size = await fill()
    mb = size / 1e6
    results: list[tuple[str, float, int]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            dump = Path(tmp) / "direct.dump"
            seconds = timed(["pg_dump", "-Fc", *PG, "-d", SOURCE, "-f", str(dump)])
            results.append(("pg_dump -Fc (file)", seconds, dump.stat().st_size))
            conn = await admin()
            await conn.execute(f'create database "{DIRECT_COPY}"')
            await conn.close()
            seconds = timed(
                [
                    "pg_restore",
                    *PG,
                    "-d",
                    DIRECT_COPY,
                    "--no-owner",
                    "--no-acl",
                    "--exit-on-error",
                    "--single-transaction",
                    str(dump),
                ]
            )
            results.append(("pg_restore (file)", seconds, dump.stat().st_size))

            settings.data_dir = Path(tmp) / "ccc"
            settings.schedule_interval = settings.metrics_interval = 0
            runtime.reset_vault()
            with temporary_server() as nats_url:
                async with running(service, nats_url) as svc:
                    await svc.bus.call(
                        "database.server.register",
                        {"name": "bench", "engine": "postgres", "admin_user": "postgres"},
                    )
                    started = time.perf_counter()
                    op = await svc.bus.call(
                        "database.backup.create", {"server": "bench", "database": SOURCE}
                    )
                    backup = (await wait_op(svc, op))["result"]
                    results.append(
                        (
                            "service backup.create",
                            time.perf_counter() - started,
                            backup["size_bytes"],
                        )
                    )
                    started = time.perf_counter()
                    op = await svc.bus.call(
                        "database.backup.restore",
                        {"id": backup["id"], "target_database": SERVICE_COPY},
                    )
                    await wait_op(svc, op)
                    results.append(
                        (
                            "service backup.restore",
                            time.perf_counter() - started,
                            backup["size_bytes"],
                        )
                    )
    finally:
        conn = await admin()
        for name in (SOURCE, DIRECT_COPY, SERVICE_COPY):
            await conn.execute(f'drop database if exists "{name}" with (force)')
        await conn.close()

    print(f"\ndatabase size {mb:.1f} MB (pg_database_size), PostgreSQL on 127.0.0.1")
    print(f"{'path':<26}{'seconds':>9}{'DB MB/s':>10}{'dump MB':>10}")
    for name, seconds, dump_bytes in results:
        print(f"{name:<26}{seconds:>9.2f}{mb / seconds:>10.1f}{dump_bytes / 1e6:>10.1f}")
    direct = {r[0].split()[0]: r[1] for r in results}
    svc_backup, svc_restore = results[2][1], results[3][1]
    print(
        f"\nservice/direct time: backup {svc_backup / direct['pg_dump']:.2f}x, "
        f"restore {svc_restore / direct['pg_restore']:.2f}x"
    )


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
