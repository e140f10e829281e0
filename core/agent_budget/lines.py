"""Which counters a call touches, in which scopes, against which limits: a Budget's lines.

A call of ``tokens`` / ``cost`` becomes one :class:`~agent_budget.stores.Line` per counter
of every scope in the budget's chain: the session, the rolling day, the model, and every
extra window; reserve and check send only the lines that carry a limit, commit sends them
all. What does not change from call to call (which counters, which limits) is a tuple of
:class:`LineSpec` cached per model; what does (the session scope of a conversation, the
start of a calendar period) is filled in per call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, NamedTuple

from .scope import Limit, Metric
from .stores import Line
from .stores.base import new_tuple, session_scope
from .windows import period_bounds

if TYPE_CHECKING:
    from .budget import Budget

__all__ = ["LineSpec", "Mode", "build_specs", "make_lines"]

Mode = Literal["hard", "limited", "all"]
"""``hard``: lines with a limit of a hard-stop scope (reserve); ``limited``: lines with a
limit of any scope (check); ``all``: every counter (commit)."""


class LineSpec(NamedTuple):
    """One line of a call, before the call's amounts are known.

    ``target`` is the limit the line is checked and alerted against (None for a counter
    kept for reports only); ``per_session`` lines go to the call's session scope;
    ``calendar`` lines carry the start of the current period.
    """

    budget: Budget
    metric: str
    is_cost: bool
    limit: int | None
    target: Limit | None
    per_session: bool
    calendar: tuple[str, str] | None


def _metrics(model: str) -> tuple[tuple[str, bool], ...]:
    return (
        (Metric.SESSION_TOKENS, False),
        (Metric.SESSION_COST, True),
        (Metric.DAY_TOKENS, False),
        (Metric.DAY_COST, True),
        (Metric.model_tokens(model), False),
        (Metric.model_cost(model), True),
    )


def build_specs(
    chain: Sequence[Budget], model: str, mode: Mode, with_session: bool
) -> tuple[LineSpec, ...]:
    """The lines of a call to ``model`` for every budget of ``chain``; ``with_session`` is
    True when the call carries a session id."""
    specs: list[LineSpec] = []
    for budget in chain:
        checked = mode == "all" or budget.scope.hard_stop or mode == "limited"
        apart = with_session and budget.scope.per_session_id
        by_metric = budget._by_metric
        for metric, is_cost in _metrics(model):
            limit = by_metric.get(metric)
            if limit is not None and limit.per_session and apart:
                # The limit counts this conversation apart; the scope's whole session is
                # still kept for reports.
                if checked:
                    specs.append(LineSpec(budget, metric, is_cost, limit.amount, limit, True, None))
                if mode == "all":
                    specs.append(LineSpec(budget, metric, is_cost, None, None, False, None))
            elif mode == "all":
                specs.append(LineSpec(budget, metric, is_cost, None, limit, False, None))
            elif limit is not None and checked:
                specs.append(LineSpec(budget, metric, is_cost, limit.amount, limit, False, None))
        for limit in budget.limits:
            if limit.metric.startswith(("roll:", "cal:")) and checked:
                is_cost = limit.unit == "usd"
                amount = None if mode == "all" else limit.amount
                specs.append(
                    LineSpec(budget, limit.metric, is_cost, amount, limit, False, limit.calendar)
                )
    return tuple(specs)


def make_lines(
    specs: Sequence[LineSpec], tokens: int, cost: int, session_id: str, now: float
) -> list[Line]:
    """The lines of one call: ``tokens`` or ``cost`` on each spec's counter."""
    out = []
    for spec in specs:
        budget = spec.budget
        if spec.per_session:
            scope = session_scope(budget.name, session_id)
            period: int | None = budget._session_epoch or None
        elif spec.calendar is not None:
            scope = budget.name
            period = period_bounds(spec.calendar[0], spec.calendar[1], now)[0]
        else:
            scope = budget.name
            period = None
        out.append(
            new_tuple(
                Line, (scope, spec.metric, cost if spec.is_cost else tokens, spec.limit, period)
            )
        )
    return out
