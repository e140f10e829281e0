"""SQLiteStore's ledger, events log and read-only counter reads, as plain functions.

The ledger table keeps one row per committed call with the queried fields as columns (so a
report groups them in SQL) and the rest (metadata, anything unusual) as JSON; files written
by 0.2, whose rows were JSON only, get the columns added and filled once. Rows are found by
time through ``ab_ledger_marks``, the first row id of each hour, instead of an index on the
time: an index would cost every commit one more page written, a mark costs one per hour.
Nothing here writes except :func:`insert_record`, :func:`insert_event`, :func:`prune` and
:func:`migrate`, which the store calls inside its write transactions.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .base import Level, StoreOptions, window_of
from .ledger import (
    SUM_FIELDS,
    EventFilter,
    LedgerFilter,
    check_aggregate,
    check_limit,
    event_row,
    finish_groups,
    group_dict,
)

__all__ = [
    "LEDGER_SCHEMA",
    "aggregate",
    "event_counts",
    "insert_event",
    "insert_record",
    "migrate",
    "peek_many",
    "prune",
    "query_events",
    "query_ledger",
    "record_params",
]

HOUR = 3600

LEDGER_SCHEMA = """
DROP INDEX IF EXISTS ab_ledger_ts;
CREATE TABLE IF NOT EXISTS ab_ledger_marks (
    hour INTEGER PRIMARY KEY,
    first_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ab_events (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    scope TEXT NOT NULL,
    caller TEXT NOT NULL,
    event TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ab_events_ts ON ab_events (ts);
CREATE TABLE IF NOT EXISTS ab_event_counts (
    scope TEXT NOT NULL,
    kind TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (scope, kind)
) WITHOUT ROWID;
"""
"""Run after the store's own schema: the hour marks and the events log."""

# Ledger columns added in schema 2: (column, type and default, the JSON path in 0.2 rows).
_COLUMNS = (
    ("session", "TEXT NOT NULL DEFAULT ''", "$.session_id"),
    ("model", "TEXT NOT NULL DEFAULT ''", "$.model"),
    ("input_tokens", "INTEGER NOT NULL DEFAULT 0", "$.input_tokens"),
    ("output_tokens", "INTEGER NOT NULL DEFAULT 0", "$.output_tokens"),
    ("cache_read_tokens", "INTEGER NOT NULL DEFAULT 0", "$.cache_read_tokens"),
    ("cache_write_tokens", "INTEGER NOT NULL DEFAULT 0", "$.cache_write_tokens"),
    ("reasoning_tokens", "INTEGER NOT NULL DEFAULT 0", "$.reasoning_tokens"),
    ("cost_nanos", "INTEGER NOT NULL DEFAULT 0", "$.cost_nanos"),
    ("estimated", "INTEGER NOT NULL DEFAULT 0", "$.estimated"),
    ("price_source", "TEXT NOT NULL DEFAULT ''", "$.price_source"),
    ("cache_write_1h_tokens", "INTEGER NOT NULL DEFAULT 0", "$.cache_write_1h_tokens"),
    ("web_searches", "INTEGER NOT NULL DEFAULT 0", "$.web_searches"),
    ("price_date", "TEXT NOT NULL DEFAULT ''", "$.price_date"),
    ("price_id", "TEXT NOT NULL DEFAULT ''", "$.price_id"),
    ("price_tier", "TEXT NOT NULL DEFAULT ''", "$.price_tier"),
)
_TEXT = frozenset(("session", "model", "price_source", "price_date", "price_id", "price_tier"))
_IN_COLUMNS = frozenset(
    {
        "timestamp",
        "scope",
        "session_id",
        "model",
        *SUM_FIELDS,
        "estimated",
        "price_source",
        "cost_usd",
        "cache_write_1h_tokens",
        "web_searches",
        "price_date",
        "price_id",
        "price_tier",
    }
)
_PLAIN = _IN_COLUMNS | {"reservation_id", "metadata"}
_PROVENANCE = ("cache_write_1h_tokens", "web_searches", "price_date", "price_id", "price_tier")
"""Fields a record stores in columns (the reservation id is the row's hold id): a record
with no others and no metadata needs no JSON."""
_EVENTS_MAX = 100_000
_IN_CHUNK = 500


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a ledger of JSON rows (agent-budget 0.2) to columns, mark the hours, and make
    the events tables, in the caller's write transaction; a no-op once done."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(ab_ledger)")}
    missing = [c for c in _COLUMNS if c[0] not in present]
    for name, decl, _path in missing:
        conn.execute(f"ALTER TABLE ab_ledger ADD COLUMN {name} {decl}")
    if missing:
        sets = ", ".join(
            f"{name} = COALESCE(json_extract(record, '{path}'), {name})"
            for name, _decl, path in missing
        )
        conn.execute(f"UPDATE ab_ledger SET {sets} WHERE json_valid(record)")
    fresh = not conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ab_ledger_marks'"
    ).fetchone()
    for statement in LEDGER_SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    if fresh:  # mark the rows already there
        conn.execute(
            f"INSERT OR IGNORE INTO ab_ledger_marks (hour, first_id) "
            f"SELECT CAST(ts / {HOUR} AS INTEGER), MIN(id) FROM ab_ledger GROUP BY 1"
        )


def insert_record(conn: sqlite3.Connection, params: Sequence[Any]) -> None:
    """Append a record (:func:`record_params`) and mark its hour's first row (a no-op read
    once the hour has its mark)."""
    row_id = conn.execute(INSERT_RECORD, params).lastrowid
    conn.execute(
        "INSERT OR IGNORE INTO ab_ledger_marks (hour, first_id) VALUES (?, ?)",
        (int(params[0] // HOUR), row_id),
    )


INSERT_RECORD = (
    "INSERT INTO ab_ledger (ts, hold_id, scope, session, model, input_tokens, output_tokens, "
    "cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_nanos, estimated, "
    "price_source, cache_write_1h_tokens, web_searches, price_date, price_id, price_tier, "
    "record) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
"""Appends a commit's usage record to the ledger, with :func:`record_params`."""


def record_params(now: float, hold_id: str, record: Mapping[str, Any]) -> tuple[Any, ...]:
    """The parameters of :data:`INSERT_RECORD` for one record, made before the transaction
    (a record that cannot be stored fails before anything is written)."""
    get = record.get
    scope = get("scope")
    text = ""
    if get("metadata") or get("reservation_id") != hold_id or not record.keys() <= _PLAIN:
        extra = {k: v for k, v in record.items() if k not in _IN_COLUMNS}
        text = json.dumps(extra, default=str, separators=(",", ":"))
    return (
        now,
        hold_id,
        scope if isinstance(scope, str) else None,
        str(get("session_id", "")),
        str(get("model", "")),
        int(get("input_tokens", 0)),
        int(get("output_tokens", 0)),
        int(get("cache_read_tokens", 0)),
        int(get("cache_write_tokens", 0)),
        int(get("reasoning_tokens", 0)),
        _exact(int(get("cost_nanos", 0))),
        1 if get("estimated") else 0,
        str(get("price_source", "")),
        int(get("cache_write_1h_tokens", 0)),
        int(get("web_searches", 0)),
        str(get("price_date", "")),
        str(get("price_id", "")),
        str(get("price_tier", "")),
        text,
    )


def _exact(value: int) -> int | bytes:
    """An integer as SQLite keeps it exactly: INTEGER within 64 bits, else its decimal
    digits as a BLOB (as the counters do; ``int()`` reads both back)."""
    return value if -(2**63) <= value < 2**63 else str(value).encode("ascii")


def _expressions(conn: sqlite3.Connection) -> dict[str, str]:
    """SQL for each row field: the schema 2 columns, or JSON paths in a file still at schema
    1 (opened read-only, so never migrated)."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(ab_ledger)")}
    out = {"timestamp": "ts", "scope": "COALESCE(scope, '')"}
    for name, _decl, path in _COLUMNS:
        field = "session_id" if name == "session" else name
        empty = "''" if name in _TEXT else "0"
        out[field] = (
            name if name in present else f"COALESCE(json_extract(record, '{path}'), {empty})"
        )
    return out


def _first_id(conn: sqlite3.Connection, since: float | None) -> int | None:
    """The lowest row id whose time can be at or after ``since``: every row's hour has a
    mark at or below its id, so no row of a later hour comes before the least mark of the
    hours from ``since`` on, whatever order the clocks wrote them in. None: read from the
    start (no ``since``, or a file without marks opened read-only before any migration)."""
    if since is None:
        return None
    try:
        (found,) = conn.execute(
            "SELECT MIN(first_id) FROM ab_ledger_marks WHERE hour >= ?",
            (math.floor(since / HOUR),),
        ).fetchone()
    except sqlite3.OperationalError:  # no marks table: schema 1
        return None
    if found is None:  # nothing that recent: start past the last row
        (last,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM ab_ledger").fetchone()
        return int(last) + 1
    return int(found)


def _where(
    wanted: LedgerFilter,
    expr: Mapping[str, str],
    scopes: Sequence[str] | None,
    first: int | None = None,
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if first is not None:
        clauses.append("id >= ?")
        args.append(first)
    if wanted.since is not None:
        clauses.append("ts >= ?")
        args.append(wanted.since)
    if wanted.until is not None:
        clauses.append("ts < ?")
        args.append(wanted.until)
    if scopes is not None:
        clauses.append(f"scope IN ({', '.join('?' * len(scopes))})")
        args.extend(scopes)
    if wanted.session is not None:
        clauses.append(f"{expr['session_id']} = ?")
        args.append(wanted.session)
    if wanted.model is not None:
        clauses.append(f"{expr['model']} = ?")
        args.append(wanted.model)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def _scope_chunks(wanted: LedgerFilter) -> list[list[str] | None]:
    """The filter's scopes in chunks small enough for one ``IN (...)`` (None: any scope)."""
    if wanted.scopes is None:
        return [None]
    names = sorted(wanted.scopes)
    return [names[i : i + _IN_CHUNK] for i in range(0, len(names), _IN_CHUNK)] or [[]]


def query_ledger(
    conn: sqlite3.Connection, wanted: LedgerFilter, limit: int | None, newest_first: bool
) -> list[dict[str, Any]]:
    """Ledger rows matching ``wanted``, oldest first (or newest first), at most ``limit``."""
    check_limit(limit)
    expr = _expressions(conn)
    fields = (
        "timestamp",
        "scope",
        "session_id",
        "model",
        *SUM_FIELDS,
        "estimated",
        "price_source",
        *_PROVENANCE,
    )
    select = ", ".join(expr[f] for f in fields)
    order = "DESC" if newest_first else "ASC"
    first = _first_id(conn, wanted.since)
    rows: list[tuple[Any, ...]] = []
    for chunk in _scope_chunks(wanted):
        where, args = _where(wanted, expr, chunk, first)
        sql = (
            f"SELECT id, {select}, hold_id, record FROM ab_ledger"
            f"{where} ORDER BY ts {order}, id {order}"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows.extend(conn.execute(sql, args).fetchall())
    if len(_scope_chunks(wanted)) > 1:
        rows.sort(key=lambda r: (r[1], r[0]), reverse=newest_first)
        rows = rows if limit is None else rows[:limit]
    return [_row(r) for r in rows]


def _row(r: Sequence[Any]) -> dict[str, Any]:
    try:
        extra = json.loads(r[-1]) if r[-1] else {}
    except ValueError:
        extra = {}
    if not isinstance(extra, dict):
        extra = {}
    cost = int(r[10])
    out = {
        "timestamp": float(r[1]),
        "scope": r[2] or "",
        "session_id": str(r[3] or ""),
        "model": str(r[4] or ""),
        "input_tokens": int(r[5]),
        "output_tokens": int(r[6]),
        "cache_read_tokens": int(r[7]),
        "cache_write_tokens": int(r[8]),
        "reasoning_tokens": int(r[9]),
        "cost_nanos": cost,
        "cost_usd": cost / 1_000_000_000,
        "estimated": bool(r[11]),
        "price_source": str(r[12] or ""),
        "reservation_id": str(extra.pop("reservation_id", None) or r[-2]),
        "metadata": extra.pop("metadata", None) or {},
        "cache_write_1h_tokens": int(r[13]),
        "web_searches": int(r[14]),
        "price_date": str(r[15] or ""),
        "price_id": str(r[16] or ""),
        "price_tier": str(r[17] or ""),
    }
    for key in (
        "session_id",
        "model",
        "timestamp",
        "scope",
        "price_source",
        "estimated",
        "cost_usd",
        *SUM_FIELDS,
        *_PROVENANCE,
    ):
        extra.pop(key, None)  # a 0.2 row: its JSON repeats the columns
    out.update(extra)
    return out


def aggregate(
    conn: sqlite3.Connection,
    wanted: LedgerFilter,
    by: Sequence[str],
    bucket: int | None,
    order_by: str,
    limit: int | None,
) -> list[dict[str, Any]]:
    """The ledger grouped and summed in SQL (see ``Store.aggregate``)."""
    keys = check_aggregate(by, bucket, order_by, limit)
    expr = _expressions(conn)
    key_sql = []
    for key in keys:
        if key == "bucket":
            size = int(bucket or 1)
            key_sql.append(f"CAST(ts / {size} AS INTEGER) * {size}")
        else:
            key_sql.append(expr[key])
    sums = ", ".join(f"SUM({expr[f]})" for f in SUM_FIELDS)
    select = ", ".join([*key_sql, "COUNT(*)", f"SUM({expr['estimated']})", sums])
    group = f" GROUP BY {', '.join(str(i) for i in range(1, len(keys) + 1))}" if keys else ""
    order = {
        "cost_nanos": f"SUM({expr['cost_nanos']})",
        "calls": "COUNT(*)",
        "tokens": f"SUM({expr['input_tokens']}) + SUM({expr['output_tokens']})",
    }[order_by]
    chunks = _scope_chunks(wanted)
    first = _first_id(conn, wanted.since)
    rows: list[tuple[Any, ...]] = []
    for chunk in chunks:
        where, args = _where(wanted, expr, chunk, first)
        sql = f"SELECT {select} FROM ab_ledger{where}{group}"
        if len(chunks) == 1:
            sql += f" ORDER BY {order} DESC"
            if limit is not None:
                sql += f" LIMIT {int(limit)}"
        rows.extend(conn.execute(sql, args).fetchall())
    n = len(keys)
    merged: dict[tuple[Any, ...], list[int]] = {}
    for row in rows:
        if row[n] == 0:
            continue  # no rows at all: SQL still answers one all-NULL row without GROUP BY
        values = tuple(
            bool(v) if k == "estimated" else v for k, v in zip(keys, row[:n], strict=True)
        )
        acc = merged.setdefault(values, [0] * (len(SUM_FIELDS) + 2))
        for i, value in enumerate(row[n:]):
            acc[i] += int(value or 0)
    groups = [group_dict(keys, values, acc) for values, acc in merged.items()]
    return finish_groups(groups, order_by, limit)


def insert_event(conn: sqlite3.Connection, event: Mapping[str, Any]) -> None:
    """Append an event to the log and count it (inside a write transaction)."""
    row = event_row(event)
    conn.execute(
        "INSERT INTO ab_events (ts, kind, scope, caller, event) VALUES (?, ?, ?, ?, ?)",
        (row["timestamp"], row["kind"], row["scope"], row["caller"], json.dumps(row)),
    )
    conn.execute(
        "INSERT INTO ab_event_counts (scope, kind, n) VALUES (?, ?, 1) "
        "ON CONFLICT (scope, kind) DO UPDATE SET n = n + 1",
        (row["scope"], row["kind"]),
    )


def prune(conn: sqlite3.Connection, before: float | None) -> None:
    """Bound the ledger and the events log (in the store's maintenance transaction): drop
    ledger rows of the hours before ``before`` (by id, through the marks: no scan), events
    older than ``before``, and all but the newest 100,000 events (the counts stay)."""
    if before is not None:
        cutoff = math.floor(before / HOUR)
        low = _first_id(conn, cutoff * HOUR)
        assert low is not None
        # Every row below ``low`` is of an hour before the cutoff's; the cutoff's own hour
        # (up to the next hour's least mark) is pruned row by row.
        (high,) = conn.execute(
            "SELECT MIN(first_id) FROM ab_ledger_marks WHERE hour > ?", (cutoff,)
        ).fetchone()
        conn.execute("DELETE FROM ab_ledger WHERE id < ?", (low,))
        conn.execute(
            "DELETE FROM ab_ledger WHERE id >= ? AND id < ? AND ts < ?",
            (low, 2**63 - 1 if high is None else high, before),
        )
        conn.execute("DELETE FROM ab_ledger_marks WHERE hour < ?", (cutoff,))
        conn.execute("DELETE FROM ab_events WHERE ts < ?", (before,))
    conn.execute(
        "DELETE FROM ab_events WHERE id <= (SELECT MAX(id) FROM ab_events) - ?", (_EVENTS_MAX,)
    )


def query_events(
    conn: sqlite3.Connection, wanted: EventFilter, limit: int | None, newest_first: bool
) -> list[dict[str, Any]]:
    check_limit(limit)
    clauses: list[str] = []
    args: list[Any] = []
    if wanted.since is not None:
        clauses.append("ts >= ?")
        args.append(wanted.since)
    if wanted.until is not None:
        clauses.append("ts < ?")
        args.append(wanted.until)
    if wanted.kinds is not None:
        clauses.append(f"kind IN ({', '.join('?' * len(wanted.kinds))})")
        args.extend(sorted(wanted.kinds))
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    order = "DESC" if newest_first else "ASC"
    out: list[dict[str, Any]] = []
    cursor = conn.execute(
        f"SELECT scope, caller, event FROM ab_events{where} ORDER BY id {order}", args
    )
    for scope, caller, text in cursor:
        if wanted.scopes is not None and scope not in wanted.scopes and caller not in wanted.scopes:
            continue
        out.append(json.loads(text))
        if limit is not None and len(out) >= limit:
            break
    return out


def event_counts(
    conn: sqlite3.Connection, scopes: Iterable[str] | None
) -> dict[str, dict[str, int]]:
    wanted = None if scopes is None else set(scopes)
    out: dict[str, dict[str, int]] = {}
    for scope, kind, n in conn.execute("SELECT scope, kind, n FROM ab_event_counts"):
        if wanted is None or scope in wanted:
            out.setdefault(scope, {})[kind] = int(n)
    return out


def peek_many(
    conn: sqlite3.Connection,
    scopes: Iterable[str],
    now: float,
    opts: StoreOptions,
    periods: Mapping[str, Mapping[str, int]] | None = None,
) -> dict[str, dict[str, Level]]:
    """What ``read`` would answer for each scope, computed without writing: expired holds
    are left out of ``reserved``, window buckets past the horizon out of ``committed``, and
    a counter whose period is older than ``periods[scope][metric]`` reads as zero. (A scope
    idle past ``idle_ttl`` still shows here until a writer drops it.)"""
    from .sqlite import _decode_lines, _from_db

    names = list(dict.fromkeys(scopes))
    rows: dict[str, dict[str, list[Any]]] = {name: {} for name in names}
    for i in range(0, len(names), _IN_CHUNK):
        chunk = names[i : i + _IN_CHUNK]
        marks = ", ".join("?" * len(chunk))
        for scope, metric, total, reserved, lo, hi, period in conn.execute(
            "SELECT scope, metric, total, reserved, lo, hi, period FROM ab_counters "
            f"WHERE scope IN ({marks})",
            chunk,
        ):
            rows[scope][metric] = [_from_db(total), _from_db(reserved), lo, hi, period]
    for (lines,) in conn.execute("SELECT lines FROM ab_holds WHERE expires_at <= ?", (now,)):
        for scope, metric, amount in _decode_lines(lines):
            row = rows.get(scope, {}).get(metric)
            if row is not None:
                row[1] -= amount
    out: dict[str, dict[str, Level]] = {}
    for scope in names:
        wanted = (periods or {}).get(scope) or {}
        levels: dict[str, Level] = {}
        for metric, (total, reserved, lo, hi, stored) in rows[scope].items():
            committed = total
            span = window_of(metric, opts)
            period = wanted.get(metric)
            if period is not None and (stored is None or period > stored):
                committed = 0
            elif span is not None and lo is not None:
                horizon = now - span[0] - span[1]
                if lo <= horizon and hi <= horizon:
                    committed = 0
                elif lo <= horizon:
                    committed = total - sum(
                        _from_db(amount)
                        for (amount,) in conn.execute(
                            "SELECT amount FROM ab_buckets "
                            "WHERE scope = ? AND metric = ? AND start <= ?",
                            (scope, metric, math.floor(horizon)),
                        )
                    )
            if committed or reserved:
                levels[metric] = Level(committed, reserved)
        out[scope] = levels
    return out
