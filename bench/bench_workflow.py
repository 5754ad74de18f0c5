"""Workflow engine throughput and step-to-step delay, with durable state.

The workflow service runs as its own process (as deployed, uvloop) against a throwaway
``nats-server -js``; every step start and end is a compare-and-swap write of the run's KV
record plus an acknowledged append to the run-history stream. Three shapes:

  chain    RUNS concurrent runs, each a chain of LENGTH ``call`` steps to a no-op endpoint
  fan-out  FANOUT_RUNS runs, each one ``for_each`` of ITEMS calls at concurrency 50
  engine   the chain shape with ``delay: 0`` steps: no bus call, the engine alone

and prints steps/s for each, and the delay from a step's completion to its dependent's
start (p50/p99): measured at the no-op endpoint, in this process's clock, from the
moment it answers step n to the moment step n+1's call arrives (reply transit, the
engine's durable write, dispatch, request transit). Asserts nothing.
Sizes: CCC_BENCH_WF_RUNS (default 40), CCC_BENCH_WF_LENGTH (50), CCC_BENCH_WF_FANOUT_RUNS
(4), CCC_BENCH_WF_ITEMS (250).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ccc.common import Context, Service
from ccc.common.testing import running, temporary_server

RUNS = int(os.environ.get("CCC_BENCH_WF_RUNS", "40"))
LENGTH = int(os.environ.get("CCC_BENCH_WF_LENGTH", "50"))
FANOUT_RUNS = int(os.environ.get("CCC_BENCH_WF_FANOUT_RUNS", "4"))
ITEMS = int(os.environ.get("CCC_BENCH_WF_ITEMS", "250"))

arrived: dict[str, float] = {}
answered: dict[str, float] = {}
target = Service("benchtarget", description="No-op step target of the workflow benchmark")


class Body(BaseModel):
    model_config = ConfigDict(extra="allow")


@target.endpoint("noop", http="")
async def noop(req: Body, ctx: Context) -> dict[str, Any]:
    key = ctx.idempotency_key or ""
    arrived[key] = time.monotonic()
    answered[key] = time.monotonic()
    return {}


@contextlib.contextmanager
def workflow_process(nats_url: str, log: Path) -> Iterator[None]:
    env = {
        **os.environ,
        "CCC_NATS_URL": nats_url,
        "CCC_LOG_JSON": "false",
        "CCC_LOG_LEVEL": "WARNING",
    }
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ccc.workflow"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def chain(length: int, step: dict[str, Any]) -> dict[str, Any]:
    return {
        "steps": [
            {"id": f"s{i}", **step, **({"depends_on": [f"s{i - 1}"]} if i else {})}
            for i in range(length)
        ]
    }


async def run_all(bus: Any, name: str, count: int, steps_per_run: int) -> tuple[float, list[str]]:
    done: asyncio.Queue[str] = asyncio.Queue()

    async def on_end(msg: Any) -> None:
        done.put_nowait(msg.subject)

    subs = [
        await bus.nc.subscribe(f"ccc.evt.workflow.run.{e}", cb=on_end)
        for e in ("completed", "failed", "cancelled")
    ]
    started = time.perf_counter()
    runs = await asyncio.gather(
        *(bus.call("workflow.run.start", {"name": name}, timeout=30) for _ in range(count))
    )
    ends = [await asyncio.wait_for(done.get(), 300) for _ in range(count)]
    elapsed = time.perf_counter() - started
    for sub in subs:
        await sub.unsubscribe()
    failed = [e for e in ends if not e.endswith("completed")]
    if failed:
        print(f"  !! {len(failed)} runs did not complete: {failed[:3]}")
    total = count * steps_per_run
    print(
        f"  {count} runs x {steps_per_run} steps = {total} steps in {elapsed:.2f} s: "
        f"{total / elapsed:7.0f} steps/s"
    )
    return elapsed, [r["id"] for r in runs]


def delays(run_ids: list[str], length: int) -> list[float]:
    out = []
    for run_id in run_ids:
        for i in range(1, length):
            prev, nxt = f"{run_id}/s{i - 1}", f"{run_id}/s{i}"
            if prev in answered and nxt in arrived:
                out.append((arrived[nxt] - answered[prev]) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else float("nan")


async def measure(nats_url: str) -> None:
    async with running(target, nats_url) as svc:
        bus = svc.bus
        for _ in range(200):  # wait for the workflow process
            try:
                await bus.call("workflow.definition.list", timeout=1)
                break
            except Exception:
                await asyncio.sleep(0.1)
        await bus.call(
            "workflow.definition.put",
            {"name": "bench-chain", "definition": chain(LENGTH, {"call": "benchtarget.noop"})},
        )
        await bus.call(
            "workflow.definition.put",
            {"name": "bench-engine", "definition": chain(LENGTH, {"delay": 0})},
        )
        await bus.call(
            "workflow.definition.put",
            {
                "name": "bench-fanout",
                "definition": {
                    "params": {"items": list(range(ITEMS))},
                    "steps": [
                        {
                            "id": "each",
                            "for_each": "params.items",
                            "concurrency": 50,
                            "call": "benchtarget.noop",
                        }
                    ],
                },
            },
        )
        await run_all(bus, "bench-chain", 2, LENGTH)  # warm-up
        arrived.clear()
        answered.clear()

        print(f"\nchain: {RUNS} concurrent runs of {LENGTH} sequential no-op calls")
        _, ids = await run_all(bus, "bench-chain", RUNS, LENGTH)
        d = delays(ids, LENGTH)
        print(
            f"  completion → dependent start: p50 {pct(d, 50):.2f} ms, p99 {pct(d, 99):.2f} ms"
            f" ({len(d)} edges, under {RUNS} runs' load)"
        )

        print("\nchain, one run at a time (delay without contention)")
        arrived.clear()
        answered.clear()
        _, ids = await run_all(bus, "bench-chain", 1, LENGTH)
        d = delays(ids, LENGTH)
        print(f"  completion → dependent start: p50 {pct(d, 50):.2f} ms, p99 {pct(d, 99):.2f} ms")

        print(f"\nfan-out: {FANOUT_RUNS} runs, for_each over {ITEMS} no-op calls at concurrency 50")
        await run_all(bus, "bench-fanout", FANOUT_RUNS, ITEMS)

        print(f"\nengine only: {RUNS} runs of {LENGTH} sequential `delay: 0` steps")
        await run_all(bus, "bench-engine", RUNS, LENGTH)
        print("\n(goal: >= 500 steps/s on 2 cores)")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ccc-bench-wf-") as tmp, temporary_server() as url:
        log = Path(tmp) / "workflow.log"
        with workflow_process(url, log):
            asyncio.run(measure(url))
        tail = log.read_text().strip().splitlines()[-5:]
        if any("ERROR" in line or "Traceback" in line for line in tail):
            print("\nworkflow log tail:\n" + "\n".join(tail))


if __name__ == "__main__":
    main()
