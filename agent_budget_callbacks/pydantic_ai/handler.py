"""BudgetCapability and BudgetModel: pydantic-ai model requests read into the core call
lifecycle.

pydantic-ai calls a capability's ``get_wrapper_model`` for every attempt at a model request,
with the model that serves it, so the :class:`BudgetModel` it returns sees each request the
provider gets: in ``run``, ``run_sync``, ``run_stream``, ``iter`` and every step of a tool
loop, after retries and fallbacks chose the model. It reserves the request's worst case
before the wrapped model runs (raising :class:`~agent_budget.BudgetExceededError` refuses the
request, and pydantic-ai passes it to the caller unchanged), then commits what the response
reported; a stream is charged its final usage, or what it produced when it was cut short.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from pydantic_ai._run_context import get_current_run_context
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings
from pydantic_ai.tools import RunContext

from agent_budget import Budget, BudgetManager
from agent_budget.calls import CallLifecycle, CallTally, LifecycleAdapter, LifecycleOptions

from .payload import (
    input_tokens,
    max_output_tokens,
    response_text,
    response_usage,
    service_tier,
    stream_outcome,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["NO_USAGE_HINT", "BudgetCapability", "BudgetModel"]

log = logging.getLogger("agent_budget.pydantic_ai")

NO_USAGE_HINT = (
    "the model reported no usage for this response (pydantic-ai marks it in "
    "RequestUsage.unmeasured_requests); use a provider or gateway that reports usage"
)


class BudgetCapability(LifecycleAdapter, AbstractCapability[Any]):
    """A pydantic-ai capability that enforces a :class:`~agent_budget.Budget` or a
    :class:`~agent_budget.BudgetManager` on every model request of the agents it is given to
    (``Agent(..., capabilities=[BudgetCapability(budget)])``, or per run with
    ``agent.run(..., capabilities=[...])``).

    The budget is the core's, over its store, so one cap is shared by every run, process and
    host that uses the same store; pydantic-ai's ``UsageLimits`` still apply per run. With a
    manager, the scope of each request comes from the run's ``deps`` (key or attribute
    ``scope_key``, default ``budget_scope``; ``parent_key`` names a template-made scope's
    parent), else an enclosing :func:`~agent_budget.budget_scope` block, else ``scope``; the
    session likewise from ``session_key`` (``budget_session``), the block, or ``session_id``.

    ``default_max_output_tokens`` is held as output when a request sets no ``max_tokens``
    (the core's one default, 4096); ``clamp=True`` holds the largest output cap up to that
    which fits every limit, down to ``min_output_tokens`` (refusing below it), and sends it
    as the request's ``max_tokens``; ``wait`` (seconds) lets a request that only fails to
    fit because of other calls' holds wait for them; ``default_model`` names requests whose
    model is unknown; ``counter`` estimates prompts; ``hold_ttl`` overrides the budget's hold
    lifetime; ``metadata`` is added to every record.
    """

    def __init__(self, budget: Budget | BudgetManager, **options: Unpack[LifecycleOptions]) -> None:
        self._calls = CallLifecycle(budget, framework="pydantic-ai", **options)

    @classmethod
    def get_serialization_name(cls) -> str | None:
        return None  # holds a live budget: not part of an agent spec

    def get_wrapper_model(self, model: Model) -> Model | None:
        """Wrap the model serving each request attempt in a :class:`BudgetModel`."""
        if isinstance(model, BudgetModel) and model.capability is self:
            return None
        return BudgetModel(model, self)

    def __repr__(self) -> str:
        return f"BudgetCapability({self.budget!r})"


class BudgetModel(WrapperModel):
    """A pydantic-ai ``WrapperModel`` that reserves before each request of the model it
    wraps and commits what the response reported (see the module docstring). Made by
    :class:`BudgetCapability`; usable on its own as ``Agent(BudgetModel(model,
    capability))``."""

    def __init__(self, wrapped: Model | str, capability: BudgetCapability) -> None:
        super().__init__(wrapped)
        if not isinstance(capability, BudgetCapability):
            raise TypeError(
                f"capability must be a BudgetCapability, got {type(capability).__name__}"
            )
        self.capability = capability

    @asynccontextmanager
    async def _attempt(
        self,
        messages: list[ModelMessage],
        settings: ModelSettings | None,
        params: ModelRequestParameters,
        ctx: RunContext[Any] | None,
        *,
        stream: bool,
    ) -> AsyncIterator[tuple[CallTally, ModelSettings | None]]:
        calls = self.capability.calls
        scope, parent, session = calls.select(getattr(ctx, "deps", None))
        counter = calls.counter
        cap = max_output_tokens(settings, self.wrapped.settings)
        async with calls.acall(
            uuid.uuid4().hex,
            model=self.wrapped.model_name or calls.default_model,
            input_tokens=lambda: input_tokens(messages, params, counter),
            max_output_tokens=cap,
            scope=scope,
            parent=parent,
            session=session,
            service_tier=service_tier(settings, self.wrapped.settings),
            stream=stream,
            no_usage_hint=NO_USAGE_HINT,
        ) as tally:
            send = calls.cap_to_send(cap, tally.reservation)
            if send is not None:
                settings = {**(settings or {}), "max_tokens": send}
            yield tally, settings

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        ctx = get_current_run_context()
        async with self._attempt(
            messages, model_settings, model_request_parameters, ctx, stream=False
        ) as (tally, settings):
            response = await self.wrapped.request(messages, settings, model_request_parameters)
            tally.usage = response_usage(response)
            tally.model = response.model_name or None
            if tally.usage is None:
                tally.add_text(response_text(response))
            return response

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: RunContext[Any] | None = None,
    ) -> AsyncIterator[StreamedResponse]:
        ctx = run_context if run_context is not None else get_current_run_context()
        async with (
            self._attempt(messages, model_settings, model_request_parameters, ctx, stream=True) as (
                tally,
                settings,
            ),
            self.wrapped.request_stream(
                messages, settings, model_request_parameters, run_context
            ) as streamed,
        ):
            try:
                yield streamed
            finally:
                try:
                    outcome = stream_outcome(streamed)
                except Exception:
                    log.exception("agent-budget could not read a streamed response")
                else:
                    tally.usage, tally.model, text, tally.complete = outcome
                    tally.add_text(text)

    def __repr__(self) -> str:
        return f"BudgetModel({self.wrapped!r}, {self.capability!r})"
