"""Runs with a scripted model behind the real ai service, tools on a live test service."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from ccc.agents import janitor
from ccc.common import Context, Invalid, NotFound, Service
from ccc.common.testing import running, wait_until

from .conftest import Api, EchoRequest, Target, caller, unique


def tool_messages(view: dict[str, Any]) -> list[dict[str, Any]]:
    return [s["tool"] for s in view["steps"] if s["kind"] == "tool"]


async def test_a_discovered_tool_is_called_over_the_bus_and_its_result_fed_back(
    agents: Service, model: Any, agtarget: Target
) -> None:
    api = Api(agents.bus, caller("k-reader", "operator"))
    m = model.script(
        [
            {"tool_calls": [{"name": "agtarget__echo", "arguments": {"text": "hello"}}]},
            {"content": "The service said HELLO."},
        ]
    )
    name = unique("echoer")
    await api.put(name, instructions="Use the tools.", model=m, tools=["agtarget.echo"])
    run_id = await api.start(name, "say hello")
    view = await api.done(run_id)
    run = view["run"]
    assert run["status"] == "completed" and run["end_reason"] == "final_answer"
    assert run["output"] == "The service said HELLO."
    assert [s["kind"] for s in view["steps"]] == ["model", "tool", "model"]

    # the tool came from discovery: its schema and docstring were offered to the model
    first = model.requests[m][0]
    offered = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert set(offered) == {"agtarget__echo"}
    assert "Echo a text back" in offered["agtarget__echo"]["description"]
    assert offered["agtarget__echo"]["parameters"]["properties"]["text"]["type"] == "string"
    assert first["messages"][0] == {"role": "system", "content": "Use the tools."}

    # called over the bus as the caller, with the run's idempotency key
    call = tool_messages(view)[0]
    assert call["status"] == "ok" and call["target"] == "agtarget.echo"
    assert call["result"] == {"echo": "HELLO", "caller": "k-reader"}
    assert agtarget.keys[-1] == f"{run_id}/call_0_0"

    # and its result went back to the model
    second = model.requests[m][1]["messages"]
    assert second[-1]["role"] == "tool"
    assert json.loads(second[-1]["content"]) == {"echo": "HELLO", "caller": "k-reader"}

    traces = {s["trace_id"] for s in view["steps"]}
    assert len(traces) == 1 and None not in traces  # one trace for the whole run
    step = view["steps"][0]
    assert step["total_tokens"] > 0 and step["latency_ms"] >= 0 and step["model"] == m
    assert run["tokens"] == sum(s["total_tokens"] for s in view["steps"])


async def test_a_tool_outside_the_patterns_or_the_roles_is_refused(
    agents: Service, model: Any, agtarget: Target
) -> None:
    api = Api(agents.bus, caller("k-op", "operator"))
    m = model.script(
        [
            {
                "tool_calls": [
                    {"name": "agtarget__secret", "arguments": {}},
                    {"name": "agtarget__table__drop", "arguments": {"table": "users"}},
                ]
            },
            {"content": "I could not."},
        ]
    )
    name = unique("limited")
    # agtarget.secret matches the globs but needs admin; table.drop is outside the globs
    await api.put(name, model=m, tools=["agtarget.echo", "agtarget.secret"])
    tools = await agents.bus.call(
        "agents.agent.tools", {"name": name}, headers=caller("k-op", "operator")
    )
    assert [t["name"] for t in tools["tools"]] == ["agtarget__echo"]

    before = dict(agtarget.calls)
    view = await api.done(await api.start(name, "get the secret and drop users"))
    assert view["run"]["end_reason"] == "final_answer"
    secret, drop = tool_messages(view)
    assert secret["status"] == "refused" and "roles" in secret["error"]["detail"]
    assert drop["status"] == "refused" and "outside the tools" in drop["error"]["detail"]
    assert agtarget.calls["secret"] == before.get("secret", 0)
    assert agtarget.calls["drop"] == before.get("drop", 0)
    offered = {t["function"]["name"] for t in model.requests[m][0]["tools"]}
    assert offered == {"agtarget__echo"}


async def test_handoff_to_another_agent(agents: Service, model: Any, agtarget: Target) -> None:
    api = Api(agents.bus)
    m = model.script(
        [
            {
                "tool_calls": [
                    {"name": "transfer_to_billing", "arguments": {"reason": "money"}},
                    {"name": "agtarget__echo", "arguments": {"text": "too late"}},
                ]
            },
            {"tool_calls": [{"name": "agtarget__echo", "arguments": {"text": "refund"}}]},
            {"content": "Refund done."},
        ]
    )
    triage, billing = unique("triage"), "billing"
    await api.put(billing, instructions="You are billing.", model=m, tools=["agtarget.echo"])
    await api.put(triage, instructions="You are triage.", model=m, handoffs=[billing])
    view = await api.done(await api.start(triage, "I want a refund"))
    run = view["run"]
    assert run["status"] == "completed" and run["agent"] == billing
    assert run["agents"] == [triage, billing]
    kinds = [s["kind"] for s in view["steps"]]
    assert kinds == ["model", "handoff", "tool", "model", "tool", "model"]
    assert view["steps"][1]["handoff_to"] == billing
    # the triage agent's second call of the same message is answered, not made
    assert view["steps"][2]["tool"]["status"] == "refused"
    assert [s["agent"] for s in view["steps"]] == [triage, triage] + [billing] * 4
    first, second = model.requests[m][0], model.requests[m][1]
    assert first["messages"][0]["content"] == "You are triage."
    assert {t["function"]["name"] for t in first["tools"]} == {"transfer_to_billing"}
    assert second["messages"][0]["content"] == "You are billing."
    assert {t["function"]["name"] for t in second["tools"]} == {"agtarget__echo"}
    assert second["messages"][1] == {"role": "user", "content": "I want a refund"}


async def test_a_supervisor_delegates_to_a_specialist(
    agents: Service, model: Any, agtarget: Target
) -> None:
    api = Api(agents.bus)
    boss_model = model.script(
        [
            {"tool_calls": [{"name": "delegate_to_echo_spec", "arguments": {"task": "echo hi"}}]},
            {"content": "The specialist says HI."},
        ]
    )
    spec_model = model.script(
        [
            {"tool_calls": [{"name": "agtarget__echo", "arguments": {"text": "hi"}}]},
            {"content": "HI"},
        ]
    )
    await api.put("echo-spec", model=spec_model, tools=["agtarget.*"])
    boss = unique("boss")
    await api.put(boss, model=boss_model, delegates=["echo-spec"])
    view = await api.done(await api.start(boss, "get a greeting"))
    assert view["run"]["output"] == "The specialist says HI."
    delegate = view["steps"][1]
    assert delegate["kind"] == "delegate"
    child_id = delegate["data"]["child"]
    assert delegate["tool"]["result"]["output"] == "HI"
    child = await api.get(child_id)
    assert child["run"]["parent"] == view["run"]["id"]
    assert child["run"]["root_agent"] == "echo-spec" and child["run"]["depth"] == 1
    assert model.requests[spec_model][0]["messages"][-1]["content"] == "echo hi"


async def test_a_specialist_waiting_for_approval_pauses_its_supervisor(
    agents: Service, model: Any, agtarget: Target
) -> None:
    api = Api(agents.bus)
    boss_model = model.script(
        [
            {"tool_calls": [{"name": "delegate_to_dropper", "arguments": {"task": "drop t9"}}]},
            {"content": "done"},
        ]
    )
    spec_model = model.script(
        [
            {"tool_calls": [{"name": "agtarget__table__drop", "arguments": {"table": "t9"}}]},
            {"content": "dropped t9"},
        ]
    )
    await api.put("dropper", model=spec_model, tools=["agtarget.table.*"])
    boss = unique("boss")
    await api.put(boss, model=boss_model, delegates=["dropper"])
    run_id = await api.start(boss, "clean up")
    view = await api.until(run_id, "waiting_approval")
    pending = view["run"]["pending"]
    assert pending["target"] == "agtarget.table.drop" and pending["child_run"]
    # the decision on the supervisor reaches the specialist
    await agents.bus.call("agents.run.approve", {"run_id": run_id, "approved": True})
    view = await api.done(run_id)
    assert view["run"]["output"] == "done" and "t9" in agtarget.dropped
    child = await api.get(pending["child_run"])
    assert [s["kind"] for s in child["steps"]] == ["model", "approval", "tool", "model"]


async def test_approval_pauses_and_resumes(agents: Service, model: Any, agtarget: Target) -> None:
    api = Api(agents.bus, caller("k-op", "operator"))
    m = model.script(
        [
            {"tool_calls": [{"name": "agtarget__table__drop", "arguments": {"table": "logs"}}]},
            {"tool_calls": [{"name": "agtarget__table__drop", "arguments": {"table": "users"}}]},
            {"content": "Dropped logs; users was refused."},
        ]
    )
    name = unique("dba")
    await api.put(name, model=m, tools=["agtarget.*"])
    run_id = await api.start(name, "drop logs and users")

    view = await api.until(run_id, "waiting_approval")
    pending = view["run"]["pending"]
    assert pending["target"] == "agtarget.table.drop"
    assert pending["arguments"] == {"table": "logs"}
    assert "logs" not in agtarget.dropped
    # editing the agent now does not change the run half-way: it keeps version 1
    await api.put(name, model=m, tools=["agtarget.echo"])
    await agents.bus.call("agents.run.approve", {"run_id": run_id, "approved": True})

    async def asks_about_users() -> bool:
        run = (await api.get(run_id))["run"]
        return bool(run["pending"] and run["pending"]["arguments"] == {"table": "users"})

    await wait_until(asks_about_users, timeout=10)
    await agents.bus.call(
        "agents.run.approve", {"run_id": run_id, "approved": False, "comment": "not users"}
    )
    view = await api.done(run_id)
    assert view["run"]["status"] == "completed"
    assert agtarget.dropped.count("logs") == 1 and "users" not in agtarget.dropped
    tools = tool_messages(view)
    assert [t["status"] for t in tools] == ["ok", "rejected"]
    assert "not users" in tools[1]["error"]["detail"]
    assert view["run"]["versions"] == {name: 1}
    assert "agtarget__table__drop" in view["steps"][-1]["tools_offered"]
    decisions = [s["decision"] for s in view["steps"] if s["kind"] == "approval"]
    assert [d["approved"] for d in decisions] == [True, False]


async def test_the_loop_guard_stops_a_repeating_agent(
    agents: Service, model: Any, agtarget: Target
) -> None:
    api = Api(agents.bus)
    m = model.script([{"tool_calls": [{"name": "agtarget__echo", "arguments": {"text": "again"}}]}])
    name = unique("looper")
    await api.put(name, model=m, tools=["agtarget.echo"], limits={"max_identical_calls": 3})
    view = await api.done(await api.start(name, "loop"))
    run = view["run"]
    assert run["status"] == "stopped" and run["end_reason"] == "repeated_tool_call"
    assert "3 times" in run["detail"]
    assert len(tool_messages(view)) == 3


async def test_max_steps_and_token_budget_end_a_run_with_their_reason(
    agents: Service, model: Any, agtarget: Target
) -> None:
    api = Api(agents.bus)
    m = model.script(
        [
            {"tool_calls": [{"name": "agtarget__echo", "arguments": {"text": f"t{i}"}}]}
            for i in range(10)
        ]
    )
    steps_agent, budget_agent = unique("stepper"), unique("spender")
    await api.put(steps_agent, model=m, tools=["agtarget.echo"], limits={"max_steps": 2})
    await api.put(budget_agent, model=m, tools=["agtarget.echo"], limits={"max_tokens": 1})
    view = await api.done(await api.start(steps_agent, "go"))
    assert (view["run"]["status"], view["run"]["end_reason"]) == ("stopped", "max_steps")
    assert view["run"]["turns"] == 2
    view = await api.done(await api.start(budget_agent, "go"))
    assert view["run"]["end_reason"] == "budget_tokens" and view["run"]["turns"] == 1


async def test_an_operation_tool_is_followed_to_its_end(
    agents: Service, model: Any, agtarget: Target
) -> None:
    api = Api(agents.bus)
    m = model.script(
        [
            {"tool_calls": [{"name": "agtarget__long", "arguments": {"n": 7}}]},
            {"content": "finished"},
        ]
    )
    name = unique("waiter")
    await api.put(name, model=m, tools=["agtarget.long"])
    view = await api.done(await api.start(name, "do the long thing"))
    assert tool_messages(view)[0]["result"] == {"long": "finished", "n": 7}


async def test_agents_message_each_other_over_nats(
    agents: Service, model: Any, agtarget: Target
) -> None:
    api = Api(agents.bus)
    courier, mailbox = unique("courier"), unique("mailbox")
    send = model.script(
        [
            {
                "tool_calls": [
                    {"name": "send_message", "arguments": {"to": mailbox, "text": "ping"}},
                    {"name": "send_message", "arguments": {"to": "stranger", "text": "psst"}},
                ]
            },
            {"content": "sent"},
        ]
    )
    read = model.script(
        [{"tool_calls": [{"name": "read_messages", "arguments": {}}]}, {"content": "read"}]
    )
    await api.put(courier, model=send, peers=[mailbox])
    await api.put(mailbox, model=read, inbox=True)
    sent = await api.done(await api.start(courier, "tell the mailbox"))
    ok, refused = tool_messages(sent)
    assert ok["status"] == "ok" and ok["result"]["to"] == mailbox
    assert refused["status"] == "refused"

    first = await api.done(await api.start(mailbox, "any news?"))
    got = tool_messages(first)[0]["result"]["messages"]
    assert [(m["from_agent"], m["text"]) for m in got] == [(courier, "ping")]
    assert got[0]["from_run"] == sent["run"]["id"]
    # a mailbox: what one run read, the next does not read again
    second = await api.done(await api.start(mailbox, "more news?"))
    assert tool_messages(second)[0]["result"] == {"messages": []}


async def test_thread_memory_carries_a_conversation_across_runs(
    agents: Service, model: Any, agtarget: Target
) -> None:
    api = Api(agents.bus)
    m = model.script([{"content": "first answer"}, {"content": "second answer"}])
    name = unique("rememberer")
    await api.put(name, model=m, memory={"thread": True, "window": 10})
    one = await api.done(await api.start(name, "my name is Ada", thread="t1"))
    two = await api.done(await api.start(name, "what is my name?", thread="t1"))
    assert (one["run"]["output"], two["run"]["output"]) == ("first answer", "second answer")
    asked = model.requests[m][1]["messages"]
    assert [x["content"] for x in asked] == ["my name is Ada", "first answer", "what is my name?"]


async def test_cost_budget_model_failure_and_cancel_end_with_their_reason(
    agents: Service, model: Any, agtarget: Target
) -> None:
    api = Api(agents.bus)
    m = model.script(
        [
            {"tool_calls": [{"name": "agtarget__echo", "arguments": {"text": f"{i}"}}]}
            for i in range(9)
        ]
    )
    spender = unique("costly")
    await api.put(
        spender,
        model=m,
        tools=["agtarget.echo"],
        limits={"max_cost_usd": 0.0001, "usd_per_1k_tokens": 0.01},
    )
    view = await api.done(await api.start(spender, "spend"))
    assert view["run"]["end_reason"] == "budget_cost"
    assert view["run"]["cost_usd"] >= 0.0001

    broken = unique("broken")
    await api.put(broken, model="no-such-model")
    run_id = await api.start(broken, "hello")
    view = await api.done(run_id)
    assert (view["run"]["status"], view["run"]["end_reason"]) == ("failed", "model_error")
    assert "404" in view["run"]["detail"]
    op = await agents.bus.call("agents.operation.get", {"id": run_id})
    assert op["status"] == "failed" and op["error"]["status"] == 404

    waiting = model.script(
        [{"tool_calls": [{"name": "agtarget__table__drop", "arguments": {"table": "x"}}]}]
    )
    dba = unique("dba")
    await api.put(dba, model=waiting, tools=["agtarget.table.drop"])
    run_id = await api.start(dba, "drop x")
    await api.until(run_id, "waiting_approval")
    await agents.bus.call("agents.run.cancel", {"run_id": run_id})
    view = await api.done(run_id)
    assert (view["run"]["status"], view["run"]["end_reason"]) == ("cancelled", "cancelled")
    op = await agents.bus.call("agents.operation.get", {"id": run_id})
    assert op["status"] == "cancelled"
    assert "x" not in agtarget.dropped


async def test_tools_appear_and_disappear_with_their_services(
    agents: Service, model: Any, nats_url: str
) -> None:
    extra = Service("agextra", description="A service that comes and goes")

    @extra.endpoint("ping", http="", roles=("reader",))
    async def ping(req: EchoRequest, ctx: Context) -> dict[str, str]:
        """Answer pong."""
        return {"pong": req.text}

    api = Api(agents.bus)
    name = unique("watcher")
    await api.put(name, model="scripted-39", tools=["agextra.*"])

    async def names() -> list[str]:
        page = await agents.bus.call("agents.agent.tools", {"name": name})
        return [t["name"] for t in page["tools"]]

    assert await names() == []
    async with running(extra, nats_url):
        assert await names() == ["agextra__ping"]
    assert await names() == []


async def test_a_bad_agent_definition_is_a_422_naming_the_field(agents: Service) -> None:
    api = Api(agents.bus)
    for spec, field in (
        ({"model": "m", "tool": ["rag.*"]}, "tool"),
        ({"model": "m", "handoffs": ["Not An Agent"]}, "handoffs.0"),
        ({"model": "m", "limits": {"max_steps": 0}}, "limits.max_steps"),
        ({"model": ""}, "model"),
    ):
        with pytest.raises(Invalid) as caught:
            await api.put(unique("bad"), **spec)
        assert field in caught.value.detail
    # an unknown agent is refused before any run or operation exists
    with pytest.raises(NotFound) as missing:
        await api.start("never-defined", "hello")
    assert "never-defined" in missing.value.detail


async def test_delegation_nests_only_so_deep(agents: Service, model: Any) -> None:
    api = Api(agents.bus)
    name = unique("matryoshka")
    fn = f"delegate_to_{name.replace('-', '_')}"
    m = model.script(
        [{"tool_calls": [{"name": fn, "arguments": {"task": "deeper"}}]}, {"content": "done"}]
    )
    await api.put(name, model=m, delegates=[name])
    view = await api.done(await api.start(name, "go deep"), timeout=30)
    depth = 0
    while view["steps"][1]["kind"] == "delegate":
        view = await api.get(view["steps"][1]["data"]["child"])
        depth += 1
    assert depth == 4 == view["run"]["depth"]
    assert view["steps"][1]["tool"]["status"] == "refused"


async def test_a_durable_command_starts_a_run_once_and_reports_its_end(
    agents: Service, model: Any, agtarget: Target
) -> None:
    api = Api(agents.bus)
    m = model.script([{"content": "by command"}])
    name = unique("commanded")
    await api.put(name, model=m)
    results: list[dict[str, Any]] = []

    async def on_result(msg: Any) -> None:
        results.append(json.loads(msg.data))

    sub = await agents.nc.subscribe("ccc.evt.agents.run.start.completed", cb=on_result)
    try:
        for _ in range(2):  # the same message id twice: one run
            await agents.bus.publish_durable(
                "ccc.cmd.agents.run.start", {"name": name, "input": "hi"}, msg_id=f"{name}-1"
            )
        await wait_until(lambda: any(r["correlation_id"] == f"{name}-1" for r in results))
    finally:
        await sub.unsubscribe()
    result = next(r for r in results if r["correlation_id"] == f"{name}-1")
    assert result["result"]["end_reason"] == "final_answer"
    assert result["result"]["output"] == "by command"
    assert len(model.requests[m]) == 1


async def test_call_ids_a_model_repeats_are_made_unique(
    agents: Service, model: Any, agtarget: Target
) -> None:
    api = Api(agents.bus)
    m = model.script(
        [
            {"tool_calls": [{"name": "agtarget__echo", "arguments": {"text": "a"}, "id": "c0"}]},
            {"tool_calls": [{"name": "agtarget__echo", "arguments": {"text": "b"}, "id": "c0"}]},
            {"content": "ok"},
        ]
    )
    name = unique("dupes")
    await api.put(name, model=m, tools=["agtarget.echo"])
    run_id = await api.start(name, "twice")
    view = await api.done(run_id)
    calls = tool_messages(view)
    assert [c["status"] for c in calls] == ["ok", "ok"]
    assert calls[0]["call_id"] == "c0" and calls[1]["call_id"] != "c0"
    assert agtarget.keys[-2:] == [f"{run_id}/c0", f"{run_id}/{calls[1]['call_id']}"]


async def test_an_unanswered_approval_ends_the_run_when_its_time_is_up(
    agents: Service, model: Any, agtarget: Target
) -> None:
    api = Api(agents.bus)
    m = model.script(
        [{"tool_calls": [{"name": "agtarget__table__drop", "arguments": {"table": "late"}}]}]
    )
    name = unique("impatient")
    await api.put(name, model=m, tools=["agtarget.*"], limits={"approval_timeout": 0.3})
    view = await api.done(await api.start(name, "drop late"))
    assert (view["run"]["status"], view["run"]["end_reason"]) == ("stopped", "approval_timeout")
    assert view["run"]["pending"] is None and "late" not in agtarget.dropped


async def test_finished_runs_leave_after_their_retention(agents: Service, model: Any) -> None:
    api = Api(agents.bus)
    m = model.script([{"content": "short-lived"}])
    name = unique("ephemeral")
    await api.put(name, model=m)
    run_id = await api.start(name, "hi")
    await api.done(run_id)
    assert await janitor.sweep(agents.state, time.time() + 1) >= 1
    with pytest.raises(NotFound):
        await api.get(run_id)
    assert await agents.state.keys(f"step.{run_id}.") == []
