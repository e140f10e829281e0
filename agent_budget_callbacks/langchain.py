"""LangChain and LangGraph: refuse a model call before it runs, record what it used.

``BudgetCallbackHandler(budget)`` is an ordinary LangChain callback handler: pass it in
``config={"callbacks": [handler]}``, with ``.with_config(callbacks=[...])``, to a model's
constructor, or to a chain / LangGraph graph / agent, where it reaches every chat model and
LLM called inside. ``with budget_guard(budget):`` attaches one to every LangChain call made
inside the block, threads and asyncio tasks included.

At a run's start the handler estimates the prompt, takes the request's output cap and
reserves the worst case in the budget; a refusal raises :class:`BudgetExceededError` to the
caller and the provider is never called. At the end it commits the usage the provider
reported, priced for the model that answered. All budget arithmetic is the core's
(:meth:`Budget.reserve`, :meth:`Reservation.commit`, :meth:`Budget.release`); this module
only reads LangChain's events.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult
from langchain_core.tracers.context import register_configure_hook

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

from ._langchain_read import (
    chat_input_tokens,
    max_output_tokens,
    partial_text,
    prompt_input_tokens,
    read_outcome,
    requested_model,
    requested_service_tier,
)

__all__ = [
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "BudgetCallbackHandler",
    "budget_guard",
    "current_guard",
]

log = logging.getLogger("agent_budget.langchain")

DEFAULT_MAX_OUTPUT_TOKENS = 4096
"""Output tokens reserved for a call whose request sets no cap (``max_tokens`` and the
like). 4096 is the largest common default among chat APIs (ChatAnthropic's, and OpenAI's
for most models in practice); raise it for reasoning models, which can emit far more."""

# Runs that never end (a timed-out ainvoke) are forgotten this long after their hold
# expired. An end that arrives later still commits, since the provider billed it.
_TRACKER_GRACE_SECONDS = 3600.0


@dataclass(eq=False)
class _Batch:
    """The runs one ``generate()`` call starts together (``batch_size > 1``).

    A refusal of one member fails the whole call, and LangChain then ends none of the
    members already started, so their holds are released here instead of lingering until
    they expire. ``params`` is the invocation-params dict LangChain passes to every member;
    holding it keeps its ``id()`` unique while the entry lives.
    """

    params: object
    size: int
    created: float
    started: int = 0
    members: list[tuple[UUID, Reservation]] = field(default_factory=list)
    refusal: BaseException | None = None
    reported: bool = False  # a member committed the provider's usage for the whole request


class BudgetCallbackHandler(BaseCallbackHandler):
    """A LangChain callback handler that enforces a :class:`Budget` or a
    :class:`BudgetManager` on every chat model and LLM call it sees.

    With a :class:`BudgetManager`, the scope of each call comes from its run metadata
    (``config={"metadata": {"budget_scope": "user-42"}}``; key ``scope_key``), else from
    ``scope``; ``budget_parent`` (``parent_key``) optionally names the parent scope of a
    template-made scope. The session label of each record comes from ``budget_session``
    (``session_key``), else LangGraph's ``thread_id``, else ``session_id``.

    ``default_max_tokens`` is reserved as output when a request sets no cap; ``counter``
    estimates prompt tokens (default: tiktoken offline, else a heuristic); ``default_model``
    names calls whose model cannot be read from the run; ``hold_ttl`` overrides the budget's
    hold lifetime, after which a run that never ended stops holding budget.

    It is a synchronous handler with ``raise_error = True`` (the only kind whose start-hook
    exception LangChain propagates on every sync and async path) and ``run_inline = True``
    (no thread hop per event in async code; see docs/langchain.md for the trade-off). Only
    the start hooks raise; every other hook logs its own failures.
    """

    raise_error: bool = True
    run_inline: bool = True

    def __init__(
        self,
        budget: Budget | BudgetManager,
        *,
        scope: str | None = None,
        parent: str | None = None,
        session_id: str | None = None,
        scope_key: str = "budget_scope",
        parent_key: str = "budget_parent",
        session_key: str = "budget_session",
        use_thread_id: bool = True,
        default_max_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
        default_model: str | None = None,
        counter: TokenCounter | None = None,
        hold_ttl: float | None = None,
    ) -> None:
        if isinstance(budget, Budget):
            self._budget: Budget | None = budget
            self._manager: BudgetManager | None = None
        elif isinstance(budget, BudgetManager):
            self._budget = None
            self._manager = budget
        else:
            raise TypeError(
                f"budget must be a Budget or a BudgetManager, got {type(budget).__name__}"
            )
        if (
            isinstance(default_max_tokens, bool)
            or not isinstance(default_max_tokens, int)
            or (default_max_tokens < 0)
        ):
            raise ValueError(f"default_max_tokens must be an int >= 0, got {default_max_tokens!r}")
        for name, value in (
            ("scope", scope),
            ("parent", parent),
            ("session_id", session_id),
            ("default_model", default_model),
        ):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a str or None, got {type(value).__name__}")
        self._scope = scope
        self._parent = parent
        self._session_id = session_id
        self._scope_key = scope_key
        self._parent_key = parent_key
        self._session_key = session_key
        self._use_thread_id = use_thread_id
        self._default_max_tokens = default_max_tokens
        self._default_model = default_model
        self._counter = counter if counter is not None else default_counter()
        self._hold_ttl = hold_ttl
        self._runs = RunTracker(grace_seconds=_TRACKER_GRACE_SECONDS)
        _HANDLERS.add(self)
        self._lock = threading.Lock()
        self._batches: dict[int, _Batch] = {}
        self._legacy_multi: weakref.WeakKeyDictionary[Reservation, _Batch] = (
            weakref.WeakKeyDictionary()
        )

    # -- identity --------------------------------------------------------------------------

    @property
    def budget(self) -> Budget | BudgetManager:
        """The Budget or BudgetManager this handler enforces."""
        budget = self._budget if self._budget is not None else self._manager
        assert budget is not None
        return budget

    @property
    def open_runs(self) -> int:
        """Runs started and not yet ended (including never-ended ones not yet forgotten)."""
        return len(self._runs)

    def __copy__(self) -> BudgetCallbackHandler:
        # LangChain and LangGraph copy configs; a copy would be a second handler that
        # charges every call again and is missed by identity de-duplication.
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> BudgetCallbackHandler:
        return self

    def __repr__(self) -> str:
        return f"BudgetCallbackHandler({self.budget!r})"

    # Only model events matter; skipping the rest keeps chains and graphs cheap.
    @property
    def ignore_chain(self) -> bool:
        return True

    @property
    def ignore_agent(self) -> bool:
        return True

    @property
    def ignore_retriever(self) -> bool:
        return True

    @property
    def ignore_retry(self) -> bool:
        return True

    @property
    def ignore_custom_event(self) -> bool:
        return True

    @property
    def target(self) -> Budget | BudgetManager:
        """The Budget or BudgetManager this handler enforces."""
        target = self._budget if self._budget is not None else self._manager
        assert target is not None
        return target

    # -- start: may raise (that is the refusal) ---------------------------------------------

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Reserve a chat call's worst case; raises to refuse it."""
        params = kwargs.get("invocation_params") or {}
        self._start(
            run_id,
            serialized,
            metadata or {},
            params,
            kwargs.get("batch_size"),
            legacy=False,
            count=lambda: sum(chat_input_tokens(m, params, self._counter) for m in messages),
        )

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Reserve a completion-model call's worst case; raises to refuse it."""
        params = kwargs.get("invocation_params") or {}
        self._start(
            run_id,
            serialized,
            metadata or {},
            params,
            kwargs.get("batch_size"),
            legacy=True,
            count=lambda: sum(prompt_input_tokens(p, self._counter) for p in prompts),
        )

    def _start(
        self,
        run_id: UUID,
        serialized: Mapping[str, Any] | None,
        metadata: Mapping[str, Any],
        params: Mapping[str, Any],
        batch_size: object,
        *,
        legacy: bool,
        count: Callable[[], int],
    ) -> None:
        if run_id in self._runs:
            return
        budget = self._budget_for(metadata)
        model = (
            requested_model(serialized, metadata, params)
            or self._default_model
            or _class_name(serialized)
        )
        input_tokens = count()
        max_out = max_output_tokens(metadata, params, self._default_max_tokens)
        batch = None
        if isinstance(batch_size, int) and batch_size > 1:
            batch = self._join_batch(params, batch_size)
        try:
            reservation = budget.reserve(
                model,
                input_tokens,
                max_out,
                session_id=self._session_for(metadata),
                ttl=self._hold_ttl,
                metadata={"framework": "langchain", "run_id": str(run_id)},
                service_tier=requested_service_tier(params),
            )
        except BaseException as exc:
            if batch is not None:
                self._abort_batch(batch, exc)
            _release_run_elsewhere(self, run_id)
            raise
        self._runs.add(run_id, reservation)
        if batch is not None:
            with self._lock:
                refusal = batch.refusal
                if refusal is None:
                    batch.members.append((run_id, reservation))
                    if legacy:
                        self._legacy_multi[reservation] = batch
            if refusal is not None:
                self._runs.pop(run_id)
                reservation.release()
                _release_run_elsewhere(self, run_id)
                raise refusal

    def _budget_for(self, metadata: Mapping[str, Any]) -> Budget:
        if self._budget is not None:
            return self._budget
        target = self._manager
        assert target is not None
        scope = metadata.get(self._scope_key)
        parent = metadata.get(self._parent_key)
        return select_budget(
            target,
            scope=str(scope) if scope else None,
            parent=str(parent) if parent else None,
            default_scope=self._scope,
            default_parent=self._parent,
        )

    def _session_for(self, metadata: Mapping[str, Any]) -> str:
        value = metadata.get(self._session_key)
        if value is None and self._use_thread_id:
            value = metadata.get("thread_id")
        if value is None:
            selection = current_scope()
            value = selection.session if selection else None
        if value is None:
            value = self._session_id
        return "" if value is None else str(value)

    def _join_batch(self, params: object, size: int) -> _Batch:
        key = id(params)
        with self._lock:
            batch = self._batches.get(key)
            if batch is None or batch.params is not params:
                self._prune_batches()
                batch = _Batch(params, size, time.monotonic())
                self._batches[key] = batch
            batch.started += 1
            if batch.started >= batch.size:
                del self._batches[key]
            refusal = batch.refusal
        if refusal is not None:
            # A sibling was refused, so the whole generate() has failed; do not hold more.
            raise refusal
        return batch

    def _abort_batch(self, batch: _Batch, exc: BaseException) -> None:
        try:
            # A copy without the traceback: the original's frames must not stay alive here.
            refusal = copy.copy(exc).with_traceback(None)
        except Exception:
            refusal = exc
        with self._lock:
            batch.refusal = refusal
            members, batch.members = batch.members, []
        for run_id, reservation in members:
            if self._runs.pop(run_id) is not None:
                _quietly(reservation.release)

    def _prune_batches(self) -> None:
        # Entries of failed generate() calls whose later members never started.
        cutoff = time.monotonic() - 600.0
        stale = [k for k, b in self._batches.items() if b.created < cutoff]
        for key in stale:
            del self._batches[key]
        while len(self._batches) >= 4096:
            del self._batches[next(iter(self._batches))]

    # -- end and error: never raise ---------------------------------------------------------

    def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> Any:
        """Commit the usage the provider reported (or the estimate when it reported none)."""
        try:
            self._end(run_id, response)
        except Exception:
            log.exception("agent-budget could not record the end of LangChain run %s", run_id)

    def _end(self, run_id: UUID, response: LLMResult) -> None:
        reservation = self._runs.pop(run_id)
        if reservation is None:
            return
        outcome = read_outcome(response)
        if outcome.cache_hit:
            # Served from LangChain's cache: no provider call, nothing to pay.
            reservation.release()
            return
        batch = self._legacy_multi.get(reservation)
        if batch is not None:
            if outcome.usage is not None:
                batch.reported = True
            elif outcome.sibling and batch.reported:
                # LLMResult.flatten() put this generate()'s whole usage on its first run,
                # which LangChain ends first and which committed it.
                reservation.release()
                return
        reservation.commit(outcome.usage, model=outcome.model)

    def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> Any:
        """Release the hold, or commit what a stream that stopped part way already used."""
        try:
            self._error(run_id, error, kwargs.get("response"))
        except Exception:
            log.exception("agent-budget could not record the error of LangChain run %s", run_id)

    def _error(self, run_id: UUID, error: BaseException, response: object) -> None:
        reservation = self._runs.pop(run_id)
        if reservation is None:
            return
        result = response if isinstance(response, LLMResult) else None
        reported = read_outcome(result) if result is not None else None
        usage = reported.usage if reported is not None else None
        text = partial_text(result)
        # GeneratorExit reaches a stream only at a yield, so a chunk had arrived (BaseLLM
        # records a chunk after yielding it, so its partial can be one chunk short). Any
        # other end after chunks arrived (a cancelled astream, a connection dropped mid-body)
        # was billed for what the provider produced, too.
        abandoned = isinstance(error, GeneratorExit) or text is not None
        if usage is None and not abandoned:
            reservation.release()
            return
        # The provider billed what it produced before the stream stopped. Chunks rarely
        # carry usage until the last one, so count the text received when that is more.
        produced = self._counter.count_text(text) if text else 0
        counted = _partial_usage(usage, reservation.input_tokens, produced)
        reservation.commit(
            counted,
            model=reported.model if reported is not None else None,
            metadata={"partial": True, "error": type(error).__name__},
            estimated=counted != usage,
        )


def _partial_usage(reported: Usage | None, estimated_input: int, produced: int) -> Usage:
    if reported is None:
        return Usage(estimated_input, produced)
    inp = reported.input_tokens or estimated_input
    cache_read = min(reported.cache_read_tokens, inp)
    cache_write = min(reported.cache_write_tokens, inp - cache_read)
    out = max(reported.output_tokens, produced)
    return Usage(inp, out, cache_read, cache_write, min(reported.reasoning_tokens, out))


def _class_name(serialized: Mapping[str, Any] | None) -> str:
    ident = (serialized or {}).get("id")
    if isinstance(ident, Sequence) and ident and isinstance(ident[-1], str) and ident[-1]:
        return ident[-1]
    return "unknown-model"


# Every live handler, so one that refuses a run can free the holds other budget handlers
# took for it: LangChain sends a refused run no end or error event.
_HANDLERS: weakref.WeakSet[BudgetCallbackHandler] = weakref.WeakSet()


def _release_run_elsewhere(refuser: BudgetCallbackHandler, run_id: UUID) -> None:
    for other in list(_HANDLERS):
        if other is not refuser:
            held = other._runs.pop(run_id)
            if held is not None:
                _quietly(held.release)


def _quietly(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception:
        log.exception("agent-budget could not release a hold")


# -- the context manager -------------------------------------------------------------------

_GUARD: ContextVar[BudgetCallbackHandler | None] = ContextVar(
    "agent_budget_langchain_guard", default=None
)
# Registered once per process: LangChain appends every registration to a global list and
# consults each on every call (the leak of get_usage_metadata_callback, langchain#32300).
register_configure_hook(_GUARD, inheritable=True)


@contextmanager
def budget_guard(
    budget: Budget | BudgetManager | BudgetCallbackHandler, **options: Any
) -> Iterator[BudgetCallbackHandler]:
    """Enforce ``budget`` on every LangChain call made inside the block.

    Covers calls in nested chains and graphs, in ``batch`` worker threads and in asyncio
    tasks started inside the block (they copy the context). ``options`` are
    :class:`BudgetCallbackHandler` keyword arguments, or pass a ready handler. A guard
    nested in another replaces it for its block (a nested guard of the same budget reuses
    the outer handler, so nothing is charged twice); to enforce several budgets at once,
    chain them with ``Budget(parent=...)``.
    """
    active = _GUARD.get()
    if isinstance(budget, BudgetCallbackHandler):
        if options:
            raise TypeError("budget_guard(handler) takes no handler options")
        handler = budget
    elif active is not None and not options and active.target is budget:
        # The same budget again (a helper that guards itself, called inside a guarded
        # run): keep the one handler, or the run would be charged twice.
        handler = active
    else:
        handler = BudgetCallbackHandler(budget, **options)
    token = _GUARD.set(handler)
    try:
        yield handler
    finally:
        _GUARD.reset(token)


def current_guard() -> BudgetCallbackHandler | None:
    """The handler of the innermost active :func:`budget_guard`, or None."""
    return _GUARD.get()
