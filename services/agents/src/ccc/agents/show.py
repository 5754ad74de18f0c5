"""``ccc agents show <run>``: a run and its steps, drawn in the terminal.

The CLI (libs/cli) wires ``show`` to its command the way it wires ``ccc workflows watch``;
``render`` draws a ``RunView`` already fetched (``GET /v1/agent-runs/{id}``), so the same
drawing works over HTTP.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ccc.common.bus import Bus, connect
from ccc.common.settings import Settings

from .models import RunView

STYLE = {
    "completed": "green",
    "stopped": "yellow",
    "failed": "red",
    "cancelled": "yellow",
    "waiting_approval": "magenta",
    "running": "cyan",
}


def show(run_id: str, *, nats_url: str | None = None, console: Console | None = None) -> str:
    """Print a run (header, then one row per step) and return its status."""
    return asyncio.run(show_async(run_id, nats_url=nats_url, console=console))


async def show_async(
    run_id: str, *, nats_url: str | None = None, console: Console | None = None
) -> str:
    nc = await connect(nats_url or Settings().nats_url, "ccc-agents-show")
    try:
        view = await Bus(nc).call("agents.run.get", {"run_id": run_id}, response=RunView)
    finally:
        await nc.close()
    render(view, console or Console())
    return view.run.status


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _what(step: Any) -> str:
    if step.kind == "model":
        message = step.messages[0] if step.messages else {}
        calls = message.get("tool_calls") or []
        if calls:
            return "→ " + ", ".join(
                f"{c['function']['name']}({_short(c['function']['arguments'], 40)})" for c in calls
            )
        return _short(message.get("content") or "")
    if step.kind == "approval" and step.decision:
        verdict = "approved" if step.decision.get("approved") else "rejected"
        target = (step.data or {}).get("target")
        return f"{verdict} by {step.decision.get('by')}: {target} {step.decision.get('comment')}"
    if step.kind == "handoff":
        return f"handoff to {step.handoff_to}"
    if step.kind == "plan" and step.data:
        ids = [s.get("id") for s in step.data.get("plan", {}).get("steps", [])]
        return f"plan {ids} → workflow run {step.data.get('workflow_run')}"
    if step.kind == "workflow" and step.data:
        return f"workflow {step.data.get('status')}: {_short(step.data.get('steps'), 60)}"
    if step.tool is not None:
        t = step.tool
        shown = t.error.get("detail") if t.error else t.result
        return f"{t.target or t.name} [{t.status}] {_short(t.arguments, 30)} ⇒ {_short(shown, 50)}"
    return ""


def render(view: RunView, console: Console) -> None:
    run = view.run
    style = STYLE.get(run.status, "")
    console.print(
        f"[bold]{run.id}[/bold]  agent [bold]{run.root_agent}[/bold]"
        + (f" → {run.agent}" if run.agent != run.root_agent else "")
        + f"  [{style}]{run.status}[/{style}]"
        + (f" ({run.end_reason})" if run.end_reason else "")
    )
    console.print(
        f"mode {run.mode} · {run.turns} model calls · {run.steps} steps · {run.tokens} tokens"
        f" · ${run.cost_usd:.4f} · attempt {run.attempts}"
        + (f" · caller {run.caller}" if run.caller else "")
    )
    console.print(f"input: {escape(_short(run.input, 200))}")
    if run.pending is not None:
        p = run.pending
        console.print(
            f"[magenta]waiting for approval:[/magenta] {p.target or p.tool} "
            f"{_short(p.arguments, 100)}  (POST /v1/agent-runs/{run.id}/approve)"
        )
    table = Table(show_header=True, header_style="bold", expand=False)
    for column in ("#", "kind", "agent", "ms", "tokens", "what"):
        table.add_column(column, overflow="fold")
    for step in view.steps:
        table.add_row(
            str(step.n),
            step.kind,
            step.agent,
            f"{step.latency_ms:.0f}",
            str(step.total_tokens or ""),
            escape(_what(step)),
        )
    console.print(table)
    if run.detail:
        console.print(f"detail: {escape(run.detail)}")
    if run.output is not None:
        console.print(f"output: {escape(_short(run.output, 500))}")
