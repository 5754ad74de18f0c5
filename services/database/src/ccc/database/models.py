"""Request and response models of the database service.

Every identifier that ends up in SQL, a command line or a Redis ACL rule is checked
here by pattern, so a malformed one is a 422 before any handler code runs; the engine
modules quote them as well.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr

Engine = Literal["postgres", "mariadb", "redis"]

Ident = Annotated[
    str,
    Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z_][a-z0-9_]*$",
        description="lower-case SQL identifier: letters, digits, underscore",
    ),
]
Name = Annotated[
    str, Field(min_length=1, max_length=63, pattern=r"^[a-z][a-z0-9_]*$", description="a name")
]
Host = Annotated[
    str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?$")
]
KeyPattern = Annotated[
    str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_:.*?\[\]{}/\-]+$")
]
CommandRule = Annotated[str, Field(pattern=r"^[+\-]@?[a-z][a-z0-9|_\-]*$", max_length=80)]
BackupId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
DEFAULT_PORTS = {"postgres": 5432, "mariadb": 3306, "redis": 6379}


# -- servers ----------------------------------------------------------------------------


class RegisterServer(BaseModel):
    name: Name
    engine: Engine
    host: Host = "127.0.0.1"
    port: int | None = Field(None, ge=1, le=65535)
    admin_user: Ident | None = Field(
        None, description="postgres / root / default when omitted, by engine"
    )
    admin_password: SecretStr | None = None


class ServerRef(BaseModel):
    name: Name


class Health(BaseModel):
    ok: bool
    version: str = ""
    latency_ms: float | None = None
    error: str | None = None
    checked_at: datetime


class ServerView(BaseModel):
    name: Name
    engine: Engine
    host: str
    port: int
    admin_user: str
    created_at: datetime
    health: Health | None = None


class ServerList(BaseModel):
    servers: list[ServerView]


class Empty(BaseModel):
    pass


class Deleted(BaseModel):
    deleted: str


# -- provisioning -------------------------------------------------------------------------


class Grant(BaseModel):
    user: Ident
    access: Literal["read", "write"] = "read"


class CreateDatabase(BaseModel):
    server: Name
    name: Ident
    owner: Ident | None = Field(None, description="owner role/user; defaults to the database name")
    grants: list[Grant] = Field(default_factory=list, max_length=20)


class DatabaseRef(BaseModel):
    server: Name
    name: Ident


class Credential(BaseModel):
    user: str
    password: str | None = Field(None, description="shown once, when the user is created")
    access: str


class DatabaseView(BaseModel):
    server: str
    name: str
    owner: str
    grants: list[Grant]
    created: bool = Field(description="false when the same spec already existed (no-op)")
    credentials: list[Credential] = Field(default_factory=list)
    dsn: str = Field("", description="connection string without the password")


class DatabaseList(BaseModel):
    databases: list[DatabaseView]


class ListByServer(BaseModel):
    server: Name


class PasswordReset(BaseModel):
    server: Name
    name: Ident = Field(description="the database (or, for Redis, the ACL user)")
    user: Ident | None = Field(None, description="a user of the database; its owner if omitted")


class CreateRedisUser(BaseModel):
    server: Name
    name: Ident
    key_patterns: list[KeyPattern] = Field(min_length=1, max_length=50)
    commands: list[CommandRule] = Field(default_factory=lambda: ["+@all"], max_length=50)


class RedisUserRef(BaseModel):
    server: Name
    name: Ident


class RedisUserView(BaseModel):
    server: str
    name: str
    key_patterns: list[str]
    commands: list[str]
    created: bool
    password: str | None = None


# -- backups ------------------------------------------------------------------------------


class CreateBackup(BaseModel):
    server: Name
    database: Ident | None = Field(None, description="required for PostgreSQL and MariaDB")
    schedule: Name | None = Field(None, description="set by the scheduler")


class BackupRef(BaseModel):
    id: BackupId


class BackupQuery(BaseModel):
    server: Name | None = None
    database: Ident | None = None
    limit: int = Field(100, ge=1, le=1000)


class BackupView(BaseModel):
    id: str
    server: str
    engine: Engine
    database: str | None
    status: Literal["running", "succeeded", "failed"]
    format: str
    object: str
    location: str = Field(
        "nats", description="'nats' (JetStream object store) or s3://bucket/prefix"
    )
    sha256: str = ""
    size_bytes: int = 0
    duration_s: float = 0.0
    started_at: datetime
    finished_at: datetime | None = None
    row_counts: dict[str, int] = Field(default_factory=dict)
    schedule: str | None = None
    operation: str | None = None
    error: str | None = None
    verified_at: datetime | None = None
    verified_ok: bool | None = None


class BackupList(BaseModel):
    backups: list[BackupView]


class RestoreBackup(BaseModel):
    id: BackupId
    target_database: Ident | None = Field(
        None, description="database to restore into; the backup's own when omitted"
    )
    replace: bool = Field(
        False, description="allow restoring over an existing database (objects are replaced)"
    )


class RestoreResult(BaseModel):
    backup: str
    server: str
    database: str | None
    created_database: bool
    bytes: int
    duration_s: float
    row_counts: dict[str, int]


class TableCheck(BaseModel):
    table: str
    expected: int | None
    restored: int | None


class VerifyResult(BaseModel):
    backup: str
    ok: bool
    checksum_ok: bool
    restored: bool
    tables: list[TableCheck]
    mismatches: list[str]
    error: str | None = None
    duration_s: float


# -- schedules and retention ----------------------------------------------------------------


class Retention(BaseModel):
    keep_last: int | None = Field(None, ge=1, le=10_000)
    keep_days: float | None = Field(None, gt=0, le=36_500)


class CreateSchedule(BaseModel):
    name: Name
    server: Name
    database: Ident | None = None
    cron: str = Field(min_length=9, max_length=100, description="five-field cron, UTC")
    retention: Retention = Field(default_factory=Retention)


class ScheduleRef(BaseModel):
    name: Name


class ScheduleView(BaseModel):
    name: str
    server: str
    database: str | None
    cron: str
    retention: Retention
    next_run: datetime
    last_run: datetime | None = None
    last_operation: str | None = None


class ScheduleList(BaseModel):
    schedules: list[ScheduleView]


class PruneRequest(BaseModel):
    server: Name
    database: Ident | None = None
    retention: Retention


class PruneResult(BaseModel):
    deleted: list[str]
    kept: list[str]


# -- performance ----------------------------------------------------------------------------


class SlowQuery(BaseModel):
    query: str
    calls: int
    mean_ms: float
    total_ms: float


class LockWait(BaseModel):
    pid: int | str
    mode: str
    relation: str | None = None
    waiting_for: str | None = None
    query: str = ""


class DatabaseSize(BaseModel):
    name: str
    size_bytes: int


class Performance(BaseModel):
    server: str
    engine: Engine
    connections: int
    max_connections: int | None
    cache_hit_ratio: float | None
    sizes: list[DatabaseSize]
    slow_queries: list[SlowQuery]
    slow_queries_source: str
    locks: list[LockWait]
    extra: dict[str, Any] = Field(default_factory=dict)
    collected_at: datetime


class MetricsText(BaseModel):
    content_type: str
    text: str
