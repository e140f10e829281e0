"""usage_from_mapping reads every provider's usage spelling into one Usage."""

from __future__ import annotations

from types import MappingProxyType, SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent_budget import Usage, usage_from_mapping


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (  # OpenAI Chat Completions
            {
                "prompt_tokens": 100,
                "completion_tokens": 20,
                "prompt_tokens_details": {"cached_tokens": 60},
                "completion_tokens_details": {"reasoning_tokens": 5},
            },
            Usage(100, 20, 60, 0, 5),
        ),
        (  # OpenAI Responses API
            {
                "input_tokens": 100,
                "output_tokens": 20,
                "input_tokens_details": {"cached_tokens": 60},
                "output_tokens_details": {"reasoning_tokens": 5},
            },
            Usage(100, 20, 60, 0, 5),
        ),
        (  # Anthropic: input excludes cached tokens; thinking inside output
            {
                "input_tokens": 40,
                "output_tokens": 20,
                "cache_read_input_tokens": 50,
                "cache_creation_input_tokens": 10,
                "output_tokens_details": {"thinking_tokens": 7},
            },
            Usage(100, 20, 50, 10, 7),
        ),
        (  # Bedrock Converse, camelCase, cached input apart as in Anthropic
            {
                "inputTokens": 10,
                "outputTokens": 5,
                "cacheReadInputTokens": 1000,
                "cacheWriteInputTokens": 200,
            },
            Usage(1210, 5, 1000, 200, 0),
        ),
        (  # Gemini SDK: thoughts billed as output, reported apart
            {
                "prompt_token_count": 100,
                "candidates_token_count": 20,
                "cached_content_token_count": 30,
                "thoughts_token_count": 8,
            },
            Usage(100, 28, 30, 0, 8),
        ),
        (  # Gemini REST
            {"promptTokenCount": 100, "candidatesTokenCount": 20, "thoughtsTokenCount": 8},
            Usage(100, 28, 0, 0, 8),
        ),
        ({"prompt_eval_count": 12, "eval_count": 3}, Usage(12, 3)),  # Ollama
        (  # LangChain usage_metadata, Anthropic TTL breakdown of cache writes
            {
                "input_tokens": 2000,
                "output_tokens": 200,
                "input_token_details": {
                    "cache_read": 600,
                    "cache_creation": 0,
                    "ephemeral_5m_input_tokens": 300,
                    "ephemeral_1h_input_tokens": 100,
                },
            },
            Usage(2000, 200, 600, 400, 0, cache_write_1h_tokens=100),
        ),
    ],
    ids=[
        "openai",
        "responses",
        "anthropic",
        "bedrock",
        "gemini",
        "gemini-rest",
        "ollama",
        "langchain-ttl",
    ],
)
def test_provider_shapes(payload, expected):
    assert usage_from_mapping(payload) == expected


def test_usage_keeps_its_positional_fields_and_checks_the_new_ones():
    usage = Usage(100, 20, 30, 40, 5)
    assert (usage.cache_write_1h_tokens, usage.web_searches, usage.service_tier) == (0, 0, None)
    assert usage + Usage(1, 1, 0, 1, 0, 1, 2, "batch") == Usage(101, 21, 30, 41, 5, 1, 2, "batch")
    with pytest.raises(ValueError, match="cache_write_1h_tokens"):
        Usage(10, 0, 0, 2, 0, cache_write_1h_tokens=3)
    with pytest.raises(ValueError, match="web_searches"):
        Usage(10, 0, web_searches=-1)
    with pytest.raises(TypeError, match="cache_write_1h_tokens"):
        Usage(10, 0, cache_write_1h_tokens=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="service_tier"):
        Usage(10, 0, service_tier=3)  # type: ignore[arg-type]
    assert Usage().empty and not Usage(1, 0).empty


def test_objects_with_attributes_and_nothing_to_read():
    usage = SimpleNamespace(prompt_tokens=3, completion_tokens=4, prompt_tokens_details=None)
    assert usage_from_mapping(usage) == Usage(3, 4)
    assert usage_from_mapping({"model": "x"}) is None
    assert usage_from_mapping(None) is None


def test_inconsistent_details_are_clamped_not_raised():
    # A buggy proxy reporting more cached than total input must not break a commit.
    usage = usage_from_mapping(
        {
            "prompt_tokens": 10,
            "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": 50},
        }
    )
    assert usage == Usage(10, 1, 10, 0, 0)


_counts = st.one_of(
    st.integers(min_value=-5, max_value=10**6), st.none(), st.booleans(), st.just("7")
)
_details = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from(
            [
                "cache_read",
                "cache_creation",
                "priority_cache_read",
                "flex_cache_read",
                "ephemeral_5m_input_tokens",
                "ephemeral_1h_input_tokens",
                "priority_cache_creation",
                "flex_cache_creation",
                "priority",
                "flex",
                "reasoning",
                "priority_reasoning",
                "flex_reasoning",
                "audio",
            ]
        ),
        _counts,
    ),
)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "input_tokens": _counts,
            "output_tokens": _counts,
            "total_tokens": _counts,
            "input_token_details": _details,
            "output_token_details": _details,
        },
    )
)
def test_usage_metadata_fast_path_reads_like_the_general_rules(payload: dict) -> None:
    """A dict of LangChain usage_metadata keys takes a shortcut; wrapped in a Mapping that
    is not a dict it goes the general way. Both must read it alike."""
    assert usage_from_mapping(payload) == usage_from_mapping(MappingProxyType(payload))
