"""Which counters a call touches, in which scopes, against which limits: a Budget's lines.

A call of ``tokens`` / ``cost`` becomes one :class:`~agent_budget.stores.Line` per counter
of every scope in the budget's chain: the session, the rolling day, the model, and every
extra window; reserve and check send only the lines that carry a limit, commit sends them
all. What does not change from call to call (which counters, which limits, which alert
thresholds) is a :class:`LinePlan` cached per model, mode and session-or-not; what does (the
session scope of a conversation, the start of a calendar period) is filled in per call. On
a :class:`~agent_budget.stores.MemoryStore` a plan also keeps the store's prepared lines, so
a call sends its two amounts instead of building lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, NamedTuple

from .scope import Limit, Metric
from .stores import Line, Store
from .stores.base import new_tuple, session_scope
from .stores.memory import MemoryStore, Prepared
from .windows import period_bounds

if TYPE_CHECKING:
    from .budget import Budget

__all__ = ["LinePlan", "LineSpec", "Mode", "build_specs", "make_lines"]

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


_SESSIONS_KEPT = 256  # prepared lines kept per plan for conversations (session scopes)


class LinePlan:
    """Everything about the lines of one kind of call that does not change per call.

    ``specs`` are the lines; ``alerts`` the lines with a limit to alert on, as ``(index,
    spec, threshold, alerter, fired)``: ``threshold`` is the least committed total that can
    fire an alert (its WARNING threshold, at least 1), ``fired`` the alerter's record of
    limits that fired (while it is empty nothing needs re-arming); ``periodic`` is True when
    some line may carry a period (a conversation's session epoch, a calendar window).
    """

    __slots__ = (
        "_prepared",
        "_sessions",
        "_store",
        "alerts",
        "limits",
        "per_session",
        "periodic",
        "specs",
        "which",
    )

    def __init__(self, specs: tuple[LineSpec, ...]) -> None:
        self.specs = specs
        self.which = tuple(1 if spec.is_cost else 0 for spec in specs)
        self.limits = tuple(spec.limit for spec in specs)
        self.per_session = any(spec.per_session for spec in specs)
        self.periodic = self.per_session or any(spec.calendar is not None for spec in specs)
        self._bind()

    def _bind(self) -> None:
        specs = self.specs
        alerts = []
        for index, spec in enumerate(specs):
            if spec.target is not None:
                alerter = spec.budget._alerter
                threshold = alerter.warn_at[spec.target.limit_type] or 1
                alerts.append((index, spec, threshold, alerter, alerter.state.fired))
        self.alerts = tuple(alerts)
        self._store: Store | None = None
        self._prepared: Prepared | None = None
        self._sessions: dict[str, Prepared | None] = {}

    def rebind(self, budget: Budget) -> LinePlan:
        """This plan for ``budget``, a clone of the one budget whose lines it holds (the same
        limits, another scope): what does not depend on the scope is shared."""
        plan: LinePlan = object.__new__(LinePlan)
        plan.specs = tuple([new_tuple(LineSpec, (budget, *spec[1:])) for spec in self.specs])
        plan.which = self.which
        plan.limits = self.limits
        plan.per_session = self.per_session
        plan.periodic = self.periodic
        plan._bind()
        return plan

    def lines(self, tokens: int, cost: int, session_id: str, now: float) -> list[Line]:
        """The call's lines (see :func:`make_lines`)."""
        return make_lines(self.specs, tokens, cost, session_id, now)

    def periods(self, now: float) -> list[int | None] | None:
        """The period each line carries now, or None when none carries one."""
        if not self.periodic:
            return None
        out: list[int | None] = []
        for spec in self.specs:
            if spec.per_session:
                out.append(spec.budget._session_epoch or None)
            elif spec.calendar is not None:
                out.append(period_bounds(spec.calendar[0], spec.calendar[1], now)[0])
            else:
                out.append(None)
        return out if any(p is not None for p in out) else None

    def prepared(self, store: Store, session_id: str) -> tuple[MemoryStore, Prepared] | None:
        """The store's prepared lines for this plan (and conversation), or None when the
        store has no fast path."""
        if store is not self._store:
            if not isinstance(store, MemoryStore):
                return None
            self._store = store
            self._prepared = None
            self._sessions = {}
        assert isinstance(store, MemoryStore)
        if not self.per_session:
            found = self._prepared
            if found is None:
                found = self._prepared = self._prepare(store, "")
        else:
            sessions = self._sessions
            found = sessions.get(session_id)
            if found is None:
                if len(sessions) >= _SESSIONS_KEPT:
                    sessions.clear()
                found = sessions[session_id] = self._prepare(store, session_id)
        return (store, found) if found is not None else None

    def _prepare(self, store: MemoryStore, session_id: str) -> Prepared | None:
        keys = [
            (
                session_scope(spec.budget.name, session_id)
                if spec.per_session
                else spec.budget.name,
                spec.metric,
            )
            for spec in self.specs
        ]
        return store.prepare(keys, self.which, self.limits, [alert[0] for alert in self.alerts])
