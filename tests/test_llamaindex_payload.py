"""Reading LlamaIndex payloads: both SERIALIZED shapes as real integrations produce them,
and usage as the real OpenAI and Anthropic SDK objects carry it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from llama_index.core.llms import ChatMessage, ChatResponse, CompletionResponse, ImageBlock

from agent_budget import HeuristicCounter, Usage, count_messages
from agent_budget_callbacks.llamaindex.payload import (
    estimate_input_tokens,
    max_output_tokens,
    model_from_serialized,
    response_model,
    response_text,
    usage_from_response,
)


def _openai() -> Any:
    module = pytest.importorskip("llama_index.llms.openai")  # agent-budget[providers]
    return module.OpenAI(model="gpt-4o", api_key="sk-test", max_tokens=256)


def _anthropic() -> Any:
    module = pytest.importorskip("llama_index.llms.anthropic")
    return module.Anthropic(model="claude-sonnet-4-5", api_key="test", max_tokens=300)


@pytest.mark.parametrize(
    ("make", "model", "cap"), [(_openai, "gpt-4o", 256), (_anthropic, "claude-sonnet-4-5", 300)]
)
def test_both_serialized_shapes_of_real_integrations(make: Any, model: str, cap: int) -> None:
    llm = make()
    payload, legacy = llm.to_payload(), llm.to_dict()
    assert (payload["model_name"], payload["num_output"]) == (model, cap)  # 0.14.23+
    assert (legacy["model"], legacy["max_tokens"]) == (model, cap)  # up to 0.14.22
    assert "api_key" not in payload  # why LlamaIndex moved to to_payload()
    for serialized in (payload, legacy):
        assert model_from_serialized(serialized) == model
        assert max_output_tokens({}, serialized) == cap
        assert max_output_tokens({"max_tokens": 17}, serialized) == 17


def test_unknown_names_and_unset_caps_are_none() -> None:
    assert model_from_serialized({"model_name": "unknown", "class_name": "MockLLM"}) is None
    assert model_from_serialized(None) is None
    assert model_from_serialized({"model": ""}) is None
    assert max_output_tokens(None, {"num_output": -1}) is None
    assert max_output_tokens({"max_tokens": True}, {}) is None
    assert max_output_tokens({"max_completion_tokens": 9}, {"num_output": 5}) == 9
    assert max_output_tokens({"max_output_tokens": 8}, None) == 8


def test_real_openai_chat_completion_object() -> None:
    ChatCompletion = pytest.importorskip("openai.types.chat").ChatCompletion

    completion = ChatCompletion.model_validate(
        {
            "id": "c1",
            "object": "chat.completion",
            "created": 0,
            "model": "gpt-4o-2024-08-06",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "hi"},
                }
            ],
            "usage": {
                "prompt_tokens": 900,
                "completion_tokens": 120,
                "total_tokens": 1020,
                "prompt_tokens_details": {"cached_tokens": 512},
                "completion_tokens_details": {"reasoning_tokens": 64},
            },
        }
    )
    # llama-index-llms-openai: raw is the SDK object, counts copied to additional_kwargs.
    response = ChatResponse(
        message=ChatMessage(role="assistant", content="hi"),
        raw=completion,
        additional_kwargs={"prompt_tokens": 900, "completion_tokens": 120, "total_tokens": 1020},
    )
    assert usage_from_response(response) == Usage(900, 120, 512, 0, 64)
    assert response_model(response) == "gpt-4o-2024-08-06"


def test_real_anthropic_message_as_dict() -> None:
    Message = pytest.importorskip("anthropic.types").Message

    message = Message.model_validate(
        {
            "id": "m1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "hi"}],
            "stop_reason": "end_turn",
            "usage": {
                "input_tokens": 100,
                "output_tokens": 50,
                "cache_read_input_tokens": 700,
                "cache_creation_input_tokens": 200,
            },
        }
    )
    # llama-index-llms-anthropic: raw=dict(response), so raw["usage"] is the SDK object.
    response = ChatResponse(message=ChatMessage(role="assistant", content="hi"), raw=dict(message))
    assert usage_from_response(response) == Usage(1000, 50, 700, 200, 0)
    assert response_model(response) == "claude-sonnet-4-5"


def test_gemini_usage_metadata_and_counts_in_additional_kwargs() -> None:
    gemini = CompletionResponse(
        text="x",
        raw={
            "usage_metadata": {
                "prompt_token_count": 300,
                "candidates_token_count": 40,
                "cached_content_token_count": 100,
                "thoughts_token_count": 25,
            }
        },
    )
    assert usage_from_response(gemini) == Usage(300, 65, 100, 0, 25)
    counts = CompletionResponse(
        text="x", additional_kwargs={"prompt_tokens": 7, "completion_tokens": 3}
    )
    assert usage_from_response(counts) == Usage(7, 3)
    nested = CompletionResponse(
        text="x", additional_kwargs={"usage": {"input_tokens": 5, "output_tokens": 2}}
    )
    assert usage_from_response(nested) == Usage(5, 2)
    obj = CompletionResponse(
        text="x", raw=SimpleNamespace(usage=SimpleNamespace(input_tokens=11, output_tokens=4))
    )
    assert usage_from_response(obj) == Usage(11, 4)


def test_responses_without_usage() -> None:
    assert usage_from_response(None) is None
    assert usage_from_response(CompletionResponse(text="x")) is None
    assert usage_from_response(CompletionResponse(text="x", raw={"usage": None})) is None
    assert (
        usage_from_response(
            CompletionResponse(text="x", raw={"id": 1}, additional_kwargs={"tool_calls": []})
        )
        is None
    )
    assert response_model(CompletionResponse(text="x", raw={"model": "unknown"})) is None


def test_response_text_of_both_kinds() -> None:
    assert response_text(CompletionResponse(text="abc")) == "abc"
    assert response_text(ChatResponse(message=ChatMessage(role="assistant", content="de"))) == "de"
    assert response_text(ChatResponse(message=ChatMessage(role="assistant", blocks=[]))) == ""
    assert response_text(None) == ""


def test_input_estimates() -> None:
    counter = HeuristicCounter()
    assert estimate_input_tokens("hello world", None, None, counter) == count_messages(
        [("user", "hello world")], counter
    )
    messages = [
        ChatMessage(role="system", content="be brief"),
        ChatMessage(role="user", blocks=[ImageBlock(url="http://x/y.png")]),
    ]
    assert estimate_input_tokens(None, messages, {}, counter) == count_messages(
        [("system", "be brief"), ("user", "")], counter
    )
    with_tools = estimate_input_tokens("hi", None, {"tools": [{"name": "add"}]}, counter)
    assert with_tools > estimate_input_tokens("hi", None, {}, counter)
