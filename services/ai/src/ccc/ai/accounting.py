"""Usage per API key: events off the request path, spend in KV, budgets checked before a call.

A call only appends its usage to a list; every ``flush_interval`` the list is published
as ``ccc.evt.ai.usage`` events and each key's spend is added in KV by compare-and-swap,
so two instances charging the same key never lose an update, and a busy key costs one
KV write per interval rather than one per call. The budget check reads in-memory mirrors
of KV plus this instance's unflushed spend, so it costs the hot path nothing; across
instances it may let a few calls through right at the limit (spend lands after the call),
the usual trade of a budget that is not a lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from ccc.common import Conflict, RateLimited
from ccc.common.bus import Bus
from ccc.common.contracts.ai import Budget, Usage, UsageEvent, openai_error
from ccc.common.state import StateStore
from ccc.common.subjects import event_subject

from .shared import KVMirror, token

log = logging.getLogger(__name__)


class Accounting:
    SPEND = "spend."
    BUDGET = "budget."

    def __init__(
        self,
        state: StateStore,
        bus: Bus,
        configured: dict[str, Budget],
        flush_interval: float = 0.2,
    ) -> None:
        self.state = state
        self.bus = bus
        self.configured = configured
        self.flush_interval = flush_interval
        self.spend = KVMirror(state, self.SPEND)
        self.budgets = KVMirror(state, self.BUDGET)
        self._events: list[UsageEvent] = []
        self._pending: dict[str, tuple[float, int, int]] = {}
        self._flusher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.spend.start()
        await self.budgets.start()
        self._flusher = asyncio.create_task(self._flush_forever())

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush()
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
        pending_usd, pending_tokens, _ = self._pending.get(key_id, (0.0, 0, 0))
        usd = float(spent.get("usd", 0.0)) + pending_usd
        tokens = int(spent.get("tokens", 0)) + pending_tokens
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
        """Note one call's usage; it is published and charged at the next flush."""
        self._events.append(event)
        if event.key_id is not None:
            usd, tokens, calls = self._pending.get(event.key_id, (0.0, 0, 0))
            self._pending[event.key_id] = (
                usd + event.cost_usd,
                tokens + event.total_tokens,
                calls + 1,
            )

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                await self.flush()
            except Exception:
                log.exception("usage flush failed; will retry")

    async def flush(self) -> None:
        events, self._events = self._events, []
        pending, self._pending = self._pending, {}
        for event in events:
            await self.bus.publish(event_subject("ai", "usage"), event)
        for key_id, (usd, tokens, calls) in pending.items():
            try:
                await self._charge(key_id, usd, tokens, calls)
            except Exception:
                log.exception("spend of %s not recorded", key_id)
                self._add_back(key_id, usd, tokens, calls)

    def _add_back(self, key_id: str, usd: float, tokens: int, calls: int) -> None:
        old = self._pending.get(key_id, (0.0, 0, 0))
        self._pending[key_id] = (old[0] + usd, old[1] + tokens, old[2] + calls)

    async def _charge(self, key_id: str, usd: float, tokens: int, calls: int) -> None:
        key = self.SPEND + token(key_id)
        for _ in range(20):
            entry = await self.state.entry(key)
            current: dict[str, Any] = dict(entry.value) if entry else {}
            updated = {
                "key_id": key_id,
                "usd": float(current.get("usd", 0.0)) + usd,
                "tokens": int(current.get("tokens", 0)) + tokens,
                "requests": int(current.get("requests", 0)) + calls,
            }
            try:
                if entry is None:
                    await self.state.create(key, updated)
                else:
                    await self.state.update(key, updated, entry.revision)
            except Conflict:
                continue  # another instance charged the same key: read again
            # Seen here at once, before the watch brings it back.
            self.spend.values[token(key_id)] = updated
            return
        self._add_back(key_id, usd, tokens, calls)
        log.warning("spend of %s lost 20 races; kept for the next flush", key_id)

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
