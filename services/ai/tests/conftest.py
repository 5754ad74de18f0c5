"""Fixtures of the ai tests: fake model servers on free ports and ai instances on the bus."""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from ccc.ai.config import AIConfig, AISettings
from ccc.ai.service import build_service
from ccc.common import Service
from ccc.common.testing import running

ROOT = Path(__file__).resolve().parents[3]


def _load_fakes() -> Any:
    """tests/fakes/openai_compatible.py, loaded by path (``tests`` is not a package)."""
    name = "ccc_ai_test_fakes"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests/fakes/openai_compatible.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


fakes_module = _load_fakes()
FakeOpenAI = fakes_module.FakeOpenAI
_names = itertools.count(1)


def unique(prefix: str) -> str:
    """Provider and key names unique in the session: cooldowns and spend live in shared KV."""
    return f"{prefix}{next(_names)}"


FakeFactory = Callable[..., Awaitable[tuple[Any, str]]]


@pytest.fixture
async def fake() -> AsyncIterator[FakeFactory]:
    """``await fake(name, models, mode=...)`` → (the fake, its base URL); stopped after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(
            name: str = "fake", models: list[str] | None = None, **kw: Any
        ) -> tuple[Any, str]:
            app = FakeOpenAI(name, models, **kw)
            url = await stack.enter_async_context(fakes_module.serving(app))
            return app, url

        yield start


def settings(**overrides: Any) -> AISettings:
    values: dict[str, Any] = {
        "config": None,
        "local_chat": False,
        "local_embeddings": False,
        "discovery_interval": 0.2,
        "cooldown_seconds": 30.0,
        "provider_timeout": 5.0,
        "stream_idle_timeout": 5.0,
    }
    values.update(overrides)
    return AISettings(**values)


def make_config(raw: dict[str, Any]) -> AIConfig:
    return AIConfig.model_validate(raw)


@contextlib.asynccontextmanager
async def ai_instance(
    nats_url: str, config: dict[str, Any], **overrides: Any
) -> AsyncIterator[Service]:
    service = build_service(make_config(config), settings(**overrides))
    async with running(service, nats_url):
        yield service
