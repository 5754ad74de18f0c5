"""``ccc workflows watch <run>``: a live progress bar built from a run's history stream.

The CLI (libs/cli) wires ``watch`` to its command; it reads the history from JetStream
(``ccc.workflow.history.<run>``) from the first entry, so watching a run that is half
done, or already finished, shows the same bar, and it follows until the run ends.
"""

from __future__ import annotations

import asyncio
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from ccc.common.bus import Bus, connect
from ccc.common.settings import Settings

from . import history
from .runstate import RUN_DONE

STYLE = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "skipped": "dim"}


def watch(
    run_id: str,
    *,
    nats_url: str | None = None,
    console: Console | None = None,
    timeout: float | None = None,
) -> str:
    """Follow a run until it ends, drawing a progress bar; returns the final status
    (``succeeded``, ``failed`` or ``cancelled``)."""
    return asyncio.run(watch_async(run_id, nats_url=nats_url, console=console, timeout=timeout))


async def watch_async(
    run_id: str,
    *,
    nats_url: str | None = None,
    console: Console | None = None,
    timeout: float | None = None,
) -> str:
    console = console or Console()
    nc = await connect(nats_url or Settings().nats_url, "ccc-workflow-watch")
    try:
        async with asyncio.timeout(timeout):
            await Bus(nc).call("workflow.run.get", {"run_id": run_id})  # NotFound if none
            return await _follow(nc.jetstream(), run_id, console)
    finally:
        await nc.close()


async def _follow(js: Any, run_id: str, console: Console) -> str:
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    status = "running"
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(run_id, total=None, status="waiting")
        async for entry in history.follow(js, run_id, live=True):
            status = entry["status"]
            progress.update(
                bar,
                description=f"{entry['workflow']} {run_id}",
                completed=entry["done"],
                total=entry["total"],
                status=_status_text(entry),
            )
            for event in entry["events"]:
                line = _describe(event)
                if line:
                    progress.console.print(line)
            if status in RUN_DONE:
                break
    colour = STYLE.get(status, "white")
    console.print(f"[{colour}]run {run_id} {status}[/{colour}]")
    return status


def _status_text(entry: dict[str, Any]) -> str:
    running = sorted({e["step"] for e in entry["events"] if e["type"] == "step.attempt"})
    text = str(entry["status"])
    return f"{text} ({', '.join(running)})" if running else text


def _describe(event: dict[str, Any]) -> str | None:
    kind = event["type"]
    step = event.get("step")
    item = f"[{event['index']}]" if event.get("index") else ""
    if kind == "step.succeeded" and event.get("index") is None:
        return f"  [green]✓[/green] {step}"
    if kind == "step.failed":
        return f"  [red]✗[/red] {step}{item}: {event.get('error')}"
    if kind == "step.skipped":
        return f"  [dim]- {step} skipped[/dim]"
    if kind == "step.retrying":
        attempt, error = event.get("attempt"), event.get("error")
        return f"  [yellow]↻[/yellow] {step}{item} attempt {attempt}: {error}"
    if kind == "step.waiting":
        return f"  [cyan]…[/cyan] {step}{item} waits for approval"
    if kind == "run.resumed":
        return f"  [magenta]⟳[/magenta] resumed by {event.get('by')}"
    if kind.startswith("compensation."):
        return f"  [yellow]⤺[/yellow] compensating {step}: {kind.split('.', 1)[1]}"
    return None
