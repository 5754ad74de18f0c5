"""Reading a run's history from ``CCC_WORKFLOW_HISTORY``: what was recorded, then what comes."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

HISTORY_STREAM = "CCC_WORKFLOW_HISTORY"
HISTORY_PREFIX = "ccc.workflow.history"


def subject(run_id: str) -> str:
    return f"{HISTORY_PREFIX}.{run_id}"


async def follow(
    js: JetStreamContext, run_id: str, *, live: bool, idle: float = 0.5
) -> AsyncIterator[dict[str, Any]]:
    """Yield history entries from the first; with ``live`` keep waiting for new ones
    (the caller stops iterating), otherwise stop once caught up."""
    sub = await js.subscribe(
        subject(run_id),
        stream=HISTORY_STREAM,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
    )
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=idle)
            except (TimeoutError, NatsTimeout):
                if live:
                    continue
                return
            yield json.loads(msg.data)
            if not live and msg.metadata.num_pending == 0:
                return
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def read(js: JetStreamContext, run_id: str, limit: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async for entry in follow(js, run_id, live=False):
        out.append(entry)
        if len(out) >= limit:
            break
    return out
