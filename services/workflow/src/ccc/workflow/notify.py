"""Webhooks at the end of a run: POST the run summary, retried with backoff and jitter."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import httpx

from ccc.common import subjects
from ccc.common.bus import Bus

from .definition import Webhook

log = logging.getLogger(__name__)
ATTEMPTS = 5
BACKOFF = 0.5


async def deliver(
    bus: Bus, hooks: list[Webhook], summary: dict[str, Any], attempts: int = ATTEMPTS
) -> list[bool]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        return list(await asyncio.gather(*(_one(bus, client, h, summary, attempts) for h in hooks)))


async def _one(
    bus: Bus, client: httpx.AsyncClient, hook: Webhook, summary: dict[str, Any], attempts: int
) -> bool:
    body = {"event": f"workflow.run.{summary['status']}", "run": summary}
    headers = {"Idempotency-Key": f"{summary['run_id']}:{summary['status']}"}
    reason = ""
    for attempt in range(1, attempts + 1):
        try:
            response = await client.post(hook.url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            reason = f"{type(exc).__name__}: {exc}"
        else:
            if response.is_success:
                return True
            reason = f"HTTP {response.status_code}"
            if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                break  # the receiver refuses this body: another try will not change that
        if attempt < attempts:
            delay = BACKOFF * 2 ** (attempt - 1)
            await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
    log.warning("webhook %s for run %s failed: %s", hook.url, summary["run_id"], reason)
    await bus.publish(
        subjects.event_subject("workflow", "webhook.failed"),
        {"run_id": summary["run_id"], "url": hook.url, "error": reason},
    )
    return False
