"""Checks shared by the provider end-to-end tests: a record against the server's ledger."""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.tools import tool
from llama_index.core.llms import ChatMessage

from agent_budget import Budget, BudgetManager, Usage, UsageRecord

from .provider_servers import MockProvider, Served, builtin_price_nanos, held

__all__ = [
    "assert_budget_equals_ledger",
    "assert_nothing_charged",
    "check_record",
    "lc_call",
    "li_call",
    "multiply",
    "only_record",
    "record_shape",
    "recorded_usage",
    "sessions_by_scope",
]


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def only_record(budget: Budget) -> UsageRecord:
    records = budget.records
    assert len(records) == 1, records
    return records[0]


def recorded_usage(record: UsageRecord) -> Usage:
    """The usage a record says was used."""
    return Usage(
        record.input_tokens,
        record.output_tokens,
        record.cache_read_tokens,
        record.cache_write_tokens,
        record.reasoning_tokens,
    )


def sessions_by_scope(manager: BudgetManager, *names: str) -> dict[str, list[tuple[int, str]]]:
    """``(input_tokens, session_id)`` of every record of each named scope of ``manager``."""
    seen: dict[str, list[tuple[int, str]]] = {}
    for name in names:
        budget = manager.get(name)
        assert budget is not None, name
        seen[name] = [(r.input_tokens, r.session_id) for r in budget.records]
    return seen


def record_shape(record: UsageRecord) -> tuple[Any, ...]:
    """What a record says was used and charged, for comparing records across call paths."""
    return (
        record.model,
        record.input_tokens,
        record.output_tokens,
        record.cache_read_tokens,
        record.cache_write_tokens,
        record.reasoning_tokens,
        record.cost_nanos,
        record.estimated,
    )


def check_record(record: UsageRecord, served: Served, *, family: str) -> None:
    """The record carries exactly what the server billed, priced for its snapshot and
    counted under the model ``family``."""
    assert served.billed and not served.cut_off
    assert (
        record.input_tokens,
        record.output_tokens,
        record.cache_read_tokens,
        record.cache_write_tokens,
        record.reasoning_tokens,
    ) == (
        served.usage.input_tokens,
        served.usage.output_tokens,
        served.usage.cache_read_tokens,
        served.usage.cache_write_tokens,
        served.usage.reasoning_tokens,
    )
    assert record.estimated is False
    assert record.model == family
    assert record.cost_nanos == builtin_price_nanos(served.model, served.usage)


def assert_budget_equals_ledger(budget: Budget, server: MockProvider) -> None:
    usage = budget.usage()
    assert usage["session:tokens"].committed == server.total().total_tokens
    cost = sum(builtin_price_nanos(s.model, s.usage) for s in server.billed)
    assert usage["session:cost"].committed == cost
    assert held(budget) == 0


def assert_nothing_charged(budget: Budget) -> None:
    """No record, no committed usage and no hold: the call cost nothing."""
    assert budget.records == []
    assert all(level.committed == 0 for level in budget.usage().values())
    assert held(budget) == 0


def lc_call(model: Any, mode: str, handler: Any, *, prompt: str) -> BaseMessage:
    """One LangChain call in ``mode``, streams read to the end; returns the whole message."""
    config: Any = {"callbacks": [handler]}
    if mode == "invoke":
        return model.invoke(prompt, config=config)
    if mode == "ainvoke":
        return asyncio.run(model.ainvoke(prompt, config=config))
    if mode == "stream":
        chunks = list(model.stream(prompt, config=config))
    else:

        async def collect() -> list[Any]:
            return [c async for c in model.astream(prompt, config=config)]

        chunks = asyncio.run(collect())
    merged: AIMessageChunk = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    return merged


def li_call(llm: Any, mode: str, *, prompt: str) -> Any:
    """One LlamaIndex call in ``mode``, streams read to the end; returns the last response."""
    messages = [ChatMessage(role="user", content=prompt)]
    if mode == "chat":
        return llm.chat(messages)
    if mode == "complete":
        return llm.complete(prompt)
    if mode == "stream_chat":
        return list(llm.stream_chat(messages))[-1]
    if mode == "stream_complete":
        return list(llm.stream_complete(prompt))[-1]

    async def run() -> Any:
        if mode == "achat":
            return await llm.achat(messages)
        return [r async for r in await llm.astream_chat(messages)][-1]

    return asyncio.run(run())
