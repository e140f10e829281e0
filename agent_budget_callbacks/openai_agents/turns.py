"""The model calls BudgetHooks saw start, so a BudgetModel can take one over.

The SDK hands ``on_llm_start`` the input list it then hands the model's ``get_response`` /
``stream_response`` (the very same object), and the hooks' ``on_llm_end`` the run's context
wrapper and agent: a turn is found by the first from the model and by the other two from
the hooks' end.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

from agent_budget.calls import CallLifecycle

__all__ = ["TURNS", "Turn", "Turns", "new_call_id"]


def new_call_id() -> str:
    """A call id unique across processes (it labels records as ``call_id``)."""
    return uuid.uuid4().hex


@dataclass(eq=False)
class Turn:
    """One model call as the hooks saw it start, until its ``on_llm_end``.

    ``input`` and ``context`` are the SDK's own objects for the call (the input list handed
    to the hooks and then to the model, the run's context wrapper); holding them keeps their
    ``id()`` unique while the turn lives. ``adopted`` is set when a BudgetModel over the same
    budget took the call over; ``attempts`` counts the model's tries at it.
    """

    calls: CallLifecycle
    call_id: str
    input: object
    context: object
    agent: object
    scope: str | None
    parent: str | None
    session: str | None
    created: float = field(default_factory=time.monotonic)
    adopted: bool = False
    attempts: int = 0


class Turns:
    """Open turns of every BudgetHooks, by input list and by run context (thread-safe).

    A turn normally leaves at its ``on_llm_end``; one whose call failed gets none, so turns
    older than ``_STALE_SECONDS`` are dropped once more than ``_PRUNE_ABOVE`` are open.
    """

    _PRUNE_ABOVE = 64
    _STALE_SECONDS = 7200.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_input: dict[int, list[Turn]] = {}
        self._by_context: dict[int, list[Turn]] = {}
        self._count = 0

    def add(self, turn: Turn) -> None:
        with self._lock:
            self._by_input.setdefault(id(turn.input), []).append(turn)
            self._by_context.setdefault(id(turn.context), []).append(turn)
            self._count += 1
            if self._count > self._PRUNE_ABOVE:
                self._prune(time.monotonic() - self._STALE_SECONDS)

    def remove(self, turn: Turn) -> None:
        with self._lock:
            self._remove(turn)

    def _remove(self, turn: Turn) -> None:
        for index, key in ((self._by_input, id(turn.input)), (self._by_context, id(turn.context))):
            turns = index.get(key)
            if turns is not None and turn in turns:
                turns.remove(turn)
                if not turns:
                    del index[key]
                if index is self._by_input:
                    self._count -= 1

    def _prune(self, cutoff: float) -> None:
        stale = [t for ts in self._by_input.values() for t in ts if t.created < cutoff]
        for turn in stale:
            self._remove(turn)

    def for_input(self, input: object) -> list[Turn]:
        with self._lock:
            return [t for t in self._by_input.get(id(input), ()) if t.input is input]

    def end(self, context: object, agent: object, calls: CallLifecycle) -> Turn | None:
        """Remove and return the oldest open turn of ``calls`` for this run and agent."""
        with self._lock:
            for turn in self._by_context.get(id(context), ()):
                if turn.context is context and turn.agent is agent and turn.calls is calls:
                    self._remove(turn)
                    return turn
        return None

    def __len__(self) -> int:
        with self._lock:
            return self._count


TURNS = Turns()
