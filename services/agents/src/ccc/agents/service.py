"""The ``agents`` service: agents as data, their tools, runs, approvals and inspection.

``service`` is the process's instance; ``create_service`` builds another (tests run one
in-process and one as a subprocess to kill). A run is an operation (202 at once, its id
is the run's id) marked resumable: an instance that takes it over after a crash re-enters
the handler, which goes on from the run's last completed step (``runner``).
"""

from __future__ import annotations

import asyncio
import contextlib

from ccc.common import Caller, Conflict, Context, Forbidden, NotFound, Service
from ccc.common import roles as role_rules

from . import janitor
from .catalog import Catalog
from .models import (
    RUN_DONE,
    AgentList,
    AgentName,
    AgentPage,
    AgentRecord,
    AgentSpec,
    Run,
    RunApprove,
    RunCancel,
    RunGet,
    RunList,
    RunPage,
    RunResult,
    RunStart,
    RunView,
    ToolPage,
    ToolView,
)
from .runner import DELEGATE, HANDOFF, Env, RunLoop, builtin_name, now
from .settings import AgentsSettings
from .store import agent_key, approval_key, load_agent, load_run, load_steps, run_key


def may_see(caller: Caller, run: Run) -> bool:
    """A run holds what its tools answered, so it is shown only to the key that started
    it, to a key whose roles cover that key's, and to trusted bus peers: an operator
    never reads an admin's run, and a reader never sees what an operator's tools said."""
    if caller.roles is None or (caller.key_id is not None and caller.key_id == run.caller):
        return True
    theirs = role_rules.expand(run.caller_roles) if run.caller_roles is not None else None
    if theirs is None:  # started by a trusted peer: admins only
        return "admin" in role_rules.expand(caller.roles)
    return theirs <= role_rules.expand(caller.roles)


async def visible_run(ctx: Context, run_id: str) -> Run:
    run = await load_run(ctx.state, run_id)
    if not may_see(ctx.caller, run):
        raise Forbidden(f"run {run_id} was started by another key with more roles than yours")
    return run


def create_service(settings: AgentsSettings | None = None) -> Service:
    service = Service(
        "agents",
        description="Multi-agent orchestration: agents as data, every bus endpoint a tool, "
        "durable runs with handoff, delegation, planning and human approval",
        settings=settings or AgentsSettings(),
    )
    envs: dict[str, Env] = {}
    tasks: list[asyncio.Task[None]] = []

    def env() -> Env:
        found = envs.get("env")
        if found is None:
            from ccc.common import Unavailable

            raise Unavailable("the agents service is starting")
        return found

    @service.on_startup
    async def start(svc: Service) -> None:
        cfg = svc.settings if isinstance(svc.settings, AgentsSettings) else AgentsSettings()
        envs["env"] = Env(settings=cfg, catalog=Catalog(svc.nc, ttl=cfg.agents_catalog_ttl))
        if cfg.agents_run_retention_days > 0:
            tasks.append(
                asyncio.create_task(janitor.forever(svc.state, cfg.agents_run_retention_days))
            )

    @service.on_shutdown
    async def stop(svc: Service) -> None:
        for task in tasks:
            task.cancel()
        tasks.clear()

    # -- agents ---------------------------------------------------------------------------

    @service.endpoint("agent.put", http="PUT /v1/agents/{name}", roles=("operator",))
    async def put_agent(req: AgentSpec, ctx: Context) -> AgentRecord:
        """Create or replace an agent: instructions, model, tool globs over the live
        catalog, handoffs, delegates, memory and limits. Each put is a new version."""
        previous = await ctx.state.get_model(agent_key(req.name), AgentRecord)
        t = now()
        record = AgentRecord(
            **req.model_dump(),
            version=(previous.version + 1) if previous else 1,
            created_at=previous.created_at if previous else t,
            updated_at=t,
            created_by=ctx.caller.key_id,
        )
        await ctx.state.put(agent_key(req.name), record)
        return record

    @service.endpoint("agent.get", http="GET /v1/agents/{name}", roles=("reader",))
    async def get_agent(req: AgentName, ctx: Context) -> AgentRecord:
        """An agent's definition."""
        return await load_agent(ctx.state, req.name)

    @service.endpoint("agent.list", http="GET /v1/agents", roles=("reader",))
    async def list_agents(req: AgentList, ctx: Context) -> AgentPage:
        """Every agent."""
        agents = [AgentRecord.model_validate(e.value) async for e in ctx.state.items("agent.")]
        return AgentPage(agents=agents)

    @service.endpoint("agent.delete", http="DELETE /v1/agents/{name}", roles=("operator",))
    async def delete_agent(req: AgentName, ctx: Context) -> AgentRecord:
        """Remove an agent; its finished runs stay readable."""
        record = await load_agent(ctx.state, req.name)
        await ctx.state.delete(agent_key(req.name))
        return record

    @service.endpoint("agent.tools", http="GET /v1/agents/{name}/tools", roles=("reader",))
    async def agent_tools(req: AgentName, ctx: Context) -> ToolPage:
        """The tools this agent would be given now, for the calling key: its globs over
        the live catalog minus what the key's roles cannot call, plus handoffs and
        delegates; ``dangerous`` tools pause a run for approval."""
        e = env()
        agent = await load_agent(ctx.state, req.name)
        tools = await e.catalog.for_agent(agent.tools, ctx.caller.roles, fresh=True)
        patterns = [*e.settings.agents_dangerous, *agent.approval]
        from .catalog import matches

        views = [
            ToolView(
                name=t.name,
                target=t.target,
                description=t.description,
                roles=sorted(t.roles),
                dangerous=matches(t.target, patterns),
                parameters=t.parameters,
            )
            for t in tools.values()
        ]
        views += [
            ToolView(name=builtin_name(HANDOFF, a), target=None, description=f"handoff to {a}")
            for a in agent.handoffs
        ]
        views += [
            ToolView(name=builtin_name(DELEGATE, a), target=None, description=f"delegate to {a}")
            for a in agent.delegates
        ]
        return ToolPage(agent=agent.name, tools=views)

    # -- runs -----------------------------------------------------------------------------

    async def agent_exists(req: RunStart, ctx: Context) -> None:
        """An unknown agent is a 404 at once, not a run that fails after its 202."""
        await load_agent(ctx.state, req.name)

    @service.endpoint(
        "run.start",
        http="POST /v1/agents/{name}/runs",
        roles=("operator",),
        operation=True,
        resumable=True,
        precheck=agent_exists,
    )
    async def start_run(req: RunStart, ctx: Context) -> RunResult:
        """Run an agent on an input: 202 with the operation at once; its id is the run's id
        (``GET /v1/agent-runs/{id}``). Tool calls go over the bus as the calling key, so
        the agent can never do what the key cannot. Survives a restart of the service."""
        loop = await RunLoop.open(env(), req, ctx)
        return await loop.go()

    @service.endpoint("run.get", http="GET /v1/agent-runs/{run_id}", roles=("reader",))
    async def get_run(req: RunGet, ctx: Context) -> RunView:
        """A run and every step: messages, tool calls with arguments and results, tokens,
        latency, trace id; ``end_reason`` says why it ended. Shown to the key that started
        it and to keys whose roles cover its roles."""
        try:
            run = await visible_run(ctx, req.run_id)
        except NotFound:
            run = await starting_run(req.run_id)
            if not may_see(ctx.caller, run):
                raise Forbidden(f"run {run.id} was started by another key") from None
        return RunView(run=run, steps=await load_steps(ctx.state, req.run_id))

    async def starting_run(run_id: str) -> Run:
        """A run whose operation exists but whose record is not written yet (the first
        instants after the 202, or a start that failed before its first write)."""
        op = await service.operations.get(run_id)
        if op.op != "run.start":
            raise NotFound(f"run {run_id!r} does not exist")
        request = RunStart.model_validate(op.request)
        failed = op.status in ("failed", "cancelled")
        created = op.created_at.timestamp()
        return Run(
            id=op.id,
            agent=request.name,
            root_agent=request.name,
            mode=request.mode,
            status="cancelled" if op.status == "cancelled" else "failed" if failed else "running",
            end_reason="cancelled" if op.status == "cancelled" else "error" if failed else None,
            detail=str((op.error or {}).get("detail", "")),
            input=request.input,
            parent=request.parent,
            caller=op.caller,
            caller_roles=op.caller_roles,
            created_at=created,
            updated_at=op.updated_at.timestamp(),
        )

    @service.endpoint("run.list", http="GET /v1/agent-runs", roles=("reader",))
    async def list_runs(req: RunList, ctx: Context) -> RunPage:
        """Runs the caller may see, newest first, optionally of one (root) agent or in one
        status."""
        runs = []
        async for e in ctx.state.items("run."):
            run = Run.model_validate(e.value)
            if not may_see(ctx.caller, run):
                continue
            if req.agent and run.root_agent != req.agent:
                continue
            if req.status and run.status != req.status:
                continue
            runs.append(run)
        runs.sort(key=lambda r: r.created_at, reverse=True)
        return RunPage(runs=runs[: req.limit])

    @service.endpoint(
        "run.approve", http="POST /v1/agent-runs/{run_id}/approve", roles=("operator",)
    )
    async def approve_run(req: RunApprove, ctx: Context) -> Run:
        """Decide the dangerous tool call a run waits on (``approved: false`` rejects it;
        the model hears the rejection). For a plan, the decision goes to its workflow."""
        run = await visible_run(ctx, req.run_id)
        pending = run.pending
        if run.status != "waiting_approval" or pending is None:
            raise Conflict(f"run {run.id} is {run.status}: it waits for no decision")
        decision = {
            "approved": req.approved,
            "by": ctx.caller.key_id or "bus",
            "comment": req.comment,
        }
        if pending.child_run:
            await ctx.call(
                "agents.run.approve",
                {"run_id": pending.child_run, "approved": req.approved, "comment": req.comment},
            )
            return run
        if pending.workflow_run and pending.workflow_step:
            await ctx.call(
                "workflow.run.approve",
                {
                    "run_id": pending.workflow_run,
                    "step": pending.workflow_step,
                    "approved": req.approved,
                    "comment": req.comment,
                },
            )
            return run
        try:
            await ctx.state.create(approval_key(run.id, pending.call_id or ""), decision)
        except Conflict:
            raise Conflict(f"the call run {run.id} waits on was already decided") from None
        return run

    @service.endpoint("run.cancel", http="POST /v1/agent-runs/{run_id}/cancel", roles=("operator",))
    async def cancel_run(req: RunCancel, ctx: Context) -> Run:
        """Stop a run: its operation is cancelled and the run ends with ``cancelled``."""
        run = await visible_run(ctx, req.run_id)
        if run.status in RUN_DONE:
            raise Conflict(f"run {run.id} already {run.status}")
        with contextlib.suppress(NotFound):
            await service.operations.cancel(run.id)
        run = run.model_copy(
            update={
                "status": "cancelled",
                "end_reason": "cancelled",
                "detail": f"cancelled by {ctx.caller.key_id or 'bus'}",
                "pending": None,
                "finished_at": now(),
                "updated_at": now(),
            }
        )
        await ctx.state.put(run_key(run.id), run)
        await ctx.emit("run.ended", {"run_id": run.id, "status": "cancelled"})
        return run

    return service


service = create_service()
