"""budget_guard: one registered ContextVar covers every LangChain call inside the block
(nested chains and graphs, batch threads, asyncio tasks) and never grows LangChain's
configure-hook registry."""

from __future__ import annotations

import asyncio
import contextvars
import copy
import threading
from typing import Any, TypedDict

import pytest
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langchain_core.tracers import context as lc_context
from langgraph.graph import END, START, StateGraph

from agent_budget import Budget, BudgetExceededError, BudgetScope
from agent_budget_callbacks.langchain import BudgetCallbackHandler, budget_guard, current_guard

from .fake_chat_models import Bill, FakeChatOpenAI


def _budget(clock: Any, tokens: int = 10_000_000, name: str = "guard") -> Budget:
    return Budget(BudgetScope(name=name, max_tokens_per_session=tokens), clock=clock)


def _tokens(budget: Budget) -> int:
    return int(budget.summary()["session"]["tokens"])


def test_guard_covers_calls_made_without_callbacks(clock: Any) -> None:
    budget = _budget(clock)
    model = FakeChatOpenAI(bill=Bill(10, 5))
    with budget_guard(budget) as handler:
        assert current_guard() is handler
        model.invoke("hi")
        list(model.stream("hi"))
        asyncio.run(model.ainvoke("hi"))
    assert current_guard() is None
    assert _tokens(budget) == 45
    model.invoke("hi")  # outside the block: not budgeted
    assert _tokens(budget) == 45


def test_guard_refuses_inside_the_block(clock: Any) -> None:
    model = FakeChatOpenAI()
    with budget_guard(_budget(clock, tokens=1)), pytest.raises(BudgetExceededError):
        model.invoke("hi")
    assert model.calls.value == 0


def test_guard_reaches_batch_threads_and_asyncio_tasks(clock: Any) -> None:
    budget = _budget(clock)
    model = FakeChatOpenAI(bill=Bill(10, 5))

    async def many() -> None:
        tasks = [asyncio.create_task(model.ainvoke(f"q{i}")) for i in range(5)]
        await asyncio.gather(*tasks)
        await model.abatch(["a", "b", "c"])

    with budget_guard(budget):
        model.batch([f"q{i}" for i in range(8)], config={"max_concurrency": 4})
        asyncio.run(many())
    assert len(budget.records) == 16 == model.calls.value


def test_plain_threads_need_the_context_copied(clock: Any) -> None:
    """Pinned: a bare threading.Thread starts with an empty context, as for any ContextVar;
    copy_context().run carries the guard into it."""
    budget = _budget(clock)
    model = FakeChatOpenAI(bill=Bill(10, 5))
    with budget_guard(budget):
        bare = threading.Thread(target=model.invoke, args=("hi",))
        bare.start()
        bare.join()
        ctx = contextvars.copy_context()
        carried = threading.Thread(target=ctx.run, args=(model.invoke, "hi"))
        carried.start()
        carried.join()
    assert model.calls.value == 2 and len(budget.records) == 1


class _State(TypedDict):
    q: str
    a: str


def test_guard_covers_nested_runs_in_chains_and_graphs(clock: Any) -> None:
    budget = _budget(clock)
    model = FakeChatOpenAI(bill=Bill(10, 5))
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | model
    inner = RunnableLambda(lambda q: chain.invoke({"q": q}))  # a run nested in a run

    def node(state: _State) -> dict[str, str]:
        return {"a": str(inner.invoke(state["q"]).content)}

    graph = StateGraph(_State)
    graph.add_node("n", node)
    graph.add_edge(START, "n")
    graph.add_edge("n", END)
    app = graph.compile()
    with budget_guard(budget):
        chain.invoke({"q": "hi"})
        inner.invoke("hi")
        app.invoke({"q": "hi", "a": ""})
        asyncio.run(app.ainvoke({"q": "hi", "a": ""}))
    assert len(budget.records) == 4 == model.calls.value
    with budget_guard(_budget(clock, tokens=1)), pytest.raises(BudgetExceededError):
        app.invoke({"q": "hi", "a": ""})
    assert model.calls.value == 4


def test_a_thousand_guards_leave_the_hook_registry_alone(clock: Any) -> None:
    hooks = len(lc_context._configure_hooks)
    budget = _budget(clock)
    model = FakeChatOpenAI(bill=Bill(1, 1))
    for i in range(1000):
        with budget_guard(budget):
            if i % 100 == 0:
                model.invoke("hi")
    assert len(lc_context._configure_hooks) == hooks
    assert len(budget.records) == 10


def test_pin_langchain_32300_usage_callback_grows_the_registry() -> None:
    """Pinned: get_usage_metadata_callback() registers a new hook per use (langchain#32300),
    which is what registering one ContextVar at import avoids."""
    from langchain_core.callbacks import get_usage_metadata_callback

    hooks = len(lc_context._configure_hooks)
    for _ in range(3):
        with get_usage_metadata_callback():
            pass
    assert len(lc_context._configure_hooks) == hooks + 3


def test_the_same_handler_twice_charges_once(clock: Any) -> None:
    budget = _budget(clock)
    model = FakeChatOpenAI(bill=Bill(10, 5))
    with budget_guard(budget) as handler:
        model.invoke("hi", config={"callbacks": [handler]})
        model.with_config(callbacks=[handler]).invoke("hi")
    assert len(budget.records) == 2


def test_guard_and_an_explicit_handler_on_another_budget_both_apply(clock: Any) -> None:
    outer, explicit = _budget(clock, name="outer"), _budget(clock, name="explicit")
    model = FakeChatOpenAI(bill=Bill(10, 5))
    with budget_guard(outer):
        model.invoke("hi", config={"callbacks": [BudgetCallbackHandler(explicit)]})
    assert _tokens(outer) == _tokens(explicit) == 15


def test_nested_guards_replace_then_restore(clock: Any) -> None:
    outer, inner = _budget(clock, name="outer"), _budget(clock, name="inner")
    model = FakeChatOpenAI(bill=Bill(10, 5))
    with budget_guard(outer) as outer_handler:
        with budget_guard(inner) as inner_handler:
            assert current_guard() is inner_handler
            model.invoke("hi")
        assert current_guard() is outer_handler
        model.invoke("hi")
    assert (_tokens(outer), _tokens(inner)) == (15, 15)


def test_guard_accepts_a_ready_handler(clock: Any) -> None:
    handler = BudgetCallbackHandler(_budget(clock))
    with budget_guard(handler) as got:
        assert got is handler
    with pytest.raises(TypeError), budget_guard(handler, default_max_tokens=5):
        pass


def test_guard_passes_handler_options(clock: Any) -> None:
    budget = _budget(clock)
    with budget_guard(budget, session_id="s-1") as handler:
        FakeChatOpenAI().invoke("hi")
    assert isinstance(handler, BudgetCallbackHandler)
    assert budget.records[0].session_id == "s-1"


def test_copies_of_the_handler_are_the_handler(clock: Any) -> None:
    handler = BudgetCallbackHandler(_budget(clock))
    assert copy.copy(handler) is handler
    assert copy.deepcopy(handler) is handler
    config = copy.deepcopy({"callbacks": [handler], "metadata": {"a": 1}})
    assert config["callbacks"][0] is handler
