"""The durable door: ``ccc.cmd.<domain>.<op>`` from the CCC_COMMANDS work-queue stream.

One durable pull consumer per service (its name is the domain) is shared by every
instance. A command is acknowledged only after its handler finished and its result
event (``ccc.evt.<domain>.<op>.completed|failed``) was published, so a crash mid-way
means redelivery. Publishing twice with the same ``Nats-Msg-Id`` is absorbed by the
stream's duplicate window: the second copy is never delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.client import JetStreamContext

from . import subjects
from .slots import Slots

log = logging.getLogger(__name__)


class CommandConsumer:
    def __init__(
        self,
        *,
        js: JetStreamContext,
        domain: str,
        ack_wait: float,
        max_deliver: int,
        slots: Slots,
        handle: Callable[[Msg], Coroutine[Any, Any, None]],
    ) -> None:
        self.js = js
        self.domain = domain
        self.ack_wait = ack_wait
        self.max_deliver = max_deliver
        self.slots = slots
        self.handle = handle
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        self._sub = await self.js.pull_subscribe(
            subjects.command_subject(self.domain, ">"),
            durable=self.domain,
            stream=subjects.COMMANDS_STREAM,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self.ack_wait,
                max_deliver=self.max_deliver,
                max_ack_pending=1000,
            ),
        )
        self._loop_task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        """A free slot, then one message, then the slot: a fetched command starts at
        once (none waits unstarted while its ack deadline runs) and none is stranded
        when we stop. The slot is not held during the long poll, which would make every
        request wait for it when the bound is small, and count as work in flight."""
        while not self._stopping.is_set():
            await self.slots.acquire()  # wait for a free slot, but do not keep it yet
            self.slots.release()
            try:
                msgs = await self._sub.fetch(1, timeout=1.0)
            except (TimeoutError, NatsTimeout):
                continue
            except Exception:
                if self._stopping.is_set():
                    return
                log.exception("command fetch failed; retrying")
                await asyncio.sleep(0.5)
                continue
            if not msgs:
                continue
            await self.slots.acquire()  # a request may have taken it meanwhile: briefly
            task = asyncio.create_task(self._run(msgs[0]))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    async def _run(self, msg: Msg) -> None:
        """Handle one command, telling JetStream it is in progress every half ack-wait,
        so a handler that runs longer than ``ack_wait`` is not delivered a second time."""

        async def keep_alive() -> None:
            while True:
                await asyncio.sleep(self.ack_wait / 2)
                with contextlib.suppress(Exception):
                    await msg.in_progress()

        heartbeat = asyncio.create_task(keep_alive())
        try:
            await self.handle(msg)
        finally:
            heartbeat.cancel()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.slots.release()

    async def stop(self, timeout: float) -> None:
        self._stopping.set()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()
