"""The in-memory state behind :class:`~agent_budget.stores.memory.MemoryStore`: counters
(plain totals and rolling windows), scopes, live holds with their expiry queues, and the
compact tombstones of finished hold ids."""

from __future__ import annotations

import math
from collections import deque

from .base import PERIOD_HORIZON, bucket_start

# How soon a scope kept past its idle time because it still holds budget is looked at again.
HELD_RECHECK = 60.0

__all__ = [
    "KEY_MASK",
    "Counter",
    "Finished",
    "Hold",
    "Queue",
    "Scope",
    "Stamp",
    "Window",
    "advance",
    "busy_until",
    "current",
    "new_counter",
]


class Counter:
    """A plain total (the committed amount) and what live holds reserve on it.

    ``period`` is the calendar period the total counts (None: no period yet). Three slots:
    a scope keeps several, and a store may keep many scopes; :class:`Window` adds buckets.
    """

    __slots__ = ("period", "reserved", "total")

    buckets: list[int] | None = None  # flat [start, amount, start, amount, ...]
    window = bucket = 0

    def __init__(self) -> None:
        self.total = 0
        self.reserved = 0
        self.period: int | None = None

    def committed(self, now: float) -> int:
        return self.total

    def add(self, amount: int, now: float) -> None:
        self.total += amount

    def clear(self) -> None:
        self.total = 0


class Window(Counter):
    """A rolling sum over fixed buckets, kept flat (``[start, amount, ...]``, oldest first).

    Most adds and reads skip the bucket math: nothing leaves the window before the oldest
    bucket's start + window + bucket, and an add before the newest bucket's end goes into it.
    """

    __slots__ = ("bucket", "buckets", "window")

    def __init__(self, span: tuple[int, int]) -> None:
        super().__init__()
        self.buckets: list[int] = []
        self.window, self.bucket = span

    def committed(self, now: float) -> int:
        buckets = self.buckets
        horizon = now - self.window - self.bucket
        if buckets and buckets[0] <= horizon:  # the oldest bucket left: drop what did
            drop = 0
            while drop < len(buckets) and buckets[drop] <= horizon:
                self.total -= buckets[drop + 1]
                drop += 2
            if drop:
                del buckets[:drop]
        return self.total

    def add(self, amount: int, now: float) -> None:
        buckets = self.buckets
        if buckets and buckets[0] <= now - self.window - self.bucket:
            self.committed(now)
        if buckets and now < buckets[-2] + self.bucket:
            # The current bucket, or a clock that stepped back: merge into the newest
            # bucket, never lose it.
            buckets[-1] += amount
        else:
            start = _shared_start(now, self.bucket)
            if buckets and buckets[-2] >= start:
                buckets[-1] += amount
            else:
                buckets += (start, amount)
        self.total += amount

    def clear(self) -> None:
        self.total = 0
        self.buckets.clear()


_starts: dict[int, int] = {}


def _shared_start(now: float, bucket: int) -> int:
    """``bucket_start(now, bucket)``, the same int object for every window that opens that
    bucket (a store keeps one per window per bucket: thousands of scopes share them)."""
    start = bucket_start(now, bucket)
    found = _starts.get(bucket)
    if found == start:
        return found
    _starts[bucket] = start
    return start


def new_counter(span: tuple[int, int] | None) -> Counter:
    """A plain total, or a window of ``span`` = (window, bucket) seconds."""
    return Counter() if span is None else Window(span)


class Scope:
    """One scope's counters and, when it can expire, its last use and idle ttl."""

    __slots__ = ("counters", "touched", "ttl")

    def __init__(self, ttl: float | None, now: float) -> None:
        self.counters: dict[str, Counter] = {}
        self.ttl = ttl
        self.touched = now if ttl is not None else 0.0  # only expiring scopes need it


def busy_until(scope: Scope, now: float) -> float | None:
    """None when nothing in an idle scope still counts (it may go), else when to look
    again: a live hold, a window with usage inside it, a recent period counter."""
    until: float | None = None
    for counter in scope.counters.values():
        if counter.reserved:
            assert scope.ttl is not None
            when = now + min(scope.ttl, HELD_RECHECK)
        elif counter.buckets is not None:
            counter.committed(now)
            if not counter.buckets:
                continue
            when = counter.buckets[-2] + counter.window + counter.bucket
        elif counter.period is not None and counter.total and counter.period + PERIOD_HORIZON > now:
            when = counter.period + PERIOD_HORIZON
        else:
            continue
        if until is None or when > until:
            until = when
    return until


class Hold:
    """A live hold: what it holds on which counters, until when, and its expiry queue."""

    __slots__ = ("entries", "expires_at", "queue")

    def __init__(
        self,
        entries: list[tuple[Counter, int]],
        expires_at: float,
        queue: Queue | None,
    ) -> None:
        self.entries = entries
        self.expires_at = expires_at
        self.queue = queue


class Queue(dict[str, Hold]):
    """Live holds of one ttl, in expiry order, and the latest expiry queued (``last``)."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        super().__init__()
        self.last = -math.inf


class Stamp:
    """When the finished hold ids added in one short span are forgotten, and how they
    finished; one is shared by every id of that span, so an id costs no object of its own."""

    __slots__ = ("committed", "expires")

    def __init__(self, expires: float, committed: bool) -> None:
        self.expires = expires
        self.committed = committed


KEY_MASK = (1 << 60) - 1


class Finished:
    """Hold ids committed or released lately (tombstones), so a repeated commit counts once.

    Each id is kept as a fixed-size 60-bit key (its string hash: a new id is mistaken for a
    finished one with odds of about ``count / 2**60``, under 1e-14 at the default bound) in
    a dict whose values are shared :class:`Stamp` objects, plus one FIFO of keys: about 90
    bytes an id. Ids are forgotten ``ttl`` to ``ttl + slack`` seconds after they finished,
    and the oldest first once more than ``limit`` are kept.
    """

    __slots__ = ("committed_stamp", "limit", "order", "released_stamp", "slack", "states", "ttl")

    def __init__(self, ttl: float, limit: int) -> None:
        self.ttl = ttl
        self.limit = limit
        self.slack = min(1.0, ttl / 8)
        self.states: dict[int, Stamp] = {}
        self.order: deque[int] = deque()
        self.committed_stamp = Stamp(-math.inf, True)
        self.released_stamp = Stamp(-math.inf, False)

    def state(self, hold_id: str) -> bool | None:
        """True: committed; False: released; None: not finished lately."""
        stamp = self.states.get(hash(hold_id) & KEY_MASK)
        return None if stamp is None else stamp.committed

    def new_stamp(self, now: float, committed: bool) -> Stamp:
        """The stamp ids finishing from ``now`` on share (until it would expire too soon)."""
        stamp = Stamp(now + self.ttl + self.slack, committed)
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
        key = hash(hold_id) & KEY_MASK
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


def current(counter: Counter, period: int | None, now: float) -> int:
    """The counter's committed value in the period a line with ``period`` counts in."""
    if period is not None and (counter.period is None or period > counter.period):
        return 0  # a newer period starts from zero
    return counter.total if counter.buckets is None else counter.committed(now)


def advance(counter: Counter, period: int | None) -> None:
    """Move a counter to a newer period a line brings (its committed value restarts)."""
    if period is not None and (counter.period is None or period > counter.period):
        counter.period = period
        counter.total = 0
