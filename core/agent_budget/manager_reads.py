"""What a :class:`~agent_budget.BudgetManager` reads about its scopes: their names and
summaries, from this process's budgets and the store's registry (so scopes other processes
made count too)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, overload

from .errors import UnknownScopeError
from .scope import BudgetScope
from .summary import BudgetSummary, ExactBudgetSummary

if TYPE_CHECKING:
    from .budget import Budget
    from .manager import BudgetManager

__all__ = ["all_summaries", "budget_for_summary", "names", "summary"]


def names(self: BudgetManager, saved: Mapping[str, Any]) -> list[str]:
    with self._lock:
        names = list(self._registered) + [n for n in self._cached if n not in self._registered]
    known = set(names)
    names.extend(name for name in saved if name not in known)
    return names


def budget_for_summary(
    self: BudgetManager,
    name: str,
    saved: Mapping[str, Mapping[str, Any]] | None = None,
    depth: int = 0,
) -> Budget | None:
    """The budget of ``name`` for reading: this process's own, else one built from the
    store's registry (with its recorded parent), else one a template makes now."""
    with self._lock:
        budget = self._registered.get(name) or self._cached.get(name)
    if budget is not None:
        return budget
    if saved is None:
        saved = self.store.load_scopes()
    data = saved.get(name)
    if data is None:
        return self.get(name)
    if depth > 32:
        raise ValueError(f"scope parents nest too deeply at {name!r} (a cycle?)")
    with self._lock:
        parent_name = data.get("parent")
        parent = (
            self._budget_for_summary(str(parent_name), saved, depth + 1) if parent_name else None
        )
        budget = self._make(BudgetScope.from_dict(data), parent, None, save=False)
        if data.get("template"):
            self._parents[name] = parent.name if parent else None
        self._cache(name, budget)
        return budget


@overload
def summary(
    self: BudgetManager, name: str, *, exact: Literal[False] = False, by_session: bool = False
) -> BudgetSummary: ...


@overload
def summary(
    self: BudgetManager, name: str, *, exact: Literal[True], by_session: bool = False
) -> ExactBudgetSummary: ...


def summary(
    self: BudgetManager, name: str, *, exact: bool = False, by_session: bool = False
) -> BudgetSummary | ExactBudgetSummary:
    """``Budget.summary()`` of scope ``name`` (UnknownScopeError if there is none)."""
    budget = self._budget_for_summary(name)
    if budget is None:
        raise UnknownScopeError(f"No budget registered for scope '{name}'")
    if exact:
        return budget.summary(exact=True, by_session=by_session)
    return budget.summary(by_session=by_session)


@overload
def all_summaries(
    self: BudgetManager, *, exact: Literal[False] = False, by_session: bool = False
) -> dict[str, BudgetSummary]: ...


@overload
def all_summaries(
    self: BudgetManager, *, exact: Literal[True], by_session: bool = False
) -> dict[str, ExactBudgetSummary]: ...


def all_summaries(
    self: BudgetManager, *, exact: bool = False, by_session: bool = False
) -> dict[str, BudgetSummary] | dict[str, ExactBudgetSummary]:
    """Summaries of every known scope, read from the store (so other processes count)."""
    out: dict[str, Any] = {}
    saved = self.store.load_scopes()
    for name in self._names(saved):
        budget = self._budget_for_summary(name, saved)
        if budget is not None:
            out[name] = (
                budget.summary(exact=True, by_session=by_session)
                if exact
                else budget.summary(by_session=by_session)
            )
    return out
