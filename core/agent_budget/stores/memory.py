"""MemoryStore: the in-process default, one lock over plain dicts, lazy expiry throughout."""

from __future__ import annotations

import heapq
import threading
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import SplitResult

from ..errors import StoreConfigError
from .base import (
    CommitResult,
    Level,
    Line,
    ReserveResult,
    Store,
    StoreOptions,
    bucket_start,
    is_windowed,
    new_tuple,
)

__all__ = ["MemoryStore"]


class _Counter:
    """A plain total, or a rolling sum over fixed buckets (``buckets`` is not None)."""

    __slots__ = ("buckets", "reserved", "total")

    def __init__(self, windowed: bool) -> None:
        self.total = 0
        self.reserved = 0
        self.buckets: deque[list[int]] | None = deque() if windowed else None

    def committed(self, now: float, opts: StoreOptions) -> int:
        buckets = self.buckets
        if buckets is not None:
            horizon = now - opts.window_seconds - opts.bucket_seconds
            while buckets and buckets[0][0] <= horizon:
                self.total -= buckets.popleft()[1]
        return self.total

    def add(self, amount: int, now: float, opts: StoreOptions) -> None:
        buckets = self.buckets
        if buckets is not None:
            start = bucket_start(now, opts.bucket_seconds)
            if buckets and buckets[-1][0] == start:
                buckets[-1][1] += amount
            elif buckets and buckets[-1][0] > start:
                # A clock that stepped back: merge into the newest bucket, never lose it.
                buckets[-1][1] += amount
            else:
                buckets.append([start, amount])
        self.total += amount

    def clear(self) -> None:
        self.total = 0
        if self.buckets is not None:
            self.buckets.clear()


class _Hold:
    __slots__ = ("entries", "expires_at")

    def __init__(self, entries: list[tuple[_Counter, int]], expires_at: float) -> None:
        self.entries = entries
        self.expires_at = expires_at


class MemoryStore(Store):
    """Budget state in this process's memory: fast, exact, gone when the process ends.

    Memory stays bounded: windows keep at most ``window/bucket + 1`` buckets per counter,
    finished hold ids are forgotten after ``tombstone_ttl``, and with ``idle_ttl`` whole
    scopes unused that long are dropped.
    """

    schemes = ("memory",)
    keeps_ledger = False
    does_io = False

    def __init__(self, options: StoreOptions | None = None, **kwargs: Any) -> None:
        self.options = options or StoreOptions(**kwargs)
        self._lock = threading.Lock()
        self._scopes: OrderedDict[str, tuple[float, dict[str, _Counter]]] = OrderedDict()
        self._holds: dict[str, _Hold] = {}
        self._hold_expiry: list[tuple[float, str]] = []
        self._done: dict[str, tuple[str, float]] = {}
        self._done_expiry: deque[tuple[float, str]] = deque()
        self._defs: dict[str, dict[str, Any]] = {}

    @classmethod
    def _from_url(cls, url: str, parsed: SplitResult, **options: Any) -> Store:
        if parsed.netloc or parsed.path.strip("/"):
            raise StoreConfigError(f"memory:// takes no host or path, got {url!r}")
        return cls(**options)

    # -- internals (lock held) -------------------------------------------------------------

    def _counters(self, scope: str, now: float) -> dict[str, _Counter]:
        entry = self._scopes.get(scope)
        if entry is None:
            counters: dict[str, _Counter] = {}
        else:
            counters = entry[1]
            if self.options.idle_ttl is None:
                return counters  # use order and times matter only to idle expiry
            self._scopes.move_to_end(scope)
        self._scopes[scope] = (now, counters)
        return counters

    def _counters_for(self, lines: Sequence[Line], now: float) -> list[_Counter]:
        out = []
        scope = None
        counters: dict[str, _Counter] = {}
        for line in lines:
            if line.scope != scope:  # lines mostly come grouped by scope
                scope = line.scope
                counters = self._counters(scope, now)
            counter = counters.get(line.metric)
            if counter is None:
                counter = counters[line.metric] = _Counter(is_windowed(line.metric))
            out.append(counter)
        return out

    def _levels(self, counters: list[_Counter], now: float) -> tuple[Level, ...]:
        opts = self.options
        return tuple(
            [
                new_tuple(
                    Level, (c.total if c.buckets is None else c.committed(now, opts), c.reserved)
                )
                for c in counters
            ]
        )

    def _reap(self, now: float) -> None:
        expiry = self._hold_expiry
        done = self._done_expiry
        if (
            (not expiry or expiry[0][0] > now)
            and (not done or done[0][0] > now)
            and self.options.idle_ttl is None
        ):
            return
        while expiry and expiry[0][0] <= now:
            _, hold_id = heapq.heappop(expiry)
            hold = self._holds.get(hold_id)
            if hold is not None and hold.expires_at <= now:
                self._drop_hold(hold_id, hold)
        while done and done[0][0] <= now:
            _, hold_id = done.popleft()
            entry = self._done.get(hold_id)
            if entry is not None and entry[1] <= now:
                del self._done[hold_id]
        idle = self.options.idle_ttl
        if idle is not None:
            scopes = self._scopes
            # Least recently used first; a scope still holding budget is passed over (moved
            # to the back) so it cannot shield idle scopes behind it.
            for _ in range(len(scopes)):
                name, (touched, counters) = next(iter(scopes.items()))
                if touched > now - idle:
                    break
                if any(c.reserved for c in counters.values()):
                    scopes.move_to_end(name)
                    continue
                scopes.popitem(last=False)

    def _drop_hold(self, hold_id: str, hold: _Hold) -> None:
        del self._holds[hold_id]
        for counter, amount in hold.entries:
            counter.reserved -= amount

    def _finish(self, hold_id: str, state: str, now: float) -> None:
        expires = now + self.options.tombstone_ttl
        self._done[hold_id] = (state, expires)
        self._done_expiry.append((expires, hold_id))

    # -- operations ------------------------------------------------------------------------

    def reserve(
        self,
        hold_id: str,
        lines: Sequence[Line],
        *,
        now: float,
        ttl: float,
        group: str,
        dry_run: bool = False,
    ) -> ReserveResult:
        with self._lock:
            self._reap(now)
            counters = self._counters_for(lines, now)
            levels = self._levels(counters, now)
            if not dry_run and (hold_id in self._holds or hold_id in self._done):
                held = self._holds.get(hold_id)
                if held is not None and held.entries == [
                    (c, line.amount) for c, line in zip(counters, lines, strict=True)
                ]:
                    return ReserveResult(True, levels)  # a replayed reserve: held once
                raise ValueError(f"hold id {hold_id!r} is already in use")
            for index, (line, level) in enumerate(zip(lines, levels, strict=True)):
                limit = line.limit
                if limit is not None and level[0] + level[1] + line.amount > limit:
                    return ReserveResult(False, levels, index)
            if not dry_run:
                entries = [
                    (counter, line.amount) for counter, line in zip(counters, lines, strict=True)
                ]
                for counter, amount in entries:
                    counter.reserved += amount
                expires_at = now + ttl
                self._holds[hold_id] = _Hold(entries, expires_at)
                heapq.heappush(self._hold_expiry, (expires_at, hold_id))
            return ReserveResult(True, levels)

    def commit(
        self,
        hold_id: str,
        lines: Sequence[Line],
        *,
        now: float,
        group: str,
        record: Mapping[str, Any] | None = None,
    ) -> CommitResult:
        opts = self.options
        with self._lock:
            self._reap(now)
            hold = self._holds.get(hold_id)
            if hold is not None:
                self._drop_hold(hold_id, hold)
            done = self._done.get(hold_id)
            applied = done is None or done[0] == "released"
            counters = self._counters_for(lines, now)
            if applied:
                for counter, line in zip(counters, lines, strict=True):
                    if counter.buckets is None:
                        counter.total += line.amount
                    else:
                        counter.add(line.amount, now, opts)
                self._finish(hold_id, "committed", now)
            return CommitResult(applied, self._levels(counters, now))

    def release(self, hold_id: str, *, now: float, group: str) -> bool:
        with self._lock:
            self._reap(now)
            hold = self._holds.get(hold_id)
            if hold is None:
                return False
            self._drop_hold(hold_id, hold)
            if hold_id not in self._done:
                self._finish(hold_id, "released", now)
            return True

    def read(self, scope: str, *, now: float, group: str) -> dict[str, Level]:
        opts = self.options
        with self._lock:
            self._reap(now)
            entry = self._scopes.get(scope)
            if entry is None:
                return {}
            out = {}
            for metric, counter in entry[1].items():
                level = Level(counter.committed(now, opts), counter.reserved)
                if level.committed or level.reserved:
                    out[metric] = level
            return out

    def reset(self, scope: str, prefix: str, *, now: float, group: str) -> None:
        with self._lock:
            entry = self._scopes.get(scope)
            if entry is None:
                return
            for metric, counter in entry[1].items():
                if metric.startswith(prefix):
                    counter.clear()

    def save_scope(self, name: str, data: Mapping[str, Any]) -> None:
        with self._lock:
            self._defs[name] = dict(data)

    def load_scopes(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: dict(v) for k, v in self._defs.items()}

    def delete_scope(self, name: str) -> None:
        with self._lock:
            self._defs.pop(name, None)

    def stats(self) -> dict[str, int]:
        """Sizes of the internal tables, for memory tests and benchmarks."""
        with self._lock:
            return {
                "scopes": len(self._scopes),
                "counters": sum(len(c) for _, c in self._scopes.values()),
                "buckets": sum(
                    len(counter.buckets)
                    for _, counters in self._scopes.values()
                    for counter in counters.values()
                    if counter.buckets is not None
                ),
                "holds": len(self._holds),
                "hold_heap": len(self._hold_expiry),
                "tombstones": len(self._done),
            }
