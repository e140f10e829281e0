"""Errors release the hold; an abandoned or cancelled stream is charged what it produced;
a timed-out call releases through hold expiry (fake clock); the end and error hooks never
raise into a call that was already paid for."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult

from agent_budget import Budget, BudgetExceededError, BudgetScope, ModelRates, count_messages
from agent_budget.calls import TRACKER_GRACE_SECONDS as _TRACKER_GRACE_SECONDS
from agent_budget_callbacks.langchain import BudgetCallbackHandler

from .fake_chat_models import Bill, FakeChatAnthropic, FakeChatOpenAI, FakeOpenAILLM

LEGACY_RATES = {"gpt-3.5-turbo-instruct": ModelRates.per_million("1.50", "2.00")}


class WordCounter:
    """One token per word, so estimates are exact in tests."""

    name = "words"

    def count_text(self, text: str) -> int:
        return len(text.split())


PROMPT = count_messages([("human", "hi")], WordCounter())


def _budget(clock: Any, tokens: int = 1_000_000, hold_ttl: float = 600.0) -> Budget:
    return Budget(
        BudgetScope(name="life", max_tokens_per_session=tokens),
        LEGACY_RATES,
        clock=clock,
        hold_ttl=hold_ttl,
    )


def _state(budget: Budget) -> tuple[int, int]:
    session = budget.summary()["session"]
    return session["tokens"], session["reserved_tokens"]


class Events(BaseCallbackHandler):
    """Records which LLM hooks fired, to pin LangChain's event sequences."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        self.events.append("start")

    def on_llm_start(self, *args: Any, **kwargs: Any) -> None:
        self.events.append("start")

    def on_llm_end(self, *args: Any, **kwargs: Any) -> None:
        self.events.append("end")

    def on_llm_error(self, error: BaseException, **kwargs: Any) -> None:
        self.events.append(f"error:{type(error).__name__}")


# -- provider errors -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["invoke", "stream", "ainvoke", "astream"])
def test_provider_error_releases_the_hold(clock: Any, mode: str) -> None:
    budget = _budget(clock)
    boom = RuntimeError("provider down")
    model = FakeChatOpenAI(error=boom)
    config: Any = {"callbacks": [BudgetCallbackHandler(budget)]}

    async def consume() -> None:
        async for _ in model.astream("hi", config=config):
            pass

    with pytest.raises(RuntimeError) as info:
        if mode == "invoke":
            model.invoke("hi", config=config)
        elif mode == "stream":
            list(model.stream("hi", config=config))
        elif mode == "ainvoke":
            asyncio.run(model.ainvoke("hi", config=config))
        else:
            asyncio.run(consume())
    assert info.value is boom
    assert model.calls.value == 1
    assert _state(budget) == (0, 0)
    assert budget.records == []


# -- abandoned and cancelled streams -------------------------------------------------------


def test_abandoned_stream_commits_reported_partial_usage(clock: Any) -> None:
    budget = _budget(clock)
    events = Events()
    model = FakeChatAnthropic(
        bill=Bill(1000, 50, cache_read=200),
        stream_usage="split",
        replies=["one two three four five six"],
    )
    handler = BudgetCallbackHandler(budget, counter=WordCounter())
    stream = model.stream("hi", config={"callbacks": [handler, events]})
    first = next(stream)  # message_start: model name and, here, the input usage
    assert first.usage_metadata is not None and first.usage_metadata["input_tokens"] == 1000
    next(stream)  # "one"
    next(stream)  # " two"
    stream.close()
    # Pinned: closing the generator fires on_llm_error(GeneratorExit) with the partial.
    assert events.events == ["start", "error:GeneratorExit"]
    (record,) = budget.records
    assert (record.input_tokens, record.cache_read_tokens) == (1000, 200)
    assert record.output_tokens == 2  # the two words received
    assert record.metadata["partial"] is True and record.metadata["error"] == "GeneratorExit"
    # The output count was reconstructed from the text received, so the record says so.
    assert record.model == "claude-3-5-sonnet" and record.estimated
    assert _state(budget) == (1002, 0)


def test_abandoned_stream_without_usage_commits_the_counted_partial(clock: Any) -> None:
    budget = _budget(clock)
    model = FakeChatOpenAI(replies=["one two three four"])  # usage only on the last chunk
    handler = BudgetCallbackHandler(budget, counter=WordCounter())
    stream = model.stream("hi", config={"callbacks": [handler]})
    next(stream)
    next(stream)
    stream.close()
    (record,) = budget.records
    assert (record.input_tokens, record.output_tokens) == (PROMPT, 2)
    assert record.metadata["partial"] is True
    assert _state(budget) == (PROMPT + 2, 0)


def test_abandoned_legacy_stream_commits_the_counted_partial(clock: Any) -> None:
    budget = _budget(clock)
    llm = FakeOpenAILLM(reply="alpha beta gamma delta")
    stream = llm.stream(
        "one two", config={"callbacks": [BudgetCallbackHandler(budget, counter=WordCounter())]}
    )
    next(stream)
    stream.close()
    # Pinned: BaseLLM.stream keeps a chunk only after yielding it, so the partial it
    # reports lags one chunk; the prompt is charged all the same.
    assert (budget.records[-1].input_tokens, budget.records[-1].output_tokens) == (2, 0)
    stream = llm.stream(
        "one two", config={"callbacks": [BudgetCallbackHandler(budget, counter=WordCounter())]}
    )
    next(stream)
    next(stream)
    stream.close()
    assert (budget.records[-1].input_tokens, budget.records[-1].output_tokens) == (2, 1)
    assert _state(budget) == (5, 0)


def test_abandoned_astream_commits_the_partial(clock: Any) -> None:
    budget = _budget(clock)
    model = FakeChatAnthropic(bill=Bill(1000, 50), stream_usage="split", replies=["a b c d"])
    handler = BudgetCallbackHandler(budget, counter=WordCounter())

    async def main() -> None:
        stream = model.astream("hi", config={"callbacks": [handler]})
        await stream.__anext__()
        await stream.__anext__()
        await stream.aclose()

    asyncio.run(main())
    (record,) = budget.records
    assert (record.input_tokens, record.output_tokens) == (1000, 1)
    assert record.metadata["error"] == "GeneratorExit"


def test_cancelled_astream_commits_the_partial(clock: Any) -> None:
    budget = _budget(clock)
    events = Events()
    model = FakeChatOpenAI(replies=["a b c d"], hang_after_chunks=2)
    handler = BudgetCallbackHandler(budget, counter=WordCounter())
    received: list[Any] = []

    async def consume() -> None:
        async for chunk in model.astream("hi", config={"callbacks": [handler, events]}):
            received.append(chunk)

    async def main() -> None:
        task = asyncio.create_task(consume())
        while len(received) < 2:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert events.events == ["start", "error:CancelledError"]
    (record,) = budget.records
    assert (record.input_tokens, record.output_tokens) == (PROMPT, 2)
    assert _state(budget) == (PROMPT + 2, 0)


# -- timeouts: the hold expires ------------------------------------------------------------


@pytest.mark.parametrize("how", ["wait_for", "cancel"])
def test_timed_out_ainvoke_frees_its_hold_through_expiry(clock: Any, how: str) -> None:
    one_call = PROMPT + 50
    budget = _budget(clock, tokens=one_call, hold_ttl=30.0)
    events = Events()
    handler = BudgetCallbackHandler(budget, counter=WordCounter())
    model = FakeChatOpenAI(max_tokens=50, hang=True)

    async def main() -> None:
        call = model.ainvoke("hi", config={"callbacks": [handler, events]})
        if how == "wait_for":
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(call, timeout=0.01)
        else:
            task = asyncio.ensure_future(call)
            while model.calls.value == 0:
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    # Pinned: the run started and LangChain fired neither end nor error.
    assert events.events == ["start"]
    assert _state(budget) == (0, one_call)  # still held
    model.hang = False
    with pytest.raises(BudgetExceededError):
        model.invoke("hi", config={"callbacks": [handler]})
    clock.advance(31)  # past the hold's TTL
    assert _state(budget) == (0, 0)
    model.invoke("hi", config={"callbacks": [handler]})
    assert _state(budget) == (150, 0)


def test_handler_hold_ttl_overrides_the_budgets(clock: Any) -> None:
    budget = _budget(clock, hold_ttl=600.0)
    handler = BudgetCallbackHandler(budget, hold_ttl=5.0, counter=WordCounter())
    model = FakeChatOpenAI(max_tokens=10, hang=True)

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(model.ainvoke("hi", config={"callbacks": [handler]}), 0.01)

    asyncio.run(main())
    assert _state(budget)[1] == PROMPT + 10
    clock.advance(6)
    assert _state(budget)[1] == 0


def test_never_ended_runs_are_forgotten_after_expiry(clock: Any) -> None:
    budget = _budget(clock, hold_ttl=10.0)
    handler = BudgetCallbackHandler(budget)
    model = FakeChatOpenAI(hang=True)

    async def main(calls: int) -> None:
        for _ in range(calls):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(model.ainvoke("hi", config={"callbacks": [handler]}), 0.005)

    asyncio.run(main(3))
    assert handler.open_runs == 3
    clock.advance(10 + _TRACKER_GRACE_SECONDS + 1)
    asyncio.run(main(62))  # stale runs are looked for once more than 64 are open
    assert handler.open_runs == 65 - 3
    model.hang = False
    model.invoke("hi", config={"callbacks": [handler]})
    assert handler.open_runs == 62  # the three long-expired ones are gone


def test_a_call_slower_than_the_hold_ttl_is_still_recorded(clock: Any) -> None:
    budget = _budget(clock, hold_ttl=10.0)
    model = FakeChatOpenAI(bill=Bill(100, 10))
    model.before_call = lambda: clock.advance(60)  # the hold expires mid-call
    model.invoke("hi", config={"callbacks": [BudgetCallbackHandler(budget)]})
    assert _state(budget) == (110, 0)


# -- hooks other than the start hooks never raise ------------------------------------------


def test_a_failing_commit_does_not_fail_the_paid_call(
    clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    budget = _budget(clock)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bookkeeping bug")

    budget.commit = broken  # type: ignore[method-assign]
    budget.release = broken  # type: ignore[method-assign]
    handler = BudgetCallbackHandler(budget)
    with caplog.at_level(logging.ERROR, logger="agent_budget.langchain"):
        out = FakeChatOpenAI().invoke("hi", config={"callbacks": [handler]})
        assert out.content == "Hello there, friend."
        chunks = list(FakeChatOpenAI().stream("hi", config={"callbacks": [handler]}))
        assert chunks
        with pytest.raises(ValueError, match="provider"):
            FakeChatOpenAI(error=ValueError("provider")).invoke(
                "hi", config={"callbacks": [handler]}
            )
    messages = [r.getMessage() for r in caplog.records]
    assert sum("could not record the end" in m for m in messages) == 2
    assert sum("could not record the error" in m for m in messages) == 1


def test_end_and_error_for_unknown_runs_are_ignored(clock: Any) -> None:
    budget = _budget(clock)
    handler = BudgetCallbackHandler(budget)
    handler.on_llm_end(LLMResult(generations=[]), run_id=uuid.uuid4())
    handler.on_llm_error(RuntimeError("x"), run_id=uuid.uuid4(), response=object())
    assert budget.records == []


def test_a_malformed_response_is_logged_not_raised(
    clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    budget = _budget(clock)
    handler = BudgetCallbackHandler(budget)
    run_id = uuid.uuid4()
    handler.on_llm_start({}, ["hi"], run_id=run_id, invocation_params={"model": "gpt-4o"})
    with caplog.at_level(logging.ERROR, logger="agent_budget.langchain"):
        handler.on_llm_end(object(), run_id=run_id)  # type: ignore[arg-type]
    assert "could not record the end" in caplog.text
    # The hold was taken out of the tracker first; it expires on its own.
    assert handler.open_runs == 0
