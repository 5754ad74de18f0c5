"""The server registry in KV (``server.<name>``) and the runtime's clock and vault.

Admin passwords are stored Fernet-encrypted; a ``Target`` with the plain password
exists only for the duration of a call.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ccc.common import NotFound
from ccc.common.state import StateStore
from ccc.common.vault import Vault, load_master_key

from .engines import ENGINES, Engine, Target
from .models import ServerView
from .settings import settings


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Runtime:
    """Process-wide pieces the handlers share; tests swap the clock."""

    def __init__(self) -> None:
        self.clock: Callable[[], datetime] = _utcnow
        self._vault: Vault | None = None

    @property
    def vault(self) -> Vault:
        if self._vault is None:
            self._vault = Vault(load_master_key(settings))
        return self._vault

    def reset_vault(self) -> None:
        self._vault = None

    def now(self) -> datetime:
        return self.clock()


runtime = Runtime()


def server_key(name: str) -> str:
    return f"server.{name}"


async def load_server(state: StateStore, name: str) -> dict[str, Any]:
    record = await state.get(server_key(name))
    if record is None:
        raise NotFound(f"server {name!r} is not registered")
    return dict(record)


def target_of(record: dict[str, Any]) -> Target:
    sealed = record.get("admin_password")
    return Target(
        server=record["name"],
        engine=record["engine"],
        host=record["host"],
        port=int(record["port"]),
        user=record["admin_user"],
        password=runtime.vault.open(sealed) if sealed else None,
    )


async def resolve(state: StateStore, name: str) -> tuple[dict[str, Any], Target, Engine]:
    record = await load_server(state, name)
    return record, target_of(record), ENGINES[record["engine"]]


def view_of(record: dict[str, Any]) -> ServerView:
    return ServerView.model_validate({k: v for k, v in record.items() if k != "admin_password"})
