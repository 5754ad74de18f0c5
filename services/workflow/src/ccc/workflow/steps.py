"""What each step kind does when it runs: one coroutine per kind, each returning the output.

A failure leaves as ``StepFailed`` with a reason and whether another attempt may help;
the run actor turns that into a retry or a failed step. Every kind is safe to run again
after a crash: calls carry the step's idempotency key (``Nats-Msg-Id``), publishes are
deduplicated by JetStream on the same key, waits and delays count from the attempt's
recorded start, approvals and sub-workflows are found again by their keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import ConsumerConfig, DeliverPolicy

from ccc.common import CCCError, subjects, tracing
from ccc.common.errors import error_from_reply

from . import expr
from .definition import Action
from .runstate import RUN_DONE, approval_key, run_key

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger(__name__)
OPERATION_POLL = 0.25


class StepFailed(Exception):
    def __init__(self, reason: str, *, retryable: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


@dataclass
class Attempt:
    """Everything an executor needs: the action, its rendered input, identity and clock."""

    engine: Engine
    run_id: str
    step: str
    index: int
    attempt: int
    action: Action
    input: Any
    key: str
    started_at: float
    caller_headers: dict[str, str]
    names: Mapping[str, Any]
    depth: int
    wake: asyncio.Event

    def deadline(self) -> float | None:
        """Absolute end of this attempt for the waiting kinds (counts across a resume)."""
        timeout = self.action.timeout
        return None if timeout is None else self.started_at + float(timeout)

    def remaining(self) -> float | None:
        deadline = self.deadline()
        return None if deadline is None else deadline - self.engine.clock.now()


def failure_of(exc: CCCError) -> StepFailed:
    """A typed bus error as a step failure: 4xx are final (except 408/429), 5xx retryable."""
    retryable = exc.status >= 500 or exc.status in (408, 429)
    return StepFailed(f"{exc.status} {exc.title}: {exc.detail}", retryable=retryable)


async def execute(a: Attempt) -> Any:
    kind = a.action.kind
    if kind == "call":
        return await _call(a)
    if kind == "publish":
        return await _publish(a)
    if kind == "delay":
        return await _delay(a)
    if kind == "wait_event":
        return await _wait_event(a)
    if kind == "approval":
        return await _approval(a)
    return await _sub_workflow(a)


# -- call ---------------------------------------------------------------------------------


async def _call(a: Attempt) -> Any:
    target = a.action.call or ""
    domain, op = subjects.parse_target(target)
    timeout = (
        float(a.action.timeout) if a.action.timeout else a.engine.settings.workflow_call_timeout
    )
    headers = {
        **a.caller_headers,
        subjects.MSG_ID_HEADER: a.key,
        "Ccc-Workflow-Run": a.run_id,
        "Ccc-Attempt": str(a.attempt),
    }
    tracing.inject(headers)  # the run's trace continues into the callee
    started = time.monotonic()
    try:
        msg = await a.engine.bus.nc.request(
            subjects.request_subject(domain, op),
            json.dumps(a.input, default=str).encode(),
            timeout=timeout,
            headers=headers,
        )
    except NoRespondersError:
        raise StepFailed(
            f"no service answers on {target} (unknown endpoint or service down)", retryable=True
        ) from None
    except NatsTimeout:
        raise StepFailed(f"{target} did not answer within {timeout:g}s") from None
    error = error_from_reply(msg.headers, msg.data)
    if error is not None:
        raise failure_of(error)
    result = json.loads(msg.data) if msg.data else None
    status = (msg.headers or {}).get(subjects.STATUS_HEADER)
    if status == "202" and isinstance(result, dict) and "id" in result:
        # a long call answered with an operation: the step ends when the operation does
        remaining = timeout - (time.monotonic() - started) if a.action.timeout else None
        return await _await_operation(a, domain, result, remaining)
    return result


async def _await_operation(a: Attempt, domain: str, op: dict[str, Any], limit: float | None) -> Any:
    async def poll() -> Any:
        record = op
        while record.get("status") not in ("succeeded", "failed", "cancelled"):
            await asyncio.sleep(OPERATION_POLL)
            try:
                record = await a.engine.bus.call(
                    f"{domain}.operation.get", {"id": op["id"]}, headers=a.caller_headers
                )
            except CCCError as exc:
                raise failure_of(exc) from None
        if record["status"] != "succeeded":
            err = record.get("error") or {}
            raise StepFailed(
                f"operation {op['id']} {record['status']}: {err.get('detail', err)}",
                retryable=False,
            )
        return record.get("result")

    if limit is None:
        return await poll()
    async with asyncio.timeout(max(0.0, limit)):
        return await poll()


# -- publish ------------------------------------------------------------------------------


async def _publish(a: Attempt) -> Any:
    subject = a.action.publish or ""
    try:
        seq = await a.engine.bus.publish_durable(subject, a.input, msg_id=a.key)
    except Exception as exc:
        raise StepFailed(f"publish to {subject} failed: {exc}") from None
    return {"subject": subject, "seq": seq}


# -- delay --------------------------------------------------------------------------------


async def _delay(a: Attempt) -> Any:
    due = a.started_at + float(a.action.delay or 0)
    while (left := due - a.engine.clock.now()) > 0:
        await a.engine.clock.sleep(min(left, 60.0))
    return {"waited": float(a.action.delay or 0)}


# -- wait_event ---------------------------------------------------------------------------


async def _wait_event(a: Attempt) -> Any:
    """Replay the events stream from the attempt's start: an event that came while no
    instance was alive is still seen after a resume."""
    spec = a.action.wait_event
    assert spec is not None
    matcher = expr.condition(spec.match) if spec.match else None
    deadline = a.started_at + float(spec.timeout) if spec.timeout else None
    found: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def on_event(msg: Any) -> None:
        if found.done():
            return
        try:
            payload = json.loads(msg.data) if msg.data else None
        except ValueError:
            payload = msg.data.decode(errors="replace")
        if matcher is not None:
            try:
                ok = matcher.evaluate({**a.names, "event": payload})
            except expr.ExpressionError:
                ok = False
            if not ok:
                return
        found.set_result(payload)

    start = datetime.fromtimestamp(a.started_at - 1.0, UTC)
    sub = await a.engine.bus.js.subscribe(
        spec.subject,
        stream=subjects.EVENTS_STREAM,
        cb=on_event,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=start),
    )
    try:
        if deadline is None:
            return await found
        left = deadline - a.engine.clock.now()
        try:
            async with asyncio.timeout(max(0.0, left)):
                return await found
        except TimeoutError:
            raise StepFailed(
                f"no event on {spec.subject} matched within {float(spec.timeout or 0):g}s"
            ) from None
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


# -- approval -----------------------------------------------------------------------------


async def _approval(a: Attempt) -> Any:
    spec = a.action.approval
    assert spec is not None
    deadline = a.started_at + float(spec.timeout) if spec.timeout else None
    key = approval_key(a.run_id, a.step, a.index)
    while True:
        a.wake.clear()
        decision = await a.engine.state.get(key)
        if decision is not None:
            if decision.get("approved"):
                return decision
            who = decision.get("by") or "an operator"
            comment = f": {decision['comment']}" if decision.get("comment") else ""
            raise StepFailed(f"rejected by {who}{comment}", retryable=False)
        wait = 5.0
        if deadline is not None:
            left = deadline - a.engine.clock.now()
            if left <= 0:
                raise StepFailed(
                    f"no decision within {float(spec.timeout or 0):g}s", retryable=False
                )
            wait = min(wait, left)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(a.wake.wait(), wait)


# -- sub-workflow -------------------------------------------------------------------------


def child_key(a: Attempt) -> str:
    """A child per attempt: a retry starts a new child, a resume finds the same one."""
    return f"{a.key}#{a.attempt}"


async def _sub_workflow(a: Attempt) -> Any:
    spec = a.action.workflow
    assert spec is not None
    request = {
        "name": spec.name,
        "version": spec.version,
        "params": a.input,
        "idempotency_key": child_key(a),
        "depth": a.depth + 1,
        "parent": a.run_id,
    }
    try:
        child = await a.engine.bus.call("workflow.run.start", request, headers=a.caller_headers)
    except CCCError as exc:
        raise failure_of(exc) from None
    child_id = child["id"]
    subject = a.engine.history_subject(child_id)
    changed = asyncio.Event()

    async def on_change(_msg: Any) -> None:
        changed.set()

    sub = await a.engine.bus.nc.subscribe(subject, cb=on_change)
    try:
        while True:
            changed.clear()
            record = await a.engine.state.get(run_key(child_id))
            if record is not None and record.get("status") in RUN_DONE:
                if record["status"] == "succeeded":
                    return record.get("output")
                raise StepFailed(
                    f"sub-workflow {spec.name} run {child_id} {record['status']}: "
                    f"{record.get('error')}",
                    retryable=True,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), 2.0)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
