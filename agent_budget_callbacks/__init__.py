"""Framework adapters for agent-budget: LangChain/LangGraph and LlamaIndex.

Import the adapter you need, e.g. ``from agent_budget_callbacks.langchain import
BudgetCallbackHandler``; each needs its framework installed (``agent-budget[langchain]``,
``agent-budget[llamaindex]``).
"""

__all__: list[str] = []
