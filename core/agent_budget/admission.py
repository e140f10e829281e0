"""Admission beyond yes or no: the largest output cap that still fits (clamping), whether a
refusal would pass once in-flight holds end, and a fair queue for calls that wait for that.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .stores import Level, Line, Store

__all__ = [
    "Refused",
    "WaitQueue",
    "could_fit_without_holds",
    "largest_fitting_output",
    "notify_waiters",
    "wait_queue_for",
]


@dataclass(frozen=True)
class Refused:
    """A reserve the store refused: the line that did not fit and every line's level."""

    lines: tuple[Line, ...]
    levels: tuple[Level, ...]
    index: int
    specs: tuple[Any, ...] = ()
    """What each line stands for (the budget's :class:`~agent_budget.lines.LineSpec`)."""

    @property
    def line(self) -> Line:
        return self.lines[self.index]

    @property
    def level(self) -> Level:
        return self.levels[self.index]

    @property
    def waitable(self) -> bool:
        """True when every line would fit once the holds of calls in flight are gone."""
        return could_fit_without_holds(self.lines, self.levels)


def could_fit_without_holds(lines: Sequence[Line], levels: Sequence[Level]) -> bool:
    return all(
        line.limit is None or level.committed + line.amount <= line.limit
        for line, level in zip(lines, levels, strict=True)
    )


def _room(lines: Sequence[Line], levels: Sequence[Level], cost: bool) -> int | None:
    """The least headroom (limit - committed - held) over the token or the cost lines."""
    room: int | None = None
    for line, level in zip(lines, levels, strict=True):
        if line.limit is None or line.metric.endswith("cost") != cost:
            continue
        free = line.limit - level.committed - level.reserved
        room = free if room is None else min(room, free)
    return room


def largest_fitting_output(
    input_tokens: int,
    wanted: int,
    floor: int,
    worst_case: Callable[[int, int], int],
    lines: Sequence[Line],
    levels: Sequence[Level],
) -> int | None:
    """The largest output cap in ``[floor, wanted]`` whose hold fits every limited line at
    ``levels``, or None when even ``floor`` does not. ``worst_case(input, output)`` is the
    hold's cost in nano-USD (monotone in ``output``)."""
    token_room = _room(lines, levels, cost=False)
    cost_room = _room(lines, levels, cost=True)

    def fits(out: int) -> bool:
        if token_room is not None and input_tokens + out > token_room:
            return False
        return cost_room is None or worst_case(input_tokens, out) <= cost_room

    if not fits(floor):
        return None
    low, high = floor, wanted  # fits(low) holds; find the largest that fits
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


class WaitQueue:
    """First come, first served among the calls of one process that wait for budget.

    Only the call at the head of the queue tries again; each commit or release in this
    process wakes it, and a poll interval covers other processes' changes.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[int] = deque()
        self._tickets = itertools.count()

    def enter(self) -> int:
        with self._cond:
            ticket = next(self._tickets)
            self._queue.append(ticket)
            return ticket

    def leave(self, ticket: int) -> None:
        with self._cond:
            try:
                self._queue.remove(ticket)
            except ValueError:
                pass
            self._cond.notify_all()

    def is_next(self, ticket: int) -> bool:
        with self._cond:
            return bool(self._queue) and self._queue[0] == ticket

    def wait(self, ticket: int, timeout: float) -> None:
        """Block until something changed or ``timeout`` passed (spurious wakes are fine)."""
        with self._cond:
            self._cond.wait(timeout)

    def notify(self) -> None:
        with self._cond:
            self._cond.notify_all()


_queues: weakref.WeakKeyDictionary[Store, dict[str, WaitQueue]] = weakref.WeakKeyDictionary()
_queues_lock = threading.Lock()


def wait_queue_for(store: Store, scope: str) -> WaitQueue:
    """The queue of this process's calls waiting for budget in ``scope`` on ``store``."""
    with _queues_lock:
        queues = _queues.get(store)
        if queues is None:
            queues = _queues[store] = {}
        queue = queues.get(scope)
        if queue is None:
            if len(queues) >= 10_000:
                queues.clear()  # queues are cheap to remake; waiters hold their own
            queue = queues[scope] = WaitQueue()
        return queue


def notify_waiters(store: Store) -> None:
    """Wake this process's waiting calls on ``store``: budget may have been freed."""
    queues = _queues.get(store)
    if queues:
        for queue in list(queues.values()):
            queue.notify()
