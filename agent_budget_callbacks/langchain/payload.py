"""Reading LangChain callback payloads: model names, output caps, input size, usage, text.

Pure functions over what langchain-core hands a callback handler, kept apart from the
handler so each rule (where the model name lives, how a cache hit looks, which legacy run
carries a batch's usage) is small and tested on its own. Nothing here touches a budget.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, GenerationChunk, LLMResult

from agent_budget import (
    HeuristicCounter,
    TokenCounter,
    Usage,
    count_messages,
    usage_from_mapping,
    with_response_details,
)

__all__ = [
    "Outcome",
    "answered_model",
    "chat_input_tokens",
    "chat_model_request",
    "completions",
    "max_output_tokens",
    "message_outcome",
    "partial_text",
    "prompt_input_tokens",
    "read_outcome",
    "requested_model",
    "requested_service_tier",
    "response_text",
]

log = logging.getLogger("agent_budget.langchain")

# Where chat and LLM integrations put the model id in invocation params / constructor kwargs.
_MODEL_KEYS = ("model", "model_name", "model_id")
# Output caps by the names providers use (OpenAI, OpenAI reasoning, Gemini, Hugging Face).
_MAX_TOKEN_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens", "max_new_tokens")


def _name(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _positive_int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def requested_model(
    serialized: Mapping[str, Any] | None,
    metadata: Mapping[str, Any],
    invocation_params: Mapping[str, Any],
) -> str | None:
    """The model a call asks for: ``ls_model_name`` (it carries ``.bind(model=...)``
    overrides), then the invocation params, then the serialized constructor kwargs."""
    found = _name(metadata.get("ls_model_name"))
    if found:
        return found
    for key in _MODEL_KEYS:
        found = _name(invocation_params.get(key))
        if found:
            return found
    kwargs = (serialized or {}).get("kwargs")
    if isinstance(kwargs, Mapping):
        for key in _MODEL_KEYS:
            found = _name(kwargs.get(key))
            if found:
                return found
    return None


def requested_service_tier(invocation_params: Mapping[str, Any]) -> str | None:
    """The service tier a request asks for (ChatOpenAI's and ChatAnthropic's
    ``service_tier``: ``"flex"``, ``"priority"``, ``"auto"`` ...), or None."""
    return _name(invocation_params.get("service_tier"))


def max_output_tokens(
    metadata: Mapping[str, Any], invocation_params: Mapping[str, Any]
) -> int | None:
    """The most output the request allows: ``ls_max_tokens``, then the invocation params'
    cap under any of its usual names; None when the request sets no cap."""
    cap = _positive_int(metadata.get("ls_max_tokens"))
    if cap is None:
        for key in _MAX_TOKEN_KEYS:
            cap = _positive_int(invocation_params.get(key))
            if cap is not None:
                break
    return cap


def completions(invocation_params: Mapping[str, Any]) -> int:
    """How many completions one request asks for (``n``), at least 1."""
    return _positive_int(invocation_params.get("n")) or 1


def _message_text(message: BaseMessage) -> str:
    text = str(message.text)
    # Only AI messages carry tool calls; getattr on others goes through pydantic's slow miss.
    tool_calls = message.tool_calls if isinstance(message, AIMessage) else None
    if tool_calls:
        calls = [{"name": c.get("name"), "args": c.get("args")} for c in tool_calls]
        text += json.dumps(calls, default=str, separators=(",", ":"))
    return text


def chat_input_tokens(
    messages: Sequence[BaseMessage], invocation_params: Mapping[str, Any], counter: TokenCounter
) -> int:
    """Estimated prompt tokens of one chat request: its messages' text and tool calls plus
    the bound tool schemas, which are sent with every request. Images and other non-text
    blocks are not counted."""
    try:
        pairs = [(m.type, _message_text(m)) for m in messages]
        tools = invocation_params.get("tools") or invocation_params.get("functions")
        if tools:
            pairs.append(("tools", json.dumps(tools, default=str, separators=(",", ":"))))
        return count_messages(pairs, counter)
    except Exception:
        log.warning(
            "could not count the messages of a chat call; using a rough estimate", exc_info=True
        )
        return HeuristicCounter().count_text(repr(messages))


def prompt_input_tokens(prompt: str, counter: TokenCounter) -> int:
    """Estimated tokens of one completion-model prompt."""
    try:
        return counter.count_text(prompt)
    except Exception:
        log.warning("could not count a prompt; using a rough estimate", exc_info=True)
        return HeuristicCounter().count_text(str(prompt))


def answered_model(response: LLMResult) -> str | None:
    """The model that actually answered, as the provider reported it (often a dated
    snapshot such as ``gpt-4o-2024-08-06``)."""
    for gen_list in response.generations:
        for gen in gen_list:
            message = getattr(gen, "message", None)
            meta = getattr(message, "response_metadata", None)
            if isinstance(meta, Mapping):
                found = _name(meta.get("model_name")) or _name(meta.get("model"))
                if found:
                    return found
    llm_output = response.llm_output
    if isinstance(llm_output, Mapping):
        return _name(llm_output.get("model_name")) or _name(llm_output.get("model"))
    return None


class Outcome(NamedTuple):
    """What an ended (or failed) run reports.

    ``usage`` is None when the provider reported none; ``cache_hit`` is True when LangChain
    served the answer from its cache (no provider call); ``sibling`` is True for the 2nd..nth
    run of a legacy multi-prompt ``generate()``, whose usage LangChain reports on the first.
    """

    usage: Usage | None
    model: str | None
    cache_hit: bool = False
    sibling: bool = False


def _real_usage(mapping: object) -> Usage | None:
    usage = usage_from_mapping(mapping)
    # Zero tokens means "not reported" (no real call has an empty prompt).
    return usage if usage is not None and usage.total_tokens > 0 else None


def message_outcome(message: BaseMessage) -> Outcome:
    """Usage and answering model of one AI message (e.g. an agent model node's reply)."""
    meta = getattr(message, "response_metadata", None)
    model = None
    if isinstance(meta, Mapping):
        model = _name(meta.get("model_name")) or _name(meta.get("model"))
    usage_meta = getattr(message, "usage_metadata", None)
    return Outcome(_real_usage(usage_meta) if usage_meta else None, model)


def chat_model_request(
    model: object, settings: Mapping[str, Any]
) -> tuple[str | None, int | None, str]:
    """The model name a chat model will call, its output cap (``settings`` first, then the
    model's own), and the settings key that sets that cap for this model."""
    params: Mapping[str, Any] = {}
    get_params = getattr(model, "_get_ls_params", None)
    if callable(get_params):
        try:
            found = get_params(**settings)
            params = found if isinstance(found, Mapping) else {}
        except Exception:
            params = {}
    name = _name(params.get("ls_model_name"))
    for attr in _MODEL_KEYS:
        name = name or _name(getattr(model, attr, None))
    key = next((k for k in _MAX_TOKEN_KEYS if k in settings), None)
    if key is None:
        key = next((k for k in _MAX_TOKEN_KEYS if getattr(model, k, None) is not None), None)
    cap = _positive_int(settings.get(key)) if key is not None else None
    if cap is None:
        cap = _positive_int(params.get("ls_max_tokens"))
    if cap is None and key is not None:
        cap = _positive_int(getattr(model, key, None))
    return name, cap, key or "max_tokens"


def read_outcome(response: LLMResult) -> Outcome:
    """Usage and answering model of one run's result.

    The first message carrying ``usage_metadata`` wins: ChatOpenAI copies the call's whole
    usage onto every generation when ``n > 1``, so summing would over-count. LangChain marks
    a chat-model cache hit by adding ``total_cost: 0`` to the cached message's usage, which
    still holds the original call's tokens. ``llm_output["token_usage"]`` (or ``["usage"]``)
    is the fallback; LLMResult.flatten() empties ``token_usage`` on every run but the first.
    """
    model = answered_model(response)
    for gen_list in response.generations:
        for gen in gen_list:
            message = getattr(gen, "message", None)
            meta = getattr(message, "usage_metadata", None)
            if not meta:
                continue
            if meta.get("total_cost", None) == 0:
                return Outcome(None, model, cache_hit=True)
            usage = _real_usage(meta)
            if usage is not None:
                # Web searches and the service tier come beside usage_metadata.
                extra = with_response_details(
                    usage, getattr(message, "response_metadata", None), response.llm_output
                )
                return Outcome(extra, model)
    llm_output = response.llm_output
    if isinstance(llm_output, Mapping):
        token_usage = llm_output.get("token_usage")
        if isinstance(token_usage, Mapping) and not token_usage:
            return Outcome(None, model, sibling=True)
        for key in ("token_usage", "usage"):
            usage = _real_usage(llm_output.get(key))
            if usage is not None:
                return Outcome(with_response_details(usage, llm_output), model)
    return Outcome(None, model)


def partial_text(response: LLMResult | None) -> str | None:
    """Text a failed or abandoned stream had produced, or None when no chunk arrived.

    LangChain puts the merged chunks first in the error response; generations built from
    the error itself (HTTP body and headers) are plain ``ChatGeneration`` objects, not
    chunks, so they do not count as output.
    """
    if response is None or not response.generations or not response.generations[0]:
        return None
    gen = response.generations[0][0]
    if isinstance(gen, ChatGenerationChunk):
        return _message_text(gen.message)
    if isinstance(gen, GenerationChunk):
        return gen.text
    return None


def response_text(response: LLMResult) -> str:
    """The text (and tool calls) of every generation of an ended run."""
    parts: list[str] = []
    for gen_list in response.generations:
        for gen in gen_list:
            message = getattr(gen, "message", None)
            parts.append(_message_text(message) if isinstance(message, BaseMessage) else gen.text)
    return "".join(parts)
