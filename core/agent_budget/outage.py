"""What a budget does with store calls that failed: one outage buffer per store, shared by
every Budget over it (so a Budget object dropped by a manager's cache loses nothing).

- A commit the store could not take (a :class:`StoreTransientError`, or a plain
  :class:`StoreError`) waits for replay. It is *spooled*: written, before ``commit()``
  returns, to a local SQLite file named after the store (see :func:`spool_path`), so if
  this process exits first the next process on this host that opens the same store
  replays it. MemoryStore (nothing to come back to) and ``spool="off"`` keep it in memory.
- A reserve whose reply was lost may have left a hold nobody will end: its hold id is queued
  for release, sent once the store answers (always safe: a release of an unknown, finished
  or committed hold does nothing, and a commit after a release still records). A release
  that failed is queued the same way, under either outage policy.
- Replay runs before the budget's next reserve or commit (reads never write; at most every
  few seconds while the store keeps failing), oldest first, each operation exactly once:
  an operation is claimed in the spool before it is sent and deleted once the store took
  it; a claim left by a process that died mid-send is taken over at once (one still alive
  on this host keeps it for a lease).
- A commit the store refuses (:class:`StorePermanentError`: its input can never be stored)
  is *quarantined*: kept in the spool's quarantine table (or in memory), logged at ERROR
  and alerted (CRITICAL, ``limit_type="store_quarantine"``), and replay goes past it. So
  does one that keeps failing while the store answers other calls.
- A commit whose reply was lost may already be counted. The store's tombstones make its
  replay harmless for ``tombstone_ttl`` after it was sent; one still unresolved after that
  is quarantined rather than replayed (it could be counted twice). A commit that certainly
  never reached the store (the connection could not be made) replays at any age.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .alerting import Alerter
from .alerts import AlertLevel, BudgetAlert
from .errors import StoreError, StorePermanentError, StoreTransientError
from .stores import Line, Store

__all__ = [
    "MAX_STRIKES",
    "QUARANTINE_ALERT",
    "SPOOL_ENV",
    "OutageBuffer",
    "PendingOp",
    "buffer_for",
    "default_spool_dir",
    "maybe_applied",
    "quarantine_alert",
    "spool_path",
]

log = logging.getLogger("agent_budget")

SPOOL_ENV = "AGENT_BUDGET_SPOOL_DIR"
"""Environment variable naming the spool directory (``off`` keeps buffers in memory)."""
MAX_STRIKES = 3
"""Failures of one operation with an unclassified :class:`StoreError` (not known to be
transient, e.g. from a third-party store), while the store answered other calls, before it
is quarantined instead of blocking replay."""
_LEASE = 60.0  # seconds a claim on a spooled operation lasts (a send and its retries)
_MAX_BACKOFF = 5.0
_TAKE = 50  # operations claimed per replay round

Alert = Callable[[str], None]
QUARANTINE_ALERT = "store_quarantine"
"""``limit_type`` of the CRITICAL alert fired when a store operation is quarantined."""


def quarantine_alert(alerter: Alerter) -> Alert:
    """An :data:`Alert` firing a CRITICAL alert of ``alerter``'s scope."""

    def fire(message: str) -> None:
        alerter.fire(
            BudgetAlert(
                alerter.scope,
                AlertLevel.CRITICAL,
                message,
                0.0,
                0.0,
                alerter.clock(),
                QUARANTINE_ALERT,
            )
        )

    return fire


def maybe_applied(exc: BaseException) -> bool:
    """Whether a failed store call may have been applied (its reply lost)."""
    return bool(getattr(exc, "maybe_applied", True))


def default_spool_dir() -> Path | None:
    """``$AGENT_BUDGET_SPOOL_DIR``, else ``$XDG_STATE_HOME/agent-budget``, else
    ``~/.local/state/agent-budget``; None when the variable says ``off``."""
    named = os.environ.get(SPOOL_ENV, "").strip()
    if named.lower() == "off":
        return None
    if named:
        return Path(named).expanduser()
    state = os.environ.get("XDG_STATE_HOME", "").strip()
    base = Path(state) if state else Path.home() / ".local" / "state"
    return base / "agent-budget"


def spool_path(store: Store) -> Path | None:
    """The spool file of ``store`` on this host, or None when its buffer stays in memory
    (MemoryStore and stores without a :meth:`~Store.spool_key`, ``spool="off"``)."""
    key = store.spool_key()
    if key is None:
        return None
    option = getattr(getattr(store, "options", None), "spool", None)
    if option is not None and option.strip().lower() == "off":
        return None
    folder = Path(option).expanduser() if option else default_spool_dir()
    if folder is None:
        return None
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:20]
    return folder / f"spool-{digest}.sqlite3"


@dataclass(frozen=True)
class PendingOp:
    """One store call waiting for replay, with the time it was made (commits are replayed
    with it). ``uncertain_since`` is when a send that may have been applied was made."""

    kind: str  # "commit" or "release"
    hold_id: str
    group: str
    when: float
    lines: tuple[Line, ...] = ()
    record: dict[str, Any] | None = None
    uncertain_since: float | None = None
    strikes: int = 0
    key: int = 0


def _lines_json(lines: Sequence[Line]) -> str:
    return json.dumps([list(line) for line in lines])


def _lines_from(text: str) -> tuple[Line, ...]:
    return tuple(Line(*item) for item in json.loads(text))


def _describe(op: PendingOp) -> str:
    scope = (op.record or {}).get("scope") or (op.lines[0].scope if op.lines else "?")
    amounts = ", ".join(f"{line.metric}={line.amount}" for line in op.lines[:4])
    return f"{op.kind} {op.hold_id} of scope {scope!r} ({amounts or 'no lines'})"


class _MemoryQueue:
    """Operations in this process's memory (MemoryStore, or no spool)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ops: OrderedDict[int, PendingOp] = OrderedDict()
        self._claimed: set[int] = set()
        self._seq = 0
        self._quarantine: deque[dict[str, Any]] = deque(maxlen=1_000)

    def count(self) -> tuple[int, int]:
        ops = list(self._ops.values())
        return len(ops), sum(1 for op in ops if op.kind == "commit")

    def add(self, op: PendingOp) -> PendingOp:
        with self._lock:
            self._seq += 1
            op = replace(op, key=self._seq)
            self._ops[op.key] = op
            return op

    def oldest(self) -> PendingOp | None:
        with self._lock:
            return next(iter(self._ops.values()), None)

    def take(self, now: float) -> list[PendingOp]:
        with self._lock:
            ops = list(
                itertools.islice(
                    (op for op in self._ops.values() if op.key not in self._claimed), _TAKE
                )
            )
            self._claimed.update(op.key for op in ops)
            return ops

    def _remove(self, op: PendingOp) -> None:
        self._claimed.discard(op.key)
        self._ops.pop(op.key, None)

    def done(self, op: PendingOp) -> None:
        with self._lock:
            self._remove(op)

    def failed(self, op: PendingOp, *, uncertain_since: float | None, strike: bool) -> None:
        with self._lock:
            self._remove(op)
            self._seq += 1
            self._ops[self._seq] = replace(
                op, key=self._seq, uncertain_since=uncertain_since, strikes=op.strikes + strike
            )

    def unclaim(self, ops: Sequence[PendingOp]) -> None:
        with self._lock:
            for op in ops:
                self._claimed.discard(op.key)

    def quarantine(self, op: PendingOp, reason: str, now: float) -> None:
        with self._lock:
            self._remove(op)
            self._quarantine.append(_quarantine_entry(op, reason, now))

    def quarantined(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(entry) for entry in self._quarantine]


def _quarantine_entry(op: PendingOp, reason: str, now: float) -> dict[str, Any]:
    return {
        "kind": op.kind,
        "hold_id": op.hold_id,
        "group": op.group,
        "when": op.when,
        "lines": [list(line) for line in op.lines],
        "record": op.record,
        "reason": reason,
        "quarantined_at": now,
    }


_SPOOL_SCHEMA = """
CREATE TABLE IF NOT EXISTS ops (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    hold_id TEXT NOT NULL,
    grp TEXT NOT NULL,
    at REAL NOT NULL,
    lines TEXT NOT NULL,
    record TEXT,
    uncertain_since REAL,
    attempt_at REAL,
    strikes INTEGER NOT NULL DEFAULT 0,
    claimed_by TEXT,
    claimed_until REAL
);
CREATE INDEX IF NOT EXISTS ops_seq ON ops (seq);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    quarantined_at REAL NOT NULL,
    kind TEXT NOT NULL,
    hold_id TEXT NOT NULL,
    grp TEXT NOT NULL,
    at REAL NOT NULL,
    lines TEXT NOT NULL,
    record TEXT,
    reason TEXT NOT NULL
);
"""


class _SpoolQueue:
    """Operations in a local SQLite file (synchronous=FULL: on disk before the caller goes
    on), shared by every process of this host that opens the same store."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._token = ""

    def _db(self, *, create: bool) -> sqlite3.Connection | None:
        pid = os.getpid()
        if self._conn is not None and self._pid == pid:
            return self._conn
        if not create and not self.path.exists():
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            str(self.path), timeout=10.0, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SPOOL_SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            conn.close()
            raise
        self._conn, self._pid = conn, pid
        self._token = f"{pid}-{os.urandom(6).hex()}"
        return conn

    def _tx(self, body: Callable[[sqlite3.Connection], Any], *, create: bool = True) -> Any:
        with self._lock:
            conn = self._db(create=create)
            if conn is None:
                return None
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = body(conn)
                conn.execute("COMMIT")
                return result
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def count(self) -> tuple[int, int]:
        found = self._tx(
            lambda c: c.execute(
                "SELECT COUNT(*), COUNT(CASE WHEN kind = 'commit' THEN 1 END) FROM ops"
            ).fetchone(),
            create=False,
        )
        return (int(found[0]), int(found[1])) if found else (0, 0)

    def add(self, op: PendingOp) -> PendingOp:
        def body(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "INSERT INTO ops (seq, kind, hold_id, grp, at, lines, record, uncertain_since) "
                "VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM ops), ?, ?, ?, ?, ?, ?, ?)",
                (
                    op.kind,
                    op.hold_id,
                    op.group,
                    op.when,
                    _lines_json(op.lines),
                    None if op.record is None else json.dumps(op.record, default=str),
                    op.uncertain_since,
                ),
            )
            return int(cursor.lastrowid or 0)

        return replace(op, key=self._tx(body))

    def oldest(self) -> PendingOp | None:
        rows = self._tx(lambda c: self._select(c, "ORDER BY seq LIMIT 1", ()), create=False)
        return rows[0] if rows else None

    def _select(
        self,
        conn: sqlite3.Connection,
        tail: str,
        args: tuple[Any, ...],
        *,
        wall: float | None = None,
        limit: int | None = None,
    ) -> list[PendingOp]:
        """Operations in ``seq`` order; with ``wall``, only those no other live process of
        this host is sending now (a claim of a dead process is taken over at once)."""
        rows = conn.execute(
            "SELECT id, kind, hold_id, grp, at, lines, record, uncertain_since, strikes, "
            f"claimed_until, attempt_at, claimed_by FROM ops {tail}",
            args,
        )
        out: list[PendingOp] = []
        for row in rows:
            key, kind, hold_id, grp, at, lines, record, uncertain, strikes, until, attempt = row[
                :11
            ]
            owner = row[11]
            if (
                wall is not None
                and until is not None
                and until >= wall
                and owner != self._token
                and _alive(owner)
            ):
                continue
            if limit is not None and len(out) >= limit:
                break
            if until is not None and uncertain is None and attempt is not None:
                uncertain = attempt  # its claimer died while sending: it may have landed
            out.append(
                PendingOp(
                    kind,
                    hold_id,
                    grp,
                    at,
                    _lines_from(lines),
                    None if record is None else json.loads(record),
                    uncertain,
                    strikes,
                    key,
                )
            )
        return out

    def take(self, now: float) -> list[PendingOp]:
        wall = time.time()

        def body(conn: sqlite3.Connection) -> list[PendingOp]:
            ops = self._select(conn, "ORDER BY seq", (), wall=wall, limit=_TAKE)
            conn.executemany(
                "UPDATE ops SET claimed_by = ?, claimed_until = ?, attempt_at = ?, "
                "uncertain_since = ? WHERE id = ?",
                [(self._token, wall + _LEASE, now, op.uncertain_since, op.key) for op in ops],
            )
            return ops

        return list(self._tx(body, create=False) or [])

    def done(self, op: PendingOp) -> None:
        self._tx(lambda c: c.execute("DELETE FROM ops WHERE id = ?", (op.key,)))

    def failed(self, op: PendingOp, *, uncertain_since: float | None, strike: bool) -> None:
        self._tx(
            lambda c: c.execute(
                "UPDATE ops SET claimed_by = NULL, claimed_until = NULL, attempt_at = NULL, "
                "uncertain_since = ?, strikes = strikes + ?, "
                "seq = (SELECT MAX(seq) + 1 FROM ops) WHERE id = ?",
                (uncertain_since, int(strike), op.key),
            )
        )

    def unclaim(self, ops: Sequence[PendingOp]) -> None:
        if ops:
            self._tx(
                lambda c: c.executemany(
                    "UPDATE ops SET claimed_by = NULL, claimed_until = NULL, attempt_at = NULL "
                    "WHERE id = ? AND claimed_by = ?",
                    [(op.key, self._token) for op in ops],
                )
            )

    def quarantine(self, op: PendingOp, reason: str, now: float) -> None:
        def body(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO quarantine (quarantined_at, kind, hold_id, grp, at, lines, record, "
                "reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    now,
                    op.kind,
                    op.hold_id,
                    op.group,
                    op.when,
                    _lines_json(op.lines),
                    None if op.record is None else json.dumps(op.record, default=str),
                    reason,
                ),
            )
            if op.key:
                conn.execute("DELETE FROM ops WHERE id = ?", (op.key,))

        self._tx(body)

    def quarantined(self) -> list[dict[str, Any]]:
        rows = self._tx(
            lambda c: c.execute(
                "SELECT quarantined_at, kind, hold_id, grp, at, lines, record, reason "
                "FROM quarantine ORDER BY id"
            ).fetchall(),
            create=False,
        )
        return [
            {
                "kind": kind,
                "hold_id": hold_id,
                "group": grp,
                "when": at,
                "lines": json.loads(lines),
                "record": None if record is None else json.loads(record),
                "reason": reason,
                "quarantined_at": quarantined_at,
            }
            for quarantined_at, kind, hold_id, grp, at, lines, record, reason in rows or []
        ]


def _stops_replay(exc: BaseException) -> bool:
    """A failure that says the store is down (not one about this operation's input)."""
    return not isinstance(exc, (StorePermanentError, ValueError, TypeError))


def _alive(token: str | None) -> bool:
    """Whether the process that claimed an operation (``<pid>-<random>``) still runs on this
    host; a claim of a dead process is taken over at once, not after its lease."""
    if not token:
        return False
    try:
        pid = int(token.split("-", 1)[0])
    except ValueError:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


class OutageBuffer:
    """Store calls waiting for their store: commits and releases, replayed in order, each
    exactly once (see the module docstring). One per store per process
    (:func:`buffer_for`); ``len()`` is what waits, an attribute read on the hot path."""

    def __init__(self, store: Store, maxlen: int) -> None:
        self.maxlen = maxlen
        self.path = spool_path(store)
        self._queue: _MemoryQueue | _SpoolQueue = (
            _SpoolQueue(self.path) if self.path is not None else _MemoryQueue()
        )
        ttl = float(getattr(getattr(store, "options", None), "tombstone_ttl", 3_600.0))
        self.replay_window = ttl - min(60.0, ttl / 10)
        """How long after a send whose reply was lost a commit may still be replayed."""
        self._count, self.commits = self._queue.count()
        self._flush_lock = threading.Lock()
        self._retry_at = 0.0
        self._backoff = 0.0
        if self._count:
            log.warning(
                "%d budget store operation(s) left by an earlier process wait in %s; they are "
                "replayed before the next reserve or commit",
                self._count,
                self.path,
            )

    def __len__(self) -> int:
        return self._count

    commits: int
    """How many of the waiting operations are commits (usage not yet in the store)."""

    @property
    def durable(self) -> bool:
        """True when waiting operations survive this process (a spool file)."""
        return self.path is not None

    # -- what the budget adds ---------------------------------------------------------------

    def add_commit(
        self,
        hold_id: str,
        lines: Sequence[Line],
        when: float,
        group: str,
        record: dict[str, Any] | None,
        *,
        error: BaseException,
    ) -> None:
        """Keep a commit the store could not take (``error``) for replay."""
        uncertain = when if maybe_applied(error) else None
        self._add(PendingOp("commit", hold_id, group, when, tuple(lines), record, uncertain))
        log.error(
            "budget store unavailable: usage of %s buffered for replay (%d pending%s): %s",
            hold_id,
            self._count,
            ", spooled to " + str(self.path) if self.path else "",
            error,
        )

    def add_release(self, hold_id: str, group: str, when: float) -> None:
        """Release ``hold_id`` once the store answers (a hold that may exist unknown to us)."""
        self._add(PendingOp("release", hold_id, group, when))

    def _add(self, op: PendingOp) -> None:
        if self._count >= self.maxlen:
            oldest = self._queue.oldest()
            if oldest is not None:
                self._quarantine(oldest, f"the outage buffer is full ({self.maxlen})", None)
        self._queue.add(op)
        self._count, self.commits = self._queue.count()

    def reject_commit(
        self,
        hold_id: str,
        lines: Sequence[Line],
        when: float,
        group: str,
        record: dict[str, Any] | None,
        *,
        error: BaseException,
        alert: Alert | None,
    ) -> None:
        """Quarantine a commit the store refused outright (it can never be stored)."""
        op = PendingOp("commit", hold_id, group, when, tuple(lines), record)
        self._quarantine(op, f"the store refused it: {error}", alert)

    def quarantined(self) -> list[dict[str, Any]]:
        """What was quarantined (from the spool file when there is one), oldest first."""
        return self._queue.quarantined()

    # -- replay ----------------------------------------------------------------------------

    def _quarantine(self, op: PendingOp, reason: str, alert: Alert | None) -> None:
        self._queue.quarantine(op, reason, time.time())
        where = f" (kept in {self.path})" if self.path else ""
        message = f"budget store {_describe(op)} quarantined{where}: {reason}"
        log.error(message)
        if alert is not None:
            try:
                alert(message)
            except Exception:
                log.exception("quarantine alert failed")

    def _late(self, op: PendingOp, now: float) -> bool:
        return (
            op.kind == "commit"
            and op.uncertain_since is not None
            and now - op.uncertain_since >= self.replay_window
        )

    def _ready(self, answered: bool) -> bool:
        if not self._count:
            return False
        return answered or time.monotonic() >= self._retry_at

    def _failed(
        self, op: PendingOp, exc: BaseException, answered: bool, alert: Alert | None
    ) -> None:
        """A replay that failed: permanent errors quarantine, transient ones wait again (a
        few strikes while the store answers other calls quarantine too)."""
        if isinstance(exc, (StorePermanentError, ValueError, TypeError)):
            self._quarantine(op, f"the store refused it: {exc}", alert)
            return
        since = op.uncertain_since
        if since is None and maybe_applied(exc):
            since = op.when if op.kind == "commit" else None
        # A transient error (busy, timeout) never strikes: the store is just not ready.
        strike = answered and not isinstance(exc, StoreTransientError)
        if strike and op.strikes + 1 >= MAX_STRIKES:
            self._quarantine(
                op, f"failed {MAX_STRIKES} times while the store answered other calls: {exc}", alert
            )
            return
        self._queue.failed(op, uncertain_since=since, strike=strike)
        self._backoff = min(_MAX_BACKOFF, self._backoff * 2 or 0.25)
        self._retry_at = time.monotonic() + self._backoff

    def _late_reason(self) -> str:
        return (
            "its reply was lost longer than tombstone_ttl ago, so it may already be counted; "
            "it is not replayed, to never count it twice"
        )

    def flush(
        self,
        store: Store,
        now: float,
        alert: Alert | None = None,
        *,
        answered: bool = False,
        outage: list[StoreError] | None = None,
    ) -> int:
        """Replay what waits, oldest first, until the store fails again; returns how many
        operations the store took. ``answered`` says the store just answered a call
        (replay at once); ``outage`` receives the error that stopped the replay because the
        store did not answer, so the caller need not wait on it a second time."""
        if not self._ready(answered) or not self._flush_lock.acquire(blocking=False):
            return 0
        replayed = 0
        try:
            while ops := self._queue.take(now):
                for index, op in enumerate(ops):
                    if self._late(op, now):
                        self._quarantine(op, self._late_reason(), alert)
                        continue
                    try:
                        if op.kind == "commit":
                            store.commit(
                                op.hold_id, op.lines, now=op.when, group=op.group, record=op.record
                            )
                        else:
                            store.release(op.hold_id, now=op.when, group=op.group)
                    except (StoreError, ValueError, TypeError) as exc:
                        self._failed(op, exc, answered, alert)
                        if _stops_replay(exc):
                            self._queue.unclaim(ops[index + 1 :])
                            if outage is not None and isinstance(exc, StoreTransientError):
                                outage.append(exc)  # not answering (down, hung, busy)
                            return replayed
                        continue
                    self._queue.done(op)
                    replayed += 1
                    answered = True
                    self._backoff = 0.0
                    log.info("replayed a buffered %s of %s to the store", op.kind, op.hold_id)
        finally:
            self._count, self.commits = self._queue.count()
            self._flush_lock.release()
        return replayed

    async def aflush(
        self, store: Store, now: float, alert: Alert | None = None, *, answered: bool = False
    ) -> int:
        """:meth:`flush` for asyncio: store calls through the async API, spool file I/O in a
        worker thread, so the event loop never waits."""
        if not self._ready(answered) or not self._flush_lock.acquire(blocking=False):
            return 0
        replayed = 0
        try:
            while ops := await self._off_loop(self._queue.take, now):
                for index, op in enumerate(ops):
                    if self._late(op, now):
                        await self._off_loop(self._quarantine, op, self._late_reason(), alert)
                        continue
                    try:
                        if op.kind == "commit":
                            await store.acommit(
                                op.hold_id, op.lines, now=op.when, group=op.group, record=op.record
                            )
                        else:
                            await store.arelease(op.hold_id, now=op.when, group=op.group)
                    except (StoreError, ValueError, TypeError) as exc:
                        await self._off_loop(self._failed, op, exc, answered, alert)
                        if _stops_replay(exc):
                            await self._off_loop(self._queue.unclaim, ops[index + 1 :])
                            return replayed
                        continue
                    await self._off_loop(self._queue.done, op)
                    replayed += 1
                    answered = True
                    self._backoff = 0.0
        finally:
            self._count, self.commits = await self._off_loop(self._queue.count)
            self._flush_lock.release()
        return replayed

    async def _off_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.durable:
            return await asyncio.to_thread(fn, *args)
        return fn(*args)


_buffers: weakref.WeakKeyDictionary[Store, OutageBuffer] = weakref.WeakKeyDictionary()
_buffers_lock = threading.Lock()


def buffer_for(store: Store, maxlen: int) -> OutageBuffer:
    """The outage buffer of ``store`` (made on first use, finding what an earlier process
    spooled); ``maxlen`` grows it, never shrinks it."""
    with _buffers_lock:
        buffer = _buffers.get(store)
        if buffer is None:
            buffer = _buffers[store] = OutageBuffer(store, maxlen)
        elif maxlen > buffer.maxlen:
            buffer.maxlen = maxlen
        return buffer
