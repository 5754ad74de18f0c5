"""Agents as data, runs and their steps: the request and response models of every endpoint.

A run is the durable record ``run.<id>`` (KV ``ccc_agents``) plus one record per completed
step, ``step.<id>.<n>``: the steps are the truth (a resumed run rebuilds its conversation,
counters and current agent from them); the run record is their summary for readers.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

AGENT_NAME = r"^[a-z][a-z0-9-]{0,47}$"
RUN_ID = r"^agents-[0-9a-f]{32}$"
AgentRef = Annotated[str, Field(pattern=AGENT_NAME)]
ToolGlob = Annotated[str, Field(pattern=r"^[a-z0-9_.*?\[\]!-]{1,200}$")]


class Strict(BaseModel):
    """A typo in an agent's definition is a 422 naming the field, not a silent default."""

    model_config = ConfigDict(extra="forbid")


RunStatus = Literal["running", "waiting_approval", "completed", "stopped", "failed", "cancelled"]
RUN_DONE: frozenset[str] = frozenset({"completed", "stopped", "failed", "cancelled"})
EndReason = Literal[
    "final_answer",
    "max_steps",
    "repeated_tool_call",
    "budget_tokens",
    "budget_cost",
    "approval_timeout",
    "plan_completed",
    "plan_failed",
    "model_error",
    "error",
    "cancelled",
]
StepKind = Literal["model", "tool", "handoff", "delegate", "approval", "plan", "workflow"]


class Limits(Strict):
    """Guards of a run; each stop names its reason (``end_reason``)."""

    max_steps: int = Field(20, ge=1, le=1000, description="Model calls in one run")
    max_tokens: int | None = Field(None, ge=1, description="Tokens (prompt + completion)")
    max_cost_usd: float | None = Field(None, gt=0)
    usd_per_1k_tokens: float = Field(
        0.0,
        ge=0,
        description="Price used for the cost guard when the model's answer carries no usage.cost",
    )
    max_identical_calls: int = Field(
        3, ge=1, le=100, description="The same tool with the same arguments, this often at most"
    )
    approval_timeout: float = Field(86_400.0, gt=0, description="Seconds a pause may last")


class Memory(Strict):
    window: int = Field(
        60, ge=2, le=1000, description="Messages sent to the model at most (the newest)"
    )
    thread: bool = Field(
        False, description="Keep the conversation across runs that name the same thread"
    )


class AgentSpec(Strict):
    """An agent: everything it is, as data (``PUT /v1/agents/{name}``)."""

    name: str = Field(..., pattern=AGENT_NAME)
    description: str = Field("", max_length=2000)
    instructions: str = Field("", max_length=100_000, description="The system prompt")
    model: str = Field(..., min_length=1, description="Any model the ai service serves")
    tools: list[ToolGlob] = Field(
        default_factory=list,
        max_length=200,
        description="Globs over the live catalog's <domain>.<op> (rag.*, database.backup.*)",
    )
    handoffs: list[AgentRef] = Field(
        default_factory=list, description="Agents this one may hand the conversation to"
    )
    delegates: list[AgentRef] = Field(
        default_factory=list,
        description="Specialists this one (a supervisor) may give a task to and hear back from",
    )
    peers: list[AgentRef] = Field(
        default_factory=list,
        description="Agents this one may send messages to (ccc.evt.agents.message.<agent>)",
    )
    inbox: bool = Field(
        False, description="Offer read_messages: the messages other agents sent to this one"
    )
    approval: list[ToolGlob] = Field(
        default_factory=list,
        description="More globs of tools that need a human's approval (beside the service's)",
    )
    memory: Memory = Field(default_factory=Memory)
    limits: Limits = Field(default_factory=Limits)
    temperature: float | None = Field(None, ge=0, le=2)


class AgentRecord(AgentSpec):
    version: int = 1
    created_at: float
    updated_at: float
    created_by: str | None = None


class AgentName(BaseModel):
    name: str = Field(..., pattern=AGENT_NAME)


class AgentPage(BaseModel):
    agents: list[AgentRecord]


class AgentList(BaseModel):
    pass


class ToolView(BaseModel):
    name: str = Field(description="The function name the model sees")
    target: str | None = Field(description="<domain>.<op> on the bus; None for a built-in")
    description: str
    roles: list[str] = Field(default_factory=list)
    dangerous: bool = False
    parameters: dict[str, Any] = Field(default_factory=dict)


class ToolPage(BaseModel):
    agent: str
    tools: list[ToolView]


class RunStart(BaseModel):
    """``POST /v1/agents/{name}/runs``: 202 with the operation, whose id is the run's id."""

    name: str = Field(..., pattern=AGENT_NAME)
    input: str = Field(..., min_length=1, max_length=200_000)
    mode: Literal["chat", "plan"] = Field(
        "chat",
        description="chat: the function-calling loop; plan: the model writes a plan that "
        "runs as a workflow on the workflow service",
    )
    thread: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    parent: str | None = Field(None, pattern=RUN_ID, description="Set by a delegating run")
    depth: int = Field(0, ge=0, le=16, description="Delegation depth (set by the parent)")


class Pending(BaseModel):
    """What a paused run waits for."""

    step: int
    tool: str
    target: str | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)
    call_id: str | None = None
    workflow_run: str | None = None
    workflow_step: str | None = None
    child_run: str | None = Field(None, description="A delegated run that waits (forwarded)")
    requested_at: float


class Run(BaseModel):
    id: str
    agent: str = Field(description="The agent speaking now (changes on a handoff)")
    root_agent: str
    mode: Literal["chat", "plan"] = "chat"
    status: RunStatus = "running"
    end_reason: EndReason | None = None
    detail: str = ""
    input: str
    initial: list[dict[str, Any]] = Field(
        default_factory=list, description="Messages before the first step (thread memory)"
    )
    thread: str | None = None
    parent: str | None = None
    depth: int = 0
    caller: str | None = None
    caller_roles: list[str] | None = None
    steps: int = 0
    turns: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    agents: list[str] = Field(default_factory=list, description="Every agent that spoke")
    versions: dict[str, int] = Field(
        default_factory=dict, description="The version of each agent this run uses (kept)"
    )
    pending: Pending | None = None
    plan: dict[str, Any] | None = None
    workflow_run: str | None = None
    output: Any = None
    created_at: float
    updated_at: float
    finished_at: float | None = None
    attempts: int = 1
    traceparent: str | None = Field(
        None,
        description="W3C trace context of the start: every step, resumed or not, is a "
        "span of this one trace",
    )


class ToolCallRecord(BaseModel):
    call_id: str
    name: str
    target: str | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)
    result: Any = None
    error: dict[str, Any] | None = None
    status: Literal["ok", "error", "refused", "rejected"] = "ok"


class Step(BaseModel):
    """One completed step: a model call, a tool call, a handoff, a decision, a plan."""

    n: int
    kind: StepKind
    agent: str
    started_at: float
    finished_at: float
    latency_ms: float
    trace_id: str | None = None
    messages: list[dict[str, Any]] = Field(
        default_factory=list, description="What this step added to the conversation"
    )
    model: str | None = None
    tools_offered: list[str] = Field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    tool: ToolCallRecord | None = None
    handoff_to: str | None = None
    decision: dict[str, Any] | None = None
    data: dict[str, Any] | None = None


class RunResult(BaseModel):
    """The operation's result when a run ends."""

    run_id: str
    status: RunStatus
    end_reason: EndReason | None
    agent: str
    output: Any = None
    steps: int
    turns: int
    tokens: int
    cost_usd: float
    detail: str = ""


class RunGet(BaseModel):
    run_id: str = Field(..., pattern=RUN_ID)


class RunView(BaseModel):
    run: Run
    steps: list[Step]


class RunList(BaseModel):
    agent: str | None = Field(None, pattern=AGENT_NAME)
    status: RunStatus | None = None
    limit: int = Field(50, ge=1, le=500)


class RunPage(BaseModel):
    runs: list[Run]


class RunApprove(BaseModel):
    run_id: str = Field(..., pattern=RUN_ID)
    approved: bool = Field(description="Required: an empty body must not approve anything")
    comment: str = Field("", max_length=2000)


class RunCancel(BaseModel):
    run_id: str = Field(..., pattern=RUN_ID)
