"""Results of durable commands, published as ``ccc.evt.<domain>.<op>.completed|failed``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class CommandCompleted(BaseModel):
    correlation_id: str
    result: Any = None


class CommandFailed(BaseModel):
    correlation_id: str
    error: dict[str, Any]
