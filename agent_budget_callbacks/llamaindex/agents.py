"""BudgetLLM: LlamaIndex agents (FunctionAgent, AgentWorkflow, ReActAgent) that land instead
of crash.

``BudgetLLM(llm, budget)`` wraps the agent's LLM. Around every call it reserves the call in
the budget with the output cap clamped to what the budget can still hold (and passes that
cap to the LLM, so the provider honours it), commits what the provider reported, and when
the budget refuses it retries with a cheaper ``fallback_llm`` or answers with a final
message (no tool calls), so the agent finishes its run instead of raising. Optionally it
tells the model, in a short system note, how much is left once that falls under a
threshold. Async calls never wait on the store on the event loop.

It accounts for the calls it wraps itself: a :class:`BudgetCallbackHandler` of the same
budget (``install(budget)``) skips those calls, so nothing is charged twice.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Generator, Sequence
from typing import Any, Literal

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from pydantic import Field, PrivateAttr

from agent_budget import Budget, BudgetExceededError, BudgetManager, Reservation, TokenCounter
from agent_budget.aio import off_loop
from agent_budget.calls import DEFAULT_MAX_OUTPUT_TOKENS, CallLifecycle, accounting_for
from agent_budget.landing import DEFAULT_FINAL_MESSAGE, FinalMessage, Landing
from agent_budget.remaining import Remaining

from .handler import NO_USAGE_HINT
from .payload import (
    MAX_OUTPUT_KWARGS,
    estimate_input_tokens,
    model_from_serialized,
    response_model,
    response_text,
    usage_from_response,
)

__all__ = ["DEFAULT_FINAL_MESSAGE", "BudgetLLM"]


class _Call:
    """What one wrapped call needs after it was admitted."""

    __slots__ = ("budget", "call_id", "kwargs", "llm", "messages")

    def __init__(
        self, call_id: str, budget: Budget, llm: Any, kwargs: dict[str, Any], messages: Any
    ) -> None:
        self.call_id = call_id
        self.budget = budget  # the one its hold was taken in
        self.llm = llm
        self.messages = messages
        self.kwargs = kwargs


class BudgetLLM(FunctionCallingLLM):
    """A LlamaIndex LLM that enforces ``budget`` around ``llm`` (see the module docstring).

    ``budget`` is a :class:`Budget` or a :class:`BudgetManager` (the scope from ``scope=``
    or an enclosing ``budget_scope(...)`` block, which also names the session). ``clamp``
    lowers each call's ``max_tokens`` to what fits, down to ``min_output_tokens``;
    ``fallback_llm`` answers when ``llm`` does not fit; ``final_message`` (a text formatted
    with the refusal's ``limit_type``, ``scope``, ``used``, ``limit``, or a function of the
    :class:`BudgetExceededError`) is the answer when nothing fits, unless
    ``on_exhausted="raise"``; ``note_below`` (a fraction, e.g. ``0.2``) adds a system note
    with what is left once the tightest limit has less than that fraction left. The other
    options are the callback handler's.
    """

    llm: Any = Field(description="The LLM that answers.")
    fallback_llm: Any = Field(default=None, description="A cheaper LLM used on a refusal.")

    _calls: CallLifecycle = PrivateAttr()
    _landing: Landing = PrivateAttr(default_factory=Landing)

    def __init__(
        self,
        llm: Any,
        budget: Budget | BudgetManager,
        *,
        clamp: bool = True,
        min_output_tokens: int = 64,
        fallback_llm: Any = None,
        final_message: FinalMessage = DEFAULT_FINAL_MESSAGE,
        on_exhausted: Literal["finish", "raise"] = "finish",
        note_below: float | None = None,
        scope: str | None = None,
        session_id: str | None = None,
        default_model: str | None = None,
        default_max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
        counter: TokenCounter | None = None,
        hold_ttl: float | None = None,
        wait: float = 0.0,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        for name, value in (("llm", llm), ("fallback_llm", fallback_llm)):
            if value is not None and not callable(getattr(value, "chat", None)):
                raise TypeError(f"{name} must be a LlamaIndex LLM, got {type(value).__name__}")
        if llm is None:
            raise TypeError("llm must be a LlamaIndex LLM")
        landing = Landing(clamp, min_output_tokens, final_message, on_exhausted, note_below)
        super().__init__(llm=llm, fallback_llm=fallback_llm)
        self._calls = CallLifecycle(
            budget,
            framework="llamaindex-agent",
            scope=scope,
            session_id=session_id,
            default_model=default_model,
            default_max_output_tokens=default_max_output_tokens,
            counter=counter,
            hold_ttl=hold_ttl,
            metadata=metadata,
            wait=wait,
        )
        self._landing = landing

    @classmethod
    def class_name(cls) -> str:
        return "BudgetLLM"

    @property
    def metadata(self) -> LLMMetadata:
        meta: LLMMetadata = self.llm.metadata
        return meta

    @property
    def calls(self) -> CallLifecycle:
        """The core lifecycle this wrapper feeds."""
        return self._calls

    # -- tool calling: the wrapped LLM's own rules -------------------------------------------

    def _prepare_chat_with_tools(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        prepared: dict[str, Any] = self.llm._prepare_chat_with_tools(*args, **kwargs)
        return prepared

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[Any],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        validate = getattr(self.llm, "_validate_chat_with_tools_response", None)
        if _exhausted(response) or not callable(validate):
            return response
        checked: ChatResponse = validate(
            response, tools, allow_parallel_tool_calls=allow_parallel_tool_calls, **kwargs
        )
        return checked

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        if _exhausted(response):
            return []
        found: list[ToolSelection] = self.llm.get_tool_calls_from_response(
            response, error_on_no_tool_call=error_on_no_tool_call, **kwargs
        )
        return found

    # -- admission -----------------------------------------------------------------------

    def _llms(self) -> list[Any]:
        return [self.llm] if self.fallback_llm is None else [self.llm, self.fallback_llm]

    def _start_kwargs(
        self, llm: Any, messages: Sequence[ChatMessage] | None, prompt: str | None, kwargs: Any
    ) -> dict[str, Any]:
        counter = self._calls.counter
        return {
            "model": _model_name(llm),
            "input_tokens": lambda: estimate_input_tokens(prompt, messages, kwargs, counter),
            "max_output_tokens": _output_cap(llm, kwargs),
            "min_output_tokens": self._landing.floor,
        }

    def _granted(
        self, llm: Any, kwargs: dict[str, Any], hold: Reservation
    ) -> tuple[Any, dict[str, Any]]:
        """The LLM and call kwargs that send the reservation's output cap.

        LlamaIndex LLMs with their own ``max_tokens`` (llama-index OpenAI, Anthropic) let
        that field win over a per-call kwarg, so such an LLM is sent as a shallow copy with
        the field lowered; others get the kwarg."""
        cap = hold.max_output_tokens
        if not self._landing.clamp or _output_cap(llm, kwargs) == cap:
            return llm, kwargs
        key = next((k for k in MAX_OUTPUT_KWARGS if k in kwargs), "max_tokens")
        if key not in kwargs and getattr(llm, "max_tokens", None) is not None:
            copy = getattr(llm, "model_copy", None)
            if callable(copy):
                return copy(update={"max_tokens": cap}), kwargs
        return llm, {**kwargs, key: cap}

    def _remaining(self, model: str | None) -> Remaining | None:
        if self._landing.note_below is None:
            return None
        return self._calls.budget_for().remaining(model)

    @staticmethod
    def _with_note(messages: Sequence[ChatMessage], note: str | None) -> Sequence[ChatMessage]:
        if note is None:
            return messages
        return [ChatMessage(role=MessageRole.SYSTEM, content=note), *messages]

    def _admit(
        self, messages: Sequence[ChatMessage] | None, prompt: str | None, kwargs: dict[str, Any]
    ) -> _Call | BudgetExceededError:
        refusal: BudgetExceededError | None = None
        for llm in self._llms():
            start = self._start_kwargs(llm, messages, prompt, kwargs)
            note = self._landing.note(self._remaining(start["model"]))
            call_id = str(uuid.uuid4())
            try:
                hold = self._calls.start(call_id, **start)
            except BudgetExceededError as exc:
                refusal = exc
                continue
            sent = self._with_note(messages, note) if messages is not None else None
            return _Call(call_id, hold.budget, *self._granted(llm, kwargs, hold), sent)
        assert refusal is not None
        return refusal

    async def _aadmit(
        self, messages: Sequence[ChatMessage] | None, prompt: str | None, kwargs: dict[str, Any]
    ) -> _Call | BudgetExceededError:
        refusal: BudgetExceededError | None = None
        for llm in self._llms():
            start = self._start_kwargs(llm, messages, prompt, kwargs)
            note = None
            if self._landing.note_below is not None:
                model = start["model"]
                left = await off_loop(lambda m=model: self._remaining(m))  # type: ignore[misc]
                note = self._landing.note(left)
            call_id = str(uuid.uuid4())
            try:
                hold = await self._calls.astart(call_id, **start)
            except BudgetExceededError as exc:
                refusal = exc
                continue
            sent = self._with_note(messages, note) if messages is not None else None
            return _Call(call_id, hold.budget, *self._granted(llm, kwargs, hold), sent)
        assert refusal is not None
        return refusal

    def _final_text(self, refusal: BudgetExceededError) -> str:
        return str(self._landing.final(refusal))

    def _final_chat(self, refusal: BudgetExceededError) -> ChatResponse:
        text = self._final_text(refusal)
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=text),
            delta=text,
            additional_kwargs={"agent_budget": Landing.marker(refusal)},
        )

    def _final_completion(self, refusal: BudgetExceededError) -> CompletionResponse:
        text = self._final_text(refusal)
        return CompletionResponse(
            text=text, delta=text, additional_kwargs={"agent_budget": Landing.marker(refusal)}
        )

    def _end(self, call: _Call, response: Any) -> None:
        self._calls.end(
            call.call_id,
            usage_from_response(response),
            model=response_model(response),
            text=response_text(response),
            no_usage_hint=NO_USAGE_HINT,
        )

    def _fail(self, call: _Call, error: BaseException, last: Any) -> None:
        self._calls.fail(
            call.call_id,
            error,
            usage=usage_from_response(last),
            model=response_model(last),
            text=response_text(last) if last is not None else None,
        )

    async def _aend(self, call: _Call, response: Any) -> None:
        await self._calls.aend(
            call.call_id,
            usage_from_response(response),
            model=response_model(response),
            text=response_text(response),
            no_usage_hint=NO_USAGE_HINT,
        )

    async def _afail(self, call: _Call, error: BaseException, last: Any) -> None:
        await self._calls.afail(
            call.call_id,
            error,
            usage=usage_from_response(last),
            model=response_model(last),
            text=response_text(last) if last is not None else None,
        )

    # -- chat ------------------------------------------------------------------------------

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        call = self._admit(messages, None, kwargs)
        if isinstance(call, BudgetExceededError):
            return self._final_chat(call)
        try:
            with accounting_for(self._calls.target, call.budget):
                response: ChatResponse = call.llm.chat(call.messages, **call.kwargs)
        except BaseException as exc:
            self._fail(call, exc, None)
            raise
        self._end(call, response)
        return response

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        call = await self._aadmit(messages, None, kwargs)
        if isinstance(call, BudgetExceededError):
            return self._final_chat(call)
        try:
            with accounting_for(self._calls.target, call.budget):
                response: ChatResponse = await call.llm.achat(call.messages, **call.kwargs)
        except BaseException as exc:
            await self._afail(call, exc, None)
            raise
        await self._aend(call, response)
        return response

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        call = self._admit(messages, None, kwargs)
        if isinstance(call, BudgetExceededError):
            return _one(self._final_chat(call))
        try:
            with accounting_for(self._calls.target, call.budget):
                stream = call.llm.stream_chat(call.messages, **call.kwargs)
        except BaseException as exc:  # failed before streaming (e.g. refused connection)
            self._fail(call, exc, None)
            raise
        return self._relay(call, stream)

    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        call = await self._aadmit(messages, None, kwargs)
        if isinstance(call, BudgetExceededError):
            return _aone(self._final_chat(call))
        try:
            with accounting_for(self._calls.target, call.budget):
                stream = await call.llm.astream_chat(call.messages, **call.kwargs)
        except BaseException as exc:  # failed before streaming (e.g. refused connection)
            await self._afail(call, exc, None)
            raise
        return self._arelay(call, stream)

    # -- completion ------------------------------------------------------------------------

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        call = self._admit(None, prompt, kwargs)
        if isinstance(call, BudgetExceededError):
            return self._final_completion(call)
        try:
            with accounting_for(self._calls.target, call.budget):
                response: CompletionResponse = call.llm.complete(
                    prompt, formatted=formatted, **call.kwargs
                )
        except BaseException as exc:
            self._fail(call, exc, None)
            raise
        self._end(call, response)
        return response

    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        call = await self._aadmit(None, prompt, kwargs)
        if isinstance(call, BudgetExceededError):
            return self._final_completion(call)
        try:
            with accounting_for(self._calls.target, call.budget):
                response: CompletionResponse = await call.llm.acomplete(
                    prompt, formatted=formatted, **call.kwargs
                )
        except BaseException as exc:
            await self._afail(call, exc, None)
            raise
        await self._aend(call, response)
        return response

    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        call = self._admit(None, prompt, kwargs)
        if isinstance(call, BudgetExceededError):
            return _one(self._final_completion(call))
        try:
            with accounting_for(self._calls.target, call.budget):
                stream = call.llm.stream_complete(prompt, formatted=formatted, **call.kwargs)
        except BaseException as exc:  # failed before streaming (e.g. refused connection)
            self._fail(call, exc, None)
            raise
        return self._relay(call, stream)

    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        call = await self._aadmit(None, prompt, kwargs)
        if isinstance(call, BudgetExceededError):
            return _aone(self._final_completion(call))
        try:
            with accounting_for(self._calls.target, call.budget):
                stream = await call.llm.astream_complete(prompt, formatted=formatted, **call.kwargs)
        except BaseException as exc:  # failed before streaming (e.g. refused connection)
            await self._afail(call, exc, None)
            raise
        return self._arelay(call, stream)

    # -- streams: charged for what they produced, however they end -----------------------------

    def _relay(self, call: _Call, stream: Any) -> Generator[Any, None, None]:
        last: Any = None
        try:
            with accounting_for(self._calls.target, call.budget):
                for last in stream:
                    yield last
        except BaseException as exc:
            self._fail(call, exc, last)
            raise
        self._end(call, last)

    async def _arelay(self, call: _Call, stream: Any) -> AsyncGenerator[Any, None]:
        last: Any = None
        try:
            with accounting_for(self._calls.target, call.budget):
                async for last in stream:
                    yield last
        except BaseException as exc:
            await self._afail(call, exc, last)
            raise
        await self._aend(call, last)


def _exhausted(response: Any) -> bool:
    extra = getattr(response, "additional_kwargs", None)
    return isinstance(extra, dict) and "agent_budget" in extra


def _one(response: Any) -> Generator[Any, None, None]:
    yield response


async def _aone(response: Any) -> AsyncGenerator[Any, None]:
    yield response


def _model_name(llm: Any) -> str | None:
    try:
        name = llm.metadata.model_name
    except Exception:
        name = None
    if isinstance(name, str) and name.strip().lower() not in ("", "unknown", "none"):
        return name
    for attr in ("model", "model_name"):
        found = model_from_serialized({"model": getattr(llm, attr, None)})
        if found:
            return found
    return None


def _output_cap(llm: Any, kwargs: dict[str, Any]) -> int | None:
    for key in MAX_OUTPUT_KWARGS:
        value = kwargs.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    value = getattr(llm, "max_tokens", None)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    try:
        num = llm.metadata.num_output
    except Exception:
        return None
    return num if isinstance(num, int) and not isinstance(num, bool) and num > 0 else None
