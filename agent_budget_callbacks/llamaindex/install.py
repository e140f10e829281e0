"""install() / uninstall(): wire a BudgetCallbackHandler into LlamaIndex everywhere it is needed.

Adding the handler to ``Settings.callback_manager`` is not enough: an LLM created before
keeps its own manager, and building a query engine or synthesizer replaces an LLM's manager.
So install() also registers, on the root instrumentation dispatcher, a span handler that adds
the budget handler to the callback manager of every LLM instance a span starts on (spans
open before the LLM's callback wrapper fires its start event), and an event handler that
feeds streamed chunks to the budget handler. Instrumentation handlers cannot refuse a call
(the dispatcher swallows their exceptions); refusal stays in the legacy handler.
"""

from __future__ import annotations

import inspect
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from llama_index.core.base.llms.base import BaseLLM
from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.llm import (
    LLMChatInProgressEvent,
    LLMCompletionInProgressEvent,
)
from llama_index.core.instrumentation.span import BaseSpan
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler
from llama_index.core.settings import Settings
from llama_index_instrumentation import get_dispatcher
from pydantic import PrivateAttr

from agent_budget import Budget, BudgetError, BudgetManager

from .handler import BudgetCallbackHandler

__all__ = ["install", "installed_handlers", "uninstall"]

_CHUNK_EVENTS = (LLMChatInProgressEvent, LLMCompletionInProgressEvent)
_lock = threading.RLock()


_llm_types: dict[type, bool] = {}


def _is_llm(cls: type) -> bool:
    """``issubclass(cls, BaseLLM)``, cached: every span of every component asks."""
    known = _llm_types.get(cls)
    if known is None:
        known = _llm_types[cls] = issubclass(cls, BaseLLM)
    return known


class _AttachSpanHandler(BaseSpanHandler[BaseSpan]):
    """Adds the budget handler to the callback manager of any LLM a span starts on."""

    _owner: Any = PrivateAttr(default=None)
    _attached: Any = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "AgentBudgetAttachSpanHandler"

    def new_span(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        parent_span_id: str | None = None,
        tags: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> BaseSpan | None:
        if instance is not None and _is_llm(type(instance)):
            attach(self._owner, instance, self._attached)
        return None  # keep no span objects: nothing to store, nothing to leak

    def prepare_to_exit_span(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        result: Any | None = None,
        **kwargs: Any,
    ) -> BaseSpan | None:
        return None

    def prepare_to_drop_span(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        err: BaseException | None = None,
        **kwargs: Any,
    ) -> BaseSpan | None:
        return None


class _ChunkEventHandler(BaseEventHandler):
    """Passes each streamed LLM chunk to the budget handler (for streams dropped early)."""

    _owner: Any = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "AgentBudgetChunkEventHandler"

    def handle(self, event: Any, **kwargs: Any) -> None:
        if isinstance(event, _CHUNK_EVENTS):
            self._owner.record_chunk(event.span_id, event.response)


@dataclass
class _Installation:
    span_handler: _AttachSpanHandler
    event_handler: _ChunkEventHandler
    settings_manager: CallbackManager
    attached: weakref.WeakSet[CallbackManager] = field(default_factory=weakref.WeakSet)


_installs: dict[BudgetCallbackHandler, _Installation] = {}


class _QuietThreadRefusals:
    """A ``threading.excepthook`` that skips the traceback LlamaIndex's streaming chat
    engines print for a refusal in their history-writer thread: the engine stores the
    exception and raises it to the app from ``response_gen``, so the printed copy is noise.
    Every other thread exception goes to the hook that was there before."""

    def __init__(self, previous: Callable[[threading.ExceptHookArgs], Any]) -> None:
        self.previous = previous

    def __call__(self, args: threading.ExceptHookArgs) -> None:
        if isinstance(args.exc_value, BudgetError) and _in_history_writer(args.exc_traceback):
            return
        self.previous(args)


def _in_history_writer(tb: TracebackType | None) -> bool:
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "write_response_to_history" and "chat_engine" in code.co_filename:
            return True
        tb = tb.tb_next
    return False


def _quiet_threads(on: bool) -> None:
    hook = threading.excepthook
    if on and not isinstance(hook, _QuietThreadRefusals):
        threading.excepthook = _QuietThreadRefusals(hook)
    elif not on and isinstance(hook, _QuietThreadRefusals):
        threading.excepthook = hook.previous


def attach(
    handler: BudgetCallbackHandler,
    llm: Any,
    attached: weakref.WeakSet[CallbackManager] | None = None,
) -> bool:
    """Add ``handler`` to ``llm.callback_manager`` unless it is there; True if added."""
    manager = getattr(llm, "callback_manager", None)
    if not isinstance(manager, CallbackManager) or handler in manager.handlers:
        return False
    with _lock:
        if handler in manager.handlers:
            return False
        manager.add_handler(handler)
        if attached is not None:
            attached.add(manager)
    return True


def install(
    budget: Budget | BudgetManager | BudgetCallbackHandler, **handler_kwargs: Any
) -> BudgetCallbackHandler:
    """Enforce ``budget`` on every LlamaIndex LLM call in this process; returns the handler.

    ``budget`` is a Budget, a BudgetManager (scope from ``scope=`` or :func:`budget_scope`)
    or a ready BudgetCallbackHandler; ``handler_kwargs`` go to the handler's constructor.
    Installing the same handler, or the same budget, twice changes nothing (it returns the
    installed handler). Undo with :func:`uninstall`.
    """
    if isinstance(budget, BudgetCallbackHandler):
        if handler_kwargs:
            raise TypeError("pass handler options to BudgetCallbackHandler, not install()")
        handler = budget
    else:
        with _lock:
            for installed in _installs:
                if installed.budget is budget:
                    if handler_kwargs:
                        raise ValueError(
                            "a handler for this budget is already installed; uninstall() it "
                            "before installing one with other options"
                        )
                    # install(budget) again (a re-run notebook cell): one handler, or every
                    # call would be charged twice.
                    return installed
        handler = BudgetCallbackHandler(budget, **handler_kwargs)
    with _lock:
        if handler in _installs:
            return handler
        manager = Settings.callback_manager
        if handler not in manager.handlers:
            manager.add_handler(handler)
        span_handler = _AttachSpanHandler()
        span_handler._owner = handler
        event_handler = _ChunkEventHandler()
        event_handler._owner = handler
        installation = _Installation(span_handler, event_handler, manager)
        span_handler._attached = installation.attached
        root = get_dispatcher()
        root.span_handlers = [*root.span_handlers, span_handler]
        root.event_handlers = [*root.event_handlers, event_handler]
        _installs[handler] = installation
        _quiet_threads(True)
    return handler


def uninstall(handler: BudgetCallbackHandler | None = None) -> int:
    """Remove ``handler`` (or every installed handler) from Settings, the instrumentation
    dispatcher and every LLM callback manager install() added it to; returns how many."""
    with _lock:
        targets = [handler] if handler is not None else list(_installs)
        removed = 0
        root = get_dispatcher()
        for target in targets:
            installation = _installs.pop(target, None)
            if installation is None:
                continue
            removed += 1
            root.span_handlers = [
                h for h in root.span_handlers if h is not installation.span_handler
            ]
            root.event_handlers = [
                h for h in root.event_handlers if h is not installation.event_handler
            ]
            managers = [installation.settings_manager, *installation.attached]
            current = Settings._callback_manager
            if current is not None:
                managers.append(current)
            for manager in managers:
                while target in manager.handlers:
                    manager.remove_handler(target)
        if not _installs:
            _quiet_threads(False)
        return removed


def installed_handlers() -> list[BudgetCallbackHandler]:
    """The handlers install() has wired in and uninstall() has not removed."""
    with _lock:
        return list(_installs)
