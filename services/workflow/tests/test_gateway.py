"""Through the edge: the same endpoints over HTTP, with problem+json for bad input."""

from __future__ import annotations

import asyncio

import httpx

from ccc.common import Service
from ccc.common.testing import refresh_catalog, wait_until

from .conftest import Target, unique

YAML = """
description: order fulfilment
params: {qty: 1}
steps:
  - id: reserve
    call: wftarget.echo
    with: {sku: "${{ params.sku }}", qty: "${{ params.qty }}"}
  - id: pack
    for_each: "split(steps.reserve.output.echo.sku, '-')"
    concurrency: 2
    call: wftarget.echo
    with: {part: "${{ item }}"}
    depends_on: [reserve]
  - id: ship
    call: wftarget.echo
    depends_on: [pack]
    with: {parts: "${{ len(steps.pack.output) }}"}
output:
  parts: "${{ steps.ship.output.echo.parts }}"
"""


async def test_define_run_and_follow_over_http(
    gateway: dict[str, str], wf: Service, wftarget: Target
) -> None:
    await refresh_catalog()
    headers = {"Authorization": f"Bearer {gateway['admin_key']}"}
    name = unique("http")
    async with httpx.AsyncClient(base_url=gateway["url"], headers=headers, timeout=10) as http:
        r = await http.put(f"/v1/workflows/{name}", json={"source": YAML})
        assert r.status_code == 200, r.text
        assert r.json()["version"] == 1

        r = await http.post(f"/v1/workflows/{name}/runs", json={"params": {"sku": "a-b-c"}})
        assert r.status_code == 200, r.text
        run_id = r.json()["id"]
        assert r.json()["caller"]["key_id"]  # the run acts as the key that started it

        async def done() -> bool:
            got = await http.get(f"/v1/workflow-runs/{run_id}")
            return bool(got.json()["status"] == "succeeded")

        await wait_until(done, timeout=10)
        run = (await http.get(f"/v1/workflow-runs/{run_id}")).json()
        assert run["output"] == {"parts": 3}
        assert [i["item"] for i in run["steps"]["pack"]["instances"]] == ["a", "b", "c"]

        history = (await http.get(f"/v1/workflow-runs/{run_id}/history")).json()
        assert history["entries"][-1]["status"] == "succeeded"
        runs = (await http.get("/v1/workflow-runs", params={"workflow": name})).json()["runs"]
        assert [r["id"] for r in runs] == [run_id]
        assert (await http.get(f"/v1/workflows/{name}", params={"version": 1})).status_code == 200
        schema = (await http.get("/v1/workflow-schema")).json()
        assert schema["$schema"].endswith("2020-12/schema")


async def test_bad_definitions_are_422_problems_over_http(
    gateway: dict[str, str], wf: Service
) -> None:
    await refresh_catalog()
    headers = {"Authorization": f"Bearer {gateway['admin_key']}"}
    async with httpx.AsyncClient(base_url=gateway["url"], headers=headers, timeout=10) as http:
        r = await http.put(
            f"/v1/workflows/{unique('bad')}",
            json={
                "definition": {
                    "steps": [
                        {"id": "a", "call": "x.y", "depends_on": ["b"]},
                        {"id": "b", "call": "x.y", "depends_on": ["a"]},
                    ]
                }
            },
        )
        assert r.status_code == 422
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "dependency cycle: a -> b -> a" in r.json()["detail"]

        r = await http.put(
            f"/v1/workflows/{unique('bad')}",
            json={
                "definition": {
                    "steps": [
                        {"id": "a", "call": "x.y", "timeout": "soon"},
                    ]
                }
            },
        )
        assert r.status_code == 422
        assert r.json()["errors"][0]["loc"] == "steps.a.timeout"

        r = await http.put(
            f"/v1/workflows/{unique('bad')}",
            json={
                "definition": {
                    "steps": [
                        {"id": "a", "call": "x.y"},
                        {
                            "id": "b",
                            "call": "x.y",
                            "depends_on": ["a"],
                            "with": {"v": "${{ steps.c.output }}"},
                        },
                    ]
                }
            },
        )
        assert r.status_code == 422
        assert r.json()["errors"][0]["step"] == "b"

        r = await http.post("/v1/workflows/nope-not-here/runs", json={})
        assert r.status_code == 404


async def test_webhook_is_retried_until_the_receiver_takes_it(
    wf: Service, wftarget: Target
) -> None:
    received: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        received.append(await reader.readexactly(length))
        status = b"503 Busy" if len(received) == 1 else b"204 No Content"
        writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    name = unique("hook")
    try:
        await wf.bus.call(
            "workflow.definition.put",
            {
                "name": name,
                "definition": {
                    "notify": {"webhooks": [{"url": f"http://127.0.0.1:{port}/hook"}]},
                    "steps": [{"id": "a", "call": "wftarget.echo"}],
                },
            },
        )
        run = await wf.bus.call("workflow.run.start", {"name": name})
        await wait_until(lambda: len(received) >= 2, timeout=10)
    finally:
        server.close()
    assert b'"status": "succeeded"' in received[1] or b'"status":"succeeded"' in received[1]
    assert run["id"].encode() in received[1]


async def test_triggered_runs_act_as_the_key_that_defined_them(
    gateway: dict[str, str], wf: Service, wftarget: Target
) -> None:
    """An operator cannot reach an admin-only endpoint by hiding the call in a workflow
    that an event starts: triggered runs carry the roles of the key that stored them."""
    await refresh_catalog()
    admin = {"Authorization": f"Bearer {gateway['admin_key']}"}
    async with httpx.AsyncClient(base_url=gateway["url"], timeout=10) as http:
        r = await http.post(
            "/v1/keys", headers=admin, json={"name": "wf-operator", "roles": ["operator"]}
        )
        assert r.status_code == 201, r.text
        operator = {"Authorization": f"Bearer {r.json()['key']}"}
        operator_id = r.json()["id"]
        name = unique("escalate")
        subject = f"ccc.evt.wftest.escalate.{name.replace('-', '_')}"
        r = await http.put(
            f"/v1/workflows/{name}",
            headers=operator,
            json={
                "definition": {
                    "triggers": [{"event": subject}],
                    "steps": [{"id": "grab", "call": "wftarget.admin_only"}],
                }
            },
        )
        assert r.status_code == 200, r.text
        await wf.bus.publish_durable(subject, {"x": 1})

        async def ended() -> bool:
            runs = (await wf.bus.call("workflow.run.list", {"workflow": name}))["runs"]
            return bool(runs) and runs[0]["status"] in ("succeeded", "failed")

        await wait_until(ended, timeout=10)
        runs = (await wf.bus.call("workflow.run.list", {"workflow": name}))["runs"]
        run = await wf.bus.call("workflow.run.get", {"run_id": runs[0]["id"]})
    assert run["caller"] == {"key_id": operator_id, "roles": ["operator"]}
    assert run["status"] == "failed"
    assert "403" in run["steps"]["grab"]["error"]
