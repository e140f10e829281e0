"""One small driver per framework adapter, so one conformance suite runs over all of them.

A driver builds real framework objects around a fake model that reports usage exactly as
its provider does (the project's fakes: ``FakeChatOpenAI`` for LangChain, ``FakeChatLLM``
for LlamaIndex, ``FakeResponsesModel`` for the OpenAI Agents SDK, ``FakeOpenAIChatModel``
for pydantic-ai), attaches the adapter the way its docs say, and makes calls:

- :meth:`Driver.call`: one complete call in a mode the framework supports (``sync``,
  ``async``, ``stream``, ``astream``), streams read to the end;
- :meth:`Driver.hanging_call`: an async call that waits at the provider until cancelled;
- :meth:`Driver.gated_call`: an async call that waits at the provider until ``gate`` is set;
- :meth:`Driver.abandon_stream`: a stream whose consumer stops after ``k`` pieces; returns
  the text the provider had produced by then.

Every fake bills :data:`BILL` per call and counts the calls that reached it
(:attr:`Driver.provider_calls`), which is the provider's ledger.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from agent_budget import Budget, TokenCounter, Usage

from .fake_chat_models import Bill

__all__ = ["BILL", "DRIVERS", "PROMPT", "REPLY", "Driver", "driver_for"]

PROMPT = "Summarize the plot of Hamlet in two sentences."
REPLY = "Prince Hamlet avenges his father and nearly everyone dies in the end."
MAX_TOKENS = 100
"""The output cap every driver's requests set."""
BILL = Bill(input_tokens=120, output_tokens=30, cache_read=40, reasoning=10)
"""What every fake provider bills per call (input includes the cache read, output the
reasoning), in each provider's own reporting shape."""


def bill_usage() -> Usage:
    """:data:`BILL` as a :class:`Usage`."""
    return Usage(BILL.input_tokens, BILL.output_tokens, BILL.cache_read, 0, BILL.reasoning)


class Driver:
    """The calls the conformance suite makes, for one framework (see the module docstring)."""

    name = ""
    modes: tuple[str, ...] = ()
    stream_modes: tuple[str, ...] = ()

    @property
    def provider_calls(self) -> int:
        raise NotImplementedError

    @property
    def counter(self) -> TokenCounter:
        """The token counter the adapter counts produced text with."""
        raise NotImplementedError

    def call(self, mode: str) -> None:
        raise NotImplementedError

    async def hanging_call(self) -> None:
        raise NotImplementedError

    async def gated_call(self, gate: asyncio.Event) -> None:
        raise NotImplementedError

    def abandon_stream(self, k: int) -> str:
        raise NotImplementedError


# -- LangChain --------------------------------------------------------------------------------


class LangChainDriver(Driver):
    name = "langchain"
    modes = ("sync", "async", "stream", "astream")
    stream_modes = ("stream", "astream")

    def __init__(self, budget: Budget) -> None:
        from agent_budget_callbacks.langchain import BudgetCallbackHandler

        from .fake_chat_models import FakeChatOpenAI

        self.model = FakeChatOpenAI(bill=BILL, replies=[REPLY], max_tokens=MAX_TOKENS)
        self.handler = BudgetCallbackHandler(budget)
        self.config: Any = {"callbacks": [self.handler]}

    @property
    def provider_calls(self) -> int:
        return self.model.calls.value

    @property
    def counter(self) -> TokenCounter:
        return self.handler.calls.counter

    def call(self, mode: str) -> None:
        from .provider_checks import lc_call

        lc_mode = {"sync": "invoke", "async": "ainvoke"}.get(mode, mode)
        lc_call(self.model, lc_mode, self.handler, prompt=PROMPT)

    async def hanging_call(self) -> None:
        self.model.hang = True
        await self.model.ainvoke(PROMPT, config=self.config)

    async def gated_call(self, gate: asyncio.Event) -> None:
        self.model.gate = gate
        await self.model.ainvoke(PROMPT, config=self.config)

    def abandon_stream(self, k: int) -> str:
        stream = self.model.stream(PROMPT, config=self.config)
        text = ""
        for index, chunk in enumerate(stream):
            text += str(chunk.content)
            if index + 1 == k:
                break
        stream.close()
        return text


# -- LlamaIndex -------------------------------------------------------------------------------


class LlamaIndexDriver(Driver):
    name = "llamaindex"
    modes = ("sync", "async", "stream", "astream")
    stream_modes = ("stream", "astream")

    def __init__(self, budget: Budget) -> None:
        from llama_index.core.llms import ChatMessage

        from agent_budget_callbacks.llamaindex import install

        from .fake_llms import FakeChatLLM, Reported

        self.handler = install(budget)
        self.llm = FakeChatLLM(
            model="gpt-4o",
            style="openai_dict",
            reply=REPLY,
            num_output=MAX_TOKENS,
            reported=Reported(
                BILL.input_tokens,
                BILL.output_tokens,
                cache_read_tokens=BILL.cache_read,
                reasoning_tokens=BILL.reasoning,
            ),
        )
        self.messages = [ChatMessage(role="user", content=PROMPT)]

    @property
    def provider_calls(self) -> int:
        return int(self.llm.counter.calls)

    @property
    def counter(self) -> TokenCounter:
        return self.handler.calls.counter

    def call(self, mode: str) -> None:
        from .provider_checks import li_call

        li_mode = {
            "sync": "chat",
            "async": "achat",
            "stream": "stream_chat",
            "astream": "astream_chat",
        }[mode]
        li_call(self.llm, li_mode, prompt=PROMPT)

    async def hanging_call(self) -> None:
        self.llm.async_gate = asyncio.Event()  # never set: waits until cancelled
        await self.llm.achat(self.messages)

    async def gated_call(self, gate: asyncio.Event) -> None:
        self.llm.async_gate = gate
        await self.llm.achat(self.messages)

    def abandon_stream(self, k: int) -> str:
        stream = self.llm.stream_chat(self.messages)
        text = ""
        for index, response in enumerate(stream):
            text = str(response.message.content)
            if index + 1 == k:
                break
        stream.close()
        return text


# -- OpenAI Agents SDK --------------------------------------------------------------------------


class OpenAIAgentsDriver(Driver):
    name = "openai-agents"
    modes = ("sync", "async", "astream")
    stream_modes = ("astream",)

    def __init__(self, budget: Budget) -> None:
        from agents import Agent, ModelSettings, set_tracing_disabled

        from agent_budget_callbacks.openai_agents import BudgetHooks

        from .fake_agents_models import FakeResponsesModel

        set_tracing_disabled(True)
        self.model = FakeResponsesModel(bill=BILL, replies=[REPLY])
        self.hooks = BudgetHooks(budget)
        self.agent: Any = Agent(
            name="assistant",
            instructions="Answer briefly.",
            model=self.hooks.wrap(self.model),
            model_settings=ModelSettings(max_tokens=MAX_TOKENS),
        )

    @property
    def provider_calls(self) -> int:
        return self.model.calls.value

    @property
    def counter(self) -> TokenCounter:
        return self.hooks.calls.counter

    def call(self, mode: str) -> None:
        from agents import Runner

        if mode == "sync":
            Runner.run_sync(self.agent, PROMPT, hooks=self.hooks)
        elif mode == "async":
            asyncio.run(Runner.run(self.agent, PROMPT, hooks=self.hooks))
        else:
            asyncio.run(self._stream())

    async def _stream(self) -> None:
        from agents import Runner

        result = Runner.run_streamed(self.agent, PROMPT, hooks=self.hooks)
        async for _event in result.stream_events():
            pass

    async def hanging_call(self) -> None:
        from agents import Runner

        self.model.hang = True
        await Runner.run(self.agent, PROMPT, hooks=self.hooks)

    async def gated_call(self, gate: asyncio.Event) -> None:
        from agents import Runner

        self.model.gate = gate
        await Runner.run(self.agent, PROMPT, hooks=self.hooks)

    def abandon_stream(self, k: int) -> str:
        # The provider produces k pieces and then stalls; the consumer cancels the run.
        self.model.hang_after_chunks = k
        return asyncio.run(self._abandon(k))

    async def _abandon(self, k: int) -> str:
        from agents import Runner

        result = Runner.run_streamed(self.agent, PROMPT, hooks=self.hooks)
        text = ""
        seen = 0
        async for event in result.stream_events():
            data = getattr(event, "data", None)
            if getattr(data, "type", None) == "response.output_text.delta":
                text += data.delta  # type: ignore[union-attr]
                seen += 1
                if seen == k:
                    result.cancel()
        return text


# -- pydantic-ai ------------------------------------------------------------------------------


class PydanticAIDriver(Driver):
    name = "pydantic-ai"
    modes = ("sync", "async", "stream", "astream")
    stream_modes = ("stream", "astream")

    def __init__(self, budget: Budget) -> None:
        from pydantic_ai import Agent

        from agent_budget_callbacks.pydantic_ai import BudgetCapability

        from .fake_pydantic_models import FakeOpenAIChatModel

        self.model = FakeOpenAIChatModel(bill=BILL, replies=[REPLY])
        self.capability = BudgetCapability(budget)
        self.agent: Any = Agent(
            self.model,
            instructions="Answer briefly.",
            model_settings={"max_tokens": MAX_TOKENS},
            capabilities=[self.capability],
        )

    @property
    def provider_calls(self) -> int:
        return self.model.calls.value

    @property
    def counter(self) -> TokenCounter:
        return self.capability.calls.counter

    def call(self, mode: str) -> None:
        if mode == "sync":
            self.agent.run_sync(PROMPT)
        elif mode == "async":
            asyncio.run(self.agent.run(PROMPT))
        elif mode == "stream":
            with self.agent.run_stream_sync(PROMPT) as result:
                for _text in result.stream_text():
                    pass
        else:
            asyncio.run(self._astream())

    async def _astream(self) -> None:
        async with self.agent.run_stream(PROMPT) as result:
            async for _text in result.stream_text():
                pass

    async def hanging_call(self) -> None:
        self.model.hang = True
        await self.agent.run(PROMPT)

    async def gated_call(self, gate: asyncio.Event) -> None:
        self.model.gate = gate
        await self.agent.run(PROMPT)

    def abandon_stream(self, k: int) -> str:
        return asyncio.run(self._abandon(k))

    async def _abandon(self, k: int) -> str:
        text = ""
        async with self.agent.run_stream(PROMPT) as result:
            seen = 0
            async for delta in result.stream_text(delta=True, debounce_by=None):
                text += delta
                seen += 1
                if seen == k:
                    await result.cancel()
                    break
        return text


DRIVERS: dict[str, type[Driver]] = {
    d.name: d for d in (LangChainDriver, LlamaIndexDriver, OpenAIAgentsDriver, PydanticAIDriver)
}


@contextmanager
def driver_for(name: str, budget: Budget) -> Iterator[Driver]:
    """A driver for framework ``name`` over ``budget``, with the framework's global state
    (LlamaIndex's Settings and instrumentation) restored afterwards."""
    isolate: Callable[[], AbstractContextManager[Any]] = _nothing
    if name == "llamaindex":
        from .fake_llms import isolated_settings

        isolate = isolated_settings
    with isolate():
        yield DRIVERS[name](budget)


@contextmanager
def _nothing() -> Iterator[None]:
    yield
