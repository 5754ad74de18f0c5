"""Start a request's coroutine as a task, eagerly where Python can do it safely.

Most requests of a fast handler finish without ever suspending. Python 3.12's
``asyncio.eager_task_factory`` runs such a coroutine to its first suspension inside
``create_task`` with the new task already current, so a request that never waits
costs no loop iteration. On 3.11 there is no safe equivalent: stepping the coroutine
by hand runs the handler's first step under the subscription's task, where
``asyncio.timeout`` or ``TaskGroup`` would capture (and later cancel) the wrong task —
an independent review reproduced an endpoint going permanently silent that way — so
3.11 creates an ordinary task.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any


def start(coro: Coroutine[Any, Any, None], on_done: Callable[[], None]) -> asyncio.Task[None]:
    """Run ``coro`` as a task (started eagerly on 3.12+); ``on_done`` runs once at the end."""
    loop = asyncio.get_running_loop()
    if sys.version_info >= (3, 12):
        task: asyncio.Task[None] = asyncio.eager_task_factory(loop, coro)  # type: ignore[attr-defined]
    else:
        task = loop.create_task(coro)
    task.add_done_callback(lambda _t: on_done())
    return task
