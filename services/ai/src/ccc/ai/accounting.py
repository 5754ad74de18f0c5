"""Usage per API key: events off the request path, spend in KV, budgets checked before a call.

Spend is added by compare-and-swap, so two instances charging the same key never lose an
update. The budget check reads in-memory mirrors of KV, so it costs the hot path nothing;
it may let a request or two through right at the limit (spend is written after the call,
across instances), which is the usual trade of a budget that is not a lock.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ccc.common import Conflict, RateLimited
from ccc.common.bus import Bus
from ccc.common.state import StateStore
from ccc.common.subjects import event_subject

from .contracts import Budget, Usage, UsageEvent, openai_error
from .shared import KVMirror, token

log = logging.getLogger(__name__)


class Accounting:
    SPEND = "spend."
    BUDGET = "budget."

    def __init__(self, state: StateStore, bus: Bus, configured: dict[str, Budget]) -> None:
        self.state = state
        self.bus = bus
        self.configured = configured
        self.spend = KVMirror(state, self.SPEND)
        self.budgets = KVMirror(state, self.BUDGET)
        self._tasks: set[asyncio.Task[None]] = set()
        self._locks: dict[str, asyncio.Lock] = {}

    async def start(self) -> None:
        await self.spend.start()
        await self.budgets.start()

    async def stop(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        await self.spend.stop()
        await self.budgets.stop()

    def budget(self, key_id: str) -> Budget | None:
        stored = self.budgets.values.get(token(key_id))
        if isinstance(stored, dict):
            return Budget.model_validate(stored)
        return self.configured.get(key_id)

    def check(self, key_id: str | None) -> None:
        """429 when ``key_id`` has spent its budget."""
        if key_id is None:
            return
        budget = self.budget(key_id)
        if budget is None:
            return
        spent = self.spend.values.get(token(key_id)) or {}
        usd, tokens = float(spent.get("usd", 0.0)), int(spent.get("tokens", 0))
        if budget.max_usd is not None and usd >= budget.max_usd:
            detail = f"API key {key_id} has spent its budget: ${usd:.6f} of ${budget.max_usd:.6f}"
            raise RateLimited(
                detail,
                extra={
                    "key_id": key_id,
                    "spent_usd": usd,
                    "budget_usd": budget.max_usd,
                    **openai_error(detail, "budget_exceeded", "insufficient_quota"),
                },
            )
        if budget.max_tokens is not None and tokens >= budget.max_tokens:
            detail = (
                f"API key {key_id} has spent its budget: {tokens} of {budget.max_tokens} tokens"
            )
            raise RateLimited(
                detail,
                extra={
                    "key_id": key_id,
                    "spent_tokens": tokens,
                    "budget_tokens": budget.max_tokens,
                    **openai_error(detail, "budget_exceeded", "insufficient_quota"),
                },
            )

    def record(self, event: UsageEvent) -> None:
        """Publish the usage event and add to the key's spend, after the answer went out."""
        task = asyncio.create_task(self._record(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record(self, event: UsageEvent) -> None:
        try:
            await self.bus.publish(event_subject("ai", "usage"), event)
            if event.key_id is not None:
                await self._charge(event.key_id, event.cost_usd, event.total_tokens)
        except Exception:
            log.exception("usage of %s not recorded", event.key_id)

    async def _charge(self, key_id: str, usd: float, tokens: int) -> None:
        key = self.SPEND + token(key_id)
        lock = self._locks.setdefault(key_id, asyncio.Lock())
        async with lock:
            for _ in range(20):
                entry = await self.state.entry(key)
                current: dict[str, Any] = dict(entry.value) if entry else {}
                updated = {
                    "key_id": key_id,
                    "usd": float(current.get("usd", 0.0)) + usd,
                    "tokens": int(current.get("tokens", 0)) + tokens,
                    "requests": int(current.get("requests", 0)) + 1,
                }
                try:
                    if entry is None:
                        await self.state.create(key, updated)
                    else:
                        await self.state.update(key, updated, entry.revision)
                    return
                except Conflict:
                    continue  # another instance charged the same key: read again
            log.error("spend of %s not updated after 20 races", key_id)

    async def set_budget(self, key_id: str, budget: Budget) -> None:
        await self.state.put(self.BUDGET + token(key_id), budget)
        self.budgets.values[token(key_id)] = budget.model_dump()

    async def usage(self, key_id: str) -> Usage:
        entry = await self.state.entry(self.SPEND + token(key_id))
        spent = entry.value if entry else {}
        return Usage(
            key_id=key_id,
            usd=float(spent.get("usd", 0.0)),
            tokens=int(spent.get("tokens", 0)),
            requests=int(spent.get("requests", 0)),
            budget=self.budget(key_id),
        )
