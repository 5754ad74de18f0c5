"""Backup schedules: five-field cron in UTC, run by whichever instance wins the CAS.

``tick()`` is the whole scheduler: for each schedule whose ``next_run`` has passed on
the runtime clock, it moves ``next_run`` forward with compare-and-swap (so of N
instances exactly one starts the run) and starts a ``backup.create`` operation through
the bus. Runs missed while no instance was up collapse into one. Retention is applied
by the backup itself once it succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from croniter import croniter

from ccc.common import CCCError, Conflict, Invalid
from ccc.common.bus import Bus
from ccc.common.state import StateStore

from .models import CreateSchedule, ScheduleView
from .registry import runtime

log = logging.getLogger(__name__)


def schedule_key(name: str) -> str:
    return f"schedule.{name}"


def next_run(cron: str, after: datetime) -> datetime:
    if not croniter.is_valid(cron) or len(cron.split()) != 5:
        raise Invalid(
            f"cron {cron!r} is not a valid five-field expression (minute hour day month weekday)",
            errors=[{"loc": "cron", "msg": "invalid cron expression", "type": "value_error"}],
        )
    return croniter(cron, after).get_next(datetime)  # type: ignore[no-any-return]


def new_schedule(req: CreateSchedule) -> ScheduleView:
    return ScheduleView(
        name=req.name,
        server=req.server,
        database=req.database,
        cron=req.cron,
        retention=req.retention,
        next_run=next_run(req.cron, runtime.now()),
    )


async def tick(state: StateStore, bus: Bus) -> list[str]:
    """Start every due schedule once; returns the operation ids started."""
    now = runtime.now()
    started: list[str] = []
    async for entry in state.items("schedule."):
        schedule = ScheduleView.model_validate(entry.value)
        if schedule.next_run > now:
            continue
        claimed = schedule.model_copy(
            update={"next_run": next_run(schedule.cron, now), "last_run": now}
        )
        try:
            revision = await state.update(entry.key, claimed, entry.revision)
        except Conflict:
            continue  # another instance took this run
        try:
            op = await bus.call(
                "database.backup.create",
                {
                    "server": schedule.server,
                    "database": schedule.database,
                    "schedule": schedule.name,
                },
            )
        except CCCError as exc:
            log.warning("schedule %s could not start its backup: %s", schedule.name, exc.detail)
            continue
        started.append(op["id"])
        with contextlib.suppress(Conflict):
            await state.update(
                entry.key, claimed.model_copy(update={"last_operation": op["id"]}), revision
            )
    return started


async def run_forever(state: StateStore, bus: Bus, interval: float) -> None:
    while True:
        try:
            await tick(state, bus)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("scheduler tick failed")
        await asyncio.sleep(interval)
