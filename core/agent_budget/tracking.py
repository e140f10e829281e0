"""RunTracker: pairs a framework's start and end events with the reservation made at start.

Shared by the LangChain and LlamaIndex adapters. Entries are dropped lazily ``grace_seconds``
after their hold expired, so runs that never end (a timed-out call) do not grow memory,
while a slow call that ends after its hold expired is still recorded.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable

from .reservation import Reservation

__all__ = ["RunTracker"]

# Runs in flight at once stay few; stale entries are looked for only past this many.
_PRUNE_ABOVE = 64


class RunTracker:
    """A thread-safe map from run/event id to its open :class:`Reservation`.

    A plain dict: reads and removals are single dict operations (atomic in CPython), so only
    :meth:`add`, which may prune, takes the lock: one lock per run.
    """

    def __init__(self, grace_seconds: float = 3600.0) -> None:
        self._runs: dict[Hashable, Reservation] = {}
        self._lock = threading.Lock()
        self._grace = grace_seconds

    def add(self, run_id: Hashable, reservation: Reservation) -> None:
        runs = self._runs
        with self._lock:
            runs[run_id] = reservation
            if len(runs) > _PRUNE_ABOVE:
                self._prune(reservation.budget.clock())

    def pop(self, run_id: Hashable) -> Reservation | None:
        return self._runs.pop(run_id, None)

    def get(self, run_id: Hashable) -> Reservation | None:
        return self._runs.get(run_id)

    def __contains__(self, run_id: Hashable) -> bool:
        return run_id in self._runs

    def __len__(self) -> int:
        return len(self._runs)

    def _prune(self, now: float) -> None:
        # Oldest first; holds share a TTL per budget, so expiry order follows insertion order.
        # Other threads may pop meanwhile (lock-free): an iterator then fails; start again.
        runs = self._runs
        while True:
            try:
                stale = []
                for key, oldest in runs.items():
                    if oldest.expires_at + self._grace > now:
                        break
                    stale.append(key)
            except RuntimeError:  # changed size during iteration
                continue
            for key in stale:
                runs.pop(key, None)
            return
