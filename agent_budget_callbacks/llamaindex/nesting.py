"""Finding the LLM events that enclose a new one, so one provider call is counted once.

A ``CustomLLM`` answers ``chat()`` by calling its own ``complete()``, ``achat()`` by calling
``chat()``, and ``astream_chat()`` by iterating ``stream_chat()`` inside the stream it
returns: each layer fires its own LLM event for a single provider call. Context variables
cannot tell these apart from unrelated calls (a stream keeps its event open after the call
returns, and may be iterated in another thread or task), but the Python stack can: while a
nested event starts, the frame of every enclosing LlamaIndex callback wrapper (or of the
stream generator it returned) is live on the current stack and holds that event's
``event_id``. We recognise those frames by their code objects, taken from the decorators
themselves, so nothing depends on function names.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from types import CodeType, FrameType
from typing import Any

from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback

__all__ = ["enclosing_event_ids", "wrapper_codes"]


def _codes_within(code: CodeType, out: set[CodeType]) -> None:
    out.add(code)
    for const in code.co_consts:
        if isinstance(const, CodeType):
            _codes_within(const, out)


def _sample_wrappers() -> list[Callable[..., Any]]:
    # Fresh functions per decorator: the decorators mark what they wrap and pass an already
    # marked function through untouched.
    wrappers = []
    for decorator in (llm_chat_callback, llm_completion_callback):

        def sync_fn(self: Any, *args: Any, **kwargs: Any) -> Any:
            return None

        async def async_fn(self: Any, *args: Any, **kwargs: Any) -> Any:
            return None

        wrappers += [decorator()(sync_fn), decorator()(async_fn)]
    return wrappers


def wrapper_codes() -> frozenset[CodeType]:
    """Code objects of LlamaIndex's LLM callback wrappers and the stream generators inside."""
    out: set[CodeType] = set()
    for wrapper in _sample_wrappers():
        code = getattr(wrapper, "__code__", None)
        if isinstance(code, CodeType):
            _codes_within(code, out)
    return frozenset(out)


_WRAPPER_CODES = wrapper_codes()


def enclosing_event_ids(frame: FrameType | None = None) -> Iterator[str]:
    """Event ids of the LLM events live on this stack, innermost first.

    A wrapper whose own ``on_event_start`` is running has not bound ``event_id`` yet, so the
    event being started is never reported as enclosing itself.
    """
    f: FrameType | None = frame if frame is not None else sys._getframe(1)
    codes = _WRAPPER_CODES
    while f is not None:
        if f.f_code in codes:
            event_id = f.f_locals.get("event_id")
            if isinstance(event_id, str):
                yield event_id
        f = f.f_back
