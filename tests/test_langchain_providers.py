"""The real ChatOpenAI and ChatAnthropic, over a mocked HTTP transport (no network), report
usage exactly as the fakes do, and the handler records the same for both: this is what
makes the fake-model tests stand for the real integrations. Skipped when the provider
packages (extra ``providers``) are not installed."""

from __future__ import annotations

import asyncio
import importlib
import json
from typing import Any

import pytest

from agent_budget import Budget, BudgetExceededError, BudgetScope
from agent_budget_callbacks.langchain import BudgetCallbackHandler

from .fake_chat_models import Bill, CallCounter, FakeChatAnthropic, FakeChatOpenAI
from .provider_checks import record_shape

langchain_openai = pytest.importorskip("langchain_openai")
langchain_anthropic = pytest.importorskip("langchain_anthropic")
anthropic = pytest.importorskip("anthropic")
httpx = pytest.importorskip("httpx")
# The HTTP library the anthropic SDK is built on: httpx before anthropic 2, httpx2 after.
anthropic_http = importlib.import_module("anthropic._base_client").httpx

OPENAI_BILL = Bill(1000, 300, cache_read=400, reasoning=100)
ANTHROPIC_BILL = Bill(2000, 200, cache_read=600, cache_creation=400)
TEXT = "Hello there, friend."


def _openai_body(stream: bool) -> tuple[str, str]:
    usage = FakeChatOpenAI.raw_usage(OPENAI_BILL)
    base = {"id": "chatcmpl-1", "created": 1, "model": "gpt-4o-2024-08-06"}
    if not stream:
        body = {
            **base,
            "object": "chat.completion",
            "usage": usage,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": TEXT},
                    "finish_reason": "stop",
                }
            ],
        }
        return json.dumps(body), "application/json"
    base = {**base, "object": "chat.completion.chunk"}
    events = [
        {
            **base,
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            ],
        },
        {**base, "choices": [{"index": 0, "delta": {"content": TEXT}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**base, "choices": [], "usage": usage},
    ]
    text = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    return text, "text/event-stream"


def _anthropic_body(stream: bool) -> tuple[str, str]:
    usage = FakeChatAnthropic.raw_usage(ANTHROPIC_BILL)
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-sonnet-20241022",
        "stop_sequence": None,
    }
    if not stream:
        body = {
            **message,
            "content": [{"type": "text", "text": TEXT}],
            "stop_reason": "end_turn",
            "usage": usage,
        }
        return json.dumps(body), "application/json"
    events = [
        {
            "type": "message_start",
            "message": {
                **message,
                "content": [],
                "stop_reason": None,
                "usage": {**usage, "output_tokens": 1},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": TEXT}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": usage,
        },
        {"type": "message_stop"},
    ]
    text = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
    return text, "text/event-stream"


def real_openai(calls: CallCounter) -> Any:
    def respond(request: Any) -> Any:
        calls.hit()
        text, kind = _openai_body(bool(json.loads(request.content).get("stream")))
        return httpx.Response(200, text=text, headers={"content-type": kind})

    transport = httpx.MockTransport(respond)
    return langchain_openai.ChatOpenAI(
        model="gpt-4o",
        api_key="sk-test",
        max_retries=0,
        stream_usage=True,
        http_client=httpx.Client(transport=transport),
        http_async_client=httpx.AsyncClient(transport=transport),
    )


def real_anthropic(calls: CallCounter) -> Any:
    def respond(request: Any) -> Any:
        calls.hit()
        text, kind = _anthropic_body(bool(json.loads(request.content).get("stream")))
        return anthropic_http.Response(200, text=text, headers={"content-type": kind})

    transport = anthropic_http.MockTransport(respond)
    model = langchain_anthropic.ChatAnthropic(
        model="claude-3-5-sonnet-20241022", api_key="sk-test", max_retries=0
    )
    # ChatAnthropic takes no http_client; its SDK clients are cached properties.
    model.__dict__["_client"] = anthropic.Anthropic(
        api_key="sk-test", max_retries=0, http_client=anthropic_http.Client(transport=transport)
    )
    model.__dict__["_async_client"] = anthropic.AsyncAnthropic(
        api_key="sk-test",
        max_retries=0,
        http_client=anthropic_http.AsyncClient(transport=transport),
    )
    return model


PAIRS = {
    "openai": (real_openai, lambda: FakeChatOpenAI(bill=OPENAI_BILL)),
    "anthropic": (real_anthropic, lambda: FakeChatAnthropic(bill=ANTHROPIC_BILL)),
}


async def _astream(model: Any, config: Any) -> Any:
    total = None
    async for chunk in model.astream("hello", config=config):
        total = chunk if total is None else total + chunk
    return total


def _all_modes(model: Any, handler: BudgetCallbackHandler) -> list[Any]:
    config: Any = {"callbacks": [handler]}
    chunks = list(model.stream("hello", config=config))
    streamed = chunks[0]
    for chunk in chunks[1:]:
        streamed = streamed + chunk
    return [
        model.invoke("hello", config=config),
        streamed,
        asyncio.run(model.ainvoke("hello", config=config)),
        asyncio.run(_astream(model, config)),
    ]


@pytest.mark.parametrize("provider", list(PAIRS))
def test_real_and_fake_report_and_record_the_same(clock: Any, provider: str) -> None:
    make_real, make_fake = PAIRS[provider]
    calls = CallCounter()
    real_budget = Budget(BudgetScope(name="real", max_tokens_per_session=10**9), clock=clock)
    fake_budget = Budget(BudgetScope(name="fake", max_tokens_per_session=10**9), clock=clock)
    real_out = _all_modes(make_real(calls), BudgetCallbackHandler(real_budget))
    fake_out = _all_modes(make_fake(), BudgetCallbackHandler(fake_budget))
    assert calls.value == 4
    for real, fake in zip(real_out, fake_out, strict=True):
        assert real.usage_metadata == fake.usage_metadata
        assert real.response_metadata["model_name"] == fake.response_metadata["model_name"]
    assert [record_shape(r) for r in real_budget.records] == [
        record_shape(r) for r in fake_budget.records
    ]
    assert len({record_shape(r) for r in real_budget.records}) == 1  # all four modes agree


@pytest.mark.parametrize("provider", list(PAIRS))
def test_real_model_is_not_called_after_a_refusal(clock: Any, provider: str) -> None:
    calls = CallCounter()
    model = PAIRS[provider][0](calls)
    handler = BudgetCallbackHandler(
        Budget(BudgetScope(name="t", max_tokens_per_session=10), clock=clock)
    )
    with pytest.raises(BudgetExceededError):
        model.invoke("hello", config={"callbacks": [handler]})
    with pytest.raises(BudgetExceededError):
        asyncio.run(_astream(model, {"callbacks": [handler]}))
    assert calls.value == 0


def test_real_models_report_their_output_cap_at_start(clock: Any) -> None:
    """Pinned: ChatAnthropic always sends max_tokens (ls_max_tokens); ChatOpenAI sends none
    unless set, so the handler's default_max_output_tokens applies."""
    seen: list[int] = []
    budget = Budget(BudgetScope(name="t", max_tokens_per_session=10**9), clock=clock)
    original = budget.reserve

    def spy(*args: Any, **kw: Any) -> Any:
        seen.append(kw["max_output_tokens"])
        return original(*args, **kw)

    budget.reserve = spy  # type: ignore[method-assign]
    handler = BudgetCallbackHandler(budget, default_max_output_tokens=777)
    for make in (real_openai, real_anthropic):
        make(CallCounter()).invoke("hello", config={"callbacks": [handler]})
    default_cap = langchain_anthropic.ChatAnthropic(
        model="claude-3-5-sonnet-20241022", api_key="x"
    ).max_tokens
    assert seen == [777, default_cap]
