"""``kill -9`` of the instance running a run: another instance resumes it from the last
completed step; no model turn is asked twice and only the tool call in flight is repeated,
with the same idempotency key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ccc.agents.service import create_service
from ccc.common import CCCError
from ccc.common.testing import running, subprocess_service, wait_until

from .conftest import AGENT_SETTINGS, Api, Target, caller, gate_closed, target_service, unique


async def test_kill_9_mid_run_and_another_instance_resumes_it(
    nats_url: str, model: Any, agtarget: Target, tmp_path: Path
) -> None:
    bus = target_service.bus
    api = Api(bus, caller("k-kill", "operator"))
    env = {
        "CCC_NATS_URL": nats_url,
        "CCC_OPERATION_LEASE": "1.5",
        "CCC_AGENTS_CATALOG_TTL": "0.5",
        "CCC_AGENTS_POLL_INTERVAL": "0.05",
        "CCC_LOG_JSON": "false",
    }
    m = model.script(
        [
            {"tool_calls": [{"name": "agtarget__echo", "arguments": {"text": "before"}}]},
            {"tool_calls": [{"name": "agtarget__slow", "arguments": {}}]},
            {"content": "finished after the resume"},
        ]
    )
    name = unique("survivor")
    with subprocess_service(["-m", "ccc.agents"], env=env, log=tmp_path / "agents.log") as proc:

        async def up() -> bool:
            try:
                await bus.call("agents.agent.list", {}, timeout=1)
            except CCCError:
                return False
            return True

        await wait_until(up, timeout=20, interval=0.2)
        await api.put(name, model=m, tools=["agtarget.*"])
        echoes = agtarget.calls["echo"]
        with gate_closed(agtarget):
            run_id = await api.start(name, "work, survive")
            await wait_until(agtarget.in_slow.is_set, timeout=15)
            before = await api.get(run_id)
            assert [s["kind"] for s in before["steps"]] == ["model", "tool", "model"]
            proc.kill()  # SIGKILL: no drain, the operation's lease is left to run out
            assert proc.wait(5) == -9
    slow_calls = agtarget.calls["slow"]
    async with running(create_service(), nats_url, **{**AGENT_SETTINGS, "operation_lease": 1.5}):
        view = await api.done(run_id, timeout=20)
        op = await bus.call("agents.operation.get", {"id": run_id})
    run = view["run"]
    assert run["status"] == "completed", run
    assert run["output"] == "finished after the resume"
    assert run["attempts"] == 2 and op["attempts"] == 2
    assert [s["kind"] for s in view["steps"]] == ["model", "tool", "model", "tool", "model"]
    # no model turn was asked twice; the finished echo was not repeated
    assert model.turns_asked(m) == [0, 1, 2]
    assert agtarget.calls["echo"] == echoes + 1
    # the call in flight at the kill was made again, with the same idempotency key
    assert agtarget.calls["slow"] == slow_calls + 1
    slow_keys = [k for k in agtarget.keys if k == f"{run_id}/call_1_0"]
    assert len(slow_keys) == 2
    assert view["steps"][3]["tool"]["result"] == {"slow": "done"}
    # one trace across the kill
    assert len({s["trace_id"] for s in view["steps"]}) == 1
    # the resumed run still acts as the key that started it
    assert run["caller"] == "k-kill" and run["caller_roles"] == ["operator"]
