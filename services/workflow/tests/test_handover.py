"""A gracefully stopping instance hands its runs over at once (it releases their leases)."""

from __future__ import annotations

import asyncio
import time

from ccc.common import Service
from ccc.common.testing import running, wait_until
from ccc.workflow.service import create_service, runtime_of

from .conftest import FAST, Target, finished, put, target_service, unique


async def test_stopping_instance_hands_its_run_to_a_sibling(
    nats_url: str, wftarget: Target
) -> None:
    first = create_service(settings=FAST)
    second = create_service(settings=FAST)
    name = unique("handover")
    async with running(first, nats_url):
        await put(
            first.bus,
            name,
            {
                "steps": [
                    {"id": "wait", "delay": 1.0},
                    {"id": "after", "call": "wftarget.echo", "depends_on": ["wait"]},
                ]
            },
        )
        run = await first.bus.call("workflow.run.start", {"name": name})
        assert run["id"] in runtime_of(first).require().actors
        async with running(second, nats_url):
            await first.stop()  # drain: the run's lease is released, not left to expire
            stopped_at = time.time()
            done = await finished(second.bus, run["id"], timeout=10)
            took_over = time.time() - stopped_at
    assert done["status"] == "succeeded" and done["resumed"] == 1
    assert took_over < FAST.workflow_lease  # no wait for the lease to run out
    # the delay counted from its recorded start, not again from the takeover
    wait = done["steps"]["wait"]["instances"][0]
    assert wait["finished_at"] - wait["started_at"] < 1.0 + FAST.workflow_lease / 3 + 0.5


async def test_an_event_that_comes_while_no_instance_runs_is_not_missed(
    nats_url: str, wftarget: Target
) -> None:
    first = create_service(settings=FAST)
    name = unique("offline")
    async with running(first, nats_url):
        await put(
            first.bus,
            name,
            {
                "steps": [
                    {
                        "id": "paid",
                        "wait_event": {
                            "subject": "ccc.evt.wftest.offline.paid",
                            "match": "event.order == params.order",
                        },
                    },
                ]
            },
        )
        run = await first.bus.call("workflow.run.start", {"name": name, "params": {"order": name}})
        await step_running(first, run["id"], "paid")
    # no workflow instance is alive now; the event goes to the stream all the same
    await target_service.bus.publish_durable("ccc.evt.wftest.offline.paid", {"order": name, "n": 1})
    second = create_service(settings=FAST)
    async with running(second, nats_url):
        done = await finished(second.bus, run["id"], timeout=10)
    assert done["status"] == "succeeded"
    assert done["steps"]["paid"]["output"] == {"order": name, "n": 1}


async def step_running(service: Service, run_id: str, step: str) -> None:
    async def reached() -> bool:
        run = await service.bus.call("workflow.run.get", {"run_id": run_id})
        insts = run["steps"][step]["instances"]
        return bool(insts and insts[0]["status"] == "running")

    await wait_until(reached, timeout=5)


async def test_finished_runs_past_retention_are_deleted(nats_url: str, wftarget: Target) -> None:
    settings = FAST.model_copy(update={"workflow_run_retention_days": 1 / 86400})  # 1 s
    service = create_service(settings=settings)
    async with running(service, nats_url):
        name = unique("retention")
        await put(service.bus, name, {"steps": [{"id": "a", "call": "wftarget.echo"}]})
        run = await service.bus.call("workflow.run.start", {"name": name})
        await finished(service.bus, run["id"])
        engine = runtime_of(service).require()
        await engine.purge_finished()
        assert await service.state.get(f"run.{run['id']}") is not None  # not old enough yet
        await asyncio.sleep(1.1)
        assert await engine.purge_finished() >= 1
        assert await service.state.get(f"run.{run['id']}") is None
