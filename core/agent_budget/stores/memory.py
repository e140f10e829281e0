"""MemoryStore: the in-process default, one lock over plain dicts, lazy expiry throughout."""

from __future__ import annotations

import heapq
import itertools
import json
import math
import threading
from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from itertools import islice
from typing import Any

from ..errors import StoreConfigError
from ..locking import wait_for
from ..records import UsageRecord, record_payload
from .base import (
    CommitResult,
    Level,
    Line,
    ReserveResult,
    Store,
    StoreOptions,
    StoreURL,
    check_text,
    make_options,
    new_tuple,
    window_of,
)
from .inline_async import InlineAsync
from .ledger import EventFilter, LedgerFilter, check_limit, event_row, ledger_row
from .memory_prepared import Prepared, PreparedLines
from .memory_state import (
    Counter,
    Finished,
    Hold,
    Queue,
    Scope,
    advance,
    busy_until,
    current,
    new_counter,
)

__all__ = ["MemoryStore", "Prepared"]


class MemoryStore(InlineAsync, PreparedLines):
    """Budget state in this process's memory: fast, exact, gone when the process ends.

    Memory stays bounded: windows keep at most ``window/bucket + 2`` buckets per counter,
    finished hold ids are forgotten after ``tombstone_ttl`` (and the oldest first beyond
    ``max_tombstones``: a repeated commit comes seconds after the first, and in one process
    only from code that reuses an id), live holds sit in one expiry queue per hold ttl and
    leave it when they end, and scopes unused for ``idle_ttl`` (session scopes:
    ``session_ttl``) are dropped once nothing in them counts.
    """

    schemes = ("memory",)
    does_io = False
    url_options = {
        "read_only": lambda text: text.strip().lower() in ("1", "true", "yes", "on"),
        "ledger_size": lambda text: _size("ledger_size", _int_option("ledger_size", text)),
        "events_size": lambda text: _size("events_size", _int_option("events_size", text)),
        "max_tombstones": lambda text: _size("max_tombstones", _int_option("max_tombstones", text)),
    }

    @staticmethod
    def ledger_entry(record: UsageRecord) -> Any:
        return record  # kept as is, made a row only when read

    def __init__(
        self,
        options: StoreOptions | None = None,
        *,
        ledger_size: int = 10_000,
        events_size: int = 1_000,
        max_tombstones: int = 10_000,
        **kwargs: Any,
    ) -> None:
        self.options = make_options(options, kwargs)
        self._ledger: deque[Mapping[str, Any] | UsageRecord] = deque(
            maxlen=_size("ledger_size", ledger_size)
        )
        self._events: deque[dict[str, Any]] = deque(maxlen=_size("events_size", events_size))
        self._event_counts: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()
        self._scopes: dict[str, Scope] = {}
        self._gen = 0  # bumped when a scope is dropped: prepared lines re-resolve
        # (earliest drop time, tie-breaker, name, scope): one entry per expiring scope,
        # re-queued lazily when it turns out to be still in use.
        self._idle: list[tuple[float, int, str, Scope]] = []
        self._seq = itertools.count()
        self._holds: dict[str, Hold] = {}
        # Live holds by ttl, in expiry order (a hold leaves its queue when it ends); holds
        # out of order (the clock stepped back) wait in a heap instead.
        self._queues: dict[float, Queue] = {}
        self._late: list[tuple[float, int, str]] = []
        self._finished = Finished(
            self.options.tombstone_ttl, max(1, _size("max_tombstones", max_tombstones))
        )
        self._due = math.inf  # no expiry work is due before this time
        self._defs: dict[str, dict[str, Any]] = {}  # name -> its definition, or a _Shape
        self._shapes: dict[str, _Shape] = {}
        cls = type(self)
        # The prepared fast path only where reserve / commit / release are this class's
        # own: a subclass that wraps them (to fail, to count) must see every call.
        self._fast = (
            cls.reserve is MemoryStore.reserve
            and cls.commit is MemoryStore.commit
            and cls.release is MemoryStore.release
        )

    @classmethod
    def _open(cls, location: StoreURL, options: dict[str, Any]) -> Store:
        if location.netloc or location.path.strip("/"):
            raise StoreConfigError(f"memory:// takes no host or path, got {location.text!r}")
        options.pop("read_only", None)  # a new memory store is empty: nothing to write
        return cls(**options)

    # -- internals (lock held) -------------------------------------------------------------

    def _counters(self, scope: str, now: float) -> dict[str, Counter]:
        entry = self._scopes.get(scope)
        if entry is None:
            check_text("scope name", scope)
            ttl = self.options.scope_ttl(scope)
            entry = self._scopes[scope] = Scope(ttl, now)
            if ttl is not None:
                heapq.heappush(self._idle, (now + ttl, next(self._seq), scope, entry))
                if now + ttl < self._due:
                    self._due = now + ttl
        elif entry.ttl is not None and now > entry.touched:
            entry.touched = now
        return entry.counters

    def _counters_for(self, lines: Sequence[Line], now: float) -> list[Counter]:
        out = []
        scope = None
        counters: dict[str, Counter] = {}
        for line in lines:
            if line[0] != scope:  # lines mostly come grouped by scope
                scope = line[0]
                counters = self._counters(scope, now)
            counter = counters.get(line[1])
            if counter is None:
                metric = check_text("metric", line[1])
                counter = counters[metric] = new_counter(window_of(metric, self.options))
            if line[4] is not None and counter.buckets is not None:
                raise ValueError(f"a rolling window ({line[1]!r}) cannot carry a period")
            out.append(counter)
        return out

    def _levels(
        self, counters: list[Counter], lines: Sequence[Line], now: float
    ) -> tuple[Level, ...]:
        return tuple(
            [
                new_tuple(
                    Level,
                    (
                        (c.total if c.buckets is None else c.committed(now))
                        if line[4] is None
                        else current(c, line[4], now),
                        c.reserved,
                    ),
                )
                for c, line in zip(counters, lines, strict=True)
            ]
        )

    def _reap(self, now: float) -> None:
        """Drop what expired by ``now``; callers skip it while ``now < self._due``."""
        due = self._finished.expire(now)
        for ttl, queue in list(self._queues.items()):
            while queue:
                hold_id, hold = next(iter(queue.items()))
                if hold.expires_at > now:
                    due = min(due, hold.expires_at)
                    break
                self._drop_hold(hold_id, hold)
            if not queue:
                del self._queues[ttl]
        late = self._late
        while late and late[0][0] <= now:
            _, _, late_id = heapq.heappop(late)
            found = self._holds.get(late_id)
            if found is not None and found.queue is None and found.expires_at <= now:
                self._drop_hold(late_id, found)
        if late:
            due = min(due, late[0][0])
        scopes = self._scopes
        idle = self._idle
        while idle and idle[0][0] <= now:
            _, _, name, scope = heapq.heappop(idle)
            if scopes.get(name) is not scope:
                continue  # dropped (and perhaps made again, with its own entry)
            assert scope.ttl is not None
            when = scope.touched + scope.ttl
            if when <= now:
                busy = busy_until(scope, now)
                if busy is None:
                    del scopes[name]
                    self._gen += 1
                    continue
                when = busy
            heapq.heappush(idle, (when, next(self._seq), name, scope))
        if idle:
            due = min(due, idle[0][0])
        self._due = due

    def _hold(
        self, hold_id: str, entries: list[tuple[Counter, int]], now: float, ttl: float
    ) -> None:
        expires_at = now + ttl
        queue = self._queues.get(ttl)
        if queue is None:
            queue = self._queues[ttl] = Queue()
        if expires_at >= queue.last:
            queue.last = expires_at
            queue[hold_id] = self._holds[hold_id] = Hold(entries, expires_at, queue)
        else:  # the clock stepped back: this one expires before some queued
            self._holds[hold_id] = Hold(entries, expires_at, None)
            heapq.heappush(self._late, (expires_at, next(self._seq), hold_id))
        if expires_at < self._due:
            self._due = expires_at

    def _drop_hold(self, hold_id: str, hold: Hold) -> None:
        del self._holds[hold_id]
        if hold.queue is not None:
            del hold.queue[hold_id]
        for counter, amount in hold.entries:
            counter.reserved -= amount

    def _finish(self, hold_id: str, committed: bool, now: float) -> None:
        expires = self._finished.add(hold_id, committed, now)
        if expires < self._due:
            self._due = expires

    def _replayed(
        self, hold: Hold, counters: list[Counter], lines: Sequence[Line], now: float
    ) -> ReserveResult | None:
        """The answer to a repeated reserve of a live hold with the same lines (levels as
        before that hold), or None if the lines differ."""
        if [(id(c), amount) for c, amount in hold.entries] != [
            (id(c), line[2]) for c, line in zip(counters, lines, strict=True)
        ]:
            return None
        own: dict[int, int] = {}
        for counter, amount in hold.entries:
            own[id(counter)] = own.get(id(counter), 0) + amount
        return ReserveResult(
            True,
            tuple(
                Level(current(c, line[4], now), c.reserved - own[id(c)])
                for c, line in zip(counters, lines, strict=True)
            ),
        )

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
        lock = self._lock
        if not lock.acquire(False):
            wait_for(lock)
        try:
            if now >= self._due:
                self._reap(now)
            counters = self._counters_for(lines, now)
            if not dry_run and (
                hold_id in self._holds or self._finished.state(hold_id) is not None
            ):
                held = self._holds.get(hold_id)
                replay = None if held is None else self._replayed(held, counters, lines, now)
                if replay is not None:
                    return replay  # a client retry after a lost reply: held once
                raise ValueError(f"hold id {hold_id!r} is already in use")
            levels = self._levels(counters, lines, now)
            for index, (line, level) in enumerate(zip(lines, levels, strict=True)):
                limit = line[3]
                if limit is not None and level[0] + level[1] + line[2] > limit:
                    return ReserveResult(False, levels, index)
            if not dry_run:
                entries = []
                for counter, line in zip(counters, lines, strict=True):
                    if line[4] is not None:
                        advance(counter, line[4])
                    counter.reserved += line[2]
                    entries.append((counter, line[2]))
                self._hold(hold_id, entries, now, ttl)
            return ReserveResult(True, levels)
        finally:
            lock.release()

    def commit(
        self,
        hold_id: str,
        lines: Sequence[Line],
        *,
        now: float,
        group: str,
        record: Mapping[str, Any] | None = None,
    ) -> CommitResult:
        lock = self._lock
        if not lock.acquire(False):
            wait_for(lock)
        try:
            if now >= self._due:
                self._reap(now)
            counters = self._counters_for(lines, now)
            hold = self._holds.get(hold_id)
            if hold is not None:
                self._drop_hold(hold_id, hold)
            applied = not self._finished.state(hold_id)  # new, or released before
            if applied:
                for counter, line in zip(counters, lines, strict=True):
                    if line[4] is not None:
                        advance(counter, line[4])
                    if counter.buckets is None:
                        counter.total += line[2]
                    else:
                        counter.add(line[2], now)
                self._finish(hold_id, True, now)
                if record is not None:
                    self._ledger.append(record)
            return CommitResult(applied, self._levels(counters, lines, now))
        finally:
            lock.release()

    def release(self, hold_id: str, *, now: float, group: str) -> bool:
        lock = self._lock
        if not lock.acquire(False):
            wait_for(lock)
        try:
            if now >= self._due:
                self._reap(now)
            hold = self._holds.get(hold_id)
            if hold is None:
                return False
            self._drop_hold(hold_id, hold)
            if self._finished.state(hold_id) is None:
                self._finish(hold_id, False, now)
            return True
        finally:
            lock.release()

    def read(
        self,
        scope: str,
        *,
        now: float,
        group: str,
        periods: Mapping[str, int] | None = None,
    ) -> dict[str, Level]:
        with self._lock:
            if now >= self._due:
                self._reap(now)
            entry = self._scopes.get(scope)
            if entry is None:
                return {}
            out = {}
            for metric, counter in entry.counters.items():
                period = periods.get(metric) if periods else None
                level = Level(current(counter, period, now), counter.reserved)
                if level.committed or level.reserved:
                    out[metric] = level
            return out

    def reset(self, scope: str, prefix: str, *, now: float, group: str) -> None:
        with self._lock:
            entry = self._scopes.get(scope)
            if entry is None:
                return
            for metric, counter in entry.counters.items():
                if metric.startswith(prefix):
                    counter.clear()

    def save_scope(self, name: str, data: Mapping[str, Any]) -> None:
        # Scopes made from one template differ only by name: they share one copy of the
        # rest (kept without "name"; load_scopes puts it back).
        kept = dict(data)
        shared = None
        if kept.get("name") == name:
            kept.pop("name")
            try:
                key = json.dumps(kept, sort_keys=True, separators=(",", ":"))
            except (TypeError, ValueError):
                key = None
            if key is not None:
                shared = self._shapes.get(key)
                if shared is None:
                    if len(self._shapes) >= 1024:
                        self._shapes.clear()
                    shared = self._shapes[key] = _Shape(kept)
        with self._lock:
            self._defs[name] = shared if shared is not None else dict(data)

    def load_scopes(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {
                k: {"name": k, **v} if v.__class__ is _Shape else dict(v)
                for k, v in self._defs.items()
            }

    def delete_scope(self, name: str) -> None:
        with self._lock:
            self._defs.pop(name, None)

    # -- the ledger and events: bounded rings ------------------------------------------------

    def ledger(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        scope: str | Iterable[str] | None = None,
        session: str | None = None,
        model: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[dict[str, Any]]:
        wanted = LedgerFilter.of(
            since=since, until=until, scope=scope, session=session, model=model
        )
        check_limit(limit)
        with self._lock:
            kept = sorted(self._ledger, key=_timestamp, reverse=newest_first)
        rows = (ledger_row(_payload(entry)) for entry in kept)
        return list(islice((row for row in rows if wanted.matches(row)), limit))

    def record_event(self, event: Mapping[str, Any], *, group: str) -> None:
        row = event_row(event)
        with self._lock:
            self._events.append(row)
            kinds = self._event_counts.setdefault(row["scope"], {})
            kinds[row["kind"]] = kinds.get(row["kind"], 0) + 1

    def events(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        scope: str | Iterable[str] | None = None,
        kinds: Collection[str] | None = None,
        limit: int | None = None,
        newest_first: bool = True,
    ) -> list[dict[str, Any]]:
        wanted = EventFilter.of(since=since, until=until, scope=scope, kinds=kinds)
        check_limit(limit)
        with self._lock:
            kept = list(self._events)
        rows = reversed(kept) if newest_first else iter(kept)
        return [dict(row) for row in islice((r for r in rows if wanted.matches(r)), limit)]

    def event_counts(
        self, *, scope: str | Iterable[str] | None = None
    ) -> dict[str, dict[str, int]]:
        wanted = EventFilter.of(scope=scope).scopes
        with self._lock:
            return {
                name: dict(kinds)
                for name, kinds in self._event_counts.items()
                if wanted is None or name in wanted
            }

    def stats(self) -> dict[str, int]:
        """Sizes of the internal tables, for memory tests and benchmarks."""
        with self._lock:
            scopes = self._scopes
            return {
                "scopes": len(scopes),
                "expiring": sum(1 for s in scopes.values() if s.ttl is not None),
                "counters": sum(len(s.counters) for s in scopes.values()),
                "buckets": sum(
                    len(counter.buckets) // 2
                    for s in scopes.values()
                    for counter in s.counters.values()
                    if counter.buckets is not None
                ),
                "idle_queue": len(self._idle),
                "holds": len(self._holds),
                "hold_heap": sum(len(q) for q in self._queues.values()) + len(self._late),
                "tombstones": len(self._finished),
                "ledger": len(self._ledger),
                "events": len(self._events),
            }


class _Shape(dict[str, Any]):
    """A scope definition without its name, shared by the scopes one template made."""

    __slots__ = ()


def _timestamp(record: Mapping[str, Any] | UsageRecord) -> float:
    if isinstance(record, UsageRecord):
        return record.timestamp
    return float(record.get("timestamp", 0.0))


def _payload(record: Mapping[str, Any] | UsageRecord) -> Mapping[str, Any]:
    return record_payload(record) if isinstance(record, UsageRecord) else record


def _int_option(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise StoreConfigError(f"option {name} must be a number, got {text!r}") from None


def _size(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StoreConfigError(f"{name} must be a non-negative int, got {value!r}")
    return value
