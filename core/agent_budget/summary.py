"""Budget summaries: a scope's counters from the store, shaped for people and the original API.

``Budget.summary()`` returns a :class:`BudgetSummary`; with ``exact=True`` an
:class:`ExactBudgetSummary`, whose amounts are ``Decimal``. The keys the original API had
(``scope``, ``session``, ``day``, ``per_model``, with ``tokens`` and ``cost_usd``) keep their
meaning and their types: token counts are ``int`` and USD amounts are ``float``, rounded to 6
places. The floats are :class:`Usd`, a ``float`` that prints as a plain decimal
(``0.000037``, not ``3.7e-05``) and behaves as a float in every other way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import TypedDict, TypeVar, cast

from .money import nanos_to_decimal, nanos_to_float
from .records import UsageRecord
from .scope import Limit, Metric
from .stores import Level

__all__ = [
    "BudgetSummary",
    "ExactBudgetSummary",
    "ExactLimitUse",
    "ExactModelTotals",
    "ExactSessionTotals",
    "ExactTotals",
    "LimitUse",
    "ModelTotals",
    "PlainFloat",
    "SessionTotals",
    "Totals",
    "Usd",
    "summarize",
]


class PlainFloat(float):
    """A ``float`` that prints as a plain decimal: ``0.000037``, not ``3.7e-05``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return format(Decimal(float.__repr__(self)), "f")

    __str__ = __repr__


class Usd(PlainFloat):
    """A USD amount in a summary: a ``float`` (as the original API returned) that prints as
    a plain decimal."""

    __slots__ = ()


# -- with floats (the default) ---------------------------------------------------------------


class Totals(TypedDict):
    """Committed and held amounts of the session or the rolling day."""

    tokens: int
    cost_usd: float
    reserved_tokens: int
    reserved_cost_usd: float


class ModelTotals(TypedDict):
    """One model family's use since the scope's first use (or ``reset()``)."""

    tokens: int
    cost_usd: float


class LimitUse(TypedDict):
    """One limit against its cap: tokens (``int``) or USD (``float``) as the limit is.

    ``remaining`` is what a new call may still use now: the cap less what is committed and
    what other calls hold, never below 0. ``pct`` is committed / cap (0.5 is 50%).
    """

    used: float
    reserved: float
    limit: float
    remaining: float
    pct: float


class SessionTotals(TypedDict):
    """Use of one ``session_id`` among the records this process retains."""

    tokens: int
    cost_usd: float


class _Summary(TypedDict):
    scope: str
    parent: str | None
    session: Totals
    day: Totals
    per_model: dict[str, ModelTotals]
    limits: dict[str, LimitUse]
    alert_count: int
    record_count: int


class BudgetSummary(_Summary, total=False):
    """What ``Budget.summary()`` returns; ``sessions`` only with ``by_session=True``."""

    sessions: dict[str, SessionTotals]


# -- with Decimals (exact=True) ---------------------------------------------------------------


class ExactTotals(TypedDict):
    tokens: int
    cost_usd: Decimal
    reserved_tokens: int
    reserved_cost_usd: Decimal


class ExactModelTotals(TypedDict):
    tokens: int
    cost_usd: Decimal


class ExactLimitUse(TypedDict):
    """As :class:`LimitUse`; USD limits' amounts are exact ``Decimal``s."""

    used: int | Decimal
    reserved: int | Decimal
    limit: int | Decimal
    remaining: int | Decimal
    pct: float


class ExactSessionTotals(TypedDict):
    tokens: int
    cost_usd: Decimal


class _ExactSummary(TypedDict):
    scope: str
    parent: str | None
    session: ExactTotals
    day: ExactTotals
    per_model: dict[str, ExactModelTotals]
    limits: dict[str, ExactLimitUse]
    alert_count: int
    record_count: int


class ExactBudgetSummary(_ExactSummary, total=False):
    """What ``Budget.summary(exact=True)`` returns."""

    sessions: dict[str, ExactSessionTotals]


_M = TypeVar("_M", float, Decimal)


def _usd(nanos: int) -> float:
    return Usd(nanos_to_float(nanos))


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
) -> BudgetSummary | ExactBudgetSummary:
    """``session``, ``day`` (rolling 24 h) and ``per_model`` token and USD totals, plus every
    limit's use. USD are :class:`Usd` floats rounded to 6 places, or Decimals with
    ``exact``; ``by_session`` breaks ``records`` (this process's retained ones) down by
    session id."""
    args = (scope, parent, counters, limits, alert_count, record_count, records, by_session)
    if exact:
        return cast("ExactBudgetSummary", _summarize(nanos_to_decimal, *args))
    return cast("BudgetSummary", _summarize(_usd, *args))


def _summarize(
    money: Callable[[int], _M],
    scope: str,
    parent: str | None,
    counters: Mapping[str, Level],
    limits: Iterable[Limit],
    alert_count: int,
    record_count: int,
    records: Iterable[UsageRecord],
    by_session: bool,
) -> dict[str, object]:
    def pair(tokens_metric: str, cost_metric: str) -> dict[str, int | _M]:
        tok = counters.get(tokens_metric, Level())
        cost = counters.get(cost_metric, Level())
        return {
            "tokens": tok.committed,
            "cost_usd": money(cost.committed),
            "reserved_tokens": tok.reserved,
            "reserved_cost_usd": money(cost.reserved),
        }

    per_model: dict[str, dict[str, int | _M]] = {}
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
    by_limit: dict[str, dict[str, int | float | _M]] = {}
    for limit in limits:
        level = counters.get(limit.metric, Level())
        left = max(limit.amount - level.committed - level.reserved, 0)
        amounts = (level.committed, level.reserved, limit.amount, left)
        shown = [money(n) if limit.unit == "usd" else n for n in amounts]
        by_limit[limit.limit_type] = {
            "used": shown[0],
            "reserved": shown[1],
            "limit": shown[2],
            "remaining": shown[3],
            "pct": PlainFloat(round(level.committed / limit.amount, 6) if limit.amount else 1),
        }
    out: dict[str, object] = {
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
        sessions: dict[str, list[int]] = {}
        for rec in records:
            entry2 = sessions.setdefault(rec.session_id, [0, 0])
            entry2[0] += rec.total_tokens
            entry2[1] += rec.cost_nanos
        out["sessions"] = {
            sid: {"tokens": tokens, "cost_usd": money(nanos)}
            for sid, (tokens, nanos) in sessions.items()
        }
    return out
