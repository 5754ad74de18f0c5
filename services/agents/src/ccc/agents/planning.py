"""Planning mode: the model turns the goal into a plan, the plan runs as a workflow.

The model is asked to call ``submit_plan`` (forced by ``tool_choice``) with steps over
the agent's tools. The plan is checked here (every tool inside the agent's globs and the
caller's roles; ids and dependencies sound), shown in the run record (``plan``), turned
into a workflow definition and run on the workflow service as the caller, so every step
acts with the starting key's roles. A dangerous step is preceded by a workflow
``approval`` step; the agents approve endpoint forwards the decision to it. A plan the
checks or the workflow service refuse goes back to the model with the reason.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import TYPE_CHECKING, Any

from ccc.common import CCCError

from .runner import RunEnded, now

if TYPE_CHECKING:
    from .catalog import Tool
    from .runner import RunLoop

SUBMIT = "submit_plan"
STEP_ID = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
WORKFLOW_DONE = ("succeeded", "failed", "cancelled")
PLANNING = (
    "\n\nPlan first: do not call the tools now. Call submit_plan once with the steps that "
    "reach the goal; each step names a tool and its arguments, and may read an earlier "
    "step's result as ${{ steps.<id>.output... }} when it lists that step in depends_on."
)
SUBMIT_TOOL = {
    "type": "function",
    "function": {
        "name": SUBMIT,
        "description": "Submit the plan: steps over the available tools, run as a workflow.",
        "parameters": {
            "type": "object",
            "properties": {
                "summary": {"type": "string"},
                "steps": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "string", "pattern": STEP_ID.pattern},
                            "tool": {"type": "string"},
                            "arguments": {"type": "object"},
                            "depends_on": {"type": "array", "items": {"type": "string"}},
                            "description": {"type": "string"},
                        },
                        "required": ["id", "tool"],
                    },
                },
            },
            "required": ["steps"],
        },
    },
}


def workflow_name(run_id: str) -> str:
    return f"agentplan-{run_id.removeprefix('agents-')[:24]}"


def to_definition(
    loop: RunLoop, plan: dict[str, Any], tools: dict[str, Tool]
) -> dict[str, Any] | str:
    """The workflow definition of a plan, or why it cannot run."""
    steps_in = plan.get("steps")
    if not isinstance(steps_in, list) or not steps_in:
        return "the plan has no steps"
    by_target = {t.target: t for t in tools.values()}
    ids: set[str] = set()
    steps: list[dict[str, Any]] = []
    for raw in steps_in:
        if not isinstance(raw, dict):
            return "every step must be an object"
        sid = str(raw.get("id", ""))
        if not STEP_ID.match(sid) or sid in ids:
            return f"step id {sid!r} must be unique lower_snake (at most 41 characters)"
        name = str(raw.get("tool", ""))
        tool = tools.get(name) or by_target.get(name)
        if tool is None:
            return (
                f"step {sid}: {name!r} is not a tool this agent may use "
                "(outside its patterns, beyond the caller's roles, or not on the bus)"
            )
        depends = [str(d) for d in raw.get("depends_on") or []]
        unknown = [d for d in depends if d not in ids]
        if unknown:
            return f"step {sid}: depends_on names no earlier step: {unknown}"
        arguments = raw.get("arguments") or {}
        if not isinstance(arguments, dict):
            return f"step {sid}: arguments must be an object"
        if loop.dangerous(tool.target):
            gate = f"approve_{sid}"
            steps.append(
                {
                    "id": gate,
                    "approval": {
                        "prompt": f"{tool.target} {json.dumps(arguments, default=str)[:1500]}"
                    },
                    "depends_on": depends,
                }
            )
            depends = [*depends, gate]
        step: dict[str, Any] = {"id": sid, "call": tool.target, "with": arguments}
        if depends:
            step["depends_on"] = depends
        if raw.get("description"):
            step["description"] = str(raw["description"])[:2000]
        steps.append(step)
        ids.add(sid)
    return {
        "description": str(plan.get("summary") or loop.run.input)[:4000],
        "steps": steps,
        "output": {sid: f"${{{{ steps.{sid}.output }}}}" for sid in ids},
    }


async def plan_and_run(loop: RunLoop) -> None:
    """Ask for a plan until one is accepted (bounded by max_steps), then follow its run."""
    while True:
        started = next((s for s in loop.steps if s.kind == "plan"), None)
        if started is not None and started.data:
            await follow(loop, str(started.data["workflow_run"]))
            return
        calls = loop.pending_calls()
        if not calls:
            loop.guard()
            with loop.span("agents.model", model=loop.agent.model):
                await loop.model_step(
                    extra_tools=[SUBMIT_TOOL],
                    tool_choice={"type": "function", "function": {"name": SUBMIT}},
                    system_suffix=PLANNING,
                )
            calls = loop.pending_calls()
            if not calls:
                raise RunEnded("stopped", "plan_failed", "the model answered without a plan")
        for call in calls:
            if call["function"]["name"] != SUBMIT:
                await loop._tool_result(
                    now(),
                    str(call["id"]),
                    str(call["function"]["name"]),
                    None,
                    {},
                    "refused",
                    error={"detail": "planning mode: call submit_plan, not the tools"},
                )
                continue
            with loop.span("agents.plan"):
                await submit(loop, call)


async def submit(loop: RunLoop, call: dict[str, Any]) -> None:
    t0 = now()
    call_id = str(call["id"])
    try:
        plan = json.loads(call["function"].get("arguments") or "{}")
    except ValueError as exc:
        plan = f"the plan is not valid JSON: {exc}"
    tools = await loop.tools(fresh=True)
    definition = to_definition(loop, plan, tools) if isinstance(plan, dict) else plan
    if isinstance(definition, str):
        await loop._tool_result(
            t0, call_id, SUBMIT, None, {}, "refused", error={"status": 422, "detail": definition}
        )
        return
    name = workflow_name(loop.run.id)
    try:
        await loop.ctx.call(
            "workflow.definition.put", {"name": name, "definition": definition}, timeout=15
        )
        wf_run = await loop.ctx.call(
            "workflow.run.start", {"name": name, "idempotency_key": loop.run.id}, timeout=15
        )
    except CCCError as exc:
        await loop._tool_result(t0, call_id, SUBMIT, None, {}, "refused", error=exc.problem())
        return
    run_id = str(wf_run["id"])
    message = {
        "role": "tool",
        "tool_call_id": call_id,
        "content": json.dumps({"accepted": True, "workflow": name, "workflow_run": run_id}),
    }
    assert isinstance(plan, dict)
    loop.run.plan = plan
    loop.run.workflow_run = run_id
    step = loop.new_step(
        "plan",
        t0,
        messages=[message],
        data={"plan": plan, "workflow": name, "definition": definition, "workflow_run": run_id},
    )
    await loop.record(step)


async def follow(loop: RunLoop, wf_run_id: str) -> None:
    """Wait for the workflow run; a waiting approval step pauses this run visibly."""
    t0 = now()
    while True:
        run = await loop.ctx.call("workflow.run.get", {"run_id": wf_run_id})
        if run["status"] in WORKFLOW_DONE:
            break
        waiting = next(
            (
                sid
                for sid, sr in run["steps"].items()
                if sid.startswith("approve_") and sr["status"] in ("running", "waiting")
            ),
            None,
        )
        if waiting is not None and loop.run.status != "waiting_approval":
            from .models import Pending

            target = next(
                (s["call"] for s in _definition(loop)["steps"] if s["id"] == waiting[8:]), None
            )
            loop.run.status = "waiting_approval"
            loop.run.pending = Pending(
                step=len(loop.steps) + 1,
                tool=waiting,
                target=target,
                call_id=f"{wf_run_id}/{waiting}",
                workflow_run=wf_run_id,
                workflow_step=waiting,
                requested_at=now(),
            )
            await loop._save()
            await loop.ctx.emit(
                "run.waiting_approval",
                {"run_id": loop.run.id, "tool": waiting, "target": target},
            )
        elif waiting is None and loop.run.status == "waiting_approval":
            loop.run.status = "running"
            loop.run.pending = None
            await loop._save()
        await asyncio.sleep(loop.env.settings.agents_poll_interval)
    status = run["status"]
    summary = {
        "workflow_run": wf_run_id,
        "status": status,
        "output": run.get("output"),
        "error": run.get("error"),
        "steps": {sid: sr["status"] for sid, sr in run["steps"].items()},
    }
    loop.run.status = "running"
    loop.run.pending = None
    await loop.record(loop.new_step("workflow", t0, data=summary))
    if status == "succeeded":
        raise RunEnded("completed", "plan_completed", output=run.get("output"))
    raise RunEnded(
        "stopped", "plan_failed", f"workflow run {wf_run_id} {status}: {run.get('error')}"
    )


def _definition(loop: RunLoop) -> dict[str, Any]:
    for step in loop.steps:
        if step.kind == "plan" and step.data:
            return dict(step.data.get("definition") or {})
    return {"steps": []}
