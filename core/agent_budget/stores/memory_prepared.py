"""Prepared lines: :class:`~agent_budget.stores.memory.MemoryStore`'s reserve, commit and
dry run for lines of a fixed shape, resolved to their counters once, so a call sends its two
amounts (tokens, nano-USD) instead of building and looking up lines. Same rules as the
operations on lines (see :mod:`agent_budget.stores.base`); whatever is not the common case
(a refusal, an id in use, a finished id) is answered by those operations instead."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..locking import wait_for
from .base import Line, StoreOptions, check_text, new_tuple, window_of
from .memory_state import KEY_MASK, Counter, Finished, Hold, Scope, advance, current

__all__ = ["Prepared", "PreparedLines"]


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
        self.rows: list[tuple[Counter, int, int | None]] = []
        self.checked: list[tuple[Counter, int, int]] = []
        self.timed: list[Scope] = []


class PreparedLines:
    """The prepared-lines operations of MemoryStore (a mixin over its state)."""

    if TYPE_CHECKING:  # MemoryStore's state and internals, which these work on
        options: StoreOptions
        _lock: threading.Lock
        _due: float
        _gen: int
        _fast: bool
        _scopes: dict[str, Scope]
        _holds: dict[str, Hold]
        _finished: Finished
        _ledger: Any

        def _reap(self, now: float) -> None: ...

        def _counters_for(self, lines: Sequence[Line], now: float) -> list[Counter]: ...

        def _hold(
            self, hold_id: str, entries: list[tuple[Counter, int]], now: float, ttl: float
        ) -> None: ...

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

    def _refresh(self, prepared: Prepared, now: float) -> None:
        """Under the lock: expire what is due, and bring ``prepared`` up to date with the
        store (resolved again after counters were dropped, touched when scopes expire)."""
        if now >= self._due:
            self._reap(now)
        if prepared.gen != self._gen:
            self._resolve(prepared, now)
        elif prepared.timed:
            self._touch(prepared, now)

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
        lock = self._lock
        if not lock.acquire(False):
            wait_for(lock)
        try:
            self._refresh(prepared, now)
            if hold_id in self._holds or hash(hold_id) & KEY_MASK in self._finished.states:
                return False
            entries = []
            if periods is None:
                for counter, which, limit in prepared.checked:
                    used = counter.total if counter.buckets is None else counter.committed(now)
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
                        current(counter, period, now) + counter.reserved + amounts[which] > cap
                    ):
                        return False
                for (counter, which, _), period in zip(rows, periods, strict=True):
                    advance(counter, period)
                    amount = amounts[which]
                    counter.reserved += amount
                    entries.append((counter, amount))
            self._hold(hold_id, entries, now, ttl)
            return True
        finally:
            lock.release()

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
        lock = self._lock
        if not lock.acquire(False):
            wait_for(lock)
        try:
            self._refresh(prepared, now)
            finished = self._finished
            key = hash(hold_id) & KEY_MASK
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
                    advance(counter, period)
                    if counter.buckets is None:
                        counter.total += amounts[which]
                    else:
                        counter.add(amounts[which], now)
            # The tombstone (as Finished.add, inlined: this runs on every call).
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
        finally:
            lock.release()

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
        lock = self._lock
        if not lock.acquire(False):
            wait_for(lock)
        try:
            self._refresh(prepared, now)
            totals = []
            for index, (counter, which, limit) in enumerate(prepared.rows):
                period = None if periods is None else periods[index]
                total = current(counter, period, now) + counter.reserved + amounts[which]
                if limit is not None and total > limit:
                    return None
                totals.append(total)
            return [totals[i] for i in prepared.report]
        finally:
            lock.release()
