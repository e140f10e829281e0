"""BudgetLLM on real LlamaIndex agents (FunctionAgent over llama-index OpenAI against the
project's loopback OpenAI server): the clamped max_tokens reaches the provider, a refusal
ends the run with a final answer, a fallback LLM answers instead, the model hears what is
left, streams are charged what they produced, and install() does not charge twice."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.llms import MockLLM
from llama_index.core.tools import FunctionTool
from llama_index.llms.openai import OpenAI as LlamaOpenAI

from agent_budget import Budget, BudgetExceededError, BudgetScope, ModelRates
from agent_budget.stores import Level
from agent_budget_callbacks.llamaindex import BudgetLLM, install

from .fake_llms import isolated_settings
from .provider_servers import OpenAIServer, Reply, ToolCall

pytestmark = [
    pytest.mark.filterwarnings("ignore::pydantic.PydanticDeprecatedSince20"),
    pytest.mark.filterwarnings("ignore::pydantic.PydanticDeprecatedSince211"),
]

BILL = {"input_tokens": 200, "output_tokens": 50, "cache_read_tokens": 0}
LOOP = Reply(tool_calls=(ToolCall("lookup", {"key": "next"}, "call_lookup"),), **BILL)
ANSWER = Reply(text="The chain ends here.", **BILL)
RATES = {
    "gpt-4o": ModelRates.per_million(input=10, output=40),
    "gpt-4o-mini": ModelRates.per_million(input=1, output=4),
}


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with isolated_settings(), OpenAIServer(default=LOOP) as srv:
        yield srv


def openai_llm(server: OpenAIServer, model: str = "gpt-4o", **kwargs: Any) -> LlamaOpenAI:
    kwargs.setdefault("max_tokens", 1000)
    return LlamaOpenAI(
        model=model,
        api_base=server.base_url,
        api_key="sk-test",
        max_retries=0,
        timeout=10,
        additional_kwargs={"stream_options": {"include_usage": True}},
        **kwargs,
    )


def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key}"


def run_agent(llm: Any, message: str = "Follow the chain of keys.") -> str:
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(fn=lookup)], llm=llm)

    async def run() -> Any:
        return await agent.run(user_msg=message)

    return str(asyncio.run(run()))


def sent_max_tokens(served: Any) -> int | None:
    body = served.body
    return body.get("max_completion_tokens") or body.get("max_tokens")


def test_a_runaway_agent_finishes_with_the_final_answer(server: OpenAIServer) -> None:
    budget = Budget(BudgetScope("agent", max_tokens_per_session=1_000), RATES)
    llm = BudgetLLM(openai_llm(server), budget, min_output_tokens=64)
    answer = run_agent(llm)
    assert "budget for this conversation is used up" in answer
    billed = len(server.ledger)
    assert billed >= 2  # it ran until the budget stopped it, then answered
    assert budget.usage()["session:tokens"].committed == 250 * billed
    assert budget.usage()["session:tokens"].reserved == 0
    # Every admitted request carried a cap the budget could hold.
    caps = [sent_max_tokens(s) for s in server.ledger]
    assert all(c is not None and 64 <= c <= 1000 for c in caps)
    assert caps[-1] < 1000  # the last ones were clamped


def test_clamped_max_tokens_reaches_the_provider(server: OpenAIServer) -> None:
    server.default = ANSWER
    budget = Budget(BudgetScope("agent", max_tokens_per_session=800), RATES)
    llm = BudgetLLM(openai_llm(server), budget)
    response = llm.chat([ChatMessage(role="user", content="hi")])
    assert str(response.message.content) == "The chain ends here."
    (served,) = server.ledger
    cap = sent_max_tokens(served)
    assert cap is not None and 64 <= cap < 800
    assert budget.usage()["session:tokens"].committed == 250


def test_on_exhausted_raise_raises_before_the_provider(server: OpenAIServer) -> None:
    budget = Budget(BudgetScope("agent", max_tokens_per_session=10), RATES)
    llm = BudgetLLM(openai_llm(server), budget, on_exhausted="raise")
    with pytest.raises(BudgetExceededError):
        llm.chat([ChatMessage(role="user", content="hi")])
    assert server.ledger == []


def test_a_cheaper_fallback_llm_answers_when_the_main_one_does_not_fit(
    server: OpenAIServer,
) -> None:
    server.default = ANSWER
    budget = Budget(BudgetScope("agent", max_cost_per_session_usd="0.003"), RATES)
    # gpt-4o: ~10 prompt tokens at $10/M + 64 out at $40/M fits; 1000 out does not, and
    # clamping is off, so only the fallback (1000 out at $4/M = $0.004... too) -> cap it.
    llm = BudgetLLM(
        openai_llm(server, max_tokens=200),
        budget,
        clamp=False,
        fallback_llm=openai_llm(server, model="gpt-4o-mini", max_tokens=200),
    )
    budget.record("", "gpt-4o-mini", 0, 500)  # $0.002 spent, $0.001 left
    llm.chat([ChatMessage(role="user", content="hi")])
    (served,) = server.ledger
    assert served.requested_model == "gpt-4o-mini"
    assert budget.records[-1].model == "gpt-4o-mini"


def test_the_model_is_told_what_is_left(server: OpenAIServer) -> None:
    server.default = ANSWER
    budget = Budget(BudgetScope("agent", max_tokens_per_session=10_000), RATES)
    budget.record("", "gpt-4o", 8_500, 0)
    llm = BudgetLLM(openai_llm(server, max_tokens=100), budget, note_below=0.2)
    llm.chat([ChatMessage(role="user", content="hi")])
    messages = server.ledger[0].body["messages"]
    assert messages[0]["role"] == "system" and "Budget note" in messages[0]["content"]


def test_install_and_budget_llm_together_charge_once(server: OpenAIServer) -> None:
    server.default = ANSWER
    budget = Budget(BudgetScope("agent", max_tokens_per_session=100_000), RATES)
    install(budget)
    llm = BudgetLLM(openai_llm(server), budget)
    llm.chat([ChatMessage(role="user", content="hi")])
    asyncio.run(llm.achat([ChatMessage(role="user", content="hi")]))
    assert [r.metadata["framework"] for r in budget.records] == ["llamaindex-agent"] * 2
    assert budget.usage()["session:tokens"].committed == 500


def test_a_stream_dropped_half_way_is_charged_what_it_produced(server: OpenAIServer) -> None:
    server.default = Reply(text="one two three four five six seven eight", **BILL)
    budget = Budget(BudgetScope("agent", max_tokens_per_session=100_000), RATES)
    llm = BudgetLLM(openai_llm(server), budget)
    stream = llm.stream_chat([ChatMessage(role="user", content="hi")])
    for index, _chunk in enumerate(stream):
        if index == 2:
            break
    stream.close()
    (record,) = budget.records
    assert record.metadata.get("partial") is True
    assert 0 < record.output_tokens < 50
    assert budget.usage()["session:tokens"].reserved == 0


class _RefusedAtOpen(MockLLM):
    """A client that sends its request before handing back the stream (llama-index's
    Anthropic does), against a provider that refuses the connection."""

    def stream_chat(self, messages: Any, **kwargs: Any) -> Any:
        raise ConnectionRefusedError("connection refused")

    async def astream_chat(self, messages: Any, **kwargs: Any) -> Any:
        raise ConnectionRefusedError("connection refused")

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        raise ConnectionRefusedError("connection refused")

    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        raise ConnectionRefusedError("connection refused")


def test_a_stream_that_fails_to_open_releases_its_hold() -> None:
    budget = Budget(BudgetScope("agent", max_tokens_per_session=5_000), RATES)
    llm = BudgetLLM(_RefusedAtOpen(max_tokens=1_000), budget, default_model="gpt-4o")
    hi = [ChatMessage(role="user", content="hi")]
    for _ in range(3):  # would use the whole budget up if each failure kept its hold
        with pytest.raises(ConnectionRefusedError):
            llm.stream_chat(hi)
        with pytest.raises(ConnectionRefusedError):
            asyncio.run(llm.astream_chat(hi))
        with pytest.raises(ConnectionRefusedError):
            llm.stream_complete("hi")
        with pytest.raises(ConnectionRefusedError):
            asyncio.run(llm.astream_complete("hi"))
    assert budget.usage().get("session:tokens") in (None, Level(0, 0))
    assert budget.records == []


def test_async_streams_commit_the_reported_usage(server: OpenAIServer) -> None:
    server.default = ANSWER
    budget = Budget(BudgetScope("agent", max_tokens_per_session=100_000), RATES)
    llm = BudgetLLM(openai_llm(server), budget)

    async def main() -> str:
        stream = await llm.astream_chat([ChatMessage(role="user", content="hi")])
        text = ""
        async for chunk in stream:
            text = str(chunk.message.content)
        return text

    assert asyncio.run(main()) == "The chain ends here."
    (record,) = budget.records
    assert (record.input_tokens, record.output_tokens, record.estimated) == (200, 50, False)


def test_bad_options_are_refused(server: OpenAIServer) -> None:
    budget = Budget(BudgetScope("agent"))
    with pytest.raises(TypeError, match="LlamaIndex LLM"):
        BudgetLLM("gpt-4o", budget)
    with pytest.raises(ValueError, match="on_exhausted"):
        BudgetLLM(openai_llm(server), budget, on_exhausted="explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="note_below"):
        BudgetLLM(openai_llm(server), budget, note_below=0)


def test_a_streaming_chat_engine_refusal_prints_no_thread_traceback() -> None:
    """Pinned: LlamaIndex's streaming chat engines write history in a thread that re-raises
    the refusal there (threading.excepthook prints it) and to the app from response_gen.
    install() keeps the first out of sight; other thread errors still reach the hook."""
    import threading

    from llama_index.core import Document, Settings, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.core.llms import MockLLM

    from agent_budget_callbacks.llamaindex import uninstall

    seen: list[Any] = []
    before = threading.excepthook
    threading.excepthook = seen.append
    try:
        with isolated_settings():
            Settings.llm = MockLLM(max_tokens=64)
            Settings.embed_model = MockEmbedding(embed_dim=8)
            index = VectorStoreIndex.from_documents([Document(text="Budgets refuse early.")])
            install(Budget(BudgetScope(name="x", max_tokens_per_session=10)), default_model="m")
            engine = index.as_chat_engine(chat_mode="context")
            response = engine.stream_chat("hello there")
            with pytest.raises(BudgetExceededError):
                for _token in response.response_gen:
                    pass
            failing = threading.Thread(target=lambda: 1 / 0)
            failing.start()
            failing.join()
            uninstall()
        assert threading.excepthook == seen.append
    finally:
        threading.excepthook = before
    assert [type(args.exc_value) for args in seen] == [ZeroDivisionError]
