"""Through the edge: routes appear from discovery; uploads are JSON with base64 content,
or multipart, which the edge converts to the same JSON."""

from __future__ import annotations

import base64

import httpx

from ccc.common import Service
from ccc.common.testing import refresh_catalog, wait_until


async def test_collections_ingest_search_and_errors_over_http(
    gateway: dict[str, str], rag: Service
) -> None:
    await refresh_catalog()
    headers = {"Authorization": f"Bearer {gateway['admin_key']}"}
    async with httpx.AsyncClient(base_url=gateway["url"], headers=headers, timeout=30) as http:
        r = await http.post("/v1/rag/collections", json={"name": "edge"})
        assert r.status_code == 200, r.text
        assert r.json()["dimensions"] == 384

        note = base64.b64encode(b"The gateway of the station opens at 06:00 sharp.").decode()
        r = await http.post(
            "/v1/rag/collections/edge/ingest",
            json={"files": [{"filename": "hours.txt", "content_base64": note}]},
        )
        assert r.status_code == 202, r.text
        op_id = r.json()["id"]

        async def done() -> bool:
            got = await http.get(f"/v1/operations/{op_id}")
            return bool(got.json()["status"] == "succeeded")

        await wait_until(done, timeout=20)
        r = await http.post(
            "/v1/rag/collections/edge/search", json={"query": "when does the gateway open"}
        )
        assert r.status_code == 200, r.text
        assert "06:00" in r.json()["hits"][0]["text"]

        bad = base64.b64encode(b"\x7fELF binary").decode()
        r = await http.post(
            "/v1/rag/collections/edge/ingest",
            json={"files": [{"filename": "tool.bin", "content_base64": bad}]},
        )
        assert r.status_code == 415, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "pdf" in r.json()["detail"] and "docx" in r.json()["detail"]

        r = await http.post("/v1/rag/collections/absent/search", json={"query": "x"})
        assert r.status_code == 404, r.text
        r = await http.post(
            "/v1/rag/collections/absent/ingest",
            json={"texts": [{"source": "a", "text": "b"}]},
        )
        assert r.status_code == 404, r.text
        r = await http.post(
            "/v1/rag/collections/edge/ingest",
            json={"files": [{"filename": "x.txt", "content_base64": "not base64!"}]},
        )
        assert r.status_code == 422, r.text

        # A browser-style multipart upload: the edge turns it into the same JSON.
        r = await http.post(
            "/v1/rag/collections/edge/ingest",
            files=[
                (
                    "files",
                    ("tides.md", b"# Tides\n\nHigh tide at the pier is at 14:10.", "text/markdown"),
                )
            ],
        )
        assert r.status_code == 202, r.text
        op_id = r.json()["id"]
        await wait_until(done, timeout=20)
        r = await http.post("/v1/rag/collections/edge/search", json={"query": "high tide pier"})
        assert "14:10" in r.json()["hits"][0]["text"]

        r = await http.get("/v1/rag/collections/edge")
        assert r.json()["documents"] == 2 and r.json()["chunks"] == 2
        r = await http.delete("/v1/rag/collections/edge")
        assert r.status_code == 200, r.text
        r = await http.get("/v1/rag/collections/edge")
        assert r.status_code == 404
