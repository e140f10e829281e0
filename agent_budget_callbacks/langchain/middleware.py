"""BudgetMiddleware: LangChain v1 agents (``create_agent``) that land instead of crash.

Around every model call of the agent it reserves the call in the budget, with the output
cap clamped to what the budget can still hold (and passed on to the model, so the provider
honours it); commits what the model reported; and when the budget refuses, it switches to a
cheaper fallback model or ends the turn with a final ``AIMessage``, so the graph state stays
valid and a checkpointed thread can go on after a top-up. Optionally it tells the model,
in a short system note, how much is left once that falls under a threshold.

It accounts for the calls it wraps itself; a :class:`BudgetCallbackHandler` of the same
budget attached underneath (``budget_guard``, callbacks) skips those calls, so nothing is
charged twice. Needs ``agent-budget[langgraph]`` (langchain >= 1).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from langchain.agents.middleware.types import (
    AgentMiddleware,
    ExtendedModelResponse,
    ModelRequest,
    ModelResponse,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from agent_budget import Budget, BudgetExceededError, BudgetManager, Reservation, TokenCounter
from agent_budget.aio import off_loop
from agent_budget.calls import DEFAULT_MAX_OUTPUT_TOKENS, CallLifecycle, accounting_for
from agent_budget.landing import DEFAULT_FINAL_MESSAGE, FinalMessage, Landing
from agent_budget.remaining import Remaining

from .handler import NO_USAGE_HINT
from .payload import chat_input_tokens, chat_model_request, message_outcome

__all__ = ["DEFAULT_FINAL_MESSAGE", "BudgetMiddleware", "FinalMessage"]

_ModelResult = ModelResponse[Any] | AIMessage | ExtendedModelResponse[Any]


class BudgetMiddleware(AgentMiddleware[Any, Any, Any]):
    """Budget enforcement for ``langchain.agents.create_agent``.

    ``budget`` is a :class:`Budget` or a :class:`BudgetManager` (each call's scope comes
    from the run's ``metadata["budget_scope"]``, an enclosing ``budget_scope`` block, or
    ``scope``). The session of a call is ``metadata["budget_session"]``, else LangGraph's
    ``thread_id``, so ``*_per_session`` limits mean "per conversation".

    - ``clamp`` (default on): the model's output cap (``max_tokens`` or the model's own
      name for it) is lowered to what fits, down to ``min_output_tokens``.
    - ``fallback_model``: on a refusal, retry the call with this (cheaper) model.
    - ``final_message``: a text (formatted with the refusal's ``limit_type``, ``scope``,
      ``used`` and ``limit``) or a function of the :class:`BudgetExceededError` returning a
      text or an ``AIMessage``; it ends the turn when nothing fits. ``on_exhausted="raise"``
      re-raises the refusal instead.
    - ``note_below``: when the tightest limit has less than this fraction left (e.g.
      ``0.2``), a short system note tells the model how much is left, so it can wrap up.

    The other options are :class:`BudgetCallbackHandler`'s.
    """

    def __init__(
        self,
        budget: Budget | BudgetManager,
        *,
        clamp: bool = True,
        min_output_tokens: int = 64,
        fallback_model: BaseChatModel | None = None,
        final_message: FinalMessage = DEFAULT_FINAL_MESSAGE,
        on_exhausted: Literal["finish", "raise"] = "finish",
        note_below: float | None = None,
        scope: str | None = None,
        parent: str | None = None,
        session_id: str | None = None,
        default_model: str | None = None,
        default_max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
        counter: TokenCounter | None = None,
        hold_ttl: float | None = None,
        wait: float = 0.0,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if fallback_model is not None and not isinstance(fallback_model, BaseChatModel):
            raise TypeError("fallback_model must be a LangChain chat model")
        self.landing = Landing(clamp, min_output_tokens, final_message, on_exhausted, note_below)
        self.calls = CallLifecycle(
            budget,
            framework="langchain-agent",
            scope=scope,
            parent=parent,
            session_id=session_id,
            default_model=default_model,
            default_max_output_tokens=default_max_output_tokens,
            counter=counter,
            hold_ttl=hold_ttl,
            metadata=metadata,
            wait=wait,
        )
        self.fallback_model = fallback_model

    @property
    def name(self) -> str:
        return "BudgetMiddleware"

    # -- what a call asks for ----------------------------------------------------------------

    def _start_kwargs(self, request: ModelRequest[Any]) -> dict[str, Any]:
        model_name, cap, _key = chat_model_request(request.model, request.model_settings)
        scope, parent, session = _run_selection()
        messages: list[BaseMessage] = list(request.messages)
        if request.system_message is not None:
            messages.insert(0, request.system_message)
        tools = [_tool_schema(t) for t in request.tools]
        params = {"tools": tools} if tools else {}
        counter = self.calls.counter
        return {
            "model": model_name,
            "input_tokens": lambda: chat_input_tokens(messages, params, counter),
            "max_output_tokens": cap,
            "scope": scope,
            "parent": parent,
            "session": session,
            "min_output_tokens": self.landing.floor,
        }

    def _candidates(self, request: ModelRequest[Any]) -> list[ModelRequest[Any]]:
        if self.fallback_model is None or self.fallback_model is request.model:
            return [request]
        return [request, request.override(model=self.fallback_model)]

    def _granted(
        self, request: ModelRequest[Any], reservation: Reservation, note: str | None
    ) -> ModelRequest[Any]:
        """The request as sent: its output cap set to the reservation's, and the note."""
        _name, cap, key = chat_model_request(request.model, request.model_settings)
        overrides: dict[str, Any] = {}
        if self.landing.clamp and cap != reservation.max_output_tokens:
            settings = dict(request.model_settings)
            settings[key] = reservation.max_output_tokens
            overrides["model_settings"] = settings
        if note is not None:
            base = request.system_message
            text = f"{base.text}\n\n{note}" if base is not None and base.text else note
            overrides["system_message"] = SystemMessage(content=text)
        return request.override(**overrides) if overrides else request

    def _remaining(self, kwargs: Mapping[str, Any]) -> Remaining | None:
        if self.landing.note_below is None:
            return None
        budget = self.calls.budget_for(kwargs["scope"], kwargs["parent"])
        return budget.remaining(kwargs["model"])

    # -- the end of the turn -------------------------------------------------------------

    def _finish(self, refusal: BudgetExceededError) -> AIMessage:
        produced = self.landing.final(refusal)
        message = produced if isinstance(produced, AIMessage) else AIMessage(str(produced))
        message.response_metadata = {
            **message.response_metadata,
            "agent_budget": Landing.marker(refusal),
        }
        return message

    @staticmethod
    def _end_args(result: _ModelResult) -> dict[str, Any]:
        """What ``CallLifecycle.end`` needs from the model's reply."""
        message = _ai_message(result)
        if message is None:
            return {"usage": None, "no_usage_hint": NO_USAGE_HINT}
        outcome = message_outcome(message)
        return {
            "usage": outcome.usage,
            "model": outcome.model,
            "text": str(message.text) if outcome.usage is None else None,
            "no_usage_hint": NO_USAGE_HINT,
        }

    # -- the middleware hooks ------------------------------------------------------------

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> _ModelResult:
        """Reserve (clamped), call, commit; on a refusal fall back or finish the turn."""
        refusal: BudgetExceededError | None = None
        for candidate in self._candidates(request):
            kwargs = self._start_kwargs(candidate)
            note = self.landing.note(self._remaining(kwargs))
            call_id = str(uuid.uuid4())
            try:
                reservation = self.calls.start(call_id, **kwargs)
            except BudgetExceededError as exc:
                refusal = exc
                continue
            sent = self._granted(candidate, reservation, note)
            try:
                with accounting_for(self.calls.target, reservation.budget):
                    result = handler(sent)
            except BaseException as exc:
                self.calls.fail(call_id, exc)
                raise
            self.calls.end(call_id, **self._end_args(result))
            return result
        assert refusal is not None
        return self._finish(refusal)

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> _ModelResult:
        """:meth:`wrap_model_call` for async agents; the store is never awaited on the loop."""
        refusal: BudgetExceededError | None = None
        for candidate in self._candidates(request):
            kwargs = self._start_kwargs(candidate)
            note = None
            if self.landing.note_below is not None:
                left = await off_loop(lambda kw=kwargs: self._remaining(kw))  # type: ignore[misc]
                note = self.landing.note(left)
            call_id = str(uuid.uuid4())
            try:
                reservation = await self.calls.astart(call_id, **kwargs)
            except BudgetExceededError as exc:
                refusal = exc
                continue
            sent = self._granted(candidate, reservation, note)
            try:
                with accounting_for(self.calls.target, reservation.budget):
                    result = await handler(sent)
            except BaseException as exc:
                await self.calls.afail(call_id, exc)
                raise
            await self.calls.aend(call_id, **self._end_args(result))
            return result
        assert refusal is not None
        return self._finish(refusal)


def _ai_message(result: object) -> AIMessage | None:
    if isinstance(result, AIMessage):
        return result
    if isinstance(result, ExtendedModelResponse):
        result = result.model_response
    if isinstance(result, ModelResponse):
        for message in result.result:
            if isinstance(message, AIMessage):
                return message
    return None


def _tool_schema(tool: BaseTool | Mapping[str, Any]) -> Any:
    if isinstance(tool, Mapping):
        return dict(tool)
    try:
        return convert_to_openai_tool(tool)
    except Exception:
        return {"name": getattr(tool, "name", ""), "description": getattr(tool, "description", "")}


def _run_selection() -> tuple[str | None, str | None, str | None]:
    """Scope, parent and session of the current agent run, from its RunnableConfig."""
    try:
        from langgraph.config import get_config

        config = get_config()
    except Exception:
        return None, None, None
    metadata = config.get("metadata") or {}
    configurable = config.get("configurable") or {}
    scope = metadata.get("budget_scope")
    parent = metadata.get("budget_parent")
    session = metadata.get("budget_session") or configurable.get("thread_id")
    return (
        str(scope) if scope else None,
        str(parent) if parent else None,
        str(session) if session else None,
    )
