"""A gracefully stopping instance hands its runs over at once (it releases their leases)."""

from __future__ import annotations

import time

from ccc.common.testing import running
from ccc.workflow.service import create_service, runtime_of

from .conftest import FAST, Target, finished, put, unique


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
