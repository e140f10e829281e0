"""A fake OpenAI Agents SDK ``Model`` that reports usage as OpenAIResponsesModel does.

``FakeResponsesModel`` is a real ``agents.Model``: ``get_response`` returns a
``ModelResponse`` whose ``usage`` is what ``OpenAIResponsesModel`` builds from the API's
``usage`` (``requests=1``, ``input_tokens`` including ``cached_tokens``, ``output_tokens``
including ``reasoning_tokens``); ``stream_response`` yields Responses API events, the text
piece by piece as ``response.output_text.delta`` events, and ends with
``response.completed``, whose ``response`` carries the usage and the dated snapshot that
answered. Replies are scripted: a str is a text answer, a :class:`AgentToolCall` asks for a
function tool. Every provider call is counted (``calls``) and the settings it was sent with
kept (``settings_seen``), so a test can prove a refused call never reached the provider and
see the ``max_tokens`` a budget clamped.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from agents import Model, ModelResponse, ModelSettings, ModelTracing, Usage
from agents.agent_output import AgentOutputSchemaBase
from agents.handoffs import Handoff
from agents.items import TResponseInputItem, TResponseStreamEvent
from agents.tool import Tool
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseCreatedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionToolCall,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseTextDeltaEvent,
    ResponseUsage,
)
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

from .fake_chat_models import Bill, CallCounter

__all__ = ["AgentToolCall", "Bill", "FakeResponsesModel"]


@dataclass(frozen=True)
class AgentToolCall:
    """A scripted reply that asks for one function tool call."""

    name: str
    arguments: dict[str, Any]
    call_id: str = "call_1"


class FakeResponsesModel(Model):
    """Scripted answers with OpenAIResponsesModel's usage shapes (see the module docstring).

    ``bill`` is reported for every call (default :class:`Bill`); ``report_usage=False``
    reports none, as a Chat Completions stream without ``include_usage`` does; ``gate``
    (an asyncio.Event) holds every call at the provider until it is set; ``hang``
    makes a call wait at the provider until cancelled; ``hang_after_chunks`` makes a stream
    wait after that many text pieces; ``error`` is raised by the provider once the call is
    counted.
    """

    def __init__(
        self,
        model: str = "gpt-4o",
        *,
        replies: Sequence[str | AgentToolCall] = ("Hello there, friend.",),
        bill: Bill | None = None,
        report_usage: bool = True,
        answered: str | None = "gpt-4o-2024-08-06",
        gate: asyncio.Event | None = None,
        hang: bool = False,
        hang_after_chunks: int | None = None,
        error: BaseException | None = None,
    ) -> None:
        self.model = model
        self.replies = list(replies)
        self.bill = Bill() if bill is None else bill
        self.report_usage = report_usage
        self.answered = answered
        self.gate = gate
        self.hang = hang
        self.hang_after_chunks = hang_after_chunks
        self.error = error
        self.calls = CallCounter()
        self.settings_seen: list[ModelSettings] = []
        self._cycle = itertools.cycle(self.replies)
        self._lock = threading.Lock()

    # -- the provider ------------------------------------------------------------------------

    def _provider_call(self, settings: ModelSettings) -> str | AgentToolCall:
        self.calls.hit()
        with self._lock:
            self.settings_seen.append(settings)
            reply = next(self._cycle)
        if self.error is not None:
            raise self.error
        return reply

    def _usage(self) -> ResponseUsage | None:
        if not self.report_usage:
            return None
        bill = self.bill
        return ResponseUsage(
            input_tokens=bill.input_tokens,
            input_tokens_details=InputTokensDetails(
                cached_tokens=bill.cache_read, cache_write_tokens=bill.cache_creation
            ),
            output_tokens=bill.output_tokens,
            output_tokens_details=OutputTokensDetails(reasoning_tokens=bill.reasoning),
            total_tokens=bill.total,
        )

    @staticmethod
    def _item(reply: str | AgentToolCall) -> ResponseOutputMessage | ResponseFunctionToolCall:
        if isinstance(reply, AgentToolCall):
            return ResponseFunctionToolCall(
                id="fc_1",
                call_id=reply.call_id,
                name=reply.name,
                arguments=json.dumps(reply.arguments),
                type="function_call",
                status="completed",
            )
        return ResponseOutputMessage(
            id="msg_1",
            content=[ResponseOutputText(annotations=[], text=reply, type="output_text")],
            role="assistant",
            status="completed",
            type="message",
        )

    def _response(self, item: Any, usage: ResponseUsage | None) -> Response:
        return Response(
            id="resp_fake",
            created_at=0,
            model=self.answered or self.model,
            object="response",
            output=[item] if item is not None else [],
            parallel_tool_calls=False,
            tool_choice="auto",
            tools=[],
            usage=usage,
        )

    # -- agents.Model --------------------------------------------------------------------------

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: Any,
    ) -> ModelResponse:
        reply = self._provider_call(model_settings)
        if self.hang:
            await asyncio.Event().wait()
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0)
        api_usage = self._usage()
        usage = Usage()
        if api_usage is not None:
            usage = Usage(
                requests=1,
                input_tokens=api_usage.input_tokens,
                output_tokens=api_usage.output_tokens,
                total_tokens=api_usage.total_tokens,
                input_tokens_details=api_usage.input_tokens_details,
                output_tokens_details=api_usage.output_tokens_details,
            )
        return ModelResponse(output=[self._item(reply)], usage=usage, response_id="resp_fake")

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        prompt: Any = None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        reply = self._provider_call(model_settings)
        if self.gate is not None:
            await self.gate.wait()
        seq = itertools.count()
        yield ResponseCreatedEvent(
            response=self._response(None, None), sequence_number=next(seq), type="response.created"
        )
        item = self._item(reply)
        for index, piece in enumerate(self.pieces(reply)):
            if self.hang or index == self.hang_after_chunks:
                await asyncio.Event().wait()
            await asyncio.sleep(0)
            if isinstance(reply, AgentToolCall):
                yield ResponseFunctionCallArgumentsDeltaEvent(
                    delta=piece,
                    item_id="fc_1",
                    output_index=0,
                    sequence_number=next(seq),
                    type="response.function_call_arguments.delta",
                )
            else:
                yield ResponseTextDeltaEvent(
                    content_index=0,
                    delta=piece,
                    item_id="msg_1",
                    logprobs=[],
                    output_index=0,
                    sequence_number=next(seq),
                    type="response.output_text.delta",
                )
        yield ResponseOutputItemDoneEvent(
            item=item, output_index=0, sequence_number=next(seq), type="response.output_item.done"
        )
        yield ResponseCompletedEvent(
            response=self._response(item, self._usage()),
            sequence_number=next(seq),
            type="response.completed",
        )

    @staticmethod
    def pieces(reply: str | AgentToolCall) -> list[str]:
        """The pieces a reply is streamed in (words of a text, a tool call's JSON in halves)."""
        if isinstance(reply, AgentToolCall):
            text = json.dumps(reply.arguments)
            half = len(text) // 2
            return [text[:half], text[half:]]
        words = reply.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words)]
