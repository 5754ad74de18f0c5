"""NATS micro discovery: every instance's INFO and STATS, merged per service.

``nc.request("$SRV.INFO")`` returns the first answer only; to see every instance we
publish with our own inbox and collect answers until the bus has been quiet for a
short window.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from nats.aio.client import Client as NATS
from pydantic import BaseModel, Field


async def gather(
    nc: NATS, subject: str, window: float = 0.25, limit: float = 2.0
) -> list[dict[str, Any]]:
    """Every answer to ``subject`` until ``window`` seconds pass without a new one."""
    inbox = nc.new_inbox()
    answers: list[dict[str, Any]] = []
    arrived = asyncio.Event()
    sub = await nc.subscribe(inbox)

    async def collect() -> None:
        async for msg in sub.messages:
            with contextlib.suppress(ValueError):
                answers.append(json.loads(msg.data))
            arrived.set()

    collector = asyncio.create_task(collect())
    try:
        await nc.publish(subject, b"", reply=inbox)
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), timeout=window)
            except TimeoutError:
                break
    finally:
        await sub.unsubscribe()
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
    return answers


class EndpointSummary(BaseModel):
    name: str
    subject: str
    metadata: dict[str, str] = Field(default_factory=dict)
    requests: int = 0
    errors: int = 0
    average_ms: float = 0.0


class ServiceSummary(BaseModel):
    name: str
    versions: list[str]
    description: str = ""
    instances: list[str]
    endpoints: list[EndpointSummary]

    @property
    def requests(self) -> int:
        return sum(e.requests for e in self.endpoints)

    @property
    def errors(self) -> int:
        return sum(e.errors for e in self.endpoints)


async def discover(
    nc: NATS, window: float = 0.25, with_stats: bool = False
) -> list[ServiceSummary]:
    """The live catalog: one summary per service name, instances merged."""
    infos, stats = await asyncio.gather(
        gather(nc, "$SRV.INFO", window),
        gather(nc, "$SRV.STATS", window) if with_stats else _nothing(),
    )
    return summarize(infos, stats)


async def _nothing() -> list[dict[str, Any]]:
    return []


def summarize(infos: list[dict[str, Any]], stats: list[dict[str, Any]]) -> list[ServiceSummary]:
    by_name: dict[str, ServiceSummary] = {}
    for info in sorted(infos, key=lambda i: (i.get("name", ""), i.get("version", ""))):
        name = info.get("name")
        if not name:
            continue
        summary = by_name.get(name)
        if summary is None:
            summary = ServiceSummary(
                name=name,
                versions=[],
                description=info.get("description", ""),
                instances=[],
                endpoints=[
                    EndpointSummary(
                        name=e["name"], subject=e["subject"], metadata=e.get("metadata") or {}
                    )
                    for e in info.get("endpoints") or []
                ],
            )
            by_name[name] = summary
        if info.get("version") not in summary.versions:
            summary.versions.append(info.get("version", ""))
        summary.instances.append(info.get("id", ""))
    for stat in stats:
        summary = by_name.get(stat.get("name", ""))
        if summary is None:
            continue
        endpoints = {e.name: e for e in summary.endpoints}
        for e in stat.get("endpoints") or []:
            target = endpoints.get(e.get("name", ""))
            if target is None:
                continue
            target.requests += e.get("num_requests", 0)
            target.errors += e.get("num_errors", 0)
            if target.requests:
                total_ns = target.average_ms * 1e6 * (target.requests - e.get("num_requests", 0))
                total_ns += e.get("processing_time", 0)
                target.average_ms = total_ns / target.requests / 1e6
    return list(by_name.values())
