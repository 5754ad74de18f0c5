"""The run loop: model → tool calls over the bus as the caller → model, until an end.

Every completed step is written (``step.<run>.<n>``) before the next begins, so a run
taken over after a crash rebuilds its conversation, counters and current agent from its
steps and goes on from the last completed one: a model call is never asked again once its
answer is recorded, and a tool call is repeated only if it had not finished, with the same
``Nats-Msg-Id`` (``<run>/<call id>``) so a callee that deduplicates sees one effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ccc.common import CCCError, Context, Forbidden, NotFound, RateLimited, subjects, tracing
from ccc.common.operations import LostOperation
from ccc.common.state import StateStore

from . import messaging
from .catalog import Catalog, Tool, matches
from .models import (
    RUN_DONE,
    AgentRecord,
    EndReason,
    Pending,
    Run,
    RunResult,
    RunStart,
    RunStatus,
    Step,
    ToolCallRecord,
)
from .settings import AgentsSettings
from .store import (
    agent_of_run,
    approval_key,
    load_steps,
    run_key,
    step_key,
    thread_key,
)

log = logging.getLogger(__name__)
HANDOFF = "transfer_to_"
DELEGATE = "delegate_to_"


def now() -> float:
    return time.time()


def canonical(name: str, arguments: dict[str, Any]) -> str:
    return name + json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)


def builtin_name(prefix: str, agent: str) -> str:
    return f"{prefix}{agent.replace('-', '_')}"[:64]


class RunEnded(Exception):
    """Raised inside the loop to end the run with a status and a reason."""

    def __init__(
        self, status: RunStatus, reason: EndReason, detail: str = "", output: Any = None
    ) -> None:
        super().__init__(detail or reason)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.output = output


class ModelFailed(Exception):
    """``ai.chat`` failed for good: the run fails with ``model_error``."""

    def __init__(self, error: CCCError) -> None:
        super().__init__(error.detail)
        self.error = error


@dataclass
class Env:
    """What every run of this instance shares."""

    settings: AgentsSettings
    catalog: Catalog


class RunLoop:
    """One run's state in memory: the run record, its steps and the agent speaking now."""

    def __init__(self, env: Env, ctx: Context, run: Run, steps: list[Step], agent: AgentRecord):
        self.env = env
        self.ctx = ctx
        self.state: StateStore = ctx.state
        self.run = run
        self.steps = steps
        self.agent = agent
        self.roles = ctx.caller.roles

    # -- starting and resuming ------------------------------------------------------------

    @classmethod
    async def open(cls, env: Env, req: RunStart, ctx: Context) -> RunLoop:
        """The run of this operation: created at the first attempt, rebuilt on a resume."""
        run_id = ctx.operation_id
        if run_id is None:
            raise RuntimeError("a run is an operation: it needs the operation's id")
        state = ctx.state
        entry = await state.entry(run_key(run_id))
        if entry is None:
            agent = await agent_of_run(state, run_id, req.name)
            initial: list[dict[str, Any]] = []
            if req.thread and agent.memory.thread:
                kept = await state.get(thread_key(agent.name, req.thread))
                initial.extend(kept or [])
            initial.append({"role": "user", "content": req.input})
            t = now()
            trace_headers: dict[str, str] = {}
            tracing.inject(trace_headers)
            run = Run(
                id=run_id,
                agent=agent.name,
                root_agent=agent.name,
                mode=req.mode,
                input=req.input,
                initial=initial,
                thread=req.thread,
                parent=req.parent,
                depth=req.depth,
                caller=ctx.caller.key_id,
                caller_roles=sorted(ctx.caller.roles) if ctx.caller.roles is not None else None,
                agents=[agent.name],
                versions={agent.name: agent.version},
                traceparent=trace_headers.get("traceparent"),
                created_at=t,
                updated_at=t,
            )
            await state.put(run_key(run_id), run)
            await ctx.emit("run.started", {"run_id": run_id, "agent": agent.name})
            return cls(env, ctx, run, [], agent)
        run = Run.model_validate(entry.value)
        steps = await load_steps(state, run_id)
        agent_name = run.root_agent
        for step in steps:
            if step.handoff_to:
                agent_name = step.handoff_to
        loop = cls(env, ctx, run, steps, await agent_of_run(state, run_id, agent_name))
        if run.status not in RUN_DONE:
            loop.run = run.model_copy(update={"attempts": run.attempts + 1, "agent": agent_name})
            loop._recount()
            await loop._save()
            log.info("run %s resumed after step %d", run_id, len(steps))
        return loop

    def _recount(self) -> None:
        model_steps = [s for s in self.steps if s.kind == "model"]
        self.run.steps = len(self.steps)
        self.run.turns = len(model_steps)
        self.run.tokens = sum(s.total_tokens for s in self.steps)
        self.run.cost_usd = sum(s.cost_usd for s in self.steps)

    async def _save(self) -> None:
        self.run.updated_at = now()
        await self.state.put(run_key(self.run.id), self.run)

    # -- the conversation -----------------------------------------------------------------

    def conversation(self) -> list[dict[str, Any]]:
        out = list(self.run.initial)
        for step in self.steps:
            out.extend(step.messages)
        return out

    def window(self) -> list[dict[str, Any]]:
        """The newest messages within the agent's memory window, never starting with a tool
        result cut from the assistant message that asked for it."""
        messages = self.conversation()
        size = self.agent.memory.window
        if len(messages) <= size:
            return messages
        tail = messages[-size:]
        while tail and tail[0].get("role") == "tool":
            tail = tail[1:]
        return tail

    def pending_calls(self) -> list[dict[str, Any]]:
        """Tool calls of the last assistant message that no step has answered yet."""
        messages = self.conversation()
        for i in range(len(messages) - 1, -1, -1):
            if messages[i].get("role") == "assistant":
                calls = messages[i].get("tool_calls") or []
                answered = {
                    m.get("tool_call_id") for m in messages[i + 1 :] if m.get("role") == "tool"
                }
                return [c for c in calls if c.get("id") not in answered]
        return []

    def handed_off(self) -> bool:
        """Did a call of the last assistant message hand the conversation over? The other
        calls of that message were the previous agent's: they are answered, not made."""
        messages = self.conversation()
        last: dict[str, Any] = next(
            (m for m in reversed(messages) if m.get("role") == "assistant"), {}
        )
        ids = {c.get("id") for c in last.get("tool_calls") or []}
        return any(s.kind == "handoff" and s.tool and s.tool.call_id in ids for s in self.steps)

    async def _skip_after_handoff(self, call: dict[str, Any]) -> None:
        detail = "not made: the conversation was handed over to another agent"
        await self._tool_result(
            now(),
            str(call["id"]),
            str(call["function"]["name"]),
            None,
            {},
            "refused",
            error={"detail": detail},
        )

    def final_answer(self) -> str | None:
        messages = self.conversation()
        last = messages[-1] if messages else {}
        if last.get("role") == "assistant" and not last.get("tool_calls"):
            return str(last.get("content") or "")
        return None

    # -- recording ------------------------------------------------------------------------

    async def record(self, step: Step) -> None:
        """Persist a completed step, then the run's summary; a run that is no longer ours
        (cancelled, or taken over by another instance) stops here."""
        try:
            await self.state.create(step_key(self.run.id, step.n), step)
        except CCCError as exc:  # Conflict: another instance wrote this step
            raise LostOperation(self.run.id) from exc
        self.steps.append(step)
        self._recount()
        limit = self.agent.limits.max_steps
        await self.ctx.progress(
            min(0.99, self.run.turns / limit), f"step {step.n}: {step.kind} ({step.agent})"
        )
        await self._save()
        await self.ctx.emit(
            "run.step",
            {
                "run_id": self.run.id,
                "n": step.n,
                "kind": step.kind,
                "agent": step.agent,
                "tool": step.tool.target if step.tool else None,
                "latency_ms": step.latency_ms,
            },
        )

    def new_step(self, kind: Any, started: float, **fields: Any) -> Step:
        finished = now()
        return Step(
            n=len(self.steps) + 1,
            kind=kind,
            agent=self.agent.name,
            started_at=started,
            finished_at=finished,
            latency_ms=round((finished - started) * 1000, 3),
            trace_id=tracing.current_trace_id(),
            **fields,
        )

    # -- the loop -------------------------------------------------------------------------

    async def go(self) -> RunResult:
        if self.run.status in RUN_DONE:
            return self.result()
        try:
            if self.run.mode == "plan":
                from .planning import plan_and_run

                await plan_and_run(self)
            else:
                await self.chat()
        except RunEnded as end:
            return await self.finish(end.status, end.reason, end.detail, end.output)
        except ModelFailed as failed:
            exc = failed.error
            await self.finish("failed", "model_error", f"ai.chat: {exc.status} {exc.detail}")
            raise exc from None
        except CCCError as exc:
            await self.finish("failed", "error", f"{exc.status} {exc.detail}")
            raise
        except LostOperation:
            raise  # cancelled, or another instance runs it now: not ours to write
        except Exception as exc:
            log.exception("run %s failed", self.run.id)
            trace_id = tracing.current_trace_id()
            await self.finish(
                "failed", "error", f"unexpected {type(exc).__name__} (trace {trace_id})"
            )
            raise
        raise RuntimeError("a run ended without a reason")  # pragma: no cover

    @contextlib.contextmanager
    def span(self, name: str, **attributes: str) -> Iterator[None]:
        """A span per step, child of the run's start, so a resumed run stays one trace."""
        parent = (
            tracing.extract({"traceparent": self.run.traceparent}) if self.run.traceparent else None
        )
        with tracing.tracer("ccc.agents").start_as_current_span(
            name, context=parent, attributes={"ccc.run": self.run.id, **attributes}
        ):
            yield

    async def chat(self) -> None:
        while True:
            calls = self.pending_calls()
            if calls:
                for call in calls:
                    with self.span("agents.tool", tool=str(call["function"]["name"])):
                        if self.handed_off():
                            await self._skip_after_handoff(call)
                        else:
                            await self.tool_call(call)
                continue
            answer = self.final_answer()
            if answer is not None and self.steps:
                raise RunEnded("completed", "final_answer", output=answer)
            self.guard()
            with self.span("agents.model", model=self.agent.model):
                await self.model_step()

    def guard(self) -> None:
        """Before each model call: steps and budget."""
        limits = self.agent.limits
        if self.run.turns >= limits.max_steps:
            raise RunEnded(
                "stopped", "max_steps", f"{self.run.turns} model calls: the limit is reached"
            )
        if limits.max_tokens is not None and self.run.tokens >= limits.max_tokens:
            raise RunEnded(
                "stopped",
                "budget_tokens",
                f"{self.run.tokens} tokens used of a budget of {limits.max_tokens}",
            )
        if limits.max_cost_usd is not None and self.run.cost_usd >= limits.max_cost_usd:
            raise RunEnded(
                "stopped",
                "budget_cost",
                f"${self.run.cost_usd:.6f} spent of a budget of ${limits.max_cost_usd:.6f}",
            )

    async def finish(
        self, status: RunStatus, reason: EndReason, detail: str = "", output: Any = None
    ) -> RunResult:
        t = now()
        self.run = self.run.model_copy(
            update={
                "status": status,
                "end_reason": reason,
                "detail": detail,
                "output": output,
                "pending": None,
                "finished_at": t,
            }
        )
        await self._save()
        if self.run.thread and self.agent.memory.thread:
            kept = self.conversation()[-self.agent.memory.window :]
            while kept and kept[0].get("role") == "tool":
                kept = kept[1:]
            await self.state.put(thread_key(self.run.root_agent, self.run.thread), kept)
        await self.ctx.emit(
            "run.ended",
            {"run_id": self.run.id, "status": status, "end_reason": reason, "detail": detail},
        )
        return self.result()

    def result(self) -> RunResult:
        r = self.run
        return RunResult(
            run_id=r.id,
            status=r.status,
            end_reason=r.end_reason,
            agent=r.agent,
            output=r.output,
            steps=r.steps,
            turns=r.turns,
            tokens=r.tokens,
            cost_usd=r.cost_usd,
            detail=r.detail,
        )

    # -- tools ----------------------------------------------------------------------------

    async def tools(self, *, fresh: bool = False) -> dict[str, Tool]:
        return await self.env.catalog.for_agent(self.agent.tools, self.roles, fresh=fresh)

    def builtins(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name in self.agent.handoffs:
            out.append(
                {
                    "type": "function",
                    "function": {
                        "name": builtin_name(HANDOFF, name),
                        "description": f"Hand the conversation over to the agent {name!r}; "
                        "it answers from now on.",
                        "parameters": {
                            "type": "object",
                            "properties": {"reason": {"type": "string"}},
                        },
                    },
                }
            )
        for name in self.agent.delegates:
            out.append(
                {
                    "type": "function",
                    "function": {
                        "name": builtin_name(DELEGATE, name),
                        "description": f"Give the specialist agent {name!r} a task; its final "
                        "answer comes back as this tool's result.",
                        "parameters": {
                            "type": "object",
                            "properties": {"task": {"type": "string"}},
                            "required": ["task"],
                        },
                    },
                }
            )
        return out + messaging.functions(self)

    def dangerous(self, target: str) -> bool:
        return matches(target, [*self.env.settings.agents_dangerous, *self.agent.approval])

    # -- one model call -------------------------------------------------------------------

    async def model_step(
        self,
        *,
        extra_tools: list[dict[str, Any]] | None = None,
        tool_choice: Any = None,
        system_suffix: str = "",
    ) -> dict[str, Any]:
        started = now()
        tools = await self.tools()
        functions = [t.function() for t in tools.values()] + self.builtins()
        functions += extra_tools or []
        system = self.agent.instructions + system_suffix
        messages = ([{"role": "system", "content": system}] if system else []) + self.window()
        body: dict[str, Any] = {"model": self.agent.model, "messages": messages}
        if functions:
            body["tools"] = functions
        if tool_choice is not None:
            body["tool_choice"] = tool_choice
        if self.agent.temperature is not None:
            body["temperature"] = self.agent.temperature
        answer = await self._ask(body)
        message = self._assistant(answer)
        usage = answer.get("usage") or {}
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        total = int(usage.get("total_tokens") or prompt + completion)
        cost = usage.get("cost")
        if not isinstance(cost, int | float):
            cost = total * self.agent.limits.usd_per_1k_tokens / 1000
        step = self.new_step(
            "model",
            started,
            messages=[message],
            model=str(answer.get("model") or self.agent.model),
            tools_offered=[f["function"]["name"] for f in functions],
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=total,
            cost_usd=float(cost),
        )
        await self.record(step)
        return message

    async def _ask(self, body: dict[str, Any]) -> dict[str, Any]:
        """``ai.chat`` as the caller; a transient failure (5xx, 408, a 429 that is not a
        spent budget) is tried again, twice, after 0.5 s then 1.5 s (the ai service has
        already fallen back across providers); anything else fails the run."""
        delays = [0.5, 1.5]
        while True:
            try:
                answer: dict[str, Any] = await self.ctx.call(
                    "ai.chat", body, timeout=self.env.settings.agents_model_timeout
                )
                return answer
            except CCCError as exc:
                code = (exc.extra.get("error") or {}).get("code")
                if isinstance(exc, RateLimited) and code == "budget_exceeded":
                    raise RunEnded("stopped", "budget_cost", f"ai: {exc.detail}") from exc
                if delays and (exc.status >= 500 or exc.status in (408, 429)):
                    log.warning("run %s: ai.chat failed (%s), trying again", self.run.id, exc)
                    await asyncio.sleep(delays.pop(0))
                    continue
                raise ModelFailed(exc) from exc

    def _assistant(self, answer: dict[str, Any]) -> dict[str, Any]:
        choices = answer.get("choices") or [{}]
        raw = choices[0].get("message") or {}
        message: dict[str, Any] = {"role": "assistant", "content": raw.get("content")}
        # call ids name idempotency keys and approvals: unique within the run, whatever
        # the model (some local servers number them from 0 at every turn)
        used = {c.get("id") for m in self.conversation() for c in m.get("tool_calls") or []}
        n = len(self.steps) + 1
        calls = []
        for i, call in enumerate(raw.get("tool_calls") or []):
            fn = call.get("function") or {}
            call_id = str(call.get("id") or f"call_{n}_{i}")
            if call_id in used:
                call_id = f"{call_id}_{n}_{i}"
            used.add(call_id)
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {
                        "name": str(fn.get("name", "")),
                        "arguments": fn.get("arguments") or "{}",
                    },
                }
            )
        if calls:
            message["tool_calls"] = calls
        return message

    # -- one tool call --------------------------------------------------------------------

    async def tool_call(self, call: dict[str, Any]) -> None:
        started = now()
        call_id = str(call["id"])
        name = str(call["function"]["name"])
        bad = "the arguments must be a JSON object"
        try:
            arguments = json.loads(call["function"].get("arguments") or "{}")
        except ValueError as exc:
            arguments, bad = None, f"the arguments are not valid JSON: {exc}"
        if not isinstance(arguments, dict):
            await self._tool_result(
                started, call_id, name, None, {}, "error", error={"detail": bad}
            )
            return
        same = canonical(name, arguments)
        seen = sum(
            1 for s in self.steps if s.tool and canonical(s.tool.name, s.tool.arguments) == same
        )
        # reading an inbox again is waiting, not looping: max_steps bounds it
        if name != messaging.READ and seen >= self.agent.limits.max_identical_calls:
            raise RunEnded(
                "stopped",
                "repeated_tool_call",
                f"{name} was called {seen} times with the same arguments {arguments}",
            )
        handoffs = {builtin_name(HANDOFF, a): a for a in self.agent.handoffs}
        if name in handoffs:
            await self._handoff(started, call_id, name, handoffs[name], arguments)
            return
        delegates = {builtin_name(DELEGATE, a): a for a in self.agent.delegates}
        if name in delegates:
            await self._delegate(started, call_id, name, delegates[name], arguments)
            return
        if any(f["function"]["name"] == name for f in messaging.functions(self)):
            await self._message(started, call_id, name, arguments)
            return
        tools = await self.tools()
        tool = tools.get(name) or (await self.tools(fresh=True)).get(name)
        if tool is None:
            await self._refuse(started, call_id, name, arguments)
            return
        if self.dangerous(tool.target):
            decision = await self._approval(call_id, name, tool.target, arguments)
            if not decision.get("approved"):
                by, comment = decision.get("by"), decision.get("comment") or ""
                await self._tool_result(
                    started,
                    call_id,
                    name,
                    tool.target,
                    arguments,
                    "rejected",
                    error={"detail": f"a human ({by}) rejected this call: {comment}".strip()},
                )
                return
        await self._execute(started, call_id, tool, arguments)

    async def _message(
        self, started: float, call_id: str, name: str, arguments: dict[str, Any]
    ) -> None:
        try:
            if name == messaging.SEND:
                result = await messaging.send(self, call_id, arguments)
            else:
                result = await messaging.read(self, arguments)
        except PermissionError as exc:
            error = {"status": 403, "detail": str(exc)}
            await self._tool_result(started, call_id, name, None, arguments, "refused", error=error)
            return
        except CCCError as exc:
            await self._tool_result(
                started, call_id, name, None, arguments, "error", error=exc.problem()
            )
            return
        await self._tool_result(started, call_id, name, None, arguments, "ok", result)

    async def _execute(
        self, started: float, call_id: str, tool: Tool, arguments: dict[str, Any]
    ) -> None:
        headers = {subjects.MSG_ID_HEADER: f"{self.run.id}/{call_id}"}
        try:
            result = await self.ctx.call(
                tool.target,
                arguments,
                timeout=self.env.settings.agents_tool_timeout,
                headers=headers,
            )
            if tool.kind == "operation" and isinstance(result, dict) and "id" in result:
                result = await self.await_operation(tool.target.split(".")[0], str(result["id"]))
        except CCCError as exc:
            await self._tool_result(
                started, call_id, tool.name, tool.target, arguments, "error", error=exc.problem()
            )
            return
        await self._tool_result(started, call_id, tool.name, tool.target, arguments, "ok", result)

    async def await_operation(self, domain: str, op_id: str) -> Any:
        """Follow an operation (202) to its end; its failure is raised as the typed error."""
        deadline = time.monotonic() + self.env.settings.agents_operation_wait
        while True:
            record = await self.ctx.call(f"{domain}.operation.get", {"id": op_id})
            status = record.get("status")
            if status == "succeeded":
                return record.get("result")
            if status in ("failed", "cancelled"):
                from ccc.common.errors import error_for_status

                error = record.get("error") or {}
                raise error_for_status(
                    int(error.get("status", 409)),
                    error.get("detail", f"operation {op_id} {status}"),
                    error,
                )
            if time.monotonic() > deadline:
                from ccc.common import Timeout

                raise Timeout(f"operation {op_id} did not end in time")
            await asyncio.sleep(self.env.settings.agents_poll_interval)

    async def _refuse(
        self, started: float, call_id: str, name: str, arguments: dict[str, Any]
    ) -> None:
        """A tool the agent may not use: not matched by its globs, beyond the caller's
        roles, or not on the bus at all. The model hears why; nothing is called."""
        every = {t.name: t for t in (await self.env.catalog.tools()).values()}
        tool = every.get(name)
        if tool is None:
            detail = f"there is no tool {name!r} on the bus"
        elif not matches(tool.target, self.agent.tools):
            detail = f"{tool.target} is outside the tools agent {self.agent.name} may use"
        else:
            detail = str(
                Forbidden(f"{tool.target} needs one of the roles {sorted(tool.roles)}").detail
            )
        await self._tool_result(
            started,
            call_id,
            name,
            tool.target if tool else None,
            arguments,
            "refused",
            error={"status": 403, "detail": detail},
        )

    async def _tool_result(
        self,
        started: float,
        call_id: str,
        name: str,
        target: str | None,
        arguments: dict[str, Any],
        status: Any,
        result: Any = None,
        *,
        error: dict[str, Any] | None = None,
    ) -> None:
        content = json.dumps({"error": error} if error is not None else result, default=str)
        limit = self.env.settings.agents_max_result_chars
        if len(content) > limit:
            content = content[:limit] + f"... [cut: {len(content)} characters]"
            result = {"cut": content}  # the step record must fit a KV value (1 MB)
            error = {"detail": content} if error is not None else None
        record = ToolCallRecord(
            call_id=call_id,
            name=name,
            target=target,
            arguments=arguments,
            result=result,
            error=error,
            status=status,
        )
        message = {"role": "tool", "tool_call_id": call_id, "content": content}
        await self.record(self.new_step("tool", started, messages=[message], tool=record))

    # -- handoff and delegation -----------------------------------------------------------

    async def _handoff(
        self, started: float, call_id: str, name: str, target: str, arguments: dict[str, Any]
    ) -> None:
        try:
            nxt = await agent_of_run(self.state, self.run.id, target)
        except NotFound as exc:
            await self._tool_result(
                started, call_id, name, None, arguments, "refused", error=exc.problem()
            )
            return
        message = {
            "role": "tool",
            "tool_call_id": call_id,
            "content": json.dumps({"assistant": nxt.name, "transferred": True}),
        }
        record = ToolCallRecord(
            call_id=call_id, name=name, arguments=arguments, result={"assistant": nxt.name}
        )
        step = self.new_step(
            "handoff", started, messages=[message], tool=record, handoff_to=nxt.name
        )
        await self.record(step)
        self.agent = nxt
        self.run.agent = nxt.name
        if nxt.name not in self.run.agents:
            self.run.agents.append(nxt.name)
        self.run.versions[nxt.name] = nxt.version
        await self._save()

    async def _delegate(
        self, started: float, call_id: str, name: str, target: str, arguments: dict[str, Any]
    ) -> None:
        """Start the specialist's own run over the bus (as the same caller) and wait for
        it; the child's operation id derives from ``<run>/<call>``, so a resumed parent
        finds the child it had started instead of starting another."""
        if self.run.depth >= self.env.settings.agents_max_depth:
            detail = f"delegation is nested {self.run.depth} deep already: the limit"
            await self._tool_result(
                started, call_id, name, None, arguments, "refused", error={"detail": detail}
            )
            return
        child = {
            "name": target,
            "input": str(arguments.get("task") or ""),
            "parent": self.run.id,
            "depth": self.run.depth + 1,
        }
        try:
            op = await self.ctx.call(
                "agents.run.start",
                child,
                headers={subjects.MSG_ID_HEADER: f"{self.run.id}/{call_id}"},
            )
            result = await self.await_child(str(op["id"]))
        except CCCError as exc:
            await self._tool_result(
                started, call_id, name, "agents.run.start", arguments, "error", error=exc.problem()
            )
            return
        message = {"role": "tool", "tool_call_id": call_id, "content": json.dumps(result)}
        record = ToolCallRecord(
            call_id=call_id,
            name=name,
            target="agents.run.start",
            arguments=arguments,
            result=result,
        )
        step = self.new_step(
            "delegate", started, messages=[message], tool=record, data={"child": op["id"]}
        )
        await self.record(step)

    async def await_child(self, child_id: str) -> Any:
        """Wait for a delegated run; while it waits for a human, so does this run, showing
        the child's question (the approve endpoint forwards the decision to the child)."""
        deadline = time.monotonic() + self.env.settings.agents_operation_wait
        while True:
            record = await self.ctx.call("agents.operation.get", {"id": child_id})
            if record.get("status") in ("succeeded", "failed", "cancelled"):
                break
            child = (await self.ctx.call("agents.run.get", {"run_id": child_id}))["run"]
            asking = child.get("pending") if child.get("status") == "waiting_approval" else None
            if asking and (self.run.pending is None or self.run.pending.child_run != child_id):
                self.run.status = "waiting_approval"
                self.run.pending = Pending.model_validate(
                    {**asking, "step": len(self.steps) + 1, "child_run": child_id}
                )
                await self._save()
                await self.ctx.emit(
                    "run.waiting_approval",
                    {"run_id": self.run.id, "child_run": child_id, "target": asking["target"]},
                )
            elif not asking and self.run.status == "waiting_approval":
                self.run.status, self.run.pending = "running", None
                await self._save()
            if time.monotonic() > deadline:
                from ccc.common import Timeout

                raise Timeout(f"the delegated run {child_id} did not end in time")
            await asyncio.sleep(self.env.settings.agents_poll_interval)
        if self.run.status == "waiting_approval":
            self.run.status, self.run.pending = "running", None
        return await self.await_operation("agents", child_id)

    # -- human approval -------------------------------------------------------------------

    async def _approval(
        self, call_id: str, name: str, target: str | None, arguments: dict[str, Any]
    ) -> dict[str, Any]:
        """Pause until a human decides (``POST /v1/agent-runs/{id}/approve``); the decision
        is a KV key that outlives any instance, so a resumed run finds it."""
        for step in self.steps:
            if step.kind == "approval" and step.decision and step.data:  # noqa: SIM102
                if step.data.get("call_id") == call_id:
                    return step.decision
        started = now()
        pending = self.run.pending
        if pending is None or pending.call_id != call_id:
            pending = Pending(
                step=len(self.steps) + 1,
                tool=name,
                target=target,
                arguments=arguments,
                call_id=call_id,
                requested_at=started,
            )
        decision = await self.wait_decision(pending, approval_key(self.run.id, call_id))
        step = self.new_step(
            "approval",
            pending.requested_at,
            decision=decision,
            data={"call_id": call_id, "target": target, "arguments": arguments},
        )
        await self.record(step)
        return decision

    async def wait_decision(self, pending: Pending, key: str) -> dict[str, Any]:
        self.run.status = "waiting_approval"
        self.run.pending = pending
        await self._save()
        await self.ctx.emit(
            "run.waiting_approval",
            {"run_id": self.run.id, "tool": pending.tool, "target": pending.target},
        )
        deadline = pending.requested_at + self.agent.limits.approval_timeout
        pause = self.env.settings.agents_poll_interval
        while True:
            decision = await self.state.get(key)
            if isinstance(decision, dict):
                break
            if now() > deadline:
                raise RunEnded(
                    "stopped",
                    "approval_timeout",
                    f"nobody decided on {pending.target or pending.tool} in time",
                )
            await asyncio.sleep(pause)
            # a long wait looks less often: many paused runs must not load the bucket
            pause = min(2.0, pause * 1.25)
        self.run.status = "running"
        self.run.pending = None
        await self._save()
        return decision
