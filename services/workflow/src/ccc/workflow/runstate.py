"""A run's durable record (KV ``run.<id>``) and the keys around it.

The record is written only by the instance holding the run's lease (``lease.<id>``), by
compare-and-swap on its revision; everything a run needs to resume after a crash is in
it: which steps finished with what output, which attempt each running step is on and
when it started, when the next retry is due, how far compensation got.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field

StepStatus = Literal[
    "pending", "running", "waiting", "retrying", "succeeded", "failed", "skipped", "cancelled"
]
RunStatus = Literal["running", "compensating", "succeeded", "failed", "cancelled"]
STEP_DONE: frozenset[str] = frozenset({"succeeded", "failed", "skipped", "cancelled"})
STEP_OK: frozenset[str] = frozenset({"succeeded", "skipped"})
STEP_ACTIVE: frozenset[str] = frozenset({"running", "waiting"})
RUN_DONE: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class Instance(BaseModel):
    """One execution unit: a plain step has one; a ``for_each`` step one per item."""

    index: int = 0
    item: Any = None
    status: StepStatus = "pending"
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    next_attempt_at: float | None = None
    output: Any = None
    error: str | None = None


class StepRun(BaseModel):
    status: StepStatus = "pending"
    started_at: float | None = None
    finished_at: float | None = None
    output: Any = None
    error: str | None = None
    for_each: bool = False
    instances: list[Instance] = Field(default_factory=list)


class Caller(BaseModel):
    key_id: str | None = None
    roles: list[str] | None = None


class Run(BaseModel):
    id: str
    workflow: str
    version: int
    status: RunStatus = "running"
    params: dict[str, Any] = Field(default_factory=dict)
    trigger: dict[str, Any] = Field(default_factory=dict)
    caller: Caller = Field(default_factory=Caller)
    parent: str | None = None
    depth: int = 0
    created_at: float
    updated_at: float
    finished_at: float | None = None
    deadline: float | None = None
    steps: dict[str, StepRun]
    compensations: dict[str, Instance] = Field(default_factory=dict)
    ending: Literal["failed", "cancelled"] | None = None
    output: Any = None
    error: str | None = None
    resumed: int = Field(0, description="How often another instance took the run over")

    def progress(self) -> tuple[int, int]:
        """(finished units, all units): a for_each step counts each item."""
        done = total = 0
        for sr in self.steps.values():
            if sr.for_each and sr.instances:
                total += len(sr.instances)
                done += sum(1 for i in sr.instances if i.status in STEP_DONE)
            else:
                total += 1
                done += 1 if sr.status in STEP_DONE else 0
        return done, total


class Lease(BaseModel):
    owner: str
    until: float


def run_key(run_id: str) -> str:
    return f"run.{run_id}"


def lease_key(run_id: str) -> str:
    return f"lease.{run_id}"


def cancel_key(run_id: str) -> str:
    return f"cancel.{run_id}"


def approval_key(run_id: str, step: str, index: int) -> str:
    return f"approval.{run_id}.{step}.{index}"


def new_run_id(workflow: str, idempotency_key: str | None) -> str:
    """Random, or derived from an idempotency key so a repeated start finds the first run."""
    if idempotency_key:
        digest = hashlib.sha256(f"{workflow}\n{idempotency_key}".encode()).hexdigest()
        return f"run_{digest[:24]}"
    return f"run_{uuid.uuid4().hex[:24]}"


def step_key(run_id: str, step: str, index: int, for_each: bool) -> str:
    """The idempotency key a step's callee sees: stable across retries and resumes."""
    return f"{run_id}/{step}/{index}" if for_each else f"{run_id}/{step}"
