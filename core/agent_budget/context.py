"""Which budget a call charges: a ``budget_scope`` block, and the rule every adapter uses.

Frameworks pass little or no per-call metadata to callbacks (LlamaIndex none), so a
multi-tenant app names the budget scope (and session) for a block of code with
:func:`budget_scope`; adapters read it when an LLM call starts. A context variable carries it
into asyncio tasks and into threads started with a copied context (LangChain's batch
workers, LlamaIndex's ``Thread``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import UnknownScopeError

if TYPE_CHECKING:
    from .budget import Budget
    from .manager import BudgetManager

__all__ = ["ScopeSelection", "budget_scope", "current_scope", "select_budget"]


@dataclass(frozen=True)
class ScopeSelection:
    """What :func:`budget_scope` selected: scope name, session id, parent scope, metadata."""

    scope: str | None = None
    session: str | None = None
    parent: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


_current: ContextVar[ScopeSelection | None] = ContextVar("agent_budget_scope", default=None)


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


def select_budget(
    target: Budget | BudgetManager,
    *,
    scope: str | None = None,
    parent: str | None = None,
    default_scope: str | None = None,
    default_parent: str | None = None,
) -> Budget:
    """The budget a call charges.

    A :class:`Budget` target is the answer. For a :class:`BudgetManager` the scope name is,
    in order: ``scope`` (per-call metadata), the enclosing :func:`budget_scope` block, then
    ``default_scope`` (the adapter's own setting); likewise the parent. Raises
    :class:`UnknownScopeError` when no name is given or the manager has no such scope or
    template, so the call is refused before the provider runs.
    """
    from .budget import Budget

    if isinstance(target, Budget):
        return target
    selection = _current.get()
    block_scope = selection.scope if selection else None
    name = scope or block_scope or default_scope
    if not name:
        raise UnknownScopeError(
            "no budget scope for this call: name one with budget_scope('name'), per-call "
            "metadata, or the handler's scope= option"
        )
    # A block's parent goes with the block's scope, not with a scope named per call.
    from_block = not scope and block_scope is not None
    block_parent = selection.parent if selection and from_block else None
    parent_name = parent or block_parent or default_parent
    budget = target.get(name, parent=parent_name)
    if budget is None:
        raise UnknownScopeError(
            f"no budget scope named {name!r}: register it or add a template whose prefix matches it"
        )
    return budget
