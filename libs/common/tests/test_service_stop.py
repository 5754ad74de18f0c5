"""Stopping a service: what was accepted is answered, one way or the other."""

from __future__ import annotations

import asyncio
import json
import uuid

import nats
from pydantic import BaseModel

from ccc.common import Context, Service
from ccc.common.settings import Settings


class Pause(BaseModel):
    seconds: float = 0.0


class Paused(BaseModel):
    slept: float


async def _ask(nc: nats.NATS, subject: str, body: dict[str, float]) -> tuple[int | str, dict]:
    try:
        msg = await nc.request(subject, json.dumps(body).encode(), timeout=8.0)
    except nats.errors.TimeoutError:
        return "no reply", {}
    headers = msg.headers or {}
    status = int(headers.get("Nats-Service-Error-Code") or headers.get("Ccc-Status") or 200)
    return status, json.loads(msg.data)


async def test_stopping_answers_running_and_queued_requests_with_a_503(nats_url: str) -> None:
    """One slot and a drain shorter than the request: the running request is stopped
    and says so; the queued one was never started and is told to send it again."""
    service = Service(f"stop{uuid.uuid4().hex[:6]}")

    @service.endpoint("pause", roles=("reader",))
    async def pause(req: Pause, ctx: Context) -> Paused:
        """Sleep."""
        await asyncio.sleep(req.seconds)
        return Paused(slept=req.seconds)

    service.settings = Settings(nats_url=nats_url, max_concurrency=1, drain_timeout=0.5)
    await service.start()
    await service.commands.stop(0)  # its long poll holds the only slot now and then
    nc = await nats.connect(nats_url)
    try:
        subject = f"ccc.{service.name}.pause"
        running = asyncio.create_task(_ask(nc, subject, {"seconds": 5}))
        await asyncio.sleep(0.1)
        queued = asyncio.create_task(_ask(nc, subject, {"seconds": 5}))
        await asyncio.sleep(0.1)
        await asyncio.wait_for(service.stop(), 10)
        (status1, stopped), (status2, unstarted) = await asyncio.gather(running, queued)
    finally:
        await nc.close()
    assert status1 == 503 and "stopped before pause finished" in stopped["detail"]
    assert status2 == 503 and "was not started" in unstarted["detail"]
    assert unstarted["retry_after"] == 1.0
