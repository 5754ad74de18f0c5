"""Agents messaging each other over NATS subjects.

``send_message`` publishes to ``ccc.evt.agents.message.<agent>`` through JetStream (the
``CCC_EVENTS`` stream keeps it; the run's ``<run>/<call>`` is the message id, so a resumed
run does not send it twice). ``read_messages`` takes what was sent to the agent since the
last read by any of its runs: a mailbox whose cursor (``inbox.<agent>``, the last stream
sequence read) moves by compare-and-swap, so two runs of one agent never read the same
message. Any NATS client may write to an agent's subject too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING, Any

from nats.js.api import ConsumerConfig, DeliverPolicy

from ccc.common import Conflict, subjects

if TYPE_CHECKING:
    from .runner import RunLoop

SEND = "send_message"
READ = "read_messages"
QUIET = 0.2


def inbox_subject(agent: str) -> str:
    return subjects.event_subject("agents", f"message.{agent.replace('-', '_')}")


def cursor_key(agent: str) -> str:
    return f"inbox.{agent}"


def functions(loop: RunLoop) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if loop.agent.peers:
        out.append(
            {
                "type": "function",
                "function": {
                    "name": SEND,
                    "description": "Send a message to another agent (it reads it with "
                    "read_messages).",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "to": {"type": "string", "enum": list(loop.agent.peers)},
                            "text": {"type": "string"},
                        },
                        "required": ["to", "text"],
                    },
                },
            }
        )
    if loop.agent.inbox:
        out.append(
            {
                "type": "function",
                "function": {
                    "name": READ,
                    "description": "Read the messages other agents sent you since the last "
                    "read; waits up to `wait` seconds for one when there are none.",
                    "parameters": {
                        "type": "object",
                        "properties": {"wait": {"type": "number", "minimum": 0, "maximum": 30}},
                    },
                },
            }
        )
    return out


async def send(loop: RunLoop, call_id: str, arguments: dict[str, Any]) -> dict[str, Any]:
    to = str(arguments.get("to", ""))
    if to not in loop.agent.peers:
        raise PermissionError(f"{loop.agent.name} may not message {to!r}")
    body = {
        "from_agent": loop.agent.name,
        "from_run": loop.run.id,
        "to": to,
        "text": str(arguments.get("text", "")),
        "sent_at": time.time(),
    }
    seq = await loop.ctx.bus.publish_durable(
        inbox_subject(to), body, msg_id=f"{loop.run.id}/{call_id}"
    )
    return {"sent": True, "to": to, "seq": seq}


async def read(loop: RunLoop, arguments: dict[str, Any]) -> dict[str, Any]:
    wait = min(30.0, max(0.0, float(arguments.get("wait") or 0)))
    for _ in range(10):
        entry = await loop.state.entry(cursor_key(loop.agent.name))
        cursor = int(entry.value) if entry is not None else 0
        messages = await _fetch(loop, cursor, wait)
        if not messages:
            return {"messages": []}
        last = messages[-1][0]
        try:
            if entry is None:
                await loop.state.create(cursor_key(loop.agent.name), last)
            else:
                await loop.state.update(cursor_key(loop.agent.name), last, entry.revision)
        except Conflict:
            continue  # another run of this agent read first: read again after its cursor
        return {"messages": [m for _, m in messages], "cursor": last}
    raise Conflict(f"the inbox of {loop.agent.name} is read too often at once; try again")


async def _fetch(loop: RunLoop, cursor: int, wait: float) -> list[tuple[int, Any]]:
    got: list[tuple[int, Any]] = []
    arrived = asyncio.Event()

    async def on_message(msg: Any) -> None:
        with contextlib.suppress(ValueError):
            got.append((msg.metadata.sequence.stream, json.loads(msg.data)))
        arrived.set()

    config = (
        ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=cursor + 1)
        if cursor
        else ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
    )
    sub = await loop.ctx.bus.js.subscribe(
        inbox_subject(loop.agent.name),
        stream=subjects.EVENTS_STREAM,
        cb=on_message,
        ordered_consumer=True,
        config=config,
    )
    try:
        deadline = time.monotonic() + wait
        while True:
            arrived.clear()
            window = QUIET if got else max(QUIET, deadline - time.monotonic())
            try:
                await asyncio.wait_for(arrived.wait(), timeout=window)
            except TimeoutError:
                if got or time.monotonic() >= deadline:
                    break
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return sorted(got, key=lambda m: m[0])
