"""Budget stores: where counters and holds live. Pick one by URL with :func:`open_store`."""

from __future__ import annotations

from typing import Any

from .base import CommitResult, Level, Line, ReserveResult, Store, StoreOptions
from .memory import MemoryStore

__all__ = [
    "CommitResult",
    "Level",
    "Line",
    "MemoryStore",
    "ReserveResult",
    "Store",
    "StoreOptions",
    "open_store",
]


def open_store(store: Store | str | None = None, **options: Any) -> Store:
    """A Store instance as given, one opened from a URL, or a fresh MemoryStore for None."""
    if store is None:
        return MemoryStore(**options)
    if isinstance(store, Store):
        return store
    if isinstance(store, str):
        return Store.from_url(store, **options)
    raise TypeError(f"store must be a Store, a URL string or None, got {type(store).__name__}")
