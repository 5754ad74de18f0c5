"""Long work: 202 at once, progress events, the record over REST, and recovery."""

from __future__ import annotations

import asyncio
import json

import nats
from fleet_service import build

from ccc.common.bus import Bus
from ccc.common.testing import refresh_catalog, running, wait_until


async def _final(admin, op_id: str) -> dict:
    record: dict = {}

    async def finished() -> bool:
        nonlocal record
        record = (await admin.get(f"/v1/operations/{op_id}")).json()
        return record["status"] in ("succeeded", "failed", "cancelled")

    await wait_until(finished, timeout=10)
    return record


async def test_operation_202_progress_and_result(nats_url, admin, service_name):
    async with running(build(service_name), nats_url):
        await refresh_catalog()
        nc = await nats.connect(nats_url)
        progress: list[dict] = []

        async def on_event(msg):
            progress.append({"subject": msg.subject, **json.loads(msg.data)})

        await nc.subscribe(f"ccc.evt.{service_name}.operation.>", cb=on_event)
        await nc.flush()
        r = await admin.post(f"/v1/orchestrate/{service_name}/job", json={"steps": 4})
        assert r.status_code == 202, r.text
        op = r.json()
        assert op["status"] == "running"
        assert r.headers["location"] == f"/v1/operations/{op['id']}"
        record = await _final(admin, op["id"])
        await asyncio.sleep(0.1)
        await nc.close()
    assert record["status"] == "succeeded"
    assert record["result"] == {"steps_done": 4}
    assert record["progress"] == 1.0
    fractions = [e["progress"] for e in progress if e["subject"].endswith(".progress")]
    assert fractions == [0.25, 0.5, 0.75, 1.0]
    assert progress[-1]["subject"].endswith(".succeeded")


async def test_failed_operation_and_unknown_ids(nats_url, admin, service_name):
    async with running(build(service_name), nats_url):
        await refresh_catalog()
        r = await admin.post(f"/v1/orchestrate/{service_name}/job", json={"steps": 1, "fail": True})
        record = await _final(admin, r.json()["id"])
        assert record["status"] == "failed"
        assert record["error"]["status"] == 404
        r = await admin.get(f"/v1/operations/{service_name}-0123456789abcdef")
        assert r.status_code == 404
        r = await admin.get("/v1/operations/not-an-id")
        assert r.status_code in (404, 422, 503)
        r = await admin.get("/v1/operations", params={"domain": service_name})
        assert r.status_code == 200 and len(r.json()["operations"]) == 1


async def test_cancel_a_running_operation(nats_url, admin, service_name):
    async with running(build(service_name), nats_url):
        await refresh_catalog()
        r = await admin.post(
            f"/v1/orchestrate/{service_name}/job", json={"steps": 50, "step_seconds": 0.1}
        )
        op_id = r.json()["id"]
        await asyncio.sleep(0.3)
        r = await admin.post(f"/v1/operations/{op_id}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        await asyncio.sleep(0.3)
        record = (await admin.get(f"/v1/operations/{op_id}")).json()
        assert record["status"] == "cancelled"
        assert record["progress"] < 1.0
        r = await admin.post(f"/v1/operations/{op_id}/cancel")
        assert r.status_code == 409


async def test_restart_resumes_or_fails_unfinished_operations(nats_url, service_name):
    """An instance dies holding two operations; the next instance resumes the resumable
    one and fails the other with an explicit reason; neither is forgotten."""
    settings = {"operation_lease": 0.6}
    first = build(service_name)
    async with running(first, nats_url, **settings):
        bus = first.bus
        resumable = await bus.call(f"{service_name}.job", {"steps": 20, "step_seconds": 0.1})
        fragile = await bus.call(f"{service_name}.fragile_job", {"steps": 20, "step_seconds": 0.1})
        await asyncio.sleep(0.3)
        # Simulate a crash: the tasks die without writing anything.
        for task in list(first.operations._tasks.values()):
            task.cancel()
        first.operations._sweeper.cancel()  # type: ignore[union-attr]
        await asyncio.sleep(0.05)

    nc = await nats.connect(nats_url)
    reader = Bus(nc)
    second = build(service_name)
    async with running(second, nats_url, **settings):

        async def both_finished() -> bool:
            a = await reader.call(f"{service_name}.operation.get", {"id": resumable["id"]})
            b = await reader.call(f"{service_name}.operation.get", {"id": fragile["id"]})
            return a["status"] == "succeeded" and b["status"] == "failed"

        await wait_until(both_finished, timeout=15)
        a = await reader.call(f"{service_name}.operation.get", {"id": resumable["id"]})
        b = await reader.call(f"{service_name}.operation.get", {"id": fragile["id"]})
    await nc.close()
    assert a["attempts"] == 2 and a["result"] == {"steps_done": 20}
    assert "interrupted" in b["error"]["detail"]


async def test_a_reader_sees_only_its_own_operations(nats_url, admin, service_name):
    from fleet_http import client_with_role

    async with running(build(service_name), nats_url):
        await refresh_catalog()
        operator = await client_with_role(admin, "operator")
        reader = await client_with_role(admin, "reader")
        async with operator, reader:
            r = await operator.post(f"/v1/orchestrate/{service_name}/job", json={"steps": 1})
            op_id = r.json()["id"]
            assert (await operator.get(f"/v1/operations/{op_id}")).status_code == 200
            assert (await admin.get(f"/v1/operations/{op_id}")).status_code == 200
            r = await reader.get(f"/v1/operations/{op_id}")
            assert r.status_code == 404, "a reader may not read another key's request and result"
            listed = await reader.get("/v1/operations", params={"domain": service_name})
            assert listed.json()["operations"] == []
