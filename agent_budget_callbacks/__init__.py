"""Framework adapters for agent-budget: LangChain/LangGraph, LlamaIndex, the OpenAI Agents
SDK and pydantic-ai.

Import the adapter you need, e.g. ``from agent_budget_callbacks.langchain import
BudgetCallbackHandler``; each needs its framework installed (``agent-budget[langchain]``,
``agent-budget[llamaindex]``, ``agent-budget[openai-agents]``, ``agent-budget[pydantic-ai]``).
"""

__all__: list[str] = []
