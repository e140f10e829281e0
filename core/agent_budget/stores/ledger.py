"""The ledger and events contract every store shares: row fields, filters, aggregation.

A store's *ledger* keeps one row per committed call (what ``Store.commit`` received as
``record``), bounded by the store's retention; its *events* log keeps refusals and alerts.
Rows are plain dicts with the fields of :data:`LEDGER_FIELDS` / :data:`EVENT_FIELDS`, the
same on every store. :func:`aggregate_rows` is the generic aggregation every store can fall
back on; stores that can group natively (SQL ``GROUP BY``) override ``Store.aggregate``.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..validate import check_name

__all__ = [
    "EVENT_FIELDS",
    "EVENT_KINDS",
    "GROUP_KEYS",
    "LEDGER_FIELDS",
    "SUM_FIELDS",
    "EventFilter",
    "LedgerFilter",
    "aggregate_rows",
    "check_aggregate",
    "check_limit",
    "event_row",
    "finish_groups",
    "group_dict",
    "ledger_row",
]

LEDGER_FIELDS = (
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
    "cost_usd",
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
"""The fields of every ledger row, on every store (``cache_write_1h_tokens`` is the part of
``cache_write_tokens`` written for an hour; ``price_date``, ``price_id`` and ``price_tier``
say which dated row and tier priced the call)."""

SUM_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_nanos",
)
"""The integer fields an aggregation sums (plus ``calls`` and ``estimated_calls``)."""

GROUP_KEYS = ("scope", "session_id", "model", "bucket", "price_source", "estimated")
"""What rows can be grouped by; ``bucket`` is the start of the row's time bucket."""

EVENT_KINDS = ("refusal", "alert")

EVENT_FIELDS = (
    "timestamp",
    "kind",
    "scope",
    "caller",
    "limit_type",
    "level",
    "message",
    "model",
    "session_id",
    "used",
    "limit",
    "unit",
)
"""The fields of every events row: ``kind`` is "refusal" or "alert"; ``scope`` is the scope
whose limit acted, ``caller`` the scope the call was made on."""

_ORDERS = ("cost_nanos", "calls", "tokens")


def _scope_set(scope: str | Iterable[str] | None) -> frozenset[str] | None:
    if scope is None:
        return None
    if isinstance(scope, str):
        check_name("scope", scope)
        return frozenset((scope,))
    names = frozenset(scope)
    for name in names:
        check_name("scope", name)
    return names


def _time(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of epoch seconds, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class LedgerFilter:
    """Which ledger rows a query wants: ``since <= timestamp < until``, the scope(s), one
    session, one model (each None for any)."""

    since: float | None = None
    until: float | None = None
    scopes: frozenset[str] | None = None
    session: str | None = None
    model: str | None = None

    @classmethod
    def of(
        cls,
        *,
        since: float | None = None,
        until: float | None = None,
        scope: str | Iterable[str] | None = None,
        session: str | None = None,
        model: str | None = None,
    ) -> LedgerFilter:
        """A validated filter (a bad argument raises ValueError or TypeError, naming it)."""
        if session is not None and not isinstance(session, str):
            raise TypeError(f"session must be a str, got {type(session).__name__}")
        if model is not None:
            check_name("model", model)
        return cls(_time("since", since), _time("until", until), _scope_set(scope), session, model)

    def matches(self, row: Mapping[str, Any]) -> bool:
        ts = row["timestamp"]
        if self.since is not None and ts < self.since:
            return False
        if self.until is not None and ts >= self.until:
            return False
        if self.scopes is not None and row["scope"] not in self.scopes:
            return False
        if self.session is not None and row["session_id"] != self.session:
            return False
        return self.model is None or row["model"] == self.model


@dataclass(frozen=True)
class EventFilter:
    """Which events a query wants: a time range, the scope(s) (the acting scope or the
    caller), and the kinds."""

    since: float | None = None
    until: float | None = None
    scopes: frozenset[str] | None = None
    kinds: frozenset[str] | None = None

    @classmethod
    def of(
        cls,
        *,
        since: float | None = None,
        until: float | None = None,
        scope: str | Iterable[str] | None = None,
        kinds: Collection[str] | None = None,
    ) -> EventFilter:
        kind_set = None
        if kinds is not None:
            kind_set = frozenset([kinds] if isinstance(kinds, str) else kinds)
            unknown = kind_set - set(EVENT_KINDS)
            if unknown:
                raise ValueError(f"unknown event kind(s) {sorted(unknown)}: use {EVENT_KINDS}")
        return cls(_time("since", since), _time("until", until), _scope_set(scope), kind_set)

    def matches(self, row: Mapping[str, Any]) -> bool:
        ts = row["timestamp"]
        if self.since is not None and ts < self.since:
            return False
        if self.until is not None and ts >= self.until:
            return False
        if self.kinds is not None and row["kind"] not in self.kinds:
            return False
        return (
            self.scopes is None
            or row["scope"] in self.scopes
            or row.get("caller", "") in self.scopes
        )


def check_limit(limit: int | None) -> int | None:
    """A row limit: None, or a non-negative int."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
    return limit


def check_aggregate(
    by: Sequence[str], bucket: int | None, order_by: str, limit: int | None
) -> tuple[str, ...]:
    """Validate an aggregation's arguments; returns ``by`` as a tuple."""
    keys = (by,) if isinstance(by, str) else tuple(by)
    for key in keys:
        if key not in GROUP_KEYS:
            raise ValueError(f"cannot group by {key!r}: use any of {GROUP_KEYS}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"group keys repeat: {keys}")
    if "bucket" in keys and (
        isinstance(bucket, bool) or not isinstance(bucket, int) or bucket <= 0
    ):
        raise ValueError(f"grouping by bucket needs bucket= seconds > 0, got {bucket!r}")
    if order_by not in _ORDERS:
        raise ValueError(f"order_by must be one of {_ORDERS}, got {order_by!r}")
    check_limit(limit)
    return keys


def ledger_row(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A ledger row from what a commit received: every field of :data:`LEDGER_FIELDS`,
    defaults for any a record lacked (records written by older versions)."""
    cost = int(payload.get("cost_nanos", 0) or 0)
    return {
        "timestamp": float(payload.get("timestamp", 0.0)),
        "scope": str(payload.get("scope", "") or ""),
        "session_id": str(payload.get("session_id", "") or ""),
        "model": str(payload.get("model", "") or ""),
        "input_tokens": int(payload.get("input_tokens", 0) or 0),
        "output_tokens": int(payload.get("output_tokens", 0) or 0),
        "cache_read_tokens": int(payload.get("cache_read_tokens", 0) or 0),
        "cache_write_tokens": int(payload.get("cache_write_tokens", 0) or 0),
        "reasoning_tokens": int(payload.get("reasoning_tokens", 0) or 0),
        "cost_nanos": cost,
        "cost_usd": cost / 1_000_000_000,
        "estimated": bool(payload.get("estimated", False)),
        "price_source": str(payload.get("price_source", "") or ""),
        "reservation_id": str(payload.get("reservation_id", "") or ""),
        "metadata": dict(payload.get("metadata") or {}),
        "cache_write_1h_tokens": int(payload.get("cache_write_1h_tokens", 0) or 0),
        "web_searches": int(payload.get("web_searches", 0) or 0),
        "price_date": str(payload.get("price_date", "") or ""),
        "price_id": str(payload.get("price_id", "") or ""),
        "price_tier": str(payload.get("price_tier", "") or ""),
    }


def event_row(event: Mapping[str, Any]) -> dict[str, Any]:
    """An events row: every field of :data:`EVENT_FIELDS` (an unknown kind is an error)."""
    kind = event.get("kind")
    if kind not in EVENT_KINDS:
        raise ValueError(f"event kind must be one of {EVENT_KINDS}, got {kind!r}")
    scope = event.get("scope")
    if not isinstance(scope, str) or not scope:
        raise ValueError(f"an event needs its scope, got {scope!r}")

    tokens = event.get("unit") == "tokens"

    def number(name: str) -> float | int | None:
        """Tokens are whole numbers (``3100``, not ``3100.0``); money stays a float."""
        value = event.get(name)
        if value is None:
            return None
        amount = float(value)
        return int(amount) if tokens and amount.is_integer() else amount

    return {
        "timestamp": float(event.get("timestamp", 0.0)),
        "kind": kind,
        "scope": scope,
        "caller": str(event.get("caller") or scope),
        "limit_type": str(event.get("limit_type") or ""),
        "level": str(event.get("level") or ""),
        "message": str(event.get("message") or ""),
        "model": str(event.get("model") or ""),
        "session_id": str(event.get("session_id") or ""),
        "used": number("used"),
        "limit": number("limit"),
        "unit": str(event.get("unit") or ""),
    }


def _order_key(order_by: str) -> Any:
    if order_by == "tokens":
        return lambda g: g["input_tokens"] + g["output_tokens"]
    return lambda g: g[order_by]


def finish_groups(
    groups: Iterable[dict[str, Any]], order_by: str, limit: int | None
) -> list[dict[str, Any]]:
    """Groups sorted by ``order_by`` (largest first, then by their keys) and cut to ``limit``."""
    out = list(groups)
    key = _order_key(order_by)
    out.sort(key=lambda g: (-key(g), [str(g.get(k, "")) for k in GROUP_KEYS]))
    return out if limit is None else out[:limit]


def aggregate_rows(
    rows: Iterable[Mapping[str, Any]],
    by: Sequence[str],
    *,
    bucket: int | None = None,
    order_by: str = "cost_nanos",
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Sum ledger rows per group: ``calls``, ``estimated_calls`` and every :data:`SUM_FIELDS`
    field, keyed by the ``by`` fields (``bucket``: the start of the row's time bucket). Sorted
    by ``order_by`` (cost, calls or tokens; largest first) and cut to ``limit`` groups."""
    keys = check_aggregate(by, bucket, order_by, limit)
    size = bucket or 1
    groups: dict[tuple[Any, ...], list[int]] = {}
    width = len(SUM_FIELDS)
    for row in rows:
        key = tuple(
            (int(row["timestamp"] // size) * size if k == "bucket" else row[k]) for k in keys
        )
        acc = groups.get(key)
        if acc is None:
            acc = groups[key] = [0] * (width + 2)
        acc[0] += 1
        if row["estimated"]:
            acc[1] += 1
        for i, name in enumerate(SUM_FIELDS, 2):
            acc[i] += row[name]
    return finish_groups(_group_dicts(keys, groups.items()), order_by, limit)


def _group_dicts(
    keys: Sequence[str], items: Iterable[tuple[tuple[Any, ...], Sequence[int]]]
) -> Iterator[dict[str, Any]]:
    for key, acc in items:
        group: dict[str, Any] = dict(zip(keys, key, strict=True))
        group["calls"] = acc[0]
        group["estimated_calls"] = acc[1]
        for i, name in enumerate(SUM_FIELDS, 2):
            group[name] = acc[i]
        yield group


def group_dict(keys: Sequence[str], key: Sequence[Any], sums: Sequence[int]) -> dict[str, Any]:
    """One aggregate row from its key values and ``[calls, estimated_calls, *SUM_FIELDS]``."""
    return next(_group_dicts(keys, [(tuple(key), sums)]))
