"""Ring: the last ``maxlen`` items, in a list that grows only as items come.

A ``deque(maxlen=...)`` allocates a 64-slot block (about 600 bytes) however few items it
holds; a budget keeps two rings (records and alerts) and a manager may cache thousands of
budgets that each recorded one call. Not thread-safe: callers hold their own lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["Ring"]

T = TypeVar("T")


class Ring(Generic[T]):
    """The last ``maxlen`` items appended, oldest first."""

    __slots__ = ("_items", "_next", "maxlen")

    def __init__(self, maxlen: int) -> None:
        self.maxlen = maxlen
        self._items: list[T] = []
        self._next = 0  # where the next item goes once the ring is full

    def append(self, item: T) -> None:
        items = self._items
        if len(items) < self.maxlen:
            items.append(item)
        elif self.maxlen:
            items[self._next] = item
            self._next = (self._next + 1) % self.maxlen

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        items, start = self._items, self._next
        return iter(items[start:] + items[:start])
