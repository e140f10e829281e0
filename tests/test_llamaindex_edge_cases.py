"""Edge cases found in review: install() twice, a wrapper LLM making two provider calls, a
refusal by another budget handler, and an achat cancelled by a timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import ChatMessage, LLMMetadata
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM

from agent_budget import Budget, BudgetExceededError, BudgetScope, RateTable
from agent_budget_callbacks.llamaindex import BudgetCallbackHandler, install, uninstall

from .fake_llms import FakeChatLLM, Reported, isolated_settings


@pytest.fixture(autouse=True)
def _settings() -> Iterator[None]:
    with isolated_settings():
        yield


def _budget(clock: Any, tokens: int = 10**7, name: str = "app") -> Budget:
    return Budget(
        BudgetScope(name, max_tokens_per_session=tokens),
        RateTable(on_unknown="fallback"),
        clock=clock,
    )


def test_installing_the_same_budget_twice_charges_once(clock: Any) -> None:
    budget = _budget(clock)
    first = install(budget)
    assert install(budget) is first
    llm = FakeChatLLM(reported=Reported(40, 12))
    llm.complete("hi")
    assert llm.counter.calls == 1
    assert len(budget.records) == 1 and budget.summary()["session"]["tokens"] == 52
    with pytest.raises(ValueError, match="already installed"):
        install(budget, default_model="gpt-4o")
    uninstall()


def test_wrapper_llm_with_two_provider_calls_records_both(clock: Any) -> None:
    budget = _budget(clock)
    handler = BudgetCallbackHandler(budget)
    router = FakeChatLLM(reported=Reported(300, 20))
    answer = FakeChatLLM(reported=Reported(1000, 200))

    class RoutingLLM(CustomLLM):
        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(model_name="gpt-4o-mini")

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kw: Any) -> Any:
            raise NotImplementedError

        def stream_complete(self, prompt: str, formatted: bool = False, **kw: Any) -> Any:
            raise NotImplementedError

        @llm_chat_callback()
        def chat(self, messages: Any, **kw: Any) -> Any:
            router.complete("which model?")  # provider call 1
            return answer.chat(messages)  # provider call 2

    for llm in (router, answer):
        llm.callback_manager = CallbackManager([handler])
    wrapper = RoutingLLM()
    wrapper.callback_manager = CallbackManager([handler])
    wrapper.chat([ChatMessage(role="user", content="hi")])
    assert router.counter.calls + answer.counter.calls == 2
    assert [(r.input_tokens, r.output_tokens) for r in budget.records] == [(1300, 220)]


def test_refusal_by_another_budget_handler_frees_this_handlers_hold(clock: Any) -> None:
    user = _budget(clock, name="user")
    strict = _budget(clock, tokens=5, name="global")
    user_handler = BudgetCallbackHandler(user)
    llm = FakeChatLLM()
    llm.callback_manager = CallbackManager([user_handler, BudgetCallbackHandler(strict)])
    with pytest.raises(BudgetExceededError) as info:
        llm.complete("hi")
    assert info.value.scope == "global" and llm.counter.calls == 0
    assert user.summary()["session"]["reserved_tokens"] == 0
    assert user_handler.open_calls == 0


def test_achat_cancelled_by_a_timeout_keeps_its_hold_until_it_expires(clock: Any) -> None:
    budget = Budget(
        BudgetScope("app", max_tokens_per_session=10**7),
        RateTable(on_unknown="fallback"),
        clock=clock,
        hold_ttl=60,
    )
    llm = FakeChatLLM(async_gate=asyncio.Event())
    llm.callback_manager = CallbackManager([BudgetCallbackHandler(budget)])

    async def call() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(llm.achat([ChatMessage(role="user", content="hi")]), 0.05)

    asyncio.run(call())
    assert llm.counter.calls == 1  # the request went out
    assert budget.summary()["session"]["reserved_tokens"] > 0  # so a timeout loop stays capped
    clock.advance(61)
    assert budget.summary()["session"]["reserved_tokens"] == 0


def test_state_of_calls_that_never_end_is_forgotten(clock: Any) -> None:
    """A start whose end never comes (a timed-out request) leaves no state behind for good:
    once its hold and the grace period are over, the next starts forget it."""
    from llama_index.core.callbacks.schema import CBEventType, EventPayload

    from agent_budget_callbacks.llamaindex import handler as handler_module

    budget = Budget(
        BudgetScope("lost", max_tokens_per_session=10**9),
        RateTable(on_unknown="fallback"),
        clock=clock,
        hold_ttl=1,
    )
    handler = BudgetCallbackHandler(budget, default_model="m")
    payload = {EventPayload.PROMPT: "hello", EventPayload.SERIALIZED: {"model": "m"}}
    kept = handler_module._STATES_KEPT
    for i in range(kept + 1):
        handler.on_event_start(CBEventType.LLM, payload, event_id=f"lost-{i}")
    clock.advance(1 + 3600 + 1)  # the holds expired, and the tracker's grace is over
    for i in range(80):
        handler.on_event_start(CBEventType.LLM, payload, event_id=f"next-{i}")
    handler.on_event_start(CBEventType.LLM, payload, event_id="last")
    assert len(handler._states) <= 80 + 1
    assert handler.open_calls <= 80 + 1
