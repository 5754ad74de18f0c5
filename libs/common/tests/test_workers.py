"""The request worker pool: concurrency, order, deadlines, drain."""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import generate_latest

from ccc.common.metrics import FastCounter, FastHistogram
from ccc.common.slots import Slots
from ccc.common.workers import Workers


async def test_a_waiting_job_does_not_hold_up_the_ones_behind_it() -> None:
    done: list[str] = []
    release = asyncio.Event()

    async def serve(job: str) -> None:
        if job == "slow":
            await release.wait()
        done.append(job)

    pool: Workers[str] = Workers(4, serve, Slots(4))
    pool.start()
    for job in ("slow", "a", "b", "c"):
        await pool.submit(job, 5.0)
    await asyncio.sleep(0.05)
    assert done == ["a", "b", "c"]
    release.set()
    await pool.drain(1.0)
    assert done == ["a", "b", "c", "slow"]
    await pool.stop()


async def test_concurrency_is_bounded_by_the_slots() -> None:
    running = 0
    peak = 0

    async def serve(job: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1

    pool: Workers[int] = Workers(8, serve, Slots(3))
    pool.start()
    for i in range(20):
        await pool.submit(i, 5.0)
    await pool.drain(5.0)
    assert peak == 3
    await pool.stop()


async def test_an_overdue_job_is_cancelled_and_knows_why_and_the_worker_lives_on() -> None:
    outcomes: list[str] = []
    pool: Workers[str]

    async def serve(job: str) -> None:
        try:
            await asyncio.sleep(0.5 if job == "slow" else 0)
            outcomes.append(f"{job} done")
        except asyncio.CancelledError:
            outcomes.append(f"{job} expired={pool.expired()}")
            raise

    pool = Workers(1, serve, Slots(1), sweep_interval=0.01)
    pool.start()
    await pool.submit("slow", 0.05)
    await pool.submit("next", 5.0)
    await pool.drain(2.0)
    assert outcomes == ["slow expired=True", "next done"]
    await pool.stop()


async def test_asyncio_timeout_inside_a_job_cancels_only_that_job() -> None:
    """The trap of hand-stepped coroutines: asyncio.timeout must capture the job's task."""
    outcomes: list[str] = []

    async def serve(job: str) -> None:
        try:
            async with asyncio.timeout(0.02):
                await asyncio.sleep(1)
        except TimeoutError:
            outcomes.append(f"{job} timed out")

    pool: Workers[str] = Workers(2, serve, Slots(2))
    pool.start()
    for job in ("a", "b", "c"):
        await pool.submit(job, 5.0)
    await pool.drain(2.0)
    assert sorted(outcomes) == ["a timed out", "b timed out", "c timed out"]
    await pool.stop()


async def test_submit_waits_while_the_backlog_is_full() -> None:
    gate = asyncio.Event()

    async def serve(job: int) -> None:
        await gate.wait()

    pool: Workers[int] = Workers(2, serve, Slots(2))
    pool.start()
    for i in range(4):  # two running, two queued
        await pool.submit(i, 5.0)
    await asyncio.sleep(0.01)
    blocked = asyncio.create_task(pool.submit(99, 5.0))
    await asyncio.sleep(0.02)
    assert not blocked.done()
    gate.set()
    await asyncio.wait_for(blocked, 1.0)
    await pool.drain(1.0)
    await pool.stop()


def test_fast_metrics_expose_prometheus_families() -> None:
    counter = FastCounter("ccc_test_things", "things", ["kind"])
    histogram = FastHistogram("ccc_test_seconds", "time", ["kind"], buckets=(0.1, 1.0))
    counter.labels("x").inc()
    counter.labels("x").inc()
    for value in (0.05, 0.1, 0.5, 7.0):
        histogram.labels("x").observe(value)
    text = generate_latest().decode()
    assert 'ccc_test_things_total{kind="x"} 2.0' in text
    assert 'ccc_test_seconds_bucket{kind="x",le="0.1"} 2.0' in text  # le is inclusive
    assert 'ccc_test_seconds_bucket{kind="x",le="1.0"} 3.0' in text
    assert 'ccc_test_seconds_bucket{kind="x",le="+Inf"} 4.0' in text
    assert 'ccc_test_seconds_count{kind="x"} 4.0' in text


async def test_a_context_variable_set_by_one_job_is_not_seen_by_the_next() -> None:
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("leaky", default="unset")
    seen: list[str] = []

    async def serve(job: str) -> None:
        seen.append(var.get())
        var.set(job)  # no reset: a task per request never leaked this; a worker must not
        await asyncio.sleep(0)
        seen.append(var.get())

    pool: Workers[str] = Workers(1, serve, Slots(1))
    pool.start()
    for job in ("a", "b"):
        await pool.submit(job, 5.0)
    await pool.drain(1.0)
    assert seen == ["unset", "a", "unset", "b"]
    await pool.stop()


async def test_stop_is_not_swallowed_by_an_overdue_job_still_cleaning_up() -> None:
    async def serve(job: str) -> None:
        try:
            await asyncio.sleep(10)
        finally:
            await asyncio.sleep(1.0)  # cleanup after the deadline's cancel (a rollback)

    pool: Workers[str] = Workers(1, serve, Slots(1), sweep_interval=0.01)
    pool.start()
    await pool.submit("slow", 0.05)
    await asyncio.sleep(0.2)  # expired, now in its cleanup
    await pool.drain(0.1)  # runs out, as Service.stop's drain would
    await asyncio.wait_for(pool.stop(), 3.0)


async def test_jobs_still_queued_at_stop_are_handed_to_abandon() -> None:
    abandoned: list[str] = []
    gate = asyncio.Event()

    async def serve(job: str) -> None:
        await gate.wait()

    async def abandon(job: str) -> None:
        abandoned.append(job)

    pool: Workers[str] = Workers(1, serve, Slots(1), abandon=abandon)
    pool.start()
    for job in ("running", "queued-1"):
        await pool.submit(job, 5.0)
    await asyncio.sleep(0.01)
    held_back = pool.offer("queued-2", 5.0)  # over the backlog's bound: its sender waits
    assert not held_back.done()
    await pool.drain(0.05)
    await asyncio.wait_for(pool.stop(), 1.0)
    assert abandoned == ["queued-1", "queued-2"]
    assert held_back.done()  # the sender is let go, not left waiting for ever


async def test_a_cancel_left_on_the_worker_by_one_job_is_gone_for_the_next() -> None:
    counts: list[int] = []

    async def serve(job: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        counts.append(task.cancelling())
        if job == "leaves a cancel":
            task.cancel()  # and swallows it: what a 3.11 TaskGroup can leave behind
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0)

    pool: Workers[str] = Workers(1, serve, Slots(1))
    pool.start()
    for job in ("leaves a cancel", "next"):
        await pool.submit(job, 5.0)
    await pool.drain(1.0)
    assert counts == [0, 0]
    await pool.stop()
