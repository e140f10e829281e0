"""LangChain and LangGraph: refuse a model call before it runs, record what it used.

``BudgetCallbackHandler(budget)`` is an ordinary LangChain callback handler: pass it in
``config={"callbacks": [handler]}``, with ``.with_config(callbacks=[...])``, to a model's
constructor, or to a chain / LangGraph graph / agent, where it reaches every chat model and
LLM called inside. ``with budget_guard(budget):`` attaches one to every LangChain call made
inside the block, threads and asyncio tasks included. Needs ``agent-budget[langchain]``.

For LangChain v1 agents, ``BudgetMiddleware`` (in ``create_agent(middleware=[...])``)
also clamps each model call's output cap, falls back to a cheaper model, or ends the turn
with a final message when the budget runs out (needs ``agent-budget[langgraph]``).

Modules: ``handler`` (the callback handler), ``payload`` (pure readers of LangChain's
callback payloads), ``install`` (``budget_guard``), ``middleware`` (the agent middleware).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .handler import DEFAULT_MAX_OUTPUT_TOKENS, BudgetCallbackHandler, quiet_refusals
from .install import budget_guard, current_guard

if TYPE_CHECKING:
    from .middleware import BudgetMiddleware

__all__ = [
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "BudgetCallbackHandler",
    "BudgetMiddleware",
    "budget_guard",
    "current_guard",
    "quiet_refusals",
]


def __getattr__(name: str) -> Any:
    # The middleware needs the `langchain` package (agents), not only langchain-core.
    if name == "BudgetMiddleware":
        from .middleware import BudgetMiddleware

        return BudgetMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
