"""The ``workflow`` service: definitions, runs, approvals and cancellation over the bus.

``service`` is the process's instance; ``create_service`` builds another (tests run two
instances in one process, or inject a clock).
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from typing import Any

from ccc.common import Conflict, Context, Invalid, NotFound, Service

from . import history
from .api import (
    DefinitionGet,
    DefinitionName,
    DefinitionPage,
    DefinitionPut,
    DefinitionSummary,
    DefinitionView,
    Deleted,
    HistoryGet,
    HistoryPage,
    RunApprove,
    RunCancel,
    RunGet,
    RunList,
    RunPage,
    RunStart,
    RunSummary,
    RunView,
    SchemaGet,
    Validated,
)
from .clock import Clock
from .definition import Definition, json_schema
from .engine import Engine
from .library import DefinitionRecord
from .runstate import RUN_DONE, Caller, Run, approval_key, cancel_key, run_key
from .settings import WorkflowSettings
from .validate import load_source, parse_definition


@dataclass
class Runtime:
    settings: WorkflowSettings | None = None
    clock: Clock | None = None
    cron_clock: Clock | None = None
    engine: Engine | None = None

    def require(self) -> Engine:
        if self.engine is None:
            from ccc.common import Unavailable

            raise Unavailable("the workflow engine is not started")
        return self.engine


_RUNTIMES: weakref.WeakKeyDictionary[Service, Runtime] = weakref.WeakKeyDictionary()


def runtime_of(service: Service) -> Runtime:
    """The engine holder of a workflow service instance (tests use it to inject a clock)."""
    return _RUNTIMES[service]


def _view(record: DefinitionRecord, created: bool = False) -> DefinitionView:
    return DefinitionView(
        name=record.name,
        version=record.version,
        digest=record.digest,
        created_at=record.created_at,
        created=created,
        definition=record.parsed(),
    )


def _caller(ctx: Context) -> Caller:
    """The key behind a request, as runs record it (no key: a trusted bus peer)."""
    roles = ctx.caller.roles
    return Caller(key_id=ctx.caller.key_id, roles=sorted(roles) if roles is not None else None)


def _definition_of(req: DefinitionPut) -> Definition:
    document = req.definition if req.definition is not None else load_source(req.source or "")
    return parse_definition(document, req.name)


def waves(definition: Definition) -> list[list[str]]:
    """Steps grouped by the earliest round they can start in (for display and checks)."""
    level: dict[str, int] = {}
    remaining = {s.id: s.depends_on for s in definition.steps}
    while remaining:
        ready = [sid for sid, deps in remaining.items() if all(d in level for d in deps)]
        for sid in ready:
            level[sid] = 1 + max((level[d] for d in remaining[sid]), default=-1)
            del remaining[sid]
    out: list[list[str]] = [[] for _ in range(1 + max(level.values(), default=-1))]
    for sid, lv in level.items():
        out[lv].append(sid)
    return out


def create_service(
    *,
    settings: WorkflowSettings | None = None,
    clock: Clock | None = None,
    cron_clock: Clock | None = None,
) -> Service:
    service = Service(
        "workflow",
        description="Durable DAG workflows over the bus: definitions, runs, triggers, approvals",
    )
    rt = Runtime(settings=settings, clock=clock, cron_clock=cron_clock)
    _RUNTIMES[service] = rt

    @service.on_startup
    async def start_engine(svc: Service) -> None:
        rt.engine = Engine(svc, rt.settings or WorkflowSettings(), rt.clock, rt.cron_clock)
        await rt.engine.start()

    @service.on_shutdown
    async def stop_engine(svc: Service) -> None:
        if rt.engine is not None:
            await rt.engine.stop()
            rt.engine = None

    # -- definitions ---------------------------------------------------------------------

    @service.endpoint("definition.put", http="PUT /v1/workflows/{name}", roles=("operator",))
    async def put_definition(req: DefinitionPut, ctx: Context) -> DefinitionView:
        """Store a workflow definition (YAML or JSON) as a new version.

        Invalid definitions are refused with 422 naming the step and field; a put of a
        document identical to the latest version returns that version (created=false).
        """
        definition = _definition_of(req)
        record, created = await rt.require().library.put(req.name, definition, _caller(ctx))
        return _view(record, created)

    @service.endpoint(
        "definition.validate", http="POST /v1/workflows/{name}/validate", roles=("reader",)
    )
    async def validate_definition(req: DefinitionPut, ctx: Context) -> Validated:
        """Check a definition without storing it: 422 with every problem, or its waves."""
        definition = _definition_of(req)
        return Validated(
            valid=True, steps=[s.id for s in definition.steps], order=waves(definition)
        )

    @service.endpoint("definition.get", http="GET /v1/workflows/{name}", roles=("reader",))
    async def get_definition(req: DefinitionGet, ctx: Context) -> DefinitionView:
        """A definition: the latest version, or ``?version=N``."""
        return _view(await rt.require().library.get(req.name, req.version))

    @service.endpoint("definition.list", http="GET /v1/workflows", roles=("reader",))
    async def list_definitions(req: SchemaGet, ctx: Context) -> DefinitionPage:
        """Every workflow with its latest version."""
        library = rt.require().library
        out = []
        for name in await library.names():
            try:
                record = await library.get(name)
            except NotFound:
                continue
            d = record.parsed()
            out.append(
                DefinitionSummary(
                    name=name,
                    version=record.version,
                    description=d.description,
                    steps=len(d.steps),
                    created_at=record.created_at,
                    triggers=[
                        f"cron {t.cron} ({t.timezone})" if t.cron else f"event {t.event}"
                        for t in d.triggers
                    ],
                )
            )
        return DefinitionPage(workflows=out)

    @service.endpoint("definition.delete", http="DELETE /v1/workflows/{name}", roles=("operator",))
    async def delete_definition(req: DefinitionName, ctx: Context) -> Deleted:
        """Remove a workflow: no new runs or triggers; running runs finish on their version."""
        await rt.require().library.delete(req.name)
        return Deleted(name=req.name)

    @service.endpoint("definition.schema", http="GET /v1/workflow-schema", roles=("reader",))
    async def definition_schema(req: SchemaGet, ctx: Context) -> dict[str, Any]:
        """The JSON Schema (2020-12) of a workflow definition."""
        return json_schema()

    # -- runs ----------------------------------------------------------------------------

    @service.endpoint("run.start", http="POST /v1/workflows/{name}/runs", roles=("operator",))
    async def start_run(req: RunStart, ctx: Context) -> RunView:
        """Start a run of the latest (or a given) version; it continues in the background.

        With ``idempotency_key`` (or a command's ``Nats-Msg-Id``) a repeated start returns
        the first run instead of starting another.
        """
        run = await rt.require().start_run(
            req.name,
            version=req.version,
            params=req.params,
            caller=_caller(ctx),
            idempotency_key=req.idempotency_key or ctx.idempotency_key,
            depth=req.depth,
            parent=req.parent,
        )
        return RunView.of(run)

    @service.endpoint("run.get", http="GET /v1/workflow-runs/{run_id}", roles=("reader",))
    async def get_run(req: RunGet, ctx: Context) -> RunView:
        """A run: status, per-step status, attempts, timings, outputs and errors."""
        return RunView.of(await rt.require().get_run(req.run_id))

    @service.endpoint("run.list", http="GET /v1/workflow-runs", roles=("reader",))
    async def list_runs(req: RunList, ctx: Context) -> RunPage:
        """Runs, newest first, optionally of one workflow or in one status."""
        engine = rt.require()
        found: list[RunSummary] = []
        async for entry in engine.state.items("run."):
            run = Run.model_validate(entry.value)
            if (req.workflow and run.workflow != req.workflow) or (
                req.status and run.status != req.status
            ):
                continue
            done, total = run.progress()
            found.append(
                RunSummary(
                    id=run.id,
                    workflow=run.workflow,
                    version=run.version,
                    status=run.status,
                    created_at=run.created_at,
                    finished_at=run.finished_at,
                    done=done,
                    total=total,
                    error=run.error,
                )
            )
        found.sort(key=lambda r: r.created_at, reverse=True)
        return RunPage(runs=found[: req.limit])

    @service.endpoint(
        "run.cancel", http="POST /v1/workflow-runs/{run_id}/cancel", roles=("operator",)
    )
    async def cancel_run(req: RunCancel, ctx: Context) -> RunView:
        """Ask a run to stop: running steps are cancelled, compensations run, status
        becomes ``cancelled``. Answers at once; follow the run to see it end."""
        engine = rt.require()
        run = await engine.get_run(req.run_id)
        if run.status in RUN_DONE:
            raise Conflict(f"run {run.id} already {run.status}")
        by = ctx.caller.key_id or "bus"
        await engine.state.put(cancel_key(run.id), {"by": by, "reason": req.reason})
        await engine.signal(run.id)
        return RunView.of(run)

    @service.endpoint(
        "run.approve",
        http="POST /v1/workflow-runs/{run_id}/steps/{step}/approve",
        roles=("operator",),
    )
    async def approve_step(req: RunApprove, ctx: Context) -> RunView:
        """Decide an approval step (``approved: false`` rejects it, failing the step)."""
        engine = rt.require()
        entry = await engine.state.entry(run_key(req.run_id))
        if entry is None:
            raise NotFound(f"run {req.run_id!r} does not exist")
        run = Run.model_validate(entry.value)
        record = await engine.library.get(run.workflow, run.version)
        step = next((s for s in record.parsed().steps if s.id == req.step), None)
        if step is None or step.approval is None:
            raise NotFound(f"run {run.id} has no approval step {req.step!r}")
        sr = run.steps[req.step]
        if req.index >= max(1, len(sr.instances)):
            raise Invalid(
                f"step {req.step} has {len(sr.instances)} item(s); no index {req.index}",
                errors=[{"loc": "index", "msg": "out of range", "type": "range"}],
            )
        if sr.status in ("succeeded", "failed", "skipped", "cancelled") or run.status in RUN_DONE:
            raise Conflict(f"step {req.step} of run {run.id} is already {sr.status}")
        if not sr.instances or sr.instances[req.index].status not in ("running", "waiting"):
            raise Conflict(f"step {req.step} of run {run.id} is not waiting for a decision yet")
        decision = {
            "approved": req.approved,
            "by": ctx.caller.key_id or "bus",
            "comment": req.comment,
        }
        try:
            await engine.state.create(approval_key(run.id, req.step, req.index), decision)
        except Conflict:
            raise Conflict(f"step {req.step} of run {run.id} was already decided") from None
        await engine.signal(run.id)
        return RunView.of(run)

    @service.endpoint(
        "run.history", http="GET /v1/workflow-runs/{run_id}/history", roles=("reader",)
    )
    async def run_history(req: HistoryGet, ctx: Context) -> HistoryPage:
        """Every recorded state change of a run, oldest first (from the history stream)."""
        engine = rt.require()
        await engine.get_run(req.run_id)
        entries = await asyncio.wait_for(
            history.read(engine.bus.js, req.run_id, req.limit), timeout=8.0
        )
        return HistoryPage(run_id=req.run_id, entries=entries)

    return service


service = create_service()
