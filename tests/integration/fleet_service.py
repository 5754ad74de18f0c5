"""A test-only service exercising every door of the runtime; also runnable as a process:

python tests/integration/fleet_service.py <name>
"""

from __future__ import annotations

import asyncio
import os
import sys

from pydantic import BaseModel, Field

from ccc.common import (
    Binary,
    Context,
    Invalid,
    NotFound,
    RateLimited,
    Service,
    Unavailable,
    streaming,
    tracing,
)


class EchoIn(BaseModel):
    text: str = Field(..., max_length=1000)
    repeat: int = Field(1, ge=1, le=10)


class EchoOut(BaseModel):
    text: str
    instance: str
    trace_id: str | None


class SleepIn(BaseModel):
    seconds: float = Field(..., ge=0, le=30)


class CountIn(BaseModel):
    counter: str = Field(..., pattern=r"^[a-z0-9_]+$")
    crash_marker: str | None = None
    """If set and the file does not exist yet: create it, then die mid-handler."""


class CountOut(BaseModel):
    counter: str
    value: int


class ItemIn(BaseModel):
    name: str
    verbose: bool = False


class JobIn(BaseModel):
    steps: int = Field(3, ge=1, le=100)
    step_seconds: float = Field(0.05, ge=0, le=5)
    fail: bool = False


class JobOut(BaseModel):
    steps_done: int


class Upload(BaseModel):
    filename: str
    content_type: str | None = None
    content_base64: str


class UploadIn(BaseModel):
    title: str
    files: list[Upload]


class TickIn(BaseModel):
    ticks: int = Field(3, ge=0, le=100)
    stream: bool = False
    break_after: int | None = None
    """Stop after this many ticks: with an error frame ("error"), or silently ("vanish")."""
    how: str = "error"


def build(name: str) -> Service:
    service = Service(name, description=f"test service {name}")

    @service.endpoint("echo", roles=("reader",))
    async def echo(req: EchoIn, ctx: Context) -> EchoOut:
        """Echo the text, saying which instance answered and in which trace."""
        return EchoOut(
            text=req.text * req.repeat,
            instance=service.instance,
            trace_id=tracing.current_trace_id(),
        )

    @service.endpoint("slow", roles=("reader",), timeout=0.5)
    async def slow(req: SleepIn, ctx: Context) -> EchoOut:
        """Sleep, to test timeouts and draining."""
        await asyncio.sleep(req.seconds)
        return EchoOut(text="slept", instance=service.instance, trace_id=None)

    @service.endpoint("pause", roles=("reader",))
    async def pause(req: SleepIn, ctx: Context) -> EchoOut:
        """Sleep within the default timeout: in-flight work for drain tests."""
        await asyncio.sleep(req.seconds)
        return EchoOut(text="paused", instance=service.instance, trace_id=None)

    @service.endpoint("inner_timeout", roles=("reader",))
    async def inner_timeout(req: SleepIn, ctx: Context) -> EchoOut:
        """Uses asyncio.timeout itself (it must cancel this request, nothing else)."""
        try:
            async with asyncio.timeout(0.1):
                await asyncio.sleep(req.seconds)
        except TimeoutError:
            return EchoOut(text="inner timeout", instance=service.instance, trace_id=None)
        return EchoOut(text="in time", instance=service.instance, trace_id=None)

    @service.endpoint("busy", roles=("reader",))
    async def busy(req: SleepIn, ctx: Context) -> dict:
        """Always rate limited, asking to come back in ``seconds``."""
        raise RateLimited("too busy", retry_after=req.seconds)

    @service.endpoint("wave", roles=("reader",))
    async def wave(req: TickIn, ctx: Context) -> Binary:
        """A non-JSON answer: raw bytes with their media type."""
        return Binary(data=b"RIFF" + bytes(range(req.ticks)), content_type="audio/wav")

    @service.endpoint("huge", roles=("reader",))
    async def huge(req: SleepIn, ctx: Context) -> dict:
        """An answer too large for the bus."""
        return {"blob": "x" * 2_000_000}

    @service.endpoint("keys_thief", http="POST /v1/keys", roles=("reader",))
    async def keys_thief(req: SleepIn, ctx: Context) -> dict:
        """Tries to shadow the gateway's own route; must be ignored."""
        return {"stolen": True}

    @service.endpoint("admin_only", roles=("admin",))
    async def admin_only(req: EchoIn, ctx: Context) -> EchoOut:
        """Only for admins."""
        return EchoOut(text=req.text, instance=service.instance, trace_id=None)

    @service.endpoint("item.get", http=f"GET /v1/{name}/items/{{name}}", roles=("reader",))
    async def item_get(req: ItemIn, ctx: Context) -> ItemIn:
        """A resource route with a path parameter and a query parameter."""
        if req.name == "missing":
            raise NotFound(f"item {req.name!r} does not exist")
        return req

    @service.endpoint("count", roles=("operator",))
    async def count(req: CountIn, ctx: Context) -> CountOut:
        """Add one to a counter in KV (CAS), once per idempotency key."""
        if req.crash_marker and not os.path.exists(req.crash_marker):  # noqa: ASYNC240
            with open(req.crash_marker, "w") as marker:  # noqa: ASYNC230
                marker.write("crashed once")
            os._exit(17)  # a crash mid-handler: no reply, no ack
        seen_key = f"seen.{_safe(ctx.idempotency_key)}" if ctx.idempotency_key else None
        if seen_key and await ctx.state.get(seen_key) is not None:
            value = (await ctx.state.get(f"counter.{req.counter}")) or 0
            return CountOut(counter=req.counter, value=int(value))
        for _ in range(20):
            entry = await ctx.state.entry(f"counter.{req.counter}")
            if entry is None:
                try:
                    await ctx.state.create(f"counter.{req.counter}", 1)
                    value = 1
                    break
                except Exception:
                    continue
            try:
                await ctx.state.update(f"counter.{req.counter}", entry.value + 1, entry.revision)
                value = entry.value + 1
                break
            except Exception:
                continue
        if seen_key:
            await ctx.state.put(seen_key, True)
        return CountOut(counter=req.counter, value=value)

    @service.endpoint("ticks", roles=("reader",), streams=True, timeout=2)
    async def ticks(req: TickIn, ctx: Context) -> dict:
        """Count; with "stream": true, one frame per tick (the streaming protocol)."""
        if not req.stream:
            return {"ticks": list(range(req.ticks))}
        inbox = ctx.headers.get(streaming.INBOX_HEADER)
        if not inbox:
            raise Invalid("streaming needs the Ccc-Stream-Inbox header")
        writer = streaming.StreamWriter(service.nc, inbox, "ticks")
        for i in range(req.ticks):
            if req.break_after is not None and i == req.break_after:
                if req.how == "error":
                    await writer.error(Unavailable("the tick source went away"))
                    return {"frames": writer.frames}
                await asyncio.sleep(3)  # vanish: no more frames, no end
            await writer.chunk({"tick": i})
        await writer.done()
        return {"frames": writer.frames}

    @service.endpoint("upload", roles=("operator",))
    async def upload(req: UploadIn, ctx: Context) -> dict:
        """Receive files (multipart at the edge arrives here as JSON)."""
        import base64

        return {
            "title": req.title,
            "files": {f.filename: len(base64.b64decode(f.content_base64)) for f in req.files},
        }

    @service.endpoint("job", operation=True, resumable=True)
    async def job(req: JobIn, ctx: Context) -> JobOut:
        """A long job that reports progress and can be resumed."""
        for i in range(req.steps):
            await asyncio.sleep(req.step_seconds)
            await ctx.progress((i + 1) / req.steps, f"step {i + 1}/{req.steps}")
        if req.fail:
            raise NotFound("the job was told to fail")
        return JobOut(steps_done=req.steps)

    @service.endpoint("fragile_job", operation=True)
    async def fragile_job(req: JobIn, ctx: Context) -> JobOut:
        """A long job that cannot be resumed safely."""
        for i in range(req.steps):
            await asyncio.sleep(req.step_seconds)
            await ctx.progress((i + 1) / req.steps)
        return JobOut(steps_done=req.steps)

    return service


def _safe(key: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in key)


if __name__ == "__main__":
    build(sys.argv[1]).run()
