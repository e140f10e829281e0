"""Reading LlamaIndex LLM event payloads: model, token estimates and reported usage.

Pure functions over the dicts and response objects that ``llama_index.core`` passes to
callback handlers, so the handler itself stays a thin bridge to the budget core. Every
reader tolerates missing or oddly typed fields: a payload it cannot read yields None and the
caller falls back to an estimate.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from llama_index.core.base.llms.types import ChatResponse, CompletionResponse

from agent_budget import TokenCounter, Usage, count_messages, usage_from_mapping

__all__ = [
    "MAX_OUTPUT_KWARGS",
    "estimate_input_tokens",
    "max_output_tokens",
    "model_from_serialized",
    "response_model",
    "response_text",
    "usage_from_response",
]

# Per-call kwargs that cap a reply, in the spellings providers use.
MAX_OUTPUT_KWARGS = ("max_tokens", "max_completion_tokens", "max_output_tokens", "max_new_tokens")
# Names an LLM reports when it does not know its model.
_NO_MODEL = ("", "unknown", "none")


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _positive_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def model_from_serialized(serialized: Any) -> str | None:
    """The model name in ``EventPayload.SERIALIZED``, or None.

    Reads ``llm.to_payload()`` (``model_name``; 0.14.23+) and the older ``llm.to_dict()``
    (``model``, or ``model_name`` on some integrations). LlamaIndex reports ``"unknown"``
    when an LLM does not say; that counts as no name.
    """
    if not isinstance(serialized, Mapping):
        return None
    for key in ("model_name", "model", "model_id", "deployment_name"):
        value = serialized.get(key)
        if isinstance(value, str) and value.strip().lower() not in _NO_MODEL:
            return value
    return None


def max_output_tokens(additional_kwargs: Any, serialized: Any) -> int | None:
    """The call's output cap: a per-call kwarg, else the LLM's configured limit, else None.

    ``to_payload()`` gives ``num_output`` (-1 when unset); ``to_dict()`` gives ``max_tokens``.
    """
    if isinstance(additional_kwargs, Mapping):
        for key in MAX_OUTPUT_KWARGS:
            found = _positive_int(additional_kwargs.get(key))
            if found is not None:
                return found
    if isinstance(serialized, Mapping):
        for key in ("num_output", *MAX_OUTPUT_KWARGS):
            found = _positive_int(serialized.get(key))
            if found is not None:
                return found
    return None


def _message_pairs(messages: Any) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for message in messages or ():
        role = _get(message, "role")
        role_text = str(getattr(role, "value", role) or "")
        content = _get(message, "content")
        pairs.append((role_text, content if isinstance(content, str) else ""))
    return pairs


def estimate_input_tokens(
    prompt: Any, messages: Any, additional_kwargs: Any, counter: TokenCounter
) -> int:
    """Tokens the request will send: the prompt or messages, plus any tool definitions."""
    if messages is not None:
        pairs = _message_pairs(messages)
    else:
        pairs = [("user", prompt if isinstance(prompt, str) else str(prompt or ""))]
    total = count_messages(pairs, counter)
    tools = additional_kwargs.get("tools") if isinstance(additional_kwargs, Mapping) else None
    if tools:
        total += counter.count_text(json.dumps(tools, default=str))
    return total


def usage_from_response(response: Any) -> Usage | None:
    """Usage a CompletionResponse or ChatResponse reports, or None.

    Looks, in order, at ``raw`` (its ``usage``, dict or object: OpenAI, Anthropic;
    ``usage_metadata``: Gemini; or its own counts: Bedrock InvokeModel), the counts in
    ``response.additional_kwargs`` (what llama-index-llms-openai copies there) and
    ``message.additional_kwargs["usage"]`` (llama-index-llms-anthropic streams).
    """
    if response is None:
        return None
    raw = getattr(response, "raw", None)
    if raw is not None:
        # The whole raw response: its usage (or usage_metadata, or a Bedrock InvokeModel
        # body's own counts) and the service tier it reports beside them.
        found = usage_from_mapping(raw)
        if found is not None:
            return found
    extra = getattr(response, "additional_kwargs", None)
    if extra and isinstance(extra, Mapping):
        found = usage_from_mapping(extra) or usage_from_mapping(extra.get("usage"))
        if found is not None:
            return found
    if isinstance(response, ChatResponse):
        extra = response.message.additional_kwargs
        if extra and isinstance(extra, Mapping):
            return usage_from_mapping(extra.get("usage"))
    return None


def response_model(response: Any) -> str | None:
    """The model that answered, when the raw response names one (``raw["model"]``)."""
    raw = getattr(response, "raw", None)
    value = _get(raw, "model") if raw is not None else None
    if isinstance(value, str) and value.strip().lower() not in _NO_MODEL:
        return value
    return None


def response_text(response: Any) -> str:
    """The text of a response (streams carry the text so far in their last chunk)."""
    if isinstance(response, CompletionResponse):
        return response.text or ""
    if isinstance(response, ChatResponse):
        content = response.message.content
        return content if isinstance(content, str) else ""
    return ""
