"""The budget handlers on the real Anthropic clients (langchain-anthropic ``ChatAnthropic``
and llama-index-llms-anthropic ``Anthropic``) against a local Messages API server.

Anthropic reports ``input_tokens`` without the cached part, and cache reads and cache writes
separately; each is billed at its own rate. The records must add them back up to exactly
the server's ledger and price them per kind for the dated snapshot the server reported.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from importlib.metadata import version
from typing import Any

import anthropic
import pytest
from langchain_anthropic import ChatAnthropic

from agent_budget import Budget, BudgetScope, BudgetWarning, usage_from_mapping
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
    AnthropicServer,
    Reply,
    ToolCall,
    builtin_price_nanos,
    held,
)

# anthropic 2.x warns that claude-sonnet-4-5 reaches end of life in November 2026.
pytestmark = pytest.mark.filterwarnings("ignore:The model 'claude-sonnet-4-5' is deprecated")

MODEL = "claude-sonnet-4-5"
SNAPSHOT = "claude-sonnet-4-5-20250929"
PROMPT = "What is six times seven?"
# Cache reads, cache writes and thinking tokens on every answer.
TEXT = Reply(
    input_tokens=3000,
    output_tokens=120,
    cache_read_tokens=2048,
    cache_write_tokens=512,
    reasoning_tokens=40,
)
TOOL = Reply(
    tool_calls=(ToolCall("multiply", {"a": 6, "b": 7}, "toolu_mul"),),
    input_tokens=700,
    output_tokens=45,
    cache_read_tokens=256,
    cache_write_tokens=128,
)
LC_MODES = ["invoke", "stream", "ainvoke", "astream"]
LI_MODES = ["chat", "complete", "stream_chat", "stream_complete", "achat", "astream_chat"]

# llama-index-llms-anthropic 0.12.3 passes ``temperature`` to ``messages.create`` (removed
# in anthropic 1.0) and instantiates ``MessageParam`` (a Union since anthropic 2.0): it
# works only with anthropic < 1.
_ANTHROPIC_MAJOR = int(version("anthropic").split(".")[0])
li_anthropic_compatible = pytest.mark.xfail(
    _ANTHROPIC_MAJOR >= 1,
    reason=f"llama-index-llms-anthropic 0.12.3 needs anthropic<1 (found {version('anthropic')})",
    raises=TypeError,
    strict=True,
)


# Core gap, reported: usage_from_mapping does not read Anthropic's
# output_tokens_details.thinking_tokens, so llama-index-llms-anthropic records (which carry
# the raw SDK usage) lose the reasoning breakdown; ChatAnthropic maps it itself.
_PROBE = usage_from_mapping(
    {"input_tokens": 1, "output_tokens": 2, "output_tokens_details": {"thinking_tokens": 1}}
)
_THINKING_READ = _PROBE is not None and _PROBE.reasoning_tokens == 1
LI_TEXT = pytest.param(
    TEXT,
    id="text",
    marks=pytest.mark.xfail(
        _ANTHROPIC_MAJOR < 1 and not _THINKING_READ,
        reason="core usage_from_mapping ignores output_tokens_details.thinking_tokens",
        raises=AssertionError,
        strict=True,
    ),
)


@pytest.fixture
def server() -> Iterator[AnthropicServer]:
    with AnthropicServer(default=TEXT) as srv:
        yield srv


@pytest.fixture
def budget(clock: Any) -> Budget:
    return Budget(BudgetScope("anthropic-e2e", max_cost_per_session_usd=100), clock=clock)


assert_matches = functools.partial(check_record, family=MODEL)


def test_builtin_price_counts_each_input_kind_at_its_rate() -> None:
    """Pinned: the expected cost is not a flat input rate (cache reads are cheaper, cache
    writes dearer), so a record that lost the split would not match it."""
    usage = TEXT.usage
    flat = usage.__class__(usage.input_tokens, usage.output_tokens)
    assert builtin_price_nanos(SNAPSHOT, usage) != builtin_price_nanos(SNAPSHOT, flat)
    # 440 uncached x 3.00 + 2048 x 0.30 + 512 x 3.75 + 120 x 15.00 per 1M tokens
    assert (
        builtin_price_nanos(SNAPSHOT, usage) == 440 * 3000 + 2048 * 300 + 512 * 3750 + 120 * 15000
    )


# -- LangChain ChatAnthropic ----------------------------------------------------------------


def chat_anthropic(server: AnthropicServer, **kwargs: Any) -> ChatAnthropic:
    options: dict[str, Any] = {"max_retries": 1, "timeout": 10, "max_tokens": 512}
    options.update(kwargs)
    return ChatAnthropic(model=MODEL, base_url=server.base_url, api_key="sk-ant-test", **options)


lc_call = functools.partial(shared_lc_call, prompt=PROMPT)


@pytest.mark.parametrize("mode", LC_MODES)
@pytest.mark.parametrize("reply", [TEXT, TOOL], ids=["text", "tool_use"])
def test_chat_anthropic_records_the_ledger_exactly(
    server: AnthropicServer, budget: Budget, mode: str, reply: Reply
) -> None:
    server.script(reply)
    model = chat_anthropic(server).bind_tools([multiply])
    message = lc_call(model, mode, BudgetCallbackHandler(budget))
    if reply.tool_calls:
        assert [c["name"] for c in message.tool_calls] == ["multiply"]  # type: ignore[attr-defined]
    [served] = server.ledger
    assert served.model == SNAPSHOT
    assert served.stream is mode.endswith("stream")
    assert_matches(only_record(budget), served)
    assert_budget_equals_ledger(budget, server)


@pytest.mark.parametrize("mode", ["invoke", "stream", "ainvoke"])
@pytest.mark.parametrize("status", [429, 500, 529])
def test_chat_anthropic_retried_errors_release_the_hold(
    server: AnthropicServer, budget: Budget, mode: str, status: int
) -> None:
    """The client retries once (max_retries=1) and gives up: nothing billed, nothing held."""
    server.fail(status, times=2)
    with pytest.raises(anthropic.APIStatusError) as caught:
        lc_call(chat_anthropic(server), mode, BudgetCallbackHandler(budget))
    assert caught.value.status_code == status
    assert [s.status for s in server.ledger] == [status, status]
    assert_nothing_charged(budget)


@pytest.mark.parametrize("status", [429, 529])
def test_chat_anthropic_error_then_success_charges_the_success_once(
    server: AnthropicServer, budget: Budget, status: int
) -> None:
    server.fail(status, times=1)
    lc_call(chat_anthropic(server), "stream", BudgetCallbackHandler(budget))
    failed, ok = server.ledger
    assert not failed.billed
    assert_matches(only_record(budget), ok)
    assert_budget_equals_ledger(budget, server)


@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_chat_anthropic_stream_cut_off_half_way(
    server: AnthropicServer, budget: Budget, mode: str
) -> None:
    """The connection drops after 4 of 9 text pieces, before ``message_delta``: ChatAnthropic
    surfaces the text received but no usage (it reads usage from message_delta only). The
    provider billed the prompt and those words; nothing may stay held."""
    server.script(
        Reply(
            text="one two three four five six seven eight nine",
            input_tokens=400,
            output_tokens=9,
            cut_after=4,
        )
    )
    with pytest.raises(CUT_OFF_ERRORS):
        lc_call(chat_anthropic(server), mode, BudgetCallbackHandler(budget))
    [served] = server.ledger
    assert served.cut_off and served.usage.output_tokens == 4
    assert held(budget) == 0
    record = only_record(budget)
    assert record.output_tokens >= 1
    assert record.input_tokens > 0


def test_chat_anthropic_stream_usage_off_is_estimated(
    server: AnthropicServer, budget: Budget
) -> None:
    """``stream_usage=False`` drops usage from ChatAnthropic's stream (it is on by default):
    the record is then the prompt estimate plus the counted reply, marked estimated."""
    assert chat_anthropic(server).stream_usage is True
    handler = BudgetCallbackHandler(budget)
    with pytest.warns(BudgetWarning, match="without provider usage"):
        message = lc_call(chat_anthropic(server, stream_usage=False), "stream", handler)
    record = only_record(budget)
    assert record.estimated is True
    assert record.output_tokens == handler.calls.count(str(message.content))
    assert 0 < record.output_tokens < 512
    assert held(budget) == 0


def test_chat_anthropic_stream_from_a_server_without_cumulative_delta_usage(
    budget: Budget,
) -> None:
    """Known gap, pinned: a server that sends only ``output_tokens`` in ``message_delta``
    (the API before 2025; some proxies still do) makes ChatAnthropic's stream report 0 input
    tokens, since it reads the stream's usage from message_delta alone."""
    with AnthropicServer(default=Reply(), cumulative_delta_usage=False) as srv:
        message = lc_call(chat_anthropic(srv), "stream", BudgetCallbackHandler(budget))
        [served] = srv.ledger
    assert message.usage_metadata is not None  # type: ignore[attr-defined]
    assert message.usage_metadata["input_tokens"] == 0  # type: ignore[attr-defined]
    assert served.usage.input_tokens == 20
    assert held(budget) == 0


# -- LlamaIndex Anthropic -------------------------------------------------------------------


@pytest.fixture
def li_settings() -> Iterator[None]:
    with isolated_settings():
        yield


def llama_anthropic(server: AnthropicServer, **kwargs: Any) -> Any:
    from llama_index.llms.anthropic import Anthropic

    return Anthropic(
        model=MODEL,
        base_url=server.base_url,
        api_key="sk-ant-test",
        max_retries=1,
        timeout=10,
        max_tokens=512,
        **kwargs,
    )


li_call = functools.partial(shared_li_call, prompt=PROMPT)


@li_anthropic_compatible
@pytest.mark.usefixtures("li_settings")
@pytest.mark.parametrize("mode", LI_MODES)
@pytest.mark.parametrize("reply", [LI_TEXT, pytest.param(TOOL, id="tool_use")])
def test_llamaindex_anthropic_records_the_ledger_exactly(
    server: AnthropicServer, budget: Budget, mode: str, reply: Reply
) -> None:
    server.script(reply)
    llm = llama_anthropic(server)
    install(budget)
    li_call(llm, mode)
    [served] = server.ledger
    assert served.model == SNAPSHOT
    assert served.stream is ("stream" in mode)
    assert_matches(only_record(budget), served)
    assert_budget_equals_ledger(budget, server)


@li_anthropic_compatible
@pytest.mark.usefixtures("li_settings")
@pytest.mark.parametrize("mode", ["chat", "stream_chat", "achat"])
@pytest.mark.parametrize("status", [429, 500])
def test_llamaindex_anthropic_retried_errors_release_the_hold(
    server: AnthropicServer, budget: Budget, mode: str, status: int
) -> None:
    server.fail(status, times=2)
    install(budget)
    with pytest.raises(anthropic.APIStatusError) as caught:
        li_call(llama_anthropic(server), mode)
    assert caught.value.status_code == status
    assert [s.status for s in server.ledger] == [status, status]
    assert_nothing_charged(budget)


@li_anthropic_compatible
@pytest.mark.usefixtures("li_settings")
@pytest.mark.parametrize("mode", ["stream_chat", "astream_chat"])
def test_llamaindex_anthropic_stream_cut_off_half_way(
    server: AnthropicServer, budget: Budget, mode: str
) -> None:
    """Cut after 4 of 9 pieces: llama-index-llms-anthropic surfaces message_start's usage
    (input, 1 output token) on every chunk; the prompt and the words received are charged."""
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
        li_call(llama_anthropic(server), mode)
    [served] = server.ledger
    assert served.cut_off and served.usage.output_tokens == 4
    assert held(budget) == 0
    record = only_record(budget)
    assert record.input_tokens == served.usage.input_tokens  # reported by message_start
    assert record.output_tokens >= 1
