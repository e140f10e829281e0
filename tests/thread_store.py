"""A store that notes which thread runs each operation: async code must keep store round
trips off the event loop."""

from __future__ import annotations

import threading
from typing import Any

from agent_budget import MemoryStore


class ThreadNotingStore(MemoryStore):
    """A MemoryStore that says it does I/O (as SQLite and Redis do) and records the thread
    of every reserve, commit and release in ``threads``."""

    does_io = True
    schemes = ()  # not the memory:// backend: a subclass would otherwise take its scheme

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def reserve(self, *a: Any, **k: Any) -> Any:
        self.threads.append(threading.get_ident())
        return super().reserve(*a, **k)

    def commit(self, *a: Any, **k: Any) -> Any:
        self.threads.append(threading.get_ident())
        return super().commit(*a, **k)

    def release(self, *a: Any, **k: Any) -> Any:
        self.threads.append(threading.get_ident())
        return super().release(*a, **k)
