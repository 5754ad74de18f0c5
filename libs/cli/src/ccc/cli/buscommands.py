"""``ccc services|call|publish|events|watch``: talk to the bus directly, as a trusted peer."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from nats.js.api import DeliverPolicy
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ccc.common import subjects
from ccc.common.bus import Bus, connect
from ccc.common.discovery import discover
from ccc.common.errors import CCCError
from ccc.common.settings import Settings

console = Console()


async def _bus() -> Bus:
    settings = Settings()
    try:
        nc = await asyncio.wait_for(connect(settings.nats_url, "ccc-cli"), 5)
    except Exception as exc:
        raise SystemExit(f"cannot reach NATS at {settings.nats_url}: {exc}") from exc
    return Bus(nc, settings.request_timeout)


async def services(verbose: bool) -> int:
    bus = await _bus()
    catalog = await discover(bus.nc, window=0.3, with_stats=True)
    await bus.nc.close()
    table = Table(title="Live catalog")
    for col in ("service", "version", "instances", "endpoints", "requests", "errors"):
        table.add_column(
            col,
            justify="right" if col in ("instances", "endpoints", "requests", "errors") else "left",
        )
    for s in catalog:
        table.add_row(
            s.name,
            ", ".join(s.versions),
            str(len(s.instances)),
            str(len(s.endpoints)),
            str(s.requests),
            str(s.errors),
        )
    console.print(table)
    if verbose:
        for s in catalog:
            detail = Table(title=f"{s.name} endpoints")
            for col in (
                "endpoint",
                "subject",
                "http",
                "roles",
                "kind",
                "requests",
                "errors",
                "avg ms",
            ):
                detail.add_column(col)
            for e in s.endpoints:
                m = e.metadata
                detail.add_row(
                    m.get("op", e.name),
                    e.subject,
                    m.get("http", "(bus only)"),
                    m.get("roles", ""),
                    m.get("kind", ""),
                    str(e.requests),
                    str(e.errors),
                    f"{e.average_ms:.2f}",
                )
            console.print(detail)
    if not catalog:
        console.print("[yellow]no service answers on this bus[/]")
    return 0


async def call(target: str, body: str, timeout: float) -> int:
    bus = await _bus()
    try:
        payload = json.loads(body) if body else {}
    except ValueError as exc:
        console.print(f"[red]the request is not JSON: {exc}[/]")
        return 2
    try:
        result = await bus.call(target, payload, timeout=timeout)
    except CCCError as exc:
        console.print_json(data=exc.problem())
        return 1
    finally:
        await bus.nc.close()
    if (
        isinstance(result, dict)
        and "id" in result
        and result.get("status") in ("running", "pending")
    ):
        console.print_json(data=result)
        return await watch(str(result["id"]))
    console.print_json(data=result)
    return 0


async def publish(subject: str, body: str, msg_id: str | None) -> int:
    bus = await _bus()
    try:
        payload: Any = json.loads(body) if body else None
    except ValueError as exc:
        console.print(f"[red]the message is not JSON: {exc}[/]")
        return 2
    try:
        if subject.startswith(("ccc.evt.", "ccc.cmd.")):
            seq = await bus.publish_durable(subject, payload, msg_id=msg_id)
            console.print(f"published to {subject} (stream sequence {seq})")
        else:
            await bus.publish(subject, payload)
            await bus.nc.flush()
            console.print(f"published to {subject}")
    finally:
        await bus.nc.close()
    return 0


async def events(subject: str, since: str) -> int:
    bus = await _bus()
    policy = {"now": DeliverPolicy.NEW, "all": DeliverPolicy.ALL, "last": DeliverPolicy.LAST}.get(
        since
    )
    if policy is None:
        console.print("[red]--since is one of now, all, last[/]")
        return 2
    sub = await bus.js.subscribe(
        subject, stream=subjects.EVENTS_STREAM, ordered_consumer=True, deliver_policy=policy
    )
    console.print(f"[dim]following {subject} (Ctrl-C to stop)[/]")
    try:
        async for msg in sub.messages:
            seq = msg.metadata.sequence.stream
            try:
                data: Any = json.loads(msg.data)
                text = json.dumps(data, separators=(",", ":"))
            except ValueError:
                text = msg.data.decode(errors="replace")
            console.print(f"[cyan]{seq:>8}[/] [bold]{msg.subject}[/] {text}", soft_wrap=True)
    except asyncio.CancelledError:
        pass
    finally:
        with contextlib.suppress(Exception):
            await bus.nc.close()
    return 0


async def watch(op_id: str) -> int:
    """A progress bar for an operation, fed by its events (and its record, to start)."""
    domain = op_id.partition("-")[0]
    bus = await _bus()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_event(msg: Any) -> None:
        with contextlib.suppress(ValueError):
            data = json.loads(msg.data)
            if data.get("id") == op_id:
                await queue.put(data)

    sub = await bus.nc.subscribe(subjects.event_subject(domain, "operation.*"), cb=on_event)
    try:
        record = await bus.call(f"{domain}.operation.get", {"id": op_id})
    except CCCError as exc:
        console.print_json(data=exc.problem())
        await bus.nc.close()
        return 1
    await queue.put(record)
    status = "running"
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(op_id, total=1.0)
        while status not in ("succeeded", "failed", "cancelled"):
            try:
                data = await asyncio.wait_for(queue.get(), 2.0)
            except TimeoutError:
                data = await bus.call(f"{domain}.operation.get", {"id": op_id})
            status = data.get("status", status)
            bar.update(
                task,
                completed=float(data.get("progress") or 0.0),
                description=f"{op_id} {status} {data.get('message') or ''}".strip(),
            )
    await sub.unsubscribe()
    final = await bus.call(f"{domain}.operation.get", {"id": op_id})
    await bus.nc.close()
    console.print_json(data={k: final.get(k) for k in ("id", "status", "result", "error")})
    return 0 if status == "succeeded" else 1


def run(coro: Any) -> int:
    try:
        return int(asyncio.run(coro))
    except KeyboardInterrupt:
        return 130
