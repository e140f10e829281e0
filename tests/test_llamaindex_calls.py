"""The LlamaIndex handler on direct LLM calls: refusal before the provider, usage recorded
as reported, nested events counted once, errors, dropped and abandoned streams."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterator
from contextvars import copy_context
from typing import Any

import pytest
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
from llama_index.core.llms import ChatMessage, ChatResponse, MockLLM
from llama_index.core.llms.callbacks import llm_chat_callback

from agent_budget import (
    Budget,
    BudgetError,
    BudgetExceededError,
    BudgetManager,
    BudgetScope,
    MemoryStore,
    RateTable,
    StoreError,
    StoreUnavailableError,
    Usage,
    count_messages,
    default_counter,
)
from agent_budget_callbacks.llamaindex import BudgetCallbackHandler, install

from .fake_llms import (
    FakeChatLLM,
    FakeUsageLLM,
    RecordingHandler,
    Reported,
    isolated_settings,
)

MSGS = [ChatMessage(role="user", content="What is six times seven?")]
BIG = 10_000_000


@pytest.fixture(autouse=True)
def _settings() -> Iterator[None]:
    with isolated_settings():
        yield


def budget(clock: Any, tokens: int = BIG, **kwargs: Any) -> Budget:
    # Unpriced fakes (MockLLM) are charged the fallback rates without a warning.
    rates = RateTable(on_unknown="fallback")
    return Budget(BudgetScope("app", max_tokens_per_session=tokens), rates, clock=clock, **kwargs)


def with_handler(llm: Any, b: Budget, **kwargs: Any) -> BudgetCallbackHandler:
    handler = BudgetCallbackHandler(b, **kwargs)
    llm.callback_manager = CallbackManager([handler])
    return handler


def reserved(b: Budget) -> int:
    return int(b.summary()["session"]["reserved_tokens"])


async def _drain(agen: Any) -> list[Any]:
    return [x async for x in agen]


def call(llm: Any, method: str) -> Any:
    """Run one LLM method to completion (streams fully read); return the last response."""
    if method == "complete":
        return llm.complete("What is six times seven?")
    if method == "chat":
        return llm.chat(MSGS)
    if method == "stream_complete":
        return list(llm.stream_complete("What is six times seven?"))[-1]
    if method == "stream_chat":
        return list(llm.stream_chat(MSGS))[-1]

    async def run() -> Any:
        if method == "acomplete":
            return await llm.acomplete("What is six times seven?")
        if method == "achat":
            return await llm.achat(MSGS)
        if method == "astream_complete":
            return (await _drain(await llm.astream_complete("What is six times seven?")))[-1]
        if method == "astream_chat":
            return (await _drain(await llm.astream_chat(MSGS)))[-1]
        raise AssertionError(method)

    return asyncio.run(run())


METHODS = [
    "complete",
    "chat",
    "stream_complete",
    "stream_chat",
    "acomplete",
    "achat",
    "astream_complete",
    "astream_chat",
]
LLMS = {"native": FakeChatLLM, "custom(nested)": FakeUsageLLM}


# -- refusal ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(LLMS))
@pytest.mark.parametrize("method", METHODS)
def test_refusal_reaches_the_caller_unchanged_and_the_provider_is_never_called(
    clock: Any, kind: str, method: str
) -> None:
    b = budget(clock, tokens=5)
    raised: list[BaseException] = []
    original = b.reserve

    def spy(*args: Any, **kwargs: Any) -> Any:
        try:
            return original(*args, **kwargs)
        except BaseException as exc:
            raised.append(exc)
            raise

    b.reserve = spy  # type: ignore[method-assign]
    llm = LLMS[kind]()
    with_handler(llm, b)
    with pytest.raises(BudgetExceededError) as info:
        call(llm, method)
    assert raised and info.value is raised[0]
    assert llm.counter.calls == 0
    assert b.records == [] and reserved(b) == 0
    assert b.summary()["session"]["tokens"] == 0


def test_a_stream_is_refused_when_requested_not_when_iterated(clock: Any) -> None:
    """Direct stream_* calls fire the LLM start event at call time, before any chunk."""
    llm = FakeChatLLM()
    with_handler(llm, budget(clock, tokens=5))
    with pytest.raises(BudgetExceededError):
        llm.stream_chat(MSGS)
    assert llm.counter.calls == 0


def test_the_hold_exists_before_the_provider_runs(clock: Any) -> None:
    b = budget(clock)
    seen: list[int] = []
    llm = FakeChatLLM(num_output=50, on_enter=lambda: seen.append(reserved(b)))
    with_handler(llm, b)
    llm.chat(MSGS)
    expected_input = count_messages([("user", MSGS[0].content)], default_counter())
    assert seen == [expected_input + 50]
    assert reserved(b) == 0


# -- usage ------------------------------------------------------------------------------

REPORTED = Reported(
    input_tokens=1200,
    output_tokens=300,
    cache_read_tokens=400,
    cache_write_tokens=100,
    reasoning_tokens=80,
)
EXPECTED = {
    "openai_dict": Usage(1200, 300, 400, 0, 80),
    "openai_object": Usage(1200, 300, 400, 0, 80),
    "anthropic": Usage(1200, 300, 400, 100, 0),
    "gemini": Usage(1200, 300, 400, 0, 80),
    "additional_kwargs": Usage(1200, 300),
}


def _usage_of(record: Any) -> Usage:
    return Usage(
        record.input_tokens,
        record.output_tokens,
        record.cache_read_tokens,
        record.cache_write_tokens,
        record.reasoning_tokens,
    )


def _reported_for(style: str) -> Reported:
    if style == "anthropic":
        return Reported(1200, 300, 400, 100, 0)
    if style in ("openai_dict", "openai_object", "gemini"):
        return Reported(1200, 300, 400, 0, 80)
    return Reported(1200, 300)


@pytest.mark.parametrize("style", list(EXPECTED))
@pytest.mark.parametrize("method", METHODS)
def test_recorded_usage_equals_what_the_provider_reported(
    clock: Any, style: str, method: str
) -> None:
    b = budget(clock)
    llm = FakeChatLLM(style=style, reported=_reported_for(style), model="gpt-4o")
    with_handler(llm, b)
    call(llm, method)
    assert llm.counter.calls == 1
    [record] = b.records
    assert _usage_of(record) == EXPECTED[style]
    assert record.estimated is False
    assert record.metadata["usage_source"] == "provider"
    assert record.metadata["framework"] == "llamaindex"
    assert record.model == "gpt-4o"
    assert reserved(b) == 0
    assert b.summary()["session"]["tokens"] == 1500


@pytest.mark.parametrize("method", ["chat", "stream_chat", "achat", "astream_chat"])
def test_anthropic_stream_usage_in_message_additional_kwargs(clock: Any, method: str) -> None:
    b = budget(clock)
    llm = FakeChatLLM(style="anthropic_message", reported=Reported(90, 7))
    with_handler(llm, b)
    call(llm, method)
    [record] = b.records
    assert _usage_of(record) == Usage(90, 7)


@pytest.mark.parametrize("method", METHODS)
def test_nested_llm_events_of_one_provider_call_are_counted_once(clock: Any, method: str) -> None:
    """FakeUsageLLM is a CustomLLM: chat() calls complete(), achat() calls chat(), and
    astream_chat() iterates stream_chat() inside its stream, each firing an LLM event."""
    b = budget(clock)
    recorder = RecordingHandler()
    llm = FakeUsageLLM(style="openai_dict", reported=Reported(500, 20))
    handler = BudgetCallbackHandler(b)
    llm.callback_manager = CallbackManager([handler, recorder])
    call(llm, method)
    events = {
        "complete": 1,
        "stream_complete": 1,
        "acomplete": 2,
        "astream_complete": 2,
        "chat": 2,
        "stream_chat": 2,
        "achat": 3,
        "astream_chat": 3,
    }[method]
    assert len(recorder.starts) == events  # the fact that makes this test necessary
    assert llm.counter.calls == 1
    [record] = b.records
    assert _usage_of(record) == Usage(500, 20)
    assert handler.open_calls == 0 and reserved(b) == 0


class _DroppingLLM(FakeUsageLLM):
    """chat() calls complete() `calls` times and returns a response without usage."""

    calls: int = 1

    @llm_chat_callback()
    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        texts = [self.complete("x", formatted=True).text for _ in range(self.calls)]
        return ChatResponse(message=ChatMessage(role="assistant", content=" ".join(texts)))


@pytest.mark.parametrize("calls", [1, 2])
def test_usage_reported_by_nested_calls_is_summed_into_the_outer_one(
    clock: Any, calls: int
) -> None:
    b = budget(clock)
    llm = _DroppingLLM(reported=Reported(100, 10), calls=calls)
    with_handler(llm, b)
    llm.chat(MSGS)
    assert llm.counter.calls == calls
    [record] = b.records
    assert _usage_of(record) == Usage(100 * calls, 10 * calls)


def test_an_llm_that_reports_nothing_is_charged_counted_tokens(clock: Any) -> None:
    b = budget(clock)
    llm = MockLLM()
    with_handler(llm, b)
    prompt = "hello there, how are you today?"
    llm.complete(prompt)
    [record] = b.records
    counter = default_counter()
    assert record.input_tokens == count_messages([("user", prompt)], counter)
    assert record.output_tokens == counter.count_text(prompt)  # MockLLM echoes the prompt
    assert record.metadata["usage_source"] == "counted"
    assert record.model == "mockllm"  # no model name: priced by class name


def test_mockllm_max_tokens_sizes_the_hold(clock: Any) -> None:
    b = budget(clock)
    llm = MockLLM(max_tokens=5)
    handler = with_handler(llm, b, default_max_output_tokens=999)
    seen: list[int] = []
    original = b.reserve
    b.reserve = lambda *a, **k: seen.append(k["max_output_tokens"]) or original(*a, **k)  # type: ignore
    llm.complete("hi")
    assert seen == [5]
    assert handler.open_calls == 0


# -- payload shapes ---------------------------------------------------------------------


def _start(handler: BudgetCallbackHandler, event_id: str, **payload: Any) -> None:
    handler.on_event_start(CBEventType.LLM, payload=payload, event_id=event_id)


def test_model_and_output_cap_from_to_payload_shape(clock: Any) -> None:
    b = budget(clock)
    handler = BudgetCallbackHandler(b)
    llm = FakeChatLLM(model="claude-3-5-sonnet-20241022", num_output=300)
    serialized = llm.to_payload()
    assert serialized["model_name"] == "claude-3-5-sonnet-20241022"
    assert serialized["num_output"] == 300
    _start(handler, "e1", **{EventPayload.PROMPT: "hi", EventPayload.SERIALIZED: serialized})
    assert reserved(b) == count_messages([("user", "hi")]) + 300
    handler.on_event_end(CBEventType.LLM, payload={}, event_id="e1")
    assert b.records[0].model.startswith("claude-3-5-sonnet")


def test_unset_num_output_falls_back_to_the_default(clock: Any) -> None:
    b = budget(clock)
    handler = BudgetCallbackHandler(b, default_max_output_tokens=77)
    serialized = FakeChatLLM().to_payload()
    assert serialized["num_output"] == -1  # LlamaIndex's "unset"
    _start(handler, "e1", **{EventPayload.PROMPT: "hi", EventPayload.SERIALIZED: serialized})
    assert reserved(b) == count_messages([("user", "hi")]) + 77


def test_model_and_output_cap_from_the_older_to_dict_shape(clock: Any) -> None:
    b = budget(clock)
    handler = BudgetCallbackHandler(b)
    serialized = {
        "model": "gpt-4o",
        "max_tokens": 123,
        "temperature": 0.1,
        "class_name": "openai_llm",
    }
    _start(handler, "e1", **{EventPayload.PROMPT: "hi", EventPayload.SERIALIZED: serialized})
    assert reserved(b) == count_messages([("user", "hi")]) + 123
    handler.on_event_end(CBEventType.LLM, payload={}, event_id="e1")
    assert b.records[0].model == "gpt-4o"


def test_per_call_max_tokens_beats_the_llm_limit(clock: Any) -> None:
    b = budget(clock)
    seen: list[int] = []
    llm = FakeChatLLM(num_output=500, on_enter=lambda: seen.append(reserved(b)))
    with_handler(llm, b)
    llm.complete("hi", max_tokens=40)
    assert seen == [count_messages([("user", "hi")]) + 40]


def test_default_model_prices_llms_without_a_name(clock: Any) -> None:
    b = budget(clock)
    llm = MockLLM()
    with_handler(llm, b, default_model="gpt-4o-mini")
    llm.complete("hi")
    assert b.records[0].model == "gpt-4o-mini"
    assert b.records[0].cost_nanos > 0


def test_tool_definitions_count_as_input(clock: Any) -> None:
    b = budget(clock)
    handler = BudgetCallbackHandler(b, default_max_output_tokens=0)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "add",
                "description": "Add ints",
                "parameters": {"type": "object"},
            },
        }
    ]
    _start(handler, "a", **{EventPayload.MESSAGES: MSGS})
    plain = reserved(b)
    _start(
        handler,
        "b",
        **{EventPayload.MESSAGES: MSGS, EventPayload.ADDITIONAL_KWARGS: {"tools": tools}},
    )
    assert reserved(b) - plain > plain


# -- errors and streams -----------------------------------------------------------------


@pytest.mark.parametrize("kind", list(LLMS))
@pytest.mark.parametrize("method", ["complete", "chat", "achat", "stream_chat", "astream_chat"])
def test_a_provider_error_releases_the_hold(clock: Any, kind: str, method: str) -> None:
    b = budget(clock)
    llm = LLMS[kind](fail=ConnectionError("provider down"))
    handler = with_handler(llm, b)
    with pytest.raises(ConnectionError):
        call(llm, method)
    assert llm.counter.calls == 1
    assert b.records == [] and reserved(b) == 0
    assert handler.open_calls == 0


def test_a_dropped_stream_ends_with_generator_exit(clock: Any) -> None:
    """The LlamaIndex fact behind charging dropped streams."""
    recorder = RecordingHandler()
    llm = FakeChatLLM()
    llm.callback_manager = CallbackManager([recorder])
    stream = llm.stream_chat(MSGS)
    next(stream)
    stream.close()
    [(_, payload)] = recorder.ends
    assert isinstance(payload[EventPayload.EXCEPTION], GeneratorExit)


@pytest.mark.parametrize("kind", list(LLMS))
def test_a_stream_dropped_half_way_is_charged_for_what_it_streamed(clock: Any, kind: str) -> None:
    b = budget(clock)
    llm = LLMS[kind](num_output=400)
    install(b)
    stream = llm.stream_chat(MSGS)
    next(stream)
    next(stream)
    stream.close()
    [record] = b.records
    counter = default_counter()
    assert record.metadata["partial"] is True
    assert record.metadata["usage_source"] == "counted"
    assert record.input_tokens == count_messages([("user", MSGS[0].content)], counter)
    assert record.output_tokens == counter.count_text("the answer")
    assert reserved(b) == 0


def test_an_async_stream_dropped_half_way_is_charged(clock: Any) -> None:
    b = budget(clock)
    llm = FakeChatLLM()
    install(b)

    async def run() -> None:
        stream = await llm.astream_chat(MSGS)
        await stream.__anext__()
        await stream.aclose()

    asyncio.run(run())
    [record] = b.records
    assert record.metadata["partial"] is True
    assert record.output_tokens == default_counter().count_text("the")
    assert reserved(b) == 0


@pytest.mark.parametrize("method", ["stream_chat", "astream_chat", "stream_complete"])
def test_a_stream_that_fails_after_some_chunks_is_charged(clock: Any, method: str) -> None:
    b = budget(clock)
    llm = FakeChatLLM(fail_mid=ConnectionError("reset by peer"))
    install(b)
    with pytest.raises(ConnectionError):
        call(llm, method)
    [record] = b.records
    assert record.metadata["partial"] is True
    assert record.output_tokens == default_counter().count_text("the")
    assert reserved(b) == 0


def test_without_install_a_dropped_stream_is_charged_its_whole_hold(clock: Any) -> None:
    b = budget(clock)
    llm = FakeChatLLM(num_output=400)
    with_handler(llm, b)
    stream = llm.stream_chat(MSGS)
    next(stream)
    stream.close()
    [record] = b.records
    assert record.estimated is True
    assert record.output_tokens == 400
    assert record.metadata["usage_source"] == "reservation"


def test_a_stream_never_iterated_fires_no_end_and_its_hold_expires(clock: Any) -> None:
    b = budget(clock, tokens=count_messages([("user", MSGS[0].content)]) + 100, hold_ttl=30)
    recorder = RecordingHandler()
    llm = FakeChatLLM(num_output=100)
    handler = BudgetCallbackHandler(b)
    llm.callback_manager = CallbackManager([handler, recorder])
    stream = llm.stream_chat(MSGS)
    del stream
    gc.collect()
    assert len(recorder.starts) == 1 and recorder.ends == []
    assert reserved(b) > 0
    with pytest.raises(BudgetExceededError):
        llm.chat(MSGS)
    clock.advance(31)
    assert reserved(b) == 0
    llm.chat(MSGS)  # admitted again
    assert llm.counter.calls == 1
    assert handler.open_calls == 1  # kept an hour past its hold (tests/test_tracking.py)


# -- hooks that must not raise ----------------------------------------------------------


class _Hostile:
    """A response whose every attribute read raises."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"boom reading {name}")


def test_the_end_hook_never_raises_and_charges_the_estimate(
    clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    b = budget(clock)
    handler = BudgetCallbackHandler(b, default_max_output_tokens=10)
    _start(handler, "e1", **{EventPayload.PROMPT: "hi"})
    with caplog.at_level(logging.ERROR, logger="agent_budget.llamaindex"):
        handler.on_event_end(
            CBEventType.LLM, payload={EventPayload.COMPLETION: _Hostile()}, event_id="e1"
        )
    [record] = b.records
    assert record.estimated is True and record.output_tokens == 10
    assert reserved(b) == 0
    assert "charging its estimate" in caplog.text
    # Unknown ids, odd payloads and other event types are ignored quietly.
    handler.on_event_end(CBEventType.LLM, payload=None, event_id="nope")
    handler.on_event_end(CBEventType.QUERY, payload={"x": 1}, event_id="e1")
    handler.record_chunk("no-such-span", object())
    handler.start_trace("t")
    handler.end_trace("t", {})


def test_the_start_hook_ignores_other_events(clock: Any) -> None:
    b = budget(clock, tokens=1)
    handler = BudgetCallbackHandler(b)
    for event_type in CBEventType:
        if event_type is not CBEventType.LLM:
            assert handler.on_event_start(event_type, {}, event_id="x") == "x"
    assert CBEventType.LLM not in handler.event_starts_to_ignore
    assert len(handler.event_starts_to_ignore) == len(CBEventType) - 1


def test_a_duplicate_start_for_one_event_reserves_once(clock: Any) -> None:
    b = budget(clock)
    handler = BudgetCallbackHandler(b, default_max_output_tokens=0)
    _start(handler, "e1", **{EventPayload.PROMPT: "hi"})
    once = reserved(b)
    _start(handler, "e1", **{EventPayload.PROMPT: "hi"})
    assert reserved(b) == once


# -- pairing ----------------------------------------------------------------------------


def test_start_and_end_pair_by_event_id_in_any_order(clock: Any) -> None:
    b = budget(clock)
    handler = BudgetCallbackHandler(b)
    for eid in ("a", "b", "c"):
        _start(handler, eid, **{EventPayload.PROMPT: eid})
    sizes = {"a": 10, "b": 20, "c": 30}
    for eid in ("b", "c", "a"):
        raw = {"usage": {"prompt_tokens": sizes[eid], "completion_tokens": 1}}
        handler.on_event_end(
            CBEventType.LLM,
            payload={EventPayload.RESPONSE: ChatResponse(message=ChatMessage(content=""), raw=raw)},
            event_id=eid,
        )
    assert [r.input_tokens for r in b.records] == [20, 30, 10]
    assert handler.open_calls == 0 and reserved(b) == 0


def test_the_managers_trace_map_is_shared_and_reset_by_other_traces() -> None:
    """Why pairing never uses ``_trace_map``: a second trace (another thread or task)
    starting on the same manager replaces the map under the first one's feet."""
    manager = CallbackManager([])
    first, second = copy_context(), copy_context()
    first.run(manager.start_trace, "query")
    event_id = first.run(manager.on_event_start, CBEventType.QUERY)
    assert any(event_id in children for children in manager.trace_map.values())
    second.run(manager.start_trace, "query")
    assert not any(event_id in children for children in manager.trace_map.values())


# -- configuration ----------------------------------------------------------------------


class _DownStore(MemoryStore):
    """A store whose every reservation fails, as an unreachable server would."""

    def reserve(self, *args: Any, **kwargs: Any) -> Any:
        raise StoreError("connection refused")


@pytest.mark.parametrize("policy", ["fail_closed", "fail_open"])
def test_a_store_outage_follows_the_budgets_policy(clock: Any, policy: str) -> None:
    b = Budget(
        BudgetScope("app", max_tokens_per_session=BIG),
        store=_DownStore(),
        clock=clock,
        on_store_error=policy,
    )  # type: ignore[arg-type]
    llm = FakeChatLLM()
    with_handler(llm, b)
    if policy == "fail_closed":
        with pytest.raises(StoreUnavailableError):
            llm.chat(MSGS)
        assert llm.counter.calls == 0
    else:
        llm.chat(MSGS)
        assert llm.counter.calls == 1 and len(b.records) == 1


def test_a_manager_without_a_scope_refuses_with_a_clear_error(clock: Any) -> None:
    manager = BudgetManager(clock=clock)
    llm = FakeChatLLM()
    with_handler(llm, manager)  # type: ignore[arg-type]
    with pytest.raises(BudgetError, match="budget_scope"):
        llm.chat(MSGS)
    assert llm.counter.calls == 0


def test_constructor_checks(clock: Any) -> None:
    with pytest.raises(TypeError):
        BudgetCallbackHandler(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        BudgetCallbackHandler(budget(clock), scope="x")
    with pytest.raises(ValueError):
        BudgetCallbackHandler(budget(clock), default_max_output_tokens=-1)


def test_copies_of_the_handler_are_the_handler(clock: Any) -> None:
    import copy

    handler = BudgetCallbackHandler(budget(clock))
    assert copy.copy(handler) is handler and copy.deepcopy(handler) is handler
    llm = MockLLM(callback_manager=CallbackManager([handler]))
    assert llm.model_copy(deep=True).callback_manager.handlers[0] is handler
