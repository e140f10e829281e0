"""A fake pydantic-ai ``Model`` that reports usage as OpenAIChatModel does.

``FakeOpenAIChatModel`` is a real ``pydantic_ai.models.Model``: ``request`` returns a
``ModelResponse`` whose ``usage`` is the ``RequestUsage`` OpenAIChatModel maps from the
API's ``usage`` (``input_tokens`` including ``cache_read_tokens``, ``output_tokens``
including ``output_reasoning_tokens``) and whose ``model_name`` is the dated snapshot that
answered; ``request_stream`` streams the text word by word and, as an OpenAI stream with
``include_usage`` does, reports the usage only in its last chunk. Replies are scripted: a
str is a text answer, a :class:`PydanticToolCall` asks for a tool. Every provider call is
counted (``calls``) and the settings it was sent with kept (``settings_seen``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pydantic_ai.messages import (
    ModelMessage,
    ModelResponse,
    ModelResponsePart,
    ModelResponseStreamEvent,
    TextPart,
    ToolCallPart,
)
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.settings import ModelSettings
from pydantic_ai.tools import RunContext
from pydantic_ai.usage import RequestUsage

from .fake_chat_models import Bill, CallCounter

__all__ = ["Bill", "FakeOpenAIChatModel", "PydanticToolCall"]


@dataclass(frozen=True)
class PydanticToolCall:
    """A scripted reply that asks for one tool call."""

    name: str
    arguments: dict[str, Any]
    call_id: str = "call_1"


def _request_usage(bill: Bill) -> RequestUsage:
    return RequestUsage(
        input_tokens=bill.input_tokens,
        cache_read_tokens=bill.cache_read,
        output_tokens=bill.output_tokens,
        output_reasoning_tokens=bill.reasoning,
    )


def pieces(reply: str | PydanticToolCall) -> list[str]:
    """The pieces a reply is streamed in (the words of a text, a tool call's JSON in halves)."""
    if isinstance(reply, PydanticToolCall):
        text = json.dumps(reply.arguments)
        return [text[: len(text) // 2], text[len(text) // 2 :]]
    words = reply.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


class FakeOpenAIChatModel(Model):
    """Scripted answers with OpenAIChatModel's usage shapes (see the module docstring).

    ``report_usage=False`` reports none (pydantic-ai then marks the response
    ``unmeasured``); ``gate`` holds every call at the provider until it is set; ``hang``
    holds it until cancelled; ``hang_after_chunks`` holds a stream after that many pieces;
    ``error`` is raised by the provider once the call is counted.
    """

    def __init__(
        self,
        model: str = "gpt-4o",
        *,
        replies: Sequence[str | PydanticToolCall] = ("Hello there, friend.",),
        bill: Bill | None = None,
        report_usage: bool = True,
        answered: str | None = "gpt-4o-2024-08-06",
        gate: asyncio.Event | None = None,
        hang: bool = False,
        hang_after_chunks: int | None = None,
        error: BaseException | None = None,
    ) -> None:
        super().__init__()
        self._name = model
        self.replies = list(replies)
        self.bill = Bill() if bill is None else bill
        self.report_usage = report_usage
        self.answered = answered or model
        self.gate = gate
        self.hang = hang
        self.hang_after_chunks = hang_after_chunks
        self.error = error
        self.calls = CallCounter()
        self.settings_seen: list[ModelSettings | None] = []
        self._cycle = itertools.cycle(self.replies)
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def system(self) -> str:
        return "openai"

    async def _provider_call(self, settings: ModelSettings | None) -> str | PydanticToolCall:
        self.calls.hit()
        with self._lock:
            self.settings_seen.append(settings)
            reply = next(self._cycle)
        if self.error is not None:
            raise self.error
        if self.hang:
            await asyncio.Event().wait()
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0)
        return reply

    @staticmethod
    def _part(reply: str | PydanticToolCall) -> ModelResponsePart:
        if isinstance(reply, PydanticToolCall):
            return ToolCallPart(reply.name, reply.arguments, tool_call_id=reply.call_id)
        return TextPart(reply)

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        reply = await self._provider_call(model_settings)
        usage = _request_usage(self.bill) if self.report_usage else RequestUsage()
        if not self.report_usage:
            usage.unmeasured_requests = 1
        return ModelResponse(
            parts=[self._part(reply)],
            usage=usage,
            model_name=self.answered,
            provider_name="openai",
        )

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: RunContext[Any] | None = None,
    ) -> AsyncIterator[StreamedResponse]:
        reply = await self._provider_call(model_settings)
        yield _FakeStream(
            model_request_parameters=model_request_parameters,
            _reply=reply,
            _owner=self,
        )


@dataclass
class _FakeStream(StreamedResponse):
    """The stream of one scripted reply; usage arrives with the last piece."""

    _reply: str | PydanticToolCall = ""
    _owner: Any = None
    _timestamp: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    async def _get_event_iterator(self) -> AsyncIterator[ModelResponseStreamEvent]:
        owner: FakeOpenAIChatModel = self._owner
        reply = self._reply
        parts = pieces(reply)
        for index, piece in enumerate(parts):
            if index == owner.hang_after_chunks:
                await asyncio.Event().wait()
            await asyncio.sleep(0)
            if isinstance(reply, PydanticToolCall):
                event = self._parts_manager.handle_tool_call_delta(
                    vendor_part_id=0,
                    tool_name=reply.name if index == 0 else None,
                    args=piece,
                    tool_call_id=reply.call_id,
                )
                if event is not None:
                    yield event
            else:
                for event in self._parts_manager.handle_text_delta(
                    vendor_part_id="content", content=piece
                ):
                    yield event
            if index == len(parts) - 1 and owner.report_usage:
                self._add_usage(_request_usage(owner.bill), reported=True)

    async def close_stream(self) -> None:
        """Nothing to close: the reply lives in memory."""

    @property
    def model_name(self) -> str:
        owner: FakeOpenAIChatModel = self._owner
        return owner.answered

    @property
    def provider_name(self) -> str:
        return "openai"

    @property
    def provider_url(self) -> None:
        return None

    @property
    def timestamp(self) -> datetime:
        return self._timestamp
