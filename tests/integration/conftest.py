"""Fixtures for fleet tests: HTTP clients with keys of each role, and test services."""

from __future__ import annotations

import itertools
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

_names = itertools.count(1)


@pytest.fixture
def service_name() -> str:
    """A fresh service name per test, so catalogs and KV never leak between tests."""
    return f"fleet{next(_names)}"


@pytest.fixture(scope="session")
async def admin(gateway: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=gateway["url"],
        headers={"Authorization": f"Bearer {gateway['admin_key']}"},
        timeout=15,
    ) as client:
        yield client
