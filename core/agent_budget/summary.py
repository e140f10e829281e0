"""Budget summaries: a scope's counters from the store, shaped for people and the original API."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from .money import nanos_to_decimal, nanos_to_float
from .records import UsageRecord
from .scope import Limit, Metric
from .stores import Level

__all__ = ["summarize"]


def summarize(
    *,
    scope: str,
    parent: str | None,
    counters: Mapping[str, Level],
    limits: Iterable[Limit],
    alert_count: int,
    record_count: int,
    records: Iterable[UsageRecord],
    exact: bool,
    by_session: bool,
) -> dict[str, Any]:
    """``session``, ``day`` (rolling 24 h) and ``per_model`` token and USD totals, plus every
    limit's use. USD are floats rounded to 6 places, or Decimals with ``exact``;
    ``by_session`` breaks ``records`` (this process's retained ones) down by session id."""

    def money(nanos: int) -> float | Decimal:
        return nanos_to_decimal(nanos) if exact else nanos_to_float(nanos)

    def pair(tokens_metric: str, cost_metric: str) -> dict[str, Any]:
        tok = counters.get(tokens_metric, Level())
        cost = counters.get(cost_metric, Level())
        return {
            "tokens": tok.committed,
            "cost_usd": money(cost.committed),
            "reserved_tokens": tok.reserved,
            "reserved_cost_usd": money(cost.reserved),
        }

    per_model: dict[str, dict[str, Any]] = {}
    for metric, level in counters.items():
        parsed = Metric.parse_model(metric)
        if parsed is None:
            continue
        name, kind = parsed
        entry = per_model.setdefault(name, {"tokens": 0, "cost_usd": money(0)})
        if kind == "tokens":
            entry["tokens"] = level.committed
        else:
            entry["cost_usd"] = money(level.committed)
    by_limit: dict[str, dict[str, Any]] = {}
    for limit in limits:
        level = counters.get(limit.metric, Level())
        if limit.unit == "usd":
            used: Any = money(level.committed)
            cap: Any = money(limit.amount)
            held: Any = money(level.reserved)
        else:
            used, cap, held = level.committed, limit.amount, level.reserved
        by_limit[limit.limit_type] = {
            "used": used,
            "reserved": held,
            "limit": cap,
            "pct": round(level.committed / limit.amount, 6) if limit.amount else 1.0,
        }
    out: dict[str, Any] = {
        "scope": scope,
        "parent": parent,
        "session": pair(Metric.SESSION_TOKENS, Metric.SESSION_COST),
        "day": pair(Metric.DAY_TOKENS, Metric.DAY_COST),
        "per_model": per_model,
        "limits": by_limit,
        "alert_count": alert_count,
        "record_count": record_count,
    }
    if by_session:
        sessions: dict[str, dict[str, int]] = {}
        for rec in records:
            entry2 = sessions.setdefault(rec.session_id, {"tokens": 0, "cost_nanos": 0})
            entry2["tokens"] += rec.total_tokens
            entry2["cost_nanos"] += rec.cost_nanos
        out["sessions"] = {
            sid: {"tokens": v["tokens"], "cost_usd": money(v["cost_nanos"])}
            for sid, v in sessions.items()
        }
    return out
