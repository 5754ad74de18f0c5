"""What every engine offers the service, and the connection facts it needs."""

from __future__ import annotations

import secrets
import string
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..models import Credential, Grant, Health, Performance


@dataclass(frozen=True)
class Target:
    """A managed server with its decrypted admin credentials (never stored like this)."""

    server: str
    engine: str
    host: str
    port: int
    user: str
    password: str | None = field(repr=False, default=None)


@dataclass
class DumpPlan:
    """The dump command to run, and the row counts of the state it dumps."""

    argv: list[str]
    env: dict[str, str]
    row_counts: dict[str, int]
    format: str


SCRATCH_PREFIX = "ccc_verify_"


def scratch_name() -> str:
    """``ccc_verify_<epoch>_<random>``: the epoch lets a sweep find ones a crash left."""
    return f"{SCRATCH_PREFIX}{int(time.time())}_{secrets.token_hex(4)}"


def stale_scratch(names: list[str], older_than: float) -> list[str]:
    now = time.time()
    out = []
    for name in names:
        stamp = name.removeprefix(SCRATCH_PREFIX).split("_", 1)[0]
        if name.startswith(SCRATCH_PREFIX) and stamp.isdigit() and now - int(stamp) > older_than:
            out.append(name)
    return out


def generate_password(length: int = 32) -> str:
    """Letters and digits only: safe in a DSN, a shell and every SQL dialect."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


class Engine(Protocol):
    name: str
    dump_format: str

    async def health(self, t: Target) -> Health: ...

    async def database_exists(self, t: Target, db: str) -> bool: ...

    async def create_database(
        self, t: Target, db: str, owner: str, grants: list[Grant]
    ) -> list[Credential]: ...

    async def drop_database(self, t: Target, db: str, users: list[str]) -> None: ...

    async def drop_stale_scratch(self, t: Target, older_than: float) -> list[str]: ...

    async def set_password(self, t: Target, user: str, password: str) -> None: ...

    async def ensure_database(self, t: Target, db: str, owner: str | None) -> bool: ...

    async def row_counts(self, t: Target, db: str | None) -> dict[str, int]: ...

    def dump(
        self, t: Target, db: str | None, workdir: Path
    ) -> AbstractAsyncContextManager[DumpPlan]: ...

    async def restore(
        self, t: Target, db: str | None, path: Path, workdir: Path, owner: str | None, replace: bool
    ) -> None: ...

    def scratch(
        self, t: Target, path: Path, workdir: Path
    ) -> AbstractAsyncContextManager[dict[str, int]]: ...

    async def performance(self, t: Target) -> Performance: ...

    def dsn(self, t: Target, db: str, user: str) -> str: ...
