"""A manual clock for tests: windows and expiry without sleeping."""

from __future__ import annotations

import threading


class FakeClock:
    """Callable wall clock that only moves when told to."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds
