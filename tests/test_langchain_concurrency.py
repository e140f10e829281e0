"""Concurrent starts (batch threads, abatch on one loop, many threads) never admit more
calls than the budget fits, and a refused multi-prompt generate() leaves no holds behind."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from agent_budget import Budget, BudgetExceededError, BudgetScope, ModelRates, count_messages
from agent_budget_callbacks.langchain import BudgetCallbackHandler

from .fake_chat_models import Bill, FakeChatOpenAI, FakeOpenAILLM

LEGACY_RATES = {"gpt-3.5-turbo-instruct": ModelRates.per_million("1.50", "2.00")}


class WordCounter:
    """One token per word, so reservation sizes are exact in tests."""

    name = "words"

    def count_text(self, text: str) -> int:
        return len(text.split())


# "hi" costs count_messages([("human", "hi")]) tokens; with an output cap filling the rest,
# every call reserves exactly RESERVE tokens and the fake bills exactly RESERVE.
RESERVE = 100
PROMPT = count_messages([("human", "hi")], WordCounter())
CAP_FITS = 5


def _budget(clock: Any, store: str | None = None) -> Budget:
    return Budget(
        BudgetScope(name="conc", max_tokens_per_session=RESERVE * CAP_FITS),
        LEGACY_RATES,
        store=store,
        clock=clock,
    )


def _model() -> FakeChatOpenAI:
    model = FakeChatOpenAI(max_tokens=RESERVE - PROMPT, bill=Bill(60, 40))
    # Keep each admitted call in flight a moment, so holds overlap with other starts.
    model.before_call = lambda: time.sleep(0.002)
    return model


@pytest.fixture(params=["memory", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    return None if request.param == "memory" else f"sqlite:///{tmp_path / 'budget.db'}"


def _check(budget: Budget, results: list[Any], calls: int) -> None:
    admitted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BudgetExceededError)]
    assert len(admitted) + len(refused) == len(results) == 32
    assert len(admitted) == calls == CAP_FITS
    summary = budget.summary()["session"]
    assert summary["tokens"] == RESERVE * CAP_FITS
    assert summary["reserved_tokens"] == 0


def test_batch_of_32_admits_at_most_what_fits(clock: Any, store_url: str | None) -> None:
    budget = _budget(clock, store_url)
    model = _model()
    handler = BudgetCallbackHandler(budget, counter=WordCounter())
    results = model.batch(["hi"] * 32, config={"callbacks": [handler]}, return_exceptions=True)
    _check(budget, results, model.calls.value)


def test_abatch_of_32_admits_at_most_what_fits(clock: Any, store_url: str | None) -> None:
    budget = _budget(clock, store_url)
    model = _model()
    handler = BudgetCallbackHandler(budget, counter=WordCounter())
    results = asyncio.run(
        model.abatch(["hi"] * 32, config={"callbacks": [handler]}, return_exceptions=True)
    )
    _check(budget, results, model.calls.value)


def test_batch_without_return_exceptions_raises_and_still_caps(clock: Any) -> None:
    budget = _budget(clock)
    model = _model()
    handler = BudgetCallbackHandler(budget, counter=WordCounter())
    with pytest.raises(BudgetExceededError):
        model.batch(["hi"] * 32, config={"callbacks": [handler], "max_concurrency": 8})
    assert model.calls.value <= CAP_FITS
    assert budget.summary()["session"]["reserved_tokens"] == 0


def test_many_threads_share_one_handler(clock: Any) -> None:
    budget = _budget(clock)
    model = _model()
    handler = BudgetCallbackHandler(budget, counter=WordCounter())
    results: list[Any] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            out: Any = model.invoke("hi", config={"callbacks": [handler]})
        except BudgetExceededError as exc:
            out = exc
        with lock:
            results.append(out)

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _check(budget, results, model.calls.value)
    assert handler.open_runs == 0


@pytest.mark.parametrize("how", ["batch", "abatch", "generate", "agenerate"])
def test_legacy_multi_prompt_refusal_is_all_or_nothing_and_frees_its_holds(
    clock: Any, how: str
) -> None:
    """BaseLLM starts every prompt of one generate() before calling the provider once; a
    refusal part way fails the whole call, and LangChain never ends the runs already
    started. The handler releases their holds at once instead of letting them expire."""
    budget = _budget(clock)
    llm = FakeOpenAILLM(max_tokens=RESERVE - 1)  # a one-word prompt reserves RESERVE
    handler = BudgetCallbackHandler(budget, counter=WordCounter())
    prompts = ["hi"] * 32
    with pytest.raises(BudgetExceededError):
        if how == "batch":
            llm.batch(prompts, config={"callbacks": [handler]})
        elif how == "abatch":
            asyncio.run(llm.abatch(prompts, config={"callbacks": [handler]}))
        elif how == "generate":
            llm.generate(prompts, callbacks=[handler])
        else:
            asyncio.run(llm.agenerate(prompts, callbacks=[handler]))
    assert llm.calls.value == 0
    summary = budget.summary()["session"]
    assert summary["tokens"] == 0 and summary["reserved_tokens"] == 0
    assert handler.open_runs == 0
    # The budget is whole again: a call that fits goes through.
    assert llm.invoke("hi", config={"callbacks": [handler]}) == "Once upon a time"


def test_chat_generate_with_many_message_lists_frees_holds_on_refusal(clock: Any) -> None:
    budget = _budget(clock)
    model = _model()
    handler = BudgetCallbackHandler(budget, counter=WordCounter())
    with pytest.raises(BudgetExceededError):
        model.generate([[HumanMessage("hi")]] * 8, callbacks=[handler])
    assert model.calls.value == 0
    assert budget.summary()["session"]["reserved_tokens"] == 0
    assert handler.open_runs == 0
    # LangChain drops the start coroutines of the lists after the refused one.
    with pytest.warns(RuntimeWarning, match="'ahandle_event' was never awaited"):
        try:
            asyncio.run(model.agenerate([[HumanMessage("hi")]] * 8, callbacks=[handler]))
        except BudgetExceededError:
            pass
        else:
            raise AssertionError("not refused")
        gc.collect()
    assert model.calls.value == 0
    assert budget.summary()["session"]["reserved_tokens"] == 0


def test_chat_generate_with_room_records_each_list(clock: Any) -> None:
    budget = _budget(clock)
    model = _model()
    handler = BudgetCallbackHandler(budget, counter=WordCounter())
    model.generate([[HumanMessage("hi")]] * 3, callbacks=[handler])
    assert len(budget.records) == 3 == model.calls.value
    assert budget.summary()["session"]["tokens"] == 3 * RESERVE
