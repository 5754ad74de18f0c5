"""Finished runs leave after ``agents_run_retention_days``: the run, its steps, decisions,
agent snapshots and operation record (KV ``run.``, ``step.``, ``approval.``, ``runagent.``,
``operation.``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ccc.common.state import StateStore

from .models import RUN_DONE, Run

log = logging.getLogger(__name__)


async def sweep(state: StateStore, finished_before: float) -> int:
    """Delete every run that finished before ``finished_before`` (epoch seconds)."""
    gone = 0
    async for entry in state.items("run."):
        run = Run.model_validate(entry.value)
        if run.status not in RUN_DONE or (run.finished_at or run.updated_at) >= finished_before:
            continue
        for prefix in (f"step.{run.id}.", f"approval.{run.id}.", f"runagent.{run.id}."):
            for key in await state.keys(prefix):
                await state.delete(key)
        await state.delete(f"operation.{run.id}")  # the run's operation record, same bucket
        await state.delete(entry.key)
        gone += 1
    return gone


async def forever(state: StateStore, retention_days: float, interval: float = 3600.0) -> None:
    while True:
        await asyncio.sleep(interval)
        with contextlib.suppress(Exception):
            gone = await sweep(state, time.time() - retention_days * 86400)
            if gone:
                log.info("deleted %d finished runs older than %g days", gone, retention_days)
