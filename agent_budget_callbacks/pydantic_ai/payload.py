"""Reading what pydantic-ai hands a model: messages, settings, responses, streams.

Pure functions over ``ModelMessage`` lists, ``ModelRequestParameters``, ``ModelSettings``,
``ModelResponse`` / ``RequestUsage`` and ``StreamedResponse``, kept apart from the
capability so each rule is small and tested on its own. Nothing here touches a budget.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models import ModelRequestParameters, StreamedResponse

from agent_budget import HeuristicCounter, TokenCounter, Usage, count_messages

__all__ = [
    "StreamOutcome",
    "input_tokens",
    "max_output_tokens",
    "response_text",
    "response_usage",
    "service_tier",
    "stream_outcome",
    "usage_of",
]

log = logging.getLogger("agent_budget.pydantic_ai")

# Part kinds a request sends as (role, text) messages, and the role each one counts as.
_ROLES = {
    "system-prompt": "system",
    "user-prompt": "user",
    "tool-return": "tool",
    "builtin-tool-return": "tool",
    "retry-prompt": "user",
    "retry-feedback": "user",
    "instruction-delta": "system",
}


def _count(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return 0


def usage_of(usage: object) -> Usage | None:
    """A :class:`Usage` from pydantic-ai's ``RequestUsage`` (``input_tokens`` including
    ``cache_read_tokens`` and ``cache_write_tokens``, ``output_tokens`` including
    ``output_reasoning_tokens``, the same convention as ours); None when the response
    reported none (no tokens, or ``unmeasured_requests``)."""
    if usage is None or _count(getattr(usage, "unmeasured_requests", 0)):
        return None
    inp = _count(getattr(usage, "input_tokens", 0))
    out = _count(getattr(usage, "output_tokens", 0))
    if not inp and not out:
        return None
    cache_read = min(_count(getattr(usage, "cache_read_tokens", 0)), inp)
    cache_write = min(_count(getattr(usage, "cache_write_tokens", 0)), inp - cache_read)
    reasoning = min(_count(getattr(usage, "output_reasoning_tokens", 0)), out)
    return Usage(inp, out, cache_read, cache_write, reasoning)


def response_usage(response: ModelResponse) -> Usage | None:
    """The usage one model response reports."""
    return usage_of(getattr(response, "usage", None))


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        return "".join(_content_text(c) for c in content)
    if content is None:
        return ""
    try:
        return json.dumps(content, default=str, separators=(",", ":"))
    except Exception:
        return ""


def _part_text(part: object) -> str:
    """The text one message part sends or produced: its content, or a tool call's name and
    arguments; files, images and bookkeeping parts count nothing."""
    kind = getattr(part, "part_kind", None)
    if kind in ("tool-call", "builtin-tool-call"):
        args = getattr(part, "args_as_json_str", None)
        return f"{getattr(part, 'tool_name', '')}{args() if callable(args) else ''}"
    if kind in ("text", "thinking") or kind in _ROLES:
        return _content_text(getattr(part, "content", None))
    return ""


def response_text(response: ModelResponse) -> str:
    """What a response produced: its text, thinking and tool calls."""
    return "".join(_part_text(p) for p in getattr(response, "parts", None) or ())


def _tools_text(params: ModelRequestParameters) -> str:
    tools = [*params.function_tools, *params.output_tools]
    if not tools:
        return ""
    schemas = [(t.name, t.description, t.parameters_json_schema) for t in tools]
    return json.dumps(schemas, default=str, separators=(",", ":"))


def input_tokens(
    messages: Sequence[ModelMessage], params: ModelRequestParameters, counter: TokenCounter
) -> int:
    """Estimated prompt tokens of one model request: the instructions, every message part
    (prompts, tool returns, earlier responses and their tool calls) and the tool schemas."""
    try:
        pairs: list[tuple[str, str]] = []
        for part in params.instruction_parts or ():
            pairs.append(("system", str(getattr(part, "content", ""))))
        for message in messages:
            for part in getattr(message, "parts", ()):
                kind = getattr(part, "part_kind", None)
                role = _ROLES.get(kind, "assistant") if isinstance(kind, str) else "assistant"
                text = _part_text(part)
                if text:
                    pairs.append((role, text))
        tools = _tools_text(params)
        if tools:
            pairs.append(("tools", tools))
        return count_messages(pairs, counter)
    except Exception:
        log.warning(
            "could not count a model request's input; using a rough estimate", exc_info=True
        )
        return HeuristicCounter().count_text(repr(messages))


def max_output_tokens(*settings: Mapping[str, Any] | None) -> int | None:
    """The output cap the request's settings ask for (``max_tokens``; the first of
    ``settings`` that sets one); None when none does."""
    for layer in settings:
        cap = (layer or {}).get("max_tokens")
        if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0:
            return cap
    return None


# Per-provider service tier settings, which win over the unified ``service_tier``.
_TIER_KEYS = (
    "openai_service_tier",
    "anthropic_service_tier",
    "bedrock_service_tier",
    "google_cloud_service_tier",
    "service_tier",
)


def service_tier(*settings: Mapping[str, Any] | None) -> str | None:
    """The service tier the request's settings ask for (a provider's own setting, else the
    unified ``service_tier``; Bedrock's ``{"type": ...}`` form read too); None when unset."""
    for key in _TIER_KEYS:
        for layer in settings:
            value = (layer or {}).get(key)
            if isinstance(value, Mapping):
                value = value.get("type")
            if isinstance(value, str) and value.strip():
                return value
    return None


class StreamOutcome(NamedTuple):
    """Where a streamed response stands: the ``usage`` reported so far (None when none),
    the ``model`` that answered, the ``text`` produced so far, and whether the stream ran to
    its end (``complete``)."""

    usage: Usage | None
    model: str | None
    text: str
    complete: bool


def stream_outcome(stream: StreamedResponse) -> StreamOutcome:
    """Read a streamed response, finished or cut short (see :class:`StreamOutcome`)."""
    response = stream.get()
    model = response.model_name
    return StreamOutcome(
        response_usage(response),
        model if isinstance(model, str) and model else None,
        response_text(response),
        response.state == "complete",
    )
