"""Per-request scope and session selection for the LlamaIndex handler.

LlamaIndex passes no per-call metadata to callback handlers, so a multi-tenant app names the
budget scope (and session) for a block of code with :func:`budget_scope`; the handler reads
it when an LLM call starts. A context variable carries it into asyncio tasks and into the
threads LlamaIndex starts with ``llama_index.core.types.Thread`` (which copies the context).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ScopeSelection", "budget_scope", "current_scope"]


@dataclass(frozen=True)
class ScopeSelection:
    """What :func:`budget_scope` selected: scope name, session id, parent scope, metadata."""

    scope: str | None = None
    session: str | None = None
    parent: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


_current: ContextVar[ScopeSelection | None] = ContextVar(
    "agent_budget_llamaindex_scope", default=None
)


def current_scope() -> ScopeSelection | None:
    """The selection of the innermost enclosing :func:`budget_scope` block, if any."""
    return _current.get()


def _optional_name(field_name: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise TypeError(f"{field_name} must be a non-empty str or None, got {value!r}")
    return value


@contextmanager
def budget_scope(
    scope: str | None = None,
    *,
    session: str | None = None,
    parent: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Iterator[ScopeSelection]:
    """Charge LLM calls made inside the block to ``scope`` (and ``session``).

    ``scope`` names a BudgetManager scope (made from a template on first use, under
    ``parent`` when given); with a single Budget it is ignored and only ``session`` is used.
    Blocks nest: an inner block inherits what it does not set, and merges ``metadata``.
    Streams returned inside the block must be iterated inside it too, since LlamaIndex may
    start the LLM call only when the stream is first read.
    """
    _optional_name("scope", scope)
    _optional_name("parent", parent)
    if session is not None and not isinstance(session, str):
        raise TypeError(f"session must be a str or None, got {session!r}")
    outer = _current.get()
    selection = ScopeSelection(
        scope=scope if scope is not None else (outer.scope if outer else None),
        session=session if session is not None else (outer.session if outer else None),
        parent=parent
        if parent is not None
        else (outer.parent if outer and scope is None else None),
        metadata={**(outer.metadata if outer else {}), **(metadata or {})},
    )
    token = _current.set(selection)
    try:
        yield selection
    finally:
        _current.reset(token)
