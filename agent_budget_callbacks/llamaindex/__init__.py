"""LlamaIndex adapter: refuse LLM calls that would cross a budget, before the provider runs.

Quick start::

    from agent_budget import Budget, BudgetScope
    from agent_budget_callbacks.llamaindex import install

    install(Budget(BudgetScope("app", max_cost_per_day_usd=5)))

``install`` adds a :class:`BudgetCallbackHandler` to ``Settings.callback_manager`` and to
every LLM a call starts on (LLMs made earlier, LLMs whose manager a query engine replaced).
With a :class:`~agent_budget.BudgetManager`, choose the tenant per request with
``with budget_scope("user:42", session="conv-1"): engine.query(...)``. A refusal raises
:class:`~agent_budget.BudgetExceededError` from ``complete`` / ``chat`` / ``query``; from a
streaming query engine it surfaces while ``response_gen`` is iterated. For agents
(``FunctionAgent``, ``AgentWorkflow``), wrap the LLM in :class:`BudgetLLM` so a refusal
ends the run with a final answer (or a cheaper fallback LLM) instead of an exception, with
the output cap clamped to what fits. Needs ``agent-budget[llamaindex]``.
"""

from __future__ import annotations

from agent_budget.context import ScopeSelection, budget_scope, current_scope

from .agents import BudgetLLM
from .handler import BudgetCallbackHandler
from .install import install, installed_handlers, uninstall

__all__ = [
    "BudgetCallbackHandler",
    "BudgetLLM",
    "ScopeSelection",
    "budget_scope",
    "current_scope",
    "install",
    "installed_handlers",
    "uninstall",
]
