"""Streaming across the bus: chunks to the caller's inbox, numbered, with a final frame.

Protocol (version 1):

- The caller subscribes to an inbox of its own, then sends the ordinary request
  (``ccc.ai.chat``, body with ``"stream": true``) with the header
  ``Ccc-Stream-Inbox: <inbox>``.
- If no provider can start the stream, nothing is published to the inbox: the request's
  reply is the typed error (problem+json and ``Nats-Service-Error-Code``), as for any call.
- Otherwise every frame published to the inbox carries ``Ccc-Stream-Id`` (the completion
  id) and ``Ccc-Stream-Seq`` (0, 1, 2, ... with no gap). A data frame's body is one
  ``chat.completion.chunk`` JSON object (what follows ``data:`` in OpenAI's SSE).
- The last frame also carries ``Ccc-Stream-End``: ``done`` (empty body: SSE
  ``data: [DONE]``) or ``error`` (body: an RFC 9457 problem, with
  ``Ccc-Stream-Error-Code`` its status): the stream broke after chunks were sent.
- After the last frame the request's reply arrives: a ``ccc.stream.summary`` object.

A caller detects a lost frame (a gap in ``Ccc-Stream-Seq``), a missing end (the reply
arrives, or nothing comes for a while, without an end frame) and an error end, and never
mistakes a truncated stream for a whole one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from ccc.common import CCCError, Unavailable
from ccc.common.bus import Bus

INBOX_HEADER = "Ccc-Stream-Inbox"
ID_HEADER = "Ccc-Stream-Id"
SEQ_HEADER = "Ccc-Stream-Seq"
END_HEADER = "Ccc-Stream-End"
ERROR_CODE_HEADER = "Ccc-Stream-Error-Code"


class StreamWriter:
    def __init__(self, nc: NATS, inbox: str, stream_id: str) -> None:
        self.nc = nc
        self.inbox = inbox
        self.stream_id = stream_id
        self.seq = 0

    def _headers(self, **extra: str) -> dict[str, str]:
        headers = {ID_HEADER: self.stream_id, SEQ_HEADER: str(self.seq), **extra}
        self.seq += 1
        return headers

    async def chunk(self, chunk: dict[str, Any]) -> None:
        await self.nc.publish(self.inbox, json.dumps(chunk).encode(), headers=self._headers())

    async def done(self) -> None:
        await self.nc.publish(self.inbox, b"", headers=self._headers(**{END_HEADER: "done"}))
        await self.nc.flush()

    async def error(self, error: CCCError) -> None:
        headers = self._headers(**{END_HEADER: "error", ERROR_CODE_HEADER: str(error.status)})
        await self.nc.publish(self.inbox, error.problem_bytes(), headers=headers)
        await self.nc.flush()

    @property
    def frames(self) -> int:
        return self.seq


class StreamBroken(Unavailable):
    """The stream was cut, lost a frame, or ended without its final frame."""


async def read_stream(
    bus: Bus,
    subject: str,
    body: dict[str, Any],
    *,
    headers: dict[str, str] | None = None,
    idle_timeout: float = 30.0,
    timeout: float = 300.0,
) -> AsyncIterator[dict[str, Any]]:
    """The caller's side: yield each chunk of a streamed request, in order, or raise.

    Raises the request's typed error when the stream never started, and ``StreamBroken``
    (503) on an error frame, a gap, silence longer than ``idle_timeout``, or a reply
    without a final frame. For bus callers (RAG, agents) and the gateway's SSE relay.
    """
    inbox = bus.nc.new_inbox()
    frames: asyncio.Queue[Msg] = asyncio.Queue()

    async def arrived(msg: Msg) -> None:
        frames.put_nowait(msg)

    # A callback into our own queue: waiting on it can be cancelled without losing a frame
    # (cancelling nats-py's next_msg can drop the message it was about to return).
    sub = await bus.nc.subscribe(inbox, cb=arrived)
    hdrs = {**(headers or {}), INBOX_HEADER: inbox}
    reply = asyncio.create_task(
        bus.request_raw(subject, json.dumps({**body, "stream": True}).encode(), timeout, hdrs)
    )
    expected = 0
    try:
        while True:
            if frames.empty():
                waiting = asyncio.create_task(frames.get())
                watch: set[asyncio.Future[Any]] = {waiting} if reply.done() else {waiting, reply}
                done, _ = await asyncio.wait(
                    watch,
                    timeout=1.0 if reply.done() else idle_timeout,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if waiting not in done:
                    waiting.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await waiting
                    if reply.done():
                        reply.result()  # an error reply: the stream never started
                        if not done:  # a summary came, then a second of silence
                            raise StreamBroken("the stream ended without its final frame")
                        continue  # the summary came first: its frames are still in flight
                    raise StreamBroken(f"no stream frame for {idle_timeout}s")
                msg = waiting.result()
            else:
                msg = frames.get_nowait()
            hdrs_in = msg.headers or {}
            seq = int(hdrs_in.get(SEQ_HEADER, -1))
            if seq != expected:
                raise StreamBroken(f"stream frame {expected} was lost (got {seq})")
            expected += 1
            end = hdrs_in.get(END_HEADER)
            if end == "done":
                return
            if end == "error":
                problem = json.loads(msg.data or b"{}")
                raise StreamBroken(
                    problem.get("detail", "the stream broke"), extra={"stream_error": problem}
                )
            yield json.loads(msg.data)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        if not reply.done():
            reply.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reply
