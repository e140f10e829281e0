"""A MemoryStore that can be switched off, for outage tests."""

from __future__ import annotations

from agent_budget import MemoryStore, StoreError


class FlakyStore(MemoryStore):
    """A MemoryStore that fails every operation while ``down`` is set."""

    down = False

    def _gate(self) -> None:
        if self.down:
            raise StoreError("connection refused")

    def reserve(self, *a, **k):
        self._gate()
        return super().reserve(*a, **k)

    def commit(self, *a, **k):
        self._gate()
        return super().commit(*a, **k)

    def release(self, *a, **k):
        self._gate()
        return super().release(*a, **k)
