"""One module per engine; ``ENGINES`` maps the registry's engine name to it."""

from __future__ import annotations

from .base import Engine, Target
from .mariadb import MariaDB
from .postgres import Postgres
from .redis import Redis

ENGINES: dict[str, Engine] = {"postgres": Postgres(), "mariadb": MariaDB(), "redis": Redis()}

__all__ = ["ENGINES", "Engine", "MariaDB", "Postgres", "Redis", "Target"]
