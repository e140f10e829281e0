"""Who spent what, from any process: per tenant, session, model and hour or day; top
spenders; refusals and alerts; what remains of every limit, with its unit.

:func:`build_report` reads a store (opened with :func:`open_for_reading`, which never
writes or creates anything) and returns one JSON-safe dict that the CLI prints as tables,
JSON or CSV, the dashboard draws, and notebooks plot. Counts come from the store's ledger,
events log and counters, so every process's calls are there; nothing comes from the
reading process. Money is exact: ``cost_usd`` values are decimal strings (``"0.0075"``),
``cost_nanos`` integers. Times are epoch seconds, buckets aligned to UTC.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .errors import UnknownScopeError
from .events import events_in_unit
from .money import nanos_to_decimal
from .rates import RateTable
from .report_spend import COUNTED, add, read_spend
from .scope import BudgetScope, Limit
from .stores import Level, Store, open_store
from .windows import period_bounds

__all__ = [
    "BUCKETS",
    "ScopeInfo",
    "build_report",
    "descendants",
    "iso",
    "limit_periods",
    "limit_rows",
    "open_for_reading",
    "parse_time",
    "redact_url",
    "scope_registry",
]

BUCKETS = {"hour": 3600, "day": 86_400}
"""Bucket names the report accepts, in seconds."""
DEFAULT_SPAN = {"hour": 86_400, "day": 7 * 86_400}
"""The default period for each bucket: the last 24 hours, or the last 7 days."""
MAX_BUCKETS = 5_000
OTHER = "(other)"
_UNITS = {"tokens": "tokens", "usd": "USD"}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def open_for_reading(url: str | Store) -> Store:
    """A store opened only to read: nothing is created (a missing SQLite file is an error),
    written, or loaded on a server. A Store instance is returned as is."""
    if isinstance(url, Store):
        return url
    return open_store(url, read_only=True)


def redact_url(url: str) -> str:
    """A store URL without its password, for output."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hosts}" if user else f":***@{hosts}"))


def parse_time(text: str | float | None, now: float) -> float | None:
    """Epoch seconds from ``24h`` / ``7d`` / ``90m`` (that long before ``now``), an ISO date
    or date-time (UTC unless it says otherwise), or epoch seconds. None stays None."""
    if text is None:
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    value = str(text).strip()
    match = _DURATION.match(value)
    if match:
        return now - float(match.group(1)) * _SECONDS[match.group(2).lower()]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"cannot read the time {value!r}: use a duration back from now (24h, 7d, 90m), "
            "an ISO date or date-time (2026-11-01, 2026-11-01T09:30Z) or epoch seconds"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def iso(ts: float) -> str:
    """Epoch seconds as ISO 8601 UTC (``2026-11-01T09:00:00Z``)."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the scope registry ----------------------------------------------------------------------


@dataclass(frozen=True)
class ScopeInfo:
    """One scope as the store's registry has it: parent, template prefix (for scopes a
    template made) and limits (None where the saved definition cannot be read)."""

    name: str
    parent: str | None
    template: str | None
    scope: BudgetScope | None


def scope_registry(store: Store) -> dict[str, ScopeInfo]:
    """Every scope saved in the store (registered, or made from a template by any process)."""
    out: dict[str, ScopeInfo] = {}
    for name, data in store.load_scopes().items():
        try:
            scope: BudgetScope | None = BudgetScope.from_dict({**data, "name": name})
        except (TypeError, ValueError, KeyError):
            scope = None
        parent = data.get("parent")
        template = data.get("template")
        out[name] = ScopeInfo(
            name, str(parent) if parent else None, str(template) if template else None, scope
        )
    return out


def ancestors(name: str, registry: Mapping[str, ScopeInfo]) -> list[str]:
    """``name`` and its ancestors, nearest first (as far as the registry knows them)."""
    chain = [name]
    while True:
        info = registry.get(chain[-1])
        if info is None or info.parent is None or info.parent in chain or len(chain) > 64:
            return chain
        chain.append(info.parent)


def descendants(names: Iterable[str], registry: Mapping[str, ScopeInfo]) -> set[str]:
    """``names`` and every scope below them in the registry."""
    children: dict[str, list[str]] = {}
    for info in registry.values():
        if info.parent is not None:
            children.setdefault(info.parent, []).append(info.name)
    found: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo.extend(children.get(name, ()))
    return found


def _rollup(name: str, registry: Mapping[str, ScopeInfo], prefix: str | None) -> str:
    """The scope a row counts under: its nearest ancestor (or itself) named ``prefix...``."""
    if prefix is None:
        return name
    for node in ancestors(name, registry):
        if node.startswith(prefix):
            return node
    return name


# -- limits ---------------------------------------------------------------------------------


def _window(limit: Limit) -> str:
    """What a limit counts over, in words: "session", "rolling 24h", "rolling 1h",
    "calendar month (Europe/Paris)", or "since first use" (per-model totals)."""
    if limit.calendar is not None:
        return f"calendar {limit.calendar[0]} ({limit.calendar[1]})"
    if limit.metric.startswith("session:"):
        return "session"
    if limit.metric.startswith("day:"):
        return "rolling 24h"
    if limit.metric.startswith("roll:"):
        seconds = int(limit.metric.split(":")[1])
        for size, unit in ((86_400, "d"), (3_600, "h"), (60, "m")):
            if seconds % size == 0:
                return f"rolling {seconds // size}{unit}"
        return f"rolling {seconds}s"
    return "since first use"


def _amount(limit: Limit, value: int) -> int | str:
    return value if limit.unit == "tokens" else str(nanos_to_decimal(value))


def limit_periods(limits: Iterable[Limit], now: float) -> dict[str, int]:
    """The current period start of each calendar limit's counter (as ``Budget.usage``
    reads them), so a counter of a past period reads as zero."""
    return {
        lim.metric: period_bounds(lim.calendar[0], lim.calendar[1], now)[0]
        for lim in limits
        if lim.calendar is not None
    }


def limit_rows(
    store: Store,
    registry: Mapping[str, ScopeInfo],
    names: Iterable[str],
    *,
    now: float,
    rates: RateTable | None = None,
) -> list[dict[str, Any]]:
    """Every limit of the named scopes with what is used, held and left, in its unit
    (tokens, or USD as a decimal string), read from the store without writing."""
    table = rates or RateTable()
    defined = {
        name: scope
        for name in dict.fromkeys(names)
        if name in registry and (scope := registry[name].scope) is not None
    }
    wanted = list(defined)
    groups = {name: ancestors(name, registry)[-1] for name in wanted}
    limits = {name: scope.limits(table.canonical) for name, scope in defined.items()}
    periods = {name: limit_periods(found, now) for name, found in limits.items()}
    counters = store.peek_many(groups, now=now, periods=periods) if groups else {}
    rows: list[dict[str, Any]] = []
    for name in wanted:
        info = registry[name]
        assert info.scope is not None
        levels = counters.get(name, {})
        for limit in limits[name]:
            level = levels.get(limit.metric, Level())
            left = limit.amount - level.committed - level.reserved
            rows.append(
                {
                    "scope": name,
                    "parent": info.parent,
                    "limit": limit.limit_type,
                    "window": _window(limit),
                    "unit": _UNITS[limit.unit],
                    "hard": info.scope.hard_stop,
                    "limit_value": _amount(limit, limit.amount),
                    "used": _amount(limit, level.committed),
                    "reserved": _amount(limit, level.reserved),
                    "remaining": _amount(limit, max(left, 0)),
                    "over_by": _amount(limit, max(-left, 0)),
                    "pct_used": round(level.committed / limit.amount, 6) if limit.amount else 1.0,
                }
            )
    rows.sort(key=lambda r: (-r["pct_used"], r["scope"], r["limit"]))
    return rows


# -- the report -----------------------------------------------------------------------------


def _money(group: dict[str, Any]) -> dict[str, Any]:
    """An aggregate row with ``tokens`` and exact ``cost_usd`` added."""
    group["tokens"] = group["input_tokens"] + group["output_tokens"]
    group["cost_usd"] = str(nanos_to_decimal(group["cost_nanos"]))
    return group


def _row(keys: Mapping[str, Any], sums: Sequence[int]) -> dict[str, Any]:
    """An aggregate row: its keys, every sum, ``tokens`` and exact ``cost_usd``."""
    return _money({**keys, **dict(zip(COUNTED, sums, strict=True))})


def _ranked(table: Mapping[Any, Sequence[int]], names: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of ``{key tuple: sums}``, largest cost first (then by key)."""
    rows = [_row(dict(zip(names, key, strict=True)), sums) for key, sums in table.items()]
    rows.sort(key=lambda r: (-r["cost_nanos"], [str(r[n]) for n in names]))
    return rows


def _summed(pairs: Iterable[tuple[Any, Sequence[int]]]) -> dict[Any, list[int]]:
    out: dict[Any, list[int]] = {}
    for key, sums in pairs:
        acc = out.get(key)
        if acc is None:
            out[key] = list(sums)
        else:
            add(acc, sums)
    return out


def _series(
    per_bucket: Mapping[tuple[int, str], Sequence[int]],
    totals: Mapping[int, Sequence[int]],
    name: str,
) -> list[dict[str, Any]]:
    """Series rows per (bucket, ``name``), with "(other)" holding what each bucket's total
    has beyond the named rows."""
    shown = _summed((bucket, sums) for (bucket, _), sums in per_bucket.items())
    rows = [_row({"bucket": b, name: key}, sums) for (b, key), sums in per_bucket.items()]
    for bucket, total in totals.items():
        rest = [t - s for t, s in zip(total, shown.get(bucket, [0] * len(COUNTED)), strict=True)]
        if rest[0]:
            rows.append(_row({"bucket": bucket, name: OTHER}, rest))
    rows.sort(key=lambda r: (r["bucket"], -r["cost_nanos"], r[name] == OTHER, r[name]))
    for row in rows:
        row["bucket_iso"] = iso(row["bucket"])
    return rows


def build_report(
    store: Store,
    *,
    since: float | None = None,
    until: float | None = None,
    bucket: str = "hour",
    scopes: Sequence[str] | None = None,
    session: str | None = None,
    model: str | None = None,
    rollup: str | None = None,
    top: int = 10,
    events: int = 20,
    sessions: bool = True,
    now: float | None = None,
    rates: RateTable | None = None,
    url: str | None = None,
) -> dict[str, Any]:
    """The report of ``store`` over ``since <= t < until`` (default: the last 24 hours for
    hourly buckets, 7 days for daily ones, up to now).

    ``scopes`` narrows it to those scopes and every scope below them; ``session`` and
    ``model`` to one of each. ``rollup`` (a name prefix such as ``"user:"``) counts each
    call under its nearest ancestor with that prefix, so conversations roll up to their
    tenant. ``top`` bounds the spender, session and series lists (the rest is summed as
    "(other)" in series); ``events`` bounds the recent refusals and alerts listed;
    ``sessions=False`` skips the per-session breakdown (a query over every row).
    """
    if bucket not in BUCKETS:
        raise ValueError(f"bucket must be one of {sorted(BUCKETS)}, got {bucket!r}")
    for name, value in (("top", top), ("events", events)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    size = BUCKETS[bucket]
    clock = store.now() if now is None else now
    now_ts = time.time() if clock is None else clock
    end = now_ts if until is None else until
    start = end - DEFAULT_SPAN[bucket] if since is None else since
    if start >= end:
        raise ValueError(
            f"the period is empty: since ({iso(start)}) is not before until ({iso(end)})"
        )
    first = int(start // size) * size
    if (end - first) / size > MAX_BUCKETS:
        raise ValueError(
            f"{(end - first) / size:.0f} {bucket} buckets is too many (at most {MAX_BUCKETS}): "
            "shorten the period or use --bucket day"
        )
    registry = scope_registry(store)
    wanted = None
    if scopes:
        for name in scopes:
            if name not in registry and not store.ledger(scope=name, limit=1):
                known = ", ".join(sorted(registry)[:20]) or "none"
                raise UnknownScopeError(f"no scope {name!r} in the store (known: {known})")
        wanted = descendants(scopes, registry)
    query: dict[str, Any] = {
        "since": start,
        "until": end,
        "scope": wanted,
        "session": session,
        "model": model,
    }
    rolled: dict[str, str] = {}

    def roll(name: str) -> str:
        found = rolled.get(name)
        if found is None:
            found = rolled[name] = _rollup(name, registry, rollup)
        return found

    def lead(scope_model: Mapping[tuple[str, str], Sequence[int]]) -> set[str]:
        cost = _summed((roll(scope), sums) for (scope, _), sums in scope_model.items())
        best = set(sorted(cost, key=lambda name: (-cost[name][-1], name))[:top])
        return {scope for scope, _ in scope_model if roll(scope) in best}

    spend = read_spend(store, query, size, top, lead, sessions=sessions)
    by_scope = _ranked(
        _summed(((roll(scope),), sums) for (scope, _), sums in spend.scope_model.items()),
        ("scope",),
    )
    for row in by_scope:
        info = registry.get(row["scope"])
        row["parent"] = info.parent if info else None
        row["template"] = info.template if info else None
    by_model = _ranked(
        _summed(((model,), sums) for (_, model), sums in spend.scope_model.items()), ("model",)
    )
    everything = _summed(((), sums) for sums in spend.scope_model.values())
    total = _row({}, everything.get((), [0] * len(COUNTED)))
    per_bucket = _summed((bucket, sums) for (bucket, _), sums in spend.bucket_model.items())
    leaders = {row["model"] for row in by_model[:top]}
    series_model = _series(
        {k: v for k, v in spend.bucket_model.items() if k[1] in leaders}, per_bucket, "model"
    )
    series_scope = _series(
        _summed(((b, roll(scope)), sums) for (b, scope), sums in spend.bucket_scope.items()),
        per_bucket,
        "scope",
    )
    by_session = [_row({"session_id": sid}, sums) for sid, sums in spend.sessions]
    kept = [events_in_unit(e) for e in store.events(since=start, until=end, scope=wanted)]
    refusals = [e for e in kept if e["kind"] == "refusal"]
    alerts = [e for e in kept if e["kind"] == "alert"]
    refused_by: dict[tuple[str, str], int] = {}
    for event in refusals:
        key = (event["scope"], event["limit_type"])
        refused_by[key] = refused_by.get(key, 0) + 1
    limit_scopes: Iterable[str] = registry
    if scopes:
        limit_scopes = [a for name in scopes for a in ancestors(name, registry)]
    return {
        "store": redact_url(url) if url else type(store).__name__,
        "generated_at": now_ts,
        "generated_at_iso": iso(now_ts),
        "period": {
            "since": start,
            "until": end,
            "since_iso": iso(start),
            "until_iso": iso(end),
            "bucket": bucket,
            "bucket_seconds": size,
            "buckets": list(range(first, math.ceil(end), size)),
        },
        "filters": {
            "scopes": list(scopes) if scopes else None,
            "session": session,
            "model": model,
            "rollup": rollup,
        },
        "scope_count": len(registry),
        "totals": total,
        "by_scope": by_scope,
        "top_spenders": by_scope[:top],
        "by_model": by_model,
        "by_session": by_session,
        "series_by_scope": series_scope,
        "series_by_model": series_model,
        "refusals": {
            "count": len(refusals),
            "by_limit": [
                {"scope": s, "limit": lim, "count": n}
                for (s, lim), n in sorted(refused_by.items(), key=lambda kv: (-kv[1], kv[0]))
            ],
            "recent": refusals[:events],
        },
        "alerts": {"count": len(alerts), "recent": alerts[:events]},
        "events_all_time": store.event_counts(scope=wanted),
        "limits": limit_rows(store, registry, limit_scopes, now=now_ts, rates=rates),
    }
