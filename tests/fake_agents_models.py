"""A fake OpenAI Agents SDK ``Model`` that reports usage as OpenAIResponsesModel does.

``FakeResponsesModel`` is a real ``agents.Model``: ``get_response`` returns a
``ModelResponse`` whose ``usage`` is what ``OpenAIResponsesModel`` builds from the API's
``usage`` (``requests=1``, ``input_tokens`` including ``cached_tokens``, ``output_tokens``
including ``reasoning_tokens``); ``stream_response`` yields Responses API events, the text
piece by piece as ``response.output_text.delta`` events (tool-call arguments as
``response.function_call_arguments.delta``), and ends with ``response.completed``, whose
``response`` carries the usage and the dated snapshot that answered. The script, the call
counter and the failure knobs are :class:`~tests.scripted_provider.ScriptedProvider`'s.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
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

from .provider_servers import ToolCall
from .scripted_provider import Reply, ScriptedProvider, pieces

__all__ = ["FakeResponsesModel", "ToolCall"]


class FakeResponsesModel(ScriptedProvider, Model):
    """Scripted answers with OpenAIResponsesModel's usage shapes (see the module docstring);
    keyword options are :class:`~tests.scripted_provider.ScriptedProvider`'s."""

    def __init__(self, model: str = "gpt-4o", **script: Any) -> None:
        self.model = model
        self._script(**script)

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
    def _item(reply: Reply) -> ResponseOutputMessage | ResponseFunctionToolCall:
        if isinstance(reply, ToolCall):
            return ResponseFunctionToolCall(
                id="fc_1",
                call_id=reply.id or "call_1",
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
        reply = self._take(model_settings)
        await self._wait_at_provider()
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
        reply = self._take(model_settings)
        await self._wait_at_provider()
        seq = itertools.count()
        yield ResponseCreatedEvent(
            response=self._response(None, None), sequence_number=next(seq), type="response.created"
        )
        item = self._item(reply)
        for index, piece in enumerate(pieces(reply)):
            await self._stall(index)
            if isinstance(reply, ToolCall):
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
