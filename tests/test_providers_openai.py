"""The budget handlers on the real OpenAI clients (langchain-openai ``ChatOpenAI`` and
llama-index-llms-openai ``OpenAI``) against a local Chat Completions server.

The server's ledger is the ground truth: every recorded call must carry exactly the tokens
it billed (cached and reasoning tokens included) and cost exactly what the built-in table
charges for the dated snapshot the server reported. Errors the client retried must leave no
hold and no charge; a stream cut off half way must leave no hold.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from langchain_openai import ChatOpenAI
from llama_index.core.llms import ChatMessage
from llama_index.llms.openai import OpenAI as LlamaOpenAI

from agent_budget import Budget, BudgetScope, BudgetWarning
from agent_budget_callbacks.langchain import BudgetCallbackHandler
from agent_budget_callbacks.llamaindex import install

from .fake_llms import isolated_settings
from .provider_checks import (
    assert_budget_equals_ledger,
    assert_nothing_charged,
    check_record,
    multiply,
    only_record,
)
from .provider_checks import lc_call as shared_lc_call
from .provider_checks import li_call as shared_li_call
from .provider_servers import (
    CUT_OFF_ERRORS,
    OpenAIServer,
    Reply,
    ToolCall,
    builtin_price_nanos,
    held,
)

MODEL = "gpt-4o"
PROMPT = "What is six times seven?"
# Cached and reasoning tokens on every answer, so both must be read to match the ledger.
TEXT = Reply(input_tokens=1200, output_tokens=90, cache_read_tokens=1024, reasoning_tokens=30)
TOOL = Reply(
    tool_calls=(ToolCall("multiply", {"a": 6, "b": 7}, "call_mul"),),
    input_tokens=300,
    output_tokens=25,
    cache_read_tokens=128,
    reasoning_tokens=7,
)
LC_MODES = ["invoke", "stream", "ainvoke", "astream"]
LI_MODES = ["chat", "complete", "stream_chat", "stream_complete", "achat", "astream_chat"]


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(default=TEXT) as srv:
        yield srv


@pytest.fixture
def budget(clock: Any) -> Budget:
    return Budget(BudgetScope("openai-e2e", max_cost_per_session_usd=100), clock=clock)


assert_matches = functools.partial(check_record, family="gpt-4o")


# -- LangChain ChatOpenAI -------------------------------------------------------------------


def chat_openai(server: OpenAIServer, **kwargs: Any) -> ChatOpenAI:
    options: dict[str, Any] = {"max_retries": 1, "timeout": 10, "max_tokens": 256}
    options.update(kwargs)
    return ChatOpenAI(model=MODEL, base_url=server.base_url, api_key="sk-test", **options)


lc_call = functools.partial(shared_lc_call, prompt=PROMPT)


@pytest.mark.parametrize("mode", LC_MODES)
@pytest.mark.parametrize("reply", [TEXT, TOOL], ids=["text", "tool_call"])
def test_chat_openai_records_the_ledger_exactly(
    server: OpenAIServer, budget: Budget, mode: str, reply: Reply
) -> None:
    server.script(reply)
    model = chat_openai(server, stream_usage=True).bind_tools([multiply])
    message = lc_call(model, mode, BudgetCallbackHandler(budget))
    if reply.tool_calls:
        assert [c["name"] for c in message.tool_calls] == ["multiply"]  # type: ignore[attr-defined]
    [served] = server.ledger
    assert served.model == "gpt-4o-2024-08-06"
    assert served.stream is mode.endswith("stream")
    if served.stream:
        assert served.include_usage  # stream_usage=True asks for the usage chunk
    assert_matches(only_record(budget), served)
    assert_budget_equals_ledger(budget, server)


def test_chat_openai_prices_the_snapshot_that_answered(
    server: OpenAIServer, budget: Budget
) -> None:
    """Asked for gpt-4o, answered by the dearer 2024-05-13 snapshot: that is what is billed."""
    server.script(Reply(model="gpt-4o-2024-05-13", input_tokens=500, output_tokens=50))
    lc_call(chat_openai(server), "invoke", BudgetCallbackHandler(budget))
    [served] = server.ledger
    record = only_record(budget)
    assert record.cost_nanos == builtin_price_nanos("gpt-4o-2024-05-13", served.usage)
    assert record.cost_nanos != builtin_price_nanos("gpt-4o", served.usage)


def test_chat_openai_stream_without_usage_is_estimated(
    server: OpenAIServer, budget: Budget, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a custom base_url ChatOpenAI does not ask for stream usage: the record is the
    prompt estimate plus the counted reply, marked estimated, and a warning names the fix.
    ``stream_usage=True`` turns usage on."""
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_BASE", raising=False)
    # Pinned: usage is on by default only against api.openai.com.
    assert ChatOpenAI(model=MODEL, api_key="sk-test").stream_usage is True
    model = chat_openai(server)
    assert not model.stream_usage
    handler = BudgetCallbackHandler(budget)
    with pytest.warns(BudgetWarning, match="stream_usage=True"):
        message = lc_call(model, "stream", handler)
    [served] = server.ledger
    assert served.stream and not served.include_usage
    record = only_record(budget)
    assert record.estimated is True
    assert record.output_tokens == handler.calls.count(str(message.content))
    assert 0 < record.output_tokens < 256  # not the request's whole max_tokens
    assert held(budget) == 0


@pytest.mark.parametrize("mode", ["invoke", "stream", "ainvoke"])
@pytest.mark.parametrize("status", [429, 500])
def test_chat_openai_retried_errors_release_the_hold(
    server: OpenAIServer, budget: Budget, mode: str, status: int
) -> None:
    """The client retries once (max_retries=1) and gives up: nothing billed, nothing held."""
    server.fail(status, times=2)
    with pytest.raises(openai.APIStatusError) as caught:
        lc_call(chat_openai(server, stream_usage=True), mode, BudgetCallbackHandler(budget))
    assert caught.value.status_code == status
    assert [s.status for s in server.ledger] == [status, status]
    assert_nothing_charged(budget)


@pytest.mark.parametrize("status", [429, 500])
def test_chat_openai_error_then_success_charges_the_success_once(
    server: OpenAIServer, budget: Budget, status: int
) -> None:
    server.fail(status, times=1)
    lc_call(chat_openai(server), "invoke", BudgetCallbackHandler(budget))
    failed, ok = server.ledger
    assert failed.status == status and not failed.billed
    assert_matches(only_record(budget), ok)
    assert_budget_equals_ledger(budget, server)


@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_chat_openai_stream_cut_off_half_way(
    server: OpenAIServer, budget: Budget, mode: str
) -> None:
    """The connection drops after 4 of 9 text pieces. The usage chunk never arrives, so the
    provider's own count is lost; the handler must charge the prompt and the text received
    (the provider billed them) and hold nothing afterwards."""
    server.script(
        Reply(
            text="one two three four five six seven eight nine",
            input_tokens=400,
            output_tokens=9,
            cut_after=4,
        )
    )
    with pytest.raises(CUT_OFF_ERRORS):
        lc_call(chat_openai(server, stream_usage=True), mode, BudgetCallbackHandler(budget))
    [served] = server.ledger
    assert served.cut_off and served.usage.output_tokens == 4
    assert held(budget) == 0
    record = only_record(budget)
    assert record.output_tokens >= 1  # the words that arrived were billed
    assert record.input_tokens > 0


# -- LlamaIndex OpenAI ----------------------------------------------------------------------


@pytest.fixture
def li_settings() -> Iterator[None]:
    with isolated_settings():
        yield


def llama_openai(server: OpenAIServer, *, stream_usage: bool = True, **kwargs: Any) -> Any:
    extra = {"stream_options": {"include_usage": True}} if stream_usage else {}
    return LlamaOpenAI(
        model=MODEL,
        api_base=server.base_url,
        api_key="sk-test",
        max_retries=1,
        timeout=10,
        max_tokens=256,
        additional_kwargs=extra,
        **kwargs,
    )


li_call = functools.partial(shared_li_call, prompt=PROMPT)


@pytest.mark.usefixtures("li_settings")
@pytest.mark.parametrize("mode", LI_MODES)
@pytest.mark.parametrize("reply", [TEXT, TOOL], ids=["text", "tool_call"])
def test_llamaindex_openai_records_the_ledger_exactly(
    server: OpenAIServer, budget: Budget, mode: str, reply: Reply
) -> None:
    server.script(reply)
    llm = llama_openai(server)  # created before install(): install() still reaches it
    install(budget)
    li_call(llm, mode)
    [served] = server.ledger
    assert served.model == "gpt-4o-2024-08-06"
    assert served.stream is ("stream" in mode)
    assert served.include_usage is ("stream" in mode)
    assert_matches(only_record(budget), served)
    assert_budget_equals_ledger(budget, server)


@pytest.mark.usefixtures("li_settings")
def test_llamaindex_openai_prices_the_snapshot_that_answered(
    server: OpenAIServer, budget: Budget
) -> None:
    server.script(Reply(model="gpt-4o-2024-05-13", input_tokens=500, output_tokens=50))
    install(budget)
    li_call(llama_openai(server), "chat")
    [served] = server.ledger
    record = only_record(budget)
    assert record.cost_nanos == builtin_price_nanos("gpt-4o-2024-05-13", served.usage)


@pytest.mark.usefixtures("li_settings")
def test_llamaindex_openai_stream_without_usage_is_estimated(
    server: OpenAIServer, budget: Budget
) -> None:
    """llama-index OpenAI never asks for stream usage unless ``additional_kwargs=
    {"stream_options": {"include_usage": True}}`` is set (it drops the option on
    non-streaming calls): without it the record cannot be the provider's count."""
    install(budget)
    li_call(llama_openai(server, stream_usage=False), "stream_chat")
    [served] = server.ledger
    assert served.stream and not served.include_usage
    record = only_record(budget)
    assert record.estimated is True
    assert held(budget) == 0


@pytest.mark.usefixtures("li_settings")
@pytest.mark.parametrize("mode", ["chat", "stream_chat", "achat"])
@pytest.mark.parametrize("status", [429, 500])
def test_llamaindex_openai_retried_errors_release_the_hold(
    server: OpenAIServer, budget: Budget, mode: str, status: int
) -> None:
    """max_retries=1: one tenacity attempt whose OpenAI client retries once, then fails."""
    server.fail(status, times=2)
    install(budget)
    with pytest.raises(openai.APIStatusError) as caught:
        li_call(llama_openai(server), mode)
    assert caught.value.status_code == status
    assert [s.status for s in server.ledger] == [status, status]
    assert budget.records == []
    assert held(budget) == 0


@pytest.mark.usefixtures("li_settings")
@pytest.mark.parametrize("status", [429, 500])
def test_llamaindex_openai_error_then_success_charges_the_success_once(
    server: OpenAIServer, budget: Budget, status: int
) -> None:
    server.fail(status, times=1)
    install(budget)
    li_call(llama_openai(server), "chat")
    failed, ok = server.ledger
    assert not failed.billed
    assert_matches(only_record(budget), ok)
    assert_budget_equals_ledger(budget, server)


@pytest.mark.usefixtures("li_settings")
@pytest.mark.parametrize("mode", ["stream_chat", "astream_chat"])
def test_llamaindex_openai_stream_cut_off_half_way(
    server: OpenAIServer, budget: Budget, mode: str
) -> None:
    server.script(
        Reply(
            text="one two three four five six seven eight nine",
            input_tokens=400,
            output_tokens=9,
            cut_after=4,
        )
    )
    install(budget)
    with pytest.raises(CUT_OFF_ERRORS):
        li_call(llama_openai(server), mode)
    [served] = server.ledger
    assert served.cut_off and served.usage.output_tokens == 4
    assert held(budget) == 0
    record = only_record(budget)
    assert record.output_tokens >= 1
    assert record.input_tokens > 0


def test_chat_openai_stream_abandoned_by_the_consumer(server: OpenAIServer, budget: Budget) -> None:
    """The caller stops reading after two chunks: LangChain ends the run with GeneratorExit
    and the handler charges the prompt plus the text received; nothing stays held. (The
    local server has already sent and billed the whole answer; a real provider stops
    generating when the connection closes, so its bill lies in between.)"""
    stream = chat_openai(server, stream_usage=True).stream(
        PROMPT, config={"callbacks": [BudgetCallbackHandler(budget)]}
    )
    for _ in range(2):
        next(stream)
    stream.close()
    assert len(server.ledger) == 1
    record = only_record(budget)
    assert record.metadata.get("partial") is True
    assert 0 < record.output_tokens <= TEXT.output_tokens
    assert held(budget) == 0


@pytest.mark.usefixtures("li_settings")
def test_llamaindex_openai_stream_abandoned_by_the_consumer(
    server: OpenAIServer, budget: Budget
) -> None:
    install(budget)
    stream = llama_openai(server).stream_chat([ChatMessage(role="user", content=PROMPT)])
    for _ in range(2):
        next(stream)
    stream.close()
    record = only_record(budget)
    assert 0 < record.output_tokens <= TEXT.output_tokens
    assert held(budget) == 0


@pytest.mark.usefixtures("li_settings")
def test_llamaindex_openai_stream_never_read_expires(
    server: OpenAIServer, budget: Budget, clock: Any
) -> None:
    """``stream_chat`` reserves at once but sends its request only when read; a stream
    never read sends nothing, fires no end event, and its hold expires after hold_ttl."""
    install(budget)
    stream = llama_openai(server).stream_chat([ChatMessage(role="user", content=PROMPT)])
    assert held(budget) > 0
    assert server.ledger == []
    clock.advance(budget.hold_ttl + 1)
    assert held(budget) == 0
    assert budget.records == []
    del stream
