"""RunTracker: pairs a framework's start and end events with the reservation made at start.

Shared by the LangChain and LlamaIndex adapters. Entries are dropped lazily ``grace_seconds``
after their hold expired, so runs that never end (a timed-out call) do not grow memory,
while a slow call that ends after its hold expired is still recorded.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

from .reservation import Reservation

__all__ = ["RunTracker"]

# Runs in flight at once stay few; stale entries are looked for only past this many.
_PRUNE_ABOVE = 64


class RunTracker:
    """A thread-safe map from run/event id to its open :class:`Reservation`."""

    def __init__(self, grace_seconds: float = 3600.0) -> None:
        self._runs: OrderedDict[Hashable, Reservation] = OrderedDict()
        self._lock = threading.Lock()
        self._grace = grace_seconds

    def add(self, run_id: Hashable, reservation: Reservation) -> None:
        with self._lock:
            self._runs[run_id] = reservation
            if len(self._runs) > _PRUNE_ABOVE:
                self._prune(reservation.budget.clock())

    def pop(self, run_id: Hashable) -> Reservation | None:
        with self._lock:
            return self._runs.pop(run_id, None)

    def get(self, run_id: Hashable) -> Reservation | None:
        with self._lock:
            return self._runs.get(run_id)

    def __contains__(self, run_id: Hashable) -> bool:
        with self._lock:
            return run_id in self._runs

    def __len__(self) -> int:
        with self._lock:
            return len(self._runs)

    def _prune(self, now: float) -> None:
        # Oldest first; holds share a TTL per budget, so expiry order follows insertion order.
        runs = self._runs
        while runs:
            key, oldest = next(iter(runs.items()))
            if oldest.expires_at + self._grace > now:
                break
            del runs[key]
