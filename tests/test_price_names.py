"""Model names in every spelling users meet resolve to the right catalogue row and family.

One table: the spelling, the row that must price it (``provider:model id``), the family it
counts under (per-model counters and limits) and, where the issue found it mispriced, the
USD per 1M input / output tokens it must be charged now.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from agent_budget import ModelRates, RateTable, Usage, normalize_model_name
from agent_budget.names import family_name

TABLE = RateTable(on_unknown="raise")

CASES = [
    # spelling, price id, family, (input, output) per 1M or None
    # OpenAI: dated snapshots, aliases, and longer names that must not become shorter ones
    ("gpt-4o", "openai:gpt-4o", "gpt-4o", ("2.5", "10")),
    ("gpt-4o-2024-08-06", "openai:gpt-4o", "gpt-4o", None),
    ("gpt-4o-2024-05-13", "openai:gpt-4o-2024-05-13", "gpt-4o", ("5", "15")),
    ("GPT-4o-mini-2024-07-18", "openai:gpt-4o-mini", "gpt-4o-mini", ("0.15", "0.6")),
    ("gpt-4o-mini-2099-01-01", "openai:gpt-4o-mini", "gpt-4o-mini", None),
    ("gpt-4.1-nano", "openai:gpt-4.1-nano", "gpt-4.1-nano", ("0.1", "0.4")),
    ("o1", "openai:o1", "o1", ("15", "60")),
    ("o1-pro", "openai:o1-pro", "o1-pro", ("150", "600")),
    ("o1-pro-2025-03-19", "openai:o1-pro", "o1-pro", ("150", "600")),
    ("o3-pro", "openai:o3-pro", "o3-pro", ("20", "80")),
    ("gpt-5-pro", "openai:gpt-5-pro", "gpt-5-pro", ("15", "120")),
    ("chatgpt-4o-latest", "openai:chatgpt-4o-latest", "chatgpt-4o", ("5", "15")),
    ("gpt-4", "openai:gpt-4", "gpt-4", ("30", "60")),
    ("gpt-4-0613", "openai:gpt-4", "gpt-4", ("30", "60")),
    ("gpt-4-turbo", "openai:gpt-4-turbo", "gpt-4-turbo", ("10", "30")),
    ("gpt-4-turbo-2024-04-09", "openai:gpt-4-turbo", "gpt-4-turbo", ("10", "30")),
    ("gpt-3.5-turbo", "openai:gpt-3.5-turbo", "gpt-3.5-turbo", ("0.5", "1.5")),
    ("gpt-3.5-turbo-0125", "openai:gpt-3.5-turbo", "gpt-3.5-turbo", ("0.5", "1.5")),
    ("gpt-35-turbo-0125", "openai:gpt-3.5-turbo", "gpt-3.5-turbo", ("0.5", "1.5")),  # Azure
    ("gpt-5.2-20251211", "openai:gpt-5.2", "gpt-5.2", None),  # compact date
    ("openai/gpt-4o", "openai:gpt-4o", "gpt-4o", None),  # LiteLLM prefix
    ("azure/gpt-4o", "openai:gpt-4o", "gpt-4o", ("2.5", "10")),  # Azure resells OpenAI
    # Fine-tunes are priced as fine-tunes, counted apart from their base
    (
        "ft:gpt-4o-mini-2024-07-18:my-org::abc123",
        "openai:ft:gpt-4o-mini",
        "ft:gpt-4o-mini",
        ("0.3", "1.2"),
    ),
    ("ft:gpt-3.5-turbo-0125:org::x1", "openai:ft:gpt-3.5-turbo-", "ft:gpt-3.5-turbo", None),
    # Anthropic: dated, -latest and -0 aliases
    (
        "claude-3-7-sonnet-20250219",
        "anthropic:claude-3-7-sonnet-latest",
        "claude-3-7-sonnet",
        ("3", "15"),
    ),
    ("claude-3-7-sonnet-latest", "anthropic:claude-3-7-sonnet-latest", "claude-3-7-sonnet", None),
    ("claude-sonnet-4-0", "anthropic:claude-sonnet-4-0", "claude-sonnet-4", ("3", "15")),
    ("claude-sonnet-4-20250514", "anthropic:claude-sonnet-4-0", "claude-sonnet-4", None),
    ("claude-opus-4-0", "anthropic:claude-opus-4-0", "claude-opus-4", ("15", "75")),
    (
        "claude-3-5-haiku-latest",
        "anthropic:claude-3-5-haiku-latest",
        "claude-3-5-haiku",
        ("0.8", "4"),
    ),
    ("claude-sonnet-4-5-20250929", "anthropic:claude-sonnet-4-5", "claude-sonnet-4-5", ("3", "15")),
    # Vertex @ dates; Vertex through LiteLLM is priced by Google's rows
    ("claude-3-5-sonnet@20240620", "anthropic:claude-3-5-sonnet", "claude-3-5-sonnet", None),
    ("vertex_ai/claude-3-5-sonnet@20240620", "google:claude-3-5-sonnet", "claude-3-5-sonnet", None),
    # Router prefixes, OpenRouter's dotted versions
    (
        "anthropic/claude-3.5-sonnet",
        "anthropic:claude-3-5-sonnet",
        "claude-3-5-sonnet",
        ("3", "15"),
    ),
    (
        "anthropic/claude-3.7-sonnet",
        "anthropic:claude-3-7-sonnet-latest",
        "claude-3-7-sonnet",
        None,
    ),
    ("anthropic/claude-sonnet-4.5", "anthropic:claude-sonnet-4-5", "claude-sonnet-4-5", None),
    (
        "openrouter/anthropic/claude-3.5-sonnet",
        "openrouter:anthropic/claude-3.5-sonnet",
        "claude-3-5-sonnet",
        ("3", "15"),
    ),
    # Bedrock: bare, regional (10% uplift where the source has it), global, versions
    (
        "anthropic.claude-3-sonnet-20240229-v1:0",
        "aws:regional.anthropic.claude-3-sonnet-20240229-v1:0",
        "claude-3-sonnet",
        ("3", "15"),
    ),
    (
        "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
        "aws:regional.anthropic.claude-3-5-sonnet-20241022-v2:0",
        "claude-3-5-sonnet",
        None,
    ),
    (
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "aws:regional.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "claude-sonnet-4-5",
        ("3.3", "16.5"),
    ),
    (
        "eu.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "aws:regional.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "claude-sonnet-4-5",
        ("3.3", "16.5"),
    ),
    (
        "apac.anthropic.claude-sonnet-4-20250514-v1:0",
        "aws:regional.anthropic.claude-sonnet-4-20250514-v1:0",
        "claude-sonnet-4",
        None,
    ),
    (
        "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "aws:global.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "claude-sonnet-4-5",
        ("3", "15"),
    ),
    (
        "bedrock/us.anthropic.claude-3-haiku-20240307-v1:0",
        "aws:regional.anthropic.claude-3-haiku-20240307-v1:0",
        "claude-3-haiku",
        ("0.25", "1.25"),
    ),
    (
        "us.meta.llama3-1-70b-instruct-v1:0",
        "aws:meta.llama3-1-70b-instruct-v1:0",
        "llama3-1-70b-instruct",
        ("0.72", "0.72"),
    ),
    # Gemini: REST models/ prefix, version suffixes, lite models, a source gap
    ("models/gemini-2.5-flash", "google:gemini-2.5-flash", "gemini-2.5-flash", ("0.3", "2.5")),
    ("models/gemini-1.5-pro-002", "google:gemini-1.5-pro", "gemini-1.5-pro", None),
    ("gemini/gemini-2.5-pro", "google:gemini-2.5-pro", "gemini-2.5-pro", ("1.25", "10")),
    (
        "gemini-2.0-flash-lite",
        "google:gemini-2.0-flash-lite",
        "gemini-2.0-flash-lite",
        ("0.075", "0.3"),
    ),
    (
        "gemini-2.5-flash-lite",
        "google:gemini-2.5-flash-lite",
        "gemini-2.5-flash-lite",
        ("0.1", "0.4"),
    ),
    (
        "gemini-1.5-flash-8b",
        "google:gemini-flash-1.5-8b",
        "gemini-1.5-flash-8b",
        ("0.0375", "0.15"),
    ),
    # Other vendors the old table did not price
    ("grok-3", "x-ai:grok-3", "grok-3", ("3", "15")),
    ("xai/grok-4", "x-ai:grok-4-0709", "grok-4", ("3", "15")),
    ("command-a-03-2025", "cohere:command-a", "command-a", ("2.5", "10")),
    ("mistral-large-latest", "mistral:mistral-large", "mistral-large", ("2", "6")),
    ("deepseek-chat", "deepseek:deepseek-chat", "deepseek-chat", None),
    ("deepseek-r1", "deepseek:deepseek-reasoner", "deepseek-r1", None),
    # Hosts: Groq, Together, a longer known name over a vendor's shorter prefix
    (
        "llama-3.3-70b-versatile",
        "groq:llama-3.3-70b-versatile",
        "llama-3.3-70b-versatile",
        ("0.59", "0.79"),
    ),
    (
        "groq/llama-3.3-70b-versatile",
        "groq:llama-3.3-70b-versatile",
        "llama-3.3-70b-versatile",
        None,
    ),
    (
        "together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo",
        "together:meta-llama/Llama-3.3-70B-Instruct-Turbo",
        "llama-3.3-70b-instruct-turbo",
        ("0.88", "0.88"),
    ),
    (
        "meta-llama/Llama-3.3-70B-Instruct-Turbo",
        "together:meta-llama/Llama-3.3-70B-Instruct-Turbo",
        "llama-3.3-70b-instruct-turbo",
        None,
    ),
    (
        "deepseek-r1-distill-llama-70b",
        "groq:deepseek-r1-distill-llama-70b",
        "deepseek-r1-distill-llama-70b",
        None,
    ),
]


@pytest.mark.parametrize(
    ("spelling", "price_id", "family", "price"), CASES, ids=[c[0] for c in CASES]
)
def test_spelling_resolves(spelling, price_id, family, price) -> None:
    resolved = TABLE.resolve(spelling)
    assert resolved.known
    assert resolved.price_id == price_id, resolved.how
    assert resolved.name == family == family_name(spelling)
    assert TABLE.canonical(spelling) == family
    if price is not None:
        # 1,000 tokens (below any prompt-size tier), scaled to USD per 1M
        per_1k = Usage(1000, 0), Usage(0, 1000)
        got = tuple(resolved.rates.cost(u) * 1000 for u in per_1k)
        assert got == (Decimal(price[0]), Decimal(price[1]))


def test_regional_bedrock_ids_cost_ten_percent_more_where_the_source_says_so() -> None:
    usage = Usage(100_000, 10_000)
    regional = TABLE.resolve("us.anthropic.claude-sonnet-4-5-20250929-v1:0").rates.cost(usage)
    plain = TABLE.resolve("global.anthropic.claude-sonnet-4-5-20250929-v1:0").rates.cost(usage)
    assert regional == plain * Decimal("1.1")


def test_a_longer_known_name_never_resolves_to_a_shorter_one() -> None:
    for longer, shorter in [
        ("gpt-4o-mini", "gpt-4o"),
        ("gpt-4.1-nano", "gpt-4.1"),
        ("gpt-4.1-mini", "gpt-4.1"),
        ("o1-pro", "o1"),
        ("o3-pro", "o3"),
        ("o4-mini", "o4"),
        ("gpt-5-nano", "gpt-5"),
        ("gemini-2.5-flash-lite", "gemini-2.5-flash"),
        ("gemini-1.5-flash-8b", "gemini-1.5-flash"),
        ("claude-3-5-sonnet", "claude-3-5"),
    ]:
        assert (
            TABLE.resolve(longer).price_key
            != TABLE.resolve(shorter, on_unknown="fallback").price_key
        )


def test_azure_deployment_names_through_aliases() -> None:
    table = RateTable(aliases={"prod-chat": "gpt-4o-mini"}, on_unknown="raise")
    for spelling in ("prod-chat", "azure/prod-chat", "AZURE/Prod-Chat"):
        resolved = table.resolve(spelling)
        assert resolved.price_id == "openai:gpt-4o-mini" and resolved.name == "gpt-4o-mini"
    assert RateTable(on_unknown="fallback").resolve("azure/prod-chat").known is False


def test_an_explicit_provider_picks_its_rows() -> None:
    resolved = TABLE.resolve("anthropic/claude-3.5-sonnet", provider="openrouter")
    assert resolved.price_id == "openrouter:anthropic/claude-3.5-sonnet"
    assert TABLE.resolve("claude-3-5-sonnet-20241022", provider="bedrock").provider == "aws"


def test_user_rates_win_in_every_spelling() -> None:
    mine = ModelRates.per_million("1", "2")
    table = RateTable({"claude-3.5-sonnet": mine}, on_unknown="raise")
    for spelling in (
        "claude-3-5-sonnet-20241022",
        "anthropic/claude-3.5-sonnet",
        "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
    ):
        resolved = table.resolve(spelling)
        assert resolved.rates is mine and resolved.price_id == "rates:claude-3.5-sonnet"


def test_normalize_model_name_is_kept() -> None:
    assert normalize_model_name(" OpenAI/GPT-4o-2024-08-06 ") == "gpt-4o-2024-08-06"
    assert normalize_model_name("us.anthropic.claude-3-5-sonnet-20241022-v2:0") == (
        "claude-3-5-sonnet-20241022"
    )
    assert normalize_model_name("claude-3-5-sonnet@20240620") == "claude-3-5-sonnet-20240620"


@pytest.mark.parametrize(
    "name", ["my-azure-deployment", "totally-new-model-9", "ft:gpt-9-2099-01-01:org::x"]
)
def test_names_nothing_prices_stay_unknown(name: str) -> None:
    resolved = RateTable(on_unknown="fallback").resolve(name)
    assert not resolved.known and resolved.source == "fallback"
