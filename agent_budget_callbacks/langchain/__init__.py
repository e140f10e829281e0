"""LangChain and LangGraph: refuse a model call before it runs, record what it used.

``BudgetCallbackHandler(budget)`` is an ordinary LangChain callback handler: pass it in
``config={"callbacks": [handler]}``, with ``.with_config(callbacks=[...])``, to a model's
constructor, or to a chain / LangGraph graph / agent, where it reaches every chat model and
LLM called inside. ``with budget_guard(budget):`` attaches one to every LangChain call made
inside the block, threads and asyncio tasks included. Needs ``agent-budget[langchain]``.

Modules: ``handler`` (the callback handler), ``payload`` (pure readers of LangChain's
callback payloads), ``install`` (``budget_guard``).
"""

from __future__ import annotations

from .handler import DEFAULT_MAX_OUTPUT_TOKENS, BudgetCallbackHandler
from .install import budget_guard, current_guard

__all__ = [
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "BudgetCallbackHandler",
    "budget_guard",
    "current_guard",
]
