"""MemoryStore: the in-process default, one lock over plain dicts, lazy expiry throughout."""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from itertools import islice
from typing import Any

from ..errors import StoreConfigError
from ..records import UsageRecord, record_payload
from .base import (
    PERIOD_HORIZON,
    CommitResult,
    Level,
    Line,
    ReserveResult,
    Store,
    StoreOptions,
    StoreURL,
    bucket_start,
    check_text,
    make_options,
    new_tuple,
    window_of,
)
from .ledger import EventFilter, LedgerFilter, check_limit, event_row, ledger_row

__all__ = ["MemoryStore"]

# How soon a scope kept past its idle time because it still holds budget is looked at again.
_HELD_RECHECK = 60.0


class _Counter:
    """A plain total, or a rolling sum over fixed buckets (``buckets`` is not None).

    ``period`` is the calendar period a plain total counts (None: no period yet).
    """

    __slots__ = ("bucket", "buckets", "period", "reserved", "total", "window")

    def __init__(self, span: tuple[int, int] | None) -> None:
        self.total = 0
        self.reserved = 0
        self.period: int | None = None
        if span is None:
            self.buckets: deque[list[int]] | None = None
            self.window = self.bucket = 0
        else:
            self.buckets = deque()
            self.window, self.bucket = span

    def committed(self, now: float) -> int:
        buckets = self.buckets
        if buckets is not None:
            horizon = now - self.window - self.bucket
            while buckets and buckets[0][0] <= horizon:
                self.total -= buckets.popleft()[1]
        return self.total

    def add(self, amount: int, now: float) -> None:
        buckets = self.buckets
        if buckets is not None:
            self.committed(now)
            start = bucket_start(now, self.bucket)
            if buckets and buckets[-1][0] >= start:
                # The current bucket, or a clock that stepped back: merge into the newest
                # bucket, never lose it.
                buckets[-1][1] += amount
            else:
                buckets.append([start, amount])
        self.total += amount

    def clear(self) -> None:
        self.total = 0
        if self.buckets is not None:
            self.buckets.clear()


class _Scope:
    """One scope's counters and, when it can expire, its last use and idle ttl."""

    __slots__ = ("counters", "touched", "ttl")

    def __init__(self, ttl: float | None, now: float) -> None:
        self.counters: dict[str, _Counter] = {}
        self.ttl = ttl
        self.touched = now


class _Hold:
    __slots__ = ("entries", "expires_at")

    def __init__(self, entries: list[tuple[_Counter, int]], expires_at: float) -> None:
        self.entries = entries
        self.expires_at = expires_at


def _current(counter: _Counter, period: int | None, now: float) -> int:
    """The counter's committed value in the period a line with ``period`` counts in."""
    if period is not None and (counter.period is None or period > counter.period):
        return 0  # a newer period starts from zero
    return counter.total if counter.buckets is None else counter.committed(now)


def _advance(counter: _Counter, period: int | None) -> None:
    """Move a counter to a newer period a line brings (its committed value restarts)."""
    if period is not None and (counter.period is None or period > counter.period):
        counter.period = period
        counter.total = 0


class MemoryStore(Store):
    """Budget state in this process's memory: fast, exact, gone when the process ends.

    Memory stays bounded: windows keep at most ``window/bucket + 2`` buckets per counter,
    finished hold ids are forgotten after ``tombstone_ttl``, and scopes unused for
    ``idle_ttl`` (session scopes: ``session_ttl``) are dropped once nothing in them counts.
    """

    schemes = ("memory",)
    does_io = False
    url_options = {
        "read_only": lambda text: text.strip().lower() in ("1", "true", "yes", "on"),
        "ledger_size": lambda text: _size("ledger_size", _int_option("ledger_size", text)),
        "events_size": lambda text: _size("events_size", _int_option("events_size", text)),
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
        **kwargs: Any,
    ) -> None:
        self.options = make_options(options, kwargs)
        self._ledger: deque[Mapping[str, Any] | UsageRecord] = deque(
            maxlen=_size("ledger_size", ledger_size)
        )
        self._events: deque[dict[str, Any]] = deque(maxlen=_size("events_size", events_size))
        self._event_counts: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()
        self._scopes: dict[str, _Scope] = {}
        # (earliest drop time, tie-breaker, name, scope): one entry per expiring scope,
        # re-queued lazily when it turns out to be still in use.
        self._idle: list[tuple[float, int, str, _Scope]] = []
        self._seq = itertools.count()
        self._holds: dict[str, _Hold] = {}
        self._hold_expiry: list[tuple[float, str]] = []
        self._done: dict[str, tuple[str, float]] = {}
        self._done_expiry: deque[tuple[float, str]] = deque()
        self._defs: dict[str, dict[str, Any]] = {}

    @classmethod
    def _open(cls, location: StoreURL, options: dict[str, Any]) -> Store:
        if location.netloc or location.path.strip("/"):
            raise StoreConfigError(f"memory:// takes no host or path, got {location.text!r}")
        options.pop("read_only", None)  # a new memory store is empty: nothing to write
        return cls(**options)

    # -- internals (lock held) -------------------------------------------------------------

    def _counters(self, scope: str, now: float) -> dict[str, _Counter]:
        entry = self._scopes.get(scope)
        if entry is None:
            check_text("scope name", scope)
            ttl = self.options.scope_ttl(scope)
            entry = self._scopes[scope] = _Scope(ttl, now)
            if ttl is not None:
                heapq.heappush(self._idle, (now + ttl, next(self._seq), scope, entry))
        elif entry.ttl is not None and now > entry.touched:
            entry.touched = now
        return entry.counters

    def _counters_for(self, lines: Sequence[Line], now: float) -> list[_Counter]:
        out = []
        scope = None
        counters: dict[str, _Counter] = {}
        for line in lines:
            if line[0] != scope:  # lines mostly come grouped by scope
                scope = line[0]
                counters = self._counters(scope, now)
            counter = counters.get(line[1])
            if counter is None:
                metric = check_text("metric", line[1])
                counter = counters[metric] = _Counter(window_of(metric, self.options))
            if line[4] is not None and counter.buckets is not None:
                raise ValueError(f"a rolling window ({line[1]!r}) cannot carry a period")
            out.append(counter)
        return out

    def _levels(
        self, counters: list[_Counter], lines: Sequence[Line], now: float
    ) -> tuple[Level, ...]:
        return tuple(
            [
                new_tuple(
                    Level,
                    (
                        (c.total if c.buckets is None else c.committed(now))
                        if line[4] is None
                        else _current(c, line[4], now),
                        c.reserved,
                    ),
                )
                for c, line in zip(counters, lines, strict=True)
            ]
        )

    def _reap(self, now: float) -> None:
        expiry = self._hold_expiry
        done = self._done_expiry
        idle = self._idle
        if (
            (not expiry or expiry[0][0] > now)
            and (not done or done[0][0] > now)
            and (not idle or idle[0][0] > now)
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
        scopes = self._scopes
        while idle and idle[0][0] <= now:
            _, _, name, scope = heapq.heappop(idle)
            if scopes.get(name) is not scope:
                continue  # dropped (and perhaps made again, with its own entry)
            assert scope.ttl is not None
            due = scope.touched + scope.ttl
            if due <= now:
                busy = self._busy_until(scope, now)
                if busy is None:
                    del scopes[name]
                    continue
                due = busy
            heapq.heappush(idle, (due, next(self._seq), name, scope))

    @staticmethod
    def _busy_until(scope: _Scope, now: float) -> float | None:
        """None when nothing in an idle scope still counts (it may go), else when to look
        again: a live hold, a window with usage inside it, a recent period counter."""
        until: float | None = None
        for counter in scope.counters.values():
            if counter.reserved:
                assert scope.ttl is not None
                when = now + min(scope.ttl, _HELD_RECHECK)
            elif counter.buckets is not None:
                counter.committed(now)
                if not counter.buckets:
                    continue
                when = counter.buckets[-1][0] + counter.window + counter.bucket
            elif (
                counter.period is not None
                and counter.total
                and counter.period + PERIOD_HORIZON > now
            ):
                when = counter.period + PERIOD_HORIZON
            else:
                continue
            if until is None or when > until:
                until = when
        return until

    def _drop_hold(self, hold_id: str, hold: _Hold) -> None:
        del self._holds[hold_id]
        for counter, amount in hold.entries:
            counter.reserved -= amount

    def _finish(self, hold_id: str, state: str, now: float) -> None:
        expires = now + self.options.tombstone_ttl
        self._done[hold_id] = (state, expires)
        self._done_expiry.append((expires, hold_id))

    def _replayed(
        self, hold: _Hold, counters: list[_Counter], lines: Sequence[Line], now: float
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
                Level(_current(c, line[4], now), c.reserved - own[id(c)])
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
        with self._lock:
            self._reap(now)
            counters = self._counters_for(lines, now)
            if not dry_run and (hold_id in self._holds or hold_id in self._done):
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
                        _advance(counter, line[4])
                    counter.reserved += line[2]
                    entries.append((counter, line[2]))
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
        with self._lock:
            self._reap(now)
            counters = self._counters_for(lines, now)
            hold = self._holds.get(hold_id)
            if hold is not None:
                self._drop_hold(hold_id, hold)
            done = self._done.get(hold_id)
            applied = done is None or done[0] == "released"
            if applied:
                for counter, line in zip(counters, lines, strict=True):
                    if line[4] is not None:
                        _advance(counter, line[4])
                    if counter.buckets is None:
                        counter.total += line[2]
                    else:
                        counter.add(line[2], now)
                self._finish(hold_id, "committed", now)
                if record is not None:
                    self._ledger.append(record)
            return CommitResult(applied, self._levels(counters, lines, now))

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

    def read(
        self,
        scope: str,
        *,
        now: float,
        group: str,
        periods: Mapping[str, int] | None = None,
    ) -> dict[str, Level]:
        with self._lock:
            self._reap(now)
            entry = self._scopes.get(scope)
            if entry is None:
                return {}
            out = {}
            for metric, counter in entry.counters.items():
                period = periods.get(metric) if periods else None
                level = Level(_current(counter, period, now), counter.reserved)
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

    # No I/O here: the async forms answer inline, as fast as the sync ones.

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

    def save_scope(self, name: str, data: Mapping[str, Any]) -> None:
        with self._lock:
            self._defs[name] = dict(data)

    def load_scopes(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: dict(v) for k, v in self._defs.items()}

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
                    len(counter.buckets)
                    for s in scopes.values()
                    for counter in s.counters.values()
                    if counter.buckets is not None
                ),
                "idle_queue": len(self._idle),
                "holds": len(self._holds),
                "hold_heap": len(self._hold_expiry),
                "tombstones": len(self._done),
                "ledger": len(self._ledger),
                "events": len(self._events),
            }


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
