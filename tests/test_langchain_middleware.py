"""BudgetMiddleware on real LangChain v1 agents (create_agent + LangGraph checkpoints): the
output cap is clamped and reaches the model, a refusal ends the turn with a final message
(or falls back to a cheaper model), a checkpointed thread resumes after a top-up, the model
hears how much is left, and nothing is charged twice with a callback handler attached."""

from __future__ import annotations

import asyncio
import logging
import warnings
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from agent_budget import (
    Budget,
    BudgetExceededError,
    BudgetManager,
    BudgetScope,
    BudgetWarning,
    ModelRates,
    RateTable,
    UnknownModelError,
)
from agent_budget_callbacks.langchain import BudgetCallbackHandler, BudgetMiddleware, budget_guard

from .clock import FakeClock
from .fake_chat_models import Bill, FakeChatOpenAI, tool_call_reply

RATES = {
    "big": ModelRates.per_million(input=10, output=40),
    "small": ModelRates.per_million(input=1, output=4),
}


@tool
def lookup(city: str) -> str:
    """Look up the weather of a city (a long report)."""
    return f"sunny in {city} " + "and warm " * 200


def _budget(clock: FakeClock, **limits: Any) -> Budget:
    return Budget(BudgetScope(name="agent", **limits), RATES, clock=clock)


def _model(name: str = "big", **kwargs: Any) -> FakeChatOpenAI:
    kwargs.setdefault("bill", Bill(100, 20))
    return FakeChatOpenAI(model=name, answered_model=name, **kwargs)


def test_clamped_max_tokens_reaches_the_model(clock: FakeClock) -> None:
    budget = _budget(clock, max_tokens_per_session=1_000)
    model = _model(replies=["done"])
    agent = create_agent(model, middleware=[BudgetMiddleware(budget, min_output_tokens=16)])
    agent.invoke({"messages": [HumanMessage("hi")]})
    (request,) = model.requests
    granted = request["max_tokens"]
    assert 16 <= granted < 1_000
    (record,) = budget.records
    assert (record.input_tokens, record.output_tokens) == (100, 20)
    assert budget.usage()["session:tokens"].reserved == 0


def test_a_request_that_fits_is_sent_unchanged(clock: FakeClock) -> None:
    budget = _budget(clock, max_tokens_per_session=100_000)
    model = _model(replies=["done"], max_tokens=300)
    agent = create_agent(model, middleware=[BudgetMiddleware(budget)])
    agent.invoke({"messages": [HumanMessage("hi")]})
    assert "max_tokens" not in model.requests[0]  # the model's own 300 applied


def test_refusal_ends_the_turn_with_a_final_message_and_resumes_after_top_up(
    clock: FakeClock,
) -> None:
    mgr = BudgetManager(rates=RATES, clock=clock)
    mgr.register(BudgetScope(name="u1", max_tokens_per_day=400))
    model = _model(replies=[tool_call_reply("lookup", {"city": "Oslo"}), "It is sunny."])
    agent = create_agent(
        model,
        tools=[lookup],
        middleware=[BudgetMiddleware(mgr, scope="u1", min_output_tokens=64)],
        checkpointer=InMemorySaver(),
    )
    config: Any = {"configurable": {"thread_id": "t1"}}
    # Turn 1: the model asks for the tool (120 tokens), the tool runs, and the second model
    # call is refused: the day cap has 280 left and the tool's long report alone is more.
    out = agent.invoke({"messages": [HumanMessage("weather in Oslo?")]}, config)
    last = out["messages"][-1]
    assert isinstance(last, AIMessage) and not last.tool_calls
    assert "budget for this conversation is used up" in str(last.content)
    assert last.response_metadata["agent_budget"]["limit_type"] == "day_tokens"
    assert isinstance(out["messages"][-2], ToolMessage)  # the paid tool result is kept
    assert model.calls.value == 1  # the refused call never reached the provider
    state = agent.get_state(config)
    assert state.next == ()  # the thread is at rest, not stuck before "model"
    # A top-up (a bigger limit); the same thread carries on from its checkpoint.
    mgr.register(BudgetScope(name="u1", max_tokens_per_day=100_000))
    out = agent.invoke({"messages": [HumanMessage("and now?")]}, config)
    assert out["messages"][-1].content == "It is sunny."
    assert model.calls.value == 2
    user = mgr.get("u1")
    assert user is not None and user.usage()["day:tokens"].committed == 240


def test_final_message_may_be_a_function_of_the_refusal(clock: FakeClock) -> None:
    budget = _budget(clock, max_tokens_per_session=10)
    seen: list[BudgetExceededError] = []

    def final(exc: BudgetExceededError) -> str:
        seen.append(exc)
        return f"out of {exc.limit_type}"

    agent = create_agent(_model(), middleware=[BudgetMiddleware(budget, final_message=final)])
    out = agent.invoke({"messages": [HumanMessage("hi")]})
    assert out["messages"][-1].content == "out of session_tokens"
    assert seen and seen[0].scope == "agent"


def test_on_exhausted_raise_raises_the_refusal(clock: FakeClock) -> None:
    budget = _budget(clock, max_tokens_per_session=10)
    model = _model()
    agent = create_agent(model, middleware=[BudgetMiddleware(budget, on_exhausted="raise")])
    with pytest.raises(BudgetExceededError):
        agent.invoke({"messages": [HumanMessage("hi")]})
    assert model.calls.value == 0


def test_a_refused_call_falls_back_to_the_cheaper_model(clock: FakeClock) -> None:
    budget = _budget(clock, max_cost_per_session_usd="0.002")
    big = _model("big", max_tokens=100)
    small = _model("small", replies=["cheap answer"], max_tokens=100)
    agent = create_agent(big, middleware=[BudgetMiddleware(budget, fallback_model=small)])
    # 1,200,000 of 2,000,000 nano-USD spent: "big" ($40/M out) fits fewer than the 64-token
    # floor, "small" ($4/M out) fits its whole 100.
    budget.record("", "small", 0, 300)
    out = agent.invoke({"messages": [HumanMessage("hi")]})
    assert out["messages"][-1].content == "cheap answer"
    assert big.calls.value == 0 and small.calls.value == 1
    assert budget.records[-1].model == "small"
    assert small.requests[0].get("max_tokens", 100) == 100


def test_the_model_is_told_how_much_is_left_under_the_threshold(clock: FakeClock) -> None:
    budget = _budget(clock, max_tokens_per_session=10_000)
    model = _model(replies=["ok"], max_tokens=50)
    agent = create_agent(
        model,
        system_prompt="You are terse.",
        middleware=[BudgetMiddleware(budget, note_below=0.2)],
    )
    seen: list[str] = []
    model.before_call = lambda: None
    agent.invoke({"messages": [HumanMessage("hi")]})
    budget.record("", "big", 8_500, 0)
    original = model._generate

    def spy(messages: list[Any], *args: Any, **kwargs: Any) -> Any:
        seen.append(next((str(m.content) for m in messages if isinstance(m, SystemMessage)), ""))
        return original(messages, *args, **kwargs)

    object.__setattr__(model, "_generate", spy)
    agent.invoke({"messages": [HumanMessage("hi")]})
    assert seen[-1].startswith("You are terse.")
    assert "Budget note" in seen[-1] and "session_tokens" in seen[-1]


def test_a_guard_of_the_same_budget_does_not_charge_twice(clock: FakeClock) -> None:
    budget = _budget(clock, max_tokens_per_session=100_000)
    agent = create_agent(_model(replies=["ok"]), middleware=[BudgetMiddleware(budget)])
    with budget_guard(budget):
        agent.invoke({"messages": [HumanMessage("hi")]})
    handler = BudgetCallbackHandler(budget)
    agent.invoke({"messages": [HumanMessage("hi")]}, {"callbacks": [handler]})
    assert len(budget.records) == 2
    assert budget.usage()["session:tokens"].committed == 240


def test_a_guard_of_the_same_scope_through_another_object_does_not_charge_twice(
    clock: FakeClock,
) -> None:
    """The middleware of a manager's scope and a guard of ``manager.get(scope)``; the
    middleware of a child budget and a guard of its parent: one charge per call."""
    manager = BudgetManager(rates=RATES, clock=clock)
    manager.register(BudgetScope("team", max_tokens_per_day=100_000))
    agent = create_agent(
        _model(replies=["ok"]), middleware=[BudgetMiddleware(manager, scope="team")]
    )
    team = manager.get("team")
    assert team is not None
    with budget_guard(team):
        agent.invoke({"messages": [HumanMessage("hi")]})
    assert team.usage()["day:tokens"].committed == 120

    org = Budget(BudgetScope("org", max_tokens_per_day=100_000), RATES, clock=clock)
    child = Budget(
        BudgetScope("conv", max_tokens_per_session=100_000), RATES, clock=clock, parent=org
    )
    agent = create_agent(_model(replies=["ok"]), middleware=[BudgetMiddleware(child)])
    with budget_guard(org):
        agent.invoke({"messages": [HumanMessage("hi")]})
    assert org.usage()["day:tokens"].committed == 120
    assert child.usage()["session:tokens"].committed == 120

    # A scope of the same name in another tree is another scope: its guard still checks
    # its own (stricter) limit, and refuses.
    alone = Budget(BudgetScope("conv", max_tokens_per_day=100), RATES, clock=clock)
    alone_store_child = Budget(
        BudgetScope("conv", max_tokens_per_session=100_000),
        RATES,
        clock=clock,
        parent=Budget(BudgetScope("org2"), RATES, clock=clock, store=alone.store),
    )
    agent = create_agent(_model(replies=["ok"]), middleware=[BudgetMiddleware(alone_store_child)])
    with budget_guard(alone), pytest.raises(BudgetExceededError, match="'conv'"):
        agent.invoke({"messages": [HumanMessage("hi")]})


def test_async_agents_are_clamped_and_finish_too(clock: FakeClock) -> None:
    budget = _budget(clock, max_tokens_per_session=1_000)
    model = _model(replies=["done"])
    agent = create_agent(model, middleware=[BudgetMiddleware(budget, min_output_tokens=16)])

    async def main() -> Any:
        first = await agent.ainvoke({"messages": [HumanMessage("hi")]})
        budget.record("", "big", 870, 0)  # 990 of 1,000 used
        second = await agent.ainvoke({"messages": [HumanMessage("hi")]})
        return first, second

    first, second = asyncio.run(main())
    assert first["messages"][-1].content == "done"
    assert 16 <= model.requests[0]["max_tokens"] < 1_000
    assert "used up" in str(second["messages"][-1].content)
    assert model.calls.value == 1


def test_a_handled_refusal_logs_no_langchain_warning(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    budget = _budget(clock, max_tokens_per_session=10)
    model = _model()
    with caplog.at_level(logging.WARNING), pytest.raises(BudgetExceededError):
        model.invoke("hi", config={"callbacks": [BudgetCallbackHandler(budget)]})

    class MyHandler(BudgetCallbackHandler):  # a subclass's refusals are quiet too
        pass

    with caplog.at_level(logging.WARNING), pytest.raises(BudgetExceededError):
        model.invoke("hi", config={"callbacks": [MyHandler(budget)]})
    strict = Budget(BudgetScope(name="strict"), RateTable(RATES, on_unknown="raise"), clock=clock)
    with caplog.at_level(logging.WARNING), pytest.raises(UnknownModelError):
        _model("unpriced").invoke("hi", config={"callbacks": [BudgetCallbackHandler(strict)]})
    assert not [r for r in caplog.records if r.name.startswith("langchain_core")]


def test_other_callback_errors_still_log(caplog: pytest.LogCaptureFixture) -> None:
    """Pinned: LangChain logs a failing handler as 'Error in <handler>.<hook> callback'."""
    from langchain_core.callbacks import BaseCallbackHandler

    class Broken(BaseCallbackHandler):
        def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("boom")

    with caplog.at_level(logging.WARNING):
        _model().invoke("hi", config={"callbacks": [Broken()]})
    assert any(
        "Error in Broken.on_chat_model_start callback" in r.getMessage() for r in caplog.records
    )


def test_a_call_without_usage_warns_once_naming_the_fix(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 13: the warning names the client setting; it is given once per model, as a
    BudgetWarning only (logged at INFO, so stderr does not show it twice)."""
    budget = _budget(clock, max_tokens_per_session=100_000)
    for _ in range(2):  # a middleware made per run warns once too
        agent = create_agent(
            _model(replies=["ok"], bill=None), middleware=[BudgetMiddleware(budget)]
        )
        with caplog.at_level(logging.INFO), warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            agent.invoke({"messages": [HumanMessage("hi")]})
        warned = [str(w.message) for w in seen if issubclass(w.category, BudgetWarning)]
        if not budget.records[1:]:
            (message,) = warned
            assert "without provider usage" in message and "stream_usage=True" in message
        else:
            assert warned == []
    assert len(budget.records) == 2 and all(r.estimated for r in budget.records)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_bad_middleware_options_are_refused(clock: FakeClock) -> None:
    budget = _budget(clock)
    with pytest.raises(ValueError, match="on_exhausted"):
        BudgetMiddleware(budget, on_exhausted="explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="note_below"):
        BudgetMiddleware(budget, note_below=2)
    with pytest.raises(TypeError, match="fallback_model"):
        BudgetMiddleware(budget, fallback_model="gpt-4o-mini")  # type: ignore[arg-type]
