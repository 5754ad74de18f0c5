"""Where agents, runs and steps live in the service's KV bucket (``ccc_agents``).

``agent.<name>`` the definition; ``run.<id>`` a run's summary; ``step.<id>.<n>`` each
completed step (zero-padded so keys sort in order); ``approval.<id>.<call>`` a human's
decision; ``thread.<agent>.<thread>`` a conversation kept across runs.
"""

from __future__ import annotations

import hashlib

from ccc.common import Conflict, NotFound
from ccc.common.state import StateStore

from .models import AgentRecord, Run, Step


def agent_key(name: str) -> str:
    return f"agent.{name}"


def run_key(run_id: str) -> str:
    return f"run.{run_id}"


def step_key(run_id: str, n: int) -> str:
    return f"step.{run_id}.{n:06d}"


def snapshot_key(run_id: str, agent: str) -> str:
    return f"runagent.{run_id}.{agent}"


async def agent_of_run(state: StateStore, run_id: str, name: str) -> AgentRecord:
    """The agent as this run first used it: a definition edited while the run goes on
    does not change it half-way (nor after a resume)."""
    kept = await state.get_model(snapshot_key(run_id, name), AgentRecord)
    if kept is not None:
        return kept
    record = await load_agent(state, name)
    try:
        await state.create(snapshot_key(run_id, name), record)
    except Conflict:
        return await agent_of_run(state, run_id, name)
    return record


def approval_key(run_id: str, call_id: str) -> str:
    """Tool call ids are the model's strings; a digest keeps the key within KV's alphabet."""
    return f"approval.{run_id}.{hashlib.sha256(call_id.encode()).hexdigest()[:20]}"


def thread_key(agent: str, thread: str) -> str:
    return f"thread.{agent}.{thread}"


async def load_agent(state: StateStore, name: str) -> AgentRecord:
    record = await state.get_model(agent_key(name), AgentRecord)
    if record is None:
        raise NotFound(f"agent {name!r} does not exist")
    return record


async def load_run(state: StateStore, run_id: str) -> Run:
    run = await state.get_model(run_key(run_id), Run)
    if run is None:
        raise NotFound(f"run {run_id!r} does not exist")
    return run


async def load_steps(state: StateStore, run_id: str) -> list[Step]:
    steps = [Step.model_validate(e.value) async for e in state.items(f"step.{run_id}.")]
    steps.sort(key=lambda s: s.n)
    return steps
