"""Start a coroutine at once, and give it a task only if it has to wait.

Most requests of a fast handler finish without ever suspending (validate, compute,
publish into the client's buffer). Creating an ``asyncio.Task`` for each costs more
than the handler (measured with bench/bench_gateway.py, together with
per-request timers only for handlers that wait: from ~57 % to ~76 % of a raw responder).
Python 3.12 has ``asyncio.eager_task_factory`` for this; on 3.11 we step the coroutine
once by hand, in its own copy of the context, and hand what is left to a task that
shares that context (so context variables set before the first suspension, such as
the current trace span, are reset in the same context they were set in).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine, Generator
from typing import Any


class _Rest:
    """Awaitable that re-yields the coroutine's first suspension, then drives it on."""

    def __init__(self, coro: Coroutine[Any, Any, None], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, None]:
        value = self.first
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                self.coro.close()
                raise
            except BaseException as exc:  # cancellation and friends go to the coroutine
                try:
                    value = self.coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    value = self.coro.send(sent)
                except StopIteration:
                    return


async def _finish(coro: Coroutine[Any, Any, None], first: Any) -> None:
    await _Rest(coro, first)


def start(
    coro: Coroutine[Any, Any, None], on_done: Callable[[], None]
) -> asyncio.Task[None] | None:
    """Run ``coro`` until it first waits; return the task that finishes it, if any.

    ``on_done`` runs exactly once, when the coroutine has finished either way.
    """
    context = contextvars.copy_context()
    try:
        first = context.run(coro.send, None)
    except StopIteration:
        on_done()
        return None
    except BaseException:
        on_done()
        raise
    task = asyncio.get_running_loop().create_task(_finish(coro, first), context=context)
    task.add_done_callback(lambda _t: on_done())
    return task
