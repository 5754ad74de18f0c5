"""HTTP clients holding API keys of a given role, issued through the gateway."""

from __future__ import annotations

import httpx


async def client_with_role(
    admin: httpx.AsyncClient, role: str, rate: float | None = None
) -> httpx.AsyncClient:
    body: dict[str, object] = {"name": f"test-{role}", "roles": [role]}
    if rate:
        body["rate_limit_rps"] = rate
    r = await admin.post("/v1/keys", json=body)
    assert r.status_code == 201, r.text
    return httpx.AsyncClient(
        base_url=str(admin.base_url), headers={"X-API-Key": r.json()["key"]}, timeout=15
    )
