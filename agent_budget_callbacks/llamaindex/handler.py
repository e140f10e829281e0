"""BudgetCallbackHandler: the legacy LlamaIndex callback handler that reserves, commits and
releases budget around every LLM call.

Only the legacy callback manager can stop a call: an exception raised by a handler's
``on_event_start`` for ``CBEventType.LLM`` reaches the caller of ``complete`` / ``chat`` /
``query`` unchanged, before the provider runs. Every other hook logs and swallows its own
errors, since the call it reports on has already been paid for.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.callbacks.schema import CBEventType, EventPayload
from llama_index_instrumentation.span import active_span_id

from agent_budget import Budget, BudgetManager, Reservation, RunTracker, TokenCounter, Usage
from agent_budget.calls import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    UNKNOWN_MODEL,
    CallLifecycle,
    accounted_by,
)
from agent_budget.validate import check_session_id

from .nesting import enclosing_event_ids
from .payload import (
    estimate_input_tokens,
    max_output_tokens,
    model_from_serialized,
    response_model,
    response_text,
    usage_from_response,
)

__all__ = ["BudgetCallbackHandler"]

log = logging.getLogger("agent_budget.llamaindex")

NO_USAGE_HINT = (
    "LlamaIndex OpenAI-style LLMs report usage on streams only when asked: pass "
    'additional_kwargs={"stream_options": {"include_usage": True}}; a call that did not '
    "stream got no usage from its server (some OpenAI-compatible servers and gateways "
    "send none)"
)

_OTHER_EVENTS: list[CBEventType] = [t for t in CBEventType if t is not CBEventType.LLM]


class _CallState:
    """What one outermost LLM event collects between its start and its end (a slotted
    class whose dicts are made when a nested event first needs them: one is made per call).

    ``parents``: nested event id -> the event directly enclosing it; ``sums``: event id ->
    usage reported by the events nested directly inside it; ``last_chunk``: the last
    streamed chunk seen (fed by install()'s instrumentation event handler).
    """

    __slots__ = ("event_id", "last_chunk", "parents", "reservation", "span_id", "sums")

    def __init__(self, event_id: str, span_id: str | None, reservation: Reservation) -> None:
        self.event_id = event_id
        self.span_id = span_id
        self.reservation = reservation
        self.parents: dict[str, str] = {}
        self.sums: dict[str, Usage] = {}
        self.last_chunk: Any = None


_STATES_KEPT = 4096  # open calls remembered at most (calls that never end are forgotten)


class BudgetCallbackHandler(BaseCallbackHandler):
    """Refuses LlamaIndex LLM calls that would cross a budget, and records what calls used.

    Give it a :class:`~agent_budget.Budget`, or a :class:`~agent_budget.BudgetManager` with
    the scope named by ``scope=`` or by an enclosing :func:`budget_scope` block. Add it with
    ``Settings.callback_manager = CallbackManager([handler])``, or better with
    :func:`install`, which also reaches LLMs created earlier or re-wired by query engines.

    ``default_model`` prices LLMs that report no model name (else their class name is
    used); ``default_max_output_tokens`` sizes the hold when neither the call nor the LLM
    caps its output (the core's one default, 4096); ``counter`` estimates prompt tokens
    (core's default counter if None); ``hold_ttl`` overrides the budget's hold expiry for
    these calls; ``metadata`` is added to every record. The budget rules themselves live in
    the core's :class:`~agent_budget.calls.CallLifecycle`.
    """

    def __init__(
        self,
        budget: Budget | BudgetManager,
        *,
        scope: str | None = None,
        session_id: str = "",
        default_model: str | None = None,
        default_max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
        counter: TokenCounter | None = None,
        hold_ttl: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if scope is not None and isinstance(budget, Budget):
            raise TypeError("scope= needs a BudgetManager; a Budget is its own scope")
        check_session_id(session_id)
        self._calls = CallLifecycle(
            budget,
            framework="llamaindex",
            scope=scope,
            session_id=session_id or None,
            default_model=default_model,
            default_max_output_tokens=default_max_output_tokens,
            counter=counter,
            hold_ttl=hold_ttl,
            metadata=metadata,
        )
        super().__init__(
            event_starts_to_ignore=list(_OTHER_EVENTS), event_ends_to_ignore=list(_OTHER_EVENTS)
        )
        self.budget = budget
        self.counter = self._calls.counter
        self._nested = RunTracker()  # nested event id -> its outermost event's reservation
        # Open outermost calls by hold id, and by instrumentation span id (stream chunks).
        # Plain dicts: set at start, popped at end, pruned of calls that never ended.
        self._states: dict[str, _CallState] = {}
        self._by_span: dict[str, _CallState] = {}
        self._lock = threading.Lock()

    # The handler is shared state: copies (pydantic deep copies of an LLM or manager) must
    # keep pointing at the same reservations.
    def __copy__(self) -> BudgetCallbackHandler:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> BudgetCallbackHandler:
        return self

    @property
    def calls(self) -> CallLifecycle:
        """The core lifecycle this handler feeds."""
        return self._calls

    @property
    def open_calls(self) -> int:
        """LLM calls started and not yet ended (expired ones are dropped lazily)."""
        return self._calls.open_calls

    @property
    def scope(self) -> str | None:
        return self._calls.scope

    @property
    def session_id(self) -> str:
        return self._calls.session_id or ""

    @property
    def default_model(self) -> str | None:
        return self._calls.default_model

    @property
    def default_max_output_tokens(self) -> int:
        return self._calls.default_max_output_tokens

    @property
    def hold_ttl(self) -> float | None:
        return self._calls.hold_ttl

    @property
    def metadata(self) -> dict[str, Any]:
        return self._calls.metadata

    # -- start --------------------------------------------------------------------------

    def on_event_start(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        parent_id: str = "",
        **kwargs: Any,
    ) -> str:
        """Reserve the call's worst case; raise BudgetExceededError to refuse it."""
        if event_type is not CBEventType.LLM or not event_id:
            return event_id
        calls = self._calls
        if event_id in calls or event_id in self._nested or accounted_by(calls.target):
            return event_id  # a BudgetLLM of this budget accounts for the call itself
        if self._join_enclosing(event_id):
            return event_id
        data = payload or {}
        serialized = data.get(EventPayload.SERIALIZED)
        extra = data.get(EventPayload.ADDITIONAL_KWARGS)
        # LlamaIndex sends a refused event no end; the lifecycle frees what other budget
        # handlers already reserved for it.
        reservation = calls.start(
            event_id,
            model=model_from_serialized(serialized) or calls.default_model or _class(serialized),
            input_tokens=self._input_tokens(data, extra),
            max_output_tokens=max_output_tokens(extra, serialized),
        )
        span_id = active_span_id.get()
        state = _CallState(event_id, span_id, reservation)
        states = self._states
        with self._lock:
            states[reservation.id] = state
            if span_id:
                self._by_span[span_id] = state
            if len(states) > _STATES_KEPT:
                self._prune()
        return event_id

    def _prune(self) -> None:
        """Forget the states of calls the lifecycle no longer tracks (they never ended)."""
        calls = self._calls
        for key, state in list(self._states.items()):
            if state.event_id not in calls:
                del self._states[key]
                if state.span_id:
                    self._by_span.pop(state.span_id, None)

    def _join_enclosing(self, event_id: str) -> bool:
        """Attach ``event_id`` to an enclosing LLM event of ours (same provider call)."""
        if not self._calls.open_calls:
            return False
        try:
            for enclosing in enclosing_event_ids():
                outer = self._calls.get(enclosing) or self._nested.get(enclosing)
                if outer is None:
                    continue
                with self._lock:
                    state = self._state_of(outer)
                    if state is not None:
                        state.parents[event_id] = enclosing
                self._nested.add(event_id, outer)
                return True
        except Exception:
            log.exception("could not inspect the stack for enclosing LLM events")
        return False

    def _input_tokens(self, payload: Mapping[Any, Any], kwargs: Any) -> int:
        try:
            return estimate_input_tokens(
                payload.get(EventPayload.PROMPT),
                payload.get(EventPayload.MESSAGES),
                kwargs,
                self.counter,
            )
        except Exception:
            log.exception("could not estimate the prompt's tokens; reserving none for input")
            return 0

    # -- end ----------------------------------------------------------------------------

    def on_event_end(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        **kwargs: Any,
    ) -> None:
        """Commit the reported usage (or release on error); never raises."""
        if event_type is not CBEventType.LLM:
            return
        try:
            self._end(event_id, payload or {})
        except Exception:
            log.exception("agent-budget could not account for LLM event %s", event_id)

    def _end(self, event_id: str, payload: Mapping[Any, Any]) -> None:
        calls = self._calls
        reservation = calls.get(event_id)
        if reservation is None:
            outer = self._nested.pop(event_id)
            if outer is not None:
                self._end_nested(outer, event_id, payload)
            return
        with self._lock:
            state = self._states.pop(reservation.id, None)
            if state is None or state.reservation is not reservation:
                state = _CallState(event_id, None, reservation)
            elif state.span_id:
                self._by_span.pop(state.span_id, None)
        try:
            self._settle(event_id, state, payload)
        except Exception:
            log.exception("could not read the end of LLM event %s; charging its estimate", event_id)
            calls.end(event_id, None)

    def _settle(self, event_id: str, state: _CallState, payload: Mapping[Any, Any]) -> None:
        calls = self._calls
        inner = state.sums.get(state.event_id)
        error = payload.get(EventPayload.EXCEPTION)
        if error is not None:
            chunk = state.last_chunk
            if chunk is not None:
                # A stream that stopped part way: the provider billed the prompt and what
                # it streamed (some providers repeat the first event's usage on every chunk).
                calls.fail(
                    event_id,
                    error,
                    usage=usage_from_response(chunk) or inner,
                    model=response_model(chunk),
                    text=response_text(chunk),
                )
            else:
                # A nested call that returned was billed before the outer one failed.
                calls.fail(event_id, error, usage=inner)
            return
        response = payload.get(EventPayload.RESPONSE) or payload.get(EventPayload.COMPLETION)
        usage = usage_from_response(response) or inner
        if usage is not None and inner is not None and inner.total_tokens > usage.total_tokens:
            # The outer response reports only its last provider call; nested events
            # (a router's call, then the answer) reported more in all.
            usage = inner
        calls.end(
            event_id,
            usage,
            model=response_model(response),
            text=response_text(response),
            no_usage_hint=NO_USAGE_HINT,
        )

    def _state_of(self, reservation: Reservation) -> _CallState | None:
        """The state of the open outermost call that holds ``reservation`` (lock held)."""
        state = self._states.get(reservation.id)
        return state if state is not None and state.reservation is reservation else None

    def _end_nested(self, outer: Reservation, event_id: str, payload: Mapping[Any, Any]) -> None:
        with self._lock:
            state = self._state_of(outer)
            if state is None:
                return
            parent = state.parents.pop(event_id, None)
            from_children = state.sums.pop(event_id, None)
        own = None
        if payload.get(EventPayload.EXCEPTION) is None:
            own = usage_from_response(
                payload.get(EventPayload.RESPONSE) or payload.get(EventPayload.COMPLETION)
            )
        usage = own or from_children
        if usage is None or parent is None:
            return
        with self._lock:
            current = state.sums.get(parent)
            state.sums[parent] = usage if current is None else current + usage

    def record_chunk(self, span_id: str | None, chunk: Any) -> None:
        """Remember the latest streamed chunk of the call running in ``span_id``.

        Fed by the instrumentation event handler :func:`install` registers, so a stream
        dropped half way is charged for what it streamed rather than for its whole hold.
        """
        if not span_id:
            return
        state = self._by_span.get(span_id)
        if state is not None:
            state.last_chunk = chunk

    # -- traces (unused) ----------------------------------------------------------------

    def start_trace(self, trace_id: str | None = None) -> None:
        """Traces carry nothing a budget needs."""

    def end_trace(
        self, trace_id: str | None = None, trace_map: dict[str, list[str]] | None = None
    ) -> None:
        """Traces carry nothing a budget needs; ``trace_map`` is never used for pairing."""

    def __repr__(self) -> str:
        target = self.budget.name if isinstance(self.budget, Budget) else "BudgetManager"
        return f"BudgetCallbackHandler({target!r})"


def _class(serialized: Any) -> str:
    name = serialized.get("class_name") if isinstance(serialized, Mapping) else None
    return name if isinstance(name, str) and name.strip() else UNKNOWN_MODEL
