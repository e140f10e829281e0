"""BudgetCallbackHandler: LangChain's callback events read into the core call lifecycle.

At a run's start the handler reads the model, the prompt and the request's output cap and
asks :class:`~agent_budget.calls.CallLifecycle` to reserve the worst case; a refusal raises
:class:`~agent_budget.BudgetExceededError` to the caller and the provider is never called.
At the end it hands over the usage the provider reported and the model that answered. All
budget rules (which scope, which session, the default output hold, a stream cut short) are
the core's; what is LangChain's own is here: its payloads, its cache hits, and the runs one
``generate()`` starts together.
"""

from __future__ import annotations

import copy
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import CodeType
from typing import Any, NamedTuple
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from agent_budget import Budget, BudgetManager, Reservation, TokenCounter
from agent_budget.calls import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    UNKNOWN_MODEL,
    CallLifecycle,
    accounted_by,
    release_elsewhere,
)

from .payload import (
    chat_input_tokens,
    completions,
    max_output_tokens,
    partial_text,
    prompt_input_tokens,
    read_outcome,
    requested_model,
    requested_service_tier,
    response_text,
)

__all__ = ["DEFAULT_MAX_OUTPUT_TOKENS", "BudgetCallbackHandler", "quiet_refusals"]

log = logging.getLogger("agent_budget.langchain")


class _QuietRefusals(logging.Filter):
    """Drops LangChain's WARNING "Error in BudgetCallbackHandler.on_chat_model_start
    callback: BudgetExceededError(...)": a refusal is the call's outcome, raised to the
    caller, not a callback failure. Other callback errors still log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        refusal = (
            record.msg == "Error in %s.%s callback: %s"
            and isinstance(args, tuple)
            and len(args) == 3
            and args[0] in _HANDLER_NAMES
            and str(args[2]).startswith(_REFUSAL_REPRS)
        )
        return not refusal


_REFUSAL_REPRS = (
    "BudgetExceededError(",
    "UnknownScopeError(",
    "UnknownModelError(",
    "StoreUnavailableError(",
)
_HANDLER_NAMES = {"BudgetCallbackHandler"}  # and its subclasses' (see __init_subclass__)
_QUIET = _QuietRefusals()
_MANAGER_LOG = logging.getLogger("langchain_core.callbacks.manager")


def quiet_refusals(enabled: bool = True) -> None:
    """Filter LangChain's WARNING line for our own refusals (on by default, since the
    refusal reaches the caller as an exception); ``quiet_refusals(False)`` shows it again."""
    if enabled:
        _MANAGER_LOG.addFilter(_QUIET)
    else:
        _MANAGER_LOG.removeFilter(_QUIET)


quiet_refusals(True)

NO_USAGE_HINT = (
    "LangChain chat models report usage on streams only when asked: pass "
    "stream_usage=True (ChatOpenAI with a custom base_url, Azure, gateways); a call that "
    "did not stream got no usage from its server (some OpenAI-compatible servers and "
    "gateways send none)"
)
_UNSET: Any = object()


try:  # LangChain's async dispatcher; the hooks below hand it their async bodies
    from langchain_core.callbacks.manager import _ahandle_event_for_handler

    _ASYNC_DISPATCH: CodeType | None = _ahandle_event_for_handler.__code__
except (ImportError, AttributeError):  # pragma: no cover - a LangChain without it
    _ASYNC_DISPATCH = None


class _Hook:
    """A callback hook with a sync and an async body.

    LangChain awaits a handler method that is a coroutine function on its async paths and
    calls a plain one on its sync paths, but looks both up by the same name. Asked by the
    async dispatcher (``_ahandle_event_for_handler``), this returns the async body, which
    awaits the store off the event loop; asked by anyone else, the sync body. The handler
    stays ``run_inline`` either way, so LangChain never skips its start (langchain#39633).
    """

    def __init__(self, sync: Callable[..., Any], async_: Callable[..., Any]) -> None:
        self.sync = sync
        self.async_ = async_
        self.__doc__ = sync.__doc__

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        if obj is None:
            return self
        if _ASYNC_DISPATCH is not None and sys._getframe(1).f_code is _ASYNC_DISPATCH:
            return self.async_.__get__(obj, owner)
        return self.sync.__get__(obj, owner)


class _Start(NamedTuple):
    """What a run's start reserves, and the generate() batch it belongs to."""

    kwargs: dict[str, Any]
    batch: _Batch | None
    legacy: bool


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
    (``config={"metadata": {"budget_scope": "user-42"}}``; key ``scope_key``), else from an
    enclosing ``budget_scope(...)`` block, else from ``scope``; ``budget_parent``
    (``parent_key``) optionally names the parent of a template-made scope. The session of
    each call comes from ``budget_session`` (``session_key``), else LangGraph's
    ``thread_id``, else the enclosing block, else ``session_id``.

    ``default_max_output_tokens`` is held as output when a request sets no cap (the core's
    one default, 4096; ``default_max_tokens`` is its old name); ``counter`` estimates
    prompts; ``default_model`` names calls whose model cannot be read from the run;
    ``hold_ttl`` overrides the budget's hold lifetime; ``metadata`` is added to every record;
    ``wait`` (seconds) lets a call that only fails to fit because of other calls' holds
    (a ``batch`` or ``abatch`` of many calls) wait for them instead of being refused.

    It is a synchronous handler with ``raise_error = True`` (the only kind whose start-hook
    exception LangChain propagates on every sync and async path). In async runs it runs
    inline on the event loop when the budget's store does no I/O (memory), and in
    LangChain's executor otherwise, so a network or disk store never stalls the loop. Only
    the start hooks raise; every other hook logs its own failures.
    """

    raise_error: bool = True
    run_inline: bool = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _HANDLER_NAMES.add(cls.__name__)  # its refusals are quiet too

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
        default_max_output_tokens: int = _UNSET,
        default_max_tokens: int = _UNSET,
        default_model: str | None = None,
        counter: TokenCounter | None = None,
        hold_ttl: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        wait: float = 0.0,
    ) -> None:
        if default_max_output_tokens is not _UNSET and default_max_tokens is not _UNSET:
            raise TypeError("pass default_max_output_tokens or its old name, not both")
        hold = default_max_output_tokens
        if hold is _UNSET:
            hold = DEFAULT_MAX_OUTPUT_TOKENS if default_max_tokens is _UNSET else default_max_tokens
        self._calls = CallLifecycle(
            budget,
            framework="langchain",
            scope=scope,
            parent=parent,
            session_id=session_id,
            default_model=default_model,
            default_max_output_tokens=hold,
            counter=counter,
            hold_ttl=hold_ttl,
            metadata=metadata,
            wait=wait,
        )
        self._manager = budget if isinstance(budget, BudgetManager) else None
        self._scope_key = scope_key
        self._parent_key = parent_key
        self._session_key = session_key
        self._use_thread_id = use_thread_id
        self._lock = threading.Lock()
        self._batches: dict[int, _Batch] = {}
        # Members of legacy multi-prompt generate() calls, until they end (bounded: members
        # of a failed call never end).
        self._legacy_multi: dict[UUID, _Batch] = {}

    # -- identity --------------------------------------------------------------------------

    @property
    def budget(self) -> Budget | BudgetManager:
        """The Budget or BudgetManager this handler enforces."""
        return self._calls.target

    target = budget

    @property
    def calls(self) -> CallLifecycle:
        """The core lifecycle this handler feeds."""
        return self._calls

    @property
    def open_calls(self) -> int:
        """Runs started and not yet ended (including never-ended ones not yet forgotten)."""
        return self._calls.open_calls

    open_runs = open_calls

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

    # -- start: may raise (that is the refusal) ---------------------------------------------

    def _chat_start(
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
        plan = self._chat_plan(serialized, messages, run_id, metadata, kwargs)
        if plan is not None:
            self._start(run_id, plan)

    async def _achat_start(
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
        plan = self._chat_plan(serialized, messages, run_id, metadata, kwargs)
        if plan is not None:
            await self._astart(run_id, plan)

    def _llm_start(
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
        plan = self._llm_plan(serialized, prompts, run_id, metadata, kwargs)
        if plan is not None:
            self._start(run_id, plan)

    async def _allm_start(
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
        plan = self._llm_plan(serialized, prompts, run_id, metadata, kwargs)
        if plan is not None:
            await self._astart(run_id, plan)

    on_chat_model_start = _Hook(_chat_start, _achat_start)
    on_llm_start = _Hook(_llm_start, _allm_start)

    def _chat_plan(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        run_id: UUID,
        metadata: dict[str, Any] | None,
        kwargs: dict[str, Any],
    ) -> _Start | None:
        return self._plan(
            run_id,
            serialized,
            metadata or {},
            kwargs.get("invocation_params") or {},
            kwargs.get("batch_size"),
            legacy=False,
            inputs=messages,
        )

    def _llm_plan(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        run_id: UUID,
        metadata: dict[str, Any] | None,
        kwargs: dict[str, Any],
    ) -> _Start | None:
        return self._plan(
            run_id,
            serialized,
            metadata or {},
            kwargs.get("invocation_params") or {},
            kwargs.get("batch_size"),
            legacy=True,
            inputs=prompts,
        )

    def _plan(
        self,
        run_id: UUID,
        serialized: Mapping[str, Any] | None,
        metadata: Mapping[str, Any],
        params: Mapping[str, Any],
        batch_size: object,
        *,
        legacy: bool,
        inputs: Sequence[Any],
    ) -> _Start | None:
        """What to reserve for a run (``inputs``: its prompts, or its message lists), or
        None when this handler does not charge it."""
        calls = self._calls
        if run_id in calls or accounted_by(calls.target):
            return None  # an agent middleware of this budget accounts for the call itself
        counter = calls.counter
        tokens = 0
        if legacy:
            for prompt in inputs:
                tokens += prompt_input_tokens(prompt, counter)
        else:
            for messages in inputs:
                tokens += chat_input_tokens(messages, params, counter)
        scope = parent = None
        if self._manager is not None:
            scope = metadata.get(self._scope_key)
            parent = metadata.get(self._parent_key)
        session = metadata.get(self._session_key)
        if session is None and self._use_thread_id:
            session = metadata.get("thread_id")
        model = requested_model(serialized, metadata, params) or calls.default_model
        cap = max_output_tokens(metadata, params)
        n = completions(params)
        if n > 1:
            cap = (cap if cap is not None else calls.default_max_output_tokens) * n
        batch = None
        if isinstance(batch_size, int) and batch_size > 1:
            batch = self._join_batch(params, batch_size)
        kwargs: dict[str, Any] = {
            "model": model or _class_name(serialized),
            "input_tokens": tokens,
            "max_output_tokens": cap,
            "scope": str(scope) if scope else None,
            "parent": str(parent) if parent else None,
            "session": session,
            "service_tier": requested_service_tier(params),
        }
        return _Start(kwargs, batch, legacy)

    def _start(self, run_id: UUID, plan: _Start) -> None:
        try:
            reservation = self._calls.start(run_id, **plan.kwargs)
        except BaseException as exc:
            if plan.batch is not None:
                self._abort_batch(plan.batch, exc)
            raise
        self._admitted(run_id, plan, reservation)

    async def _astart(self, run_id: UUID, plan: _Start) -> None:
        try:
            reservation = await self._calls.astart(run_id, **plan.kwargs)
        except BaseException as exc:
            if plan.batch is not None:
                self._abort_batch(plan.batch, exc)
            raise
        self._admitted(run_id, plan, reservation)

    def _admitted(self, run_id: UUID, plan: _Start, reservation: Reservation) -> None:
        batch = plan.batch
        if batch is None:
            return
        with self._lock:
            refusal = batch.refusal
            if refusal is None:
                batch.members.append((run_id, reservation))
                if plan.legacy:
                    legacy = self._legacy_multi
                    legacy[run_id] = batch
                    while len(legacy) > 4096:
                        del legacy[next(iter(legacy))]
        if refusal is not None:
            self._calls.cached(run_id)  # releases the hold: the whole generate() failed
            release_elsewhere(self._calls, run_id)
            raise refusal

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
        for run_id, _reservation in members:
            self._calls.cached(run_id)

    def _prune_batches(self) -> None:
        # Entries of failed generate() calls whose later members never started.
        cutoff = time.monotonic() - 600.0
        stale = [k for k, b in self._batches.items() if b.created < cutoff]
        for key in stale:
            del self._batches[key]
        while len(self._batches) >= 4096:
            del self._batches[next(iter(self._batches))]

    # -- end and error: never raise ---------------------------------------------------------

    def _llm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> Any:
        """Commit the usage the provider reported (or an estimate when it reported none)."""
        try:
            action, details = self._settle(run_id, response)
            if action == "end":
                self._calls.end(run_id, **details)
            elif action == "release":
                self._calls.cached(run_id)
        except Exception:
            self._calls.pop(run_id)  # its hold expires on its own
            log.exception("agent-budget could not record the end of LangChain run %s", run_id)

    async def _allm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> Any:
        try:
            action, details = self._settle(run_id, response)
            if action == "end":
                await self._calls.aend(run_id, **details)
            elif action == "release":
                await self._calls.acached(run_id)
        except Exception:
            self._calls.pop(run_id)
            log.exception("agent-budget could not record the end of LangChain run %s", run_id)

    def _settle(self, run_id: UUID, response: LLMResult) -> tuple[str, dict[str, Any]]:
        """What the end of a run means: ``("end", end keywords)``, ``("release", {})`` for
        a run nothing was billed for, or ``("skip", {})`` for a run this handler did not
        start."""
        batch = self._legacy_multi.pop(run_id, None) if self._legacy_multi else None
        if run_id not in self._calls:
            return "skip", {}
        outcome = read_outcome(response)
        if outcome.cache_hit:
            return "release", {}  # served from LangChain's cache: nothing to pay
        if batch is not None:
            if outcome.usage is not None:
                batch.reported = True
            elif outcome.sibling and batch.reported:
                # LLMResult.flatten() put this generate()'s whole usage on its first run,
                # which LangChain ends first and which committed it.
                return "release", {}
        return "end", {
            "usage": outcome.usage,
            "model": outcome.model,
            "text": response_text(response) if outcome.usage is None else None,
            "no_usage_hint": NO_USAGE_HINT,
        }

    def _llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> Any:
        """Release the hold, or commit what a stream that stopped part way already used."""
        try:
            if self._legacy_multi:
                self._legacy_multi.pop(run_id, None)
            if run_id in self._calls:
                self._calls.fail(run_id, error, **self._failure(error, kwargs.get("response")))
        except Exception:
            self._calls.pop(run_id)  # its hold expires on its own
            log.exception("agent-budget could not record the error of LangChain run %s", run_id)

    async def _allm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> Any:
        try:
            if self._legacy_multi:
                self._legacy_multi.pop(run_id, None)
            if run_id in self._calls:
                details = self._failure(error, kwargs.get("response"))
                await self._calls.afail(run_id, error, **details)
        except Exception:
            self._calls.pop(run_id)
            log.exception("agent-budget could not record the error of LangChain run %s", run_id)

    on_llm_end = _Hook(_llm_end, _allm_end)
    on_llm_error = _Hook(_llm_error, _allm_error)

    @staticmethod
    def _failure(error: BaseException, response: object) -> dict[str, Any]:
        result = response if isinstance(response, LLMResult) else None
        reported = read_outcome(result) if result is not None else None
        text = partial_text(result)
        if text is None and isinstance(error, GeneratorExit):
            # GeneratorExit reaches a stream only at a yield, so a chunk had arrived; a
            # legacy LLM records it only after yielding, so its partial may be one chunk
            # short: count what is there (the chunk in flight is small).
            text = ""
        return {
            "usage": reported.usage if reported is not None else None,
            "model": reported.model if reported is not None else None,
            "text": text,
        }


def _class_name(serialized: Mapping[str, Any] | None) -> str:
    ident = (serialized or {}).get("id")
    if isinstance(ident, Sequence) and ident and isinstance(ident[-1], str) and ident[-1]:
        return ident[-1]
    return UNKNOWN_MODEL
