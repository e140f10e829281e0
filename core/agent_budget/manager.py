"""BudgetManager: many scopes over one store, made on first use from templates, with parents."""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import manager_reads
from .alerting import AlertCallback
from .alerts import BudgetAlert
from .budget import Budget, StoreErrorPolicy
from .errors import BudgetWarning, StoreError, UnknownScopeError
from .events import Listeners, RecordListener, RefusalListener
from .rates import ModelRates, RateTable
from .records import UsageRecord
from .reservation import Reservation
from .scope import BudgetScope
from .stores import Store, open_store
from .validate import check_name, check_tokens

__all__ = ["BudgetManager", "ScopeTemplate"]

ParentSpec = str | Callable[[str], "str | None"] | None
_UNSET: Any = object()
log = logging.getLogger("agent_budget")


@dataclass(frozen=True)
class ScopeTemplate:
    """Limits applied to every scope whose name starts with ``prefix``."""

    prefix: str
    scope: BudgetScope
    parent: ParentSpec = None


class BudgetManager:
    """A registry of budgets over one shared store, for multi-user and multi-tenant apps.

    ``register`` adds a fixed scope; ``add_template`` makes scopes on first use of a name
    (``mgr.get("user:42")``), each with an optional parent so a call must fit the
    conversation, its user and the global budget at once. Usage lives in the store, so the
    manager keeps only ``max_cached`` template-made Budget objects and rebuilds the others on
    demand without losing anything.
    """

    def __init__(
        self,
        store: Store | str | None = None,
        *,
        rates: Mapping[str, ModelRates] | RateTable | None = None,
        clock: Callable[[], float] = time.time,
        hold_ttl: float = 600.0,
        on_store_error: StoreErrorPolicy | None = None,
        max_cached: int = 10_000,
        max_records_per_scope: int = 1_000,
    ) -> None:
        check_tokens("max_cached", max_cached)
        self.store = open_store(store)
        self.rates = rates if isinstance(rates, RateTable) else RateTable(rates)
        self.clock = clock
        self.hold_ttl = hold_ttl
        self.on_store_error = on_store_error
        self._max_cached = max_cached
        self._names_kept = max(100_000, 10 * max_cached)  # parents and recorded names
        self._max_records = max_records_per_scope
        self._lock = threading.RLock()
        self._registered: dict[str, Budget] = {}
        self._cached: OrderedDict[str, Budget] = OrderedDict()
        # Parents of template-made scopes, remembered past eviction from the cache so a
        # rebuilt scope keeps its parent (bounded: many times the cache, names only).
        self._parents: dict[str, str | None] = {}  # oldest first
        self._templates: list[ScopeTemplate] = []
        self._callbacks: list[Callable[[BudgetAlert], None]] = []
        self._listeners = Listeners()
        self._hooked = False
        self._recorded: set[str] = set()  # template-made scopes this process has recorded
        # Per template prefix: (the template, a Budget of its limits that scopes are cloned
        # from). Replaced when the template is.
        self._prototypes: dict[str, tuple[ScopeTemplate, Budget]] = {}
        self._alert_hooks = (self._dispatch,)

    # -- scopes ----------------------------------------------------------------------------

    def register(
        self,
        scope: BudgetScope,
        rates: Mapping[str, ModelRates] | RateTable | None = None,
        *,
        parent: str | None = None,
    ) -> Budget:
        """Add (or replace) a fixed scope; ``parent`` names an existing or template scope."""
        if not isinstance(scope, BudgetScope):
            raise TypeError(f"scope must be a BudgetScope, got {type(scope).__name__}")
        if parent is not None:
            check_name("parent", parent)
        with self._lock:
            parent_budget = self._require(parent) if parent is not None else None
            budget = self._make(scope, parent_budget, rates, save=True)
            replaced = scope.name in self._registered or scope.name in self._cached
            self._registered[scope.name] = budget
            self._cached.pop(scope.name, None)
            if replaced:
                self._rebind_children(scope.name)
            return budget

    def _rebind_children(self, name: str) -> None:
        """After ``name`` was replaced, make budgets below it use the new one (and its
        limits): cached ones are dropped (rebuilt on demand), registered ones rebuilt."""
        for child, budget in list(self._cached.items()):
            if any(a.name == name for a in budget.chain[1:]):
                del self._cached[child]
        dependents = [
            b for b in self._registered.values() if any(a.name == name for a in b.chain[1:])
        ]
        for old in sorted(dependents, key=lambda b: len(b.chain)):
            assert old.parent is not None
            parent = self._require(old.parent.name)
            self._registered[old.name] = self._make(old.scope, parent, old.rates, save=True)

    def add_template(self, prefix: str, scope: BudgetScope, *, parent: ParentSpec = None) -> None:
        """Create scopes named ``prefix...`` on first use, with ``scope``'s limits.

        ``parent`` is a scope name, a function of the new scope's name returning one (or
        None), or None; ``get(name, parent=...)`` overrides it per call. Only the limits of
        ``scope`` are used: each scope made is named by the name asked for, so name the
        template scope after its prefix (``"user:"``, or a start of it such as ``"user"``);
        any other name is not used and draws a :class:`BudgetWarning`.
        """
        check_name("prefix", prefix)
        if not isinstance(scope, BudgetScope):
            raise TypeError(f"scope must be a BudgetScope, got {type(scope).__name__}")
        if not prefix.startswith(scope.name):
            warnings.warn(
                f"add_template({prefix!r}, BudgetScope(name={scope.name!r}, ...)): the "
                f"template scope's name is not used; each scope made from it is named by "
                f"the name asked for (e.g. {prefix + '42'!r}). Name it {prefix!r} to say so.",
                BudgetWarning,
                stacklevel=2,
            )
        if parent is not None and not isinstance(parent, str) and not callable(parent):
            raise TypeError("parent must be a scope name, a callable or None")
        with self._lock:
            self._templates = [t for t in self._templates if t.prefix != prefix]
            self._templates.append(ScopeTemplate(prefix, scope, parent))
            self._templates.sort(key=lambda t: len(t.prefix), reverse=True)

    def get(self, name: str, *, parent: str | None = None) -> Budget | None:
        """The budget of ``name``: registered, already made, or made now from a template.

        A name matching a template's prefix gets its scope on first use, here too: that is
        what templates are for. Making one writes nothing to the store (usage starts at the
        first reserve or record, and another process sees nothing of it until then); it
        only builds the Budget object, which this manager's ``scopes()`` and
        ``all_summaries()`` list from then on. Returns None when no scope or template
        matches (the original API).
        """
        check_name("name", name)
        if parent is not None:
            check_name("parent", parent)
        with self._lock:
            return self._get(name, parent, depth=0)

    def _get(self, name: str, parent: str | None, depth: int) -> Budget | None:
        if depth > 32:
            raise ValueError(f"scope parents nest too deeply at {name!r} (a cycle?)")
        budget = self._registered.get(name) or self._cached.get(name)
        if budget is not None:
            if name in self._cached:
                # Touch the ancestors too, so a parent never leaves the cache before its
                # children (which would rebuild it as a second object).
                for node in reversed(budget.chain):
                    if node.name in self._cached:
                        self._cached.move_to_end(node.name)
            if parent is not None and (budget.parent is None or budget.parent.name != parent):
                current = budget.parent.name if budget.parent else None
                raise ValueError(f"scope {name!r} has parent {current!r}, not {parent!r}")
            return budget
        for template in self._templates:
            if name.startswith(template.prefix):
                break
        else:
            return None
        remembered = self._parents.get(name, _UNSET)
        if parent is not None and remembered is not _UNSET and remembered != parent:
            raise ValueError(f"scope {name!r} has parent {remembered!r}, not {parent!r}")
        parent_name = parent
        if parent_name is None and remembered is not _UNSET:
            parent_name = remembered
        elif parent_name is None:
            spec = template.parent
            parent_name = spec(name) if callable(spec) else spec
        parent_budget = None
        if parent_name is not None:
            if parent_name == name:
                raise ValueError(f"scope {name!r} cannot be its own parent")
            parent_budget = self._get(parent_name, None, depth + 1)
            if parent_budget is None:
                raise UnknownScopeError(
                    f"parent scope {parent_name!r} of {name!r} is not registered"
                )
        budget = self._from_template(template, name, parent_budget)
        if name not in self._recorded:  # recorded in the store at its first record or refusal
            budget._first_use = self._first_use
            budget._made_from = template.prefix
        parents = self._parents
        if remembered is not _UNSET:
            del parents[name]  # to the end: most recently made
        parents[name] = parent_name
        while len(parents) > self._names_kept:
            del parents[next(iter(parents))]
        self._cache(name, budget)
        return budget

    def _from_template(self, template: ScopeTemplate, name: str, parent: Budget | None) -> Budget:
        """A Budget for ``name`` from ``template``: a clone of the template's prototype
        (its limits validated and priced once), so making a scope costs about as much as
        finding a cached one."""
        prototype = self._prototypes.get(template.prefix)
        if prototype is None or prototype[0] is not template:
            made = self._make(template.scope, None, None, save=False)
            made._shapes = {}  # its clones share the plans of their lines
            prototype = self._prototypes[template.prefix] = (template, made)
        budget = clone_budget(prototype[1], name, parent, self._alert_hooks)
        if self._hooked:
            self._hook(budget)
        return budget

    def _first_use(self, budget: Budget) -> None:
        self._save_made(budget, budget._made_from)

    def _save_made(self, budget: Budget, prefix: str) -> None:
        """Record a template-made scope in the store's scope registry (name, parent,
        template, limits) when it first records usage or is first refused, once per scope
        per process, so other processes, reports and the CLI see it (``get()`` alone writes
        nothing). Best effort: a store error is logged, never raised."""
        definition = budget.scope.to_dict()
        definition["parent"] = budget.parent.name if budget.parent else None
        definition["template"] = prefix
        try:
            self.store.save_scope(budget.name, definition)
        except StoreError:
            log.warning("could not record scope %r in the store", budget.name, exc_info=True)
            return
        with self._lock:
            if len(self._recorded) >= self._names_kept:
                self._recorded.clear()  # bounded: at worst a scope is recorded again
            self._recorded.add(budget.name)

    def _cache(self, name: str, budget: Budget) -> None:
        self._cached[name] = budget
        while len(self._cached) > self._max_cached:
            self._cached.popitem(last=False)

    def _require(self, name: str) -> Budget:
        budget = self._get(name, None, 0)
        if budget is None:
            raise UnknownScopeError(f"No budget registered for scope '{name}'")
        return budget

    def _make(
        self,
        scope: BudgetScope,
        parent: Budget | None,
        rates: Mapping[str, ModelRates] | RateTable | None,
        *,
        save: bool,
    ) -> Budget:
        budget = Budget(
            scope,
            rates if rates is not None else self.rates,
            store=self.store,
            parent=parent,
            clock=self.clock,
            hold_ttl=self.hold_ttl,
            on_store_error=self.on_store_error,
            max_records=self._max_records,
            save_definition=save,
        )
        budget.on_alert(self._dispatch)
        if self._hooked:
            self._hook(budget)
        return budget

    # -- call events -----------------------------------------------------------------------

    def on_record(self, callback: RecordListener) -> None:
        """Call ``callback(RecordEvent)`` after every call recorded by any scope of this
        manager (see ``Budget.on_record``)."""
        self._listeners.add_record(callback)
        self._hook_all()

    def on_refusal(self, callback: RefusalListener) -> None:
        """Call ``callback(RefusalEvent)`` for every call refused in any scope of this
        manager (see ``Budget.on_refusal``)."""
        self._listeners.add_refusal(callback)
        self._hook_all()

    def remove_listener(self, callback: Callable[..., None]) -> bool:
        """Stop calling an ``on_record`` / ``on_refusal`` callback; True if it was there."""
        return self._listeners.remove(callback)

    def _hook(self, budget: Budget) -> None:
        budget.on_record(self._listeners.emit_record)
        budget.on_refusal(self._listeners.emit_refusal)

    def _hook_all(self) -> None:
        """Forward every budget's events to the manager's listeners, from the first listener
        on (until then budgets skip the work)."""
        with self._lock:
            if self._hooked:
                return
            self._hooked = True
            for budget in [*self._registered.values(), *self._cached.values()]:
                self._hook(budget)

    def remove(self, name: str) -> bool:
        """Forget a scope's Budget and definition (its recorded usage stays in the store)."""
        with self._lock:
            found = self._registered.pop(name, None) or self._cached.pop(name, None)
        if found is None:
            return False
        self.store.delete_scope(name)
        return True

    def scopes(self) -> list[str]:
        """Names of the scopes this manager knows: registered, cached, and every scope in the
        store's registry (registered or made from a template by any process)."""
        return self._names(self.store.load_scopes())

    def budgets(self) -> list[Budget]:
        """The Budget objects this manager holds now: registered ones, then the cached
        template-made ones (most recently used last)."""
        with self._lock:
            return [*self._registered.values(), *self._cached.values()]

    # -- alerts ----------------------------------------------------------------------------

    def on_alert(self, callback: Callable[[BudgetAlert], None]) -> None:
        """Receive every alert of every scope this manager makes."""
        if not callable(callback):
            raise TypeError("on_alert needs a callable")
        with self._lock:
            self._callbacks.append(callback)

    def _dispatch(self, alert: BudgetAlert) -> None:
        for callback in list(self._callbacks):
            try:
                callback(alert)
            except Exception:
                log.exception("manager alert callback failed")

    # -- calls -----------------------------------------------------------------------------

    def record(
        self,
        scope_name: str,
        session_id: str,
        model: str,
        input_tokens: int,
        output_tokens: int,
        metadata: Mapping[str, Any] | None = None,
        **usage: Any,
    ) -> UsageRecord:
        """Record usage against ``scope_name`` (KeyError if it is unknown)."""
        budget = self.get(scope_name)
        if budget is None:
            raise UnknownScopeError(f"No budget registered for scope '{scope_name}'")
        return budget.record(session_id, model, input_tokens, output_tokens, metadata, **usage)

    def reserve(
        self,
        scope_name: str,
        model: str,
        input_tokens: int,
        max_output_tokens: int = 0,
        **kwargs: Any,
    ) -> Reservation:
        """Reserve against ``scope_name`` and its ancestors (KeyError if it is unknown)."""
        budget = self.get(scope_name)
        if budget is None:
            raise UnknownScopeError(f"No budget registered for scope '{scope_name}'")
        return budget.reserve(model, input_tokens, max_output_tokens, **kwargs)

    # -- summaries, read from the store (in manager_reads) -------------------------------------

    summary = manager_reads.summary
    all_summaries = manager_reads.all_summaries
    _names = manager_reads.names
    _budget_for_summary = manager_reads.budget_for_summary

    def close(self) -> None:
        self.store.close()


def clone_budget(
    prototype: Budget,
    name: str,
    parent: Budget | None,
    alert_hooks: tuple[AlertCallback, ...] = (),
) -> Budget:
    """A budget like ``prototype`` (limits, rates, store, settings) for scope ``name`` under
    ``parent``, sharing everything that does not depend on the name: how a manager
    makes a template's scopes without validating and pricing the same limits again."""
    clone: Budget = object.__new__(Budget)
    clone.__dict__.update(prototype.__dict__)
    scope = object.__new__(BudgetScope)
    scope.__dict__.update(prototype._scope.__dict__)
    scope.name = name
    clone._scope = scope
    clone.parent = parent
    if parent is None:
        clone._chain = (clone,)
        clone._group = name
    else:
        clone._chain = (clone, *parent._chain)
        clone._group = clone._chain[-1].name
        clone._check_chain()
    clone._fresh_state(prototype._records.maxlen)
    clone._alert_hooks = alert_hooks
    return clone
