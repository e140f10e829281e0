"""pydantic-ai: what a budget costs per model request, against the same ``agent.run`` with no
capability and with a capability whose wrapper model only passes requests through, all
timed interleaved in one process. Each run is one request to a minimal fake ``Model`` that
answers at once with usage, as OpenAIChatModel reports it, so the numbers are pydantic-ai's
run graph and the capability's own cost. "BudgetCapability" estimates the prompt (tiktoken
cl100k), reserves against four limits on the in-memory store, and commits the reported
usage; "clamp=True" also sends the held output cap as ``max_tokens``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    UserPromptPart,
)
from pydantic_ai.models import Model, ModelRequestParameters
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings
from pydantic_ai.usage import RequestUsage

from agent_budget import Budget
from agent_budget_callbacks.pydantic_ai import BudgetCapability, BudgetModel

from .harness import Table, bench_scope, interleaved, ratio_table

__all__ = ["run"]

PROMPT = (
    "Summarize the following meeting notes in five bullet points, keeping every decision "
    "and owner: Anna will finish the Q3 budget by Friday; we postponed the vendor review "
    "to next sprint; Raj asked whether the staging cluster can be shut down at night."
)


class InstantModel(Model):
    """Answers at once with usage and a dated model name, as OpenAIChatModel reports them."""

    @property
    def model_name(self) -> str:
        return "gpt-4o-mini"

    @property
    def system(self) -> str:
        return "openai"

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        return ModelResponse(
            parts=[TextPart("Done.")],
            usage=RequestUsage(input_tokens=60, output_tokens=40),
            model_name="gpt-4o-mini-2024-07-18",
            provider_name="openai",
        )


class PassThrough(AbstractCapability[Any]):
    """A capability whose wrapper model only forwards: the cost of wrapping itself."""

    def get_wrapper_model(self, model: Model) -> Model | None:
        return WrapperModel(model)


def _case(kind: str) -> Callable[[int], None]:
    capabilities: list[AbstractCapability[Any]] = []
    if kind == "pass-through wrapper":
        capabilities = [PassThrough()]
    elif kind.startswith("BudgetCapability"):
        clamp = kind.endswith("clamp=True")
        capabilities = [BudgetCapability(Budget(bench_scope()), clamp=clamp)]
    agent: Agent[None, str] = Agent(
        InstantModel(),
        instructions="Answer in bullet points.",
        model_settings={"max_tokens": 256},
        capabilities=capabilities,
    )

    async def calls(n: int) -> None:
        for _ in range(n):
            await agent.run(PROMPT)

    return lambda n: asyncio.run(calls(n))


def _direct(kind: str) -> Callable[[int], None]:
    """One request without the agent graph: the model alone, or wrapped by the capability."""
    model = InstantModel()
    capability = BudgetCapability(Budget(bench_scope()), clamp=kind.endswith("clamp=True"))
    target = model if kind == "model alone" else BudgetModel(model, capability)
    messages: list[ModelMessage] = [ModelRequest(parts=[UserPromptPart(PROMPT)])]
    params = ModelRequestParameters()
    settings: ModelSettings = {"max_tokens": 256}

    async def calls(n: int) -> None:
        for _ in range(n):
            await target.request(messages, settings, params)

    return lambda n: asyncio.run(calls(n))


DIRECT = ("model alone", "BudgetModel", "BudgetModel, clamp=True")

CASES = (
    "no capability",
    "pass-through wrapper",
    "BudgetCapability",
    "BudgetCapability, clamp=True",
)


def run(quick: bool) -> list[Table]:
    n, rounds = (20, 2) if quick else (300, 5)
    n_direct = 100 if quick else 5_000
    direct = interleaved({kind: _direct(kind) for kind in DIRECT}, n_direct, rounds)
    results = interleaved({kind: _case(kind) for kind in CASES}, n, rounds)
    base = results["pass-through wrapper"]
    return [
        ratio_table(
            "One model request, the adapter's own cost (no agent graph)",
            direct,
            "model alone",
            notes=[
                f"{n_direct:,} requests per case per round, {rounds} rounds, median.",
                "What the capability's wrapper adds per request: "
                f"{direct['BudgetModel'] - direct['model alone']:+.1f} us. Timed without "
                "the agent graph, whose own cost (the next table) varies more than this "
                "from run to run on a shared machine.",
            ],
        ),
        ratio_table(
            "agent.run, one model request per run",
            results,
            "no capability",
            extra_baselines=["pass-through wrapper"],
            notes=[
                f"{n:,} runs per case per round, {rounds} rounds, median.",
                "Added over a pass-through wrapper: BudgetCapability "
                f"{results['BudgetCapability'] - base:+.1f} us per request.",
            ],
        ),
    ]


if __name__ == "__main__":
    import sys

    for table in run(quick="--quick" in sys.argv):
        print(table.text())
