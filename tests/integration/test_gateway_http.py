"""The edge as a user meets it: routes from discovery, errors as problem+json, auth."""

from __future__ import annotations

import asyncio
import json

import httpx
from fleet_http import client_with_role
from fleet_service import build

from ccc.common.testing import refresh_catalog, running

PROBLEM = "application/problem+json"


async def test_happy_path_and_resource_route(nats_url, admin, service_name):
    async with running(build(service_name), nats_url):
        await refresh_catalog()
        r = await admin.post(
            f"/v1/orchestrate/{service_name}/echo", json={"text": "ab", "repeat": 2}
        )
        assert r.status_code == 200, r.text
        assert r.json()["text"] == "abab"
        assert r.headers["x-trace-id"]

        r = await admin.get(f"/v1/{service_name}/items/widget", params={"verbose": "true"})
        assert r.status_code == 200
        assert r.json() == {"name": "widget", "verbose": True}

        r = await admin.get(f"/v1/{service_name}/items/missing")
        assert r.status_code == 404
        assert r.headers["content-type"] == PROBLEM
        assert "missing" in r.json()["detail"]


async def test_bad_input_gets_clear_4xx(nats_url, admin, service_name):
    async with running(build(service_name), nats_url):
        await refresh_catalog()
        url = f"/v1/orchestrate/{service_name}/echo"

        r = await admin.post(url, json={"text": "x", "repeat": "many"})
        assert r.status_code == 422
        assert r.headers["content-type"] == PROBLEM
        assert [e["loc"] for e in r.json()["errors"]] == ["repeat"]

        r = await admin.post(url, json={})
        assert r.status_code == 422
        assert r.json()["errors"][0]["loc"] == "text"

        r = await admin.post(
            url, content=b'{"text": "x",', headers={"content-type": "application/json"}
        )
        assert r.status_code == 400
        assert "not valid JSON" in r.json()["detail"]

        r = await admin.post(url, content=b"<x/>", headers={"content-type": "application/xml"})
        assert r.status_code == 415

        r = await admin.post(
            url, content=b"x" * 1_100_000, headers={"content-type": "application/json"}
        )
        assert r.status_code == 413
        assert r.headers["content-type"] == PROBLEM

        r = await admin.post(f"/v1/orchestrate/{service_name}/nope", json={})
        assert r.status_code == 404
        assert r.headers["content-type"] == PROBLEM


async def test_auth_roles_and_rate_limit(nats_url, admin, gateway, service_name):
    async with running(build(service_name), nats_url):
        await refresh_catalog()
        url = f"/v1/orchestrate/{service_name}/echo"
        async with httpx.AsyncClient(base_url=gateway["url"]) as anonymous:
            r = await anonymous.post(url, json={"text": "x"})
            assert r.status_code == 401
            assert r.headers["content-type"] == PROBLEM
            r = await anonymous.post(url, json={"text": "x"}, headers={"X-API-Key": "ccc_nope"})
            assert r.status_code == 401

        reader = await client_with_role(admin, "reader")
        async with reader:
            assert (await reader.post(url, json={"text": "x"})).status_code == 200
            r = await reader.post(f"/v1/orchestrate/{service_name}/admin_only", json={"text": "x"})
            assert r.status_code == 403
            assert "admin" in r.json()["detail"]
            r = await reader.post("/v1/keys", json={"name": "x", "roles": ["admin"]})
            assert r.status_code == 403

        limited = await client_with_role(admin, "reader", rate=1)
        async with limited:
            statuses = [(await limited.post(url, json={"text": "x"})) for _ in range(4)]
        assert [r.status_code for r in statuses][:2] == [200, 200]
        assert statuses[-1].status_code == 429
        assert int(statuses[-1].headers["retry-after"]) >= 1


async def test_revoked_key_is_refused(nats_url, admin, service_name):
    reader = await client_with_role(admin, "reader")
    async with reader:
        key_id = reader.headers["X-API-Key"].split("_")[1]
        assert (await reader.get("/v1/catalog")).status_code == 200
        assert (await admin.delete(f"/v1/keys/{key_id}")).status_code == 204
        assert (await reader.get("/v1/catalog")).status_code == 401


async def test_service_down_is_503_and_slow_is_504(nats_url, admin, service_name):
    service = build(service_name)
    async with running(service, nats_url):
        await refresh_catalog()
        r = await admin.post(f"/v1/orchestrate/{service_name}/slow", json={"seconds": 3})
        assert r.status_code == 504
        assert r.headers["content-type"] == PROBLEM
    r = await admin.post(f"/v1/orchestrate/{service_name}/echo", json={"text": "x"})
    assert r.status_code == 503
    await refresh_catalog()
    r = await admin.post(f"/v1/orchestrate/{service_name}/echo", json={"text": "x"})
    assert r.status_code == 503, "a route whose service left answers 503, not 404"
    assert service_name in r.json()["detail"]


async def test_trace_id_of_http_request_reaches_the_service_span(nats_url, admin, service_name):
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with running(build(service_name), nats_url):
        await refresh_catalog()
        r = await admin.post(
            f"/v1/orchestrate/{service_name}/echo",
            json={"text": "t"},
            headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
        )
    assert r.status_code == 200
    assert r.json()["trace_id"] == trace_id
    assert r.headers["x-trace-id"] == trace_id


async def test_catalog_openapi_and_dropping_a_stopped_service(nats_url, admin, service_name):
    async with running(build(service_name), nats_url):
        await refresh_catalog()
        catalog = (await admin.get("/v1/catalog")).json()
        mine = [s for s in catalog["services"] if s["name"] == service_name]
        assert len(mine) == 1 and len(mine[0]["instances"]) == 1

        doc = (await admin.get("/openapi.json")).json()
        op = doc["paths"][f"/v1/orchestrate/{service_name}/echo"]["post"]
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        assert schema["properties"]["repeat"]["maximum"] == 10
        assert op["x-ccc-roles"] == ["reader"]
        params = doc["paths"][f"/v1/{service_name}/items/{{name}}"]["get"]["parameters"]
        assert {p["name"]: p["in"] for p in params} == {"name": "path", "verbose": "query"}

    async def gone() -> bool:
        services = (await admin.get("/v1/catalog")).json()["services"]
        return all(s["name"] != service_name for s in services)

    for _ in range(50):  # the stop event triggers a refresh; allow a few ticks
        if await gone():
            break
        await asyncio.sleep(0.1)
    assert await gone()
    doc = (await admin.get("/openapi.json")).json()
    assert f"/v1/orchestrate/{service_name}/echo" not in doc["paths"]


async def test_health_and_metrics_are_public(gateway):
    async with httpx.AsyncClient(base_url=gateway["url"]) as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["nats"] is True
        metrics = await client.get("/metrics")
        assert "ccc_gateway_requests_total" in metrics.text


async def test_every_call_is_audited(nats_url, admin, service_name):
    import nats

    nc = await nats.connect(nats_url)
    seen: list[dict] = []

    async def on_audit(msg):
        seen.append(json.loads(msg.data))

    await nc.subscribe("ccc.evt.gateway.audit", cb=on_audit)
    await nc.flush()
    r = await admin.get("/v1/catalog")
    assert r.status_code == 200
    for _ in range(50):
        if any(a["path"] == "/v1/catalog" for a in seen):
            break
        await asyncio.sleep(0.05)
    await nc.close()
    record = next(a for a in seen if a["path"] == "/v1/catalog")
    assert record["key_id"] == "admin" and record["status"] == 200
    assert "test-admin-key" not in json.dumps(seen)


async def test_discovery_stats_count_requests_and_errors(nats_url, admin, service_name):
    """What `ccc services` shows: per-endpoint request and error counts from $SRV.STATS."""
    import nats

    from ccc.common.discovery import discover

    async with running(build(service_name), nats_url):
        await refresh_catalog()
        for _ in range(3):
            await admin.post(f"/v1/orchestrate/{service_name}/echo", json={"text": "x"})
        await admin.post(f"/v1/orchestrate/{service_name}/echo", json={"text": 1})
        await admin.get(f"/v1/{service_name}/items/missing")
        nc = await nats.connect(nats_url)
        catalog = await discover(nc, window=0.2, with_stats=True)
        await nc.close()
    mine = next(s for s in catalog if s.name == service_name)
    echo = next(e for e in mine.endpoints if e.metadata["op"] == "echo")
    item = next(e for e in mine.endpoints if e.metadata["op"] == "item.get")
    assert (echo.requests, echo.errors) == (4, 1)
    assert (item.requests, item.errors) == (1, 1)
    assert echo.average_ms > 0


async def test_multipart_upload_arrives_as_json(nats_url, admin, service_name):
    async with running(build(service_name), nats_url):
        await refresh_catalog()
        url = f"/v1/orchestrate/{service_name}/upload"
        files = [
            ("files", ("a.txt", b"hello", "text/plain")),
            ("files", ("b.pdf", b"%PDF-1.4 fake", "application/pdf")),
        ]
        r = await admin.post(url, data={"title": "two files"}, files=files)
        assert r.status_code == 200, r.text
        assert r.json() == {"title": "two files", "files": {"a.txt": 5, "b.pdf": 13}}

        r = await admin.post(
            url, data={"title": "big"}, files=[("files", ("big.bin", b"x" * 800_000))]
        )
        assert r.status_code == 413
        assert "base64" in r.json()["detail"]

        r = await admin.post(url, data={"title": "no files"})
        assert r.status_code == 422
        assert r.json()["errors"][0]["loc"] == "files"


async def test_review_regressions(nats_url, admin, service_name):
    """Defects an independent review found, kept fixed."""
    async with running(build(service_name), nats_url):
        await refresh_catalog()
        base = f"/v1/orchestrate/{service_name}"
        # a handler's own asyncio.timeout cancels only that request; the endpoint lives on
        r = await admin.post(f"{base}/inner_timeout", json={"seconds": 1})
        assert r.json()["text"] == "inner timeout"
        for _ in range(3):
            r = await admin.post(f"{base}/inner_timeout", json={"seconds": 0})
            assert r.status_code == 200 and r.json()["text"] == "in time"
        # an answer too large for the bus is a prompt 500 problem, not a 504 after 10 s
        r = await admin.post(f"{base}/huge", json={"seconds": 0})
        assert r.status_code == 500 and "payload limit" in r.json()["detail"]
        # a binary answer keeps its bytes and media type through the edge
        r = await admin.post(f"{base}/wave", json={"ticks": 5})
        assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
        assert r.content == b"RIFF\x00\x01\x02\x03\x04"
        # a service's 429 keeps its Retry-After at the edge
        r = await admin.post(f"{base}/busy", json={"seconds": 2.5})
        assert r.status_code == 429 and r.headers["retry-after"] == "3"
        # an announced route cannot shadow the gateway's own
        r = await admin.post("/v1/keys", json={"name": "x", "roles": ["reader"]})
        assert r.status_code == 201 and "stolen" not in r.text

    reader = await client_with_role(admin, "reader")
    async with reader:
        for path in ("/v1/operations/evt-0123abcd", "/v1/operations/cmd-0123abcd"):
            assert (await reader.get(path)).status_code == 404
        r = await reader.get("/v1/operations", params={"domain": "cmd"})
        assert r.status_code == 404
    assert (await admin.delete("/v1/keys/a*")).status_code == 404
    for since in ("0", "99999999999999999999999"):
        r = await admin.get("/v1/events", params={"since": since})
        assert r.status_code == 422
