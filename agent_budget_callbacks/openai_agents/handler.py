"""BudgetHooks and BudgetModel: the OpenAI Agents SDK's model calls read into the core call
lifecycle.

``BudgetHooks`` is a ``RunHooks``: ``on_llm_start`` is awaited just before each model call,
so raising :class:`~agent_budget.BudgetExceededError` there refuses the call before the
provider runs (``Runner.run``, ``run_sync`` and ``run_streamed`` raise it unchanged);
``on_llm_end`` commits the ``ModelResponse.usage`` the provider reported. Hooks cannot see
everything: each retry attempt, a call that fails, the stream events, the settings sent.
``BudgetModel`` wraps a ``Model`` and sees all of it, so when a call goes through one it
does the accounting and the hooks leave that call alone: the model adopts the hold the
hooks took for the call (matched by the input list the SDK hands both), reserves again for
a retry attempt, commits a stream's final usage, charges a stream cut short what it
produced, and releases the hold of a call that failed. A call is never charged twice.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from agents import Agent, Model, ModelResponse, ModelSettings, ModelTracing, RunContextWrapper
from agents.agent_output import AgentOutputSchemaBase
from agents.handoffs import Handoff
from agents.items import TResponseInputItem, TResponseStreamEvent
from agents.lifecycle import RunHooks
from agents.retry import ModelRetryAdvice, ModelRetryAdviceRequest, ModelRetryNormalizedError
from agents.tool import Tool

from agent_budget import Budget, BudgetError, BudgetManager, BudgetWarning
from agent_budget.calls import CallLifecycle, CallTally, LifecycleAdapter, LifecycleOptions

from .payload import (
    input_tokens,
    max_output_tokens,
    model_name,
    read_event,
    response_text,
    response_usage,
    service_tier,
)
from .turns import TURNS, Turn, new_call_id

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["NO_USAGE_HINT", "BudgetHooks", "BudgetModel"]

log = logging.getLogger("agent_budget.openai_agents")

NO_USAGE_HINT = (
    "Chat Completions models report usage on streams only when asked: pass "
    "ModelSettings(include_usage=True)"
)


class BudgetHooks(LifecycleAdapter, RunHooks[Any]):
    """``RunHooks`` that enforce a :class:`~agent_budget.Budget` or a
    :class:`~agent_budget.BudgetManager` on every model call of a run.

    Pass it as ``Runner.run(agent, input, hooks=hooks)``; add
    ``run_config=hooks.run_config()`` so the models are wrapped too (exact accounting of
    retries, failures and streams; see the module docstring). With a manager, the scope of
    each call comes from the run's context object (``Runner.run(..., context=...)``: key or
    attribute ``scope_key``, default ``budget_scope``; ``parent_key`` names a template-made
    scope's parent), else an enclosing :func:`~agent_budget.budget_scope` block, else
    ``scope``; the session likewise from ``session_key`` (``budget_session``), the block, or
    ``session_id``.

    ``default_max_output_tokens`` is held as output when a call sets no ``max_tokens`` (the
    core's one default, 4096); ``clamp=True`` holds the largest output cap up to that which
    fits every limit, down to ``min_output_tokens`` (refusing below it), and makes wrapped
    models send it as ``max_tokens``; ``wait`` (seconds) lets a call that only fails to fit
    because of other calls' holds wait for them; ``default_model`` names calls whose model
    is unknown; ``counter`` estimates prompts; ``hold_ttl`` overrides the budget's hold
    lifetime; ``metadata`` is added to every record. Subclasses that override a hook call
    ``super()`` first.
    """

    def __init__(self, budget: Budget | BudgetManager, **options: Unpack[LifecycleOptions]) -> None:
        self._calls = CallLifecycle(budget, framework="openai-agents", **options)

    def wrap(self, model: Model, *, name: str | None = None) -> BudgetModel:
        """``model`` wrapped so its calls are accounted exactly (see :class:`BudgetModel`)."""
        return BudgetModel(model, self, name=name)

    def run_config(self, run_config: Any = None) -> Any:
        """A copy of ``run_config`` (or a new ``RunConfig``) whose model provider and model
        are wrapped by these hooks; see :func:`~.install.budget_run_config`."""
        from .install import budget_run_config

        return budget_run_config(self, run_config)

    def __repr__(self) -> str:
        return f"BudgetHooks({self.budget!r})"

    # -- the hooks ---------------------------------------------------------------------------

    async def on_llm_start(
        self,
        context: RunContextWrapper[Any],
        agent: Agent[Any],
        system_prompt: str | None,
        input_items: list[TResponseInputItem],
    ) -> None:
        """Reserve the call's worst case; raises to refuse it (the model is not called)."""
        calls = self._calls
        scope, parent, session = calls.select(getattr(context, "context", None))
        turn = Turn(calls, new_call_id(), input_items, context, agent, scope, parent, session)
        settings = getattr(agent, "model_settings", None)
        model = model_name(getattr(agent, "model", None)) or calls.default_model
        await calls.astart(
            turn.call_id,
            model=model,
            input_tokens=lambda: input_tokens(system_prompt, input_items, calls.counter),
            max_output_tokens=max_output_tokens(settings),
            scope=scope,
            parent=parent,
            session=session,
            service_tier=service_tier(settings),
        )
        TURNS.add(turn)

    async def on_llm_end(
        self,
        context: RunContextWrapper[Any],
        agent: Agent[Any],
        response: ModelResponse,
    ) -> None:
        """Commit the usage the provider reported, unless a BudgetModel accounted the call."""
        try:
            turn = TURNS.end(context, agent, self._calls)
            if turn is None or turn.adopted:
                return
            if self._calls.clamp:
                _warn_unclamped(agent)
            usage = response_usage(response)
            await self._calls.aend(
                turn.call_id,
                usage,
                text=response_text(response) if usage is None else None,
                no_usage_hint=NO_USAGE_HINT,
            )
        except Exception:
            log.exception("agent-budget could not record the end of a model call")


_UNCLAMPED_WARNED: set[str] = set()


def _warn_unclamped(agent: object) -> None:
    """Once per agent name: clamp=True held a smaller output cap that nothing sent."""
    name = str(getattr(agent, "name", "") or "")
    if name in _UNCLAMPED_WARNED or len(_UNCLAMPED_WARNED) >= 1024:
        return
    _UNCLAMPED_WARNED.add(name)
    message = (
        f"BudgetHooks(clamp=True): the model of agent {name!r} is not wrapped, so the clamped "
        "max_tokens was held but not sent; pass run_config=hooks.run_config() or "
        "model=hooks.wrap(model)"
    )
    warnings.warn(message, BudgetWarning, stacklevel=2)
    log.warning(message)


class BudgetModel(Model):
    """An ``agents.Model`` that reserves before each call of the model it wraps and commits
    what the call used: every retry attempt, failures, and streams (the final usage; a
    stream abandoned or cancelled is charged what it produced).

    ``budget`` is a :class:`BudgetHooks` (share the hooks of the run, so the hooks' hold for
    a call is taken over instead of charged twice), or a Budget / BudgetManager with the
    keyword options of :class:`BudgetHooks`. ``name`` is the model name to price calls with
    (default: the wrapped model's ``model`` attribute).
    """

    def __init__(
        self,
        model: Model,
        budget: BudgetHooks | Budget | BudgetManager,
        *,
        name: str | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(model, Model):
            raise TypeError(f"model must be an agents.Model, got {type(model).__name__}")
        if isinstance(budget, BudgetHooks):
            if options:
                raise TypeError("BudgetModel(model, hooks) takes no hook options")
            hooks = budget
        else:
            hooks = BudgetHooks(budget, **options)
        self.wrapped = model
        self.hooks = hooks
        self.name = name or model_name(model)

    def __repr__(self) -> str:
        return f"BudgetModel({self.wrapped!r}, {self.hooks.budget!r})"

    # -- one attempt at a call ----------------------------------------------------------------

    @asynccontextmanager
    async def _attempt(
        self,
        instructions: str | None,
        input: str | list[TResponseInputItem],
        settings: ModelSettings,
        extra: list[Any],
        *,
        stream: bool,
    ) -> AsyncIterator[tuple[CallTally, ModelSettings]]:
        calls = self.hooks.calls
        call_id = None
        scope = parent = session = None
        cap = max_output_tokens(settings)
        for turn in TURNS.for_input(input):
            if turn.calls.target is not calls.target:
                # Another budget's hooks started this call: share its id, so a refusal here
                # frees that hold too.
                call_id = call_id or turn.call_id
                continue
            calls = turn.calls
            scope, parent, session = turn.scope, turn.parent, turn.session
            turn.attempts += 1
            if turn.adopted:
                call_id = f"{turn.call_id}#{turn.attempts}"  # a retry: a new provider call
            else:
                turn.adopted = True
                call_id = turn.call_id
                held = calls.get(call_id)
                bigger = cap is not None and held is not None and cap > held.max_output_tokens
                if held is not None and bigger and not calls.clamp:
                    # The run's settings ask for more than the hooks could see: hold it.
                    calls.pop(call_id)
                    await held.budget.arelease(held)
            break
        counter = calls.counter
        async with calls.acall(
            call_id or new_call_id(),
            model=self.name or calls.default_model,
            input_tokens=lambda: input_tokens(instructions, input, counter, extra),
            max_output_tokens=cap,
            scope=scope,
            parent=parent,
            session=session,
            service_tier=service_tier(settings),
            stream=stream,
            no_usage_hint=NO_USAGE_HINT,
        ) as tally:
            send = calls.cap_to_send(cap, tally.reservation)
            if send is not None:
                settings = dataclasses.replace(settings, max_tokens=send)
            yield tally, settings

    # -- agents.Model ---------------------------------------------------------------------------

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
        extra: list[Any] = [*tools, *handoffs]
        async with self._attempt(
            system_instructions, input, model_settings, extra, stream=False
        ) as (tally, settings):
            response = await self.wrapped.get_response(
                system_instructions,
                input,
                settings,
                tools,
                output_schema,
                handoffs,
                tracing,
                previous_response_id=previous_response_id,
                conversation_id=conversation_id,
                prompt=prompt,
            )
            tally.usage = response_usage(response)
            if tally.usage is None:
                tally.add_text(response_text(response))
            return response

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
        extra: list[Any] = [*tools, *handoffs]
        async with self._attempt(
            system_instructions, input, model_settings, extra, stream=True
        ) as (tally, settings):
            async for event in self.wrapped.stream_response(
                system_instructions,
                input,
                settings,
                tools,
                output_schema,
                handoffs,
                tracing,
                previous_response_id=previous_response_id,
                conversation_id=conversation_id,
                prompt=prompt,
            ):
                text, usage, answered, done = read_event(event)
                if text:
                    tally.add_text(text)
                if done:
                    tally.usage, tally.model, tally.complete = usage, answered, True
                yield event

    # -- the rest of the interface, forwarded -----------------------------------------------------

    def get_retry_advice(self, request: ModelRetryAdviceRequest) -> ModelRetryAdvice | None:
        """A budget refusal is final: no retry policy may resend the call."""
        if isinstance(request.error, BudgetError):
            return ModelRetryAdvice(
                suggested=False,
                reason="agent-budget refused the call",
                normalized=ModelRetryNormalizedError(is_abort=True),
            )
        return self.wrapped.get_retry_advice(request)

    async def close(self) -> None:
        await self.wrapped.close()

    async def _cleanup_on_run_end(self, owner: object) -> None:
        await self.wrapped._cleanup_on_run_end(owner)

    def __getattr__(self, name: str) -> Any:
        # Model-specific attributes (``model``, ``_client``...) read through to the wrapped one.
        if name in ("wrapped", "hooks", "name"):
            raise AttributeError(name)
        return getattr(self.wrapped, name)
