"""What one call consumed, and parsing of the usage shapes providers report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .validate import MAX_TOKENS, check_tokens

__all__ = ["Usage", "usage_from_mapping", "with_response_details"]


@dataclass(frozen=True, init=False)
class Usage:
    """Token usage of one call.

    ``input_tokens`` is the whole prompt, *including* ``cache_read_tokens`` and
    ``cache_write_tokens`` (LangChain's ``usage_metadata`` convention); ``output_tokens``
    includes ``reasoning_tokens``, which are billed as output. ``cache_write_1h_tokens`` is
    the part of the cache writes kept for an hour (billed above 5-minute writes);
    ``web_searches`` counts server-side web searches (billed per search); ``service_tier``
    is the tier the provider says served the call (``"priority"``, ``"flex"``, ``"batch"``,
    ``"default"`` ...; None when not reported).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_1h_tokens: int = 0
    web_searches: int = 0
    service_tier: str | None = None

    def __init__(
        self,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        reasoning_tokens: int = 0,
        cache_write_1h_tokens: int = 0,
        web_searches: int = 0,
        service_tier: str | None = None,
    ) -> None:
        # Hand-written (one is built per call): checks inline, fields into the instance
        # dict directly rather than one frozen-dataclass setattr each.
        if not (
            input_tokens.__class__ is int
            and output_tokens.__class__ is int
            and cache_read_tokens.__class__ is int
            and cache_write_tokens.__class__ is int
            and reasoning_tokens.__class__ is int
            and 0 <= input_tokens <= MAX_TOKENS
            and 0 <= output_tokens <= MAX_TOKENS
            and 0 <= cache_read_tokens <= MAX_TOKENS
            and 0 <= cache_write_tokens <= MAX_TOKENS
            and 0 <= reasoning_tokens <= MAX_TOKENS
        ):
            check_tokens("input_tokens", input_tokens)  # the full checks, naming the field
            check_tokens("output_tokens", output_tokens)
            check_tokens("cache_read_tokens", cache_read_tokens)
            check_tokens("cache_write_tokens", cache_write_tokens)
            check_tokens("reasoning_tokens", reasoning_tokens)
        if cache_read_tokens + cache_write_tokens > input_tokens:
            raise ValueError(
                "cache_read_tokens + cache_write_tokens must not exceed input_tokens "
                f"({cache_read_tokens} + {cache_write_tokens} > {input_tokens})"
            )
        if reasoning_tokens > output_tokens:
            raise ValueError(
                f"reasoning_tokens must not exceed output_tokens "
                f"({reasoning_tokens} > {output_tokens})"
            )
        fields = self.__dict__
        fields["input_tokens"] = input_tokens
        fields["output_tokens"] = output_tokens
        fields["cache_read_tokens"] = cache_read_tokens
        fields["cache_write_tokens"] = cache_write_tokens
        fields["reasoning_tokens"] = reasoning_tokens
        fields["cache_write_1h_tokens"] = cache_write_1h_tokens
        fields["web_searches"] = web_searches
        fields["service_tier"] = service_tier
        if (
            cache_write_1h_tokens.__class__ is not int
            or web_searches.__class__ is not int
            or cache_write_1h_tokens
            or web_searches
            or service_tier is not None
        ):
            self._check_extras()

    def _check_extras(self) -> None:
        check_tokens("cache_write_1h_tokens", self.cache_write_1h_tokens)
        check_tokens("web_searches", self.web_searches)
        if self.cache_write_1h_tokens > self.cache_write_tokens:
            raise ValueError(
                "cache_write_1h_tokens must not exceed cache_write_tokens "
                f"({self.cache_write_1h_tokens} > {self.cache_write_tokens})"
            )
        tier = self.service_tier
        if tier is not None and (not isinstance(tier, str) or not tier.strip()):
            raise TypeError(f"service_tier must be a non-empty str or None, got {tier!r}")

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def uncached_input_tokens(self) -> int:
        return self.input_tokens - self.cache_read_tokens - self.cache_write_tokens

    @property
    def empty(self) -> bool:
        """True when no token was reported: providers and frameworks send all-zero usage
        when they have none, so this reads as "no usage reported", never as a free call."""
        return self.input_tokens == 0 and self.output_tokens == 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
            self.cache_write_1h_tokens + other.cache_write_1h_tokens,
            self.web_searches + other.web_searches,
            self.service_tier or other.service_tier,
        )


_INPUT_KEYS = (
    "input_tokens",  # Anthropic (cache apart), OpenAI Responses, LangChain (cache inside)
    "prompt_tokens",  # OpenAI-compatible: cache inside
    "prompt_token_count",  # Gemini SDK, Bedrock InvokeModel (Llama)
    "input_token_count",
    "promptTokenCount",  # Gemini REST
    "inputTokens",  # Bedrock Converse (cache apart)
    "prompt_eval_count",  # Ollama
    "inputTextTokenCount",  # Bedrock InvokeModel (Titan)
)
_OUTPUT_KEYS = (
    "output_tokens",
    "completion_tokens",
    "candidates_token_count",
    "output_token_count",
    "candidatesTokenCount",
    "outputTokens",
    "eval_count",
    "generation_token_count",  # Bedrock InvokeModel (Llama)
)
# Input spellings whose count leaves Anthropic-style cache counts out, and those counts
# (Anthropic, Bedrock Converse, Cursor).
_CACHE_APART = frozenset(("input_tokens", "inputTokens"))
_APART_READ_KEYS = ("cache_read_input_tokens", "cacheReadInputTokens", "cacheReadTokens")
_APART_WRITE_KEYS = ("cache_creation_input_tokens", "cacheWriteInputTokens", "cacheWriteTokens")
# Where a whole response keeps its usage, when a response rather than a usage is passed,
# and where some usages keep their counts.
_RESPONSE_KEYS = ("usage", "usage_metadata", "usageMetadata", "response", "result", "meta")
_NESTED = ("billed_units", "tokenUsage", "tokens")

# LangChain's detail keys, and the OpenAI Realtime spelling of the same place.
_CACHE_READ_KEYS = ("cache_read", "priority_cache_read", "flex_cache_read", "cached_tokens")
# Every top-level key of LangChain's usage_metadata; a dict with no others takes a fast path.
_LANGCHAIN_KEYS = frozenset(
    ("input_tokens", "output_tokens", "total_tokens", "input_token_details", "output_token_details")
)
_CACHE_WRITE_KEYS = ("cache_creation", "priority_cache_creation", "flex_cache_creation")
_CACHE_WRITE_TTL_KEYS = ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")
_REASONING_KEYS = ("reasoning", "priority_reasoning", "flex_reasoning")


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


def _first(obj: Any, keys: tuple[str, ...]) -> tuple[str, int] | None:
    for key in keys:
        value = _count(_get(obj, key))
        if value is not None:
            return key, value
    return None


def _first_int(obj: Any, keys: tuple[str, ...]) -> int | None:
    found = _first(obj, keys)
    return None if found is None else found[1]


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


def _tier(obj: Any) -> str | None:
    value = _get(obj, "service_tier")
    return value if isinstance(value, str) and value.strip() else None


def _langchain_details(details: Any, out_details: Any) -> tuple[int, int, int, int, str | None]:
    """Cache reads, cache writes, 1-hour cache writes, reasoning and the service tier from
    LangChain's ``input_token_details`` and ``output_token_details`` (its input figure
    already includes both caches). ChatOpenAI prefixes the details of a ``priority`` or
    ``flex`` call with the tier and adds a key named for it."""
    cache_read = cache_write = write_1h = reasoning = 0
    tier = None
    if details is not None:
        cache_read = _sum_of(details, _CACHE_READ_KEYS)
        # ChatAnthropic reports the TTL breakdown instead when the API sends one.
        cache_write = _sum_of(details, _CACHE_WRITE_KEYS) or _sum_of(details, _CACHE_WRITE_TTL_KEYS)
        write_1h = _pos(_get(details, "ephemeral_1h_input_tokens"))
        if _get(details, "priority") is not None:
            tier = "priority"
        elif _get(details, "flex") is not None:
            tier = "flex"
    if out_details is not None:
        reasoning = _sum_of(out_details, _REASONING_KEYS)
    return cache_read, cache_write, write_1h, reasoning, tier


def _clamped(
    inp: int,
    out: int,
    cache_read: int,
    cache_write: int,
    reasoning: int,
    write_1h: int = 0,
    searches: int = 0,
    tier: str | None = None,
) -> Usage | None:
    """A Usage whose details never exceed the totals they are part of; None when no token
    was reported (all-zero usage means "not reported", on every path)."""
    if not inp and not out:
        return None
    cache_read = min(cache_read, inp)
    cache_write = min(cache_write, inp - cache_read)
    return Usage(
        inp,
        out,
        cache_read,
        cache_write,
        min(reasoning, out),
        min(write_1h, cache_write),
        searches,
        tier,
    )


def _bedrock_1h(obj: Any) -> int:
    """1-hour cache writes in Bedrock Converse ``cacheDetails: [{ttl, inputTokens}]``."""
    details = _get(obj, "cacheDetails")
    total = 0
    if isinstance(details, (list, tuple)):
        for item in details:
            if _get(item, "ttl") == "1h":
                total += _pos(_get(item, "inputTokens"))
    return total


def usage_from_mapping(obj: Any) -> Usage | None:
    """Read a provider usage payload (dict or object) into a :class:`Usage`, or None.

    Understands OpenAI Chat Completions (``prompt_tokens`` with cached reads and
    ``cache_write_tokens`` inside, reasoning inside ``completion_tokens``) and the Responses
    API, OpenAI-compatible gateways (OpenRouter, LiteLLM: ``prompt_tokens`` already includes
    ``cache_read_input_tokens`` / ``cache_creation_input_tokens`` when they are present),
    Anthropic (``input_tokens`` excluding the cache counts, 1-hour writes in
    ``cache_creation.ephemeral_1h_input_tokens``, ``server_tool_use.web_search_requests``,
    ``service_tier``), Gemini's SDK and REST spellings (cached content, thoughts billed as
    output, tool-use prompt tokens billed as input), Bedrock Converse (cache counts apart,
    ``cacheDetails`` with ``ttl``) and InvokeModel (``prompt_token_count`` /
    ``generation_token_count``), Ollama, Cohere ``billed_units``, xAI and Perplexity
    reasoning reported beside the completion, and LangChain's ``usage_metadata``. A whole
    response is read through its ``usage`` (its ``service_tier`` kept). All-zero usage
    reads as None: nothing was reported.
    """
    if obj is None:
        return None
    if obj.__class__ is dict and obj.keys() <= _LANGCHAIN_KEYS:
        return _from_usage_metadata(obj)
    return _read(obj, 0)


def _read(obj: Any, depth: int) -> Usage | None:
    if depth < 2:
        # A whole response: read its usage, keeping the service tier it reports beside.
        for key in _RESPONSE_KEYS:
            inner = _get(obj, key)
            if inner is not None and inner is not obj and not isinstance(inner, (int, str)):
                usage = _read(inner, depth + 1)
                if usage is not None:
                    tier = usage.service_tier or _tier(obj)
                    return usage if tier == usage.service_tier else _with_tier(usage, tier)
    found_in = _first(obj, _INPUT_KEYS)
    out = _first_int(obj, _OUTPUT_KEYS)
    if found_in is None and out is None:
        if depth >= 2:
            return None
        for key in _NESTED:  # Cohere billed_units and tokens, Cursor tokenUsage
            inner = _get(obj, key)
            if inner is not None and inner is not obj and not isinstance(inner, (int, str)):
                found = _read(inner, depth + 1)
                if found is not None:
                    read = found.cache_read_tokens or _pos(_get(obj, "cached_tokens"))
                    if read == found.cache_read_tokens:
                        return found
                    return _clamped(  # Cohere keeps cached_tokens beside its tokens
                        found.input_tokens,
                        found.output_tokens,
                        read,
                        found.cache_write_tokens,
                        found.reasoning_tokens,
                        found.cache_write_1h_tokens,
                        found.web_searches,
                        found.service_tier or _tier(obj),
                    )
        return None
    in_key, inp = found_in if found_in is not None else ("", 0)
    out = out or 0
    cache_read = cache_write = write_1h = reasoning = 0
    tier = _tier(obj)
    # LangChain usage_metadata: input_token_details / output_token_details.
    details = _get(obj, "input_token_details")
    out_details = _get(obj, "output_token_details")
    if details is not None or out_details:
        cache_read, cache_write, write_1h, reasoning, lc_tier = _langchain_details(
            details, out_details
        )
        tier = tier or lc_tier
    # Anthropic and Bedrock Converse report cache counts beside the input; when the input
    # came as OpenAI's prompt_tokens (LiteLLM, Databricks) they are already inside it.
    anth_read = _first_int(obj, _APART_READ_KEYS)
    anth_write = _first_int(obj, _APART_WRITE_KEYS)
    creation = _get(obj, "cache_creation")
    if creation is not None and not isinstance(creation, int):
        ttl_5m = _pos(_get(creation, "ephemeral_5m_input_tokens"))
        write_1h = _pos(_get(creation, "ephemeral_1h_input_tokens"))
        if anth_write is None and (ttl_5m or write_1h):
            anth_write = ttl_5m + write_1h
    if anth_read is not None or anth_write is not None:
        cache_read = anth_read or 0
        cache_write = anth_write or 0
        if in_key in _CACHE_APART:
            inp += cache_read + cache_write
    write_1h = write_1h or _bedrock_1h(obj)
    # OpenAI details: Chat Completions, then the Responses API spelling.
    prompt_details = _get(obj, "prompt_tokens_details")
    if prompt_details is not None:
        cache_read = cache_read or _pos(_get(prompt_details, "cached_tokens"))
        cache_write = cache_write or _sum_of(
            prompt_details, ("cache_write_tokens", "cache_creation_tokens")
        )
    input_details = _get(obj, "input_tokens_details")
    if input_details is not None:
        cache_read = cache_read or _sum_of(
            input_details, ("cached_tokens", "cache_read_input_tokens")
        )
        cache_write = cache_write or _pos(_get(input_details, "cache_write_tokens"))
    reasoning = reasoning or _nested_int(obj, "completion_tokens_details", "reasoning_tokens")
    reasoning = reasoning or _nested_int(obj, "output_tokens_details", "reasoning_tokens")
    # Anthropic extended thinking (already inside output_tokens).
    reasoning = reasoning or _nested_int(obj, "output_tokens_details", "thinking_tokens")
    # Top-level cached counts: OpenAI-compatible Anthropic, xAI, Cohere.
    cache_read = cache_read or (
        _first_int(obj, ("cached_tokens", "cached_prompt_text_tokens")) or 0
    )
    # Gemini, SDK and REST spellings: cached content is inside the prompt count; tool-use
    # prompt tokens and thoughts are reported apart and billed as input and output.
    cache_read = cache_read or (
        _first_int(obj, ("cached_content_token_count", "cachedContentTokenCount")) or 0
    )
    tool_prompt = _first_int(obj, ("tool_use_prompt_token_count", "toolUsePromptTokenCount"))
    if tool_prompt:
        inp += tool_prompt
    thoughts = _first_int(obj, ("thoughts_token_count", "thoughtsTokenCount"))
    if thoughts:
        out += thoughts
        reasoning = reasoning or thoughts
    # xAI and Perplexity report reasoning (and Perplexity citations) beside the completion.
    apart = _first_int(obj, ("reasoning_tokens",))
    if apart:
        beside = _get(obj, "cached_prompt_text_tokens") is not None or any(
            _get(obj, key) is not None for key in ("citation_tokens", "num_search_queries")
        )
        if beside or apart > out:
            out += apart
        reasoning = reasoning or apart
    elif reasoning > out and in_key == "prompt_tokens":
        out += reasoning  # xAI chat: completion_tokens leaves reasoning out
    citations = _pos(_get(obj, "citation_tokens"))
    if citations:
        out += citations
    searches = (
        _nested_int(obj, "server_tool_use", "web_search_requests")
        or _pos(_get(obj, "num_search_queries"))
        or _nested_int(_get(obj, "tool_calls_details"), "search_web", "invocation")
    )
    return _clamped(inp, out, cache_read, cache_write, reasoning, write_1h, searches, tier)


def _with_tier(usage: Usage, tier: str | None) -> Usage:
    return Usage(
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_tokens,
        usage.cache_write_tokens,
        usage.reasoning_tokens,
        usage.cache_write_1h_tokens,
        usage.web_searches,
        tier,
    )


def _from_usage_metadata(obj: dict[str, Any]) -> Usage | None:
    """:func:`usage_from_mapping` for a dict holding only LangChain ``usage_metadata`` keys:
    the same rules, without probing the dozens of spellings that cannot be there."""
    inp = _count(obj.get("input_tokens"))
    out = _count(obj.get("output_tokens"))
    if not inp and not out:
        return None
    details = obj.get("input_token_details")
    out_details = obj.get("output_token_details")
    if details is None and not out_details:
        return _clamped(inp or 0, out or 0, 0, 0, 0)
    cache_read, cache_write, write_1h, reasoning, tier = _langchain_details(details, out_details)
    return _clamped(inp or 0, out or 0, cache_read, cache_write, reasoning, write_1h, 0, tier)


def with_response_details(usage: Usage | None, *sources: Any) -> Usage | None:
    """``usage`` completed with what a response reports beside its token counts: web
    searches (Anthropic ``server_tool_use.web_search_requests``, Perplexity
    ``num_search_queries``) and the service tier that served the call, read from
    ``sources`` (LangChain ``response_metadata`` / ``llm_output``, a raw response, or their
    ``usage``). Fields ``usage`` already has are kept; None stays None."""
    if usage is None:
        return None
    searches = usage.web_searches
    tier = usage.service_tier
    for source in sources:
        if source is None or (searches and tier):
            continue
        for place in (source, _get(source, "usage")):
            if place is None:
                continue
            if tier is None:
                tier = _tier(place)
            if not searches:
                searches = _nested_int(place, "server_tool_use", "web_search_requests") or _pos(
                    _get(place, "num_search_queries")
                )
    if searches == usage.web_searches and tier == usage.service_tier:
        return usage
    return Usage(
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_tokens,
        usage.cache_write_tokens,
        usage.reasoning_tokens,
        usage.cache_write_1h_tokens,
        searches,
        tier,
    )
