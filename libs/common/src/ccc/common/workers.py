"""A pool of long-lived tasks that serve requests one after another.

Why not a task per request: on Python 3.11 creating, registering and scheduling a task
costs as much as the rest of a small request, and a burst of N requests costs N loop
iterations. Here a burst is appended to a backlog and drained by whichever worker is
awake, without suspending between requests that finish at once; a request that does
wait (on I/O, on another service) only ties up its own worker, because a worker that
takes a job while more are waiting first wakes a sibling to carry on with them.

Each job runs wholly inside one worker task, so ``asyncio.current_task()``,
``asyncio.timeout`` and ``TaskGroup`` inside a handler see the right task. (Stepping a
request's coroutine by hand before giving it a task, the 3.11 imitation of 3.12's eager
tasks, runs the handler's first step under the subscription's task, where
``asyncio.timeout`` captures and later cancels the wrong task: an independent review
reproduced an endpoint going permanently silent that way.)

Deadlines: one sweeper checks the busy workers every ``sweep_interval`` seconds and
cancels a job that outlived its deadline (``expired`` then tells the job why it was
cancelled). That is one timer for the whole pool instead of one per request; a late
answer is at most one sweep late.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Generic, TypeVar

from .slots import Slots

log = logging.getLogger("ccc.workers")

Job = TypeVar("Job")
STOP_GRACE = 5.0  # seconds a cancelled job may take to wind down at stop


class _InOwnContext:
    """Await a job's coroutine with every step run in a copy of the worker's context.

    A task per request gave each request its own copy of the context variables; a
    long-lived worker would otherwise carry whatever a handler set and did not reset
    (a ``ContextVar.set`` without its token) into every later request it serves. This
    does, per step, what a task does (``context.run(coro.send, ...)``), while the worker
    stays the current task, so ``asyncio.timeout`` and cancellation reach the job.
    """

    __slots__ = ("_context", "_coro")

    def __init__(self, coro: Coroutine[Any, Any, None]) -> None:
        self._coro = coro
        self._context = contextvars.copy_context()

    def __await__(self) -> Generator[Any, Any, None]:
        run, coro = self._context.run, self._coro
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                pending = run(coro.send, value) if error is None else run(coro.throw, error)
            except StopIteration:
                return
            try:
                value, error = (yield pending), None
            except BaseException as exc:  # cancellation, thrown in by the worker's task
                value, error = None, exc


def _resolve_first(waiters: deque[asyncio.Future[None]]) -> bool:
    """Let the first waiter that still waits go on; whether there was one."""
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            return True
    return False


class _Worker:
    __slots__ = ("deadline", "expired", "task")

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.deadline: float | None = None  # loop time at which the running job expires
        self.expired = False  # the sweeper cancelled the running job


class Workers(Generic[Job]):
    """``size`` workers running ``serve(job)``; each job holds one of ``slots`` while it
    runs, so requests share the process's concurrency bound with other work."""

    def __init__(
        self,
        size: int,
        serve: Callable[[Job], Coroutine[Any, Any, None]],
        slots: Slots,
        *,
        abandon: Callable[[Job], Coroutine[Any, Any, None]] | None = None,
        sweep_interval: float = 0.05,
    ) -> None:
        self.size = size
        self._serve = serve
        self._abandon = abandon
        self.stopping = False
        self._slots = slots
        self._sweep_interval = sweep_interval
        self._backlog: deque[tuple[Job, float]] = deque()
        self._idle: deque[asyncio.Future[None]] = deque()
        self._waking = 0  # idle workers told to wake that have not yet run
        self._full: deque[asyncio.Future[None]] = deque()  # submitters held back
        self._workers: list[_Worker] = []
        self._by_task: dict[asyncio.Task[None], _Worker] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None]  # a future already done: "go on at once"
        self._dropped: list[Job] = []  # taken from the backlog, then stopped before running
        self.busy = 0
        self._all_idle = asyncio.Event()
        self._all_idle.set()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._ready.set_result(None)
        for _ in range(self.size):
            worker = _Worker()
            worker.task = loop.create_task(self._run(worker))
            self._by_task[worker.task] = worker
            self._workers.append(worker)
        self._sweeper = loop.create_task(self._sweep())

    def offer(self, job: Job, timeout: float) -> asyncio.Future[None]:
        """Queue ``job`` to run within ``timeout`` seconds of its start, and return what
        the caller should await before offering more: done at once, or, once the backlog
        is longer than the pool, when a worker takes from it (so the caller stops reading
        new work). A plain function returning a future rather than a coroutine: this runs
        once per request, and a coroutine per call costs more than the rest of it."""
        self._backlog.append((job, timeout))
        self._all_idle.clear()
        if not self._waking and _resolve_first(self._idle):
            self._waking += 1
        if len(self._backlog) <= self.size:
            return self._ready
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._full.append(waiter)
        return waiter

    async def submit(self, job: Job, timeout: float) -> None:
        await self.offer(job, timeout)

    def expired(self) -> bool:
        """Whether the current task is a worker whose job the sweeper cancelled."""
        task = asyncio.current_task()
        worker = self._by_task.get(task) if task is not None else None
        return worker is not None and worker.expired

    async def drain(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until every queued and running job is done."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_idle.wait(), timeout)

    async def stop(self) -> None:
        """Stop at once: running jobs are cancelled (``stopping`` tells them why), and
        each job still queued is handed to ``abandon``, so that it is answered too."""
        self.stopping = True
        left = [job for job, _ in self._backlog]
        self._backlog.clear()
        while _resolve_first(self._full):
            pass
        tasks = [w.task for w in self._workers if w.task is not None]
        if self._sweeper is not None:
            tasks.append(self._sweeper)
        for task in tasks:
            task.cancel()
        # Bounded: a handler that swallows the cancel and keeps waiting must not hold
        # the whole service's shutdown (a task per request was never waited on for ever).
        _, stuck = await asyncio.wait(tasks, timeout=STOP_GRACE) if tasks else (set(), set())
        if stuck:
            log.warning("%d request worker(s) ignored the stop; leaving them", len(stuck))
        if self._abandon is not None:
            for job in left + self._dropped:
                try:
                    await self._abandon(job)
                except Exception:
                    log.exception("request worker: answering an abandoned job failed")
        self._dropped.clear()

    # -- inside ------------------------------------------------------------------------

    async def _run(self, worker: _Worker) -> None:
        loop = asyncio.get_running_loop()
        task = worker.task
        assert task is not None
        while not self.stopping:
            if not self._backlog:
                waiter = loop.create_future()
                self._idle.append(waiter)
                try:
                    await waiter
                finally:
                    if waiter.done() and not waiter.cancelled():
                        self._waking -= 1
                continue
            job, timeout = self._backlog.popleft()
            _resolve_first(self._full)  # room in the backlog: a held-back sender goes on
            if self._backlog and not self._waking and _resolve_first(self._idle):
                self._waking += 1  # this job may wait: a sibling carries on with the rest
            self.busy += 1
            try:
                await self._slots.acquire()
            except BaseException:
                self.busy -= 1
                self._dropped.append(job)  # stopping: still answered, by stop()
                raise
            worker.deadline = loop.time() + timeout
            try:
                await _InOwnContext(self._serve(job))
            except asyncio.CancelledError:
                if self.stopping or not worker.expired:
                    raise
            except Exception:  # serve answers its own errors; this is a bug, not a reason to die
                log.exception("request worker: unhandled error")
            finally:
                worker.deadline = None
                worker.expired = False
                self.busy -= 1
                self._slots.release()
                if not self.stopping:
                    # The sweeper's cancel, or one a job left behind (a 3.11 TaskGroup
                    # can): a long-lived worker must not carry it to the next job.
                    while task.cancelling():
                        task.uncancel()
                if not self.busy and not self._backlog:
                    self._all_idle.set()

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._sweep_interval)
            if not self.busy:
                continue
            now = loop.time()
            for worker in self._workers:
                deadline = worker.deadline
                if deadline is not None and now >= deadline and not worker.expired:
                    assert worker.task is not None
                    worker.expired = True
                    worker.task.cancel()
