"""What the handler records: the provider's usage (cache and reasoning details included),
priced for the model that answered, the same whether streamed or not; estimates when no
usage is reported; nothing for cache hits; legacy multi-prompt usage counted once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult, LLMResult

from agent_budget import (
    AlertLevel,
    Budget,
    BudgetAlert,
    BudgetExceededError,
    BudgetScope,
    BudgetWarning,
    ModelRates,
    count_messages,
)
from agent_budget_callbacks.langchain import DEFAULT_MAX_OUTPUT_TOKENS, BudgetCallbackHandler
from agent_budget_callbacks.langchain.payload import (
    completions,
    max_output_tokens,
    read_outcome,
    requested_model,
)

from .fake_chat_models import Bill, FakeChatAnthropic, FakeChatOpenAI, FakeOpenAILLM
from .provider_checks import record_shape

LEGACY_RATES = {"gpt-3.5-turbo-instruct": ModelRates.per_million("1.50", "2.00")}


class WordCounter:
    """Deterministic token counter for tests: one token per whitespace-separated word."""

    name = "words"

    def count_text(self, text: str) -> int:
        return len(text.split())


def roomy(clock: Any, **kwargs: Any) -> Budget:
    return Budget(
        BudgetScope(name="acct", max_tokens_per_session=10_000_000, **kwargs),
        LEGACY_RATES,
        clock=clock,
    )


# (factory, family recorded, exact cost in nano-USD, cache read, cache write, reasoning).
# Prices per 1M tokens from the built-in table: gpt-4o 2.50 / cached 1.25 / out 10;
# gpt-4o-2024-05-13 5 / 15; gpt-4o-mini 0.15 / 0.075 / 0.60; claude-3-5-sonnet 3 / read
# 0.30 / write 3.75 / out 15; claude-sonnet-4-5 3 / 15.
CASES: dict[str, tuple[Any, str, int, int, int, int]] = {
    # 600*2.5 + 400*1.25 + 300*10 = 5000 micro-USD
    "openai-cache-reasoning": (
        lambda **kw: FakeChatOpenAI(bill=Bill(1000, 300, cache_read=400, reasoning=100), **kw),
        "gpt-4o",
        5_000_000,
        400,
        0,
        100,
    ),
    # answered by the May 2024 snapshot, which has its own (higher) price: 1000*5 + 300*15
    "openai-dated-snapshot-price": (
        lambda **kw: FakeChatOpenAI(answered_model="gpt-4o-2024-05-13", bill=Bill(1000, 300), **kw),
        "gpt-4o",
        9_500_000,
        0,
        0,
        0,
    ),
    # 600*0.15 + 400*0.075 + 300*0.6 = 300 micro-USD
    "openai-mini": (
        lambda **kw: FakeChatOpenAI(
            model="gpt-4o-mini",
            answered_model="gpt-4o-mini-2024-07-18",
            bill=Bill(1000, 300, cache_read=400),
            **kw,
        ),
        "gpt-4o-mini",
        300_000,
        400,
        0,
        0,
    ),
    # 1000*3 + 600*0.30 + 400*3.75 + 200*15 = 7680 micro-USD
    "anthropic-cache-read-and-write": (
        lambda **kw: FakeChatAnthropic(
            bill=Bill(2000, 200, cache_read=600, cache_creation=400), **kw
        ),
        "claude-3-5-sonnet",
        7_680_000,
        600,
        400,
        0,
    ),
    # 1000*3 + 500*15 = 10500 micro-USD; thinking tokens are output
    "anthropic-reasoning": (
        lambda **kw: FakeChatAnthropic(
            model="claude-sonnet-4-5-20250929", bill=Bill(1000, 500, reasoning=300), **kw
        ),
        "claude-sonnet-4-5",
        10_500_000,
        0,
        0,
        300,
    ),
}


async def _astream_all(model: Any, config: Any) -> None:
    async for _ in model.astream("hello there", config=config):
        pass


def _run_all_modes(model: Any, handler: BudgetCallbackHandler) -> None:
    config: Any = {"callbacks": [handler]}
    model.invoke("hello there", config=config)
    list(model.stream("hello there", config=config))
    asyncio.run(model.ainvoke("hello there", config=config))
    asyncio.run(_astream_all(model, config))


@pytest.mark.parametrize("stream_usage", ["last", "split"])
@pytest.mark.parametrize("case", list(CASES))
def test_records_equal_what_the_provider_reported(clock: Any, case: str, stream_usage: str) -> None:
    factory, family, nanos, cache_read, cache_write, reasoning = CASES[case]
    budget = roomy(clock)
    model = factory(stream_usage=stream_usage)
    bill: Bill = model.bill
    _run_all_modes(model, BudgetCallbackHandler(budget))
    records = budget.records
    assert len(records) == 4 == model.calls.value
    expected = (
        family,
        bill.input_tokens,
        bill.output_tokens,
        cache_read,
        cache_write,
        reasoning,
        nanos,
        False,
    )
    # invoke, stream, ainvoke and astream record the same thing
    assert [record_shape(r) for r in records] == [expected] * 4
    summary = budget.summary(exact=True)
    assert summary["session"]["tokens"] == 4 * bill.total
    assert summary["session"]["reserved_tokens"] == 0
    assert summary["per_model"][family]["tokens"] == 4 * bill.total
    assert summary["per_model"][family]["cost_usd"] * 10**9 == 4 * nanos


def test_per_model_totals_across_providers(clock: Any) -> None:
    budget = roomy(clock)
    handler = BudgetCallbackHandler(budget)
    for case in CASES.values():
        case[0]().invoke("hi", config={"callbacks": [handler]})
    per_model = budget.summary()["per_model"]
    assert per_model["gpt-4o"]["tokens"] == 1300 + 1300
    assert per_model["gpt-4o"]["cost_usd"] == pytest.approx(0.0145)
    assert per_model["gpt-4o-mini"]["cost_usd"] == pytest.approx(0.0003)
    assert per_model["claude-3-5-sonnet"]["cost_usd"] == pytest.approx(0.00768)
    assert per_model["claude-sonnet-4-5"]["tokens"] == 1500


def test_anthropic_cache_write_with_ttl_breakdown() -> None:
    meta = {
        "input_tokens": 2000,
        "output_tokens": 200,
        "total_tokens": 2200,
        "input_token_details": {
            "cache_read": 600,
            "cache_creation": 0,
            "ephemeral_5m_input_tokens": 400,
            "ephemeral_1h_input_tokens": 0,
        },
    }
    outcome = read_outcome(
        LLMResult(
            generations=[[ChatGeneration(message=AIMessage(content="x", usage_metadata=meta))]]
        )
    )  # type: ignore[arg-type]
    assert outcome.usage is not None
    assert outcome.usage.cache_write_tokens == 400


def test_streaming_usage_sums_to_the_bill_and_is_not_double_counted(clock: Any) -> None:
    budget = roomy(clock)
    model = FakeChatAnthropic(bill=Bill(900, 90, cache_read=100), stream_usage="split")
    chunks = list(model.stream("hi", config={"callbacks": [BudgetCallbackHandler(budget)]}))
    reported = [c.usage_metadata for c in chunks if c.usage_metadata]
    assert len(reported) == 2  # input on the first chunk, output on the last
    assert sum(u["input_tokens"] for u in reported) == 900
    assert sum(u["output_tokens"] for u in reported) == 90
    (record,) = budget.records
    assert (record.input_tokens, record.output_tokens, record.cache_read_tokens) == (900, 90, 100)


# -- model names ---------------------------------------------------------------------------


def test_reservation_uses_the_requested_model_including_bind_overrides(clock: Any) -> None:
    budget = Budget(BudgetScope(name="m", max_tokens_per_model={"gpt-4o-mini": 100}), clock=clock)
    handler = BudgetCallbackHandler(budget)
    model = FakeChatOpenAI(answered_model=None)
    model.invoke("hi", config={"callbacks": [handler]})  # gpt-4o: no per-model cap
    with pytest.raises(BudgetExceededError) as info:
        model.bind(model="gpt-4o-mini").invoke("hi", config={"callbacks": [handler]})
    assert info.value.limit_type == "model_gpt-4o-mini_tokens"
    assert model.calls.value == 1


def test_commit_uses_the_model_that_answered(clock: Any) -> None:
    budget = roomy(clock)
    model = FakeChatOpenAI(
        model="gpt-4o", answered_model="gpt-4o-mini-2024-07-18", bill=Bill(1000, 0)
    )
    model.invoke("hi", config={"callbacks": [BudgetCallbackHandler(budget)]})
    (record,) = budget.records
    assert record.model == "gpt-4o-mini"
    assert record.cost_nanos == 150_000  # 1000 * 0.15 per 1M


def test_requested_model_lookup_order() -> None:
    serialized = {"kwargs": {"model_name": "from-serialized"}}
    params = {"model": "from-params", "model_name": "from-params-2"}
    assert requested_model(serialized, {"ls_model_name": "from-ls"}, params) == "from-ls"
    assert requested_model(serialized, {}, params) == "from-params"
    assert requested_model(serialized, {}, {"model_name": "n"}) == "n"
    assert requested_model(serialized, {"ls_model_name": ""}, {}) == "from-serialized"
    assert requested_model({"kwargs": {"model_id": "bedrock-id"}}, {}, {}) == "bedrock-id"
    assert requested_model(None, {}, {}) is None


def test_max_output_tokens_lookup_order() -> None:
    assert max_output_tokens({"ls_max_tokens": 10}, {"max_tokens": 20}) == 10
    assert max_output_tokens({"ls_max_tokens": None}, {"max_tokens": 20}) == 20
    assert max_output_tokens({}, {"max_completion_tokens": 30}) == 30
    assert max_output_tokens({}, {"max_output_tokens": 40}) == 40
    assert max_output_tokens({}, {"max_new_tokens": 50}) == 50
    assert max_output_tokens({}, {"max_tokens": True}) is None
    assert max_output_tokens({}, {}) is None
    assert completions({"max_tokens": 20, "n": 3}) == 3
    assert completions({}) == 1


def _held_during_call(budget: Budget, model: Any, seen: list[int]) -> None:
    """Make ``model`` note the tokens held in ``budget`` while it is being called."""
    model.before_call = lambda: seen.append(budget.summary()["session"]["reserved_tokens"])


def test_reservation_holds_prompt_estimate_plus_output_cap(clock: Any) -> None:
    budget = roomy(clock)
    counter = WordCounter()
    handler = BudgetCallbackHandler(budget, counter=counter)
    prompt = count_messages([("human", "one two three")], counter)
    seen: list[int] = []
    capped = FakeChatOpenAI(max_tokens=50)
    _held_during_call(budget, capped, seen)
    capped.invoke("one two three", config={"callbacks": [handler]})
    uncapped = FakeChatOpenAI()
    _held_during_call(budget, uncapped, seen)
    uncapped.invoke("one two three", config={"callbacks": [handler]})
    bound = FakeChatOpenAI()
    _held_during_call(budget, bound, seen)
    bound.bind(max_tokens=7).invoke("one two three", config={"callbacks": [handler]})
    assert seen == [prompt + 50, prompt + DEFAULT_MAX_OUTPUT_TOKENS, prompt + 7]
    assert budget.summary()["session"]["reserved_tokens"] == 0


def test_bound_tool_schemas_count_as_input(clock: Any) -> None:
    budget = roomy(clock)
    handler = BudgetCallbackHandler(budget, counter=WordCounter(), default_max_tokens=0)
    seen: list[int] = []
    plain = FakeChatOpenAI()
    _held_during_call(budget, plain, seen)
    plain.invoke("hi", config={"callbacks": [handler]})

    def lookup(city: str) -> str:
        """Look up the weather forecast for a city by its name."""
        return city

    tooled = FakeChatOpenAI()
    _held_during_call(budget, tooled, seen)
    tooled.bind_tools([lookup]).invoke("hi", config={"callbacks": [handler]})
    assert seen[1] > seen[0]


# -- no usage, cache hits, duplicates, legacy batches -------------------------------------


def test_no_reported_usage_commits_the_prompt_estimate_and_counted_reply(clock: Any) -> None:
    """A provider that reports no usage is charged the prompt estimate plus the counted
    reply (marked estimated), not the whole output hold, and warns once per model with the
    setting that fixes it."""
    budget = roomy(clock)
    handler = BudgetCallbackHandler(budget, counter=WordCounter(), default_model="gpt-4o")
    model = GenericFakeChatModel(messages=iter([AIMessage("hi there")] * 4))
    with pytest.warns(BudgetWarning, match="stream_usage=True") as caught:
        model.invoke("one two", config={"callbacks": [handler]})
        model.invoke("one two", config={"callbacks": [handler]})
    assert sum("without provider usage" in str(w.message) for w in caught) == 1
    record = budget.records[0]
    assert record.estimated and record.metadata["usage_source"] == "counted"
    assert record.model == "gpt-4o"
    assert record.input_tokens == count_messages([("human", "one two")], WordCounter())
    assert record.output_tokens == 2 < DEFAULT_MAX_OUTPUT_TOKENS
    openai_without_usage = FakeChatOpenAI(bill=None, max_tokens=64)
    reply = openai_without_usage.invoke("x", config={"callbacks": [handler]})
    assert budget.records[-1].estimated
    assert budget.records[-1].output_tokens == WordCounter().count_text(str(reply.content))


def test_model_with_no_name_is_priced_by_class_name_with_a_warning(clock: Any) -> None:
    budget = roomy(clock)
    model = GenericFakeChatModel(messages=iter([AIMessage("hi")]))
    with pytest.warns(BudgetWarning, match="GenericFakeChatModel"):
        model.invoke("x", config={"callbacks": [BudgetCallbackHandler(budget)]})
    assert budget.records[0].model == "genericfakechatmodel"


class _NoUsageMetadataOpenAI(FakeChatOpenAI):
    def _usage_metadata(self, bill: Bill) -> Any:
        return None


class _NoUsageMetadataAnthropic(FakeChatAnthropic):
    def _usage_metadata(self, bill: Bill) -> Any:
        return None


@pytest.mark.parametrize("cls", [_NoUsageMetadataOpenAI, _NoUsageMetadataAnthropic])
def test_llm_output_usage_is_the_fallback(clock: Any, cls: Any) -> None:
    budget = roomy(clock)
    bill = Bill(1000, 300, cache_read=400)
    cls(bill=bill).invoke("hi", config={"callbacks": [BudgetCallbackHandler(budget)]})
    (record,) = budget.records
    assert not record.estimated
    assert (record.input_tokens, record.output_tokens, record.cache_read_tokens) == (1000, 300, 400)


class _TwoChoicesOpenAI(FakeChatOpenAI):
    """n=2: ChatOpenAI copies the call's whole usage onto each choice's message."""

    def _result(self, kwargs: dict[str, Any]) -> ChatResult:
        one = super()._result(kwargs)
        twin = ChatGeneration(message=one.generations[0].message.model_copy())
        return ChatResult(generations=[one.generations[0], twin], llm_output=one.llm_output)


def test_usage_copied_on_every_choice_is_counted_once(clock: Any) -> None:
    budget = roomy(clock)
    _TwoChoicesOpenAI(bill=Bill(100, 40)).invoke(
        "hi", config={"callbacks": [BudgetCallbackHandler(budget)]}
    )
    (record,) = budget.records
    assert record.total_tokens == 140


def test_flatten_reports_a_generate_calls_usage_on_its_first_run() -> None:
    """Pins LLMResult.flatten(): the first run keeps token_usage, the others get {}."""
    result = FakeOpenAILLM(bill=Bill(10, 5)).generate(["a", "b", "c"])
    flat = result.flatten()
    assert [f.llm_output["token_usage"] for f in flat if f.llm_output] == [
        {"prompt_tokens": 30, "completion_tokens": 15, "total_tokens": 45},
        {},
        {},
    ]


@pytest.mark.parametrize("how", ["generate", "batch", "agenerate", "abatch"])
def test_legacy_multi_prompt_usage_is_counted_once(clock: Any, how: str) -> None:
    budget = roomy(clock)
    handler = BudgetCallbackHandler(budget)
    llm = FakeOpenAILLM(bill=Bill(10, 5))
    prompts = ["a", "b", "c"]
    if how == "generate":
        llm.generate(prompts, callbacks=[handler])
    elif how == "batch":
        llm.batch(prompts, config={"callbacks": [handler]})
    elif how == "agenerate":
        asyncio.run(llm.agenerate(prompts, callbacks=[handler]))
    else:
        asyncio.run(llm.abatch(prompts, config={"callbacks": [handler]}))
    assert llm.calls.value == 1 and llm.prompts_seen.value == 3
    (record,) = budget.records  # the whole request's usage, on the first run
    assert (record.input_tokens, record.output_tokens, record.estimated) == (30, 15, False)
    summary = budget.summary()["session"]
    assert summary["tokens"] == 45 and summary["reserved_tokens"] == 0
    assert handler.open_runs == 0


def test_single_run_with_empty_token_usage_commits_the_counted_estimate(clock: Any) -> None:
    budget = roomy(clock)
    with pytest.warns(BudgetWarning, match="without provider usage"):
        reply = FakeOpenAILLM(bill=None, max_tokens=20).invoke(
            "one", config={"callbacks": [BudgetCallbackHandler(budget, counter=WordCounter())]}
        )
    (record,) = budget.records
    assert record.estimated
    assert (record.input_tokens, record.output_tokens) == (1, WordCounter().count_text(reply))


class _Starts(BaseCallbackHandler):
    def __init__(self) -> None:
        self.starts = 0
        self.ends: list[LLMResult] = []

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        self.starts += 1

    def on_llm_start(self, *args: Any, **kwargs: Any) -> None:
        self.starts += 1

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        self.ends.append(response)


def test_chat_cache_hit_costs_nothing(clock: Any) -> None:
    budget = roomy(clock)
    handler = BudgetCallbackHandler(budget)
    seen = _Starts()
    model = FakeChatOpenAI(cache=InMemoryCache(), bill=Bill(100, 10))
    for _ in range(3):
        model.invoke("same question", config={"callbacks": [handler, seen]})
    assert model.calls.value == 1
    # Pinned: a cache hit fires start and end; the cached message keeps the original
    # call's usage and LangChain adds total_cost = 0, which is how a hit is recognised.
    assert seen.starts == 3 and len(seen.ends) == 3
    cached = seen.ends[-1].generations[0][0].message  # type: ignore[attr-defined]
    assert cached.usage_metadata["input_tokens"] == 100
    assert cached.usage_metadata["total_cost"] == 0
    assert len(budget.records) == 1
    summary = budget.summary()["session"]
    assert summary["tokens"] == 110 and summary["reserved_tokens"] == 0


def test_legacy_cache_hit_fires_no_callback(clock: Any) -> None:
    budget = roomy(clock)
    seen = _Starts()
    llm = FakeOpenAILLM(cache=InMemoryCache(), bill=Bill(10, 5))
    for _ in range(3):
        llm.invoke("same", config={"callbacks": [BudgetCallbackHandler(budget), seen]})
    # Pinned: BaseLLM starts runs only for prompts missing from the cache.
    assert llm.calls.value == 1 and seen.starts == 1
    assert budget.summary()["session"]["tokens"] == 15


# -- alerts ------------------------------------------------------------------------------


def test_soft_and_critical_alerts_reach_the_budget_callbacks(clock: Any) -> None:
    budget = Budget(
        BudgetScope(name="alerts", max_tokens_per_session=1000, alert_at_pct=0.5), clock=clock
    )
    alerts: list[BudgetAlert] = []
    budget.on_alert(alerts.append)
    handler = BudgetCallbackHandler(budget, default_max_tokens=10)
    model = FakeChatOpenAI(bill=Bill(500, 100))
    model.invoke("hi", config={"callbacks": [handler]})
    assert [a.level for a in alerts] == [AlertLevel.WARNING]
    model.invoke("hi", config={"callbacks": [handler]})
    assert alerts[-1].level is AlertLevel.CRITICAL  # 1200 > 1000, recorded anyway
    with pytest.raises(BudgetExceededError):
        model.invoke("hi", config={"callbacks": [handler]})
    assert model.calls.value == 2
