"""Request and response models of the workflow endpoints."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, model_validator

from .definition import NAME_PATTERN, STEP_ID_PATTERN, Definition
from .runstate import Run, RunStatus

RUN_ID_PATTERN = r"^run_[0-9a-f]{24}$"


class DefinitionPut(BaseModel):
    """A definition as a JSON object (``definition``) or as YAML/JSON text (``source``)."""

    name: str = Field(..., pattern=NAME_PATTERN)
    definition: dict[str, Any] | None = None
    source: str | None = Field(None, max_length=1_000_000, description="YAML or JSON text")

    @model_validator(mode="after")
    def _one(self) -> DefinitionPut:
        if (self.definition is None) == (self.source is None):
            raise ValueError("send exactly one of 'definition' (an object) or 'source' (YAML text)")
        return self


class DefinitionView(BaseModel):
    name: str
    version: int
    digest: str
    created_at: float
    created: bool = Field(False, description="False when the put matched the latest version")
    definition: Definition = Field(description="As stored: durations in seconds, defaults filled")


class DefinitionGet(BaseModel):
    name: str = Field(..., pattern=NAME_PATTERN)
    version: int | None = Field(None, ge=1)


class DefinitionName(BaseModel):
    name: str = Field(..., pattern=NAME_PATTERN)


class DefinitionSummary(BaseModel):
    name: str
    version: int
    description: str
    steps: int
    triggers: list[str]
    created_at: float


class DefinitionPage(BaseModel):
    workflows: list[DefinitionSummary]


class Validated(BaseModel):
    valid: bool
    steps: list[str]
    order: list[list[str]] = Field(description="Steps grouped by the earliest wave they can run in")


class Deleted(BaseModel):
    name: str
    deleted: bool = True


class SchemaGet(BaseModel):
    pass


class RunStart(BaseModel):
    name: str = Field(..., pattern=NAME_PATTERN)
    version: int | None = Field(None, ge=1, description="Default: the latest")
    params: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = Field(
        None, min_length=1, max_length=200, description="A repeated start returns the same run"
    )
    depth: int = Field(0, ge=0, le=16, description="Nesting depth (set by a parent run)")
    parent: str | None = Field(None, pattern=RUN_ID_PATTERN)


class RunView(Run):
    done: int = 0
    total: int = 0

    @classmethod
    def of(cls, run: Run) -> RunView:
        done, total = run.progress()
        return cls(**run.model_dump(), done=done, total=total)


class RunGet(BaseModel):
    run_id: str = Field(..., pattern=RUN_ID_PATTERN)


class RunCancel(BaseModel):
    run_id: str = Field(..., pattern=RUN_ID_PATTERN)
    reason: str = Field("", max_length=500)


class RunApprove(BaseModel):
    run_id: str = Field(..., pattern=RUN_ID_PATTERN)
    step: str = Field(..., pattern=STEP_ID_PATTERN)
    index: int = Field(0, ge=0, description="Item of a for_each step")
    approved: bool = True
    comment: str = Field("", max_length=2000)


class RunList(BaseModel):
    workflow: str | None = Field(None, pattern=NAME_PATTERN)
    status: RunStatus | None = None
    limit: int = Field(50, ge=1, le=500)


class RunSummary(BaseModel):
    id: str
    workflow: str
    version: int
    status: RunStatus
    created_at: float
    finished_at: float | None
    done: int
    total: int
    error: str | None = None


class RunPage(BaseModel):
    runs: list[RunSummary]


class HistoryGet(BaseModel):
    run_id: str = Field(..., pattern=RUN_ID_PATTERN)
    limit: int = Field(1000, ge=1, le=10_000)


class HistoryPage(BaseModel):
    run_id: str
    entries: list[dict[str, Any]]
