"""Commits a store could not take, kept for replay: one buffer per store, shared by every
Budget over it, so a Budget object dropped by a manager's cache loses nothing."""

from __future__ import annotations

import logging
import threading
import weakref
from collections import deque
from typing import Any, NamedTuple

from .errors import StoreError
from .stores import Line, Store

__all__ = ["PendingCommit", "PendingCommits", "pending_for"]

log = logging.getLogger("agent_budget")


class PendingCommit(NamedTuple):
    """One buffered commit, replayed with its original time (commits are idempotent)."""

    hold_id: str
    lines: tuple[Line, ...]
    when: float
    group: str
    record: dict[str, Any] | None


class PendingCommits:
    """An ordered, bounded buffer of commits waiting for the store to come back."""

    def __init__(self, maxlen: int) -> None:
        self.maxlen = maxlen
        self._items: deque[PendingCommit] = deque()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: PendingCommit) -> None:
        with self._lock:
            if len(self._items) >= self.maxlen:
                lost = self._items.popleft()
                log.error("commit buffer full: dropped buffered usage %s", lost.record or lost)
            self._items.append(item)
            size = len(self._items)
        log.error(
            "budget store unavailable: usage of %s buffered for replay (%d pending)",
            item.hold_id,
            size,
        )

    def flush(self, store: Store) -> None:
        """Replay buffered commits in order until the store fails again."""
        while True:
            with self._lock:
                if not self._items:
                    return
                item = self._items[0]
            try:
                store.commit(
                    item.hold_id, item.lines, now=item.when, group=item.group, record=item.record
                )
            except StoreError:
                return
            with self._lock:
                if self._items and self._items[0] is item:
                    self._items.popleft()
            log.info("replayed a buffered commit %s to the budget store", item.hold_id)


_buffers: weakref.WeakKeyDictionary[Store, PendingCommits] = weakref.WeakKeyDictionary()
_buffers_lock = threading.Lock()


def pending_for(store: Store, maxlen: int) -> PendingCommits:
    """The buffer of ``store`` (made on first use); ``maxlen`` grows it, never shrinks it."""
    with _buffers_lock:
        buffer = _buffers.get(store)
        if buffer is None:
            buffer = _buffers[store] = PendingCommits(maxlen)
        elif maxlen > buffer.maxlen:
            buffer.maxlen = maxlen
        return buffer
