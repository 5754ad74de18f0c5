"""Cron and event triggers, each firing exactly once however many instances run.

A fire gets a run id derived from what fired it (the definition, trigger and scheduled
time; or the event's stream sequence), and creating a run is create-if-absent, so two
instances firing the same schedule, or an event redelivered after a crash, start one
run. Cron state (``cron.<name>.<n>``, the last fire time) is moved by CAS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from croniter import croniter
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from ccc.common import CCCError, subjects

from . import expr
from .clock import Clock
from .definition import Trigger

if TYPE_CHECKING:
    from .engine import Engine
    from .library import DefinitionRecord

log = logging.getLogger(__name__)
TRIGGER_CONSUMER = "workflow_triggers"
MAX_CATCH_UP = 10_000


def cron_key(name: str, index: int) -> str:
    return f"cron.{name}.{index}"


def latest_due(trigger: Trigger, after: float, now: float) -> float | None:
    """The latest scheduled time in (after, now], in the trigger's time zone; None if none.
    Fires missed while no instance ran collapse into this one (no thundering catch-up)."""
    tz = ZoneInfo(trigger.timezone)
    it = croniter(trigger.cron or "", datetime.fromtimestamp(after, tz))
    due: float | None = None
    for _ in range(MAX_CATCH_UP):
        nxt = float(it.get_next(float))
        if nxt > now:
            break
        due = nxt
    return due


def next_fire(trigger: Trigger, after: float) -> float:
    tz = ZoneInfo(trigger.timezone)
    return float(croniter(trigger.cron or "", datetime.fromtimestamp(after, tz)).get_next(float))


class CronScheduler:
    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.engine.library.listeners.append(self._changed.set)
        self._task = asyncio.create_task(self._loop(), name="workflow-cron")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            self._changed.clear()
            try:
                wake = await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("cron tick failed")
                wake = self.clock.now() + 1.0
            poll = self.engine.settings.workflow_cron_poll
            sleep = asyncio.create_task(
                self.clock.sleep(max(0.0, min(wake - self.clock.now(), poll)))
            )
            changed = asyncio.create_task(self._changed.wait())
            try:
                await asyncio.wait({sleep, changed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleep.cancel()
                changed.cancel()

    async def tick(self) -> float:
        """Fire what is due; return when the next fire is due."""
        now = self.clock.now()
        wake = now + 3600.0
        state = self.engine.state
        for record in list(self.engine.library.latest.values()):
            definition = record.parsed()
            for index, trigger in enumerate(definition.triggers):
                if trigger.cron is None:
                    continue
                key = cron_key(record.name, index)
                entry = await state.entry(key)
                if (
                    entry is None
                    or entry.value.get("cron") != trigger.cron
                    or entry.value.get("timezone") != trigger.timezone
                ):
                    # a new or changed schedule counts from now: no fire for the past
                    value = {"cron": trigger.cron, "timezone": trigger.timezone, "last": now}
                    with contextlib.suppress(CCCError):
                        if entry is None:
                            await state.create(key, value)
                        else:
                            await state.update(key, value, entry.revision)
                    wake = min(wake, next_fire(trigger, now))
                    continue
                last = float(entry.value["last"])
                due = latest_due(trigger, last, now)
                if due is not None:
                    await self._fire(record, index, trigger, due)
                    with contextlib.suppress(CCCError):
                        await state.update(key, {**entry.value, "last": due}, entry.revision)
                    last = due
                wake = min(wake, next_fire(trigger, max(last, now)))
        return wake

    async def _fire(
        self, record: DefinitionRecord, index: int, trigger: Trigger, due: float
    ) -> None:
        name, version, owner = record.name, record.version, record.owner
        scheduled = datetime.fromtimestamp(due, ZoneInfo(trigger.timezone)).isoformat()
        info = {
            "type": "cron",
            "index": index,
            "cron": trigger.cron,
            "timezone": trigger.timezone,
            "scheduled_at": scheduled,
        }
        try:
            params = expr.render(trigger.params, {"trigger": info, "event": None})
            run = await self.engine.start_run(
                name,
                version=version,
                params=params,
                trigger=info,
                idempotency_key=f"cron/{index}/{due:.0f}",
                caller=owner,
            )
            log.info("cron %s of %s fired for %s: run %s", trigger.cron, name, scheduled, run.id)
        except (CCCError, expr.ExpressionError) as exc:
            log.warning("cron trigger %d of %s could not start a run: %s", index, name, exc)


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: ``*`` is one token, a final ``>`` one or more."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


class EventTriggers:
    """One durable consumer on the events stream shared by all instances (each event is
    taken by one of them), matched against every definition's ``event`` triggers."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._task: asyncio.Task[None] | None = None
        self._sub: Any = None

    async def start(self) -> None:
        self._sub = await self.engine.bus.js.pull_subscribe(
            "ccc.evt.>",
            durable=TRIGGER_CONSUMER,
            stream=subjects.EVENTS_STREAM,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.NEW,
                ack_wait=30,
                max_ack_pending=10_000,
            ),
        )
        self._task = asyncio.create_task(self._loop(), name="workflow-event-triggers")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def _loop(self) -> None:
        while True:
            try:
                msgs = await self._sub.fetch(256, timeout=1.0)
            except (NatsTimeout, TimeoutError):
                continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event trigger fetch failed")
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                try:
                    await self.handle(msg.subject, msg.data, msg.metadata.sequence.stream)
                except Exception:
                    log.exception("event trigger on %s failed", msg.subject)
                with contextlib.suppress(Exception):
                    await msg.ack()

    async def handle(self, subject: str, data: bytes, seq: int) -> None:
        payload: Any = None
        for record in list(self.engine.library.latest.values()):
            for index, trigger in enumerate(record.parsed().triggers):
                if trigger.event is None or not subject_matches(trigger.event, subject):
                    continue
                if payload is None:
                    try:
                        payload = json.loads(data) if data else {}
                    except ValueError:
                        payload = data.decode(errors="replace")
                if (
                    subject.startswith("ccc.evt.workflow.")
                    and isinstance(payload, dict)
                    and payload.get("workflow") == record.name
                ):
                    continue  # a workflow's own events never trigger it: no runaway loop
                info = {"type": "event", "index": index, "subject": subject, "seq": seq}
                names = {"event": payload, "trigger": info}
                try:
                    if trigger.when is not None and not expr.condition(trigger.when).evaluate(
                        names
                    ):
                        continue
                    params = expr.render(trigger.params, names)
                    run = await self.engine.start_run(
                        record.name,
                        version=record.version,
                        params=params,
                        trigger=info,
                        idempotency_key=f"event/{seq}/{index}",
                        caller=record.owner,
                    )
                    log.info("event %s started run %s of %s", subject, run.id, record.name)
                except (CCCError, expr.ExpressionError) as exc:
                    log.warning(
                        "event trigger %d of %s on %s: %s", index, record.name, subject, exc
                    )


def utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()
