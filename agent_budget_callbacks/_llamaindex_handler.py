"""BudgetCallbackHandler: the legacy LlamaIndex callback handler that reserves, commits and
releases budget around every LLM call.

Only the legacy callback manager can stop a call: an exception raised by a handler's
``on_event_start`` for ``CBEventType.LLM`` reaches the caller of ``complete`` / ``chat`` /
``query`` unchanged, before the provider runs. Every other hook logs and swallows its own
errors, since the call it reports on has already been paid for.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.callbacks.schema import CBEventType, EventPayload
from llama_index_instrumentation.span import active_span_id

from agent_budget import (
    Budget,
    BudgetManager,
    Reservation,
    RunTracker,
    TokenCounter,
    Usage,
    current_scope,
    default_counter,
    select_budget,
)

from ._llamaindex_nesting import enclosing_event_ids
from ._llamaindex_payload import (
    estimate_input_tokens,
    max_output_tokens,
    model_from_serialized,
    response_model,
    response_text,
    usage_from_response,
)

__all__ = ["BudgetCallbackHandler"]

# Every live handler, so one that refuses an event can free the holds others took for it.
_HANDLERS: weakref.WeakSet[BudgetCallbackHandler] = weakref.WeakSet()


def _release_event_elsewhere(refuser: BudgetCallbackHandler, event_id: str) -> None:
    for other in list(_HANDLERS):
        if other is refuser:
            continue
        held = other._runs.pop(event_id)
        if held is None:
            continue
        with other._lock:
            state = other._states.pop(held, None)
        if state is not None and state.span_id:
            other._by_span.pop(state.span_id)
        try:
            held.release()
        except Exception:
            log.exception("could not release the hold of refused LLM event %s", event_id)


log = logging.getLogger("agent_budget.llamaindex")

_OTHER_EVENTS: list[CBEventType] = [t for t in CBEventType if t is not CBEventType.LLM]


@dataclass
class _CallState:
    """What one outermost LLM event collects between its start and its end."""

    event_id: str
    span_id: str | None
    # nested event id -> the event directly enclosing it
    parents: dict[str, str] = field(default_factory=dict)
    # event id -> usage reported by the events nested directly inside it
    sums: dict[str, Usage] = field(default_factory=dict)
    # the last streamed chunk seen (fed by install()'s instrumentation event handler)
    last_chunk: Any = None


class BudgetCallbackHandler(BaseCallbackHandler):
    """Refuses LlamaIndex LLM calls that would cross a budget, and records what calls used.

    Give it a :class:`~agent_budget.Budget`, or a :class:`~agent_budget.BudgetManager` with
    the scope named by ``scope=`` or by an enclosing :func:`budget_scope` block. Add it with
    ``Settings.callback_manager = CallbackManager([handler])``, or better with
    :func:`install`, which also reaches LLMs created earlier or re-wired by query engines.

    ``default_model`` prices LLMs that report no model name (else their class name is
    used); ``default_max_output_tokens`` sizes the hold when neither the call nor the LLM
    caps its output; ``counter`` estimates prompt tokens (core's default counter if None);
    ``hold_ttl`` overrides the budget's hold expiry for these calls; ``metadata`` is added
    to every record.
    """

    def __init__(
        self,
        budget: Budget | BudgetManager,
        *,
        scope: str | None = None,
        session_id: str = "",
        default_model: str | None = None,
        default_max_output_tokens: int = 1024,
        counter: TokenCounter | None = None,
        hold_ttl: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(budget, (Budget, BudgetManager)):
            raise TypeError(
                f"budget must be a Budget or BudgetManager, got {type(budget).__name__}"
            )
        if scope is not None and not isinstance(budget, BudgetManager):
            raise TypeError("scope= needs a BudgetManager; a Budget is its own scope")
        if not isinstance(session_id, str):
            raise TypeError(f"session_id must be a str, got {type(session_id).__name__}")
        if (
            isinstance(default_max_output_tokens, bool)
            or not isinstance(default_max_output_tokens, int)
            or default_max_output_tokens < 0
        ):
            raise ValueError("default_max_output_tokens must be a non-negative int")
        super().__init__(
            event_starts_to_ignore=list(_OTHER_EVENTS), event_ends_to_ignore=list(_OTHER_EVENTS)
        )
        self.budget = budget
        self.scope = scope
        self.session_id = session_id
        self.default_model = default_model
        self.default_max_output_tokens = default_max_output_tokens
        self.counter = counter or default_counter()
        self.hold_ttl = hold_ttl
        self.metadata = dict(metadata or {})
        self._runs = RunTracker()  # outermost event id -> reservation
        self._nested = RunTracker()  # nested event id -> its outermost event's reservation
        self._by_span = RunTracker()  # instrumentation span id -> reservation (stream chunks)
        self._states: weakref.WeakKeyDictionary[Reservation, _CallState] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        _HANDLERS.add(self)

    # The handler is shared state: copies (pydantic deep copies of an LLM or manager) must
    # keep pointing at the same reservations.
    def __copy__(self) -> BudgetCallbackHandler:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> BudgetCallbackHandler:
        return self

    @property
    def open_calls(self) -> int:
        """LLM calls started and not yet ended (expired ones are dropped lazily)."""
        return len(self._runs)

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
        if event_id in self._runs or event_id in self._nested or self._join_enclosing(event_id):
            return event_id
        try:
            budget, session_id, extra = self._target()
            model, input_tokens, max_output = self._estimate(payload or {})
            reservation = budget.reserve(
                model,
                input_tokens,
                max_output,
                session_id=session_id,
                ttl=self.hold_ttl,
                metadata={"framework": "llamaindex", **self.metadata, **extra},
            )
        except BaseException:
            # LlamaIndex sends a refused event no end: free what other budget handlers
            # already reserved for it.
            _release_event_elsewhere(self, event_id)
            raise
        span_id = active_span_id.get()
        with self._lock:
            self._states[reservation] = _CallState(event_id, span_id)
        self._runs.add(event_id, reservation)
        if span_id:
            self._by_span.add(span_id, reservation)
        return event_id

    def _join_enclosing(self, event_id: str) -> bool:
        """Attach ``event_id`` to an enclosing LLM event of ours (same provider call)."""
        if not len(self._runs):
            return False
        try:
            for enclosing in enclosing_event_ids():
                outer = self._runs.get(enclosing) or self._nested.get(enclosing)
                if outer is None:
                    continue
                with self._lock:
                    state = self._states.get(outer)
                    if state is not None:
                        state.parents[event_id] = enclosing
                self._nested.add(event_id, outer)
                return True
        except Exception:
            log.exception("could not inspect the stack for enclosing LLM events")
        return False

    def _target(self) -> tuple[Budget, str, dict[str, Any]]:
        selection = current_scope()
        session = (selection.session if selection else None) or self.session_id
        extra = dict(selection.metadata) if selection else {}
        return select_budget(self.budget, default_scope=self.scope), session, extra

    def _estimate(self, payload: Mapping[Any, Any]) -> tuple[str, int, int]:
        serialized = payload.get(EventPayload.SERIALIZED)
        kwargs = payload.get(EventPayload.ADDITIONAL_KWARGS)
        model = model_from_serialized(serialized) or self.default_model
        if model is None:
            name = serialized.get("class_name") if isinstance(serialized, Mapping) else None
            model = name if isinstance(name, str) and name.strip() else "unknown"
        try:
            input_tokens = estimate_input_tokens(
                payload.get(EventPayload.PROMPT),
                payload.get(EventPayload.MESSAGES),
                kwargs,
                self.counter,
            )
        except Exception:
            log.exception("could not estimate the prompt's tokens; reserving none for input")
            input_tokens = 0
        max_output = max_output_tokens(kwargs, serialized)
        return (
            model,
            input_tokens,
            (max_output if max_output is not None else self.default_max_output_tokens),
        )

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
        reservation = self._runs.pop(event_id)
        if reservation is None:
            outer = self._nested.pop(event_id)
            if outer is not None:
                self._end_nested(outer, event_id, payload)
            return
        with self._lock:
            state = self._states.pop(reservation, None) or _CallState(event_id, None)
        if state.span_id:
            self._by_span.pop(state.span_id)
        try:
            self._settle(reservation, state, payload)
        except Exception:
            log.exception("could not read the end of LLM event %s; charging its estimate", event_id)
            if reservation.state == "open":
                reservation.commit(None, metadata={"usage_source": "reservation"})

    def _settle(
        self, reservation: Reservation, state: _CallState, payload: Mapping[Any, Any]
    ) -> None:
        inner = state.sums.get(state.event_id)
        error = payload.get(EventPayload.EXCEPTION)
        if error is not None:
            if isinstance(error, GeneratorExit) or state.last_chunk is not None:
                self._commit_partial(reservation, state.last_chunk, inner)
            elif inner is not None:
                # A nested call returned (and was billed) before the outer one failed.
                reservation.commit(inner, metadata={"usage_source": "provider"})
            elif isinstance(error, asyncio.CancelledError):
                # Cancelled (a timeout) after the request may have gone out: whether the
                # provider bills it is unknown, so the hold stays until it expires, as a
                # timed-out LangChain call's does. A timeout loop stays capped.
                pass
            else:
                reservation.release()
            return
        response = payload.get(EventPayload.RESPONSE) or payload.get(EventPayload.COMPLETION)
        usage = usage_from_response(response) or inner
        if usage is not None and inner is not None and inner.total_tokens > usage.total_tokens:
            # The outer response reports only its last provider call; nested events
            # (a router's call, then the answer) reported more in all.
            usage = inner
        source = "provider"
        if usage is None:
            usage = Usage(reservation.input_tokens, self._count(response_text(response)))
            source = "counted"
        reservation.commit(
            usage,
            model=response_model(response),
            metadata={"usage_source": source},
            estimated=source != "provider",
        )

    def _commit_partial(self, reservation: Reservation, chunk: Any, inner: Usage | None) -> None:
        """A stream that ended early: the provider billed the prompt and what it streamed."""
        meta = {"stream": "incomplete"}
        if chunk is None and inner is None:
            reservation.commit(None, metadata={**meta, "usage_source": "reservation"})
            return
        counted = self._count(response_text(chunk))
        reported = usage_from_response(chunk) or inner
        if reported is None:
            usage = Usage(reservation.input_tokens, counted)
            source = "counted"
        else:
            # Some providers repeat the usage of the stream's first event on every chunk.
            usage = Usage(
                reported.input_tokens,
                max(reported.output_tokens, counted),
                reported.cache_read_tokens,
                reported.cache_write_tokens,
                reported.reasoning_tokens,
            )
            source = "provider"
        reservation.commit(
            usage,
            model=response_model(chunk),
            metadata={**meta, "usage_source": source},
            # Output counted from the streamed text (not reported) makes the record an estimate.
            estimated=reported is None or counted > reported.output_tokens,
        )

    def _end_nested(self, outer: Reservation, event_id: str, payload: Mapping[Any, Any]) -> None:
        with self._lock:
            state = self._states.get(outer)
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

    def _count(self, text: str) -> int:
        try:
            return self.counter.count_text(text)
        except Exception:
            log.exception("could not count the response's tokens")
            return 0

    def record_chunk(self, span_id: str | None, chunk: Any) -> None:
        """Remember the latest streamed chunk of the call running in ``span_id``.

        Fed by the instrumentation event handler :func:`install` registers, so a stream
        dropped half way is charged for what it streamed rather than for its whole hold.
        """
        if not span_id:
            return
        reservation = self._by_span.get(span_id)
        if reservation is None:
            return
        with self._lock:
            state = self._states.get(reservation)
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
