"""Fake LLMs on real langchain-core base classes that report usage as real providers do.

``FakeChatOpenAI`` and ``FakeChatAnthropic`` shape ``usage_metadata``, ``response_metadata``
and ``llm_output`` exactly as ChatOpenAI and ChatAnthropic (langchain-openai /
langchain-anthropic 1.7) do for the same provider numbers, including dated snapshot names
in the answer, cache-read / cache-creation and reasoning details, and where streaming
chunks carry their usage; tests/test_langchain_providers.py checks this against the real
classes over a mocked HTTP transport. ``FakeOpenAILLM`` is a legacy completion model shaped
like langchain_openai.OpenAI (usage only in ``llm_output["token_usage"]``).

Every fake counts the provider calls it makes (``calls``), so a test can prove that a
refused call never reached the provider.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, BaseLLM, LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import (
    ChatGeneration,
    ChatGenerationChunk,
    ChatResult,
    Generation,
    GenerationChunk,
    LLMResult,
)
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr

__all__ = [
    "Bill",
    "CallCounter",
    "FakeChatAnthropic",
    "FakeChatOpenAI",
    "FakeOpenAILLM",
    "tool_call_reply",
]


class CallCounter:
    """Thread-safe count of calls that reached the (fake) provider."""

    def __init__(self) -> None:
        self._n = 0
        self._lock = threading.Lock()

    def hit(self) -> None:
        with self._lock:
            self._n += 1

    @property
    def value(self) -> int:
        with self._lock:
            return self._n

    def __repr__(self) -> str:
        return f"CallCounter({self.value})"


@dataclass(frozen=True)
class Bill:
    """What the fake provider bills one call, in LangChain's convention.

    ``input_tokens`` is the whole prompt including ``cache_read`` and ``cache_creation``;
    ``output_tokens`` includes ``reasoning``.
    """

    input_tokens: int = 120
    output_tokens: int = 30
    cache_read: int = 0
    cache_creation: int = 0
    reasoning: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


def tool_call_reply(name: str, args: dict[str, Any], call_id: str = "call_1") -> AIMessage:
    """A reply that asks for one tool call (for ReAct agents)."""
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": call_id}])


StreamUsage = Literal["last", "split", "none"]


class _FakeChat(BaseChatModel):
    """Shared machinery: scripted replies, call counting, hanging, failing, streaming."""

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    model_name: str = Field(default="gpt-4o", alias="model")
    answered_model: str | None = None
    """Model name the response reports; None means the requested name."""
    max_tokens: int | None = None
    replies: list[Any] = Field(default_factory=lambda: ["Hello there, friend."])
    """Cycled: a str, or an AIMessage whose content and tool calls are copied."""
    bill: Bill | None = Field(default_factory=Bill)
    """Usage reported per call; None reports no usage at all."""
    stream_usage: StreamUsage = "last"
    """Where streaming puts usage: one final chunk ("last"), input on the first chunk and
    output on the last ("split", the sum equals the bill), or nowhere ("none")."""
    calls: CallCounter = Field(default_factory=CallCounter, exclude=True)
    hang: bool = False
    """ainvoke / astream wait forever (until cancelled) after reaching the provider."""
    hang_after_chunks: int | None = None
    """astream yields this many chunks, then waits forever (until cancelled)."""
    gate: Any = Field(default=None, exclude=True)
    """An asyncio.Event: ainvoke / astream wait at the provider until it is set."""
    error: Any = None
    """An exception raised by the provider after the call is counted."""
    before_call: Callable[[], None] | None = Field(default=None, exclude=True)
    requests: list[dict[str, Any]] = Field(default_factory=list, exclude=True)
    """The call-time kwargs (bound settings such as ``max_tokens``) of each provider call."""

    _cycle: Any = PrivateAttr(default=None)
    _cycle_lock: Any = PrivateAttr(default_factory=threading.Lock)

    # -- scripting ---------------------------------------------------------------------------

    def _next_reply(self) -> AIMessage:
        with self._cycle_lock:
            if self._cycle is None:
                self._cycle = itertools.cycle(self.replies)
            reply = next(self._cycle)
        if isinstance(reply, AIMessage):
            return AIMessage(content=reply.content, tool_calls=list(reply.tool_calls))
        return AIMessage(content=str(reply))

    def _provider_call(self, kwargs: dict[str, Any] | None = None) -> None:
        self.requests.append(dict(kwargs or {}))
        self.calls.hit()
        if self.before_call is not None:
            self.before_call()
        if self.error is not None:
            raise self.error

    def _answered(self, kwargs: dict[str, Any]) -> str:
        return self.answered_model or kwargs.get("model") or self.model_name

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        **kwargs: Any,
    ) -> Runnable[Any, AIMessage]:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    # -- provider shapes (overridden per provider) -------------------------------------------

    def _usage_metadata(self, bill: Bill) -> dict[str, Any]:
        raise NotImplementedError

    def _llm_output(self, bill: Bill | None, answered: str) -> dict[str, Any]:
        raise NotImplementedError

    def _generation_info(self) -> dict[str, Any] | None:
        return None

    def _message_metadata(self) -> dict[str, Any]:
        return {}

    def _stream_first(self, answered: str) -> AIMessageChunk | None:
        return None

    def _stream_last(self, answered: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(generation_info, response_metadata) of the chunk that ends the content."""
        return {}, {}

    # -- generation ----------------------------------------------------------------------------

    def _result(self, kwargs: dict[str, Any]) -> ChatResult:
        reply = self._next_reply()
        answered = self._answered(kwargs)
        if self.bill is not None:
            reply.usage_metadata = self._usage_metadata(self.bill)  # type: ignore[assignment]
        reply.response_metadata = self._message_metadata()
        generation = ChatGeneration(message=reply, generation_info=self._generation_info())
        return ChatResult(
            generations=[generation], llm_output=self._llm_output(self.bill, answered)
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self._provider_call(kwargs)
        return self._result(kwargs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self._provider_call(kwargs)
        if self.hang:
            await asyncio.Event().wait()
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0)
        return self._result(kwargs)

    def _chunks(self, kwargs: dict[str, Any]) -> Iterator[ChatGenerationChunk]:
        reply = self._next_reply()
        answered = self._answered(kwargs)
        bill = self.bill if self.stream_usage != "none" else None
        first = self._stream_first(answered)
        if bill is not None and self.stream_usage == "split":
            # Input (with cache details) on the first chunk, output on the last.
            input_part = Bill(bill.input_tokens, 0, bill.cache_read, bill.cache_creation, 0)
            if first is None:
                first = AIMessageChunk(content="")
            first.usage_metadata = self._usage_metadata(input_part)  # type: ignore[assignment]
        if first is not None:
            yield ChatGenerationChunk(message=first)
        text = reply.text if isinstance(reply.content, str) else ""
        words = text.split(" ") if text else []
        for i, word in enumerate(words):
            yield ChatGenerationChunk(
                message=AIMessageChunk(content=word if i == 0 else " " + word)
            )
        for index, call in enumerate(reply.tool_calls):
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    content="",
                    tool_call_chunks=[
                        tool_call_chunk(
                            name=call["name"],
                            args=json.dumps(call["args"]),
                            id=call["id"],
                            index=index,
                        )
                    ],
                )
            )
        info, meta = self._stream_last(answered)
        last = AIMessageChunk(content="", response_metadata=meta)
        if bill is not None:
            part = (
                bill
                if self.stream_usage == "last"
                else Bill(0, bill.output_tokens, 0, 0, bill.reasoning)
            )
            last.usage_metadata = self._usage_metadata(part)  # type: ignore[assignment]
        yield ChatGenerationChunk(message=last, generation_info=info or None)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        self._provider_call(kwargs)
        yield from self._chunks(kwargs)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        self._provider_call(kwargs)
        if self.gate is not None:
            await self.gate.wait()
        for index, chunk in enumerate(self._chunks(kwargs)):
            if self.hang or index == self.hang_after_chunks:
                await asyncio.Event().wait()
            await asyncio.sleep(0)
            yield chunk


class FakeChatOpenAI(_FakeChat):
    """Reports usage like ChatOpenAI: ``usage_metadata`` with ``cache_read`` and
    ``reasoning`` details, ``llm_output`` {token_usage (raw OpenAI usage), model_name
    (dated snapshot)}; streaming puts ``model_name`` on the finishing chunk and usage on a
    final usage-only chunk (``stream_usage=True``)."""

    model_name: str = Field(default="gpt-4o", alias="model")
    answered_model: str | None = "gpt-4o-2024-08-06"

    @property
    def _llm_type(self) -> str:
        return "fake-openai-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model_name": self.model_name,
            "model": self.model_name,
            "stream": False,
        }
        if self.max_tokens is not None:
            params["max_tokens"] = self.max_tokens
        return params

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = self._get_invocation_params(stop=stop, **kwargs)
        ls = LangSmithParams(
            ls_provider="openai",
            ls_model_name=params.get("model", self.model_name),
            ls_model_type="chat",
            ls_temperature=None,
        )
        if ls_max := params.get("max_tokens", self.max_tokens) or params.get(
            "max_completion_tokens", self.max_tokens
        ):
            ls["ls_max_tokens"] = ls_max
        return ls

    @staticmethod
    def raw_usage(bill: Bill) -> dict[str, Any]:
        """The OpenAI API's ``usage`` object for ``bill``."""
        return {
            "completion_tokens": bill.output_tokens,
            "prompt_tokens": bill.input_tokens,
            "total_tokens": bill.total,
            "completion_tokens_details": {
                "accepted_prediction_tokens": None,
                "audio_tokens": 0,
                "reasoning_tokens": bill.reasoning,
                "rejected_prediction_tokens": None,
            },
            "prompt_tokens_details": {
                "audio_tokens": 0,
                "cache_write_tokens": None,
                "cached_tokens": bill.cache_read,
            },
        }

    def _usage_metadata(self, bill: Bill) -> dict[str, Any]:
        return {
            "input_tokens": bill.input_tokens,
            "output_tokens": bill.output_tokens,
            "total_tokens": bill.total,
            "input_token_details": {"audio": 0, "cache_read": bill.cache_read},
            "output_token_details": {"audio": 0, "reasoning": bill.reasoning},
        }

    def _llm_output(self, bill: Bill | None, answered: str) -> dict[str, Any]:
        return {
            "token_usage": self.raw_usage(bill) if bill is not None else {},
            "model_provider": "openai",
            "model_name": answered,
            "system_fingerprint": None,
            "id": "chatcmpl-fake",
        }

    def _generation_info(self) -> dict[str, Any] | None:
        return {"finish_reason": "stop", "logprobs": None}

    def _stream_last(self, answered: str) -> tuple[dict[str, Any], dict[str, Any]]:
        return {"finish_reason": "stop", "model_name": answered}, {"model_provider": "openai"}


class FakeChatAnthropic(_FakeChat):
    """Reports usage like ChatAnthropic: ``usage_metadata`` whose ``input_tokens`` adds the
    cache reads and writes back (``cache_read`` / ``cache_creation`` details),
    ``llm_output`` with the raw Anthropic ``usage`` (input excluding cache) and
    ``model_name``; streaming puts ``model_name`` on the message_start chunk and the usage
    on the closing message_delta chunk."""

    model_name: str = Field(default="claude-3-5-sonnet-20241022", alias="model")
    answered_model: str | None = None
    max_tokens: int | None = 1024

    @property
    def _llm_type(self) -> str:
        return "fake-anthropic-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model_name, "max_tokens": self.max_tokens, "streaming": False}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = self._get_invocation_params(stop=stop, **kwargs)
        ls = LangSmithParams(
            ls_provider="anthropic",
            ls_model_name=params.get("model", self.model_name),
            ls_model_type="chat",
            ls_temperature=None,
        )
        if ls_max := params.get("max_tokens", self.max_tokens):
            ls["ls_max_tokens"] = ls_max
        return ls

    @staticmethod
    def raw_usage(bill: Bill) -> dict[str, Any]:
        """The Anthropic API's ``usage`` object for ``bill`` (input excludes the cache)."""
        return {
            "input_tokens": bill.input_tokens - bill.cache_read - bill.cache_creation,
            "output_tokens": bill.output_tokens,
            "cache_read_input_tokens": bill.cache_read,
            "cache_creation_input_tokens": bill.cache_creation,
        }

    def _usage_metadata(self, bill: Bill) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "input_tokens": bill.input_tokens,
            "output_tokens": bill.output_tokens,
            "total_tokens": bill.total,
            "input_token_details": {
                "cache_read": bill.cache_read,
                "cache_creation": bill.cache_creation,
            },
        }
        if bill.reasoning:
            meta["output_token_details"] = {"reasoning": bill.reasoning}
        return meta

    def _llm_output(self, bill: Bill | None, answered: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": "msg_fake",
            "model": answered,
            "stop_reason": "end_turn",
            "stop_sequence": None,
        }
        if bill is not None:
            out["usage"] = self.raw_usage(bill)
        out["model_name"] = answered
        return out

    def _message_metadata(self) -> dict[str, Any]:
        return {"model_provider": "anthropic"}

    def _stream_first(self, answered: str) -> AIMessageChunk | None:
        return AIMessageChunk(content="", response_metadata={"model_name": answered})

    def _stream_last(self, answered: str) -> tuple[dict[str, Any], dict[str, Any]]:
        return {}, {"stop_reason": "end_turn", "stop_sequence": None}


class FakeOpenAILLM(BaseLLM):
    """A legacy completion model shaped like langchain_openai.OpenAI: one provider request
    per ``generate()`` whatever the number of prompts, usage for all of them in
    ``llm_output["token_usage"]``, none while streaming."""

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    model_name: str = Field(default="gpt-3.5-turbo-instruct", alias="model")
    max_tokens: int = 256
    reply: str = "Once upon a time"
    bill: Bill | None = Field(default_factory=Bill)
    """Usage billed per prompt."""
    calls: CallCounter = Field(default_factory=CallCounter, exclude=True)
    prompts_seen: CallCounter = Field(default_factory=CallCounter, exclude=True)
    hang: bool = False

    @property
    def _llm_type(self) -> str:
        return "fake-openai-llm"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "max_tokens": self.max_tokens}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return LangSmithParams(
            ls_provider="openai",
            ls_model_name=self.model_name,
            ls_model_type="llm",
            ls_max_tokens=self.max_tokens,
        )

    def _result(self, prompts: list[str]) -> LLMResult:
        self.calls.hit()
        for _ in prompts:
            self.prompts_seen.hit()
        generations = [
            [
                Generation(
                    text=self.reply, generation_info={"finish_reason": "stop", "logprobs": None}
                )
            ]
            for _ in prompts
        ]
        llm_output: dict[str, Any] = {"model_name": self.model_name, "system_fingerprint": None}
        if self.bill is not None:
            n = len(prompts)
            llm_output["token_usage"] = {
                "prompt_tokens": self.bill.input_tokens * n,
                "completion_tokens": self.bill.output_tokens * n,
                "total_tokens": self.bill.total * n,
            }
        return LLMResult(generations=generations, llm_output=llm_output)

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        return self._result(prompts)

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        result = self._result(prompts)
        if self.hang:
            await asyncio.Event().wait()
        await asyncio.sleep(0)
        return result

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        self.calls.hit()
        self.prompts_seen.hit()
        for i, word in enumerate(self.reply.split(" ")):
            yield GenerationChunk(text=word if i == 0 else " " + word)

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        for chunk in self._stream(prompt, stop, None, **kwargs):
            await asyncio.sleep(0)
            yield chunk
