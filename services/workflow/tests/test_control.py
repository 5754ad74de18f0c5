"""Cancellation, approvals, compensation, events, sub-workflows and versions."""

from __future__ import annotations

import asyncio
import json

import pytest

from ccc.common import Conflict, Service
from ccc.common.testing import wait_until

from .conftest import Target, finished, put, start, unique


async def instance_status(wf: Service, run_id: str, step: str, status: str) -> None:
    async def reached() -> bool:
        run = await wf.bus.call("workflow.run.get", {"run_id": run_id})
        insts = run["steps"][step]["instances"]
        return bool(insts and insts[0]["status"] == status)

    await wait_until(reached, timeout=10, interval=0.05)


async def test_cancel_stops_running_steps_and_ends_cancelled(wf: Service, wftarget: Target) -> None:
    name = unique("cancel")
    await put(
        wf.bus,
        name,
        {
            "steps": [
                {"id": "wait", "delay": "30s"},
                {"id": "never", "call": "wftarget.echo", "depends_on": ["wait"]},
            ]
        },
    )
    run_id = await start(wf.bus, name)
    await instance_status(wf, run_id, "wait", "running")
    await wf.bus.call("workflow.run.cancel", {"run_id": run_id, "reason": "test"})
    run = await finished(wf.bus, run_id, timeout=5)
    assert run["status"] == "cancelled"
    assert run["steps"]["wait"]["status"] == "cancelled"
    assert run["steps"]["never"]["status"] == "cancelled"
    assert "cancelled by" in run["error"]
    with pytest.raises(Conflict):
        await wf.bus.call("workflow.run.cancel", {"run_id": run_id})


async def test_approval_waits_for_an_approve_call(wf: Service, wftarget: Target) -> None:
    name = unique("approve")
    await put(
        wf.bus,
        name,
        {
            "steps": [
                {"id": "ok", "approval": {"prompt": "Deploy to prod?"}},
                {
                    "id": "deploy",
                    "call": "wftarget.echo",
                    "depends_on": ["ok"],
                    "with": {
                        "by": "${{ steps.ok.output.by }}",
                        "note": "${{ steps.ok.output.comment }}",
                    },
                },
            ]
        },
    )
    run_id = await start(wf.bus, name)
    await instance_status(wf, run_id, "ok", "waiting")
    await asyncio.sleep(0.2)
    run = await wf.bus.call("workflow.run.get", {"run_id": run_id})
    assert run["status"] == "running" and run["steps"]["deploy"]["status"] == "pending"
    await wf.bus.call(
        "workflow.run.approve", {"run_id": run_id, "step": "ok", "comment": "ship it"}
    )
    run = await finished(wf.bus, run_id)
    assert run["status"] == "succeeded", run
    assert run["steps"]["deploy"]["output"]["echo"] == {"by": "bus", "note": "ship it"}
    with pytest.raises(Conflict):
        await wf.bus.call("workflow.run.approve", {"run_id": run_id, "step": "ok"})


async def test_rejection_fails_the_approval_step(wf: Service, wftarget: Target) -> None:
    name = unique("reject")
    await put(wf.bus, name, {"steps": [{"id": "ok", "approval": {}}]})
    run_id = await start(wf.bus, name)
    await instance_status(wf, run_id, "ok", "waiting")
    await wf.bus.call(
        "workflow.run.approve", {"run_id": run_id, "step": "ok", "approved": False, "comment": "no"}
    )
    run = await finished(wf.bus, run_id)
    assert run["status"] == "failed"
    assert run["steps"]["ok"]["error"] == "rejected by bus: no"


async def test_compensation_runs_for_started_steps_latest_first(
    wf: Service, wftarget: Target
) -> None:
    name = unique("saga")
    await put(
        wf.bus,
        name,
        {
            "steps": [
                {
                    "id": "reserve",
                    "call": "wftarget.echo",
                    "with": {"sku": "A1"},
                    "on_failure": {
                        "call": "wftarget.undo",
                        "with": {
                            "what": "reserve",
                            "sku": "${{ steps.reserve.output.echo.sku }}",
                            "why": "${{ failure.error }}",
                        },
                    },
                },
                {
                    "id": "ship",
                    "call": "wftarget.echo",
                    "depends_on": ["reserve"],
                    "on_failure": {"call": "wftarget.undo", "with": {"what": "ship"}},
                },
                {"id": "charge", "call": "wftarget.reject", "depends_on": ["ship"]},
                {
                    "id": "email",
                    "call": "wftarget.echo",
                    "depends_on": ["charge"],
                    "on_failure": {"call": "wftarget.undo", "with": {"what": "email"}},
                },
            ]
        },
    )
    run_id = await start(wf.bus, name)
    run = await finished(wf.bus, run_id)
    assert run["status"] == "failed"
    assert "step charge failed" in run["error"]
    mine = [(key, body) for key, body in wftarget.undone if key.startswith(run_id)]
    assert [body["what"] for _, body in mine] == ["ship", "reserve"]  # email never started
    assert mine[1] == (
        f"{run_id}/reserve/compensate",
        {"what": "reserve", "sku": "A1", "why": run["error"]},
    )
    assert set(run["compensations"]) == {"ship", "reserve"}
    assert all(c["status"] == "succeeded" for c in run["compensations"].values())


async def test_wait_event_step_resumes_on_a_matching_event(wf: Service, wftarget: Target) -> None:
    name = unique("waitevt")
    await put(
        wf.bus,
        name,
        {
            "steps": [
                {
                    "id": "paid",
                    "wait_event": {
                        "subject": "ccc.evt.wftest.payment.*",
                        "match": "event.order == params.order",
                        "timeout": 10,
                    },
                },
                {
                    "id": "ship",
                    "call": "wftarget.echo",
                    "depends_on": ["paid"],
                    "with": {"amount": "${{ steps.paid.output.amount }}"},
                },
            ]
        },
    )
    run_id = await start(wf.bus, name, {"order": "o-7"})
    await instance_status(wf, run_id, "paid", "running")
    await wf.bus.publish("ccc.evt.wftest.payment.received", {"order": "o-other", "amount": 1})
    await wf.bus.publish("ccc.evt.wftest.payment.received", {"order": "o-7", "amount": 42})
    run = await finished(wf.bus, run_id)
    assert run["status"] == "succeeded", run
    assert run["steps"]["ship"]["output"]["echo"] == {"amount": 42}


async def test_wait_event_times_out(wf: Service, wftarget: Target) -> None:
    name = unique("waitout")
    await put(
        wf.bus,
        name,
        {
            "steps": [
                {"id": "paid", "wait_event": {"subject": "ccc.evt.wftest.never", "timeout": 0.3}},
            ]
        },
    )
    run = await finished(wf.bus, await start(wf.bus, name))
    assert run["status"] == "failed"
    assert "no event on ccc.evt.wftest.never matched within 0.3s" in run["steps"]["paid"]["error"]


async def test_event_trigger_starts_a_run_with_params_from_the_event(
    wf: Service, wftarget: Target
) -> None:
    name = unique("ontrigger")
    await put(
        wf.bus,
        name,
        {
            "triggers": [
                {
                    "event": "ccc.evt.wftest.order.*",
                    "when": "event.total > 100",
                    "params": {"order": "${{ event.id }}"},
                }
            ],
            "steps": [
                {"id": "a", "call": "wftarget.echo", "with": {"order": "${{ params.order }}"}}
            ],
        },
    )
    await wf.bus.publish_durable("ccc.evt.wftest.order.created", {"id": "small", "total": 5})
    await wf.bus.publish_durable("ccc.evt.wftest.order.created", {"id": "big", "total": 500})
    box: dict[str, list[dict[str, object]]] = {}

    async def started() -> bool:
        page = await wf.bus.call("workflow.run.list", {"workflow": name})
        box["runs"] = page["runs"]
        return bool(page["runs"]) and page["runs"][0]["status"] == "succeeded"

    await wait_until(started, timeout=10)
    await asyncio.sleep(0.3)
    runs = (await wf.bus.call("workflow.run.list", {"workflow": name}))["runs"]
    assert len(runs) == 1
    run = await wf.bus.call("workflow.run.get", {"run_id": runs[0]["id"]})
    assert run["params"] == {"order": "big"}
    assert run["trigger"]["type"] == "event"
    assert run["trigger"]["subject"] == "ccc.evt.wftest.order.created"


async def test_sub_workflow_runs_to_completion_and_returns_its_output(
    wf: Service, wftarget: Target
) -> None:
    child = unique("child")
    await put(
        wf.bus,
        child,
        {
            "steps": [
                {"id": "work", "call": "wftarget.echo", "with": {"n": "${{ params.n * 2 }}"}}
            ],
            "output": {"doubled": "${{ steps.work.output.echo.n }}"},
        },
    )
    parent = unique("parent")
    await put(
        wf.bus,
        parent,
        {
            "steps": [
                {"id": "sub", "workflow": {"name": child, "params": {"n": "${{ params.n }}"}}},
                {
                    "id": "use",
                    "call": "wftarget.echo",
                    "depends_on": ["sub"],
                    "with": {"got": "${{ steps.sub.output.doubled }}"},
                },
            ]
        },
    )
    run = await finished(wf.bus, await start(wf.bus, parent, {"n": 21}))
    assert run["status"] == "succeeded", run
    assert run["steps"]["use"]["output"]["echo"] == {"got": 42}
    children = (await wf.bus.call("workflow.run.list", {"workflow": child}))["runs"]
    assert len(children) == 1
    child_run = await wf.bus.call("workflow.run.get", {"run_id": children[0]["id"]})
    assert child_run["parent"] == run["id"] and child_run["depth"] == 1


async def test_a_run_keeps_the_version_it_started_with(wf: Service, wftarget: Target) -> None:
    name = unique("versions")
    v1 = await put(
        wf.bus,
        name,
        {
            "steps": [
                {"id": "gate", "approval": {}},
                {"id": "say", "call": "wftarget.echo", "depends_on": ["gate"], "with": {"v": 1}},
            ]
        },
    )
    same = await put(
        wf.bus,
        name,
        {
            "steps": [
                {"id": "gate", "approval": {}},
                {"id": "say", "call": "wftarget.echo", "depends_on": ["gate"], "with": {"v": 1}},
            ]
        },
    )
    assert (v1["version"], v1["created"]) == (1, True)
    assert (same["version"], same["created"]) == (1, False)
    run_id = await start(wf.bus, name)
    v2 = await put(
        wf.bus, name, {"steps": [{"id": "say", "call": "wftarget.echo", "with": {"v": 2}}]}
    )
    assert v2["version"] == 2
    await instance_status(wf, run_id, "gate", "waiting")
    await wf.bus.call("workflow.run.approve", {"run_id": run_id, "step": "gate"})
    run = await finished(wf.bus, run_id)
    assert run["version"] == 1
    assert run["steps"]["say"]["output"]["echo"] == {"v": 1}
    new_run = await finished(wf.bus, await start(wf.bus, name))
    assert new_run["version"] == 2 and new_run["steps"]["say"]["output"]["echo"] == {"v": 2}
    old = await wf.bus.call("workflow.definition.get", {"name": name, "version": 1})
    assert old["definition"]["steps"][0]["id"] == "gate"


async def test_run_timeout_fails_the_run(wf: Service, wftarget: Target) -> None:
    name = unique("runtimeout")
    await put(wf.bus, name, {"timeout": "400ms", "steps": [{"id": "long", "delay": 30}]})
    run = await finished(wf.bus, await start(wf.bus, name), timeout=5)
    assert run["status"] == "failed"
    assert "run timed out" in run["error"]


async def test_a_durable_nats_command_starts_one_run_however_often_it_is_sent(
    wf: Service, wftarget: Target
) -> None:
    name = unique("command")
    await put(
        wf.bus,
        name,
        {"steps": [{"id": "a", "call": "wftarget.echo", "with": {"x": "${{ params.x }}"}}]},
    )
    results: list[dict[str, object]] = []

    async def on_result(msg: object) -> None:
        results.append(json.loads(msg.data))  # type: ignore[attr-defined]

    sub = await wf.bus.nc.subscribe("ccc.evt.workflow.run.start.completed", cb=on_result)
    for _ in range(2):  # a client retrying its publish: same message id
        await wf.bus.publish_durable(
            "ccc.cmd.workflow.run.start", {"name": name, "params": {"x": 7}}, msg_id=f"{name}-cmd-1"
        )
    await wait_until(lambda: any(r["correlation_id"] == f"{name}-cmd-1" for r in results))
    await sub.unsubscribe()
    run_id = next(r for r in results if r["correlation_id"] == f"{name}-cmd-1")["result"]["id"]
    run = await finished(wf.bus, str(run_id))
    assert run["status"] == "succeeded" and run["params"] == {"x": 7}
    runs = (await wf.bus.call("workflow.run.list", {"workflow": name}))["runs"]
    assert len(runs) == 1


async def test_cancelling_a_parent_cancels_its_running_sub_workflow(
    wf: Service, wftarget: Target
) -> None:
    child = unique("slowchild")
    await put(wf.bus, child, {"steps": [{"id": "nap", "delay": "30s"}]})
    parent = unique("cancelparent")
    await put(wf.bus, parent, {"steps": [{"id": "sub", "workflow": {"name": child}}]})
    run_id = await start(wf.bus, parent)

    async def child_started() -> bool:
        return bool((await wf.bus.call("workflow.run.list", {"workflow": child}))["runs"])

    await wait_until(child_started, timeout=5)
    await wf.bus.call("workflow.run.cancel", {"run_id": run_id})
    assert (await finished(wf.bus, run_id))["status"] == "cancelled"
    child_id = (await wf.bus.call("workflow.run.list", {"workflow": child}))["runs"][0]["id"]
    child_run = await finished(wf.bus, child_id, timeout=5)
    assert child_run["status"] == "cancelled"


async def test_publish_step_emits_a_durable_event_with_the_step_key(
    wf: Service, wftarget: Target
) -> None:
    name = unique("publish")
    await put(
        wf.bus,
        name,
        {
            "steps": [
                {
                    "id": "announce",
                    "publish": "ccc.evt.wftest.announced",
                    "payload": {"order": "${{ params.order }}", "n": "${{ params.n + 1 }}"},
                },
            ]
        },
    )
    seen: list[tuple[dict[str, object], str | None]] = []

    async def on_event(msg: object) -> None:
        headers = msg.headers or {}  # type: ignore[attr-defined]
        seen.append((json.loads(msg.data), headers.get("Nats-Msg-Id")))  # type: ignore[attr-defined]

    sub = await wf.bus.nc.subscribe("ccc.evt.wftest.announced", cb=on_event)
    run_id = await start(wf.bus, name, {"order": "o-1", "n": 1})
    run = await finished(wf.bus, run_id)
    await wait_until(lambda: bool(seen))
    await sub.unsubscribe()
    assert run["status"] == "succeeded"
    assert seen == [({"order": "o-1", "n": 2}, f"{run_id}/announce")]
    assert run["steps"]["announce"]["output"]["seq"] > 0


async def test_a_workflow_triggered_by_run_events_is_not_triggered_by_its_own(
    wf: Service, wftarget: Target
) -> None:
    source = unique("source")
    follower = unique("follower")
    await put(wf.bus, source, {"steps": [{"id": "a", "call": "wftarget.echo"}]})
    await put(
        wf.bus,
        follower,
        {
            "triggers": [
                {
                    "event": "ccc.evt.workflow.run.completed",
                    "params": {"after": "${{ event.workflow }}"},
                }
            ],
            "steps": [{"id": "a", "call": "wftarget.echo"}],
        },
    )
    await finished(wf.bus, await start(wf.bus, source))

    async def followed() -> bool:
        runs = (await wf.bus.call("workflow.run.list", {"workflow": follower}))["runs"]
        return bool(runs) and all(r["status"] == "succeeded" for r in runs)

    await wait_until(followed, timeout=10)
    await asyncio.sleep(0.5)  # its own completion must not start another run
    runs = (await wf.bus.call("workflow.run.list", {"workflow": follower}))["runs"]
    params = [(await wf.bus.call("workflow.run.get", {"run_id": r["id"]}))["params"] for r in runs]
    assert {"after": source} in params
    assert all(p["after"] != follower for p in params)
