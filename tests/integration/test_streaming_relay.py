"""Streams through the edge: bus frames become Server-Sent Events, breaks are explicit."""

from __future__ import annotations

import json

from fleet_service import build

from ccc.common.testing import refresh_catalog, running


async def _events(admin, url: str, body: dict) -> tuple[int, str, list[str]]:
    async with admin.stream("POST", url, json=body) as response:
        lines = [line async for line in response.aiter_lines() if line.startswith("data: ")]
        return response.status_code, response.headers["content-type"], [x[6:] for x in lines]


async def test_stream_relayed_as_sse_with_done(nats_url, admin, service_name):
    async with running(build(service_name), nats_url):
        await refresh_catalog()
        url = f"/v1/orchestrate/{service_name}/ticks"
        status, ctype, data = await _events(admin, url, {"ticks": 3, "stream": True})
        assert status == 200 and ctype.startswith("text/event-stream")
        assert data == ['{"tick": 0}', '{"tick": 1}', '{"tick": 2}', "[DONE]"]

        r = await admin.post(url, json={"ticks": 2})  # no stream asked: one JSON answer
        assert r.status_code == 200 and r.json() == {"ticks": [0, 1]}


async def test_broken_stream_ends_with_an_error_event(nats_url, admin, service_name):
    async with running(build(service_name), nats_url):
        await refresh_catalog()
        url = f"/v1/orchestrate/{service_name}/ticks"
        _, _, data = await _events(admin, url, {"ticks": 5, "stream": True, "break_after": 2})
        assert data[:2] == ['{"tick": 0}', '{"tick": 1}']
        assert "[DONE]" not in data
        error = json.loads(data[-1])["error"]
        assert error["code"] == 503 and "went away" in error["message"]

        _, _, data = await _events(
            admin, url, {"ticks": 5, "stream": True, "break_after": 1, "how": "vanish"}
        )
        assert data[0] == '{"tick": 0}' and "[DONE]" not in data
        assert "error" in json.loads(data[-1])


async def test_stream_that_cannot_start_is_a_problem(nats_url, admin, service_name):
    async with running(build(service_name), nats_url):
        await refresh_catalog()
        r = await admin.post(
            f"/v1/orchestrate/{service_name}/ticks", json={"ticks": 500, "stream": True}
        )
        assert r.status_code == 422
        assert r.headers["content-type"] == "application/problem+json"
