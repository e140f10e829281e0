"""What a :class:`~agent_budget.Budget` says about itself: prices, what is left, raw counters,
summaries and recent records, and the resets that start a new session or a clean slate."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Literal, overload

from .remaining import Remaining, remaining_of
from .stores import Level
from .stores.base import session_scope
from .summary import BudgetSummary, ExactBudgetSummary, summarize
from .usage import Usage
from .validate import check_session_id, check_tokens
from .windows import period_bounds

if TYPE_CHECKING:
    from .budget import Budget

__all__ = [
    "estimate",
    "estimate_exact",
    "remaining",
    "reset",
    "reset_session",
    "summary",
    "usage",
]


def estimate(self: Budget, model: str, input_tokens: int, output_tokens: int = 0) -> float:
    """Cost in USD (float) of a call, without recording anything."""
    return float(self.estimate_exact(model, input_tokens, output_tokens))


def estimate_exact(self: Budget, model: str, input_tokens: int, output_tokens: int = 0) -> Decimal:
    """Exact cost in USD of a call of this size, as :meth:`record` would charge it now
    (the unknown-model policy applies)."""
    check_tokens("input_tokens", input_tokens)
    check_tokens("output_tokens", output_tokens)
    quote = self._resolve(model).quote(self.clock())
    return quote.rates.cost(Usage(input_tokens, output_tokens))


def remaining(self: Budget, model: str | None = None, *, session_id: str = "") -> Remaining:
    """What is left under every limit of this scope and its ancestors, net of the holds
    of calls in flight (tokens as ints, USD as exact Decimals); with ``model``, per-model
    limits of other models are left out; with ``session_id``, the session limits are
    that conversation's. ``remaining().tokens`` / ``.usd`` are the tightest hard limits."""
    return remaining_of(self, model, session_id)


def usage(self: Budget, *, session_id: str = "") -> dict[str, Level]:
    """Raw counters of this scope from the store: metric -> Level(committed, reserved).

    Calendar windows read as zero once their period is over. With ``session_id``, the
    counters of that session (conversation) of the scope."""
    check_session_id(session_id)
    now = self.clock()
    if session_id:
        epoch = self._session_epoch
        periods = {"session:tokens": epoch, "session:cost": epoch} if epoch else None
        scope = session_scope(self.name, session_id)
        return dict(self.store.read(scope, now=now, group=self.group, periods=periods))
    periods = {
        lim.metric: period_bounds(lim.calendar[0], lim.calendar[1], now)[0]
        for lim in self._limits
        if lim.calendar is not None
    }
    return dict(self.store.read(self.name, now=now, group=self.group, periods=periods or None))


@overload
def summary(
    self: Budget, *, exact: Literal[False] = False, by_session: bool = False
) -> BudgetSummary: ...


@overload
def summary(
    self: Budget, *, exact: Literal[True], by_session: bool = False
) -> ExactBudgetSummary: ...


def summary(
    self: Budget, *, exact: bool = False, by_session: bool = False
) -> BudgetSummary | ExactBudgetSummary:
    """Current usage: ``session``, ``day`` (rolling 24 h) and ``per_model`` token and USD
    totals, plus every limit's use and ``remaining``. USD are floats rounded to 6 places
    (printed as plain decimals), or Decimals with ``exact=True``. ``by_session`` breaks
    the retained records down by session_id. See :mod:`agent_budget.summary`."""
    counters = self.usage()
    with self._lock:
        record_count = len(self._records)
        records = list(self._records) if by_session else []
    return summarize(
        scope=self.name,
        parent=self.parent.name if self.parent else None,
        counters=counters,
        limits=self._limits,
        alert_count=self._alerter.count,
        record_count=record_count,
        records=records,
        exact=exact,
        by_session=by_session,
    )


def reset_session(self: Budget, session_id: str = "") -> None:
    """Start a new session: zero the session counters (day and per-model stay).

    With ``session_id``, only that conversation's counters. Without, the scope's whole
    session and, for calls made through this Budget object, every conversation's
    counters (they restart at their next use)."""
    check_session_id(session_id)
    now = self.clock()
    if session_id:
        scope = session_scope(self.name, session_id)
        self.store.reset(scope, "session:", now=now, group=self.group)
    else:
        self.store.reset(self.name, "session:", now=now, group=self.group)
        self._session_epoch = max(self._session_epoch + 1, int(now))
    self._alerter.rearm(
        limit.limit_type for limit in self._limits if limit.metric.startswith("session:")
    )


def reset(self: Budget) -> None:
    """Zero every counter of this scope: session, day window and per-model."""
    self.store.reset(self.name, "", now=self.clock(), group=self.group)
    self._alerter.clear()
