"""A refused call never reaches the provider, in every call mode and through chains,
LangGraph graphs and a prebuilt ReAct agent; the caller gets the BudgetExceededError the
budget raised, unchanged."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable
from typing import Any, TypedDict

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseLanguageModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph

from agent_budget import (
    Budget,
    BudgetExceededError,
    BudgetScope,
    MemoryStore,
    ModelRates,
    RateTable,
    StoreError,
    StoreUnavailableError,
    UnknownModelError,
)
from agent_budget_callbacks.langchain import BudgetCallbackHandler

from .fake_chat_models import (
    Bill,
    FakeChatAnthropic,
    FakeChatOpenAI,
    FakeOpenAILLM,
    tool_call_reply,
)

LEGACY_RATES = {"gpt-3.5-turbo-instruct": ModelRates.per_million("1.50", "2.00")}


def tiny_budget(clock: Any, tokens: int = 50) -> Budget:
    """A budget that refuses any call reserving more than ``tokens``."""
    return Budget(
        BudgetScope(name="tiny", max_tokens_per_session=tokens), LEGACY_RATES, clock=clock
    )


class Raised:
    """Wraps Budget.reserve to keep the exception it raised, to check identity."""

    def __init__(self, budget: Budget) -> None:
        self.errors: list[BaseException] = []
        original = budget.reserve

        def reserve(*args: Any, **kwargs: Any) -> Any:
            try:
                return original(*args, **kwargs)
            except BaseException as exc:
                self.errors.append(exc)
                raise

        budget.reserve = reserve  # type: ignore[method-assign]


async def _consume_astream(model: Any, config: RunnableConfig) -> None:
    async for _ in model.astream("hello", config=config):
        pass


MODES: dict[str, Callable[[Any, RunnableConfig], Any]] = {
    "invoke": lambda m, c: m.invoke("hello", config=c),
    "stream": lambda m, c: list(m.stream("hello", config=c)),
    "batch": lambda m, c: m.batch(["hello", "there"], config=c),
    "ainvoke": lambda m, c: asyncio.run(m.ainvoke("hello", config=c)),
    "astream": lambda m, c: asyncio.run(_consume_astream(m, c)),
    "abatch": lambda m, c: asyncio.run(m.abatch(["hello", "there"], config=c)),
}

MODELS: dict[str, Callable[[], BaseLanguageModel[Any]]] = {
    "openai-chat": FakeChatOpenAI,
    "anthropic-chat": FakeChatAnthropic,
    "legacy-llm": FakeOpenAILLM,
}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("kind", list(MODELS))
def test_refused_call_never_reaches_the_provider(clock: Any, kind: str, mode: str) -> None:
    budget = tiny_budget(clock)
    raised = Raised(budget)
    handler = BudgetCallbackHandler(budget)
    model: Any = MODELS[kind]()
    with pytest.raises(BudgetExceededError) as info:
        MODES[mode](model, {"callbacks": [handler]})
    assert model.calls.value == 0
    # the caller gets one of the exceptions the budget raised, itself (batch: one per input)
    assert any(info.value is err for err in raised.errors)
    assert info.value.scope == "tiny" and info.value.limit_type == "session_tokens"
    summary = budget.summary()
    assert summary["session"]["tokens"] == 0
    assert summary["session"]["reserved_tokens"] == 0
    assert budget.records == []


@pytest.mark.parametrize("mode", list(MODES))
def test_admitted_call_runs_in_every_mode(clock: Any, mode: str) -> None:
    budget = Budget(BudgetScope(name="big", max_tokens_per_session=1_000_000), clock=clock)
    handler = BudgetCallbackHandler(budget)
    model = FakeChatOpenAI(bill=Bill(100, 10))
    MODES[mode](model, {"callbacks": [handler]})
    calls = model.calls.value
    assert calls >= 1
    assert budget.summary()["session"]["tokens"] == 110 * calls
    assert budget.summary()["session"]["reserved_tokens"] == 0


def test_refusal_through_a_runnable_sequence(clock: Any) -> None:
    budget = tiny_budget(clock)
    raised = Raised(budget)
    handler = BudgetCallbackHandler(budget)
    model = FakeChatOpenAI()
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | model | StrOutputParser()
    with pytest.raises(BudgetExceededError) as info:
        chain.invoke({"q": "hi"}, config={"callbacks": [handler]})
    assert info.value is raised.errors[-1]
    with pytest.raises(BudgetExceededError) as info:
        asyncio.run(chain.ainvoke({"q": "hi"}, config={"callbacks": [handler]}))
    assert info.value is raised.errors[-1]
    legacy = FakeOpenAILLM()
    with pytest.raises(BudgetExceededError):
        (PromptTemplate.from_template("{q}") | legacy).invoke(
            {"q": "hi"}, config={"callbacks": [handler]}
        )
    assert model.calls.value == 0 and legacy.calls.value == 0


class _State(TypedDict):
    question: str
    answer: str


def _graph(model: Any, *, use_async: bool) -> Any:
    def answer(state: _State) -> dict[str, str]:
        return {"answer": str(model.invoke(state["question"]).content)}

    async def aanswer(state: _State) -> dict[str, str]:
        return {"answer": str((await model.ainvoke(state["question"])).content)}

    graph = StateGraph(_State)
    graph.add_node("answer", aanswer if use_async else answer)
    graph.add_edge(START, "answer")
    graph.add_edge("answer", END)
    return graph.compile()


@pytest.mark.parametrize("use_async", [False, True])
def test_refusal_through_a_langgraph_state_graph(clock: Any, use_async: bool) -> None:
    budget = tiny_budget(clock)
    raised = Raised(budget)
    handler = BudgetCallbackHandler(budget)
    model = FakeChatOpenAI()
    app = _graph(model, use_async=use_async)
    config: RunnableConfig = {"callbacks": [handler]}
    with pytest.raises(BudgetExceededError) as info:
        if use_async:
            asyncio.run(app.ainvoke({"question": "hi", "answer": ""}, config=config))
        else:
            app.invoke({"question": "hi", "answer": ""}, config=config)
    assert info.value is raised.errors[-1]
    assert model.calls.value == 0


def test_graph_with_room_records_its_model_calls(clock: Any) -> None:
    budget = Budget(BudgetScope(name="g", max_tokens_per_session=10_000), clock=clock)
    handler = BudgetCallbackHandler(budget)
    model = FakeChatOpenAI(bill=Bill(100, 10))
    out = _graph(model, use_async=False).invoke(
        {"question": "hi", "answer": ""}, config={"callbacks": [handler]}
    )
    assert out["answer"] == "Hello there, friend."
    assert budget.summary()["session"]["tokens"] == 110


def _react_agent(model: Any, tools: list[Any]) -> Any:
    # langgraph 1.x deprecates create_react_agent in favour of langchain.agents.create_agent
    # (the separate `langchain` package); the langgraph prebuilt is still real langgraph.
    from langgraph.prebuilt import create_react_agent

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return create_react_agent(model, tools)


def _agent_fixture(
    build: Callable[[Any, list[Any]], Any] | None = None,
) -> tuple[FakeChatOpenAI, Any, list[int]]:
    """A fake model scripted to call ``add`` once then answer, the agent built over it
    (``create_react_agent`` unless ``build`` is given), and the list of tool results."""
    ran: list[int] = []

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        ran.append(a + b)
        return a + b

    model = FakeChatOpenAI(
        max_tokens=50,
        bill=Bill(100, 20),
        replies=[tool_call_reply("add", {"a": 2, "b": 3}), "The sum is 5."],
    )
    return model, (build or _react_agent)(model, [add]), ran


def test_react_agent_runs_tools_and_records_every_model_call(clock: Any) -> None:
    budget = Budget(BudgetScope(name="agent", max_tokens_per_session=10_000), clock=clock)
    model, agent, ran = _agent_fixture()
    out = agent.invoke(
        {"messages": [("human", "what is 2 + 3?")]},
        config={"callbacks": [BudgetCallbackHandler(budget)]},
    )
    assert out["messages"][-1].content == "The sum is 5."
    assert ran == [5]
    assert model.calls.value == 2
    assert budget.summary()["session"]["tokens"] == 240


@pytest.mark.parametrize("use_async", [False, True])
def test_react_agent_is_stopped_before_its_second_model_call(clock: Any, use_async: bool) -> None:
    # Room for one call: the first reserves ~input + 50, commits 120; the second cannot fit.
    budget = Budget(BudgetScope(name="agent", max_tokens_per_session=200), clock=clock)
    raised = Raised(budget)
    model, agent, ran = _agent_fixture()
    config: RunnableConfig = {"callbacks": [BudgetCallbackHandler(budget)]}
    payload = {"messages": [("human", "what is 2 + 3?")]}
    with pytest.raises(BudgetExceededError) as info:
        if use_async:
            asyncio.run(agent.ainvoke(payload, config=config))
        else:
            agent.invoke(payload, config=config)
    assert info.value is raised.errors[-1]
    assert model.calls.value == 1
    assert ran == [5]
    summary = budget.summary()["session"]
    assert summary["tokens"] == 120 and summary["reserved_tokens"] == 0


def test_langchain_agents_create_agent_when_installed(clock: Any) -> None:
    """langgraph's recommended replacement for create_react_agent (package `langchain`)."""
    agents = pytest.importorskip("langchain.agents")
    budget = Budget(BudgetScope(name="agent", max_tokens_per_session=200), clock=clock)
    model, agent, ran = _agent_fixture(agents.create_agent)
    with pytest.raises(BudgetExceededError):
        agent.invoke(
            {"messages": [("human", "2 + 3?")]},
            config={"callbacks": [BudgetCallbackHandler(budget)]},
        )
    assert model.calls.value == 1 and ran == [5]


def test_handler_attached_in_the_constructor_or_with_config(clock: Any) -> None:
    budget = tiny_budget(clock)
    handler = BudgetCallbackHandler(budget)
    built = FakeChatOpenAI(callbacks=[handler])
    with pytest.raises(BudgetExceededError):
        built.invoke("hi")
    configured = FakeChatOpenAI()
    with pytest.raises(BudgetExceededError):
        configured.with_config(callbacks=[handler]).invoke("hi")
    assert built.calls.value == 0 and configured.calls.value == 0


def test_refusal_message_names_scope_limit_and_amounts(clock: Any) -> None:
    budget = tiny_budget(clock, tokens=100)
    handler = BudgetCallbackHandler(budget, default_max_tokens=500)
    with pytest.raises(BudgetExceededError) as info:
        FakeChatOpenAI().invoke("hi", config={"callbacks": [handler]})
    err = info.value
    assert "'tiny' refused the call: session_tokens" in str(err)
    assert err.limit == 100 and err.used == 0 and err.requested > 500


class _DownStore(MemoryStore):
    """A store whose reserve fails, as an unreachable Redis would."""

    def reserve(self, *args: Any, **kwargs: Any) -> Any:
        raise StoreError("connection refused")


def test_store_outage_refuses_when_the_budget_fails_closed(clock: Any) -> None:
    budget = Budget(
        BudgetScope(name="s", max_tokens_per_session=10**6), store=_DownStore(), clock=clock
    )
    model = FakeChatOpenAI()
    with pytest.raises(StoreUnavailableError):
        model.invoke("hi", config={"callbacks": [BudgetCallbackHandler(budget)]})
    assert model.calls.value == 0


def test_unpriced_model_refuses_when_the_rate_table_says_raise(clock: Any) -> None:
    budget = Budget(
        BudgetScope(name="s", max_tokens_per_session=10**6),
        RateTable(on_unknown="raise"),
        clock=clock,
    )
    model = FakeChatOpenAI(model="my-private-model")
    with pytest.raises(UnknownModelError):
        model.invoke("hi", config={"callbacks": [BudgetCallbackHandler(budget)]})
    assert model.calls.value == 0


def test_records_carry_the_run_id(clock: Any) -> None:
    budget = Budget(BudgetScope(name="s", max_tokens_per_session=10**6), clock=clock)
    seen: list[str] = []

    class RunIds(BaseCallbackHandler):
        def on_llm_end(self, *args: Any, run_id: Any, **kwargs: Any) -> None:
            seen.append(str(run_id))

    FakeChatOpenAI().invoke("hi", config={"callbacks": [BudgetCallbackHandler(budget), RunIds()]})
    assert budget.records[0].metadata == {
        "framework": "langchain",
        "call_id": seen[0],
        "usage_source": "provider",
    }
