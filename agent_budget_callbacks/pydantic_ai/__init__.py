"""pydantic-ai: refuse a model request before it runs, record what every request used.

Quick start::

    agent = Agent(model, capabilities=[BudgetCapability(budget)])

:class:`BudgetCapability` wraps the model serving every request attempt (``run``,
``run_sync``, ``run_stream``, ``iter``, each step of a tool loop) in a :class:`BudgetModel`
that reserves before the request and commits after; a refusal raises
:class:`~agent_budget.BudgetExceededError` from the run, before the provider is called.
``clamp=True`` sends each request the ``max_tokens`` the budget can hold. The budget is the
core's, over its store, so it is shared across runs, processes and hosts, beside
pydantic-ai's per-run ``UsageLimits``. With a :class:`~agent_budget.BudgetManager`, name the
tenant in the run's ``deps`` (``{"budget_scope": "user-42"}`` or an attribute) or with
``budget_scope(...)``. Needs ``agent-budget[pydantic-ai]``.

Modules: ``handler`` (the capability and the wrapping model), ``payload`` (pure readers of
messages, settings, responses and streams), ``install`` (``budget_model``).
"""

from __future__ import annotations

from .handler import NO_USAGE_HINT, BudgetCapability, BudgetModel
from .install import budget_model

__all__ = ["NO_USAGE_HINT", "BudgetCapability", "BudgetModel", "budget_model"]
