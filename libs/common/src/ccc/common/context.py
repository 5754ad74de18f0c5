"""What a handler gets besides its request: the caller, the bus, its state, progress."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, overload

from pydantic import BaseModel

from . import roles as role_rules
from . import subjects
from .bus import Bus, Payload

if TYPE_CHECKING:
    from .state import Blobs, StateStore

M = TypeVar("M", bound=BaseModel)
ProgressSink = Callable[[float, str], Awaitable[None]]


@dataclass(frozen=True)
class Caller:
    """Who asked, as the gateway authenticated it; ``None`` roles means a trusted bus peer."""

    key_id: str | None
    roles: frozenset[str] | None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str] | None) -> Caller:
        if not headers:
            return _TRUSTED
        return _caller(headers.get(subjects.CALLER_HEADER), headers.get(subjects.ROLES_HEADER))

    def may(self, allowed: frozenset[str]) -> bool:
        if self.roles is None:
            return True
        return role_rules.allowed(self.roles, allowed)

    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.key_id:
            out[subjects.CALLER_HEADER] = self.key_id
        if self.roles is not None:
            out[subjects.ROLES_HEADER] = ",".join(sorted(self.roles))
        return out


_TRUSTED = Caller(None, None)


@functools.lru_cache(maxsize=4096)
def _caller(key_id: str | None, roles: str | None) -> Caller:
    """Callers are few (one per API key): parse each header pair once. Caller is frozen."""
    return Caller(
        key_id, frozenset(r for r in roles.split(",") if r) if roles is not None else None
    )


class Context:
    """Per-request view of the service runtime."""

    def __init__(
        self,
        *,
        domain: str,
        bus: Bus,
        state: StateStore,
        blobs: Callable[[], Awaitable[Blobs]],
        headers: Mapping[str, str] | None,
        progress: ProgressSink | None = None,
        operation_id: str | None = None,
        caller: Caller | None = None,
    ) -> None:
        self.domain = domain
        self.bus = bus
        self.state = state
        self._blobs = blobs
        self.headers: Mapping[str, str] = headers or {}
        self.caller = caller or Caller.from_headers(headers)
        self._progress = progress
        self.operation_id = operation_id

    @property
    def idempotency_key(self) -> str | None:
        """Set for commands (their ``Nats-Msg-Id``) and workflow steps: dedupe on it."""
        return self.headers.get(subjects.MSG_ID_HEADER) or self.headers.get(
            subjects.CORRELATION_HEADER
        )

    async def blobs(self) -> Blobs:
        return await self._blobs()

    @overload
    async def call(
        self,
        target: str,
        request: Payload = None,
        *,
        response: type[M],
        timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> M: ...

    @overload
    async def call(
        self,
        target: str,
        request: Payload = None,
        *,
        response: None = None,
        timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any: ...

    async def call(
        self,
        target: str,
        request: Payload = None,
        *,
        response: type[M] | None = None,
        timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> M | Any:
        """Call another endpoint as the same caller, so roles follow the request.

        ``headers`` adds to them, e.g. ``{"Nats-Msg-Id": key}`` for the callee's
        ``ctx.idempotency_key``; the caller's identity cannot be overridden."""
        return await self.bus.call(
            target,
            request,
            response=response,
            timeout=timeout,
            headers={**(headers or {}), **self.caller.headers()},
        )

    async def emit(self, event: str, payload: Payload) -> None:
        """Publish ``ccc.evt.<domain>.<event>``."""
        await self.bus.publish(subjects.event_subject(self.domain, event), payload)

    async def progress(self, fraction: float, message: str = "") -> None:
        """Report progress of an operation (no-op for a plain request)."""
        if self._progress is not None:
            await self._progress(max(0.0, min(1.0, fraction)), message)
