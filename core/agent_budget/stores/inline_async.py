"""Async forms for a store whose operations never wait on a disk or a network (MemoryStore):
they answer inline, as fast as the sync ones, instead of going to a worker thread."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .base import CommitResult, Level, Line, ReserveResult, Store

__all__ = ["InlineAsync"]


class InlineAsync(Store):
    """Base of a store without I/O: each async form calls the sync operation."""

    async def areserve(
        self,
        hold_id: str,
        lines: Sequence[Line],
        *,
        now: float,
        ttl: float,
        group: str,
        dry_run: bool = False,
    ) -> ReserveResult:
        return self.reserve(hold_id, lines, now=now, ttl=ttl, group=group, dry_run=dry_run)

    async def acommit(
        self,
        hold_id: str,
        lines: Sequence[Line],
        *,
        now: float,
        group: str,
        record: Mapping[str, Any] | None = None,
    ) -> CommitResult:
        return self.commit(hold_id, lines, now=now, group=group, record=record)

    async def arelease(self, hold_id: str, *, now: float, group: str) -> bool:
        return self.release(hold_id, now=now, group=group)

    async def aread(
        self,
        scope: str,
        *,
        now: float,
        group: str,
        periods: Mapping[str, int] | None = None,
    ) -> dict[str, Level]:
        return self.read(scope, now=now, group=group, periods=periods)

    async def areset(self, scope: str, prefix: str, *, now: float, group: str) -> None:
        self.reset(scope, prefix, now=now, group=group)

    async def asave_scope(self, name: str, data: Mapping[str, Any]) -> None:
        self.save_scope(name, data)

    async def aload_scopes(self) -> dict[str, dict[str, Any]]:
        return self.load_scopes()
