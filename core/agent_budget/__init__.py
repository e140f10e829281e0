"""agent-budget: token and dollar budgets for LLM agents, enforced before the call runs."""

from __future__ import annotations

from .alerts import AlertLevel, BudgetAlert
from .budget import Budget
from .context import ScopeSelection, budget_scope, current_scope, select_budget
from .errors import (
    BudgetError,
    BudgetExceededError,
    BudgetWarning,
    StoreConfigError,
    StoreError,
    StorePermanentError,
    StoreTransientError,
    StoreUnavailableError,
    UnknownModelError,
    UnknownScopeError,
)
from .manager import BudgetManager, ScopeTemplate
from .rates import ModelRates, RateTable, builtin_rates, normalize_model_name
from .records import UsageRecord
from .reservation import Reservation
from .scope import BudgetScope
from .stores import MemoryStore, Store, StoreOptions, open_store
from .tokens import CachedCounter, HeuristicCounter, TokenCounter, count_messages, default_counter
from .tracking import RunTracker
from .usage import Usage, usage_from_mapping

__version__ = "0.2.0"

__all__ = [
    "AlertLevel",
    "Budget",
    "BudgetAlert",
    "BudgetError",
    "BudgetExceededError",
    "BudgetManager",
    "BudgetScope",
    "BudgetWarning",
    "CachedCounter",
    "HeuristicCounter",
    "MemoryStore",
    "ModelRates",
    "RateTable",
    "Reservation",
    "RunTracker",
    "ScopeSelection",
    "ScopeTemplate",
    "Store",
    "StoreConfigError",
    "StoreError",
    "StoreOptions",
    "StorePermanentError",
    "StoreTransientError",
    "StoreUnavailableError",
    "TokenCounter",
    "UnknownModelError",
    "UnknownScopeError",
    "Usage",
    "UsageRecord",
    "__version__",
    "budget_scope",
    "builtin_rates",
    "count_messages",
    "current_scope",
    "default_counter",
    "normalize_model_name",
    "open_store",
    "select_budget",
    "usage_from_mapping",
]
