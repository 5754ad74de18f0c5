"""The bus client: typed request-reply, events and commands over one NATS connection.

``call`` injects the trace context, maps no-responders to ``Unavailable`` and a timeout
to ``Timeout``, and rebuilds a typed error from the ADR-32 headers of an error reply, so
a caller handles ``NotFound`` from three hops away exactly as a local one.
"""

from __future__ import annotations

import json
import logging
from typing import Any, TypeVar, overload

import nats
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError
from pydantic import BaseModel

from . import subjects, tracing
from .errors import Timeout, Unavailable, error_from_reply

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

Payload = BaseModel | dict[str, Any] | list[Any] | bytes | None


def encode(payload: Payload) -> bytes:
    if payload is None:
        return b"{}"
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, BaseModel):
        return payload.model_dump_json().encode()
    return json.dumps(payload, default=str).encode()


async def connect(url: str, name: str) -> NATS:
    """Connect with reconnects forever: a bus restart must not kill the fleet."""
    return await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=3,
    )


async def ensure_streams(js: JetStreamContext, events_max_age_days: float = 7.0) -> None:
    """Create the two fleet streams if absent; every process may call this at start."""
    wanted = [
        StreamConfig(
            name=subjects.COMMANDS_STREAM,
            subjects=["ccc.cmd.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=600.0,
            max_age=7 * 86400,
            max_bytes=1 << 30,
            discard=DiscardPolicy.NEW,  # full: refuse new commands rather than drop queued ones
            description="Durable commands; one consumer per service takes each once",
        ),
        StreamConfig(
            name=subjects.EVENTS_STREAM,
            subjects=["ccc.evt.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=events_max_age_days * 86400,
            max_bytes=1 << 30,
            discard=DiscardPolicy.OLD,
            duplicate_window=120.0,
            description="Every event of the fleet: audit, progress, results",
        ),
    ]
    for config in wanted:
        try:
            await js.add_stream(config)
        except BadRequestError as exc:  # exists with other settings: keep the operator's
            log.info("stream %s kept as configured: %s", config.name, exc.description)


class Bus:
    """Typed client of the fleet, shared by a process."""

    def __init__(self, nc: NATS, default_timeout: float = 10.0) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.default_timeout = default_timeout

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
        """Call ``<domain>.<op>`` and return its typed (or decoded JSON) answer."""
        domain, op = subjects.parse_target(target)
        data = await self.request_raw(
            subjects.request_subject(domain, op), encode(request), timeout, headers
        )
        if response is not None:
            return response.model_validate_json(data)
        return json.loads(data) if data else None

    async def request_raw(
        self,
        subject: str,
        data: bytes,
        timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        """Request-reply with errors raised as typed ``CCCError``s."""
        hdrs = dict(headers or {})
        tracing.inject(hdrs)
        try:
            msg = await self.nc.request(
                subject, data, timeout=timeout or self.default_timeout, headers=hdrs
            )
        except NoRespondersError as exc:
            raise Unavailable(f"no service answers on {subject}") from exc
        except NatsTimeout as exc:
            raise Timeout(
                f"{subject} did not answer within {timeout or self.default_timeout}s"
            ) from exc
        error = error_from_reply(msg.headers, msg.data)
        if error is not None:
            raise error
        return msg.data

    async def publish(
        self, subject: str, payload: Payload, headers: dict[str, str] | None = None
    ) -> None:
        """Fire-and-forget publish (an event stream still stores it)."""
        hdrs = dict(headers or {})
        tracing.inject(hdrs)
        await self.nc.publish(subject, encode(payload), headers=hdrs or None)

    async def publish_durable(
        self,
        subject: str,
        payload: Payload,
        *,
        msg_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> int:
        """Publish to JetStream and wait for the ack; returns the stream sequence."""
        hdrs = dict(headers or {})
        tracing.inject(hdrs)
        if msg_id:
            hdrs[subjects.MSG_ID_HEADER] = msg_id
        ack = await self.js.publish(subject, encode(payload), headers=hdrs or None)
        return ack.seq
