"""LangChain: what a budget costs per chat-model call, against no callbacks, a no-op handler
and LangChain's own ``UsageMetadataCallbackHandler``, sync (``invoke``) and async
(``ainvoke``), all timed interleaved in one process. The model is a minimal fake chat model
that answers at once and reports usage and a model name as ChatOpenAI does, so the numbers
are the callback machinery's and the handlers' own cost. "agent-budget" estimates the
prompt (tiktoken cl100k), reserves against four limits, and commits the reported usage on
the in-memory store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler, UsageMetadataCallbackHandler
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatResult, LLMResult

from agent_budget import Budget, Usage, default_counter
from agent_budget_callbacks.langchain import BudgetCallbackHandler
from agent_budget_callbacks.langchain.payload import (
    chat_input_tokens,
    max_output_tokens,
    read_outcome,
    requested_model,
)

from .harness import CPU, Table, bench_scope, interleaved, ratio_table, verdict

__all__ = ["run"]

PROMPT = (
    "Summarize the following meeting notes in five bullet points, keeping every decision "
    "and owner: Anna will finish the Q3 budget by Friday; we postponed the vendor review "
    "to next sprint; Raj asked whether the staging cluster can be shut down at night."
)
USAGE: UsageMetadata = {
    "input_tokens": 60,
    "output_tokens": 40,
    "total_tokens": 100,
    "input_token_details": {"cache_read": 0},
    "output_token_details": {"reasoning": 0},
}


class InstantChat(BaseChatModel):
    """Answers at once with usage and a dated model name, as ChatOpenAI reports them."""

    @property
    def _llm_type(self) -> str:
        return "instant-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": "gpt-4o-mini", "model_name": "gpt-4o-mini"}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return LangSmithParams(
            ls_provider="openai",
            ls_model_name="gpt-4o-mini",
            ls_model_type="chat",
            ls_max_tokens=256,
        )

    def _result(self) -> ChatResult:
        message = AIMessage(
            content="Done.",
            usage_metadata=USAGE,
            response_metadata={"model_name": "gpt-4o-mini-2024-07-18"},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        return self._result()

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        return self._result()


class NoopHandler(BaseCallbackHandler):
    """A handler that does nothing: the cost of the callback plumbing itself."""


class InlineNoopHandler(BaseCallbackHandler):
    """The same, run inline on the event loop (no thread hop per event in async code)."""

    run_inline = True


def _budget() -> Budget:
    return Budget(bench_scope())


def _budget_handler() -> BudgetCallbackHandler:
    return BudgetCallbackHandler(_budget())


HANDLERS: dict[str, Callable[[], list[BaseCallbackHandler]]] = {
    "no callbacks": list,
    "no-op handler": lambda: [NoopHandler()],
    "no-op handler, run_inline": lambda: [InlineNoopHandler()],
    "UsageMetadataCallbackHandler": lambda: [UsageMetadataCallbackHandler()],
    "agent-budget": lambda: [_budget_handler()],
}


def _sync_case(handlers: list[BaseCallbackHandler]) -> Callable[[int], None]:
    model = InstantChat()
    config: Any = {"callbacks": handlers}

    def run(n: int) -> None:
        for _ in range(n):
            model.invoke(PROMPT, config=config)

    return run


def _async_case(handlers: list[BaseCallbackHandler]) -> Callable[[int], None]:
    model = InstantChat()
    config: Any = {"callbacks": handlers}

    async def calls(n: int) -> None:
        for _ in range(n):
            await model.ainvoke(PROMPT, config=config)

    return lambda n: asyncio.run(calls(n))


def _notes(results: dict[str, float], n: int, rounds: int, *, sync: bool) -> list[str]:
    base = results["no-op handler"]
    ours = results["agent-budget"] - base
    theirs = results["UsageMetadataCallbackHandler"] - base
    notes = [
        f"{n:,} calls per case per round, {rounds} rounds, median CPU time.",
        f"Added over the no-op handler: agent-budget {ours:+.1f} us, "
        f"UsageMetadataCallbackHandler {theirs:+.1f} us per call.",
        "agent-budget and 'run_inline' run on the event loop; the other handlers are "
        "dispatched to a thread per event in async code, as LangChain does for sync handlers.",
    ]
    if sync:
        notes.append(verdict("agent-budget / no-op handler", results["agent-budget"] / base, 1.15))
        notes.append(
            verdict(
                "agent-budget's added cost / UsageMetadataCallbackHandler's",
                ours / theirs if theirs > 0 else float("inf"),
                2.0,
            )
        )
    else:
        inline = results["no-op handler, run_inline"]
        notes.append(
            verdict("agent-budget / inline no-op handler", results["agent-budget"] / inline, 1.15)
        )
    return notes


def _parts() -> dict[str, Callable[[int], None]]:
    """The pieces of one budgeted call, timed alone."""
    messages = [HumanMessage(PROMPT)]
    metadata = {"ls_model_name": "gpt-4o-mini", "ls_max_tokens": 256}
    counter = default_counter()
    result = LLMResult(generations=[[InstantChat()._result().generations[0]]])
    budget = _budget()
    usage = Usage(60, 40)

    def read(n: int) -> None:
        for _ in range(n):
            requested_model(None, metadata, {})
            max_output_tokens(metadata, {})
            read_outcome(result)

    def estimate(n: int) -> None:
        for _ in range(n):
            chat_input_tokens(messages, {}, counter)

    def reserve_commit(n: int) -> None:
        for _ in range(n):
            budget.reserve("gpt-4o-mini", 50, 256, metadata={"run_id": "x"}).commit(
                usage, model="gpt-4o-mini-2024-07-18"
            )

    return {
        "read the events (adapter)": read,
        f"estimate the prompt ({counter.name})": estimate,
        "reserve + commit (core, memory store)": reserve_commit,
    }


def run(quick: bool) -> list[Table]:
    n_sync, n_async, rounds = (200, 100, 3) if quick else (5_000, 2_000, 5)
    sync = interleaved({k: _sync_case(f()) for k, f in HANDLERS.items()}, n_sync, rounds, clock=CPU)
    asyn = interleaved(
        {k: _async_case(f()) for k, f in HANDLERS.items()}, n_async, rounds, clock=CPU
    )
    parts = interleaved(_parts(), n_sync, rounds, clock=CPU)
    breakdown = Table(
        "Where agent-budget's time goes, per call",
        ["part", "us/op"],
        [[name, f"{value:.2f}"] for name, value in parts.items()],
        [
            "Each part timed alone, interleaved; together they are most of what "
            "agent-budget adds over the no-op handler.",
            "reserve + commit: four limits on the in-memory store, usage record included.",
        ],
    )
    return [
        ratio_table(
            "Chat model invoke per call",
            sync,
            "no callbacks",
            extra_baselines=["no-op handler"],
            notes=_notes(sync, n_sync, rounds, sync=True),
        ),
        ratio_table(
            "Chat model ainvoke per call",
            asyn,
            "no callbacks",
            extra_baselines=["no-op handler", "no-op handler, run_inline"],
            notes=_notes(asyn, n_async, rounds, sync=False),
        ),
        breakdown,
    ]


if __name__ == "__main__":
    import sys

    for table in run(quick="--quick" in sys.argv):
        print(table.text())
