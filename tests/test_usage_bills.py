"""Every provider usage shape costs exactly the provider's bill, on every path.

Each case is a real payload shape (the response a provider, gateway or SDK returns), the
model that answered and the bill computed by hand from the catalogue's prices at
2026-12-01 12:00 UTC (USD per 1M tokens, shown in each case). The same payload goes
through the core (``usage_from_mapping`` and a budget commit), through LangChain (the real
``langchain-openai`` / ``langchain-anthropic`` usage converters where they exist, and the
``llm_output`` a legacy or gateway integration leaves) and through LlamaIndex (a response's
``raw``); all must record the bill. Where genai-prices has an extractor for the shape, its
own price agrees.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_CEILING, Decimal
from typing import Any, NamedTuple

import pytest
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from llama_index.core.llms import ChatMessage, ChatResponse

from agent_budget import Budget, BudgetScope, RateTable, Usage, usage_from_mapping
from agent_budget_callbacks.langchain.payload import read_outcome
from agent_budget_callbacks.llamaindex.payload import usage_from_response

NOW = dt.datetime(2026, 12, 1, 12, tzinfo=dt.timezone.utc).timestamp()


class Case(NamedTuple):
    model: str
    response: dict[str, Any]  # the whole response; its usage is response["usage"]
    usage: Usage
    bill: str  # USD, computed by hand
    genai: tuple[str, str] | None = None  # (provider_id, api_flavor) genai-prices reads


CASES = {
    # LiteLLM answers Anthropic in the OpenAI shape: prompt_tokens already includes the
    # 1000 cache reads and 200 cache writes it also reports Anthropic-style.
    # claude-3-5-sonnet: 3 in, 0.30 read, 3.75 write, 15 out
    # 300*3 + 1000*0.30 + 200*3.75 + 100*15 = 3450 -> $0.00345
    "litellm-anthropic": Case(
        "claude-3-5-sonnet-20241022",
        {
            "model": "claude-3-5-sonnet-20241022",
            "usage": {
                "prompt_tokens": 1500,
                "completion_tokens": 100,
                "total_tokens": 1600,
                "prompt_tokens_details": {"cached_tokens": 1000},
                "cache_creation_input_tokens": 200,
                "cache_read_input_tokens": 1000,
            },
        },
        Usage(1500, 100, 1000, 200),
        "0.00345",
    ),
    # OpenRouter (and gateways in front of Claude): cache writes in prompt_tokens_details.
    # claude-sonnet-4-5: 3 in, 0.30 read, 3.75 write, 15 out
    # 500*3 + 500*0.30 + 1000*3.75 + 50*15 = 6150 -> $0.00615
    "openrouter-cache-write": Case(
        "anthropic/claude-sonnet-4.5",
        {
            "model": "anthropic/claude-sonnet-4.5",
            "usage": {
                "prompt_tokens": 2000,
                "completion_tokens": 50,
                "prompt_tokens_details": {"cached_tokens": 500, "cache_write_tokens": 1000},
            },
        },
        Usage(2000, 50, 500, 1000),
        "0.00615",
        ("openrouter", "chat"),
    ),
    # Anthropic: 1-hour cache writes cost 2x input (6), 5-minute ones 1.25x (3.75).
    # 100*3 + 1000*3.75 + 2000*6 + 50*15 = 16800 -> $0.0168
    "anthropic-1h-cache": Case(
        "claude-sonnet-4-5-20250929",
        {
            "model": "claude-sonnet-4-5-20250929",
            "usage": {
                "input_tokens": 100,
                "output_tokens": 50,
                "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": 3000,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": 1000,
                    "ephemeral_1h_input_tokens": 2000,
                },
                "service_tier": "standard",
            },
        },
        Usage(3100, 50, 0, 3000, 0, 2000, service_tier="standard"),
        "0.0168",
        ("anthropic", "default"),
    ),
    # Bedrock Converse, regional id (10% uplift): cacheDetails gives the TTL of writes.
    # 3.30 in, 4.125 write, 6.60 1h write, 16.50 out
    # 100*3.3 + 2000*6.6 + 50*16.5 = 14355 -> $0.014355
    "bedrock-converse-1h": Case(
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        {
            "usage": {
                "inputTokens": 100,
                "outputTokens": 50,
                "totalTokens": 2150,
                "cacheReadInputTokens": 0,
                "cacheWriteInputTokens": 2000,
                "cacheDetails": [{"ttl": "1h", "inputTokens": 2000}],
            },
        },
        Usage(2100, 50, 0, 2000, 0, 2000),
        "0.014355",
    ),
    # Gemini REST: tool-use prompt tokens are billed as input and thoughts as output, both
    # reported apart from promptTokenCount / candidatesTokenCount; cached content is inside.
    # gemini-2.5-flash: 0.30 in, 0.03 read, 2.50 out
    # 1100*0.30 + 400*0.03 + 500*2.50 = 1592 -> $0.001592
    "gemini-tool-use-and-thoughts": Case(
        "gemini-2.5-flash",
        {
            "modelVersion": "gemini-2.5-flash",
            "usageMetadata": {
                "promptTokenCount": 1000,
                "candidatesTokenCount": 200,
                "cachedContentTokenCount": 400,
                "toolUsePromptTokenCount": 500,
                "thoughtsTokenCount": 300,
                "totalTokenCount": 2000,
            },
        },
        Usage(1500, 500, 400, 0, 300),
        "0.001592",
    ),
    # Anthropic server-side web search: $10 per 1,000 searches beside the tokens.
    # 1000*3 + 100*15 = 4500 per 1M -> $0.0045 + 3 * $0.01 = $0.0345
    "anthropic-web-search": Case(
        "claude-sonnet-4-5",
        {
            "model": "claude-sonnet-4-5-20250929",
            "usage": {
                "input_tokens": 1000,
                "output_tokens": 100,
                "server_tool_use": {"web_search_requests": 3, "web_fetch_requests": 0},
            },
        },
        Usage(1000, 100, web_searches=3),
        "0.0345",
        ("anthropic", "default"),
    ),
    # OpenAI says which service tier ran: priority costs 2x on gpt-5 (2.50 in, 20 out).
    # 1000*2.5 + 100*20 = 4500 -> $0.0045 (standard would be $0.00225)
    "openai-priority": Case(
        "gpt-5",
        {
            "model": "gpt-5-2025-08-07",
            "service_tier": "priority",
            "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100},
        },
        Usage(1000, 100, service_tier="priority"),
        "0.0045",
    ),
    # ... and flex half price (0.625 in, 5 out): 625 + 500 = 1125 -> $0.001125
    "openai-flex": Case(
        "gpt-5",
        {
            "model": "gpt-5-2025-08-07",
            "service_tier": "flex",
            "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100},
        },
        Usage(1000, 100, service_tier="flex"),
        "0.001125",
    ),
    # Bedrock InvokeModel, Llama body: counts at the top level, output as generation_tokens.
    # meta.llama3-1-70b-instruct: 0.72 in and out -> 200*0.72 = 144 -> $0.000144
    "bedrock-invoke-llama": Case(
        "us.meta.llama3-1-70b-instruct-v1:0",
        {
            "generation": "Paris.",
            "prompt_token_count": 120,
            "generation_token_count": 80,
            "stop_reason": "stop",
        },
        Usage(120, 80),
        "0.000144",
    ),
}


def _expected_nanos(bill: str) -> int:
    return int((Decimal(bill) * 10**9).to_integral_value(rounding=ROUND_CEILING))


def _usage_part(case: Case) -> dict[str, Any]:
    response = case.response
    for key in ("usage", "usageMetadata"):
        if key in response:
            return response[key]
    return response


def _commit(case: Case, usage: Usage | None) -> Any:
    budget = Budget(BudgetScope(name="bill"), RateTable(on_unknown="raise"), clock=lambda: NOW)
    reservation = budget.reserve(case.model, usage.input_tokens if usage else 10, 1000)
    return budget.commit(reservation, usage)


@pytest.mark.parametrize("name", CASES)
def test_core_reads_the_shape_and_charges_the_bill(name: str) -> None:
    case = CASES[name]
    usage = usage_from_mapping(case.response)
    assert usage == case.usage
    if name not in ("openai-priority", "openai-flex"):  # the tier is beside the usage
        assert usage_from_mapping(_usage_part(case)) == case.usage
    record = _commit(case, usage)
    assert record.cost_nanos == _expected_nanos(case.bill)
    assert record.cost == Decimal(case.bill)


@pytest.mark.parametrize("name", [n for n in CASES if CASES[n].genai])
def test_genai_prices_reads_the_same_shape_to_the_same_bill(name: str) -> None:
    genai_prices = pytest.importorskip("genai_prices")
    case = CASES[name]
    assert case.genai is not None
    provider, flavor = case.genai
    extracted = genai_prices.extract_usage(case.response, provider_id=provider, api_flavor=flavor)
    price = genai_prices.calc_price(
        extracted.usage,
        case.model,
        provider_id=provider,
        genai_request_timestamp=dt.datetime.fromtimestamp(NOW, dt.timezone.utc),
    )
    assert price.total_price == Decimal(case.bill)


@pytest.mark.parametrize("name", CASES)
def test_langchain_legacy_and_gateway_output_charges_the_bill(name: str) -> None:
    """Integrations that leave the provider's usage in ``llm_output`` (legacy LLMs,
    gateways): read by the same core rules."""
    case = CASES[name]
    llm_output = {"token_usage": _usage_part(case), "model_name": case.model}
    if "service_tier" in case.response:
        llm_output["service_tier"] = case.response["service_tier"]
    result = LLMResult(
        generations=[[ChatGeneration(message=AIMessage("ok"))]], llm_output=llm_output
    )
    outcome = read_outcome(result)
    assert outcome.usage == case.usage
    assert _commit(case, outcome.usage).cost_nanos == _expected_nanos(case.bill)


def test_langchain_openai_priority_and_cache_writes_through_the_real_converter() -> None:
    base = pytest.importorskip("langchain_openai.chat_models.base")
    for name in ("openai-priority", "openai-flex"):
        case = CASES[name]
        tier = case.response["service_tier"]
        metadata = base._create_usage_metadata(case.response["usage"], tier)
        message = AIMessage("ok", usage_metadata=metadata, response_metadata={"service_tier": tier})
        outcome = read_outcome(LLMResult(generations=[[ChatGeneration(message=message)]]))
        assert outcome.usage == case.usage
        assert _commit(case, outcome.usage).cost_nanos == _expected_nanos(case.bill)
    # ChatOpenAI names the tier inside usage_metadata too, when nothing else says it.
    metadata = base._create_usage_metadata(CASES["openai-priority"].response["usage"], "priority")
    assert usage_from_mapping(dict(metadata)) == CASES["openai-priority"].usage
    case = CASES["openrouter-cache-write"]
    metadata = base._create_usage_metadata(case.response["usage"], None)
    assert usage_from_mapping(dict(metadata)) == case.usage


def test_langchain_anthropic_1h_cache_and_web_search_through_the_real_converter() -> None:
    chat_models = pytest.importorskip("langchain_anthropic.chat_models")
    anthropic_usage = pytest.importorskip("anthropic.types").Usage
    for name in ("anthropic-1h-cache", "anthropic-web-search"):
        case = CASES[name]
        raw = anthropic_usage.model_validate(case.response["usage"])
        metadata = chat_models._create_usage_metadata(raw)
        message = AIMessage("ok", usage_metadata=metadata)
        # ChatAnthropic leaves the raw usage (web searches, service tier) in llm_output.
        llm_output = {"usage": raw.model_dump(), "model_name": case.model}
        outcome = read_outcome(
            LLMResult(generations=[[ChatGeneration(message=message)]], llm_output=llm_output)
        )
        assert outcome.usage == case.usage
        assert _commit(case, outcome.usage).cost_nanos == _expected_nanos(case.bill)


@pytest.mark.parametrize("name", CASES)
def test_llamaindex_raw_response_charges_the_bill(name: str) -> None:
    case = CASES[name]
    response = ChatResponse(message=ChatMessage(role="assistant", content="ok"), raw=case.response)
    usage = usage_from_response(response)
    assert usage == case.usage
    assert _commit(case, usage).cost_nanos == _expected_nanos(case.bill)


ZERO_USAGES = [
    {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    {"input_tokens": 0, "output_tokens": 0},
    {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},  # LangChain usage_metadata
    {"promptTokenCount": 0, "candidatesTokenCount": 0},
    {"usage": {"prompt_tokens": 0, "completion_tokens": 0}, "service_tier": "default"},
]


@pytest.mark.parametrize("payload", ZERO_USAGES)
def test_all_zero_usage_is_no_usage_reported_on_every_path(payload: dict[str, Any]) -> None:
    assert usage_from_mapping(payload) is None
    response = ChatResponse(message=ChatMessage(role="assistant", content="ok"), raw=payload)
    assert usage_from_response(response) is None
    message = AIMessage(
        "ok", usage_metadata={"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    )
    result = LLMResult(
        generations=[[ChatGeneration(message=message)]], llm_output={"token_usage": payload}
    )
    assert read_outcome(result).usage is None
    # A commit without usage records the reservation's estimate, marked estimated.
    budget = Budget(BudgetScope(name="z"), clock=lambda: NOW)
    record = budget.reserve("gpt-4o", 100, 50).commit(usage_from_mapping(payload))
    assert record.estimated and record.input_tokens == 100 and record.cost_nanos > 0


def test_reasoning_reported_beside_the_completion_is_billed_as_output() -> None:
    """xAI's completion_tokens leaves reasoning out (its reasoning exceeds it); Perplexity
    reports reasoning and citation tokens and search queries apart."""
    xai = {
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "completion_tokens_details": {"reasoning_tokens": 300},
    }
    assert usage_from_mapping(xai) == Usage(100, 320, reasoning_tokens=300)
    perplexity = {
        "prompt_tokens": 100,
        "completion_tokens": 200,
        "reasoning_tokens": 30,
        "citation_tokens": 50,
        "num_search_queries": 2,
    }
    assert usage_from_mapping(perplexity) == Usage(100, 280, reasoning_tokens=30, web_searches=2)
    openai = {
        "prompt_tokens": 100,
        "completion_tokens": 300,
        "completion_tokens_details": {"reasoning_tokens": 200},
    }
    assert usage_from_mapping(openai) == Usage(100, 300, reasoning_tokens=200)


def test_batch_is_half_price_on_anthropic_and_openai() -> None:
    budget = Budget(BudgetScope(name="batch"), RateTable(on_unknown="raise"), clock=lambda: NOW)
    standard = budget.record("s", "claude-haiku-4-5", 10_000, 1_000)
    batch = budget.record("s", "claude-haiku-4-5", 10_000, 1_000, service_tier="batch")
    assert batch.cost_nanos * 2 == standard.cost_nanos
    assert (standard.price_tier, batch.price_tier) == ("standard", "batch")
    assert budget.record("s", "gpt-5", 1000, 100, service_tier="batch").cost == Decimal("0.001125")


def test_langchain_reserves_in_the_tier_the_request_asks_for() -> None:
    """ChatOpenAI(service_tier="flex") asks for flex: the hold is priced at flex rates; the
    response's tier (in usage_metadata and response_metadata) prices the commit."""
    from uuid import uuid4

    chat_openai = pytest.importorskip("langchain_openai").ChatOpenAI
    from agent_budget_callbacks.langchain import BudgetCallbackHandler

    holds = {}
    for tier in (None, "flex", "priority"):
        model = chat_openai(model="gpt-5", service_tier=tier, api_key="sk-test", max_tokens=1000)
        budget = Budget(
            BudgetScope(name="t", max_cost_per_day_usd=100), RateTable(), clock=lambda: NOW
        )
        handler = BudgetCallbackHandler(budget)
        run_id = uuid4()
        handler.on_chat_model_start(
            {},
            [[]],
            run_id=run_id,
            invocation_params=model._get_invocation_params(),
            metadata=model._get_ls_params(),
        )
        holds[tier] = budget.usage()["day:cost"].reserved
    assert holds["flex"] * 2 == holds[None] == holds["priority"] // 2
