"""The spend a report shows, read from a store's ledger in as few passes as it takes.

Four groupings make every breakdown: (scope, model) gives the per-scope, per-model and total
sums; (bucket, model) the series per model and each bucket's total; (bucket, scope) for
the top scopes only the series per scope (the rest is each bucket's total minus theirs);
and the top sessions. A store that groups in SQL answers each in a query (two at a time);
for the others one pass over the rows sums all four here. Results stay small whatever the
number of rows or tenants, so what follows costs little.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .stores import Store
from .stores.ledger import SUM_FIELDS

__all__ = ["COUNTED", "Spend", "read_spend"]

COUNTED = ("calls", "estimated_calls", *SUM_FIELDS)
"""The sums of every aggregate row, in order."""
assert len(COUNTED) == 8  # add() below spells the eight out
Sums = list[int]


@dataclass
class Spend:
    """The four groupings, as ``{key tuple: sums in COUNTED order}``."""

    scope_model: dict[tuple[str, str], Sums]
    bucket_model: dict[tuple[int, str], Sums]
    bucket_scope: dict[tuple[int, str], Sums]
    sessions: list[tuple[str, Sums]]


def add(into: Sums, other: Sequence[int]) -> None:
    """``into += other``, element by element (spelled out: this runs once per ledger row)."""
    into[0] += other[0]
    into[1] += other[1]
    into[2] += other[2]
    into[3] += other[3]
    into[4] += other[4]
    into[5] += other[5]
    into[6] += other[6]
    into[7] += other[7]


def _sums(group: Mapping[str, Any]) -> Sums:
    return [int(group[name]) for name in COUNTED]


_pool: tuple[int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


def _helper() -> ThreadPoolExecutor:
    """One long-lived helper thread (per process: a forked child makes its own) for the
    queries a report runs beside its main ones; a store keeps a connection per thread, so a
    new thread per report would open a new connection each time."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="agent-budget-report"))
        return _pool[1]


def read_spend(
    store: Store,
    query: Mapping[str, Any],
    size: int,
    top: int,
    lead: Callable[[dict[tuple[str, str], Sums]], set[str]],
    *,
    sessions: bool = True,
) -> Spend:
    """The groupings of the ledger rows ``query`` selects (``store.ledger`` filters), with
    ``bucket`` of ``size`` seconds. ``lead`` picks, from the (scope, model) sums, the leaf
    scopes whose series are shown; ``top`` bounds the sessions."""
    if store.groups_natively:
        return _native(store, query, size, top, lead, sessions)
    return _one_pass(store.ledger_stream(**query), size, top, lead, sessions)


def _as_map(groups: Iterable[Mapping[str, Any]], keys: Sequence[str]) -> dict[Any, Sums]:
    return {tuple(g[k] for k in keys): _sums(g) for g in groups}


def _native(
    store: Store,
    query: Mapping[str, Any],
    size: int,
    top: int,
    lead: Callable[[dict[tuple[str, str], Sums]], set[str]],
    sessions: bool,
) -> Spend:
    helper = _helper()

    def side() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        models = store.aggregate(by=("bucket", "model"), bucket=size, **query)
        tops = store.aggregate(by=("session_id",), limit=top, **query) if sessions else []
        return models, tops

    pending: Future[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = helper.submit(side)
    scope_model = _as_map(store.aggregate(by=("scope", "model"), **query), ("scope", "model"))
    leaders = lead(scope_model)
    bucket_scope: dict[Any, Sums] = {}
    if leaders:
        narrowed = dict(query)
        wanted = query.get("scope")
        narrowed["scope"] = leaders if wanted is None else leaders & set(wanted)
        groups = store.aggregate(by=("bucket", "scope"), bucket=size, **narrowed)
        bucket_scope = _as_map(groups, ("bucket", "scope"))
    models, tops = pending.result()
    return Spend(
        scope_model,
        _as_map(models, ("bucket", "model")),
        bucket_scope,
        [(g["session_id"], _sums(g)) for g in tops],
    )


def _one_pass(
    rows: Iterable[Mapping[str, Any]],
    size: int,
    top: int,
    lead: Callable[[dict[tuple[str, str], Sums]], set[str]],
    sessions: bool,
) -> Spend:
    """Every grouping in one pass over the rows (a stream, for Redis: never all held): the
    rows are summed per (scope, model, bucket) and per session, then the small first table
    is folded into the three groupings."""
    finest: dict[tuple[str, str, int], Sums] = {}
    by_session: dict[str, Sums] = {}
    for row in rows:
        values = (
            1,
            1 if row["estimated"] else 0,
            row["input_tokens"],
            row["output_tokens"],
            row["cache_read_tokens"],
            row["cache_write_tokens"],
            row["reasoning_tokens"],
            row["cost_nanos"],
        )
        key = (row["scope"], row["model"], int(row["timestamp"] // size) * size)
        acc = finest.get(key)
        if acc is None:
            finest[key] = list(values)
        else:
            add(acc, values)
        if sessions:
            session = row["session_id"]
            acc = by_session.get(session)
            if acc is None:
                by_session[session] = list(values)
            else:
                add(acc, values)
    scope_model: dict[tuple[str, str], Sums] = {}
    bucket_model: dict[tuple[int, str], Sums] = {}
    bucket_scope: dict[tuple[int, str], Sums] = {}
    tables: tuple[dict[Any, Sums], ...] = (scope_model, bucket_model, bucket_scope)
    for (scope, model, bucket), sums in finest.items():
        keys = ((scope, model), (bucket, model), (bucket, scope))
        for table, found in zip(tables, keys, strict=True):
            acc = table.get(found)
            if acc is None:
                table[found] = list(sums)
            else:
                add(acc, sums)
    leaders = lead(scope_model)
    ranked = sorted(by_session.items(), key=lambda kv: (-kv[1][-1], kv[0]))[:top]
    return Spend(
        scope_model,
        bucket_model,
        {k: v for k, v in bucket_scope.items() if k[1] in leaders},
        ranked,
    )
