"""How a :class:`~agent_budget.Budget` prices a call's model: the rate table's price under its
unknown-model policy before a call, and the model that answered after it."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from .alerting import format_amount
from .errors import BudgetWarning
from .rates import ResolvedModel

if TYPE_CHECKING:
    from .budget import Budget

__all__ = ["answered_model", "resolve", "unknown_model"]


def resolve(self: Budget, model: str) -> ResolvedModel:
    """``model``'s price under the table's unknown-model policy: ``"raise"`` raises
    :class:`UnknownModelError`, ``"warn"`` warns once per model name and charges the
    fallback, ``"fallback"`` charges it silently."""
    resolved = self.rates.resolve(model)
    if not resolved.known:
        self._unknown_model(model, resolved)
    return resolved


def unknown_model(self: Budget, model: str, resolved: ResolvedModel) -> None:
    if self.rates.on_unknown == "fallback":
        return
    if not self.rates.first_unknown(model.strip().lower()):
        return
    rates = resolved.rates.per_million_dict()
    message = (
        f"model {model!r} has no known price; charging {resolved.how} "
        f"(${format_amount(float(rates['input']))} in / "
        f"${format_amount(float(rates['output']))} out per 1M "
        "tokens). Price it with rates=, aliases= or an overlay."
    )
    warnings.warn(message, BudgetWarning, stacklevel=4)
    self._alerter.warn(message, "unknown_model")


def answered_model(self: Budget, answered: str | None, requested: str) -> ResolvedModel:
    """The price of a commit: the model that answered when it is named, else the one
    reserved for. A commit records money already spent, so it never raises: an answer
    from a model with no price is charged the fallback (never silently the requested
    model's price, which may be far lower) and warned about unless the policy is
    ``"fallback"``."""
    if (
        not answered
        or answered == requested
        or not isinstance(answered, str)
        or not answered.strip()
    ):
        return self.rates.resolve(requested, on_unknown="fallback")
    resolved = self.rates.resolve(answered, on_unknown="fallback")
    if not resolved.known:
        self._unknown_model(answered, resolved)
    return resolved
