"""Running blocking work from async code without stalling the event loop."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from typing import TypeVar

__all__ = ["off_loop"]

T = TypeVar("T")
log = logging.getLogger("agent_budget")


async def off_loop(fn: Callable[[], T], *, undo: Callable[[T], object] | None = None) -> T:
    """Run ``fn()`` in the loop's default executor, in a copy of the current context.

    The work is shielded: a cancelled caller does not interrupt it half way (a store
    operation runs to its end). If the caller was cancelled and ``undo`` is given, ``undo``
    is applied to the result once it arrives, also in the executor (e.g. release a hold that
    nobody will use).
    """
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    future = loop.run_in_executor(None, ctx.run, fn)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if undo is not None:
            future.add_done_callback(lambda done: _undo_later(loop, done, undo))
        raise


def _undo_later(
    loop: asyncio.AbstractEventLoop, done: asyncio.Future[T], undo: Callable[[T], object]
) -> None:
    if done.cancelled() or done.exception() is not None:
        return
    result = done.result()
    loop.run_in_executor(None, undo, result)
