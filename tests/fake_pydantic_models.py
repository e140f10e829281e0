"""A fake pydantic-ai ``Model`` that reports usage as OpenAIChatModel does.

``FakeOpenAIChatModel`` is a real ``pydantic_ai.models.Model``: ``request`` returns a
``ModelResponse`` whose ``usage`` is the ``RequestUsage`` OpenAIChatModel maps from the
API's ``usage`` (``input_tokens`` including ``cache_read_tokens``, ``output_tokens``
including ``output_reasoning_tokens``) and whose ``model_name`` is the dated snapshot that
answered; ``request_stream`` streams the reply piece by piece and, as an OpenAI stream with
``include_usage`` does, reports the usage only with its last piece. Without usage the
response is marked ``unmeasured``, as pydantic-ai does. The script, the call counter and the
failure knobs are :class:`~tests.scripted_provider.ScriptedProvider`'s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
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

from .fake_chat_models import Bill
from .provider_servers import ToolCall
from .scripted_provider import Reply, ScriptedProvider, pieces

__all__ = ["Bill", "FakeOpenAIChatModel", "ToolCall"]


def _request_usage(provider: ScriptedProvider) -> RequestUsage:
    if not provider.report_usage:
        return RequestUsage(unmeasured_requests=1)
    bill = provider.bill
    return RequestUsage(
        input_tokens=bill.input_tokens,
        cache_read_tokens=bill.cache_read,
        output_tokens=bill.output_tokens,
        output_reasoning_tokens=bill.reasoning,
    )


class FakeOpenAIChatModel(ScriptedProvider, Model):
    """Scripted answers with OpenAIChatModel's usage shapes (see the module docstring);
    keyword options are :class:`~tests.scripted_provider.ScriptedProvider`'s."""

    def __init__(self, model: str = "gpt-4o", **script: Any) -> None:
        Model.__init__(self)
        self._name = model
        self._script(**script)

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def system(self) -> str:
        return "openai"

    @staticmethod
    def _part(reply: Reply) -> ModelResponsePart:
        if isinstance(reply, ToolCall):
            return ToolCallPart(reply.name, reply.arguments, tool_call_id=reply.id or "call_1")
        return TextPart(reply)

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        reply = self._take(model_settings)
        await self._wait_at_provider()
        return ModelResponse(
            parts=[self._part(reply)],
            usage=_request_usage(self),
            model_name=self.answered or self._name,
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
        reply = self._take(model_settings)
        await self._wait_at_provider()
        yield _FakeStream(
            model_request_parameters=model_request_parameters, _reply=reply, _owner=self
        )


@dataclass
class _FakeStream(StreamedResponse):
    """The stream of one scripted reply; usage arrives with the last piece."""

    _reply: Reply = ""
    _owner: Any = None
    _timestamp: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    async def _get_event_iterator(self) -> AsyncIterator[ModelResponseStreamEvent]:
        owner: FakeOpenAIChatModel = self._owner
        reply = self._reply
        parts = pieces(reply)
        for index, piece in enumerate(parts):
            await owner._stall(index)
            if isinstance(reply, ToolCall):
                event = self._parts_manager.handle_tool_call_delta(
                    vendor_part_id=0,
                    tool_name=reply.name if index == 0 else None,
                    args=piece,
                    tool_call_id=reply.id or "call_1",
                )
                if event is not None:
                    yield event
            else:
                for event in self._parts_manager.handle_text_delta(
                    vendor_part_id="content", content=piece
                ):
                    yield event
            if index == len(parts) - 1 and owner.report_usage:
                self._add_usage(_request_usage(owner), reported=True)

    async def close_stream(self) -> None:
        """Nothing to close: the reply lives in memory."""

    @property
    def model_name(self) -> str:
        owner: FakeOpenAIChatModel = self._owner
        return owner.answered or owner.model_name

    @property
    def provider_name(self) -> str:
        return "openai"

    @property
    def provider_url(self) -> None:
        return None

    @property
    def timestamp(self) -> datetime:
        return self._timestamp
