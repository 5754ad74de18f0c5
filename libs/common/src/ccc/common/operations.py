"""Long work as operations: a KV record, a 202 at once, progress events, and recovery.

An instance that runs an operation holds a lease on its record (``owner``,
``lease_until``) and renews it by heartbeat. When an instance dies, its leases run
out; any instance of the service (a restarted one, or a sibling's periodic sweep)
claims the record with compare-and-swap and either resumes it (``resumable=True``,
the handler is re-run with the stored request and must be idempotent) or fails it
with an explicit reason. No operation is ever silently forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from . import subjects, tracing
from .bus import Bus
from .context import Context, ProgressSink
from .contracts.operations import FINISHED, Operation, OperationEvent
from .endpoint import EndpointSpec
from .errors import CCCError, Conflict, Internal, NotFound
from .metrics import OPERATIONS
from .state import StateStore

log = logging.getLogger(__name__)

ContextFactory = Callable[[dict[str, str], ProgressSink, str], Context]


def _now() -> datetime:
    return datetime.now(UTC)


def key(op_id: str) -> str:
    return f"operation.{op_id}"


class LostOperation(Exception):
    """This instance no longer owns the operation (cancelled, or claimed by a sibling)."""


def _roles(header: str | None) -> list[str] | None:
    return None if header is None else [r for r in header.split(",") if r]


def _headers_of(record: Operation) -> dict[str, str]:
    """The identity a resumed run acts with: exactly the starting call's."""
    headers: dict[str, str] = {}
    if record.caller:
        headers[subjects.CALLER_HEADER] = record.caller
    if record.caller_roles is not None:
        headers[subjects.ROLES_HEADER] = ",".join(record.caller_roles)
    if record.idempotency_key:
        headers[subjects.MSG_ID_HEADER] = record.idempotency_key
    if record.correlation_id:
        headers[subjects.CORRELATION_HEADER] = record.correlation_id
    return headers


class Operations:
    def __init__(
        self,
        *,
        domain: str,
        instance: str,
        state: StateStore,
        bus: Bus,
        lease: float,
        make_context: ContextFactory,
    ) -> None:
        self.domain = domain
        self.instance = instance
        self.state = state
        self.bus = bus
        self.lease = lease
        self.make_context = make_context
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._revisions: dict[str, int] = {}
        self._records: dict[str, Operation] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._sweeper: asyncio.Task[None] | None = None

    # -- starting ---------------------------------------------------------------

    def new_id(self, op: str, idempotency_key: str | None) -> str:
        """A random id, or one derived from the command's message id so a redelivered
        command finds the operation it already started instead of starting another."""
        if idempotency_key:
            digest = hashlib.sha256(f"{self.domain}:{op}:{idempotency_key}".encode()).hexdigest()
            return f"{self.domain}-{digest[:32]}"
        return f"{self.domain}-{uuid.uuid4().hex}"

    async def start(
        self,
        spec: EndpointSpec,
        request: BaseModel,
        headers: dict[str, str],
        *,
        idempotency_key: str | None = None,
        correlation_id: str | None = None,
    ) -> Operation:
        op_id = self.new_id(spec.op, idempotency_key)
        now = _now()
        record = Operation(
            id=op_id,
            domain=self.domain,
            op=spec.op,
            status="running",
            created_at=now,
            updated_at=now,
            attempts=1,
            owner=self.instance,
            lease_until=time.time() + self.lease,
            request=request.model_dump(mode="json"),
            caller=headers.get(subjects.CALLER_HEADER),
            caller_roles=_roles(headers.get(subjects.ROLES_HEADER)),
            idempotency_key=idempotency_key,
            correlation_id=correlation_id,
        )
        try:
            revision = await self.state.create(key(op_id), record)
        except Conflict:
            existing = await self.get(op_id)
            return existing
        self._track(record, revision)
        await self._publish(record, "running")
        self._launch(spec, record, request, headers)
        return record

    def _track(self, record: Operation, revision: int) -> None:
        self._records[record.id] = record
        self._revisions[record.id] = revision
        self._locks.setdefault(record.id, asyncio.Lock())

    def _launch(
        self, spec: EndpointSpec, record: Operation, request: BaseModel, headers: dict[str, str]
    ) -> None:
        task = asyncio.create_task(self._run(spec, record.id, request, headers))
        self._tasks[record.id] = task
        op_id = record.id

        def forget(_task: asyncio.Task[None]) -> None:
            self._forget(op_id)

        task.add_done_callback(forget)

    def _forget(self, op_id: str) -> None:
        self._tasks.pop(op_id, None)
        self._records.pop(op_id, None)
        self._revisions.pop(op_id, None)
        self._locks.pop(op_id, None)

    # -- running ----------------------------------------------------------------

    async def _run(
        self, spec: EndpointSpec, op_id: str, request: BaseModel, headers: dict[str, str]
    ) -> None:
        async def progress(fraction: float, message: str) -> None:
            await self._write(op_id, progress=fraction, message=message)
            await self._publish(self._records[op_id], "progress")

        ctx = self.make_context(headers, progress, op_id)
        try:
            result = await spec.handler(request, ctx)
        except asyncio.CancelledError:
            raise  # stopping, or cancelled by request: the record says which
        except LostOperation:
            log.warning("operation %s is no longer ours (cancelled or taken over)", op_id)
        except CCCError as exc:
            await self._finish(op_id, "failed", error=exc.problem())
        except Exception:
            log.exception("operation %s failed", op_id)
            error = Internal(f"{spec.op} failed unexpectedly (trace {tracing.current_trace_id()})")
            await self._finish(op_id, "failed", error=error.problem())
        else:
            value = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
            await self._finish(op_id, "succeeded", result=value)

    async def _write(self, op_id: str, **changes: Any) -> Operation:
        """Update this instance's record by CAS; losing the race means it is not ours."""
        async with self._locks[op_id]:
            record = self._records[op_id].model_copy(update={**changes, "updated_at": _now()})
            try:
                revision = await self.state.update(key(op_id), record, self._revisions[op_id])
            except Conflict:
                current = await self.get(op_id)
                if current.status == "cancelled" or current.owner != self.instance:
                    # Cancelled by request, or claimed by a sibling after our lease ran
                    # out: stop our copy of the work, it is not ours to finish.
                    self._records[op_id] = current
                    task = self._tasks.get(op_id)
                    if task is not None and task is not asyncio.current_task():
                        task.cancel()
                    raise LostOperation(op_id) from None
                raise
            self._records[op_id] = record
            self._revisions[op_id] = revision
            return record

    async def _finish(self, op_id: str, status: str, **changes: Any) -> None:
        progress = 1.0 if status == "succeeded" else self._records[op_id].progress
        record = await self._write(
            op_id, status=status, progress=progress, owner=None, lease_until=None, **changes
        )
        OPERATIONS.labels(self.domain, status).inc()
        await self._publish(record, status)
        await self._publish_result(record)

    async def _publish_result(self, record: Operation) -> None:
        """A command-started operation answers its command when it ends, however it ends;
        deduplicated like every command result."""
        if not record.correlation_id:
            return
        succeeded = record.status == "succeeded"
        body: dict[str, Any] = {"correlation_id": record.correlation_id, "operation": record.id}
        if succeeded:
            body["result"] = record.result
        else:
            body["error"] = record.error or {"status": 409, "detail": f"operation {record.status}"}
        outcome = "completed" if succeeded else "failed"
        await self.bus.publish_durable(
            subjects.event_subject(self.domain, f"{record.op}.{outcome}"),
            body,
            msg_id=f"{self.domain}:{record.correlation_id}:{outcome}",
            headers={subjects.CORRELATION_HEADER: record.correlation_id},
        )

    async def _publish(self, record: Operation, event: str) -> None:
        payload = OperationEvent(
            id=record.id,
            op=record.op,
            status=record.status,
            progress=record.progress,
            message=record.message,
            result=record.result,
            error=record.error,
        )
        await self.bus.publish(subjects.event_subject(self.domain, f"operation.{event}"), payload)

    # -- reading and cancelling ---------------------------------------------------

    async def get(self, op_id: str) -> Operation:
        record = await self.state.get_model(key(op_id), Operation)
        if record is None:
            raise NotFound(f"operation {op_id!r} does not exist")
        return record

    async def list(self, status: str | None, limit: int) -> list[Operation]:
        out: list[Operation] = []
        async for entry in self.state.items("operation."):
            record = Operation.model_validate(entry.value)
            if status is None or record.status == status:
                out.append(record)
        out.sort(key=lambda r: r.created_at, reverse=True)
        return out[:limit]

    async def cancel(self, op_id: str) -> Operation:
        """Mark cancelled by CAS; the owner notices at its next write or heartbeat."""
        for _ in range(5):
            entry = await self.state.entry(key(op_id))
            if entry is None:
                raise NotFound(f"operation {op_id!r} does not exist")
            record = Operation.model_validate(entry.value)
            if record.status in FINISHED:
                raise Conflict(f"operation {op_id} already {record.status}")
            record = record.model_copy(
                update={
                    "status": "cancelled",
                    "updated_at": _now(),
                    "message": "cancelled by request",
                }
            )
            try:
                await self.state.update(key(op_id), record, entry.revision)
            except Conflict:
                continue
            task = self._tasks.get(op_id)
            if task is not None:
                task.cancel()
            await self._publish(record, "cancelled")
            await self._publish_result(record)
            OPERATIONS.labels(self.domain, "cancelled").inc()
            return record
        raise Conflict(f"operation {op_id} is changing too fast to cancel; try again")

    # -- leases and recovery ------------------------------------------------------

    async def start_sweeper(self, specs: dict[str, EndpointSpec]) -> None:
        await self.recover(specs)
        self._sweeper = asyncio.create_task(self._sweep_forever(specs))

    async def _sweep_forever(self, specs: dict[str, EndpointSpec]) -> None:
        interval = max(0.2, self.lease / 3)
        while True:
            await asyncio.sleep(interval)
            for op_id in list(self._tasks):
                with contextlib.suppress(LostOperation, Conflict, KeyError):
                    await self._write(op_id, lease_until=time.time() + self.lease)
            try:
                await self.recover(specs)
            except Exception:
                log.exception("operation recovery sweep failed")

    async def recover(self, specs: dict[str, EndpointSpec]) -> None:
        """Claim every unfinished operation whose owner's lease ran out."""
        now = time.time()
        async for entry in self.state.items("operation."):
            record = Operation.model_validate(entry.value)
            if record.status in FINISHED or record.id in self._tasks:
                continue
            if record.lease_until is not None and record.lease_until > now:
                continue
            spec = specs.get(record.op)
            claimed = record.model_copy(
                update={
                    "owner": self.instance,
                    "lease_until": now + self.lease,
                    "attempts": record.attempts + 1,
                    "updated_at": _now(),
                }
            )
            try:
                revision = await self.state.update(key(record.id), claimed, entry.revision)
            except Conflict:
                continue  # a sibling claimed it first
            self._track(claimed, revision)
            if spec is not None and spec.resumable:
                log.info("resuming operation %s (attempt %d)", record.id, claimed.attempts)
                await self._write(
                    record.id, message=f"resumed after interruption (attempt {claimed.attempts})"
                )
                await self._publish(self._records[record.id], "resumed")
                request = spec.request_model.model_validate(record.request)
                self._launch(spec, claimed, request, _headers_of(record))
            else:
                reason = (
                    f"interrupted: the instance running it ({record.owner}) stopped, "
                    "and this operation cannot be resumed safely"
                )
                await self._finish(
                    record.id, "failed", error=Internal(reason).problem(), message=reason
                )
                self._forget(record.id)

    async def stop(self, timeout: float) -> None:
        """Let running operations finish for ``timeout``; leave the rest to recovery."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            # Bounded: on 3.11 a library's asyncio.wait_for can swallow the cancel, and
            # a sweeper that missed it would otherwise hold the whole shutdown.
            await asyncio.wait([self._sweeper], timeout=5)
        tasks = list(self._tasks.values())
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1)
