"""Usage is read as the source means it, for every provider's usage shape.

For each usage extractor genai-prices defines (where each count lives in a provider's
response, and which usage field it adds to), a response is built with consistent counts
(caches inside the prompt, reasoning inside the output) and read three ways: by
genai-prices, by :func:`agent_budget.extract_usage` (the same extractors, from the shipped
catalogue) and by the provider-blind :func:`agent_budget.usage_from_mapping` every adapter
uses. The first two always agree; the provider-blind reader agrees except where one shape
means two things (xAI's ``completion_tokens`` leaves reasoning out, OpenAI's does not).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent_budget import Usage, extract_usage, usage_from_mapping
from agent_budget.catalogue import Catalogue

genai_prices = pytest.importorskip("genai_prices")

FIELDS = {
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "cache_read_tokens": "cache_read_tokens",
    "cache_write_tokens": "cache_write_tokens",
    "cache_write_1h_tokens": "cache_write_1h_tokens",
    "output_reasoning_tokens": "reasoning_tokens",
    "web_searches": "web_searches",
}
# Count for a path, by the usage fields it feeds (the most specific first).
VALUES = [
    ("cache_write_1h_tokens", 200),
    ("cache_write_5m_tokens", 100),
    ("cache_read_tokens", 1000),
    ("cache_write_tokens", 300),
    ("output_reasoning_tokens", 50),
    ("web_searches", 2),
    ("output_citation_tokens", 30),
    ("input_tool_tokens", 500),
]
# The one shape that means two things: reading it blind, reasoning counts as inside.
AMBIGUOUS = {("x-ai", "chat")}

CATALOGUE = Catalogue.snapshot_file()
EXTRACTORS = [
    pytest.param(p.id, e, id=f"{p.id}-{e['flavor']}")
    for p in CATALOGUE.providers
    for e in p.extractors
]


def _count_for(dests: set[str]) -> int | None:
    for dest, value in VALUES:
        if dest in dests:
            return value
    if dests == {"input_tokens"}:
        return 5000
    if dests == {"output_tokens"}:
        return 700
    return None  # audio, image, pages ...: not what this test is about


def _response(extractor: dict[str, Any]) -> dict[str, Any]:
    paths: dict[str, set[str]] = {}
    for path, dest, _required in extractor["map"]:
        paths.setdefault(json.dumps(path), set()).add(dest)
    usage: dict[str, Any] = {}
    for key, dests in paths.items():
        value = _count_for(dests)
        path = json.loads(key)
        steps = [path] if isinstance(path, str) else path
        if value is None or any(isinstance(s, list) and s[1] != "ttl" for s in steps):
            continue
        node: Any = usage
        for index, step in enumerate(steps[:-1]):
            following = steps[index + 1]
            if isinstance(following, list):  # cacheDetails: [{"ttl": "1h", ...}]
                item = {following[1]: following[2][1]}
                node.setdefault(step, []).append(item)
                node = item
                steps = steps[: index + 1] + steps[index + 2 :]
                break
            node = node.setdefault(step, {})
        node[steps[-1]] = value
    root = extractor["root"]
    response: dict[str, Any] = {}
    node = response
    for step in ([root] if isinstance(root, str) else root)[:-1]:
        node = node.setdefault(step, {})
    node[([root] if isinstance(root, str) else root)[-1]] = usage
    return response


def _values(usage: Usage | None) -> dict[str, int] | None:
    if usage is None:
        return None
    return {dest: getattr(usage, field) for dest, field in FIELDS.items()}


@pytest.mark.parametrize(("provider", "extractor"), EXTRACTORS)
def test_every_usage_shape_reads_as_the_source_reads_it(
    provider: str, extractor: dict[str, Any]
) -> None:
    response = _response(extractor)
    try:
        theirs = genai_prices.extract_usage(
            response, provider_id=provider, api_flavor=extractor["flavor"]
        ).usage
    except ValueError:
        pytest.skip("not priced by tokens (pages, audio seconds)")
    expected = {dest: theirs.reported_value(dest) for dest in FIELDS}
    if not expected["input_tokens"] and not expected["output_tokens"]:
        pytest.skip("no token counts in this flavor")
    ours = extract_usage(response, provider, flavor=extractor["flavor"], catalogue=CATALOGUE)
    assert _values(ours) == expected
    blind = _values(usage_from_mapping(response))
    if (provider, extractor["flavor"]) in AMBIGUOUS:
        assert blind != expected
    else:
        assert blind == expected


def test_the_provider_resolves_the_xai_ambiguity() -> None:
    response = {
        "model": "grok-3-mini",
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 20,
            "completion_tokens_details": {"reasoning_tokens": 10},
        },
    }
    assert extract_usage(response, "x-ai") == Usage(100, 30, reasoning_tokens=10)
    assert extract_usage(response, "openai") == Usage(100, 20, reasoning_tokens=10)
    assert usage_from_mapping(response) == Usage(100, 20, reasoning_tokens=10)


def test_extract_usage_errors_and_defaults() -> None:
    with pytest.raises(LookupError, match="unknown provider"):
        extract_usage({}, "nobody")
    with pytest.raises(LookupError, match="no usage flavor 'fax'"):
        extract_usage({}, "openai", flavor="fax")
    assert extract_usage({"usage": {"prompt_tokens": 0, "completion_tokens": 0}}, "openai") is None
    answer = {"service_tier": "flex", "usage": {"input_tokens": 10, "output_tokens": 2}}
    assert extract_usage(answer, "openai") == Usage(10, 2, service_tier="flex")
