"""SQLiteStore: budget state in one SQLite file, shared safely by every process on a host.

Each operation is one ``BEGIN IMMEDIATE ... COMMIT`` transaction (a deferred transaction that
later writes gets SQLITE_BUSY at once in WAL mode, skipping the busy timeout), retried while
another writer holds the lock, up to ``busy_timeout`` seconds. The file uses WAL with
``synchronous=NORMAL``: a committed transaction survives a process crash. Connections are
per thread and reopened after a fork. Committed usage records go to a ledger table in the
same transaction, pruned after ``retention_days`` (see ``sqlite_ledger``).
"""

from __future__ import annotations

import json
import math
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

from ..errors import StoreConfigError, StoreError, StorePermanentError, StoreTransientError
from .base import (
    MAX_WINDOW_SECONDS,
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
    is_windowed,
    make_options,
    number_option,
    window_of,
)
from .ledger import EventFilter, LedgerFilter
from .sqlite_ledger import (
    aggregate,
    event_counts,
    insert_event,
    insert_record,
    migrate,
    peek_many,
    prune,
    query_events,
    query_ledger,
    record_params,
)

__all__ = ["SQLiteStore"]

T = TypeVar("T")

SCHEMA_VERSION = "2"
LAYOUT = "2.ledger-columns.marks.events"
"""The tables and columns every migration has made, recorded once they all exist: a file
marked with it is only read on opening. Change it whenever a migration adds something
(files of one SCHEMA_VERSION have had different ledger layouts)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ab_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ab_scopes (
    scope TEXT PRIMARY KEY,
    touched REAL NOT NULL,
    expires REAL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ab_counters (
    scope TEXT NOT NULL,
    metric TEXT NOT NULL,
    total INTEGER NOT NULL DEFAULT 0,
    reserved INTEGER NOT NULL DEFAULT 0,
    lo INTEGER,
    hi INTEGER,
    period INTEGER,
    PRIMARY KEY (scope, metric)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ab_buckets (
    scope TEXT NOT NULL,
    metric TEXT NOT NULL,
    start INTEGER NOT NULL,
    amount INTEGER NOT NULL,
    PRIMARY KEY (scope, metric, start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ab_holds (
    hold_id TEXT PRIMARY KEY,
    expires_at REAL NOT NULL,
    lines TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ab_holds_expiry ON ab_holds (expires_at);
CREATE TABLE IF NOT EXISTS ab_done (
    hold_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ab_done_expiry ON ab_done (expires_at);
CREATE TABLE IF NOT EXISTS ab_ledger (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    hold_id TEXT NOT NULL,
    scope TEXT,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ab_defs (name TEXT PRIMARY KEY, data TEXT NOT NULL);
"""

_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_MAINTENANCE_EVERY = 60.0
_HELD_RECHECK = 60.0
_SWEEP_BATCH = 500


_QUERY_OPTIONS: dict[str, Callable[[Any], Any]] = {
    "retention_days": number_option(
        "retention_days", float, allow_none=True, maximum=MAX_WINDOW_SECONDS / 86_400
    ),
    "busy_timeout": number_option("busy_timeout", float, maximum=3_600.0),
    "synchronous": str,
    "read_only": lambda text: text.strip().lower() in ("1", "true", "yes", "on"),
}


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return True
    text = str(exc).lower()
    return "database is locked" in text or "database is busy" in text


class SQLiteStore(Store):
    """Budget state in a SQLite file: survives restarts, shared by processes on one host.

    ``path`` is the database file (created with its tables if missing; its directory must
    exist). ``busy_timeout`` bounds how long an operation waits for other writers;
    ``retention_days`` (None keeps them forever) bounds the ledger of usage records;
    ``synchronous`` is ``NORMAL`` (crash-safe for processes) or ``FULL`` (also for power loss).
    ``read_only=True`` opens an existing file for reading only (reports, the dashboard): a
    missing file is an error, nothing is created and every write raises StoreError.
    """

    schemes = ("sqlite",)
    groups_natively = True
    url_options = _QUERY_OPTIONS

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        retention_days: float | None = 30.0,
        busy_timeout: float = 10.0,
        synchronous: str = "NORMAL",
        read_only: bool = False,
        options: StoreOptions | None = None,
        **kwargs: Any,
    ) -> None:
        self.options = make_options(options, kwargs)
        try:
            text = os.fspath(path)
        except TypeError:
            raise StoreConfigError(
                f"SQLiteStore needs a database file path, got {path!r}"
            ) from None
        if not isinstance(text, str) or not text or text == ":memory:" or "\0" in text:
            raise StoreConfigError(
                f"SQLiteStore needs a database file path, got {path!r} (use memory:// for an "
                "in-process store)"
            )
        parent = Path(text).expanduser().resolve().parent
        if read_only and not Path(text).expanduser().is_file():
            raise StoreError(
                f"no SQLite store at {text!r} to read (opening for reading creates nothing)"
            )
        if not parent.is_dir():
            raise StoreConfigError(f"directory {str(parent)!r} of the SQLite store does not exist")
        retention_days = _QUERY_OPTIONS["retention_days"](retention_days)
        busy_timeout = _QUERY_OPTIONS["busy_timeout"](busy_timeout)
        sync = str(synchronous).upper()
        if sync not in ("NORMAL", "FULL", "EXTRA"):
            raise StoreConfigError(
                f"synchronous must be NORMAL, FULL or EXTRA, got {synchronous!r}"
            )
        self.path = str(Path(text).expanduser())
        self.retention_days = None if retention_days is None else float(retention_days)
        self.busy_timeout = float(busy_timeout)
        self.synchronous = sync
        self.read_only = bool(read_only)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[tuple[int, sqlite3.Connection]] = []
        self._schema_ready_pid: int | None = None
        self._next_maintenance = -math.inf
        self._closed = False
        if self.read_only:
            self._read(lambda conn: None)
            return
        try:
            self._transaction(lambda conn: None)  # creates the file: a bad path fails here
        except StoreTransientError as exc:
            if not (isinstance(exc.__cause__, sqlite3.Error) and _is_busy(exc.__cause__)):
                raise  # another writer holds the file: the first operation sets it up

    @classmethod
    def _open(cls, location: StoreURL, options: dict[str, Any]) -> Store:
        url = location.text
        if location.netloc:
            raise StoreConfigError(
                f"malformed sqlite URL {url!r}: it takes no host; use sqlite:///relative.db "
                "or sqlite:////absolute/path.db"
            )
        raw = location.path
        path = unquote(raw[1:] if raw.startswith("/") else raw)
        if not path:
            raise StoreConfigError(
                f"malformed sqlite URL {url!r}: no database path (sqlite:///budget.db)"
            )
        return cls(path, **options)

    def spool_key(self) -> str:
        return "sqlite:" + str(Path(self.path).resolve())

    # -- connections and transactions ------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            return self._connect_read_only()
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise StoreTransientError(
                f"cannot open SQLite store {self.path!r}: {exc}", maybe_applied=False
            ) from exc
        try:
            self._retry(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone())
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_read_only(self) -> sqlite3.Connection:
        """A connection that never creates the file and never changes it (``query_only``).
        It opens read-write where it may, so that closing the last connection removes the
        WAL and shared-memory files SQLite made for it, as a writer's would; read-only
        (``mode=ro``) where the file is not writable."""
        uri = Path(self.path).resolve().as_uri()
        conn: sqlite3.Connection | None = None
        for mode in ("rw", "ro"):
            try:
                conn = sqlite3.connect(
                    f"{uri}?mode={mode}",
                    timeout=self.busy_timeout,
                    isolation_level=None,
                    check_same_thread=False,
                    uri=True,
                )
                conn.execute("PRAGMA query_only = 1")
                conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
                break
            except sqlite3.Error as exc:
                if conn is not None:
                    conn.close()
                    conn = None
                if mode == "ro":
                    raise StoreError(f"cannot open SQLite store {self.path!r}: {exc}") from exc
        assert conn is not None
        return conn

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StorePermanentError("the SQLite store is closed")
        pid = os.getpid()
        entry = getattr(self._local, "entry", None)
        if entry is not None and entry[0] == pid:
            conn: sqlite3.Connection = entry[1]
            if self._schema_ready_pid == pid:
                return conn
        else:
            conn = self._connect()
            self._local.entry = (pid, conn)
            with self._lock:
                # Connections inherited from a parent process are dropped, never closed here.
                self._connections = [(p, c) for p, c in self._connections if p == pid]
                self._connections.append((pid, conn))
        if self._schema_ready_pid != pid and not self.read_only:
            self._retry(lambda: self._create_schema(conn))
            self._schema_ready_pid = pid
        return conn

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        """Create or migrate the tables; a file already at this version is only read, so
        opening it for writing changes nothing on disk until something is written."""
        try:
            found = conn.execute("SELECT value FROM ab_meta WHERE key = 'layout'").fetchone()
        except sqlite3.OperationalError:  # a new file: no tables yet
            found = None
        if found is not None and found[0] == LAYOUT:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            _migrate(conn)
            conn.execute(
                "INSERT OR REPLACE INTO ab_meta (key, value) VALUES ('schema', ?)",
                (SCHEMA_VERSION,),
            )
            migrate(conn)
            conn.execute(
                "INSERT OR REPLACE INTO ab_meta (key, value) VALUES ('layout', ?)", (LAYOUT,)
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _retry(self, fn: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.001
        while True:
            try:
                return fn()
            except sqlite3.Error as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise self._error(exc, applied=False) from exc
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.05)

    def _error(self, exc: BaseException, *, applied: bool) -> StoreError:
        """The library's error for a failed transaction. Data SQLite refuses is permanent;
        a busy, full, unreadable or missing file is transient (the transaction was rolled
        back, unless it failed at COMMIT: ``applied``)."""
        message = f"SQLite store {self.path!r} failed: {exc}"
        if isinstance(exc, sqlite3.OperationalError) or (
            isinstance(exc, sqlite3.DatabaseError)
            and not isinstance(
                exc, (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.DataError)
            )
        ):
            return StoreTransientError(message, maybe_applied=applied)
        return StorePermanentError(message)

    def _transaction(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body`` in one BEGIN IMMEDIATE transaction, retried while the file is busy."""
        if self.read_only:
            raise StorePermanentError(f"the SQLite store {self.path!r} is open read-only")
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.001
        while True:
            conn = self._conn()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise self._error(exc, applied=False) from exc
            else:
                committing = False
                try:
                    result = body(conn)
                    committing = True
                    conn.execute("COMMIT")
                    return result
                except BaseException as exc:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                    if isinstance(exc, (OverflowError, UnicodeError)):
                        raise self._error(exc, applied=False) from exc
                    if not isinstance(exc, sqlite3.Error):
                        raise
                    if not _is_busy(exc) or time.monotonic() >= deadline:
                        raise self._error(exc, applied=committing) from exc
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.05)

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
        lines = self._checked(lines)
        scopes = list(dict.fromkeys(line.scope for line in lines))
        encoded = None if dry_run else _encode_lines(lines)

        def body(conn: sqlite3.Connection) -> ReserveResult:
            tx = _Tx(self, conn, now)
            tx.reap()
            tx.idle_check(scopes)
            tx.touch(scopes)
            if encoded is not None:
                held, state = tx.hold_state(hold_id)
                if held is not None or state is not None:
                    if held is not None and _decode_lines(held) == [
                        (line.scope, line.metric, line.amount) for line in lines
                    ]:
                        # A client retry after a lost reply: answered, not held twice.
                        result = ReserveResult(True, tx.levels_without_hold(lines))
                        tx.flush()
                        return result
                    raise ValueError(f"hold id {hold_id!r} is already in use")
            levels = tuple(
                Level(tx.current(line), tx.row(line.scope, line.metric)[1]) for line in lines
            )
            for index, (line, level) in enumerate(zip(lines, levels, strict=True)):
                if (
                    line.limit is not None
                    and level.committed + level.reserved + line.amount > line.limit
                ):
                    tx.flush()
                    return ReserveResult(False, levels, index)
            if encoded is not None:
                for line in lines:
                    tx.advance(line)
                    tx.row(line.scope, line.metric)[1] += line.amount
                    tx.dirty.add((line.scope, line.metric))
                conn.execute(
                    "INSERT INTO ab_holds (hold_id, expires_at, lines) VALUES (?, ?, ?)",
                    (hold_id, now + ttl, encoded),
                )
            tx.flush()
            return ReserveResult(True, levels)

        return self._transaction(body)

    def commit(
        self,
        hold_id: str,
        lines: Sequence[Line],
        *,
        now: float,
        group: str,
        record: Mapping[str, Any] | None = None,
    ) -> CommitResult:
        lines = self._checked(lines)
        try:
            ledger = None if record is None else record_params(now, hold_id, record)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the usage record cannot be stored as JSON: {exc}") from None

        def body(conn: sqlite3.Connection) -> CommitResult:
            tx = _Tx(self, conn, now)
            tx.reap()
            held, state = tx.hold_state(hold_id)
            entries = _decode_lines(held) if held is not None else []
            line_scopes = list(dict.fromkeys(line.scope for line in lines))
            tx.idle_check(list(dict.fromkeys([*(e[0] for e in entries), *line_scopes])))
            if held is not None:
                tx.drop_hold(hold_id, entries)
            applied = state is None or state == "released"
            tx.touch(line_scopes)
            if applied:
                for line in lines:
                    tx.advance(line)
                    tx.add(line.scope, line.metric, line.amount)
                tx.finish(hold_id, "committed")
                if ledger is not None:
                    insert_record(conn, ledger)
            levels = tuple(
                Level(tx.current(line), tx.row(line.scope, line.metric)[1]) for line in lines
            )
            tx.flush()
            self._maintenance(tx)
            return CommitResult(applied, levels)

        return self._transaction(body)

    def release(self, hold_id: str, *, now: float, group: str) -> bool:
        def body(conn: sqlite3.Connection) -> bool:
            tx = _Tx(self, conn, now)
            tx.reap()
            held, state = tx.hold_state(hold_id)
            if held is None:
                tx.flush()
                return False
            entries = _decode_lines(held)
            tx.idle_check(list(dict.fromkeys(e[0] for e in entries)))
            tx.drop_hold(hold_id, entries)
            if state is None:
                tx.finish(hold_id, "released")
            tx.flush()
            return True

        return self._transaction(body)

    def read(
        self,
        scope: str,
        *,
        now: float,
        group: str,
        periods: Mapping[str, int] | None = None,
    ) -> dict[str, Level]:
        if self.read_only:
            return self.peek(scope, now=now, group=group, periods=periods)

        def body(conn: sqlite3.Connection) -> dict[str, Level]:
            tx = _Tx(self, conn, now)
            tx.reap()
            tx.idle_check([scope])
            out = {}
            for metric in list(tx.scope_rows(scope)):
                period = periods.get(metric) if periods else None
                level = Level(
                    tx.current(Line(scope, metric, 0, None, period)), tx.row(scope, metric)[1]
                )
                if level.committed or level.reserved:
                    out[metric] = level
            tx.flush()
            return out

        return self._transaction(body)

    def reset(self, scope: str, prefix: str, *, now: float, group: str) -> None:
        def body(conn: sqlite3.Connection) -> None:
            match = "scope = ? AND substr(metric, 1, ?) = ?"
            args = (scope, len(prefix), prefix)
            conn.execute(f"DELETE FROM ab_buckets WHERE {match}", args)
            conn.execute(
                f"UPDATE ab_counters SET total = 0, lo = NULL, hi = NULL WHERE {match}", args
            )

        self._transaction(body)

    def save_scope(self, name: str, data: Mapping[str, Any]) -> None:
        text = json.dumps(dict(data), sort_keys=True)
        self._transaction(  # an unchanged definition writes nothing (no page, no mtime)
            lambda conn: conn.execute(
                "INSERT INTO ab_defs (name, data) VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
                "SET data = excluded.data WHERE data IS NOT excluded.data",
                (name, text),
            )
        )

    def load_scopes(self) -> dict[str, dict[str, Any]]:
        rows = self._read(lambda conn: conn.execute("SELECT name, data FROM ab_defs").fetchall())
        return {name: json.loads(data) for name, data in rows}

    def delete_scope(self, name: str) -> None:
        self._transaction(lambda conn: conn.execute("DELETE FROM ab_defs WHERE name = ?", (name,)))

    def _checked(self, lines: Sequence[Line]) -> list[Line]:
        """The lines as a list, after the checks that must pass before anything is written:
        names SQLite can store, well-formed windows, no period on a window."""
        for line in lines:
            if _check_names(line.scope, line.metric) and line.period is not None:
                raise ValueError(f"a rolling window ({line.metric!r}) cannot carry a period")
        return list(lines)

    def _maintenance(self, tx: _Tx) -> None:
        """Bound the file: forget old tombstones, ledger rows and idle scopes (by ``now``)."""
        now = tx.now
        if now < self._next_maintenance:
            return
        self._next_maintenance = now + _MAINTENANCE_EVERY
        conn = tx.conn
        conn.execute("DELETE FROM ab_done WHERE expires_at <= ?", (now,))
        before = None if self.retention_days is None else now - self.retention_days * 86_400
        prune(conn, before)
        rows = conn.execute(
            "SELECT scope FROM ab_scopes WHERE expires <= ? ORDER BY expires LIMIT ?",
            (now, _SWEEP_BATCH),
        ).fetchall()
        if rows:
            tx.idle_check([row[0] for row in rows])
            tx.flush()

    # -- extras ----------------------------------------------------------------------------

    def _read(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body`` in one deferred (read) transaction: one snapshot, no write lock, so
        a long report never holds up writers."""
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.001
        while True:
            conn = self._conn()
            try:
                conn.execute("BEGIN")
                try:
                    return body(conn)
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise StoreError(f"SQLite store {self.path!r} failed: {exc}") from exc
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.05)

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
        """Committed usage records (see ``Store.ledger``), kept for ``retention_days``."""
        wanted = LedgerFilter.of(
            since=since, until=until, scope=scope, session=session, model=model
        )
        return self._read(lambda conn: query_ledger(conn, wanted, limit, newest_first))

    def aggregate(
        self,
        *,
        by: Sequence[str] = ("scope",),
        bucket: int | None = None,
        since: float | None = None,
        until: float | None = None,
        scope: str | Iterable[str] | None = None,
        session: str | None = None,
        model: str | None = None,
        order_by: str = "cost_nanos",
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """The ledger grouped and summed in SQL (see ``Store.aggregate``)."""
        wanted = LedgerFilter.of(
            since=since, until=until, scope=scope, session=session, model=model
        )
        return self._read(lambda conn: aggregate(conn, wanted, by, bucket, order_by, limit))

    def record_event(self, event: Mapping[str, Any], *, group: str) -> None:
        self._transaction(lambda conn: insert_event(conn, event))

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
        return self._read(lambda conn: query_events(conn, wanted, limit, newest_first))

    def event_counts(
        self, *, scope: str | Iterable[str] | None = None
    ) -> dict[str, dict[str, int]]:
        scopes = EventFilter.of(scope=scope).scopes
        return self._read(lambda conn: event_counts(conn, scopes))

    def peek(
        self,
        scope: str,
        *,
        now: float,
        group: str,
        periods: Mapping[str, int] | None = None,
    ) -> dict[str, Level]:
        many = {scope: periods} if periods else None
        return self.peek_many({scope: group}, now=now, periods=many)[scope]

    def peek_many(
        self,
        scopes: Mapping[str, str],
        *,
        now: float,
        periods: Mapping[str, Mapping[str, int]] | None = None,
    ) -> dict[str, dict[str, Level]]:
        return self._read(lambda conn: peek_many(conn, scopes, now, self.options, periods))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pid = os.getpid()
            connections, self._connections = self._connections, []
        for owner, conn in connections:
            if owner == pid:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"


_INT64 = 2**63


def _to_db(value: int) -> int | bytes:
    """An integer as SQLite keeps it: INTEGER within 64 bits, else its decimal digits as a
    BLOB (text that looks numeric would be turned into a lossy REAL by column affinity)."""
    if -_INT64 <= value < _INT64:
        return value
    return str(value).encode("ascii")


def _from_db(value: Any) -> int:
    """Inverse of :func:`_to_db` (also reads REALs a foreign writer may have left)."""
    if value.__class__ is int:
        return int(value)
    if isinstance(value, bytes):
        return int(value.decode("ascii"))
    return int(value)


@lru_cache(maxsize=4096)
def _check_names(scope: str, metric: str) -> bool:
    """Names SQLite can store and a well-formed metric; True for a window."""
    check_text("scope name", scope)
    check_text("metric", metric)
    return is_windowed(metric)


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a file written by an earlier version to this schema (columns added, data kept)."""
    counters = {row[1] for row in conn.execute("PRAGMA table_info(ab_counters)")}
    if "period" not in counters:
        conn.execute("ALTER TABLE ab_counters ADD COLUMN period INTEGER")
    scopes = {row[1] for row in conn.execute("PRAGMA table_info(ab_scopes)")}
    if "expires" not in scopes:
        conn.execute("ALTER TABLE ab_scopes ADD COLUMN expires REAL")
        conn.execute("UPDATE ab_scopes SET expires = touched")  # looked at by the next sweep
    conn.execute("CREATE INDEX IF NOT EXISTS ab_scopes_expires ON ab_scopes (expires)")


def _encode_lines(lines: Sequence[Line]) -> str:
    return json.dumps([[line.scope, line.metric, line.amount] for line in lines])


def _decode_lines(text: str) -> list[tuple[str, str, int]]:
    return [(scope, metric, int(amount)) for scope, metric, amount in json.loads(text)]


class _Tx:
    """One transaction's view of the counters: read once per scope, written back in one go.

    Inside BEGIN IMMEDIATE no other writer runs, so rows are loaded per scope on first use,
    changed in memory, and upserted with absolute values by :meth:`flush`.
    """

    __slots__ = ("conn", "dirty", "now", "opts", "rows", "store")

    def __init__(self, store: SQLiteStore, conn: sqlite3.Connection, now: float) -> None:
        self.store = store
        self.conn = conn
        self.now = now
        self.opts = store.options
        self.rows: dict[str, dict[str, list[Any]]] = {}
        self.dirty: set[tuple[str, str]] = set()

    def scope_rows(self, scope: str) -> dict[str, list[Any]]:
        rows = self.rows.get(scope)
        if rows is None:
            rows = self.rows[scope] = {
                metric: [_from_db(total), _from_db(reserved), lo, hi, period]
                for metric, total, reserved, lo, hi, period in self.conn.execute(
                    "SELECT metric, total, reserved, lo, hi, period FROM ab_counters "
                    "WHERE scope = ?",
                    (scope,),
                )
            }
        return rows

    def row(self, scope: str, metric: str) -> list[Any]:
        """[total, reserved, lo, hi, period] of a counter (a zero row if it is new)."""
        rows = self.scope_rows(scope)
        row = rows.get(metric)
        if row is None:
            row = rows[metric] = [0, 0, None, None, None]
        return row

    def committed(self, scope: str, metric: str) -> int:
        """The counter's committed value, after dropping buckets that left the window."""
        row = self.row(scope, metric)
        lo = row[2]
        if lo is None:
            return int(row[0])
        span = window_of(metric, self.opts)
        assert span is not None
        horizon = self.now - span[0] - span[1]
        if lo > horizon:
            return int(row[0])
        conn = self.conn
        if row[3] <= horizon:
            conn.execute("DELETE FROM ab_buckets WHERE scope = ? AND metric = ?", (scope, metric))
            row[0], row[2], row[3] = 0, None, None
        else:
            cutoff = math.floor(horizon)
            removed = sum(
                _from_db(amount)
                for (amount,) in conn.execute(
                    "SELECT amount FROM ab_buckets WHERE scope = ? AND metric = ? AND start <= ?",
                    (scope, metric, cutoff),
                )
            )
            conn.execute(
                "DELETE FROM ab_buckets WHERE scope = ? AND metric = ? AND start <= ?",
                (scope, metric, cutoff),
            )
            (new_lo,) = conn.execute(
                "SELECT MIN(start) FROM ab_buckets WHERE scope = ? AND metric = ?",
                (scope, metric),
            ).fetchone()
            row[0] -= removed
            row[2] = new_lo if new_lo is not None else row[3]
        self.dirty.add((scope, metric))
        return int(row[0])

    def current(self, line: Line) -> int:
        """The committed value in the period ``line`` counts in (zero for a newer period)."""
        row = self.row(line.scope, line.metric)
        period = line.period
        if period is not None and (row[4] is None or period > row[4]):
            return 0
        return self.committed(line.scope, line.metric)

    def advance(self, line: Line) -> None:
        """Move the counter to the newer period ``line`` brings (committed restarts)."""
        period = line.period
        if period is None:
            return
        row = self.row(line.scope, line.metric)
        if row[4] is None or period > row[4]:
            row[0], row[4] = 0, period
            self.dirty.add((line.scope, line.metric))

    def levels_without_hold(self, lines: Sequence[Line]) -> tuple[Level, ...]:
        """Levels as a repeated reserve reports them: without that hold's own amounts."""
        own: dict[tuple[str, str], int] = {}
        for line in lines:
            key = (line.scope, line.metric)
            own[key] = own.get(key, 0) + line.amount
        return tuple(
            Level(self.current(line), self.row(line.scope, line.metric)[1] - own[key])
            for line in lines
            for key in ((line.scope, line.metric),)
        )

    def add(self, scope: str, metric: str, amount: int) -> None:
        """Add committed usage; a window's into the bucket of now (or the newest one)."""
        row = self.row(scope, metric)
        span = window_of(metric, self.opts)
        if span is not None:
            self.committed(scope, metric)
            start = bucket_start(self.now, span[1])
            if row[3] is not None and row[3] > start:
                start = row[3]  # a clock that stepped back: merge into the newest bucket
            conn = self.conn
            if amount >= 0 and row[0] >= 0 and row[0] + amount < _INT64:
                # No bucket exceeds its counter's total here, so SQL arithmetic is exact.
                conn.execute(
                    "INSERT INTO ab_buckets (scope, metric, start, amount) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (scope, metric, start) DO UPDATE SET amount = amount + "
                    "excluded.amount",
                    (scope, metric, start, amount),
                )
            else:
                found = conn.execute(
                    "SELECT amount FROM ab_buckets WHERE scope = ? AND metric = ? AND start = ?",
                    (scope, metric, start),
                ).fetchone()
                total = amount + (_from_db(found[0]) if found else 0)
                conn.execute(
                    "INSERT OR REPLACE INTO ab_buckets (scope, metric, start, amount) "
                    "VALUES (?, ?, ?, ?)",
                    (scope, metric, start, _to_db(total)),
                )
            if row[2] is None:
                row[2] = start
            if row[3] is None or row[3] < start:
                row[3] = start
        row[0] += amount
        self.dirty.add((scope, metric))

    def flush(self) -> None:
        if not self.dirty:
            return
        rows = self.rows
        self.conn.executemany(
            "INSERT INTO ab_counters (scope, metric, total, reserved, lo, hi, period) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (scope, metric) DO UPDATE SET "
            "total = excluded.total, reserved = excluded.reserved, lo = excluded.lo, "
            "hi = excluded.hi, period = excluded.period",
            [
                (s, m, _to_db(row[0]), _to_db(row[1]), row[2], row[3], row[4])
                for s, m in self.dirty
                for row in (rows[s][m],)
            ],
        )
        self.dirty.clear()

    def reap(self) -> None:
        """Free every hold whose expiry has passed."""
        expired = self.conn.execute(
            "SELECT hold_id, lines FROM ab_holds WHERE expires_at <= ?", (self.now,)
        ).fetchall()
        for hold_id, lines in expired:
            self.drop_hold(hold_id, _decode_lines(lines))

    def drop_hold(self, hold_id: str, entries: list[tuple[str, str, int]]) -> None:
        for scope, metric, amount in entries:
            row = self.scope_rows(scope).get(metric)
            if row is not None:
                row[1] -= amount
                self.dirty.add((scope, metric))
        self.conn.execute("DELETE FROM ab_holds WHERE hold_id = ?", (hold_id,))

    def hold_state(self, hold_id: str) -> tuple[str | None, str | None]:
        """(encoded lines of the live hold or None, finished state within the ttl or None)."""
        row = self.conn.execute(
            "SELECT (SELECT lines FROM ab_holds WHERE hold_id = ?), "
            "(SELECT state FROM ab_done WHERE hold_id = ? AND expires_at > ?)",
            (hold_id, hold_id, self.now),
        ).fetchall()[0]
        return row[0], row[1]

    def finish(self, hold_id: str, state: str) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO ab_done (hold_id, state, expires_at) VALUES (?, ?, ?)",
            (hold_id, state, self.now + self.opts.tombstone_ttl),
        )

    def touch(self, scopes: Sequence[str]) -> None:
        """Record use of the scopes that can expire (idle or session ttl)."""
        opts = self.opts
        now = self.now
        stamps = []
        for scope in scopes:
            ttl = opts.scope_ttl(scope)
            if ttl is not None:
                stamps.append((scope, now, now + ttl))
        if stamps:
            self.conn.executemany(
                "INSERT INTO ab_scopes (scope, touched, expires) VALUES (?, ?, ?) "
                "ON CONFLICT (scope) DO UPDATE SET touched = excluded.touched, "
                "expires = excluded.expires",
                stamps,
            )

    def idle_check(self, scopes: Sequence[str]) -> None:
        """Drop scopes unused for their idle (or session) ttl in which nothing still counts,
        as MemoryStore does; a scope kept for now is looked at again when it may go."""
        opts = self.opts
        conn = self.conn
        for scope in scopes:
            ttl = opts.scope_ttl(scope)
            if ttl is None:
                continue
            found = conn.execute("SELECT touched FROM ab_scopes WHERE scope = ?", (scope,))
            row = found.fetchone()
            if row is None or row[0] > self.now - ttl:
                continue
            busy = self.busy_until(scope, ttl)
            if busy is not None:
                conn.execute("UPDATE ab_scopes SET expires = ? WHERE scope = ?", (busy, scope))
                continue
            conn.execute("DELETE FROM ab_counters WHERE scope = ?", (scope,))
            conn.execute("DELETE FROM ab_buckets WHERE scope = ?", (scope,))
            conn.execute("DELETE FROM ab_scopes WHERE scope = ?", (scope,))
            self.rows[scope] = {}
            self.dirty = {key for key in self.dirty if key[0] != scope}

    def busy_until(self, scope: str, ttl: float) -> float | None:
        """None when nothing in the scope still counts, else when to look again: a live
        hold, a window with usage inside it, a recent period counter."""
        until: float | None = None
        now = self.now
        for metric, row in self.scope_rows(scope).items():
            if row[1]:
                when = now + min(ttl, _HELD_RECHECK)
            elif row[2] is not None:
                self.committed(scope, metric)
                if row[2] is None:
                    continue
                span = window_of(metric, self.opts)
                assert span is not None
                when = row[3] + span[0] + span[1]
            elif row[4] is not None and row[0] and row[4] + PERIOD_HORIZON > now:
                when = row[4] + PERIOD_HORIZON
            else:
                continue
            if until is None or when > until:
                until = when
        return until
