"""OpenAI Agents SDK: what a budget costs per model call, against the same ``Runner.run``
with no hooks and with no-op ``RunHooks``, all timed interleaved in one process. Each run is
one turn: one model call to a minimal fake ``Model`` that answers at once with usage, as
OpenAIResponsesModel reports it, so the numbers are the SDK's run loop and the hooks' own
cost. "BudgetHooks" reserves in ``on_llm_start`` and commits in ``on_llm_end``;
"BudgetHooks + BudgetModel" also wraps the model (the recommended setup: retries, failures
and streams accounted), which adopts the hooks' hold. Both estimate the prompt (tiktoken
cl100k) and check four limits on the in-memory store.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from agents import (
    Agent,
    Model,
    ModelResponse,
    ModelSettings,
    ModelTracing,
    RunContextWrapper,
    RunHooks,
    Runner,
    Usage,
    set_tracing_disabled,
)
from openai.types.responses import ResponseOutputMessage, ResponseOutputText
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

from agent_budget import Budget
from agent_budget_callbacks.openai_agents import BudgetHooks

from .harness import Table, bench_scope, interleaved, ratio_table

__all__ = ["run"]

PROMPT = (
    "Summarize the following meeting notes in five bullet points, keeping every decision "
    "and owner: Anna will finish the Q3 budget by Friday; we postponed the vendor review "
    "to next sprint; Raj asked whether the staging cluster can be shut down at night."
)


class InstantModel(Model):
    """Answers at once with one message and usage, as OpenAIResponsesModel reports it."""

    model = "gpt-4o-mini"

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        usage = Usage(
            requests=1,
            input_tokens=60,
            output_tokens=40,
            total_tokens=100,
            input_tokens_details=InputTokensDetails(cached_tokens=0, cache_write_tokens=0),
            output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
        )
        message = ResponseOutputMessage(
            id="msg_1",
            content=[ResponseOutputText(annotations=[], text="Done.", type="output_text")],
            role="assistant",
            status="completed",
            type="message",
        )
        return ModelResponse(output=[message], usage=usage, response_id="resp_1")

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError


class NoopHooks(RunHooks[Any]):
    """Hooks that do nothing: the cost of the SDK dispatching them."""

    async def on_llm_start(self, *args: Any) -> None:
        return None

    async def on_llm_end(self, *args: Any) -> None:
        return None


def _case(kind: str) -> Callable[[int], None]:
    model = InstantModel()
    hooks: RunHooks[Any] | None = None
    agent_model: Model = model
    if kind == "no-op RunHooks":
        hooks = NoopHooks()
    elif kind.startswith("BudgetHooks"):
        budget_hooks = BudgetHooks(Budget(bench_scope()))
        hooks = budget_hooks
        if kind.endswith("BudgetModel"):
            agent_model = budget_hooks.wrap(model)
    agent = Agent(
        name="bench",
        instructions="Answer in bullet points.",
        model=agent_model,
        model_settings=ModelSettings(max_tokens=256),
    )

    async def calls(n: int) -> None:
        for _ in range(n):
            await Runner.run(agent, PROMPT, hooks=hooks)

    return lambda n: asyncio.run(calls(n))


CASES = ("no hooks", "no-op RunHooks", "BudgetHooks", "BudgetHooks + BudgetModel")


def _direct(kind: str) -> Callable[[int], None]:
    """One model call without the Runner: the model alone, or with what the adapter adds
    around it (the hooks' start and end, the wrapping model)."""
    model = InstantModel()
    hooks = BudgetHooks(Budget(bench_scope()))
    wrapped = hooks.wrap(model)
    agent = Agent(name="bench", model=wrapped, model_settings=ModelSettings(max_tokens=256))
    settings = ModelSettings(max_tokens=256)
    tracing = ModelTracing.DISABLED

    async def calls(n: int) -> None:
        for _ in range(n):
            items: list[Any] = [{"role": "user", "content": PROMPT}]
            context = RunContextWrapper(context=None)
            if kind == "hooks + BudgetModel":
                await hooks.on_llm_start(context, agent, "Answer in bullet points.", items)
            target = model if kind == "model alone" else wrapped
            response = await target.get_response(
                "Answer in bullet points.",
                items,
                settings,
                [],
                None,
                [],
                tracing,
                previous_response_id=None,
                conversation_id=None,
                prompt=None,
            )
            if kind == "hooks + BudgetModel":
                await hooks.on_llm_end(context, agent, response)

    return lambda n: asyncio.run(calls(n))


DIRECT = ("model alone", "BudgetModel alone", "hooks + BudgetModel")


def run(quick: bool) -> list[Table]:
    set_tracing_disabled(True)
    n, rounds = (20, 2) if quick else (500, 5)
    n_direct = 100 if quick else 5_000
    direct = interleaved({kind: _direct(kind) for kind in DIRECT}, n_direct, rounds)
    results = interleaved({kind: _case(kind) for kind in CASES}, n, rounds)
    base = results["no-op RunHooks"]
    return [
        ratio_table(
            "One model call, the adapter's own cost (no Runner)",
            direct,
            "model alone",
            notes=[
                f"{n_direct:,} calls per case per round, {rounds} rounds, median.",
                "What the adapter adds per model call: "
                f"{direct['hooks + BudgetModel'] - direct['model alone']:+.1f} us with the "
                "hooks' start and end around the wrapped model (the recommended setup), "
                f"{direct['BudgetModel alone'] - direct['model alone']:+.1f} us for the "
                "wrapped model alone. Timed without the Runner, whose own cost (the next "
                "table) varies more than this from run to run on a shared machine.",
            ],
        ),
        ratio_table(
            "Runner.run, one model call per run",
            results,
            "no hooks",
            extra_baselines=["no-op RunHooks"],
            notes=[
                f"{n:,} runs per case per round, {rounds} rounds, median.",
                "Added over no-op hooks: BudgetHooks "
                f"{results['BudgetHooks'] - base:+.1f} us, with BudgetModel "
                f"{results['BudgetHooks + BudgetModel'] - base:+.1f} us per model call.",
            ],
        ),
    ]


if __name__ == "__main__":
    import sys

    for table in run(quick="--quick" in sys.argv):
        print(table.text())
