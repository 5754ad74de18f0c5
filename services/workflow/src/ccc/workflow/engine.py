"""The durable engine: runs owned under leases, their records, history and recovery.

Each run has one owner at a time: the instance holding ``lease.<run>`` in KV, renewed by
compare-and-swap every third of the lease. The owner runs a ``RunActor`` that alone
writes ``run.<run>`` (again by CAS on the revision, so a stale owner's write fails and it
stops). Every instance sweeps for leases that ran out and claims them by CAS, which is
how a killed instance's runs resume elsewhere, from their last recorded state. An owner
that cannot renew in time cancels its own step tasks before anyone may claim the run,
so two instances never run the same step at once (clock skew aside: keep the lease
well above the skew).

Every state change is written to the run record and appended to the run-history stream
(``CCC_WORKFLOW_HISTORY``, subject ``ccc.workflow.history.<run>``); run lifecycle and
progress go out as ``ccc.evt.workflow.run.*`` events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import TYPE_CHECKING, Any

from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, KeyWrongLastSequenceError

from ccc.common import Conflict, Invalid, NotFound, subjects
from ccc.common.state import StateStore

from . import expr, notify
from .clock import Clock, SystemClock
from .definition import Action, Definition
from .history import HISTORY_PREFIX, HISTORY_STREAM
from .library import Library
from .metrics import ATTEMPTS, OWNED, RUNS, STARTED, WRITE
from .runstate import (
    RUN_DONE,
    STEP_ACTIVE,
    STEP_DONE,
    STEP_OK,
    Caller,
    Instance,
    Lease,
    Run,
    StepRun,
    cancel_key,
    lease_key,
    new_run_id,
    run_key,
    step_key,
)
from .settings import WorkflowSettings
from .steps import Attempt, StepFailed, execute, failure_of

if TYPE_CHECKING:
    from ccc.common import Service
    from ccc.common.bus import Bus

log = logging.getLogger(__name__)
SIGNAL_PREFIX = "ccc.workflow.signal"
MAX_DEPTH = 8


class LostLease(Exception):
    """Another instance owns the run now: stop touching it."""


class Engine:
    def __init__(
        self,
        service: Service,
        settings: WorkflowSettings,
        clock: Clock | None = None,
        cron_clock: Clock | None = None,
    ) -> None:
        from .triggers import CronScheduler, EventTriggers

        self.service = service
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.instance = service.instance
        self.bus: Bus = service.bus
        self.state: StateStore = service.state
        self.library = Library(self.state)
        self.actors: dict[str, RunActor] = {}
        self.slots = asyncio.Semaphore(settings.workflow_max_steps_in_flight)
        self._loops: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._signal_sub: Any = None
        self.cron = CronScheduler(self, cron_clock or self.clock)
        self.event_triggers = EventTriggers(self)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        config = StreamConfig(
            name=HISTORY_STREAM,
            subjects=[f"{HISTORY_PREFIX}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=self.settings.workflow_history_max_age_days * 86400,
            max_bytes=self.settings.workflow_history_max_bytes,
            discard=DiscardPolicy.OLD,
            duplicate_window=120.0,
            description="Workflow run history: every state change of every run",
        )
        try:
            await self.bus.js.add_stream(config)
        except BadRequestError as exc:
            log.info("stream %s kept as configured: %s", HISTORY_STREAM, exc.description)
        self._signal_sub = await self.bus.nc.subscribe(f"{SIGNAL_PREFIX}.*", cb=self._on_signal)
        await self.library.start()
        self._loops.append(asyncio.create_task(self._lease_loop(), name="workflow-leases"))
        self.cron.start()
        await self.event_triggers.start()
        if self.settings.workflow_run_retention_days > 0:
            self._loops.append(asyncio.create_task(self._janitor(), name="workflow-janitor"))

    async def stop(self) -> None:
        """Stop running steps and hand every owned run back at once (lease released)."""
        await self.cron.stop()
        await self.event_triggers.stop()
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loops.clear()
        actors = list(self.actors.values())
        for actor in actors:
            actor.post(("stop",))
        if actors:
            await asyncio.wait([a.task for a in actors if a.task], timeout=5)
        for actor in actors:
            with contextlib.suppress(Exception):
                await self._release(actor.run.id)
        if self._signal_sub is not None:
            with contextlib.suppress(Exception):
                await self._signal_sub.unsubscribe()
        await self.library.stop()
        if self._background:
            await asyncio.wait(list(self._background), timeout=2)

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- starting runs ----------------------------------------------------------------

    async def start_run(
        self,
        name: str,
        *,
        version: int | None = None,
        params: dict[str, Any] | None = None,
        trigger: dict[str, Any] | None = None,
        caller: Caller | None = None,
        idempotency_key: str | None = None,
        depth: int = 0,
        parent: str | None = None,
    ) -> Run:
        if depth > MAX_DEPTH:
            raise Invalid(f"sub-workflows nest deeper than {MAX_DEPTH}: refusing to start {name}")
        record = await self.library.get(name, version)
        definition = record.parsed()
        run_id = new_run_id(name, idempotency_key)
        existing = await self.state.get(run_key(run_id))
        if existing is not None:
            return Run.model_validate(existing)
        now = self.clock.now()
        try:
            merged = {**expr.render(definition.params, {}), **(params or {})}
        except expr.ExpressionError as exc:
            raise Invalid(f"params: {exc}") from None
        run = Run(
            id=run_id,
            workflow=name,
            version=record.version,
            params=merged,
            trigger=trigger or {"type": "manual"},
            caller=caller or Caller(),
            parent=parent,
            depth=depth,
            created_at=now,
            updated_at=now,
            deadline=now + float(definition.timeout) if definition.timeout else None,
            steps={s.id: StepRun(for_each=s.for_each is not None) for s in definition.steps},
        )
        lease = Lease(owner=self.instance, until=time.time() + self.settings.workflow_lease)
        try:
            lease_rev = await self.state.create(lease_key(run_id), lease)
        except Conflict:
            return await self._wait_for_run(run_id)
        try:
            revision = await self.state.create(run_key(run_id), run)
        except Conflict:
            await self.state.delete(lease_key(run_id))
            return await self._wait_for_run(run_id)
        actor = RunActor(self, run, revision, definition, lease_rev)
        actor.record_event("run.started", trigger=run.trigger["type"])
        self._launch(actor)
        return run

    async def _wait_for_run(self, run_id: str) -> Run:
        for _ in range(50):
            value = await self.state.get(run_key(run_id))
            if value is not None:
                return Run.model_validate(value)
            await asyncio.sleep(0.05)
        raise Conflict(f"run {run_id} is being created by another instance")

    def _launch(self, actor: RunActor) -> None:
        self.actors[actor.run.id] = actor
        OWNED.set(len(self.actors))
        STARTED.labels("resumed" if actor.run.resumed else "new").inc()
        actor.task = asyncio.create_task(actor.main(), name=f"run-{actor.run.id}")

    def _forget(self, run_id: str) -> None:
        self.actors.pop(run_id, None)
        OWNED.set(len(self.actors))

    # -- reading, signals ------------------------------------------------------------------

    async def get_run(self, run_id: str) -> Run:
        value = await self.state.get(run_key(run_id))
        if value is None:
            raise NotFound(f"run {run_id!r} does not exist")
        return Run.model_validate(value)

    async def signal(self, run_id: str) -> None:
        """Tell the run's owner (whichever instance) to look at its signals now."""
        await self.bus.nc.publish(f"{SIGNAL_PREFIX}.{run_id}", b"")

    async def _on_signal(self, msg: Any) -> None:
        run_id = msg.subject.rsplit(".", 1)[-1]
        actor = self.actors.get(run_id)
        if actor is not None:
            actor.post(("signal",))

    def history_subject(self, run_id: str) -> str:
        return f"{HISTORY_PREFIX}.{run_id}"

    # -- leases -------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        interval = max(0.1, self.settings.workflow_lease / 3)
        # the first sweep waits for this instance's endpoints to be announced: a resumed
        # run's sub-workflow step calls workflow.run.start, maybe on this very instance
        await asyncio.sleep(min(0.5, interval))
        while True:
            try:
                await self.renew()
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lease renewal or sweep failed")
            await asyncio.sleep(interval)

    async def _janitor(self) -> None:
        while True:
            try:
                removed = await self.purge_finished()
                if removed:
                    log.info("deleted %d finished runs past retention", removed)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("run retention sweep failed")
            await asyncio.sleep(self.settings.workflow_janitor_interval)

    async def purge_finished(self) -> int:
        """Delete finished runs older than the retention, with their approvals and cancel
        marks. Every instance may do it: deleting twice is harmless."""
        horizon = time.time() - self.settings.workflow_run_retention_days * 86400
        old: list[str] = []
        async for entry in self.state.items("run."):
            record = entry.value
            finished = record.get("finished_at")
            if record.get("status") in RUN_DONE and finished and finished < horizon:
                old.append(record["id"])
        approvals = set(await self.state.keys("approval.")) if old else set()
        for run_id in old:
            await self.state.kv.purge(run_key(run_id))
            for key in [k for k in approvals if k.startswith(f"approval.{run_id}.")]:
                await self.state.kv.purge(key)
        return len(old)

    async def renew(self) -> None:
        for run_id, actor in list(self.actors.items()):
            if actor.done:
                continue
            until = time.time() + self.settings.workflow_lease
            try:
                actor.lease_rev = await self.state.update(
                    lease_key(run_id), Lease(owner=self.instance, until=until), actor.lease_rev
                )
                actor.lease_until = until
            except Conflict:
                log.warning("lost the lease of run %s", run_id)
                actor.post(("lost",))
            else:
                actor.post(("heartbeat",))

    async def _release(self, run_id: str) -> None:
        entry = await self.state.entry(lease_key(run_id))
        if entry is not None and entry.value.get("owner") == self.instance:
            with contextlib.suppress(Conflict):
                await self.state.update(
                    lease_key(run_id), Lease(owner=self.instance, until=0), entry.revision
                )

    async def sweep(self) -> None:
        """Claim every run whose lease ran out (its owner died or stopped)."""
        now = time.time()
        for key in await self.state.keys("lease."):
            run_id = key[len("lease.") :]
            if run_id in self.actors:
                continue
            entry = await self.state.entry(key)
            if entry is None:
                continue
            lease = Lease.model_validate(entry.value)
            if lease.until > now:
                continue
            until = time.time() + self.settings.workflow_lease
            try:
                lease_rev = await self.state.update(
                    key, Lease(owner=self.instance, until=until), entry.revision
                )
            except Conflict:
                continue  # a sibling claimed it first
            try:
                await self._resume(run_id, lease_rev, until, lease.owner)
            except Exception:
                log.exception("could not resume run %s", run_id)
                await self._release(run_id)

    async def _resume(self, run_id: str, lease_rev: int, until: float, previous: str) -> None:
        entry = await self.state.entry(run_key(run_id))
        if entry is None or entry.value.get("status") in RUN_DONE:
            await self.state.delete(lease_key(run_id))
            return
        run = Run.model_validate(entry.value)
        record = await self.library.get(run.workflow, run.version)
        actor = RunActor(self, run, entry.revision, record.parsed(), lease_rev)
        actor.lease_until = until
        run.resumed += 1
        actor.record_event("run.resumed", previous_owner=previous, by=self.instance)
        log.info("resuming run %s of %s (previous owner %s)", run_id, run.workflow, previous)
        self._launch(actor)


class RunActor:
    """The single writer of one run while this instance holds its lease.

    Messages from step tasks and signals are applied in batches: one CAS write and one
    history entry per batch, then newly ready steps are started. Starting a step is
    written before its task runs, so a crash never loses that a step began.
    """

    def __init__(
        self, engine: Engine, run: Run, revision: int, definition: Definition, lease_rev: int
    ) -> None:
        self.engine = engine
        self.run = run
        self.revision = revision
        self.definition = definition
        self.lease_rev = lease_rev
        self.lease_until = time.time() + engine.settings.workflow_lease
        self.inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self.tasks: dict[tuple[str, int], asyncio.Task[None]] = {}
        self.wakes: dict[tuple[str, int], asyncio.Event] = {}
        self.events: list[dict[str, Any]] = []
        self.dirty = True
        self.done = False
        self.task: asyncio.Task[None] | None = None
        self.cancel_requested: dict[str, Any] | None = None
        self.steps = {s.id: s for s in definition.steps}
        self.reads = step_reads(definition)
        self._dispatch: list[tuple[str, Instance, Action, bool]] = []
        self._last_progress = 0.0

    def post(self, message: tuple[Any, ...]) -> None:
        self.inbox.put_nowait(message)

    def record_event(self, kind: str, **fields: Any) -> None:
        self.events.append({"type": kind, "at": self.engine.clock.now(), **fields})
        self.dirty = True

    # -- the loop ----------------------------------------------------------------------

    async def main(self) -> None:
        try:
            await self._check_signals()
            self._redispatch_active()
            while True:
                await self.tick()
                if self.done:
                    return
                message = await self._next_message()
                batch = [message] if message is not None else []
                while not self.inbox.empty():
                    batch.append(self.inbox.get_nowait())
                for m in batch:
                    if m[0] in ("lost", "stop"):
                        raise LostLease(m[0])
                    await self.apply(m)
        except LostLease as reason:
            log.info("run %s left to others (%s)", self.run.id, reason)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("run %s actor crashed; another instance will resume it", self.run.id)
            with contextlib.suppress(Exception):
                await self.engine._release(self.run.id)
        finally:
            self._cancel_tasks()
            self.engine._forget(self.run.id)

    async def _next_message(self) -> tuple[Any, ...] | None:
        """Wait for a message, or until the next retry or the run deadline is due."""
        wake_at = [self.run.deadline] if self.run.deadline and self.run.status == "running" else []
        for sr in self.run.steps.values():
            wake_at += [
                i.next_attempt_at
                for i in sr.instances
                if i.status == "retrying" and i.next_attempt_at is not None
            ]
        for inst in self.run.compensations.values():
            if inst.status == "retrying" and inst.next_attempt_at is not None:
                wake_at.append(inst.next_attempt_at)
        timeout = None
        if wake_at:
            timeout = max(0.0, min(w for w in wake_at if w is not None) - self.engine.clock.now())
        try:
            return await asyncio.wait_for(self.inbox.get(), timeout)
        except TimeoutError:
            return None

    async def apply(self, m: tuple[Any, ...]) -> None:
        kind = m[0]
        if kind == "signal" or kind == "heartbeat":
            await self._check_signals()
            if kind == "signal":
                for wake in self.wakes.values():
                    wake.set()
        elif kind in ("done", "error", "waiting"):
            _, where, step_id, index, attempt, *rest = m
            inst = self._instance(where, step_id, index)
            if inst is None or inst.attempts != attempt or inst.status not in STEP_ACTIVE:
                return  # a late answer from a cancelled attempt
            now = self.engine.clock.now()
            if kind == "waiting":
                inst.status = "waiting"
                self.record_event("step.waiting", step=step_id, index=index)
            elif kind == "done":
                ATTEMPTS.labels("succeeded").inc()
                self.tasks.pop((f"{where}:{step_id}", index), None)
                # finished_at: when the step's work returned, not when this batch ran
                inst.status, inst.output, inst.finished_at, inst.error = (
                    "succeeded",
                    rest[0],
                    rest[1],
                    None,
                )
                self.record_event(
                    f"{_label(where)}.succeeded", step=step_id, index=index, attempt=attempt
                )
            else:
                self.tasks.pop((f"{where}:{step_id}", index), None)
                reason, retryable = rest
                ATTEMPTS.labels("failed").inc()
                action = self._action(where, step_id)
                if retryable and attempt < action.retry.max_attempts and self._may_retry(where):
                    inst.status = "retrying"
                    inst.error = reason
                    inst.next_attempt_at = now + action.retry.delay(attempt, random.random())
                    self.record_event(
                        f"{where}.retrying",
                        step=step_id,
                        index=index,
                        attempt=attempt,
                        error=reason,
                        next_attempt_at=inst.next_attempt_at,
                    )
                else:
                    inst.status, inst.error, inst.finished_at = "failed", reason, now
                    self.record_event(
                        f"{_label(where)}.failed",
                        step=step_id,
                        index=index,
                        attempt=attempt,
                        error=reason,
                    )

    def _may_retry(self, where: str) -> bool:
        return (self.run.status == "running") if where == "step" else True

    def _instance(self, where: str, step_id: str, index: int) -> Instance | None:
        if where == "compensation":
            return self.run.compensations.get(step_id)
        sr = self.run.steps.get(step_id)
        if sr is None or index >= len(sr.instances):
            return None
        return sr.instances[index]

    def _action(self, where: str, step_id: str) -> Action:
        step = self.steps[step_id]
        if where == "compensation":
            assert step.on_failure is not None
            return step.on_failure
        return step

    async def _check_signals(self) -> None:
        if self.run.status == "running" and self.cancel_requested is None:
            self.cancel_requested = await self.engine.state.get(cancel_key(self.run.id))

    # -- one scheduling round ----------------------------------------------------------

    async def tick(self) -> None:
        if time.time() > self.lease_until:
            raise LostLease("lease not renewed in time")
        now = self.engine.clock.now()
        run = self.run
        if run.status == "running":
            if self.cancel_requested is not None:
                by = self.cancel_requested.get("by") or "request"
                self._end("cancelled", f"cancelled by {by}")
            elif run.deadline is not None and now >= run.deadline:
                self._end("failed", f"run timed out (deadline {run.deadline - run.created_at:g}s)")
        if run.status == "running":
            self._schedule(now)
        if run.status == "compensating":
            self._compensate(now)
        if self.dirty:
            await self._persist()
        for step_id, inst, action, compensation in self._dispatch:
            self._start_task(step_id, inst, action, compensation)
        self._dispatch.clear()
        if run.status in RUN_DONE:
            await self._finished()

    def _schedule(self, now: float) -> None:
        run = self.run
        progressed = True
        while progressed and run.status == "running":
            progressed = False
            for step in self.definition.steps:
                sr = run.steps[step.id]
                if sr.status == "pending":
                    deps = [run.steps[d].status for d in step.depends_on]
                    if not all(s in STEP_OK for s in deps):
                        continue
                    progressed |= self._begin_step(step.id, sr, now)
                if sr.status == "running":
                    self._start_instances(step.id, sr, now)
                    progressed |= self._settle_step(step.id, sr, now)
                if run.status != "running":
                    return
            if all(sr.status in STEP_OK for sr in run.steps.values()):
                self._succeed(now)
                return

    def _names(self, reads: frozenset[str], extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The expression namespace, with only the steps the expressions read (validation
        made sure they cannot read others): building every step's view each time made a
        long chain quadratic."""
        steps = self.run.steps
        names: dict[str, Any] = {
            "params": self.run.params,
            "run": {
                "id": self.run.id,
                "workflow": self.run.workflow,
                "version": self.run.version,
                "trigger": self.run.trigger,
            },
            "steps": {
                sid: {
                    "status": steps[sid].status,
                    "output": steps[sid].output,
                    "error": steps[sid].error,
                    "started_at": steps[sid].started_at,
                    "finished_at": steps[sid].finished_at,
                    "attempts": sum(i.attempts for i in steps[sid].instances),
                }
                for sid in reads
                if sid in steps
            },
        }
        if extra:
            names.update(extra)
        return names

    def _begin_step(self, step_id: str, sr: StepRun, now: float) -> bool:
        step = self.steps[step_id]
        names = self._names(self.reads[step_id])
        try:
            if step.when is not None and not expr.condition(step.when).evaluate(names):
                sr.status, sr.started_at, sr.finished_at = "skipped", None, now
                self.record_event("step.skipped", step=step_id, reason=f"when: {step.when}")
                return True
            if step.for_each is None:
                items: list[Any] = [None]
            else:
                value = (
                    expr.condition(step.for_each).evaluate(names)
                    if isinstance(step.for_each, str)
                    else expr.render(step.for_each, names)
                )
                if not isinstance(value, list):
                    raise expr.ExpressionError(f"for_each gave {type(value).__name__}, not a list")
                if len(value) > self.engine.settings.workflow_max_items:
                    raise expr.ExpressionError(
                        f"for_each gave {len(value)} items; the limit is "
                        f"{self.engine.settings.workflow_max_items}"
                    )
                items = value
        except expr.ExpressionError as exc:
            sr.status, sr.finished_at, sr.error = "failed", now, str(exc)
            self.record_event("step.failed", step=step_id, error=sr.error)
            self._end("failed", f"step {step_id} failed: {sr.error}")
            return True
        sr.instances = [Instance(index=i, item=item) for i, item in enumerate(items)]
        sr.status, sr.started_at = "running", now
        self.record_event("step.started", step=step_id, items=len(items) if sr.for_each else None)
        return True

    def _start_instances(self, step_id: str, sr: StepRun, now: float) -> None:
        step = self.steps[step_id]
        limit = step.concurrency if sr.for_each else 1
        active = sum(1 for i in sr.instances if i.status in STEP_ACTIVE)
        for inst in sr.instances:
            if active >= limit:
                return
            due = inst.status == "pending" or (
                inst.status == "retrying" and (inst.next_attempt_at or 0) <= now
            )
            if not due:
                continue
            inst.status, inst.attempts, inst.started_at = "running", inst.attempts + 1, now
            inst.next_attempt_at = None
            self.record_event("step.attempt", step=step_id, index=inst.index, attempt=inst.attempts)
            self._dispatch.append((step_id, inst, step, False))
            active += 1

    def _settle_step(self, step_id: str, sr: StepRun, now: float) -> bool:
        """Close a step whose instances all ended; fail the run on a failed one."""
        failed = next((i for i in sr.instances if i.status == "failed"), None)
        if failed is not None:
            where = f"[{failed.index}] " if sr.for_each else ""
            sr.status, sr.finished_at, sr.error = "failed", now, f"{where}{failed.error}"
            self.record_event("step.failed", step=step_id, error=sr.error)
            self._end("failed", f"step {step_id} failed: {sr.error}")
            return True
        if all(i.status == "succeeded" for i in sr.instances):
            sr.status, sr.finished_at = "succeeded", now
            outputs = [i.output for i in sr.instances]
            sr.output = outputs if sr.for_each else outputs[0]
            self.record_event("step.succeeded", step=step_id)
            return True
        return False

    def _succeed(self, now: float) -> None:
        try:
            self.run.output = expr.render(self.definition.output, self._names(self.reads[""]))
        except expr.ExpressionError as exc:
            self._end("failed", f"output: {exc}")
            return
        self.run.status, self.run.finished_at = "succeeded", now
        self.record_event("run.succeeded")

    def _end(self, final: str, reason: str) -> None:
        """Stop the run (failure, timeout or cancel): stop steps, then compensate."""
        now = self.engine.clock.now()
        run = self.run
        run.error = reason
        self._dispatch = [d for d in self._dispatch if d[3]]  # not-yet-started steps stay so
        for step_id, sr in run.steps.items():
            for inst in sr.instances:
                task = self.tasks.pop((f"step:{step_id}", inst.index), None)
                if task is not None:
                    task.cancel()
                if inst.status in STEP_ACTIVE:
                    inst.status, inst.finished_at, inst.error = "cancelled", now, reason
                    if self.steps[step_id].workflow is not None:  # its child would be orphaned
                        self.engine.spawn(self._cancel_child(step_id, inst))
                elif inst.status in ("pending", "retrying"):
                    inst.status, inst.finished_at = "cancelled", now
            if sr.status in ("pending", "running"):
                sr.status, sr.finished_at = "cancelled", now
                sr.error = sr.error or reason
        started = sorted(
            (sr.started_at, sid)
            for sid, sr in run.steps.items()
            if sr.started_at is not None and self.steps[sid].on_failure is not None
        )
        run.compensations = {sid: Instance() for _, sid in reversed(started)}
        run.ending = "failed" if final == "failed" else "cancelled"
        if run.compensations:
            run.status = "compensating"
            self.record_event("run.compensating", reason=reason, steps=list(run.compensations))
        else:
            run.status, run.finished_at = run.ending, now
            self.record_event(f"run.{run.ending}", error=reason)

    async def _cancel_child(self, step_id: str, inst: Instance) -> None:
        """Cancelling a run cancels the sub-workflow its step started (same derived id)."""
        key = step_key(self.run.id, step_id, inst.index, self.run.steps[step_id].for_each)
        step = self.steps[step_id]
        assert step.workflow is not None
        child = new_run_id(step.workflow.name, f"{key}#{inst.attempts}")
        with contextlib.suppress(Exception):
            await self.engine.bus.call("workflow.run.cancel", {"run_id": child})

    def _compensate(self, now: float) -> None:
        """Run compensations one at a time, latest-started step first; then end the run."""
        run = self.run
        for step_id, inst in run.compensations.items():
            if inst.status in STEP_DONE:
                continue
            if inst.status in STEP_ACTIVE:
                return
            if inst.status == "retrying" and (inst.next_attempt_at or 0) > now:
                return
            inst.status, inst.attempts, inst.started_at = "running", inst.attempts + 1, now
            inst.next_attempt_at = None
            self.record_event("compensation.attempt", step=step_id, attempt=inst.attempts)
            action = self.steps[step_id].on_failure
            assert action is not None
            self._dispatch.append((step_id, inst, action, True))
            return
        failed = [sid for sid, i in run.compensations.items() if i.status == "failed"]
        if failed:
            run.error = f"{run.error}; compensation failed for {', '.join(failed)}"
        run.status, run.finished_at = run.ending or "failed", now
        self.record_event(f"run.{run.status}", error=run.error)

    def _redispatch_active(self) -> None:
        """After a takeover: start again what was running when the old owner stopped."""
        for step_id, sr in self.run.steps.items():
            for inst in sr.instances:
                if inst.status in STEP_ACTIVE:
                    inst.status = "running"
                    self.record_event(
                        "step.resumed", step=step_id, index=inst.index, attempt=inst.attempts
                    )
                    self._dispatch.append((step_id, inst, self.steps[step_id], False))
        for step_id, inst in self.run.compensations.items():
            if inst.status in STEP_ACTIVE:
                action = self.steps[step_id].on_failure
                assert action is not None
                self._dispatch.append((step_id, inst, action, True))

    # -- tasks --------------------------------------------------------------------------

    def _start_task(self, step_id: str, inst: Instance, action: Action, compensation: bool) -> None:
        where = "compensation" if compensation else "step"
        sr = self.run.steps[step_id]
        extra: dict[str, Any] = {}
        if sr.for_each:
            extra = {"item": inst.item, "index": inst.index}
        if compensation:
            extra["failure"] = {"error": self.run.error, "status": self.run.ending}
            key = f"{self.run.id}/{step_id}/compensate"
        else:
            key = step_key(self.run.id, step_id, inst.index, sr.for_each)
        reads = self.reads[f"{step_id}#compensation" if compensation else step_id]
        names = self._names(reads, extra)
        wake = self.wakes.setdefault((f"{where}:{step_id}", inst.index), asyncio.Event())
        task = asyncio.create_task(self._attempt(where, step_id, inst, action, names, key, wake))
        self.tasks[(f"{where}:{step_id}", inst.index)] = task

    async def _attempt(
        self,
        where: str,
        step_id: str,
        inst: Instance,
        action: Action,
        names: dict[str, Any],
        key: str,
        wake: asyncio.Event,
    ) -> None:
        attempt_no = inst.attempts
        message: tuple[Any, ...]
        try:
            # calls and publishes take a slot; waiting kinds (approval, events, delays,
            # sub-workflows) hold none, or a thousand pending approvals would stall the rest
            busy = action.call is not None or action.publish is not None
            async with self.engine.slots if busy else contextlib.nullcontext():
                payload: Any = None
                if action.call is not None:
                    payload = expr.render(action.with_, names)
                elif action.publish is not None:
                    payload = expr.render(action.payload, names)
                elif action.workflow is not None:
                    payload = expr.render(action.workflow.params, names)
                caller = self.run.caller
                headers = {}
                if caller.key_id:
                    headers[subjects.CALLER_HEADER] = caller.key_id
                if caller.roles is not None:
                    headers[subjects.ROLES_HEADER] = ",".join(caller.roles)
                attempt = Attempt(
                    engine=self.engine,
                    run_id=self.run.id,
                    step=step_id,
                    index=inst.index,
                    attempt=attempt_no,
                    action=action,
                    input=payload,
                    key=key,
                    started_at=inst.started_at or self.engine.clock.now(),
                    caller_headers=headers,
                    names=names,
                    depth=self.run.depth,
                    wake=wake,
                )
                if action.approval is not None:
                    self.post(("waiting", where, step_id, inst.index, attempt_no))
                output = await self._bounded(attempt)
            message = (
                "done",
                where,
                step_id,
                inst.index,
                attempt_no,
                output,
                self.engine.clock.now(),
            )
        except asyncio.CancelledError:
            return
        except StepFailed as exc:
            message = ("error", where, step_id, inst.index, attempt_no, exc.reason, exc.retryable)
        except expr.ExpressionError as exc:
            message = ("error", where, step_id, inst.index, attempt_no, str(exc), False)
        except Exception as exc:
            from ccc.common import CCCError

            if isinstance(exc, CCCError):
                f = failure_of(exc)
                message = ("error", where, step_id, inst.index, attempt_no, f.reason, f.retryable)
            else:
                log.exception("step %s of run %s failed unexpectedly", step_id, self.run.id)
                message = (
                    "error",
                    where,
                    step_id,
                    inst.index,
                    attempt_no,
                    f"{type(exc).__name__}: {exc}",
                    True,
                )
        self.post(message)

    async def _bounded(self, attempt: Attempt) -> Any:
        """Apply the step timeout: per attempt for calls and publishes, from the attempt's
        recorded start for the waiting kinds (so a resume does not restart the clock)."""
        action = attempt.action
        if action.timeout is None or action.delay is not None:
            return await execute(attempt)
        timeout = float(action.timeout)
        if action.call is None and action.publish is None:
            timeout = attempt.started_at + timeout - self.engine.clock.now()
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                return await execute(attempt)
        except TimeoutError:
            raise StepFailed(f"timed out after {float(action.timeout):g}s") from None

    def _cancel_tasks(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        self.tasks.clear()

    # -- writing ------------------------------------------------------------------------

    async def _persist(self) -> None:
        self.run.updated_at = self.engine.clock.now()
        data = self.run.model_dump_json().encode()
        if len(data) > self.engine.settings.workflow_max_record_bytes:
            data = self._oversized(len(data))
        events, self.events = self.events, []
        done, total = self.run.progress()
        entry = {
            "run_id": self.run.id,
            "workflow": self.run.workflow,
            "base_revision": self.revision,
            "status": self.run.status,
            "done": done,
            "total": total,
            "events": events,
        }
        # The record write and the history append go out together (one round trip, not
        # two); steps start only after both are acknowledged. Should the write lose its
        # CAS, the entry names an owner that was already replaced, which is what happened.
        write = self.engine.state.kv.update(run_key(self.run.id), data, last=self.revision)
        append = self.engine.bus.publish_durable(
            self.engine.history_subject(self.run.id),
            entry,
            msg_id=f"{self.run.id}:{self.engine.instance}:{self.revision}",
        )
        with WRITE.time():
            results = await asyncio.gather(write, append, return_exceptions=True)
        if isinstance(results[0], KeyWrongLastSequenceError | BadRequestError):
            raise LostLease("the run record was written by another instance")
        for result in results:
            if isinstance(result, BaseException):
                raise result
        revision = results[0]
        assert isinstance(revision, int)
        self.revision = revision
        self.dirty = False
        now = time.monotonic()
        if any(e["type"] == "step.succeeded" for e in events) and (
            now - self._last_progress > self.engine.settings.workflow_progress_interval
            or done == total
        ):
            self._last_progress = now
            await self.engine.bus.publish(
                subjects.event_subject("workflow", "run.progress"),
                {
                    "run_id": self.run.id,
                    "workflow": self.run.workflow,
                    "done": done,
                    "total": total,
                    "status": self.run.status,
                },
            )
        if any(e["type"] == "run.started" for e in events):
            await self.engine.bus.publish(
                subjects.event_subject("workflow", "run.started"),
                {
                    "run_id": self.run.id,
                    "workflow": self.run.workflow,
                    "version": self.run.version,
                    "trigger": self.run.trigger,
                },
            )

    def _oversized(self, size: int) -> bytes:
        """A record that no longer fits a NATS message cannot be saved, and a run that
        cannot be saved cannot go on: end it failed, without the outputs that made it big."""
        limit = self.engine.settings.workflow_max_record_bytes
        reason = (
            f"the run record grew to {size} bytes, over the {limit}-byte limit: step outputs "
            "were dropped; use smaller outputs or fewer for_each items"
        )
        if self.run.status not in RUN_DONE:
            self._end("failed", reason)
            self.run.compensations = {}  # they would need the outputs that were dropped
            self.run.status, self.run.finished_at = "failed", self.engine.clock.now()
            self.record_event("run.failed", error=reason)
        self._dispatch.clear()
        for sr in self.run.steps.values():
            sr.output = None
            for inst in sr.instances:
                inst.output = inst.item = None
        self.run.output = None
        data = self.run.model_dump_json().encode()
        if len(data) > limit:
            for sr in self.run.steps.values():
                sr.instances = sr.instances[:1]
            data = self.run.model_dump_json().encode()
        return data

    async def _finished(self) -> None:
        self.done = True
        run = self.run
        RUNS.labels(run.status).inc()
        with contextlib.suppress(Exception):
            await self.engine.state.delete(lease_key(run.id))
        event = {"succeeded": "completed", "failed": "failed", "cancelled": "cancelled"}[run.status]
        summary = {
            "run_id": run.id,
            "workflow": run.workflow,
            "version": run.version,
            "status": run.status,
            "output": run.output,
            "error": run.error,
            "started_at": run.created_at,
            "finished_at": run.finished_at,
            "duration": (run.finished_at or 0) - run.created_at,
            "parent": run.parent,
        }
        await self.engine.bus.publish_durable(
            subjects.event_subject("workflow", f"run.{event}"),
            summary,
            msg_id=f"{run.id}:{run.status}",
        )
        hooks = [h for h in self.definition.notify.webhooks if run.status in h.events]
        if hooks:
            self.engine.spawn(
                notify.deliver(
                    self.engine.bus, hooks, summary, self.engine.settings.workflow_webhook_attempts
                )
            )
        if self.cancel_requested is not None:
            with contextlib.suppress(Exception):
                await self.engine.state.delete(cancel_key(run.id))


def step_reads(definition: Definition) -> dict[str, frozenset[str]]:
    """Which steps' results each step's expressions read (key "" is the run output;
    "<id>#compensation" a compensation, which may also read its own step)."""

    def of_action(action: Action) -> set[str]:
        found: set[str] = set()
        for value in (
            action.with_,
            action.payload,
            action.workflow.params if action.workflow else None,
        ):
            for _path, e in expr.template_expressions(value):
                found |= {ref for ref, _ in e.step_refs()}
        if action.wait_event is not None and action.wait_event.match:
            found |= {ref for ref, _ in expr.condition(action.wait_event.match).step_refs()}
        return found

    out: dict[str, frozenset[str]] = {}
    for step in definition.steps:
        found = of_action(step)
        if step.when:
            found |= {ref for ref, _ in expr.condition(step.when).step_refs()}
        if isinstance(step.for_each, str):
            found |= {ref for ref, _ in expr.condition(step.for_each).step_refs()}
        elif step.for_each is not None:
            for _path, e in expr.template_expressions(step.for_each):
                found |= {ref for ref, _ in e.step_refs()}
        out[step.id] = frozenset(found)
        if step.on_failure is not None:
            out[f"{step.id}#compensation"] = frozenset(of_action(step.on_failure) | {step.id})
    outputs: set[str] = set()
    for _path, e in expr.template_expressions(definition.output):
        outputs |= {ref for ref, _ in e.step_refs()}
    out[""] = frozenset(outputs)
    return out


def _label(where: str) -> str:
    """History names: one step's tries are ``attempt.*``, compensations ``compensation.*``."""
    return "attempt" if where == "step" else "compensation"
