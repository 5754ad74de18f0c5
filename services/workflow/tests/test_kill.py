"""``kill -9`` of the instance running a run: another instance resumes it from the last
recorded step, and every step's effect happens exactly once (the callee deduplicates on
the step's idempotency key)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from ccc.common.bus import Bus
from ccc.common.testing import subprocess_service, wait_until

from .conftest import Target, finished, put, target_service, unique

STEPS = 6


async def instances(bus: Bus) -> set[str]:
    """Ids of the live workflow instances, from NATS micro discovery."""
    inbox = bus.nc.new_inbox()
    seen: set[str] = set()

    async def on_reply(msg: object) -> None:
        if msg.data:  # type: ignore[attr-defined]
            seen.add(json.loads(msg.data)["id"])  # type: ignore[attr-defined]

    sub = await bus.nc.subscribe(inbox, cb=on_reply)
    await bus.nc.publish("$SRV.PING.workflow", b"", reply=inbox)
    await asyncio.sleep(0.3)
    await sub.unsubscribe()
    return seen


async def test_kill_9_mid_run_and_another_instance_finishes_it(
    nats_url: str, wftarget: Target, tmp_path: Path
) -> None:
    bus = target_service.bus
    env = {"CCC_NATS_URL": nats_url, "CCC_WORKFLOW_LEASE": "1.5", "CCC_LOG_JSON": "false"}
    args = ["-m", "ccc.workflow"]
    with (
        subprocess_service(args, env=env, log=tmp_path / "a.log") as a,
        subprocess_service(args, env=env, log=tmp_path / "b.log") as b,
    ):
        await wait_until(lambda: _count_at_least(bus, 2), timeout=20, interval=0.2)
        name = unique("kill")
        await put(
            bus,
            name,
            {
                "steps": [
                    {
                        "id": f"s{i}",
                        "call": "wftarget.effect",
                        "with": {"n": i, "sleep": 0.4},
                        **({"depends_on": [f"s{i - 1}"]} if i > 1 else {}),
                    }
                    for i in range(1, STEPS + 1)
                ]
            },
        )
        run = await bus.call("workflow.run.start", {"name": name})
        run_id = run["id"]
        keys = [f"{run_id}/s{i}" for i in range(1, STEPS + 1)]
        await wait_until(lambda: wftarget.effects[keys[1]] == 1, timeout=20)
        # the other instance was sweeping all along: it never took a live run
        assert all(wftarget.calls[k] == 1 for k in keys[:2])
        kv = await bus.js.key_value("ccc_workflow")
        owner = json.loads((await kv.get(f"lease.{run_id}")).value or b"{}")["owner"]
        victim, survivor = (a, b) if f"-{a.pid}-" in owner else (b, a)
        assert f"-{victim.pid}-" in owner
        victim.kill()  # SIGKILL: no drain, no lease release
        killed_at = time.time()
        assert victim.wait(5) == -9
        done = await finished(bus, run_id, timeout=30)
        assert survivor.poll() is None
        history = await bus.call("workflow.run.history", {"run_id": run_id})
    assert done["status"] == "succeeded", done
    assert done["resumed"] == 1
    assert [wftarget.effects[k] for k in keys] == [1] * STEPS
    # at most the step in flight at the kill was called twice; its effect still happened once
    assert sum(wftarget.calls[k] for k in keys) <= STEPS + 1
    steps = done["steps"]
    assert all(s["status"] == "succeeded" for s in steps.values())
    assert steps[f"s{STEPS}"]["finished_at"] > killed_at
    resumed = [e for h in history["entries"] for e in h["events"] if e["type"] == "run.resumed"]
    assert len(resumed) == 1 and resumed[0]["previous_owner"] != resumed[0]["by"]


async def _count_at_least(bus: Bus, n: int) -> bool:
    return len(await instances(bus)) >= n
