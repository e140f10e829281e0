"""What the fake agents and pydantic-ai models share: a scripted provider.

Replies are cycled from a script (a str is a text answer, a
:class:`~tests.provider_servers.ToolCall` asks for a tool); each call is counted and the
settings it was sent with kept; a call can fail, wait at a gate, or hang until cancelled,
before it answers or part way through a stream.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Sequence
from typing import Any

from .fake_chat_models import Bill, CallCounter
from .provider_servers import ToolCall

__all__ = ["Reply", "ScriptedProvider", "pieces"]

Reply = str | ToolCall


def pieces(reply: Reply) -> list[str]:
    """The pieces a reply is streamed in: the words of a text, a tool call's JSON in halves."""
    if isinstance(reply, ToolCall):
        text = json.dumps(reply.arguments)
        return [text[: len(text) // 2], text[len(text) // 2 :]]
    words = reply.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


class ScriptedProvider:
    """The provider behind a fake model (see the module docstring).

    ``bill`` is reported for every call (default :class:`Bill`); ``report_usage=False``
    reports none; ``answered`` is the dated snapshot the answer names; ``gate`` (an
    asyncio.Event) holds every call at the provider until it is set; ``hang`` holds it until
    cancelled; ``hang_after_chunks`` stalls a stream after that many pieces; ``error`` is
    raised by the provider once the call is counted.
    """

    def _script(
        self,
        *,
        replies: Sequence[Reply] = ("Hello there, friend.",),
        bill: Bill | None = None,
        report_usage: bool = True,
        answered: str | None = "gpt-4o-2024-08-06",
        gate: asyncio.Event | None = None,
        hang: bool = False,
        hang_after_chunks: int | None = None,
        error: BaseException | None = None,
    ) -> None:
        self.replies = list(replies)
        self.bill = Bill() if bill is None else bill
        self.report_usage = report_usage
        self.answered = answered
        self.gate = gate
        self.hang = hang
        self.hang_after_chunks = hang_after_chunks
        self.error = error
        self.calls = CallCounter()
        self.settings_seen: list[Any] = []
        self._cycle = itertools.cycle(self.replies)
        self._lock = threading.Lock()

    def _take(self, settings: Any) -> Reply:
        """One provider call: counted, its settings kept, the next reply (or the error)."""
        self.calls.hit()
        with self._lock:
            self.settings_seen.append(settings)
            reply = next(self._cycle)
        if self.error is not None:
            raise self.error
        return reply

    async def _wait_at_provider(self) -> None:
        if self.hang:
            await asyncio.Event().wait()
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0)

    async def _stall(self, index: int) -> None:
        """Before stream piece ``index``: stall there if the test asks for it."""
        if index == self.hang_after_chunks:
            await asyncio.Event().wait()
        await asyncio.sleep(0)
