"""Attaching a budget without a capability: a wrapped model for direct use."""

from __future__ import annotations

from typing import Any

from pydantic_ai.models import Model

from agent_budget import Budget, BudgetManager

from .handler import BudgetCapability, BudgetModel

__all__ = ["budget_model"]


def budget_model(
    model: Model | str, budget: Budget | BudgetManager | BudgetCapability, **options: Any
) -> BudgetModel:
    """``model`` (a ``Model`` or a model name such as ``"openai:gpt-4o"``) wrapped so every
    request it serves is budgeted: pass it as an agent's model, or to pydantic-ai's direct
    API (``pydantic_ai.direct.model_request``). ``budget`` is a :class:`BudgetCapability`, or
    a Budget / BudgetManager with :class:`BudgetCapability`'s keyword options."""
    if isinstance(budget, BudgetCapability):
        if options:
            raise TypeError("budget_model(model, capability) takes no capability options")
        capability = budget
    else:
        capability = BudgetCapability(budget, **options)
    return BudgetModel(model, capability)
