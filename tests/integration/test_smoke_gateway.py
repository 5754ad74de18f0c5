import httpx
from pydantic import BaseModel

from ccc.common import Context, Service
from ccc.common.testing import running
from conftest import refresh_catalog


class In(BaseModel):
    text: str


class Out(BaseModel):
    text: str


async def test_gateway_routes_to_a_live_service(nats_url: str, gateway: dict[str, str]) -> None:
    svc = Service("smoketest")

    @svc.endpoint("echo", roles=("reader",))
    async def echo(req: In, ctx: Context) -> Out:
        return Out(text=req.text.upper())

    async with running(svc, nats_url):
        await refresh_catalog()
        async with httpx.AsyncClient(base_url=gateway["url"]) as client:
            r = await client.post(
                "/v1/orchestrate/smoketest/echo",
                json={"text": "hi"},
                headers={"Authorization": f"Bearer {gateway['admin_key']}"},
            )
    assert r.status_code == 200, r.text
    assert r.json() == {"text": "HI"}
