"""Several instances: shared load, and a graceful stop under load that loses nothing."""

from __future__ import annotations

import asyncio
from collections import Counter

from fleet_service import build

from ccc.common.testing import refresh_catalog, running


async def test_two_instances_share_the_load(nats_url, admin, service_name):
    a, b = build(service_name), build(service_name)
    async with running(a, nats_url), running(b, nats_url):
        await refresh_catalog()
        catalog = (await admin.get("/v1/catalog")).json()["services"]
        assert len(next(s for s in catalog if s["name"] == service_name)["instances"]) == 2

        async def one(i: int) -> str:
            r = await admin.post(f"/v1/orchestrate/{service_name}/echo", json={"text": str(i)})
            assert r.status_code == 200
            return str(r.json()["instance"])

        served = Counter(await asyncio.gather(*(one(i) for i in range(200))))
    assert set(served) == {a.instance, b.instance}
    assert min(served.values()) > 20, served


async def test_stopping_an_instance_under_load_loses_no_request(nats_url, admin, service_name):
    a, b = build(service_name), build(service_name)
    async with running(b, nats_url):
        statuses: list[int] = []
        async with running(a, nats_url):
            await refresh_catalog()
            sem = asyncio.Semaphore(40)

            async def one() -> None:
                async with sem:
                    r = await admin.post(
                        f"/v1/orchestrate/{service_name}/pause", json={"seconds": 0.02}
                    )
                    statuses.append(r.status_code)

            load = [asyncio.create_task(one()) for _ in range(600)]
            await asyncio.sleep(0.3)  # under load now
            await a.stop()  # graceful drain of one instance while requests keep coming
            await asyncio.gather(*load)
    assert len(statuses) == 600
    assert Counter(statuses) == {200: 600}, Counter(statuses)
