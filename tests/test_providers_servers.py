"""The local provider servers, checked with the raw ``openai`` and ``anthropic`` SDKs: the
payloads parse into the SDKs' own types with the usage the ledger bills, streams carry usage
where the real APIs put it, and the billing rule for errors and cut-off streams holds."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import openai
import pytest

from agent_budget import Usage

from .provider_servers import (
    CUT_OFF_ERRORS,
    AnthropicServer,
    OpenAIServer,
    Reply,
    ToolCall,
    builtin_price_nanos,
)

pytestmark = pytest.mark.filterwarnings("ignore:The model '.*' is deprecated")

USAGE = Reply(input_tokens=50, output_tokens=20, cache_read_tokens=32, reasoning_tokens=6)
MESSAGES: list[dict[str, str]] = [{"role": "user", "content": "hi"}]


@pytest.fixture
def oai() -> Iterator[tuple[OpenAIServer, openai.OpenAI]]:
    with OpenAIServer(default=USAGE) as srv:
        yield srv, openai.OpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=1)


@pytest.fixture
def ant() -> Iterator[tuple[AnthropicServer, anthropic.Anthropic]]:
    with AnthropicServer(default=USAGE) as srv:
        yield srv, anthropic.Anthropic(base_url=srv.base_url, api_key="k", max_retries=1)


def test_openai_completion_carries_usage_details_and_a_snapshot(
    oai: tuple[OpenAIServer, openai.OpenAI],
) -> None:
    srv, client = oai
    done = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    assert done.model == "gpt-4o-2024-08-06"
    assert done.usage is not None
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (50, 20)
    assert done.usage.prompt_tokens_details is not None
    assert done.usage.prompt_tokens_details.cached_tokens == 32
    assert done.usage.completion_tokens_details is not None
    assert done.usage.completion_tokens_details.reasoning_tokens == 6
    [served] = srv.ledger
    assert served.usage == Usage(50, 20, 32, 0, 6)
    assert served.requested_model == "gpt-4o" and not served.stream


@pytest.mark.parametrize("include_usage", [True, False])
def test_openai_stream_sends_usage_only_when_asked(
    oai: tuple[OpenAIServer, openai.OpenAI], include_usage: bool
) -> None:
    srv, client = oai
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            **extra,  # type: ignore[arg-type]
        )
    )
    with_usage = [c for c in chunks if c.usage is not None]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == USAGE.text
    if include_usage:
        assert len(with_usage) == 1 and with_usage[0] is chunks[-1]
        assert chunks[-1].choices == []
        assert with_usage[0].usage is not None
        assert with_usage[0].usage.total_tokens == 70
    else:
        assert with_usage == []
    [served] = srv.ledger
    assert served.stream and served.include_usage is include_usage
    assert served.usage == USAGE.usage  # billed either way


def test_openai_streamed_tool_call_reassembles(oai: tuple[OpenAIServer, openai.OpenAI]) -> None:
    srv, client = oai
    srv.script(Reply(tool_calls=(ToolCall("add", {"a": 1, "b": 2}, "call_add"),)))
    args = ""
    names = []
    for chunk in client.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
    ):
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            assert call.function is not None
            names.append(call.function.name)
            args += call.function.arguments or ""
    assert names[0] == "add" and json.loads(args) == {"a": 1, "b": 2}
    assert srv.ledger[0].tool_calls == 1


def test_openai_errors_bill_nothing_and_the_sdk_retries(
    oai: tuple[OpenAIServer, openai.OpenAI],
) -> None:
    srv, client = oai
    srv.fail(500)
    done = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    assert done.usage is not None  # max_retries=1 absorbed the 500
    srv.fail(429, times=2)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    assert [s.status for s in srv.ledger] == [500, 200, 429, 429]
    assert srv.total() == USAGE.usage
    assert [s.billed for s in srv.ledger] == [False, True, False, False]


def test_openai_cut_off_stream_bills_what_was_sent(
    oai: tuple[OpenAIServer, openai.OpenAI],
) -> None:
    srv, client = oai
    # 8 words, 26 output tokens of which 10 reasoning: 16 visible over 8 pieces, 3 sent.
    srv.script(
        Reply(
            text="a b c d e f g h",
            input_tokens=40,
            output_tokens=26,
            reasoning_tokens=10,
            cut_after=3,
        )
    )
    received = []
    with pytest.raises(CUT_OFF_ERRORS):
        for chunk in client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        ):
            received.append(chunk.choices[0].delta.content if chunk.choices else None)
    assert "".join(r or "" for r in received) == "a b c"
    [served] = srv.ledger
    assert served.cut_off
    assert served.usage == Usage(40, 10 + 16 * 3 // 8, 0, 0, 10)


def test_anthropic_message_reports_uncached_input_and_cache_fields(
    ant: tuple[AnthropicServer, anthropic.Anthropic],
) -> None:
    srv, client = ant
    srv.script(
        Reply(
            input_tokens=100,
            output_tokens=9,
            cache_read_tokens=60,
            cache_write_tokens=30,
            reasoning_tokens=4,
        )
    )
    done = client.messages.create(
        model="claude-3-5-sonnet-latest", max_tokens=64, messages=MESSAGES
    )  # type: ignore[arg-type]
    assert done.model == "claude-3-5-sonnet-20241022"
    assert (done.usage.input_tokens, done.usage.output_tokens) == (10, 9)
    assert done.usage.cache_read_input_tokens == 60
    assert done.usage.cache_creation_input_tokens == 30
    [served] = srv.ledger
    assert served.usage == Usage(100, 9, 60, 30, 4)
    # Priced per kind: 10 x 3.00 + 60 x 0.30 + 30 x 3.75 + 9 x 15.00 per 1M tokens.
    assert builtin_price_nanos(served.model, served.usage) == 30_000 + 18_000 + 112_500 + 135_000


@pytest.mark.parametrize("cumulative", [True, False])
def test_anthropic_stream_events_and_usage(cumulative: bool) -> None:
    reply = Reply(input_tokens=100, output_tokens=9, cache_read_tokens=60)
    with AnthropicServer(default=reply, cumulative_delta_usage=cumulative) as srv:
        client = anthropic.Anthropic(base_url=srv.base_url, api_key="k", max_retries=0)
        events = list(
            client.messages.create(
                model="claude-sonnet-4-5",
                max_tokens=64,
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=True,
            )
        )
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert {"content_block_start", "content_block_delta", "content_block_stop"} <= set(kinds)
    start, delta = events[0], events[-2]
    assert start.type == "message_start" and delta.type == "message_delta"
    assert start.message.model == "claude-sonnet-4-5-20250929"
    assert (start.message.usage.input_tokens, start.message.usage.output_tokens) == (40, 1)
    assert start.message.usage.cache_read_input_tokens == 60
    assert delta.usage.output_tokens == 9
    assert delta.usage.input_tokens == (40 if cumulative else None)
    assert delta.usage.cache_read_input_tokens == (60 if cumulative else None)


def test_anthropic_streamed_tool_use_reassembles(
    ant: tuple[AnthropicServer, anthropic.Anthropic],
) -> None:
    srv, client = ant
    srv.script(Reply(tool_calls=(ToolCall("add", {"a": 1, "b": 2}, "toolu_add"),)))
    with client.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=64,
        messages=MESSAGES,  # type: ignore[arg-type]
    ) as stream:
        final = stream.get_final_message()
    [block] = final.content
    assert block.type == "tool_use" and block.input == {"a": 1, "b": 2}
    assert final.usage.output_tokens == Reply().output_tokens


def test_anthropic_errors_and_cut_off_stream(
    ant: tuple[AnthropicServer, anthropic.Anthropic],
) -> None:
    srv, client = ant
    srv.fail(529, times=2)
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.status_code == 529
    srv.script(Reply(text="a b c d", input_tokens=30, output_tokens=8, cut_after=0))
    with pytest.raises(CUT_OFF_ERRORS):
        list(
            client.messages.create(
                model="claude-sonnet-4-5", max_tokens=64, messages=MESSAGES, stream=True
            )
        )  # type: ignore[arg-type]
    statuses = [(s.status, s.cut_off) for s in srv.ledger]
    assert statuses == [(529, False), (529, False), (200, True)]
    # Nothing visible was sent, but message_start had announced 1 output token.
    assert srv.ledger[-1].usage == Usage(30, 1)
