"""Fixtures: a step-target service (``wftarget``) that records what workflows did to it,
and helpers to run workflows against a real bus."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from ccc.common import Context, Invalid, Service, Unavailable
from ccc.common.bus import Bus
from ccc.common.testing import running, wait_until
from ccc.workflow.runstate import RUN_DONE
from ccc.workflow.service import create_service
from ccc.workflow.settings import WorkflowSettings

_names = itertools.count(1)


def unique(prefix: str) -> str:
    """A workflow name no other test uses (all tests share one bus)."""
    return f"{prefix}-{next(_names)}"


class Body(BaseModel):
    model_config = ConfigDict(extra="allow")


class Target:
    """What the step target saw: calls and (deduplicated) effects per idempotency key."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.effects: Counter[str] = Counter()
        self.active = 0
        self.max_active: Counter[str] = Counter()
        self.undone: list[tuple[str, dict[str, Any]]] = []
        self.order: list[tuple[str, str, float]] = []


target = Target()
target_service = Service("wftarget", description="Step target of the workflow tests")


@target_service.endpoint("echo", http="")
async def echo(req: Body, ctx: Context) -> dict[str, Any]:
    return {"echo": req.model_dump(), "key": ctx.idempotency_key}


@target_service.endpoint("effect", http="")
async def effect(req: Body, ctx: Context) -> dict[str, Any]:
    """An effect with dedupe on the idempotency key, as a well-behaved callee does."""
    key = ctx.idempotency_key or "none"
    target.calls[key] += 1
    body = req.model_dump()
    await asyncio.sleep(float(body.get("sleep", 0)))
    if target.effects[key] == 0:
        target.effects[key] += 1
    target.order.append((key, "done", asyncio.get_running_loop().time()))
    return {"key": key, "n": body.get("n")}


@target_service.endpoint("flaky", http="")
async def flaky(req: Body, ctx: Context) -> dict[str, Any]:
    key = ctx.idempotency_key or "none"
    target.calls[key] += 1
    if target.calls[key] <= int(req.model_dump().get("fail_times", 0)):
        raise Unavailable(f"flaky: failing call {target.calls[key]}")
    return {"attempt": target.calls[key]}


@target_service.endpoint("track", http="")
async def track(req: Body, ctx: Context) -> dict[str, Any]:
    group = str(req.model_dump().get("group"))
    target.active += 1
    target.max_active[group] = max(target.max_active[group], target.active)
    try:
        await asyncio.sleep(float(req.model_dump().get("sleep", 0.15)))
    finally:
        target.active -= 1
    return {"item": req.model_dump().get("item")}


@target_service.endpoint("slow", http="", timeout=60)
async def slow(req: Body, ctx: Context) -> dict[str, Any]:
    await asyncio.sleep(float(req.model_dump().get("seconds", 1)))
    return {"slept": True}


@target_service.endpoint("long", http="", operation=True)
async def long(req: Body, ctx: Context) -> dict[str, Any]:
    """Long work as an operation: the caller gets 202 and the result comes later."""
    await ctx.progress(0.5, "half way")
    await asyncio.sleep(float(req.model_dump().get("seconds", 0.3)))
    if req.model_dump().get("fail"):
        raise Invalid("the long work failed")
    return {"done": True, "n": req.model_dump().get("n")}


@target_service.endpoint("admin_only", http="", roles=("admin",))
async def admin_only(req: Body, ctx: Context) -> dict[str, Any]:
    return {"caller": ctx.caller.key_id}


@target_service.endpoint("reject", http="")
async def reject(req: Body, ctx: Context) -> dict[str, Any]:
    raise Invalid("card declined")


@target_service.endpoint("undo", http="")
async def undo(req: Body, ctx: Context) -> dict[str, Any]:
    target.undone.append((ctx.idempotency_key or "none", req.model_dump()))
    return {"undone": True}


@pytest.fixture(scope="session")
async def wftarget(nats_url: str) -> AsyncIterator[Target]:
    async with running(target_service, nats_url):
        yield target


FAST = WorkflowSettings(workflow_lease=2.0, workflow_webhook_attempts=3)


@pytest.fixture(scope="module")
async def wf(nats_url: str, wftarget: Target) -> AsyncIterator[Service]:
    """One in-process workflow instance for a test module."""
    service = create_service(settings=FAST)
    async with running(service, nats_url):
        yield service


async def put(bus: Bus, name: str, definition: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = await bus.call(
        "workflow.definition.put", {"name": name, "definition": definition}
    )
    return result


async def start(bus: Bus, name: str, params: dict[str, Any] | None = None) -> str:
    run = await bus.call("workflow.run.start", {"name": name, "params": params or {}})
    return str(run["id"])


async def finished(bus: Bus, run_id: str, timeout: float = 10.0) -> dict[str, Any]:
    box: dict[str, Any] = {}

    async def done() -> bool:
        box["run"] = await bus.call("workflow.run.get", {"run_id": run_id})
        return box["run"]["status"] in RUN_DONE

    await wait_until(done, timeout=timeout, interval=0.05)
    return box["run"]


async def step_status(bus: Bus, run_id: str, step: str, status: str, timeout: float = 10.0) -> None:
    async def reached() -> bool:
        run = await bus.call("workflow.run.get", {"run_id": run_id})
        return bool(run["steps"][step]["status"] == status)

    await wait_until(reached, timeout=timeout, interval=0.05)
