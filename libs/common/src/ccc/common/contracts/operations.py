"""Operations: the record of long work, kept in the owning service's KV bucket."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

OperationStatus = Literal["pending", "running", "succeeded", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class Operation(BaseModel):
    """What ``GET /v1/operations/{id}`` answers, and what the 202 of a long call carries."""

    id: str
    domain: str
    op: str
    status: OperationStatus = "pending"
    progress: float = Field(0.0, ge=0.0, le=1.0)
    message: str = ""
    result: Any = None
    error: dict[str, Any] | None = None
    correlation_id: str | None = None
    created_at: datetime
    updated_at: datetime
    attempts: int = 0
    owner: str | None = None
    lease_until: float | None = None
    request: dict[str, Any] = Field(default_factory=dict)
    caller: str | None = None
    caller_roles: list[str] | None = None
    """The roles the starting call carried; a resumed run acts with exactly these."""
    idempotency_key: str | None = None


class OperationGet(BaseModel):
    id: str = Field(..., min_length=1, max_length=200, pattern=r"^[a-z0-9_]+-[0-9a-f]{8,64}$")


class OperationList(BaseModel):
    status: OperationStatus | None = None
    limit: int = Field(50, ge=1, le=500)


class OperationPage(BaseModel):
    operations: list[Operation]


class OperationEvent(BaseModel):
    """Body of ``ccc.evt.<domain>.operation.<progress|succeeded|failed|...>``."""

    id: str
    op: str
    status: OperationStatus
    progress: float
    message: str = ""
    result: Any = None
    error: dict[str, Any] | None = None
