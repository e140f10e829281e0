"""budget_guard(): enforce a budget on every LangChain call made inside a ``with`` block."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from langchain_core.tracers.context import register_configure_hook

from agent_budget import Budget, BudgetManager, TokenCounter

from .handler import BudgetCallbackHandler

__all__ = ["budget_guard", "current_guard"]

_GUARD: ContextVar[BudgetCallbackHandler | None] = ContextVar(
    "agent_budget_langchain_guard", default=None
)
# Registered once per process: LangChain appends every registration to a global list and
# consults each on every call (the leak of get_usage_metadata_callback, langchain#32300).
register_configure_hook(_GUARD, inheritable=True)

_UNSET: Any = object()


@contextmanager
def budget_guard(
    budget: Budget | BudgetManager | BudgetCallbackHandler,
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
) -> Iterator[BudgetCallbackHandler]:
    """Enforce ``budget`` on every LangChain call made inside the block.

    Covers calls in nested chains and graphs, in ``batch`` worker threads and in asyncio
    tasks started inside the block (they copy the context). The keyword options are
    :class:`BudgetCallbackHandler`'s; or pass a ready handler. A guard nested in another
    replaces it for its block (a nested guard of the same budget reuses the outer handler,
    so nothing is charged twice); to enforce several budgets at once, chain them with
    ``Budget(parent=...)``.
    """
    options: dict[str, Any] = {
        "scope": scope,
        "parent": parent,
        "session_id": session_id,
        "scope_key": scope_key,
        "parent_key": parent_key,
        "session_key": session_key,
        "use_thread_id": use_thread_id,
        "default_max_output_tokens": default_max_output_tokens,
        "default_max_tokens": default_max_tokens,
        "default_model": default_model,
        "counter": counter,
        "hold_ttl": hold_ttl,
        "metadata": metadata,
        "wait": wait,
    }
    changed = {k: v for k, v in options.items() if v != _DEFAULTS[k]}
    customised = bool(changed)
    active = _GUARD.get()
    if isinstance(budget, BudgetCallbackHandler):
        if customised:
            raise TypeError("budget_guard(handler) takes no handler options")
        handler = budget
    elif active is not None and not customised and active.target is budget:
        # The same budget again (a helper that guards itself, called inside a guarded
        # run): keep the one handler, or the run would be charged twice.
        handler = active
    else:
        handler = BudgetCallbackHandler(budget, **changed)
    token = _GUARD.set(handler)
    try:
        yield handler
    finally:
        _GUARD.reset(token)


_DEFAULTS: dict[str, Any] = {
    "scope": None,
    "parent": None,
    "session_id": None,
    "scope_key": "budget_scope",
    "parent_key": "budget_parent",
    "session_key": "budget_session",
    "use_thread_id": True,
    "default_max_output_tokens": _UNSET,
    "default_max_tokens": _UNSET,
    "default_model": None,
    "counter": None,
    "hold_ttl": None,
    "metadata": None,
    "wait": 0.0,
}


def current_guard() -> BudgetCallbackHandler | None:
    """The handler of the innermost active :func:`budget_guard`, or None."""
    return _GUARD.get()
