"""Fixtures of the agents tests: a scripted model behind the real ai service, a tool
service (``agtarget``) that records what agents did to it, and an agents instance."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from ccc.agents.service import create_service
from ccc.ai.config import AIConfig, AISettings
from ccc.ai.service import build_service
from ccc.common import Context, Service
from ccc.common.bus import Bus
from ccc.common.testing import running, wait_until

ROOT = Path(__file__).resolve().parents[3]
_names = itertools.count(1)


def _load(name: str, path: Path) -> Any:
    """A file of tests/fakes, loaded by path (``tests`` is not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


scripted = _load("ccc_agents_scripted_model", ROOT / "tests/fakes/scripted_model.py")
ScriptedModel = scripted.ScriptedModel


def unique(prefix: str) -> str:
    """An agent name no other test uses (all tests share one bus)."""
    return f"{prefix}-{next(_names)}"


# -- the tool service ---------------------------------------------------------------------


class Body(BaseModel):
    model_config = ConfigDict(extra="allow")


class EchoRequest(BaseModel):
    text: str = Field(description="What to echo back")


class Target:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.keys: list[str | None] = []
        self.dropped: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.in_slow = asyncio.Event()


target = Target()
target_service = Service("agtarget", description="Tools for the agents tests")


@target_service.endpoint("echo", http="", roles=("reader",))
async def echo(req: EchoRequest, ctx: Context) -> dict[str, Any]:
    """Echo a text back, upper-cased."""
    target.calls["echo"] += 1
    target.keys.append(ctx.idempotency_key)
    return {"echo": req.text.upper(), "caller": ctx.caller.key_id}


@target_service.endpoint("secret", http="", roles=("admin",))
async def secret(req: Body, ctx: Context) -> dict[str, Any]:
    """Read the secret (admins only)."""
    target.calls["secret"] += 1
    return {"secret": 42}


@target_service.endpoint("table.drop", http="", roles=("operator",))
async def drop(req: Body, ctx: Context) -> dict[str, Any]:
    """Drop a table (dangerous: matches *.drop)."""
    target.calls["drop"] += 1
    table = str(req.model_dump().get("table"))
    target.dropped.append(table)
    return {"dropped": table}


@target_service.endpoint("slow", http="", roles=("reader",), timeout=60)
async def slow(req: Body, ctx: Context) -> dict[str, Any]:
    """Wait for the test's gate, then answer."""
    target.calls["slow"] += 1
    target.keys.append(ctx.idempotency_key)
    target.in_slow.set()
    await target.gate.wait()
    return {"slow": "done"}


@target_service.endpoint("long", http="", roles=("reader",), operation=True)
async def long(req: Body, ctx: Context) -> dict[str, Any]:
    """Long work as an operation."""
    target.calls["long"] += 1
    await ctx.progress(0.5, "half way")
    await asyncio.sleep(0.2)
    return {"long": "finished", "n": req.model_dump().get("n")}


@pytest.fixture(scope="session")
async def agtarget(nats_url: str) -> AsyncIterator[Target]:
    async with running(target_service, nats_url):
        yield target


# -- the model behind the ai service -------------------------------------------------------


@pytest.fixture(scope="module")
async def model(nats_url: str) -> AsyncIterator[Any]:
    """A scripted model server and an ai instance serving it (provider ``scripted``)."""
    app = ScriptedModel("scripted")
    async with scripted.serving(app) as url:
        config = AIConfig.model_validate(
            {
                "providers": [
                    {
                        "name": "scripted",
                        "kind": "openai",
                        "base_url": f"{url}/v1",
                        "models": app.models,
                        "discover": False,
                    }
                ]
            }
        )
        settings = AISettings(
            config=None,
            local_chat=False,
            local_embeddings=False,
            provider_timeout=10.0,
            cooldown_seconds=0.5,
        )
        async with running(build_service(config, settings), nats_url):
            yield app


AGENT_SETTINGS: dict[str, Any] = {
    "agents_catalog_ttl": 0.5,
    "agents_poll_interval": 0.05,
    "operation_lease": 2.0,
}


@pytest.fixture(scope="module")
async def agents(nats_url: str, model: Any, agtarget: Target) -> AsyncIterator[Service]:
    async with running(create_service(), nats_url, **AGENT_SETTINGS) as svc:
        yield svc


# -- helpers ------------------------------------------------------------------------------


@dataclass
class Api:
    """The agents endpoints over the bus, as a caller with the given roles."""

    bus: Bus
    headers: dict[str, str] | None = None

    async def put(self, name: str, **spec: Any) -> dict[str, Any]:
        out: dict[str, Any] = await self.bus.call(
            "agents.agent.put", {"name": name, **spec}, headers=self.headers
        )
        return out

    async def start(self, name: str, text: str, **extra: Any) -> str:
        op = await self.bus.call(
            "agents.run.start", {"name": name, "input": text, **extra}, headers=self.headers
        )
        return str(op["id"])

    async def get(self, run_id: str) -> dict[str, Any]:
        out: dict[str, Any] = await self.bus.call("agents.run.get", {"run_id": run_id})
        return out

    async def until(self, run_id: str, *statuses: str, timeout: float = 15.0) -> dict[str, Any]:
        box: dict[str, Any] = {}

        async def reached() -> bool:
            box["view"] = await self.get(run_id)
            return bool(box["view"]["run"]["status"] in statuses)

        await wait_until(reached, timeout=timeout, interval=0.05)
        return box["view"]

    async def done(self, run_id: str, timeout: float = 15.0) -> dict[str, Any]:
        return await self.until(
            run_id, "completed", "stopped", "failed", "cancelled", timeout=timeout
        )


def caller(key: str, *roles: str) -> dict[str, str]:
    return {"Ccc-Caller": key, "Ccc-Roles": ",".join(roles)}


@contextlib.contextmanager
def gate_closed(t: Target) -> Any:
    t.gate.clear()
    t.in_slow.clear()
    try:
        yield
    finally:
        t.gate.set()
