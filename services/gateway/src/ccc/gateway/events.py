"""Events at the edge: publish under ``ccc.evt.``/``ccc.cmd.``, and tail them as SSE.

The SSE stream is an ordered JetStream consumer on CCC_EVENTS starting now, at a
sequence, or at a time; each event's stream sequence is its SSE ``id``, so a client
that reconnects with ``Last-Event-ID`` continues where it left off.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from ccc.common import subjects
from ccc.common.errors import BadRequest, Forbidden, Invalid, NotFound

SUBJECT = re.compile(r"^ccc\.(evt|cmd)(\.([a-z0-9_]+|\*))+(\.>)?$|^ccc\.(evt|cmd)\.>$")
KEEPALIVE_SECONDS = 15.0


RESULT_TOKENS = frozenset({"completed", "failed"})
PLATFORM_EVENTS = frozenset({"service", "operation"})


def check_publish_subject(subject: str, live_domains: set[str]) -> str:
    """What a user may publish: their own events, and commands to a live service.

    The platform's own namespaces are refused (403): the audit trail
    (``ccc.evt.gateway.*``), lifecycle and operation events (``ccc.evt.<d>.service.*``,
    ``ccc.evt.<d>.operation.*``) and command results (``….completed|failed``), so nobody
    can forge them. A command needs a live service to consume it (404 otherwise), or it
    would sit in the work queue for ever."""
    tokens = subject.split(".")
    if "*" in subject or ">" in subject or not SUBJECT.match(subject) or len(tokens) < 4:
        raise Invalid(
            f"cannot publish to {subject!r}: give ccc.evt.<domain>.<event> or "
            "ccc.cmd.<domain>.<op>, lower_snake tokens, no wildcards",
            errors=[{"loc": "subject", "msg": "not a publishable subject", "type": "value_error"}],
        )
    kind, domain = tokens[1], tokens[2]
    try:
        subjects.check_domain(domain)
    except ValueError as exc:
        raise Invalid(
            str(exc), errors=[{"loc": "subject", "msg": str(exc), "type": "value_error"}]
        ) from exc
    if kind == "evt" and (
        domain == "gateway" or tokens[3] in PLATFORM_EVENTS or tokens[-1] in RESULT_TOKENS
    ):
        raise Forbidden(f"{subject!r} is in a namespace only the platform publishes to")
    if kind == "cmd" and domain not in live_domains:
        raise NotFound(f"no live service {domain!r} takes commands")
    return subject


def check_tail_subject(subject: str) -> str:
    if not subject.startswith("ccc.evt.") or not SUBJECT.match(subject):
        raise Invalid(
            f"cannot follow {subject!r}: give a subject or wildcard under ccc.evt.",
            errors=[{"loc": "subject", "msg": "not under ccc.evt.", "type": "value_error"}],
        )
    return subject


def check_json(body: bytes) -> None:
    try:
        json.loads(body or b"null")
    except ValueError as exc:
        raise BadRequest(f"event body is not valid JSON: {exc}") from exc


def consumer_start(since: str | None, last_event_id: str | None) -> dict[str, Any]:
    """``since``: ``now`` (default), ``all``, a stream sequence, or an ISO 8601 time."""
    if last_event_id and last_event_id.isdigit():
        return {
            "deliver_policy": DeliverPolicy.BY_START_SEQUENCE,
            "opt_start_seq": int(last_event_id) + 1,
        }
    if since in (None, "", "now"):
        return {"deliver_policy": DeliverPolicy.NEW}
    if since == "all":
        return {"deliver_policy": DeliverPolicy.ALL}
    if since.isdigit():
        return {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": int(since)}
    try:
        start = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError as exc:
        raise Invalid(
            f"since={since!r} is not 'now', 'all', a sequence number or an ISO 8601 time",
            errors=[{"loc": "since", "msg": "unrecognised start", "type": "value_error"}],
        ) from exc
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    return {"deliver_policy": DeliverPolicy.BY_START_TIME, "opt_start_time": start}


MAX_SEQUENCE = 2**63 - 1


async def subscribe(js: JetStreamContext, subject: str, start: dict[str, Any]) -> Any:
    """The ordered consumer, made before the response starts, so a bad start is a 422."""
    policy = start.pop("deliver_policy")
    seq = start.get("opt_start_seq")
    if seq is not None and not 1 <= seq <= MAX_SEQUENCE:
        raise Invalid(
            f"start sequence {seq} is out of range (1 to {MAX_SEQUENCE})",
            errors=[{"loc": "since", "msg": "sequence out of range", "type": "value_error"}],
        )
    try:
        return await js.subscribe(
            subject,
            stream=subjects.EVENTS_STREAM,
            ordered_consumer=True,
            deliver_policy=policy,
            config=ConsumerConfig(**start) if start else None,
        )
    except Exception as exc:
        raise Invalid(f"cannot follow {subject!r} from there: {exc}") from exc


async def sse_stream(sub: Any, subject: str) -> AsyncIterator[bytes]:
    try:
        yield b": subscribed to " + subject.encode() + b"\n\n"
        while True:
            try:
                msg = await sub.next_msg(timeout=KEEPALIVE_SECONDS)
            except (NatsTimeout, TimeoutError):
                yield b": keep-alive\n\n"
                continue
            seq = msg.metadata.sequence.stream
            data = b"".join(b"data: " + line + b"\n" for line in (msg.data or b"null").splitlines())
            yield b"id: %d\nevent: %s\n%s\n" % (seq, msg.subject.encode(), data)
    finally:
        await sub.unsubscribe()
