"""RedisStore's ledger, events log and read-only counter reads, with plain Redis commands.

Every key lives under its group's hash tag, so Redis Cluster sees one slot per group:

- ``<prefix>:{<group>}:ledger``: STREAM, one entry per committed call, field ``r`` = the
  record as a JSON array (:data:`_ORDER`), appended by the commit function itself (atomic
  with the counters), capped at about ``ledger_maxlen`` entries and ``retention_days``.
- ``<prefix>:{<group>}:events``: STREAM of refusals and alerts (field ``e``, JSON), capped
  at about 10,000; ``<prefix>:{<group>}:event_counts``: HASH ``<kind>:<scope>`` -> count.
- ``<prefix>:groups``: SET of the groups that wrote a ledger entry or an event, so a reader
  finds every stream without SCAN (written once per group per process).

Reads use XRANGE / XREVRANGE / HGETALL / HMGET / ZRANGEBYSCORE / TIME only: nothing is
written and no function or script is loaded to read. Counter reads (:func:`peek_many`)
mirror the Lua read: expired holds are left out of ``reserved``, window buckets past the
horizon out of ``committed``, idle scopes read as empty.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from itertools import islice
from typing import TYPE_CHECKING, Any

from .base import Level, window_of
from .ledger import (
    EventFilter,
    LedgerFilter,
    aggregate_rows,
    check_limit,
    event_row,
)

if TYPE_CHECKING:
    from .redis import RedisStore

__all__ = [
    "EVENTS_MAXLEN",
    "aggregate",
    "encode_record",
    "event_counts",
    "groups",
    "ledger_rows",
    "note_group",
    "peek_many",
    "query_events",
    "record_event",
    "server_now",
    "stream_rows",
]

EVENTS_MAXLEN = 10_000
_PAGE = 5_000
_SLACK_MS = 600_000  # stream ids follow the writer's clock (or the server's): search wider
_ORDER = (
    "timestamp",
    "scope",
    "session_id",
    "model",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_nanos",
    "estimated",
    "price_source",
    "reservation_id",
    "metadata",
    "cache_write_1h_tokens",
    "web_searches",
    "price_date",
    "price_id",
    "price_tier",
)
_KNOWN = frozenset((*_ORDER, "cost_usd"))
_quote: Any = json.encoder.encode_basestring_ascii


def encode_record(record: Mapping[str, Any]) -> str:
    """A usage record as the ledger stream keeps it: a JSON array in :data:`_ORDER`, then
    any further fields as an object (JSON escapes every name, so any text is safe). Entries
    written before the provenance fields (14 or 15 items) still read, with defaults."""
    get = record.get
    if not get("metadata") and record.keys() <= _KNOWN:
        try:  # the common record, built without the JSON encoder's overhead
            q = _quote
            return (
                f"[{float(get('timestamp', 0.0))!r},{q(get('scope', ''))},"
                f"{q(get('session_id', ''))},{q(get('model', ''))},"
                f"{int(get('input_tokens', 0))},{int(get('output_tokens', 0))},"
                f"{int(get('cache_read_tokens', 0))},{int(get('cache_write_tokens', 0))},"
                f"{int(get('reasoning_tokens', 0))},{int(get('cost_nanos', 0))},"
                f"{1 if get('estimated') else 0},{q(get('price_source', ''))},"
                f"{q(get('reservation_id', ''))},{{}},"
                f"{int(get('cache_write_1h_tokens', 0))},{int(get('web_searches', 0))},"
                f"{q(get('price_date', ''))},{q(get('price_id', ''))},"
                f"{q(get('price_tier', ''))}]"
            )
        except TypeError:  # a field of an unexpected type: the general path below
            pass
    values: list[Any] = [
        get("timestamp", 0.0),
        get("scope", ""),
        get("session_id", ""),
        get("model", ""),
        get("input_tokens", 0),
        get("output_tokens", 0),
        get("cache_read_tokens", 0),
        get("cache_write_tokens", 0),
        get("reasoning_tokens", 0),
        get("cost_nanos", 0),
        1 if get("estimated") else 0,
        get("price_source", ""),
        get("reservation_id", ""),
        get("metadata") or {},
        get("cache_write_1h_tokens", 0),
        get("web_searches", 0),
        get("price_date", ""),
        get("price_id", ""),
        get("price_tier", ""),
    ]
    extra = {k: v for k, v in record.items() if k not in _KNOWN}
    if extra:
        values.append(extra)
    return json.dumps(values, default=str, separators=(",", ":"))


_loads = json.JSONDecoder().decode


def _decode(text: bytes | str) -> dict[str, Any]:
    # Decoded first: json.loads of bytes sniffs the encoding of every row.
    values = _loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    cost = int(values[9])
    row = {
        "timestamp": float(values[0]),
        "scope": values[1],
        "session_id": values[2],
        "model": values[3],
        "input_tokens": int(values[4]),
        "output_tokens": int(values[5]),
        "cache_read_tokens": int(values[6]),
        "cache_write_tokens": int(values[7]),
        "reasoning_tokens": int(values[8]),
        "cost_nanos": cost,
        "cost_usd": cost / 1_000_000_000,
        "estimated": bool(values[10]),
        "price_source": values[11],
        "reservation_id": values[12],
        "metadata": values[13] or {},
        "cache_write_1h_tokens": 0,
        "web_searches": 0,
        "price_date": "",
        "price_id": "",
        "price_tier": "",
    }
    if len(values) >= 19:
        row["cache_write_1h_tokens"] = int(values[14])
        row["web_searches"] = int(values[15])
        row["price_date"], row["price_id"], row["price_tier"] = values[16:19]
    if isinstance(values[-1], dict) and len(values) in (15, 20):  # any further fields
        for key, value in values[-1].items():
            row.setdefault(key, value)
    return row


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _int(value: Any) -> int:
    """A counter field as Redis holds it (integer text, or a float's text)."""
    text = _text(value)
    try:
        return int(text)
    except ValueError:
        return int(Decimal(text))


# -- groups --------------------------------------------------------------------------------


def groups_key(store: RedisStore) -> str:
    return f"{store.key_prefix}:groups"


def note_group(store: RedisStore, group: str) -> None:
    """Add ``group`` to the set readers enumerate (once per group per store object)."""
    seen = store._ledger_groups
    if group in seen:
        return
    store._call(store.client.sadd, groups_key(store), group)
    if len(seen) >= 100_000:
        seen.clear()
    seen.add(group)


def groups(store: RedisStore, scopes: frozenset[str] | None = None) -> list[str]:
    """The groups whose streams hold rows of ``scopes`` (None: every group): from the group
    set, narrowed by the saved scope tree when it knows every scope asked for."""
    found = sorted(_text(g) for g in store._call(store.client.smembers, groups_key(store)))
    if scopes is None:
        return found
    defs = store.load_scopes()
    roots: set[str] = set()
    for scope in scopes:
        node, seen = scope, set()
        while node in defs and defs[node].get("parent") and node not in seen:
            seen.add(node)
            node = str(defs[node]["parent"])
        if node not in defs:
            return found  # a scope the tree does not know: look everywhere
        roots.add(node)
    return [g for g in found if g in roots]


# -- the ledger ------------------------------------------------------------------------------


def _entries(
    store: RedisStore, key: str, since: float | None, newest_first: bool
) -> Iterator[tuple[bytes, dict[Any, Any]]]:
    """Stream entries from about ``since`` on (ids may trail the record's own time), paged."""
    low = "-" if since is None else str(max(0, int(since * 1000) - _SLACK_MS))
    client = store.client
    if newest_first:
        high = "+"
        while True:
            page = store._call(client.xrevrange, key, high, low, _PAGE)
            yield from page
            if len(page) < _PAGE:
                return
            high = "(" + _text(page[-1][0])
    else:
        while True:
            page = store._call(client.xrange, key, low, "+", _PAGE)
            yield from page
            if len(page) < _PAGE:
                return
            low = "(" + _text(page[-1][0])


def _rows(
    store: RedisStore, group: str, wanted: LedgerFilter, newest_first: bool
) -> Iterator[dict[str, Any]]:
    key = f"{store._base(group)}ledger"
    for _id, fields in _entries(store, key, wanted.since, newest_first):
        raw = fields.get(b"r", fields.get("r"))
        if raw is None:
            continue
        row = _decode(raw)
        if wanted.matches(row):
            yield row


def stream_rows(store: RedisStore, wanted: LedgerFilter) -> Iterator[dict[str, Any]]:
    """Every matching row, group by group, page by page: never all held at once."""
    for group in groups(store, wanted.scopes):
        yield from _rows(store, group, wanted, False)


def ledger_rows(
    store: RedisStore, wanted: LedgerFilter, limit: int | None, newest_first: bool
) -> list[dict[str, Any]]:
    check_limit(limit)
    out: list[dict[str, Any]] = []
    for group in groups(store, wanted.scopes):
        out.extend(islice(_rows(store, group, wanted, newest_first), limit))
    out.sort(key=lambda r: r["timestamp"], reverse=newest_first)
    return out if limit is None else out[:limit]


def aggregate(
    store: RedisStore,
    wanted: LedgerFilter,
    by: Sequence[str],
    bucket: int | None,
    order_by: str,
    limit: int | None,
) -> list[dict[str, Any]]:
    """Rows streamed group by group and summed as they come (never all held at once)."""

    def every() -> Iterator[dict[str, Any]]:
        for group in groups(store, wanted.scopes):
            yield from _rows(store, group, wanted, False)

    return aggregate_rows(every(), by, bucket=bucket, order_by=order_by, limit=limit)


# -- events ----------------------------------------------------------------------------------


def record_event(store: RedisStore, event: Mapping[str, Any], group: str) -> None:
    """Append an event to its group's stream (its id from the event's time, as the ledger's
    from its commit's, unless the server's clock rules) and count it."""
    row = event_row(event)
    note_group(store, group)
    base = store._base(group)
    key = f"{base}events"
    fields = {"e": json.dumps(row)}
    stream_id = "*" if store.server_time else f"{int(row['timestamp'] * 1000)}-*"
    pipe = store.client.pipeline(transaction=False)
    pipe.xadd(key, fields, id=stream_id, maxlen=EVENTS_MAXLEN, approximate=True)
    pipe.hincrby(f"{base}event_counts", f"{row['kind']}:{row['scope']}", 1)
    added, _count = store._call(lambda: pipe.execute(raise_on_error=False))
    if isinstance(added, Exception):  # the clock stepped back past the newest event
        store._call(lambda: store.client.xadd(key, fields, maxlen=EVENTS_MAXLEN, approximate=True))


def query_events(
    store: RedisStore, wanted: EventFilter, limit: int | None, newest_first: bool
) -> list[dict[str, Any]]:
    check_limit(limit)
    out: list[dict[str, Any]] = []
    for group in groups(store, None):
        key = f"{store._base(group)}events"
        taken = 0
        for _id, fields in _entries(store, key, wanted.since, newest_first):
            raw = fields.get(b"e", fields.get("e"))
            if raw is None:
                continue
            row = json.loads(raw)
            if wanted.matches(row):
                out.append(row)
                taken += 1
                if limit is not None and taken >= limit:
                    break
    out.sort(key=lambda r: r["timestamp"], reverse=newest_first)
    return out if limit is None else out[:limit]


def event_counts(store: RedisStore, scopes: frozenset[str] | None) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    names = groups(store, None)
    if not names:
        return out
    pipe = store.client.pipeline(transaction=False)
    for group in names:
        pipe.hgetall(f"{store._base(group)}event_counts")
    for counts in store._call(pipe.execute):
        for field, value in counts.items():
            kind, _, scope = _text(field).partition(":")
            if scopes is None or scope in scopes:
                kinds = out.setdefault(scope, {})
                kinds[kind] = kinds.get(kind, 0) + int(value)
    return out


# -- counters, read without writing -----------------------------------------------------------


def _hold_lines(packed: bytes | str) -> list[tuple[str, str, int]]:
    """The (scope, metric, amount) lines of a stored hold: JSON, or 0.2's text encoding."""
    text = _text(packed)
    if text[:1].isdigit():
        out, pos = [], 0
        while pos < len(text):
            colon = text.index(":", pos)
            stop = colon + 1 + int(text[pos:colon])
            scope = text[colon + 1 : stop]
            colon = text.index(":", stop)
            mstop = colon + 1 + int(text[stop:colon])
            metric = text[colon + 1 : mstop]
            semi = text.index(";", mstop)
            out.append((scope, metric, _int(text[mstop:semi].split(",")[0])))
            pos = semi + 1
        return out
    return [(str(e[0]), str(e[1]), _int(e[2])) for e in json.loads(text)]


def peek_many(
    store: RedisStore,
    scopes: Mapping[str, str],
    now: float,
    periods: Mapping[str, Mapping[str, int]] | None = None,
) -> dict[str, dict[str, Level]]:
    """What the ``read`` function would answer for each scope, with plain commands: expired
    holds are left out of ``reserved``, window buckets past the horizon out of ``committed``,
    and a counter whose period is older than ``periods[scope][metric]`` reads as zero. (A
    scope idle past ``idle_ttl`` still shows here until a writer drops it.)"""
    opts = store.options
    client = store.client
    names = list(scopes)
    groups_of = sorted(set(scopes.values()))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(f"{store._base(scopes[name])}s:{name}")
    for group in groups_of:
        pipe.zrangebyscore(f"{store._base(group)}expiry", "-inf", repr(float(now)))
    replies = store._call(pipe.execute)
    fields_of = {
        name: {_text(k): v for k, v in reply.items()}
        for name, reply in zip(names, replies[: len(names)], strict=True)
    }
    expired = dict(zip(groups_of, replies[len(names) :], strict=True))
    # Amounts of expired holds, still counted in "r:" fields until the next write reaps them.
    stale: dict[tuple[str, str], int] = {}
    wanted_ids = [(g, ids) for g, ids in expired.items() if ids]
    if wanted_ids:
        pipe = client.pipeline(transaction=False)
        for group, ids in wanted_ids:
            pipe.hmget(f"{store._base(group)}holds", ids)
        for packed_list in store._call(pipe.execute):
            for packed in packed_list:
                if packed is None:
                    continue
                for scope, metric, amount in _hold_lines(packed):
                    stale[(scope, metric)] = stale.get((scope, metric), 0) + amount
    # Windows with buckets past their horizon need their bucket hash to subtract those.
    windows: list[tuple[str, str, float]] = []
    for name in names:
        fields = fields_of[name]
        for key, value in fields.items():
            if not key.startswith("lo:"):
                continue
            metric = key[3:]
            span = window_of(metric, opts)
            if span is None:
                continue
            horizon = now - span[0] - span[1]
            if float(_text(value)) <= horizon < float(_text(fields.get("hi:" + metric, b"0"))):
                windows.append((name, metric, horizon))
    removed: dict[tuple[str, str], int] = {}
    if windows:
        pipe = client.pipeline(transaction=False)
        for name, metric, _ in windows:
            pipe.hgetall(f"{store._base(scopes[name])}w:{len(name.encode())}:{name}{metric}")
        for (name, metric, horizon), buckets in zip(
            windows, store._call(pipe.execute), strict=True
        ):
            removed[(name, metric)] = sum(
                _int(v) for k, v in buckets.items() if float(_text(k)) <= horizon
            )
    return {
        name: _levels(name, fields_of[name], stale, removed, now, opts, (periods or {}).get(name))
        for name in names
    }


def _levels(
    name: str,
    fields: Mapping[str, Any],
    stale: Mapping[tuple[str, str], int],
    removed: Mapping[tuple[str, str], int],
    now: float,
    opts: Any,
    periods: Mapping[str, int] | None,
) -> dict[str, Level]:
    metrics = {key[2:] for key in fields if key[:2] in ("t:", "r:")}
    levels: dict[str, Level] = {}
    for metric in metrics:
        reserved = _int(fields.get("r:" + metric, 0)) - stale.get((name, metric), 0)
        committed = _int(fields.get("t:" + metric, 0))
        period = (periods or {}).get(metric)
        stored = fields.get("p:" + metric)
        span = window_of(metric, opts)
        lo = fields.get("lo:" + metric)
        if period is not None and (stored is None or period > int(float(_text(stored)))):
            committed = 0
        elif span is not None and lo is not None:
            horizon = now - span[0] - span[1]
            if float(_text(lo)) <= horizon:
                if float(_text(fields.get("hi:" + metric, b"0"))) <= horizon:
                    committed = 0
                else:
                    committed -= removed.get((name, metric), 0)
        if committed or reserved:
            levels[metric] = Level(committed, reserved)
    return levels


def server_now(store: RedisStore) -> float:
    """The server's clock (TIME), as the Lua code reads it."""
    seconds, micros = store._call(store.client.time)
    return int(seconds) + int(micros) / 1_000_000
