"""Agents and engines on the real OpenAI clients, stopped by a budget.

A model that always asks for another tool call is a runaway agent: the budget must stop it,
and the server's ledger (every request that reached the provider) must end at the refusal.
Covers a LangGraph ReAct agent on ``ChatOpenAI``, and a LlamaIndex query engine and
``FunctionAgent`` on llama-index ``OpenAI``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.prebuilt import create_react_agent
from llama_index.core import Document, SummaryIndex
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.tools import FunctionTool
from llama_index.llms.openai import OpenAI as LlamaOpenAI

from agent_budget import Budget, BudgetExceededError, BudgetScope
from agent_budget_callbacks.langchain import budget_guard
from agent_budget_callbacks.llamaindex import install

from .fake_llms import isolated_settings
from .provider_servers import OpenAIServer, Reply, ToolCall, builtin_price_nanos, held

pytestmark = [
    # langgraph 1.x points to langchain.agents.create_agent (the `langchain` package, not a
    # dependency here); the prebuilt ReAct agent is still LangGraph's own.
    pytest.mark.filterwarnings("ignore:create_react_agent has been moved"),
    # llama-index workflows inspect pydantic models through deprecated attributes.
    pytest.mark.filterwarnings("ignore::pydantic.PydanticDeprecatedSince20"),
    pytest.mark.filterwarnings("ignore::pydantic.PydanticDeprecatedSince211"),
]

# Every answer bills 1,500 tokens; every request caps its output at 100, so a hold is about
# 100 + the prompt. A 3,050-token session admits two calls and refuses the third whatever
# the prompt estimate: 3,000 committed + (prompt + 100) > 3,050.
BILLED = {"input_tokens": 1000, "output_tokens": 500, "cache_read_tokens": 0}
LIMIT = 3050
LOOP = Reply(tool_calls=(ToolCall("lookup", {"key": "next"}, "call_lookup"),), **BILLED)
ANSWER = Reply(text="Paris is the capital of France.", **BILLED)


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(default=LOOP) as srv:
        yield srv


@pytest.fixture
def budget(clock: Any) -> Budget:
    return Budget(BudgetScope("agent", max_tokens_per_session=LIMIT), clock=clock)


def assert_stopped_after_two(budget: Budget, server: OpenAIServer) -> None:
    """Two calls ran and were charged exactly; nothing reached the server after that."""
    ledger = server.ledger
    assert len(ledger) == 2
    records = budget.records
    assert [(r.input_tokens, r.output_tokens) for r in records] == [(1000, 500)] * 2
    assert sum(r.cost_nanos for r in records) == sum(
        builtin_price_nanos(s.model, s.usage) for s in ledger
    )
    assert budget.usage()["session:tokens"].committed == 3000
    assert held(budget) == 0


def test_langgraph_react_agent_on_chat_openai_is_stopped(
    server: OpenAIServer, budget: Budget
) -> None:
    calls: list[str] = []

    @tool
    def lookup(key: str) -> str:
        """Look a key up."""
        calls.append(key)
        return f"value of {key}"

    model = ChatOpenAI(
        model="gpt-4o",
        base_url=server.base_url,
        api_key="sk-test",
        max_retries=0,
        timeout=10,
        max_tokens=100,
    )
    agent = create_react_agent(model, [lookup])
    with budget_guard(budget), pytest.raises(BudgetExceededError) as caught:
        agent.invoke({"messages": [("user", "Follow the chain of keys.")]})
    assert caught.value.limit_type == "session_tokens"
    assert calls == ["next", "next"]  # both admitted calls' tool requests ran
    assert_stopped_after_two(budget, server)
    # A new run on the spent budget is refused before any request.
    with budget_guard(budget), pytest.raises(BudgetExceededError):
        agent.invoke({"messages": [("user", "Try again.")]})
    assert len(server.ledger) == 2


@pytest.fixture
def li_settings() -> Iterator[None]:
    with isolated_settings():
        yield


def llama_openai(server: OpenAIServer) -> LlamaOpenAI:
    return LlamaOpenAI(
        model="gpt-4o",
        api_base=server.base_url,
        api_key="sk-test",
        max_retries=0,
        timeout=10,
        max_tokens=100,
        additional_kwargs={"stream_options": {"include_usage": True}},
    )


@pytest.mark.usefixtures("li_settings")
def test_llamaindex_query_engine_on_openai_is_stopped(server: OpenAIServer, budget: Budget) -> None:
    server.default = ANSWER
    install(budget)
    index = SummaryIndex.from_documents([Document(text="Paris is the capital of France.")])
    engine = index.as_query_engine(llm=llama_openai(server))
    for _ in range(2):
        assert "Paris" in str(engine.query("What is the capital of France?"))
    with pytest.raises(BudgetExceededError):
        engine.query("And of Italy?")
    assert_stopped_after_two(budget, server)
    with pytest.raises(BudgetExceededError):
        engine.query("And of Spain?")
    assert len(server.ledger) == 2


@pytest.mark.usefixtures("li_settings")
def test_llamaindex_function_agent_on_openai_is_stopped(
    server: OpenAIServer, budget: Budget
) -> None:
    """FunctionAgent streams every step (astream_chat_with_tools); with stream usage turned
    on the two admitted steps are charged what the server billed."""
    calls: list[str] = []

    def lookup(key: str) -> str:
        """Look a key up."""
        calls.append(key)
        return f"value of {key}"

    install(budget)
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(fn=lookup)], llm=llama_openai(server))

    async def run() -> Any:
        return await agent.run(user_msg="Follow the chain of keys.")

    with pytest.raises(BudgetExceededError):
        asyncio.run(run())
    assert calls == ["next", "next"]
    assert all(s.stream and s.include_usage for s in server.ledger)
    assert_stopped_after_two(budget, server)
