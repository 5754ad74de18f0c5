"""The live progress bar of ``ccc workflows watch``, rendered from the history stream."""

from __future__ import annotations

import asyncio
import io

from rich.console import Console

from ccc.common import Service
from ccc.workflow.watch import watch_async

from .conftest import Target, finished, put, start, unique


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=120, force_terminal=False, color_system=None), out


async def test_watch_follows_a_live_run_to_its_end(
    nats_url: str, wf: Service, wftarget: Target
) -> None:
    name = unique("watched")
    await put(
        wf.bus,
        name,
        {
            "steps": [
                {"id": "build", "call": "wftarget.echo"},
                {"id": "gate", "approval": {"prompt": "go?"}, "depends_on": ["build"]},
                {"id": "skip_me", "call": "wftarget.echo", "when": "false", "depends_on": ["gate"]},
                {
                    "id": "deploy",
                    "call": "wftarget.flaky",
                    "depends_on": ["gate"],
                    "with": {"fail_times": 1},
                    "retry": {"max_attempts": 2, "backoff": 0.01},
                },
            ]
        },
    )
    run_id = await start(wf.bus, name)
    console, out = _console()
    watcher = asyncio.create_task(
        watch_async(run_id, nats_url=nats_url, console=console, timeout=15)
    )
    await asyncio.sleep(0.5)
    assert not watcher.done()
    await wf.bus.call("workflow.run.approve", {"run_id": run_id, "step": "gate"})
    assert await watcher == "succeeded"
    text = out.getvalue()
    assert "✓ build" in text and "gate waits for approval" in text
    assert "skip_me skipped" in text and "↻ deploy attempt 1" in text and "✓ deploy" in text
    assert f"run {run_id} succeeded" in text
    assert "4/4" in text


async def test_watch_of_a_finished_failed_run_replays_it(
    nats_url: str, wf: Service, wftarget: Target
) -> None:
    name = unique("watchfail")
    await put(wf.bus, name, {"steps": [{"id": "pay", "call": "wftarget.reject"}]})
    run_id = await start(wf.bus, name)
    await finished(wf.bus, run_id)
    console, out = _console()
    assert await watch_async(run_id, nats_url=nats_url, console=console, timeout=10) == "failed"
    assert "✗ pay: 422" in out.getvalue()
