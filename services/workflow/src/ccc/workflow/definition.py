"""The workflow definition language: pydantic models, the source of the published JSON Schema.

A definition is YAML or JSON. Each step does exactly one thing, named by its key:

- ``call: <domain>.<op>`` with ``with: {...}``: request-reply to any endpoint of the fleet
- ``publish: ccc.evt.<...>`` (or ``ccc.cmd.<...>``) with ``payload: {...}``
- ``wait_event: {subject, match, timeout}``: wait for an event on ``ccc.evt.>``
- ``delay: 30`` (seconds, or ``"500ms"``, ``"2m"``, ``"1h"``)
- ``approval: {prompt, timeout}``: wait for an approve or reject call
- ``workflow: {name, version, params}``: run a sub-workflow and wait for its end

and may add ``depends_on``, ``when``, ``for_each`` + ``concurrency``, ``timeout``,
``retry`` and ``on_failure`` (a compensation action, run if the run fails after this
step started).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
STEP_ID_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
TARGET_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
PUBLISH_PATTERN = r"^ccc\.(evt|cmd)(\.[a-z0-9_-]+)+$"
EVENT_FILTER_PATTERN = r"^ccc\.evt(\.([a-z0-9_-]+|\*))*(\.>)?$"
RunEnd = Literal["succeeded", "failed", "cancelled"]
RUN_ENDS: tuple[RunEnd, ...] = ("succeeded", "failed", "cancelled")
KINDS = ("call", "publish", "wait_event", "delay", "approval", "workflow")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def seconds(value: float | str) -> float:
    """``30``, ``"30s"``, ``"500ms"``, ``"2m"``, ``"1h"``, ``"1d"`` → seconds."""
    if isinstance(value, int | float):
        return float(value)
    m = _DURATION.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a duration (e.g. 30, '500ms', '2m', '1h')")
    return float(m.group(1)) * _UNITS[m.group(2)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)


class Retry(Strict):
    """Attempts with exponential backoff: ``backoff * multiplier**(n-1)``, capped, ± jitter."""

    max_attempts: int = Field(1, ge=1, le=100, description="Total attempts, the first included")
    backoff: float = Field(1.0, ge=0, le=3600, description="Seconds before the second attempt")
    multiplier: float = Field(2.0, ge=1, le=10)
    max_backoff: float = Field(300.0, ge=0, le=86400)
    jitter: float = Field(0.2, ge=0, le=1, description="Fraction of the delay randomised ±")

    def delay(self, attempt: int, rand: float) -> float:
        """Delay before attempt ``attempt + 1``; ``rand`` is uniform in [0, 1)."""
        base = min(self.max_backoff, self.backoff * self.multiplier ** (attempt - 1))
        return max(0.0, base * (1 + self.jitter * (2 * rand - 1)))


class WaitEvent(Strict):
    subject: str = Field(..., pattern=EVENT_FILTER_PATTERN, description="Filter on ccc.evt.>")
    match: str | None = Field(None, description="Expression over `event` (the payload)")
    timeout: float | str | None = None

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: float | str | None) -> float | None:
        return None if v is None else _positive(seconds(v))


class Approval(Strict):
    prompt: str = Field("", max_length=2000)
    timeout: float | str | None = None

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: float | str | None) -> float | None:
        return None if v is None else _positive(seconds(v))


class SubWorkflow(Strict):
    name: str = Field(..., pattern=NAME_PATTERN)
    version: int | None = Field(None, ge=1, description="Default: the latest at step start")
    params: dict[str, Any] = Field(default_factory=dict)


def _positive(v: float) -> float:
    if v <= 0:
        raise ValueError("must be greater than 0")
    return v


class Action(Strict):
    """What a step (or a compensation) does: exactly one of the kinds."""

    call: str | None = Field(None, pattern=TARGET_PATTERN, description="<domain>.<op>")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    publish: str | None = Field(None, pattern=PUBLISH_PATTERN)
    payload: Any = None
    wait_event: WaitEvent | None = None
    delay: float | str | None = None
    approval: Approval | None = None
    workflow: SubWorkflow | None = None
    timeout: float | str | None = Field(None, description="Per attempt (seconds or '30s')")
    retry: Retry = Field(default_factory=Retry)

    @field_validator("delay", "timeout")
    @classmethod
    def _durations(cls, v: float | str | None) -> float | None:
        if v is None:
            return None
        s = seconds(v)
        if s < 0:
            raise ValueError("must not be negative")
        return s

    @model_validator(mode="after")
    def _one_kind(self) -> Action:
        kinds = [k for k in KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            found = f"found {kinds}" if kinds else "found none"
            raise ValueError(f"a step needs exactly one of {list(KINDS)}; {found}")
        if self.with_ and self.call is None:
            raise ValueError("'with' belongs to a 'call' step")
        if self.payload is not None and self.publish is None:
            raise ValueError("'payload' belongs to a 'publish' step")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)


class Step(Action):
    id: str = Field(..., pattern=STEP_ID_PATTERN)
    description: str = Field("", max_length=2000)
    depends_on: list[str] = Field(default_factory=list, max_length=100)
    when: str | None = Field(None, description="Run only if this expression is true")
    for_each: str | list[Any] | None = Field(
        None, description="A list, or an expression giving one; `item` and `index` per instance"
    )
    concurrency: int = Field(1, ge=1, le=1000, description="for_each instances at once")
    on_failure: Action | None = Field(
        None,
        description="Compensation: runs if the run fails or is cancelled after this step started",
    )


class Trigger(Strict):
    """A cron schedule (``cron`` + ``timezone``) or an event filter (``event``)."""

    cron: str | None = None
    timezone: str = "UTC"
    event: str | None = Field(None, pattern=EVENT_FILTER_PATTERN)
    when: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one(self) -> Trigger:
        if (self.cron is None) == (self.event is None):
            raise ValueError("a trigger needs exactly one of 'cron' or 'event'")
        if self.cron is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            from croniter import croniter

            if not croniter.is_valid(self.cron):
                raise ValueError(f"{self.cron!r} is not a valid cron expression")
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {self.timezone!r}") from None
        return self


class Webhook(Strict):
    url: str = Field(..., pattern=r"^https?://\S+$", max_length=2000)
    events: list[RunEnd] = Field(default_factory=lambda: list(RUN_ENDS))


class Notify(Strict):
    webhooks: list[Webhook] = Field(default_factory=list, max_length=20)


class Definition(Strict):
    """A workflow: a DAG of steps, its triggers and notifications."""

    name: str | None = Field(None, pattern=NAME_PATTERN, description="Taken from the URL if absent")
    description: str = Field("", max_length=4000)
    params: dict[str, Any] = Field(default_factory=dict, description="Parameter defaults")
    timeout: float | str | None = Field(None, description="Whole-run timeout")
    output: Any = Field(None, description="Template of the run's result, over params and steps")
    steps: list[Step] = Field(..., min_length=1, max_length=500)
    triggers: list[Trigger] = Field(default_factory=list, max_length=50)
    notify: Notify = Field(default_factory=Notify)

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: float | str | None) -> float | None:
        return None if v is None else _positive(seconds(v))

    def step(self, step_id: str) -> Step:
        return next(s for s in self.steps if s.id == step_id)


def json_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of a definition, as published."""
    schema = Definition.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "urn:ccc:workflow:definition"
    return schema


if __name__ == "__main__":
    import json
    import sys

    json.dump(json_schema(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
