"""The LlamaIndex handler under concurrency: a cap that fits N admits at most N of 16
concurrent calls (asyncio and threads), nested events stay with their own call, and
LlamaIndex's own TokenCountingHandler budget does neither."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler
from llama_index.core.llms import ChatMessage

from agent_budget import (
    Budget,
    BudgetExceededError,
    BudgetScope,
    RateTable,
    count_messages,
    default_counter,
)
from agent_budget_callbacks.llamaindex import BudgetCallbackHandler, install

from .fake_llms import FakeChatLLM, FakeUsageLLM, Reported, isolated_settings, offline_tokenizer

MSGS = [ChatMessage(role="user", content="Summarise the quarterly report, please.")]
OUTPUT_CAP = 20
CALLS = 16


@pytest.fixture(autouse=True)
def _settings() -> Iterator[None]:
    with isolated_settings():
        yield


def per_call() -> int:
    """Tokens one call holds: the prompt estimate plus its output cap."""
    return count_messages([("user", MSGS[0].content)], default_counter()) + OUTPUT_CAP


def capped_budget(clock: Any, fits: int) -> Budget:
    cap = fits * per_call() + per_call() - 1  # room for `fits` holds, not one more
    return Budget(
        BudgetScope("app", max_tokens_per_session=cap),
        RateTable(on_unknown="fallback"),
        clock=clock,
    )


@pytest.mark.parametrize("fits", [0, 1, 5, 15])
def test_concurrent_achat_calls_admit_at_most_what_fits(clock: Any, fits: int) -> None:
    b = capped_budget(clock, fits)
    llm = FakeChatLLM(num_output=OUTPUT_CAP, reported=Reported(10, 2))
    llm.callback_manager = CallbackManager([BudgetCallbackHandler(b)])

    async def run() -> list[Any]:
        llm.async_gate = asyncio.Event()
        tasks = [asyncio.ensure_future(llm.achat(MSGS)) for _ in range(CALLS)]
        # Hold every admitted call inside the provider until all 16 have been decided.
        while llm.counter.calls + sum(t.done() for t in tasks) < CALLS:
            await asyncio.sleep(0)
        assert llm.counter.calls == fits  # all in flight at once
        llm.async_gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(run())
    refused = [r for r in results if isinstance(r, BudgetExceededError)]
    assert len(refused) == CALLS - fits
    assert all(
        not isinstance(r, BaseException) or isinstance(r, BudgetExceededError) for r in results
    )
    assert llm.counter.calls == fits
    assert len(b.records) == fits
    assert b.summary()["session"]["reserved_tokens"] == 0


@pytest.mark.parametrize("fits", [0, 1, 5, 15])
def test_concurrent_threads_admit_at_most_what_fits(clock: Any, fits: int) -> None:
    b = capped_budget(clock, fits)
    gate = threading.Event()
    llm = FakeChatLLM(num_output=OUTPUT_CAP, reported=Reported(10, 2), gate=gate)
    llm.callback_manager = CallbackManager([BudgetCallbackHandler(b)])
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            llm.chat(MSGS)
        except BudgetExceededError:
            llm.counter.note_refused()
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)
            llm.counter.note_refused()

    threads = [threading.Thread(target=worker) for _ in range(CALLS)]
    for thread in threads:
        thread.start()
    try:
        assert llm.counter.wait_for(CALLS)
        assert llm.counter.calls == fits  # all admitted calls are inside the provider now
    finally:
        gate.set()
        for thread in threads:
            thread.join(30)
    assert errors == []
    assert llm.counter.refused == CALLS - fits
    assert len(b.records) == fits
    assert b.summary()["session"]["reserved_tokens"] == 0


def test_nested_events_in_many_threads_stay_with_their_own_call(clock: Any) -> None:
    """Each thread's CustomLLM chat() fires two events; the stack walk keeps them apart."""
    b = Budget(BudgetScope("app", max_tokens_per_session=10**9), clock=clock)
    gate = threading.Event()
    llm = FakeUsageLLM(reported=Reported(30, 3), gate=gate)
    handler = BudgetCallbackHandler(b)
    llm.callback_manager = CallbackManager([handler])
    threads = [threading.Thread(target=llm.chat, args=(MSGS,)) for _ in range(CALLS)]
    for thread in threads:
        thread.start()
    assert llm.counter.wait_for(CALLS)
    assert handler.open_calls == CALLS  # one hold per call, none for the nested events
    gate.set()
    for thread in threads:
        thread.join(30)
    assert len(b.records) == CALLS
    assert all((r.input_tokens, r.output_tokens) == (30, 3) for r in b.records)
    assert handler.open_calls == 0


def test_interleaved_async_streams_are_each_counted_once(clock: Any) -> None:
    b = Budget(BudgetScope("app", max_tokens_per_session=10**9), clock=clock)
    llm = FakeUsageLLM(reported=Reported(30, 3))  # astream_chat: three nested events
    handler = install(b)

    async def one() -> str:
        text = ""
        async for chunk in await llm.astream_chat(MSGS):
            text = chunk.message.content or ""
            await asyncio.sleep(0)  # let the other streams run in between
        return text

    async def run() -> list[str]:
        return await asyncio.gather(*(one() for _ in range(CALLS)))

    assert asyncio.run(run()) == [llm.reply] * CALLS
    assert llm.counter.calls == CALLS
    assert len(b.records) == CALLS
    assert all((r.input_tokens, r.output_tokens) == (30, 3) for r in b.records)
    assert handler.open_calls == 0


# -- LlamaIndex's own budget, for contrast ----------------------------------------------


def test_token_counting_handler_budget_refuses_only_after_the_spend() -> None:
    """TokenCountingHandler(token_budget=N) checks after each call: the call that crosses
    the budget runs (and is billed), then fails with ValueError."""
    llm = FakeChatLLM()
    counting = TokenCountingHandler(tokenizer=offline_tokenizer(), token_budget=5)
    llm.callback_manager = CallbackManager([counting])
    with pytest.raises(ValueError, match="Token budget exceeded"):
        llm.chat(MSGS)
    assert llm.counter.calls == 1  # the provider ran
    with pytest.raises(ValueError):
        llm.chat(MSGS)
    assert llm.counter.calls == 1  # the next one is stopped


def test_token_counting_handler_budget_over_admits_under_concurrency() -> None:
    llm = FakeChatLLM()
    counting = TokenCountingHandler(tokenizer=offline_tokenizer(), token_budget=20)
    llm.callback_manager = CallbackManager([counting])

    async def run() -> list[Any]:
        llm.async_gate = asyncio.Event()
        tasks = [asyncio.ensure_future(llm.achat(MSGS)) for _ in range(10)]
        while llm.counter.calls + sum(t.done() for t in tasks) < 10:
            await asyncio.sleep(0)
        llm.async_gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(run())
    assert llm.counter.calls == 10  # all ran against a 20-token budget
    assert counting.total_llm_token_count > 20
