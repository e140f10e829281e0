"""OpenAI Agents SDK: refuse a model call before it runs, record what every call used.

Quick start::

    hooks = BudgetHooks(budget)
    result = await Runner.run(agent, "...", hooks=hooks, run_config=hooks.run_config())

``BudgetHooks`` refuses in ``on_llm_start`` (the model is not called; ``Runner.run``,
``run_sync`` and ``run_streamed`` raise :class:`~agent_budget.BudgetExceededError`) and
commits ``response.usage`` in ``on_llm_end``; ``hooks.run_config()`` wraps the run's models
in :class:`BudgetModel`, which accounts each retry attempt, failures and streams exactly and
can clamp ``max_tokens`` (``clamp=True``). With a :class:`~agent_budget.BudgetManager`, name
the tenant in the run context (``context={"budget_scope": "user-42"}``) or with
``budget_scope(...)``. Needs ``agent-budget[openai-agents]``.

Modules: ``handler`` (the hooks and the wrapping model), ``payload`` (pure readers of the
SDK's responses, usage, stream events and settings), ``install`` (the provider and
``RunConfig`` helpers), ``turns`` (the calls the hooks started, for the model to take over).
"""

from __future__ import annotations

from .handler import NO_USAGE_HINT, BudgetHooks, BudgetModel
from .install import BudgetModelProvider, budget_run_config

__all__ = [
    "NO_USAGE_HINT",
    "BudgetHooks",
    "BudgetModel",
    "BudgetModelProvider",
    "budget_run_config",
]
