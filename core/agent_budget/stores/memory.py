"""MemoryStore: the in-process default, one lock over plain dicts, lazy expiry throughout."""

from __future__ import annotations

import heapq
import itertools
import math
import threading
from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from itertools import islice
from typing import Any
from urllib.parse import SplitResult

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
    bucket_start,
    check_text,
    new_tuple,
    window_of,
)
from .ledger import EventFilter, LedgerFilter, check_limit, event_row, ledger_row

__all__ = ["MemoryStore", "Prepared"]

# How soon a scope kept past its idle time because it still holds budget is looked at again.
_HELD_RECHECK = 60.0


class _Counter:
    """A plain total, or a rolling sum over fixed buckets (``buckets`` is not None).

    ``period`` is the calendar period a plain total counts (None: no period yet). A window
    keeps ``check_at`` (no bucket leaves it before then) and ``open_until`` (an amount added
    before then goes into the newest bucket), so most adds and reads skip the bucket math.
    """

    __slots__ = (
        "bucket",
        "buckets",
        "check_at",
        "open_until",
        "period",
        "reserved",
        "total",
        "window",
    )

    def __init__(self, span: tuple[int, int] | None) -> None:
        self.total = 0
        self.reserved = 0
        self.period: int | None = None
        self.check_at = self.open_until = -math.inf
        if span is None:
            self.buckets: deque[list[int]] | None = None
            self.window = self.bucket = 0
        else:
            self.buckets = deque()
            self.window, self.bucket = span
            self.check_at = math.inf

    def committed(self, now: float) -> int:
        buckets = self.buckets
        if buckets is not None and now >= self.check_at:
            horizon = now - self.window - self.bucket
            while buckets and buckets[0][0] <= horizon:
                self.total -= buckets.popleft()[1]
            # A second early, so float rounding never skips a bucket that is due.
            self.check_at = buckets[0][0] + self.window + self.bucket - 1 if buckets else math.inf
        return self.total

    def add(self, amount: int, now: float) -> None:
        buckets = self.buckets
        if buckets is not None:
            if now >= self.check_at:
                self.committed(now)
            if buckets and now < self.open_until:
                # The current bucket, or a clock that stepped back: merge into the newest
                # bucket, never lose it.
                buckets[-1][1] += amount
            else:
                start = bucket_start(now, self.bucket)
                if buckets and buckets[-1][0] >= start:
                    buckets[-1][1] += amount
                else:
                    buckets.append([start, amount])
                    self.open_until = start + self.bucket
                    if len(buckets) == 1:
                        self.check_at = start + self.window + self.bucket - 1
        self.total += amount

    def clear(self) -> None:
        self.total = 0
        if self.buckets is not None:
            self.buckets.clear()
            self.check_at = math.inf
            self.open_until = -math.inf


class _Scope:
    """One scope's counters and, when it can expire, its last use and idle ttl."""

    __slots__ = ("counters", "touched", "ttl")

    def __init__(self, ttl: float | None, now: float) -> None:
        self.counters: dict[str, _Counter] = {}
        self.ttl = ttl
        self.touched = now


class _Hold:
    """A live hold: what it holds on which counters, until when, and its expiry queue."""

    __slots__ = ("entries", "expires_at", "queue")

    def __init__(
        self,
        entries: list[tuple[_Counter, int]],
        expires_at: float,
        queue: _Queue | None,
    ) -> None:
        self.entries = entries
        self.expires_at = expires_at
        self.queue = queue


class _Queue(dict[str, _Hold]):
    """Live holds of one ttl, in expiry order, and the latest expiry queued (``last``)."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        super().__init__()
        self.last = -math.inf


class _Stamp:
    """When the finished hold ids added in one short span are forgotten, and how they
    finished; one is shared by every id of that span, so an id costs no object of its own."""

    __slots__ = ("committed", "expires")

    def __init__(self, expires: float, committed: bool) -> None:
        self.expires = expires
        self.committed = committed


_KEY_MASK = (1 << 60) - 1


class _Finished:
    """Hold ids committed or released lately (tombstones), so a repeated commit counts once.

    Each id is kept as a fixed-size 60-bit key (its string hash: a new id is mistaken for a
    finished one with odds of about ``count / 2**60``, under 1e-14 at the default bound) in
    a dict whose values are shared :class:`_Stamp` objects, plus one FIFO of keys: about 90
    bytes an id. Ids are forgotten ``ttl`` to ``ttl + slack`` seconds after they finished,
    and the oldest first once more than ``limit`` are kept.
    """

    __slots__ = ("committed_stamp", "limit", "order", "released_stamp", "slack", "states", "ttl")

    def __init__(self, ttl: float, limit: int) -> None:
        self.ttl = ttl
        self.limit = limit
        self.slack = min(1.0, ttl / 8)
        self.states: dict[int, _Stamp] = {}
        self.order: deque[int] = deque()
        self.committed_stamp = _Stamp(-math.inf, True)
        self.released_stamp = _Stamp(-math.inf, False)

    def state(self, hold_id: str) -> bool | None:
        """True: committed; False: released; None: not finished lately."""
        stamp = self.states.get(hash(hold_id) & _KEY_MASK)
        return None if stamp is None else stamp.committed

    def new_stamp(self, now: float, committed: bool) -> _Stamp:
        """The stamp ids finishing from ``now`` on share (until it would expire too soon)."""
        stamp = _Stamp(now + self.ttl + self.slack, committed)
        if committed:
            self.committed_stamp = stamp
        else:
            self.released_stamp = stamp
        return stamp

    def add(self, hold_id: str, committed: bool, now: float) -> float:
        """Remember ``hold_id`` as finished at ``now``; returns when it may be forgotten."""
        stamp = self.committed_stamp if committed else self.released_stamp
        if now + self.ttl > stamp.expires:
            stamp = self.new_stamp(now, committed)
        key = hash(hold_id) & _KEY_MASK
        states = self.states
        if key not in states:
            self.order.append(key)
        # A released id committed later keeps its place but takes the newer stamp: it is
        # forgotten no earlier than its commit says (others behind it may wait as long).
        states[key] = stamp
        if len(states) > self.limit:
            del states[self.order.popleft()]
        return stamp.expires

    def expire(self, now: float) -> float:
        """Forget ids whose time is up; returns when the next one may be (inf: none)."""
        order, states = self.order, self.states
        while order:
            stamp = states[order[0]]
            if stamp.expires > now:
                return stamp.expires
            del states[order.popleft()]
        return math.inf

    def __len__(self) -> int:
        return len(self.states)


class Prepared:
    """Lines of one fixed shape, resolved to their counters once (see
    :meth:`MemoryStore.prepare`): each is ``(scope, metric)``, which of a call's amounts it
    takes, and its limit. Re-resolved after idle expiry dropped any scope."""

    __slots__ = ("checked", "gen", "keys", "limits", "report", "rows", "timed", "which")

    def __init__(
        self,
        keys: tuple[tuple[str, str], ...],
        which: tuple[int, ...],
        limits: tuple[int | None, ...],
        report: tuple[int, ...],
    ) -> None:
        self.keys = keys
        self.which = which
        self.limits = limits
        self.report = report
        self.gen = -1
        self.rows: list[tuple[_Counter, int, int | None]] = []
        self.checked: list[tuple[_Counter, int, int]] = []
        self.timed: list[_Scope] = []


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
    finished hold ids are forgotten after ``tombstone_ttl`` (and the oldest first beyond
    ``max_tombstones``: a repeated commit comes seconds after the first, and in one process
    only from code that reuses an id), live holds sit in one expiry queue per hold ttl and
    leave it when they end, and scopes unused for ``idle_ttl`` (session scopes:
    ``session_ttl``) are dropped once nothing in them counts.
    """

    schemes = ("memory",)
    does_io = False

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
        self.options = options or StoreOptions(**kwargs)
        self._ledger: deque[Mapping[str, Any] | UsageRecord] = deque(
            maxlen=_size("ledger_size", ledger_size)
        )
        self._events: deque[dict[str, Any]] = deque(maxlen=_size("events_size", events_size))
        self._event_counts: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()
        self._scopes: dict[str, _Scope] = {}
        self._gen = 0  # bumped when a scope is dropped: prepared lines re-resolve
        # (earliest drop time, tie-breaker, name, scope): one entry per expiring scope,
        # re-queued lazily when it turns out to be still in use.
        self._idle: list[tuple[float, int, str, _Scope]] = []
        self._seq = itertools.count()
        self._holds: dict[str, _Hold] = {}
        # Live holds by ttl, in expiry order (a hold leaves its queue when it ends); holds
        # out of order (the clock stepped back) wait in a heap instead.
        self._queues: dict[float, _Queue] = {}
        self._late: list[tuple[float, int, str]] = []
        self._finished = _Finished(
            self.options.tombstone_ttl, max(1, _size("max_tombstones", max_tombstones))
        )
        self._due = math.inf  # no expiry work is due before this time
        self._defs: dict[str, dict[str, Any]] = {}
        cls = type(self)
        # The prepared fast path only where reserve / commit / release are this class's
        # own: a subclass that wraps them (to fail, to count) must see every call.
        self._fast = (
            cls.reserve is MemoryStore.reserve
            and cls.commit is MemoryStore.commit
            and cls.release is MemoryStore.release
        )

    @classmethod
    def _from_url(cls, url: str, parsed: SplitResult, **options: Any) -> Store:
        if parsed.netloc or parsed.path.strip("/"):
            raise StoreConfigError(f"memory:// takes no host or path, got {url!r}")
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
                if now + ttl < self._due:
                    self._due = now + ttl
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
                new_tuple(Level, (_current(c, line[4], now), c.reserved))
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
                busy = self._busy_until(scope, now)
                if busy is None:
                    del scopes[name]
                    self._gen += 1
                    continue
                when = busy
            heapq.heappush(idle, (when, next(self._seq), name, scope))
        if idle:
            due = min(due, idle[0][0])
        self._due = due

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

    def _hold(
        self, hold_id: str, entries: list[tuple[_Counter, int]], now: float, ttl: float
    ) -> None:
        expires_at = now + ttl
        queue = self._queues.get(ttl)
        if queue is None:
            queue = self._queues[ttl] = _Queue()
        if expires_at >= queue.last:
            queue.last = expires_at
            queue[hold_id] = self._holds[hold_id] = _Hold(entries, expires_at, queue)
        else:  # the clock stepped back: this one expires before some queued
            self._holds[hold_id] = _Hold(entries, expires_at, None)
            heapq.heappush(self._late, (expires_at, next(self._seq), hold_id))
        if expires_at < self._due:
            self._due = expires_at

    def _drop_hold(self, hold_id: str, hold: _Hold) -> None:
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
                    _advance(counter, line[4])
                    counter.reserved += line[2]
                    entries.append((counter, line[2]))
                self._hold(hold_id, entries, now, ttl)
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
            if now >= self._due:
                self._reap(now)
            counters = self._counters_for(lines, now)
            hold = self._holds.get(hold_id)
            if hold is not None:
                self._drop_hold(hold_id, hold)
            applied = not self._finished.state(hold_id)  # new, or released before
            if applied:
                for counter, line in zip(counters, lines, strict=True):
                    _advance(counter, line[4])
                    if counter.buckets is None:
                        counter.total += line[2]
                    else:
                        counter.add(line[2], now)
                self._finish(hold_id, True, now)
                if record is not None:
                    self._ledger.append(record)
            return CommitResult(applied, self._levels(counters, lines, now))

    def release(self, hold_id: str, *, now: float, group: str) -> bool:
        with self._lock:
            if now >= self._due:
                self._reap(now)
            hold = self._holds.get(hold_id)
            if hold is None:
                return False
            self._drop_hold(hold_id, hold)
            if self._finished.state(hold_id) is None:
                self._finish(hold_id, False, now)
            return True

    # -- prepared lines: the same operations without building lines --------------------------

    def prepare(
        self,
        keys: Sequence[tuple[str, str]],
        which: Sequence[int],
        limits: Sequence[int | None],
        report: Sequence[int] = (),
    ) -> Prepared | None:
        """Lines of a fixed shape for :meth:`hold_prepared` / :meth:`commit_prepared`:
        line ``i`` is counter ``keys[i]`` (scope, metric), takes ``amounts[which[i]]`` of a
        call and is capped at ``limits[i]``; ``report`` picks the lines whose committed
        totals a commit returns. None where the fast path does not apply (a subclass that
        wraps the operations)."""
        if not self._fast:
            return None
        if not len(keys) == len(which) == len(limits):
            raise ValueError("keys, which and limits must have one entry per line")
        for scope, metric in keys:
            check_text("scope name", scope)
            check_text("metric", metric)
            window_of(metric, self.options)  # a malformed roll: metric fails here
        return Prepared(tuple(keys), tuple(which), tuple(limits), tuple(report))

    def _resolve(self, prepared: Prepared, now: float) -> None:
        """Find (or make) the counters of ``prepared``, as a first use of its scopes."""
        lines = [new_tuple(Line, (scope, metric, 0, None, None)) for scope, metric in prepared.keys]
        counters = self._counters_for(lines, now)
        rows = list(zip(counters, prepared.which, prepared.limits, strict=True))
        prepared.rows = rows
        prepared.checked = [(c, w, lim) for c, w, lim in rows if lim is not None]
        scopes = self._scopes
        prepared.timed = [
            entry
            for entry in {scopes[scope] for scope, _ in prepared.keys}
            if entry.ttl is not None
        ]
        prepared.gen = self._gen

    @staticmethod
    def _touch(prepared: Prepared, now: float) -> None:
        for entry in prepared.timed:
            if now > entry.touched:
                entry.touched = now

    def hold_prepared(
        self,
        hold_id: str,
        prepared: Prepared,
        amounts: Sequence[int],
        periods: Sequence[int | None] | None,
        *,
        now: float,
        ttl: float,
    ) -> bool:
        """:meth:`reserve` of ``prepared``'s lines with a call's ``amounts``: True when held.
        False when it was not held (a line over its limit, an id in use): call
        :meth:`reserve` for the whole answer."""
        with self._lock:
            if now >= self._due:
                self._reap(now)
            if prepared.gen != self._gen:
                self._resolve(prepared, now)
            elif prepared.timed:
                self._touch(prepared, now)
            if hold_id in self._holds or hash(hold_id) & _KEY_MASK in self._finished.states:
                return False
            entries = []
            if periods is None:
                for counter, which, limit in prepared.checked:
                    if counter.buckets is None or now < counter.check_at:
                        used = counter.total
                    else:
                        used = counter.committed(now)
                    if used + counter.reserved + amounts[which] > limit:
                        return False
                for counter, which, _ in prepared.rows:
                    amount = amounts[which]
                    counter.reserved += amount
                    entries.append((counter, amount))
            else:
                rows = prepared.rows
                for (counter, which, cap), period in zip(rows, periods, strict=True):
                    if cap is not None and (
                        _current(counter, period, now) + counter.reserved + amounts[which] > cap
                    ):
                        return False
                for (counter, which, _), period in zip(rows, periods, strict=True):
                    _advance(counter, period)
                    amount = amounts[which]
                    counter.reserved += amount
                    entries.append((counter, amount))
            self._hold(hold_id, entries, now, ttl)
            return True

    def commit_prepared(
        self,
        hold_id: str,
        prepared: Prepared,
        amounts: Sequence[int],
        periods: Sequence[int | None] | None,
        *,
        now: float,
        record: Any = None,
    ) -> list[int] | None:
        """:meth:`commit` of ``prepared``'s lines with a call's ``amounts``: the committed
        totals after it of the lines ``report`` names. None, having changed nothing, when
        ``hold_id`` finished before: call :meth:`commit` for its answer."""
        with self._lock:
            if now >= self._due:
                self._reap(now)
            if prepared.gen != self._gen:
                self._resolve(prepared, now)
            elif prepared.timed:
                self._touch(prepared, now)
            finished = self._finished
            key = hash(hold_id) & _KEY_MASK
            states = finished.states
            if key in states:
                return None
            hold = self._holds.pop(hold_id, None)
            if hold is not None:
                if hold.queue is not None:
                    del hold.queue[hold_id]
                for counter, amount in hold.entries:
                    counter.reserved -= amount
            rows = prepared.rows
            if periods is None:
                for counter, which, _ in rows:
                    if counter.buckets is None:
                        counter.total += amounts[which]
                    else:
                        counter.add(amounts[which], now)
            else:
                for (counter, which, _), period in zip(rows, periods, strict=True):
                    _advance(counter, period)
                    if counter.buckets is None:
                        counter.total += amounts[which]
                    else:
                        counter.add(amounts[which], now)
            # The tombstone (as _Finished.add, inlined: this runs on every call).
            stamp = finished.committed_stamp
            if now + finished.ttl > stamp.expires:
                stamp = finished.new_stamp(now, True)
                if stamp.expires < self._due:
                    self._due = stamp.expires
            finished.order.append(key)
            states[key] = stamp
            if len(states) > finished.limit:
                del states[finished.order.popleft()]
            if record is not None:
                self._ledger.append(record)
            return [rows[i][0].total for i in prepared.report]

    def check_prepared(
        self,
        prepared: Prepared,
        amounts: Sequence[int],
        periods: Sequence[int | None] | None,
        *,
        now: float,
    ) -> list[int] | None:
        """A dry-run :meth:`reserve` of ``prepared``'s lines: when every line fits, what
        each line ``report`` names would reach (committed + reserved + amount); None when
        one would not fit (call :meth:`reserve` for the levels)."""
        with self._lock:
            if now >= self._due:
                self._reap(now)
            if prepared.gen != self._gen:
                self._resolve(prepared, now)
            elif prepared.timed:
                self._touch(prepared, now)
            totals = []
            for index, (counter, which, limit) in enumerate(prepared.rows):
                period = None if periods is None else periods[index]
                total = _current(counter, period, now) + counter.reserved + amounts[which]
                if limit is not None and total > limit:
                    return None
                totals.append(total)
            return [totals[i] for i in prepared.report]

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
                "hold_heap": sum(len(q) for q in self._queues.values()) + len(self._late),
                "tombstones": len(self._finished),
                "ledger": len(self._ledger),
                "events": len(self._events),
            }


def _timestamp(record: Mapping[str, Any] | UsageRecord) -> float:
    if isinstance(record, UsageRecord):
        return record.timestamp
    return float(record.get("timestamp", 0.0))


def _payload(record: Mapping[str, Any] | UsageRecord) -> Mapping[str, Any]:
    return record_payload(record) if isinstance(record, UsageRecord) else record


def _size(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StoreConfigError(f"{name} must be a non-negative int, got {value!r}")
    return value
