"""Planning mode: the model's plan runs as a workflow on the real workflow service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from ccc.common import Service
from ccc.common.testing import running
from ccc.workflow.service import create_service as create_workflow
from ccc.workflow.settings import WorkflowSettings

from .conftest import Api, Target, caller, unique


@pytest.fixture(scope="module")
async def wf(nats_url: str) -> AsyncIterator[Service]:
    service = create_workflow(settings=WorkflowSettings(workflow_lease=2.0))
    async with running(service, nats_url) as svc:
        yield svc


async def test_a_plan_runs_as_a_workflow_with_an_approval_gate(
    agents: Service, wf: Service, model: Any, agtarget: Target
) -> None:
    api = Api(agents.bus, caller("k-plan", "operator"))
    bad_plan = {"steps": [{"id": "peek", "tool": "agtarget__secret", "arguments": {}}]}
    plan = {
        "summary": "greet, then drop the table named by the greeting",
        "steps": [
            {"id": "greet", "tool": "agtarget__echo", "arguments": {"text": "plan"}},
            {
                "id": "wipe",
                "tool": "agtarget.table.drop",
                "arguments": {"table": "${{ steps.greet.output.echo }}"},
                "depends_on": ["greet"],
            },
        ],
    }
    m = model.script(
        [
            {"tool_calls": [{"name": "submit_plan", "arguments": bad_plan}]},
            {"tool_calls": [{"name": "submit_plan", "arguments": plan}]},
        ]
    )
    name = unique("planner")
    await api.put(name, model=m, tools=["agtarget.echo", "agtarget.table.*", "agtarget.secret"])
    run_id = await api.start(name, "greet and clean up", mode="plan")

    view = await api.until(run_id, "waiting_approval", timeout=20)
    run = view["run"]
    assert run["plan"] == plan and run["workflow_run"]
    assert run["pending"]["workflow_step"] == "approve_wipe"
    assert run["pending"]["target"] == "agtarget.table.drop"
    assert "PLAN" not in agtarget.dropped
    # the first plan named a tool beyond the key's roles: refused, the model planned again
    refused = view["steps"][1]
    assert refused["kind"] == "tool" and refused["tool"]["status"] == "refused"
    assert "peek" in refused["tool"]["error"]["detail"]
    assert model.requests[m][0]["tool_choice"]["function"]["name"] == "submit_plan"

    await agents.bus.call("agents.run.approve", {"run_id": run_id, "approved": True})
    view = await api.done(run_id, timeout=20)
    run = view["run"]
    assert run["status"] == "completed" and run["end_reason"] == "plan_completed", run
    assert run["output"]["greet"] == {"echo": "PLAN", "caller": "k-plan"}
    assert run["output"]["wipe"] == {"dropped": "PLAN"}
    assert agtarget.dropped.count("PLAN") == 1
    kinds = [s["kind"] for s in view["steps"]]
    assert kinds == ["model", "tool", "model", "plan", "workflow"]
    workflow = await agents.bus.call("workflow.run.get", {"run_id": run["workflow_run"]})
    # the workflow run acts as the key that started the agent
    assert workflow["caller"] == {"key_id": "k-plan", "roles": ["operator"]}
    assert workflow["status"] == "succeeded"
