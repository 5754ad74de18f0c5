"""Runs end to end on a real bus: DAG shapes, conditions, fan-out, retries, timeouts."""

from __future__ import annotations

from ccc.common import Service

from .conftest import Target, finished, put, start, unique


async def test_diamond_runs_each_step_once_in_dependency_order(
    wf: Service, wftarget: Target
) -> None:
    name = unique("diamond")
    await put(
        wf.bus,
        name,
        {
            "params": {"x": 1},
            "steps": [
                {"id": "a", "call": "wftarget.echo", "with": {"v": "${{ params.x }}"}},
                {
                    "id": "b",
                    "call": "wftarget.echo",
                    "depends_on": ["a"],
                    "with": {"v": "${{ steps.a.output.echo.v + 1 }}"},
                },
                {
                    "id": "c",
                    "call": "wftarget.echo",
                    "depends_on": ["a"],
                    "with": {"v": "${{ steps.a.output.echo.v + 10 }}"},
                },
                {
                    "id": "d",
                    "call": "wftarget.echo",
                    "depends_on": ["b", "c"],
                    "with": {"sum": "${{ steps.b.output.echo.v + steps.c.output.echo.v }}"},
                },
            ],
            "output": {"sum": "${{ steps.d.output.echo.sum }}"},
        },
    )
    run_id = await start(wf.bus, name, {"x": 5})
    run = await finished(wf.bus, run_id)
    assert run["status"] == "succeeded", run
    assert run["output"] == {"sum": 6 + 15}
    steps = run["steps"]
    assert all(s["status"] == "succeeded" for s in steps.values())
    assert steps["d"]["started_at"] >= max(steps["b"]["finished_at"], steps["c"]["finished_at"])
    assert steps["b"]["started_at"] >= steps["a"]["finished_at"]
    assert all(s["instances"][0]["attempts"] == 1 for s in steps.values())
    assert steps["d"]["output"]["key"] == f"{run_id}/d"
    assert (run["done"], run["total"]) == (4, 4)


async def test_when_false_skips_a_branch_and_the_join_still_runs(
    wf: Service, wftarget: Target
) -> None:
    name = unique("when")
    await put(
        wf.bus,
        name,
        {
            "steps": [
                {"id": "a", "call": "wftarget.echo", "with": {"big": "${{ params.n > 10 }}"}},
                {
                    "id": "b",
                    "call": "wftarget.echo",
                    "depends_on": ["a"],
                    "when": "steps.a.output.echo.big",
                },
                {
                    "id": "c",
                    "call": "wftarget.echo",
                    "depends_on": ["a"],
                    "when": "not steps.a.output.echo.big",
                },
                {
                    "id": "d",
                    "call": "wftarget.echo",
                    "depends_on": ["b", "c"],
                    "with": {"took": "${{ 'b' if steps.b.status == 'succeeded' else 'c' }}"},
                },
            ],
        },
    )
    run = await finished(wf.bus, await start(wf.bus, name, {"n": 3}))
    assert run["status"] == "succeeded", run
    assert run["steps"]["b"]["status"] == "skipped"
    assert run["steps"]["c"]["status"] == "succeeded"
    assert run["steps"]["d"]["output"]["echo"] == {"took": "c"}


async def test_for_each_runs_items_at_most_two_at_a_time(wf: Service, wftarget: Target) -> None:
    name = unique("fanout")
    await put(
        wf.bus,
        name,
        {
            "steps": [
                {
                    "id": "each",
                    "call": "wftarget.track",
                    "for_each": "params.items",
                    "concurrency": 2,
                    "with": {"item": "${{ item * 10 }}", "group": name, "sleep": 0.15},
                },
            ],
            "output": "${{ steps.each.output }}",
        },
    )
    run = await finished(wf.bus, await start(wf.bus, name, {"items": [1, 2, 3, 4, 5]}))
    assert run["status"] == "succeeded", run
    assert run["output"] == [{"item": i * 10} for i in [1, 2, 3, 4, 5]]
    assert wftarget.max_active[name] == 2
    assert len(run["steps"]["each"]["instances"]) == 5
    assert (run["done"], run["total"]) == (5, 5)


async def test_retry_with_backoff_then_success(wf: Service, wftarget: Target) -> None:
    name = unique("retry")
    await put(
        wf.bus,
        name,
        {
            "steps": [
                {
                    "id": "flaky",
                    "call": "wftarget.flaky",
                    "with": {"fail_times": 2},
                    "retry": {"max_attempts": 4, "backoff": 0.05, "multiplier": 2, "jitter": 0.1},
                },
            ],
        },
    )
    run_id = await start(wf.bus, name)
    run = await finished(wf.bus, run_id)
    assert run["status"] == "succeeded", run
    inst = run["steps"]["flaky"]["instances"][0]
    assert inst["attempts"] == 3
    assert run["steps"]["flaky"]["output"] == {"attempt": 3}
    assert wftarget.calls[f"{run_id}/flaky"] == 3
    history = await wf.bus.call("workflow.run.history", {"run_id": run_id})
    retries = [e for h in history["entries"] for e in h["events"] if e["type"] == "step.retrying"]
    assert len(retries) == 2
    assert "flaky: failing call 1" in retries[0]["error"]
    # backoff: the second retry waited about twice the first (0.05 s, 0.1 s, ±10 %)
    assert retries[1]["next_attempt_at"] - retries[1]["at"] >= 0.09 - 0.001


async def test_step_timeout_fails_the_step_and_the_run(wf: Service, wftarget: Target) -> None:
    name = unique("timeout")
    await put(
        wf.bus,
        name,
        {
            "steps": [
                {"id": "slow", "call": "wftarget.slow", "with": {"seconds": 3}, "timeout": "300ms"},
                {"id": "after", "call": "wftarget.echo", "depends_on": ["slow"]},
            ],
        },
    )
    run = await finished(wf.bus, await start(wf.bus, name))
    assert run["status"] == "failed"
    assert "timed out after 0.3s" in run["steps"]["slow"]["error"]
    assert run["steps"]["after"]["status"] == "cancelled"
    assert run["finished_at"] - run["created_at"] < 2.0
    assert "step slow failed" in run["error"]


async def test_unknown_endpoint_fails_the_step_with_the_reason(
    wf: Service, wftarget: Target
) -> None:
    name = unique("unknown")
    await put(wf.bus, name, {"steps": [{"id": "nope", "call": "nosuchservice.do_it"}]})
    run = await finished(wf.bus, await start(wf.bus, name))
    assert run["status"] == "failed"
    assert "no service answers on nosuchservice.do_it" in run["steps"]["nope"]["error"]


async def test_a_4xx_from_the_callee_is_not_retried(wf: Service, wftarget: Target) -> None:
    name = unique("final")
    await put(
        wf.bus,
        name,
        {
            "steps": [
                {
                    "id": "pay",
                    "call": "wftarget.reject",
                    "retry": {"max_attempts": 5, "backoff": 0.01},
                },
            ]
        },
    )
    run = await finished(wf.bus, await start(wf.bus, name))
    assert run["status"] == "failed"
    assert run["steps"]["pay"]["instances"][0]["attempts"] == 1
    assert "422" in run["steps"]["pay"]["error"] and "card declined" in run["steps"]["pay"]["error"]


async def test_a_run_whose_record_outgrows_a_message_fails_cleanly(
    wf: Service, wftarget: Target
) -> None:
    name = unique("huge")
    await put(
        wf.bus,
        name,
        {
            "steps": [
                {
                    "id": "each",
                    "call": "wftarget.echo",
                    "for_each": "range(60)",
                    "concurrency": 60,
                    "with": {"pad": "${{ 'x' * 20000 }}"},
                },
                {"id": "after", "call": "wftarget.echo", "depends_on": ["each"]},
            ]
        },
    )
    run = await finished(wf.bus, await start(wf.bus, name))
    assert run["status"] == "failed"
    assert "over the 900000-byte limit" in run["error"]
    assert run["steps"]["after"]["status"] == "cancelled"


async def test_a_call_answered_with_an_operation_waits_for_its_result(
    wf: Service, wftarget: Target
) -> None:
    name = unique("operation")
    await put(
        wf.bus,
        name,
        {
            "steps": [
                {"id": "long", "call": "wftarget.long", "with": {"n": 5, "seconds": 0.3}},
                {
                    "id": "use",
                    "call": "wftarget.echo",
                    "depends_on": ["long"],
                    "with": {"n": "${{ steps.long.output.n }}"},
                },
                {
                    "id": "bad",
                    "call": "wftarget.long",
                    "depends_on": ["use"],
                    "with": {"fail": True},
                },
            ]
        },
    )
    run = await finished(wf.bus, await start(wf.bus, name))
    assert run["steps"]["long"]["output"] == {"done": True, "n": 5}
    assert run["steps"]["use"]["output"]["echo"] == {"n": 5}
    assert run["status"] == "failed"
    assert "the long work failed" in run["steps"]["bad"]["error"]
