"""What one call consumed, and parsing of the usage shapes providers report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .validate import MAX_TOKENS, check_tokens

__all__ = ["Usage", "usage_from_mapping"]


@dataclass(frozen=True)
class Usage:
    """Token usage of one call.

    ``input_tokens`` is the whole prompt, *including* ``cache_read_tokens`` and
    ``cache_write_tokens`` (LangChain's ``usage_metadata`` convention); ``output_tokens``
    includes ``reasoning_tokens``, which are billed as output.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    def __post_init__(self) -> None:
        for name, value in (
            ("input_tokens", self.input_tokens),
            ("output_tokens", self.output_tokens),
            ("cache_read_tokens", self.cache_read_tokens),
            ("cache_write_tokens", self.cache_write_tokens),
            ("reasoning_tokens", self.reasoning_tokens),
        ):
            if value.__class__ is not int or not 0 <= value <= MAX_TOKENS:
                check_tokens(name, value)  # the full check, which names the field
        if self.cache_read_tokens + self.cache_write_tokens > self.input_tokens:
            raise ValueError(
                "cache_read_tokens + cache_write_tokens must not exceed input_tokens "
                f"({self.cache_read_tokens} + {self.cache_write_tokens} > {self.input_tokens})"
            )
        if self.reasoning_tokens > self.output_tokens:
            raise ValueError(
                f"reasoning_tokens must not exceed output_tokens "
                f"({self.reasoning_tokens} > {self.output_tokens})"
            )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def uncached_input_tokens(self) -> int:
        return self.input_tokens - self.cache_read_tokens - self.cache_write_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )


_INPUT_KEYS = (
    "input_tokens",
    "prompt_tokens",
    "prompt_token_count",
    "input_token_count",
    "promptTokenCount",  # Gemini REST
    "inputTokens",  # Bedrock Converse
    "prompt_eval_count",  # Ollama
)
_OUTPUT_KEYS = (
    "output_tokens",
    "completion_tokens",
    "candidates_token_count",
    "output_token_count",
    "candidatesTokenCount",
    "outputTokens",
    "eval_count",
)


_CACHE_READ_KEYS = ("cache_read", "priority_cache_read", "flex_cache_read")
# Every top-level key of LangChain's usage_metadata; a dict with no others takes a fast path.
_LANGCHAIN_KEYS = frozenset(
    ("input_tokens", "output_tokens", "total_tokens", "input_token_details", "output_token_details")
)
_CACHE_WRITE_TTL_KEYS = ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, dict):  # the common case, without the slower ABC check
        return obj.get(key)
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _count(value: object) -> int | None:
    """``value`` if it is a token count (a non-negative int, not a bool), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _pos(value: object) -> int:
    """``value`` if it is a positive int (not a bool), else 0."""
    if isinstance(value, int) and value > 0 and value.__class__ is not bool:
        return value
    return 0


def _first_int(obj: Any, keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = _count(_get(obj, key))
        if value is not None:
            return value
    return None


def _nested_int(obj: Any, outer: str, inner: str) -> int:
    value = _get(obj, outer)
    return 0 if value is None else _pos(_get(value, inner))


def _sum_of(details: Any, keys: tuple[str, ...]) -> int:
    total = 0
    for key in keys:
        value = _get(details, key)
        if value:  # None and 0, the usual values, skip the type check
            total += _pos(value)
    return total


def _langchain_details(details: Any, out_details: Any) -> tuple[int, int, int]:
    """Cache reads, cache writes and reasoning from LangChain's ``input_token_details`` and
    ``output_token_details`` (its input figure already includes both caches)."""
    cache_read = cache_write = reasoning = 0
    if details is not None:
        cache_read = _sum_of(details, _CACHE_READ_KEYS)
        # ChatAnthropic reports the TTL breakdown instead when the API sends one.
        cache_write = _pos(_get(details, "cache_creation")) or _sum_of(
            details, _CACHE_WRITE_TTL_KEYS
        )
    if out_details is not None:
        reasoning = _pos(_get(out_details, "reasoning"))
    return cache_read, cache_write, reasoning


def _clamped(inp: int, out: int, cache_read: int, cache_write: int, reasoning: int) -> Usage:
    """A Usage whose details never exceed the totals they are part of."""
    cache_read = min(cache_read, inp)
    cache_write = min(cache_write, inp - cache_read)
    return Usage(inp, out, cache_read, cache_write, min(reasoning, out))


def usage_from_mapping(obj: Any) -> Usage | None:
    """Read a provider usage payload (dict or object) into a :class:`Usage`, or None.

    Understands the OpenAI shapes (Chat Completions ``prompt_tokens``,
    ``prompt_tokens_details.cached_tokens``, ``completion_tokens_details.reasoning_tokens``,
    and the Responses API ``input_tokens_details`` / ``output_tokens_details``), Anthropic's
    (``input_tokens`` excluding ``cache_read_input_tokens`` and
    ``cache_creation_input_tokens``; ``output_tokens_details.thinking_tokens``), Gemini's SDK
    and REST spellings (``prompt_token_count`` / ``promptTokenCount``, candidates, cached
    content, thoughts), Bedrock Converse (``inputTokens``, ``cacheReadInputTokens``,
    ``cacheWriteInputTokens``), Ollama (``prompt_eval_count``,
    ``eval_count``) and LangChain's ``usage_metadata``.
    """
    if obj is None:
        return None
    if obj.__class__ is dict and obj.keys() <= _LANGCHAIN_KEYS:
        return _from_usage_metadata(obj)
    inp = _first_int(obj, _INPUT_KEYS)
    out = _first_int(obj, _OUTPUT_KEYS)
    if inp is None and out is None:
        return None
    inp = inp or 0
    out = out or 0
    cache_read = 0
    cache_write = 0
    reasoning = 0
    # LangChain usage_metadata: input_token_details / output_token_details.
    details = _get(obj, "input_token_details")
    out_details = _get(obj, "output_token_details")
    if details is not None or out_details:
        cache_read, cache_write, reasoning = _langchain_details(details, out_details)
    # Anthropic: input_tokens excludes cached tokens, which come separately.
    # Anthropic (and Bedrock Converse, camelCase) report cached input apart from input.
    anth_read = _first_int(obj, ("cache_read_input_tokens", "cacheReadInputTokens"))
    anth_write = _first_int(obj, ("cache_creation_input_tokens", "cacheWriteInputTokens"))
    if anth_read is not None or anth_write is not None:
        cache_read = anth_read or 0
        cache_write = anth_write or 0
        inp += cache_read + cache_write
    # OpenAI details: Chat Completions, then the Responses API spelling.
    cache_read = cache_read or _nested_int(obj, "prompt_tokens_details", "cached_tokens")
    cache_read = cache_read or _nested_int(obj, "input_tokens_details", "cached_tokens")
    reasoning = reasoning or _nested_int(obj, "completion_tokens_details", "reasoning_tokens")
    reasoning = reasoning or _nested_int(obj, "output_tokens_details", "reasoning_tokens")
    # Anthropic extended thinking (already inside output_tokens).
    reasoning = reasoning or _nested_int(obj, "output_tokens_details", "thinking_tokens")
    # Gemini, SDK and REST spellings.
    cache_read = cache_read or (
        _first_int(obj, ("cached_content_token_count", "cachedContentTokenCount")) or 0
    )
    thoughts = _first_int(obj, ("thoughts_token_count", "thoughtsTokenCount"))
    if thoughts:
        # Gemini reports thinking separately from candidates; both are billed as output.
        out += thoughts
        reasoning = reasoning or thoughts
    return _clamped(inp, out, cache_read, cache_write, reasoning)


def _from_usage_metadata(obj: dict[str, Any]) -> Usage | None:
    """:func:`usage_from_mapping` for a dict holding only LangChain ``usage_metadata`` keys:
    the same rules, without probing the dozens of spellings that cannot be there."""
    inp = _count(obj.get("input_tokens"))
    out = _count(obj.get("output_tokens"))
    if inp is None and out is None:
        return None
    cache_read = cache_write = reasoning = 0
    details = obj.get("input_token_details")
    out_details = obj.get("output_token_details")
    if details is not None or out_details:
        cache_read, cache_write, reasoning = _langchain_details(details, out_details)
    return _clamped(inp or 0, out or 0, cache_read, cache_write, reasoning)
