"""Events at the edge: publish over HTTP, receive as Server-Sent Events."""

from __future__ import annotations

import asyncio
import json

import httpx


async def _read_events(client: httpx.AsyncClient, params: dict, want: int, out: list[dict]) -> None:
    async with client.stream("GET", "/v1/events", params=params) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event: dict = {}
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                event["id"] = int(line[4:])
            elif line.startswith("event: "):
                event["subject"] = line[7:]
            elif line.startswith("data: "):
                event["data"] = json.loads(line[6:])
            elif line == "" and event:
                out.append(event)
                event = {}
                if len(out) >= want:
                    return


async def test_sse_client_receives_published_events(admin):
    received: list[dict] = []
    reader = asyncio.create_task(_read_events(admin, {"subject": "ccc.evt.ssetest.>"}, 2, received))
    await asyncio.sleep(0.5)  # the stream starts "now": subscribe before publishing
    for n in (1, 2):
        r = await admin.post("/v1/events/ccc.evt.ssetest.hello", json={"n": n})
        assert r.status_code == 202, r.text
    await asyncio.wait_for(reader, 10)
    assert [e["data"] for e in received] == [{"n": 1}, {"n": 2}]
    assert all(e["subject"] == "ccc.evt.ssetest.hello" for e in received)

    # Resume from a sequence: the second event again, and nothing before it.
    again: list[dict] = []
    await asyncio.wait_for(
        _read_events(
            admin, {"subject": "ccc.evt.ssetest.>", "since": str(received[1]["id"])}, 1, again
        ),
        10,
    )
    assert again[0]["data"] == {"n": 2}


async def test_event_publishing_rules(admin):
    r = await admin.post(
        "/v1/events/ccc.evt.ssetest.dup", json={"x": 1}, headers={"Idempotency-Key": "k1"}
    )
    assert r.status_code == 202 and r.json()["duplicate"] is False
    r = await admin.post(
        "/v1/events/ccc.evt.ssetest.dup", json={"x": 1}, headers={"Idempotency-Key": "k1"}
    )
    assert r.json()["duplicate"] is True
    for bad, status in (
        ("ccc.billing.charge", 422),
        ("$JS.API.STREAM.DELETE.CCC_EVENTS", 422),
        ("ccc.evt.>", 422),
        ("ccc.evt.A B", 422),
        ("ccc.cmd.a", 422),
        ("ccc.evt.gateway.audit", 403),
        ("ccc.evt.billing.service.started", 403),
        ("ccc.evt.billing.operation.succeeded", 403),
        ("ccc.evt.billing.charge.completed", 403),
        ("ccc.cmd.nosuchservice.run", 404),
    ):
        r = await admin.post(f"/v1/events/{bad}", json={})
        assert r.status_code == status, (bad, r.status_code, r.text)
    r = await admin.post(
        "/v1/events/ccc.evt.ssetest.x",
        content=b"{nope",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
    r = await admin.get("/v1/events", params={"subject": "ccc.cmd.>"})
    assert r.status_code == 422
    r = await admin.get("/v1/events", params={"since": "yesterday-ish"})
    assert r.status_code == 422
