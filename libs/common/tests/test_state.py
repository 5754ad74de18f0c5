"""StateStore listings on a real JetStream KV bucket."""

from __future__ import annotations

import asyncio
import uuid

import nats

from ccc.common.state import StateStore


async def _store(nats_url: str) -> tuple[nats.NATS, StateStore]:
    nc = await nats.connect(nats_url)
    return nc, await StateStore.open(nc.jetstream(), f"test-{uuid.uuid4().hex[:8]}")


async def test_listing_sees_live_keys_under_the_prefix_only(nats_url: str) -> None:
    nc, state = await _store(nats_url)
    try:
        assert await state.keys("run.") == []
        for i in range(30):
            await state.put(f"run.{i:02d}", {"n": i})
        await state.put("runner.x", {"n": -1})  # shares the letters, not the prefix
        await state.put("other.1", {"n": -2})
        await state.put("run.05", {"n": 500})  # updated: listed once, newest value
        await state.delete("run.07")
        keys = await state.keys("run.")
        assert keys == [f"run.{i:02d}" for i in range(30) if i != 7]
        values = {e.key: e.value["n"] async for e in state.items("run.")}
        assert values["run.05"] == 500 and "run.07" not in values and len(values) == 29
        assert await state.keys("nothing.") == []
    finally:
        await nc.close()


async def test_listings_made_while_others_write_never_come_back_short(nats_url: str) -> None:
    """Listings racing writers: each sees at least the keys that existed before it began."""
    nc, state = await _store(nats_url)
    try:
        for i in range(50):
            await state.put(f"run.{i:03d}", {"n": i})

        async def writer() -> None:
            for i in range(50, 150):
                await state.put(f"run.{i:03d}", {"n": i})

        async def lister() -> list[int]:
            return [len(await state.keys("run.")) for _ in range(20)]

        _, *counts = await asyncio.gather(writer(), lister(), lister(), lister())
        assert all(n >= 50 for run in counts for n in run)
    finally:
        await nc.close()


async def test_every_key_is_listed_once_while_existing_keys_are_rewritten(nats_url: str) -> None:
    """A rewritten key loses its old message before the watch reaches it and its new one
    comes after the point where nothing seemed pending: the listing must wait for it."""
    nc, state = await _store(nats_url)
    try:
        n = 2000
        await asyncio.gather(*(state.put(f"run.{i:05d}", {"v": 0}) for i in range(n)))
        stop = asyncio.Event()

        async def rewriter() -> None:
            v = 0
            while not stop.is_set():
                v += 1
                await asyncio.gather(
                    *(state.put(f"run.{i:05d}", {"v": v}) for i in range(0, n, 13))
                )

        task = asyncio.create_task(rewriter())
        try:
            listings = [await state.keys("run.") for _ in range(10)]
        finally:
            stop.set()
            await task
        assert all(keys == [f"run.{i:05d}" for i in range(n)] for keys in listings)
    finally:
        await nc.close()
