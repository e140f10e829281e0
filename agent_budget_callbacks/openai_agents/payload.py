"""Reading what the OpenAI Agents SDK hands hooks and models: usage, text, caps, prompts.

Pure functions over ``ModelResponse``, the SDK's ``Usage``, Responses API stream events,
``ModelSettings``, input items and the run context object, kept apart from the hooks and
the wrapping model so each rule is small and tested on its own. Nothing here touches a
budget.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from agents import ModelResponse, ModelSettings

from agent_budget import HeuristicCounter, TokenCounter, Usage, count_messages

__all__ = [
    "StreamEvent",
    "input_tokens",
    "max_output_tokens",
    "model_name",
    "read_event",
    "response_text",
    "response_usage",
    "service_tier",
    "usage_of",
]

log = logging.getLogger("agent_budget.openai_agents")

# Stream events that carry produced text (or tool-call arguments, billed as output).
_TEXT_EVENTS = frozenset(
    (
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_text.delta",
        "response.reasoning_summary_text.delta",
        "response.custom_tool_call_input.delta",
    )
)
# Events whose ``response`` says the provider finished (``response.completed``), or stopped
# answering with what it had billed (``incomplete``; ``failed`` raises in the run loop).
_END_EVENTS = frozenset(("response.completed", "response.incomplete", "response.failed"))


def _count(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return 0


def usage_of(usage: object) -> Usage | None:
    """A :class:`Usage` from the SDK's ``Usage`` or the API's ``ResponseUsage`` (the same
    fields: ``input_tokens`` including ``input_tokens_details.cached_tokens`` and
    ``cache_write_tokens``, ``output_tokens`` including ``output_tokens_details.
    reasoning_tokens``); None when it reports no tokens, which is how the SDK says the
    provider reported no usage (a Chat Completions stream without ``include_usage``)."""
    if usage is None:
        return None
    inp = _count(getattr(usage, "input_tokens", 0))
    out = _count(getattr(usage, "output_tokens", 0))
    if not inp and not out:
        return None
    details = getattr(usage, "input_tokens_details", None)
    cache_read = min(_count(getattr(details, "cached_tokens", 0)), inp)
    cache_write = min(_count(getattr(details, "cache_write_tokens", 0)), inp - cache_read)
    out_details = getattr(usage, "output_tokens_details", None)
    reasoning = min(_count(getattr(out_details, "reasoning_tokens", 0)), out)
    return Usage(inp, out, cache_read, cache_write, reasoning)


def response_usage(response: ModelResponse) -> Usage | None:
    """The usage of one model call as the SDK reports it in ``ModelResponse.usage``."""
    return usage_of(getattr(response, "usage", None))


def _content_text(content: object) -> str:
    """The text of message content: a str, or a list of parts (dicts or SDK objects) with
    ``text`` (or ``refusal``); images and files count nothing."""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        return "".join(_content_text(part) for part in content)
    text = _get(content, "text") or _get(content, "refusal")
    return text if isinstance(text, str) else ""


def _get(obj: object, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _item_text(item: object) -> str:
    """The text of one input or output item: message content, a tool call's name and
    arguments, a tool's output, a reasoning summary; other items as their JSON."""
    kind = _get(item, "type")
    if kind in ("function_call", "custom_tool_call"):
        return f"{_get(item, 'name') or ''}{_get(item, 'arguments') or _get(item, 'input') or ''}"
    if kind in ("function_call_output", "custom_tool_call_output"):
        output = _get(item, "output")
        return output if isinstance(output, str) else _content_text(output)
    if kind == "reasoning":
        return _content_text(_get(item, "summary")) + _content_text(_get(item, "content"))
    content = _get(item, "content")
    if content is not None:
        return _content_text(content)
    try:
        if isinstance(item, Mapping):
            return json.dumps(item, default=str, separators=(",", ":"))
        dump = getattr(item, "model_dump_json", None)
        return str(dump()) if callable(dump) else ""
    except Exception:
        return ""


def response_text(response: ModelResponse) -> str:
    """What a model call produced: its messages' text and its tool calls."""
    return "".join(_item_text(item) for item in getattr(response, "output", None) or ())


def _tool_text(tool: object) -> str:
    """The schema a tool or handoff sends with every request, as JSON text."""
    schema = getattr(tool, "params_json_schema", None) or getattr(tool, "input_json_schema", None)
    name = getattr(tool, "name", None) or getattr(tool, "tool_name", None) or ""
    description = (
        getattr(tool, "description", None) or getattr(tool, "tool_description", None) or ""
    )
    try:
        return json.dumps([name, description, schema], default=str, separators=(",", ":"))
    except Exception:
        return f"{name}{description}"


def input_tokens(
    instructions: str | None,
    items: str | Sequence[object],
    counter: TokenCounter,
    tools: Sequence[object] = (),
) -> int:
    """Estimated prompt tokens of one model call: the system instructions, every input
    item's text, and the tool (and handoff) schemas sent with it."""
    try:
        pairs: list[tuple[str, str]] = []
        if instructions:
            pairs.append(("system", instructions))
        if isinstance(items, str):
            pairs.append(("user", items))
        else:
            for item in items:
                role = _get(item, "role")
                pairs.append((role if isinstance(role, str) else "tool", _item_text(item)))
        if tools:
            pairs.append(("tools", "".join(_tool_text(t) for t in tools)))
        return count_messages(pairs, counter)
    except Exception:
        log.warning("could not count a model call's input; using a rough estimate", exc_info=True)
        return HeuristicCounter().count_text(repr(items))


def max_output_tokens(settings: ModelSettings | None) -> int | None:
    """The output cap a call's settings ask for (``max_tokens``); None when unset."""
    cap = getattr(settings, "max_tokens", None)
    return cap if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0 else None


def service_tier(settings: ModelSettings | None) -> str | None:
    """The service tier a call asks for: ``service_tier`` in the settings' ``extra_args``
    (the SDK sends those to the API as they are); None when unset."""
    extra = getattr(settings, "extra_args", None)
    tier = extra.get("service_tier") if isinstance(extra, Mapping) else None
    return tier if isinstance(tier, str) and tier.strip() else None


def model_name(model: object) -> str | None:
    """The model name of an agent's or run's ``model``: the string itself, or the ``model``
    attribute SDK models (Responses, Chat Completions, LiteLLM) keep; None when unknown."""
    if isinstance(model, str):
        return model.strip() or None
    name = getattr(model, "model", None)
    return name if isinstance(name, str) and name.strip() else None


class StreamEvent(NamedTuple):
    """What one Responses API stream event tells a budget: ``text`` produced (None when the
    event carries none), the ``usage`` and answering ``model`` of a final event, and whether
    the provider is ``done`` answering."""

    text: str | None
    usage: Usage | None
    model: str | None
    done: bool


_NOTHING = StreamEvent(None, None, None, False)


def read_event(event: object) -> StreamEvent:
    """Read one stream event (see :class:`StreamEvent`)."""
    kind = getattr(event, "type", None)
    if kind in _TEXT_EVENTS:
        delta = getattr(event, "delta", None)
        return StreamEvent(delta if isinstance(delta, str) else None, None, None, False)
    if kind in _END_EVENTS:
        response = getattr(event, "response", None)
        model = getattr(response, "model", None)
        return StreamEvent(
            None,
            usage_of(getattr(response, "usage", None)),
            model if isinstance(model, str) and model else None,
            True,
        )
    return _NOTHING
