"""agent-budget: token and dollar budgets for LLM agents, enforced before the call runs."""

from __future__ import annotations

from .alerts import AlertLevel, BudgetAlert
from .budget import Budget
from .context import ScopeSelection, budget_scope, current_scope, select_budget
from .errors import (
    BudgetError,
    BudgetExceededError,
    BudgetWarning,
    PriceConfigError,
    StoreConfigError,
    StoreError,
    StorePermanentError,
    StoreTransientError,
    StoreUnavailableError,
    UnknownModelError,
    UnknownScopeError,
)
from .extractors import extract_usage
from .manager import BudgetManager, ScopeTemplate
from .rates import ModelRates, RateTable, builtin_rates, normalize_model_name
from .records import UsageRecord
from .remaining import LimitRemaining, Remaining
from .reservation import Reservation
from .scope import BudgetScope
from .stores import MemoryStore, Store, StoreOptions, open_store
from .summary import BudgetSummary, ExactBudgetSummary, Usd
from .tokens import CachedCounter, HeuristicCounter, TokenCounter, count_messages, default_counter
from .tracking import RunTracker
from .usage import Usage, usage_from_mapping, with_response_details
from .windows import Window, calendar, rolling

__version__ = "0.2.0"

__all__ = [
    "AlertLevel",
    "Budget",
    "BudgetAlert",
    "BudgetError",
    "BudgetExceededError",
    "BudgetManager",
    "BudgetScope",
    "BudgetSummary",
    "BudgetWarning",
    "CachedCounter",
    "ExactBudgetSummary",
    "HeuristicCounter",
    "LimitRemaining",
    "MemoryStore",
    "ModelRates",
    "PriceConfigError",
    "RateTable",
    "Remaining",
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
    "Usd",
    "Window",
    "__version__",
    "budget_scope",
    "builtin_rates",
    "calendar",
    "count_messages",
    "current_scope",
    "default_counter",
    "extract_usage",
    "normalize_model_name",
    "open_store",
    "rolling",
    "select_budget",
    "usage_from_mapping",
    "with_response_details",
]
